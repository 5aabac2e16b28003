//! CORS for every browser-facing route: JSON calls, gRPC-web, `/openapi.json` and `/docs`.
//!
//! Only origins listed in configuration get CORS headers; the list is empty unless set, so
//! nothing is allowed by default. `*` allows any origin (never with credentials, which tally
//! does not use: tokens travel in `authorization`). Preflights are answered here, before any
//! route or auth check, since browsers send them without credentials.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

/// Headers a browser client may send: JSON calls, gRPC-web calls, tracing.
const ALLOW_HEADERS: &str = "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout, \
                             x-request-id, traceparent, tracestate";
/// Headers a browser client may read: gRPC-web carries its status in them.
const EXPOSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, x-request-id";
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// How long a browser may cache a preflight answer.
const MAX_AGE_SECS: &str = "600";

#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    /// `origins` are exact origins (`https://app.example.com`) or `*`.
    pub fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
                .collect(),
        }
    }

    /// The `access-control-allow-origin` value for this request's origin, if it is allowed.
    pub fn allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        self.origins.iter().find(|o| *o == origin).cloned()
    }

    /// The answer to a preflight (`OPTIONS` with `access-control-request-method`), if this is
    /// one. A disallowed origin gets no CORS headers, which browsers treat as a refusal.
    pub fn preflight<B>(&self, request: &Request<B>) -> Option<Response<tonic::body::Body>> {
        if request.method() != Method::OPTIONS
            || !request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut response = Response::new(tonic::body::Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        if let Some(origin) = self.allowed(request.headers()) {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_SECS),
            );
            h.insert(header::VARY, HeaderValue::from_static("origin"));
        }
        Some(response)
    }

    /// Adds the CORS headers of an actual (non-preflight) response.
    pub fn decorate<B>(&self, allowed: Option<HeaderValue>, response: &mut Response<B>) {
        if let Some(origin) = allowed {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: &str) -> Request<()> {
        Request::builder()
            .method(Method::OPTIONS)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(())
            .unwrap()
    }

    #[test]
    fn nothing_is_allowed_without_configuration() {
        let preflight = Cors::new(&[])
            .preflight(&request("https://a.example"))
            .unwrap();
        assert!(
            !preflight
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }

    #[test]
    fn a_listed_origin_is_echoed_and_others_are_not() {
        let cors = Cors::new(&["https://a.example".to_owned()]);
        let ok = cors.preflight(&request("https://a.example")).unwrap();
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        let other = cors.preflight(&request("https://b.example")).unwrap();
        assert!(
            !other
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }
}

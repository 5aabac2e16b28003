//! HTTP JSON transcoding: one tower layer in front of the gRPC routes that turns JSON calls
//! into gRPC calls, by the `google.api.http` rules of an encoded descriptor set.
//!
//! The layer is generic: it knows the API only through the descriptor set. It sits outside
//! the concurrency limit and the auth layer, so a JSON call becomes a synthetic gRPC request
//! that passes the very same limits, authentication, policies and handlers as any gRPC call.
//! gRPC and gRPC-web requests pass through untouched (CORS aside); paths no rule matches
//! (`/healthz`, ...) go on to the inner service too. It also serves `GET /openapi.json`,
//! generated at start-up from the same rules (the explorer at `/docs`, `src/console/`, reads
//! it).
//!
//! Files: `template` (the path grammar), `matcher` (method + path to route), `rules`
//! (reading and checking the rules), `request` (JSON to message to gRPC request), `response`
//! (gRPC answer to JSON), `cors`, `openapi`.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use prost_reflect::DescriptorPool;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument as _;

pub mod cors;
pub mod matcher;
pub mod openapi;
pub mod request;
pub mod response;
pub mod rules;
pub mod strict;
pub mod template;

use matcher::{Captures, Match, Matcher};
use response::{GrpcStatus, json_response};
use rules::Route;

pub use openapi::ApiInfo;
pub use response::json_string;

/// Where the generated document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// How much earlier than the client's `grpc-timeout` the gateway ends a JSON call itself. tonic
/// runs its own timer for that header outside every layer and answers a bare gRPC `CANCELLED`
/// when it fires; tokio's timers tick in whole milliseconds, so a deadline two milliseconds
/// earlier always fires first and the caller gets the JSON 504.
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

/// What the gateway needs besides the descriptor set.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted, in bytes (larger: 413).
    pub body_bytes_max: usize,
    /// How long a request body may take to arrive (longer: 504, like a gRPC message that does
    /// not arrive in time).
    pub body_read_timeout: Duration,
    /// Origins allowed by CORS (`*` for any); empty allows none.
    pub cors_allowed_origins: Vec<String>,
    pub info: ApiInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the descriptor set does not decode: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error(transparent)]
    Rule(#[from] rules::RuleError),
}

/// Everything built once at start-up and shared by every call.
pub struct Gateway {
    pool: DescriptorPool,
    routes: Matcher<Route>,
    openapi: Bytes,
    cors: cors::Cors,
    body_bytes_max: usize,
    body_read_timeout: Duration,
}

impl Gateway {
    /// Reads the rules of `descriptor_set` (encoded `FileDescriptorSet` bytes with the
    /// `google.api.http` options intact). A bad or conflicting rule is an error naming the
    /// method.
    pub fn new(descriptor_set: &[u8], options: GatewayOptions) -> Result<Self, GatewayError> {
        let pool = DescriptorPool::decode(descriptor_set)?;
        let routes = rules::load(&pool)?;
        let document = openapi::document(&routes, &options.info);
        Ok(Self {
            openapi: Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default()),
            pool,
            routes,
            cors: cors::Cors::new(&options.cors_allowed_origins),
            body_bytes_max: options.body_bytes_max,
            body_read_timeout: options.body_read_timeout,
        })
    }

    /// The number of HTTP routes (every binding of every transcoded RPC).
    pub fn route_count(&self) -> usize {
        self.routes.routes().count()
    }

    fn error(&self, code: Code, status: StatusCode, message: &str) -> Response<tonic::body::Body> {
        let body = GrpcStatus::new(code, message).to_json(&self.pool);
        json_response(status, &body)
    }

    fn document(&self, content_type: &'static str, body: Bytes) -> Response<tonic::body::Body> {
        let mut response = Response::new(tonic::body::Body::new(http_body_util::Full::new(body)));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

#[derive(Clone)]
pub struct GatewayLayer {
    gateway: Arc<Gateway>,
}

impl GatewayLayer {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = GatewayService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayService {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GatewayService<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

fn is_grpc(request: &Request<tonic::body::Body>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a body of this content type is read as JSON. Besides JSON itself (and no type at
/// all), that is what `curl -d` (`application/x-www-form-urlencoded`) and `fetch` with a string
/// body (`text/plain`) send, and anything else not clearly another format, as grpc-gateway
/// does; a body that then does not parse is a 400 naming the JSON error. Only the types below,
/// which clearly hold something else, are 415.
fn decodes_as_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    let other_format = matches!(
        kind,
        "multipart" | "image" | "audio" | "video" | "font" | "model"
    ) || subtype == "xml"
        || subtype.ends_with("+xml")
        || subtype.ends_with("protobuf")
        || matches!(
            subtype,
            "octet-stream"
                | "cbor"
                | "msgpack"
                | "x-msgpack"
                | "pdf"
                | "zip"
                | "gzip"
                | "html"
                | "csv"
        );
    !other_format
}

impl<S> Service<Request<tonic::body::Body>> for GatewayService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let mut inner = crate::service::take_ready(&mut self.inner);
        let gateway = self.gateway.clone();
        // Now, before tonic (outside this layer) starts its timer for `grpc-timeout`: a JSON
        // call's deadline is counted from here, so it is never later than tonic's.
        let received = tokio::time::Instant::now();
        Box::pin(async move {
            if let Some(preflight) = gateway.cors.preflight(&request) {
                return Ok(preflight);
            }
            let allowed_origin = gateway.cors.allowed(request.headers());
            let grpc = is_grpc(&request);
            let token_presented = request.headers().contains_key(header::AUTHORIZATION);
            let mut response = if grpc {
                inner.call(request).await?
            } else {
                match route(&gateway, &request) {
                    Routed::Document(response) => response,
                    // `/healthz` and the like; whatever a layer inside answers in gRPC's
                    // shape becomes the JSON error of its status.
                    Routed::PassThrough => {
                        response::json_only(&gateway.pool, inner.call(request).await?).await
                    }
                    Routed::Call(route, variables) => {
                        let span = tracing::info_span!(
                            "gateway.transcode",
                            rpc = %route.grpc_path,
                            http.method = %route.http_method,
                            http.route = %route.template_text,
                        );
                        // In the caller's trace, beside the `rpc` span of the call it makes.
                        crate::telemetry::continue_trace(&span, request.headers());
                        let call = Call {
                            route,
                            variables,
                            received,
                        };
                        transcode(&gateway, inner, call, request)
                            .instrument(span)
                            .await?
                    }
                }
            };
            if !grpc {
                challenge(&mut response, token_presented);
            }
            gateway.cors.decorate(allowed_origin, &mut response);
            Ok(response)
        })
    }
}

/// A 401 names the scheme it wants (RFC 9110 §11.6.1, RFC 6750 §3), and says the token was
/// refused when one was sent.
fn challenge(response: &mut Response<tonic::body::Body>, token_presented: bool) {
    if response.status() != StatusCode::UNAUTHORIZED {
        return;
    }
    let value = if token_presented {
        r#"Bearer realm="tally", error="invalid_token""#
    } else {
        r#"Bearer realm="tally""#
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
}

/// A matched JSON call on its way to the handler.
struct Call {
    route: Route,
    variables: Captures,
    /// When the gateway received the request (see [`DEADLINE_MARGIN`]).
    received: tokio::time::Instant,
}

enum Routed {
    /// Answered by the gateway itself (documents, 405).
    Document(Response<tonic::body::Body>),
    /// Not ours: health checks and unknown paths go to the inner service.
    PassThrough,
    Call(Route, Captures),
}

fn route(gateway: &Gateway, request: &Request<tonic::body::Body>) -> Routed {
    let path = request.uri().path();
    let method = request.method();
    if (*method == Method::GET || *method == Method::HEAD) && path == OPENAPI_PATH {
        return Routed::Document(gateway.document("application/json", gateway.openapi.clone()));
    }
    match gateway.routes.find(method, path) {
        Match::Found { target, variables } => Routed::Call(target.clone(), variables),
        Match::MethodNotAllowed(methods) => {
            let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let mut response = gateway.error(
                Code::Unimplemented,
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not allowed here; use {}", allow.join(", ")),
            );
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            Routed::Document(response)
        }
        Match::NotFound => Routed::PassThrough,
    }
}

/// Reads the body (bounded in size and time), builds the message, calls the inner service
/// within the client's deadline, converts back.
async fn transcode<S>(
    gateway: &Gateway,
    mut inner: S,
    call: Call,
    request: Request<tonic::body::Body>,
) -> Result<Response<tonic::body::Body>, S::Error>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>,
{
    let Call {
        route,
        variables,
        received,
    } = call;
    let (parts, body) = request.into_parts();
    let framing = response::Framing::for_request(&parts.headers);
    // The client's deadline, ended here a little early (see DEADLINE_MARGIN).
    let deadline = crate::proto::grpc_timeout(&parts.headers).map(|timeout| {
        (received + timeout)
            .checked_sub(DEADLINE_MARGIN)
            .unwrap_or(received)
    });
    let body = match read_body(gateway, &parts.headers, body, deadline).await {
        Ok(body) => body,
        Err(refused) => return Ok(*refused),
    };
    if route.body != rules::BodyRule::None
        && !body.is_empty()
        && !decodes_as_json(parts.headers.get(header::CONTENT_TYPE))
    {
        return Ok(gateway.error(
            Code::InvalidArgument,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON (application/json)",
        ));
    }
    let mut message = match request::build_message(&route, variables, parts.uri.query(), &body) {
        Ok(message) => message,
        Err(request::BadRequest(message)) => {
            return Ok(gateway.error(Code::InvalidArgument, StatusCode::BAD_REQUEST, &message));
        }
    };
    if let Err(request::BadRequest(message)) =
        request::resume_after_last_event(&mut message, &parts.headers)
    {
        return Ok(gateway.error(Code::InvalidArgument, StatusCode::BAD_REQUEST, &message));
    }
    let remaining = match deadline {
        None => None,
        Some(deadline) => match deadline.checked_duration_since(tokio::time::Instant::now()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => return Ok(past_deadline(gateway)),
        },
    };
    let grpc = request::grpc_request(
        &route,
        &parts.headers,
        parts.extensions,
        request::frame(&message),
        remaining,
    );
    let answer = inner.call(grpc);
    let answer = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer?,
            Err(_) => return Ok(past_deadline(gateway)),
        },
        None => answer.await?,
    };
    Ok(if route.server_streaming() {
        response::streaming(route, gateway.pool.clone(), answer, framing)
    } else {
        response::unary(&route, &gateway.pool, answer).await
    })
}

/// The JSON 504 of a call whose client deadline passed in the gateway.
fn past_deadline(gateway: &Gateway) -> Response<tonic::body::Body> {
    gateway.error(
        Code::DeadlineExceeded,
        StatusCode::GATEWAY_TIMEOUT,
        "the call did not finish within its deadline",
    )
}

/// The request body, read whole within the size limit, the read timeout and the client's
/// deadline; or the error response that refuses it.
async fn read_body(
    gateway: &Gateway,
    headers: &http::HeaderMap,
    body: tonic::body::Body,
    deadline: Option<tokio::time::Instant>,
) -> Result<Bytes, Box<Response<tonic::body::Body>>> {
    let max = gateway.body_bytes_max;
    let too_large = || {
        Box::new(gateway.error(
            Code::ResourceExhausted,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {max} bytes"),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let read_by = tokio::time::Instant::now() + gateway.body_read_timeout;
    let read_by = deadline.map_or(read_by, |deadline| deadline.min(read_by));
    let collected =
        tokio::time::timeout_at(read_by, http_body_util::Limited::new(body, max).collect()).await;
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => {
            // The transport's own words (hyper's) stay in the log, not in the answer.
            tracing::debug!(error = %e, "unreadable request body");
            Err(Box::new(gateway.error(
                Code::InvalidArgument,
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            )))
        }
        Err(_) => Err(Box::new(past_deadline(gateway))),
    }
}

#[cfg(test)]
mod tests;

//! The tower layer that authenticates and authorizes every call before any handler runs.
//!
//! It sits in front of all routes (gRPC, gRPC-web, and the JSON gateway, which turns JSON
//! calls into gRPC requests outside this layer), so every transport shares one auth path.
//! Interceptors cannot do this job: they are synchronous and do not see the method path.
//! Rejections are trailers-only gRPC responses (`grpc-status` in the headers), which gRPC and
//! gRPC-web clients both read.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, header::CONTENT_TYPE};
use tower::{Layer, Service};

use super::{
    Authenticator,
    policy::{Access, access_for},
};
use crate::error::Error;

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut inner = crate::service::take_ready(&mut self.inner);
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            let is_grpc = request
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
            let access = access_for(request.uri().path());
            if access.is_none() && !is_grpc {
                // A plain HTTP request for a path nobody serves.
                return Ok(not_found());
            }
            let decision = match access {
                // A method of a served tally service without a policy: denied by default.
                None if serves(request.uri().path()) => {
                    Err(Error::permission_denied("no access policy for this method"))
                }
                // A service nobody serves: answer as gRPC does for unknown methods.
                None => Err(Error::Unimplemented("this method")),
                Some(Access::Public) => Ok(None),
                Some(access) => {
                    let header = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    match authenticator.authenticate(header).await {
                        Ok(principal) => match access {
                            Access::Requires(permission) => {
                                principal.require(permission).map(|()| Some(principal))
                            }
                            _ => Ok(Some(principal)),
                        },
                        Err(err) => Err(err),
                    }
                }
            };
            match decision {
                Ok(principal) => {
                    if let Some(principal) = principal {
                        request.extensions_mut().insert(principal);
                    }
                    inner.call(request).await
                }
                Err(err) => {
                    let content_type = request.headers().get(CONTENT_TYPE).cloned();
                    Ok(crate::error::grpc_rejection(err, content_type))
                }
            }
        })
    }
}

/// Whether `path` names a method of one of tally's own services.
fn serves(path: &str) -> bool {
    crate::proto::TALLY_SERVICES.iter().any(|service| {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(service))
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn not_found() -> Response<tonic::body::Body> {
    // The same JSON shape as every HTTP JSON error of the gateway.
    let body = format!(
        "{{\"code\":{},\"message\":\"no route for this path\",\"details\":[]}}\n",
        tonic::Code::NotFound as i32
    );
    let mut response = Response::new(tonic::body::Body::new(body));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

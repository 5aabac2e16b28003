//! The tower layer that keeps a flood of calls, or of stalled ones, from freezing the server.
//!
//! For calls of tally's own services (everything under `/tally.v1.`), in this order:
//!
//! 1. the request message is read whole, within [`OverloadLayer`]'s read timeout and size
//!    bound, before anything else: a client that sends headers and then nothing holds a stream
//!    of its connection (bounded per connection and per peer), never a slot of the server;
//! 2. then the call takes one of the server's slots (`TALLY_CONCURRENCY_MAX`) without waiting:
//!    when none is free it is shed at once with `UNAVAILABLE`, reason `OVERLOADED` and a
//!    `google.rpc.RetryInfo` (HTTP 503 with `Retry-After` through the gateway), rather than
//!    queueing behind calls that may never end;
//! 3. the slot is held until the handler has answered;
//! 4. a request message that does not decode is answered `INVALID_ARGUMENT` (tonic says
//!    `INTERNAL`, with prost's text).
//!
//! Every call, of any service, ends at `TALLY_REQUEST_TIMEOUT_MS` or the client's
//! `grpc-timeout`, whichever is sooner, with `DEADLINE_EXCEEDED`.
//!
//! Health (`grpc.health.v1`), reflection and the plain HTTP routes (`/healthz`, `/readyz`,
//! `/metrics`) pass straight through: they take no slot, so they never wait behind
//! application calls. Every tally RPC is unary, which is what makes reading the message first
//! possible.

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, header::CONTENT_TYPE};
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::error::{Error, Reason, grpc_rejection};

/// What a shed caller is told to wait before it retries.
pub const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How prost's `DecodeError` starts its text (tonic's codec passes it on as the message).
const PROST_DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";
/// The path prefix of the calls this layer bounds.
const TALLY_PATH_PREFIX: &str = "/tally.v1.";

#[derive(Clone)]
pub struct OverloadLayer {
    slots: Arc<Semaphore>,
    read_timeout: Duration,
    body_bytes_max: usize,
    call_timeout: Duration,
}

impl OverloadLayer {
    /// `slots` calls at once; a request's message must arrive within `read_timeout` and be at
    /// most `body_bytes_max` bytes on the wire; a call ends at `call_timeout` or the client's
    /// `grpc-timeout`, whichever is sooner.
    pub fn new(
        slots: usize,
        read_timeout: Duration,
        body_bytes_max: usize,
        call_timeout: Duration,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            read_timeout,
            body_bytes_max,
            call_timeout,
        }
    }
}

impl<S> Layer<S> for OverloadLayer {
    type Service = OverloadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadService {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct OverloadService<S> {
    inner: S,
    limits: OverloadLayer,
}

impl<S, B> Service<Request<B>> for OverloadService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut inner = crate::service::take_ready(&mut self.inner);
        let (parts, body) = request.into_parts();
        let content_type = parts.headers.get(CONTENT_TYPE).cloned();
        let deadline = tokio::time::Instant::now()
            + crate::proto::grpc_timeout(&parts.headers)
                .map_or(self.limits.call_timeout, |asked| {
                    asked.min(self.limits.call_timeout)
                });
        if !parts.uri.path().starts_with(TALLY_PATH_PREFIX) {
            let request = Request::from_parts(parts, tonic::body::Body::new(body));
            return Box::pin(within(deadline, inner.call(request), content_type));
        }
        let limits = self.limits.clone();
        Box::pin(async move {
            let message = match read_message(body, &limits).await {
                Ok(message) => message,
                Err(err) => return Ok(grpc_rejection(err, content_type)),
            };
            // gRPC-web text bodies are base64: their ids are left out of the trail.
            let framed = content_type
                .as_ref()
                .is_some_and(|ct| !ct.as_bytes().starts_with(b"application/grpc-web-text"));
            if framed && let Some(audit) = parts.extensions.get::<crate::audit::AuditSlot>() {
                audit.note_request(parts.uri.path(), &message);
            }
            let Ok(_slot) = limits.slots.clone().try_acquire_owned() else {
                metrics::counter!("tally_rpc_shed_total").increment(1);
                return Ok(grpc_rejection(
                    Error::overloaded(
                        "the server is at its limit of calls at once; retry shortly",
                        SHED_RETRY_AFTER,
                    ),
                    content_type,
                ));
            };
            let request = Request::from_parts(
                parts,
                tonic::body::Body::new(http_body_util::Full::new(message)),
            );
            let response = within(deadline, inner.call(request), content_type.clone()).await?;
            Ok(undecodable_is_invalid_argument(response, content_type))
        })
    }
}

/// `call`, or `DEADLINE_EXCEEDED` at `deadline` (tonic's own timeout would answer
/// `CANCELLED`, which is what a client that hangs up gets, so the two could not be told apart).
async fn within<F, E>(
    deadline: tokio::time::Instant,
    call: F,
    content_type: Option<http::HeaderValue>,
) -> Result<Response<tonic::body::Body>, E>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    match tokio::time::timeout_at(deadline, call).await {
        Ok(answer) => answer,
        Err(_) => Ok(grpc_rejection(
            Error::refused(
                Reason::DeadlineExceeded,
                "the call did not finish within its deadline",
            ),
            content_type,
        )),
    }
}

/// tonic answers a request message that does not decode with `INTERNAL` and prost's error
/// text; to the caller it is bad input, and the library's words are not theirs to read. (Here,
/// inside the metrics layer, so the metrics count it as `INVALID_ARGUMENT` too.)
fn undecodable_is_invalid_argument(
    response: Response<tonic::body::Body>,
    content_type: Option<http::HeaderValue>,
) -> Response<tonic::body::Body> {
    let headers = response.headers();
    let undecodable = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"13")
        && headers.get("grpc-message").is_some_and(|message| {
            percent_encoding::percent_decode(message.as_bytes())
                .decode_utf8_lossy()
                .starts_with(PROST_DECODE_ERROR_PREFIX)
        });
    if !undecodable {
        return response;
    }
    grpc_rejection(
        Error::invalid(
            "request",
            "the request is not a valid protobuf message of this method's type",
        ),
        content_type,
    )
}

/// The whole request body, within the layer's time and size bounds.
async fn read_message<B>(body: B, limits: &OverloadLayer) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, limits.body_bytes_max);
    match tokio::time::timeout(limits.read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(Error::refused(
            Reason::MessageTooLarge,
            format!("the request is larger than {} bytes", limits.body_bytes_max),
        )),
        Ok(Err(_)) => Err(Error::invalid(
            "request",
            "the request body could not be read",
        )),
        Err(_) => {
            metrics::counter!("tally_rpc_read_timeouts_total").increment(1);
            Err(Error::refused(
                Reason::DeadlineExceeded,
                format!(
                    "the request message did not arrive within {} ms",
                    limits.read_timeout.as_millis()
                ),
            ))
        }
    }
}

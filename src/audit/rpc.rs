//! The `rpc` layer: one span, one count and one latency sample per gRPC call.
//!
//! It sits inside the JSON gateway, so a JSON call is seen as the gRPC call it was
//! transcoded into and both transports are measured alike. The status code of a gRPC call
//! is known only at its end: in the headers of a trailers-only answer (auth rejections), else
//! in the trailers, so the response body is wrapped and the call is recorded when the body
//! ends (or is dropped: a client that goes away counts as `CANCELLED`). With an audit sink,
//! the same moment records the call's audit event (calls of tally's own services only).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response, header::CONTENT_TYPE};
use http_body::{Body, Frame};
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::{AuditEvent, AuditSink, AuditSlot, REQUEST_ID_CHARS_MAX};
use crate::auth::policy::METHOD_POLICIES;

/// The method label of calls to paths no service answers, so they cannot blow up the series.
const UNKNOWN_METHOD: &str = "unknown";

#[derive(Clone, Default)]
pub struct RpcLayer {
    audit: Option<AuditSink>,
}

impl RpcLayer {
    /// Also records every tally call's audit event into `sink`.
    pub fn with_audit(sink: AuditSink) -> Self {
        Self { audit: Some(sink) }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            audit: self.audit.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    audit: Option<AuditSink>,
}

impl<S, B> Service<Request<B>> for RpcService<S>
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
        let is_grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc {
            // Plain HTTP (`/healthz`, `/metrics`, ...): not an RPC.
            return Box::pin(inner.call(request));
        }
        let method = method_label(request.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, request.headers());
        let audit = self
            .audit
            .clone()
            .filter(|_| method.starts_with("tally.v1."))
            .map(|sink| {
                let slot = AuditSlot::default();
                request.extensions_mut().insert(slot.clone());
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(REQUEST_ID_CHARS_MAX).collect())
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                Audited {
                    sink,
                    slot,
                    request_id,
                    at: time::OffsetDateTime::now_utc(),
                }
            });
        let call = Call {
            method,
            started: Instant::now(),
            span: span.clone(),
            code: None,
            audit,
        };
        Box::pin(
            async move {
                let response = inner.call(request).await?;
                let (parts, body) = response.into_parts();
                let mut call = call;
                call.code = grpc_status(&parts.headers);
                let body = if call.code.is_some() {
                    // Trailers-only: the call is over.
                    drop(call);
                    body
                } else {
                    tonic::body::Body::new(RecordedBody {
                        inner: body,
                        call: Some(call),
                    })
                };
                Ok(Response::from_parts(parts, body))
            }
            .instrument(span),
        )
    }
}

/// A gRPC path as a metric label: `tally.v1.TransferService/CreateTransfer`.
fn method_label(path: &str) -> &'static str {
    METHOD_POLICIES
        .iter()
        .map(|(p, _)| *p)
        .chain(OTHER_METHODS.iter().copied())
        .find(|p| *p == path)
        .map_or(UNKNOWN_METHOD, |p| p.trim_start_matches('/'))
}

/// Served methods outside tally.v1 that get their own label.
const OTHER_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// One call in flight; recorded exactly once, when dropped.
struct Call {
    method: &'static str,
    started: Instant,
    span: tracing::Span,
    code: Option<i32>,
    audit: Option<Audited>,
}

/// What the audit event of a call needs beyond the call itself.
struct Audited {
    sink: AuditSink,
    slot: AuditSlot,
    request_id: String,
    at: time::OffsetDateTime,
}

impl Drop for Call {
    fn drop(&mut self) {
        // No status at all: the answer was cut off (client gone, deadline, drain).
        let code = code_name(self.code.unwrap_or(tonic::Code::Cancelled as i32));
        metrics::counter!("tally_rpc_requests_total", "method" => self.method, "code" => code)
            .increment(1);
        metrics::histogram!("tally_rpc_duration_seconds", "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
        self.span
            .record("rpc.grpc.status_code", self.code.unwrap_or(1));
        if self.code.is_some_and(|c| c != 0) {
            self.span.record("otel.status_code", "ERROR");
        }
        if let Some(audit) = self.audit.take() {
            let facts = audit.slot.take();
            audit.sink.record(AuditEvent {
                id: uuid::Uuid::now_v7(),
                at: audit.at,
                user_id: facts.user_id,
                username: facts.username,
                method: format!("/{}", self.method),
                resource_ids: facts.resource_ids,
                outcome: code.to_owned(),
                latency_micros: i64::try_from(self.started.elapsed().as_micros())
                    .unwrap_or(i64::MAX),
                client_address: facts
                    .client_address
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                request_id: audit.request_id,
            });
        }
    }
}

/// The canonical name of a gRPC status code, as the gRPC spec spells it.
fn code_name(code: i32) -> &'static str {
    use tonic::Code::*;
    match tonic::Code::from_i32(code) {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The answer's body, watched for its `grpc-status` trailer.
struct RecordedBody {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl Body for RecordedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut call) = self.call.take()
                {
                    call.code = grpc_status(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut call) = self.call.take() {
                    call.code = Some(tonic::Code::Internal as i32);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers (gRPC-web carries them in the body): status unknown
                // here, but the call did finish.
                if let Some(mut call) = self.call.take() {
                    call.code.get_or_insert(tonic::Code::Unknown as i32);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

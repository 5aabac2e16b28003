//! Logging, traces and metrics.
//!
//! - Logs: `tracing` to stderr, text for people or JSON for log pipelines, filtered by
//!   `RUST_LOG` (default `info,sqlx=warn`).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every `tracing` span is also an
//!   OpenTelemetry span exported over OTLP/gRPC. `tracing` stays the only API the code uses;
//!   the W3C TraceContext propagator continues traces across processes (an incoming
//!   `traceparent`, the mail job payload).
//! - Metrics: see [`metrics`]; the `rpc` layer ([`rpc`]) counts and times every call.
//!
//! [`init`] runs once per process; a second call (tests start many apps in one process) keeps
//! the first subscriber.

pub mod metrics;

use std::time::Duration;

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    runtime,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, prelude::*};

use crate::config::{Environment, GlobalArgs, LogFormat};

/// The span exporter gets this long to send what is buffered when the process stops.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`init`] started; [`Telemetry::shutdown`] flushes the spans still buffered.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

/// Starts logging and, when an OTLP endpoint is configured, trace export. Must run inside a
/// tokio runtime when an endpoint is set (the exporter's batch task runs on it).
pub fn init(global: &GlobalArgs) -> anyhow::Result<Telemetry> {
    let format = global.log_format.unwrap_or(match global.environment {
        Environment::Production => LogFormat::Json,
        Environment::Development => LogFormat::Text,
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let tracer_provider = match global.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => Some(tracer_provider(endpoint)?),
        None => None,
    };
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tally"))
            // Only tally's own spans: sqlx, h2 and friends would flood the collector.
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("tally", tracing::Level::INFO),
            )
    });
    let log = match format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    // `try_init`: tests may have installed a subscriber already.
    let _ = tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(otel)
        .try_init();
    Ok(Telemetry { tracer_provider })
}

fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {err}"))?;
    // The batch processor on tokio: the tonic exporter needs a tokio reactor, which the
    // SDK's default processor thread does not have.
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name("tally").build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

impl Telemetry {
    /// Flushes and stops trace export, bounded by [`TRACE_FLUSH_TIMEOUT`].
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer_provider else {
            return;
        };
        // `shutdown` blocks until the batch task has exported; keep it off the runtime's
        // worker threads, which that task needs.
        let flushed = tokio::time::timeout(
            TRACE_FLUSH_TIMEOUT,
            tokio::task::spawn_blocking(move || provider.shutdown()),
        )
        .await;
        match flushed {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "flushing traces failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "flushing traces failed"),
            Err(_) => tracing::warn!("flushing traces timed out; buffered spans are lost"),
        }
    }
}

/// Makes `span` continue the trace named by a W3C `traceparent` (and `tracestate`) in
/// `headers`; without one, `span` keeps its place in the current trace.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(cx);
}

/// Like [`continue_trace`] with a bare `traceparent` value (from a job payload).
pub fn continue_trace_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", value);
        continue_trace(span, &headers);
    }
}

/// The W3C `traceparent` of the current span, to carry the trace into a job; `None` when no
/// trace is being recorded.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier = TraceParent(None);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.0
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct TraceParent(Option<String>);

impl Injector for TraceParent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

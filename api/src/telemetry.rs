//! Structured logs through `tracing`, on standard error; the level comes from `RUST_LOG`
//! (default `info`). Standard output carries only the "listening" line that scripts and
//! supervisors read.
//!
//! Traces: each request's span carries the W3C trace it belongs to (the `traceparent`
//! the balancer sends, read by `opentelemetry_sdk`'s `TraceContextPropagator`), as its
//! `trace_id` field, so every log line of the request names the trace, as the
//! balancer's access line does. With `--otlp-endpoint`, the spans also go over OTLP/HTTP
//! (protobuf) to a collector, the request's span a child of the balancer's: the
//! request, its GraphQL or REST handling, and each SQL statement (`sql` spans, at
//! DEBUG, exported without being logged). Without it no span is exported and nothing of
//! OpenTelemetry runs but reading the header.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::LogFormat;

/// The target of the spans around SQL statements (see `db`): exported, never logged.
pub const SQL_TARGET: &str = "sql";

/// What must outlive the process's work: the span exporter, flushed at shutdown.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (the end of a run's trace), waiting at most a few
    /// seconds for the collector.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5)) {
                tracing::warn!(error = %err, "could not flush the last spans to the OTLP collector");
            }
        }
    }
}

/// The OTLP/HTTP traces URL of a collector: `--otlp-endpoint` is its base
/// (`http://collector:4318`), as `OTEL_EXPORTER_OTLP_ENDPOINT` is, or the full URL.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

/// Installs the global subscriber: logs, and spans to `otlp_endpoint` when given.
/// Calling it twice is harmless (the second is ignored).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Colours for a person at a terminal; plain text for a file or a supervisor.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let Some(endpoint) = otlp_endpoint else {
        let _ = tracing_subscriber::registry().with(logs).try_init();
        return Ok(Telemetry::default());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("ecanteen-api")
                .build(),
        )
        .build();
    let tracer = provider.tracer("ecanteen-api");
    // The request's spans at INFO and the SQL statements' at DEBUG; no events (those are
    // the logs').
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| {
            meta.is_span() && (meta.target() == SQL_TARGET || *meta.level() <= tracing::Level::INFO)
        }));
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The span of one request: its method, path, request id, and the trace it belongs
/// to. The trace is the `traceparent`'s when the request carries a valid one (the
/// span's parent, for the exporter), else the one the exporter starts, else (nothing
/// exported) a new random one, so the logs always name a trace.
pub fn request_span<B>(req: &axum::http::Request<B>, request_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        uri = %req.uri().path(),
        request_id,
        trace_id = tracing::field::Empty,
    );
    let parent =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(req.headers()));
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        let _ = span.set_parent(parent);
    }
    let own = span.context().span().span_context().trace_id();
    let trace_id = if own != opentelemetry::trace::TraceId::INVALID {
        own
    } else if remote.is_valid() {
        remote.trace_id()
    } else {
        opentelemetry::trace::TraceId::from_bytes(rand::random())
    };
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_base_or_the_whole_traces_url() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}

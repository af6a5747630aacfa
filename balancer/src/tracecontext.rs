//! W3C Trace Context (`traceparent`), so one request can be followed from the balancer
//! into the replica's logs and spans.
//!
//! A request that arrives with a valid `traceparent` continues its trace: the trace id
//! and the flags are kept, and the balancer's hop gets a span id of its own, which the
//! replica sees as its parent. Anything else (none, a malformed one, the all-zero ids
//! the spec forbids) starts a new trace, sampled. `tracestate` is passed on untouched,
//! as the spec asks of a hop that does not add to it.
//!
//! Parsed here rather than through `opentelemetry_sdk`'s `TraceContextPropagator`: one
//! fixed-format header on the request path is not worth a `Context` allocated per
//! request when nothing is exported.
//!
//! With `--otlp-endpoint`, each hop is also a span ([`Exporter`]), sent over OTLP/HTTP
//! to the collector the replicas send theirs to: the SDK names the hop's span (its ids
//! replace the random ones), and the replica's request span is its child.

use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// A trace's position at the balancer's hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The balancer's span: the parent of the replica's.
    pub span_id: [u8; 8],
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// The span this hop continues, when the client sent one.
    pub parent_id: Option<[u8; 8]>,
}

impl TraceContext {
    /// Continues the client's trace, or starts one.
    pub fn continue_or_start(traceparent: Option<&[u8]>) -> Self {
        let span_id = nonzero_random();
        match traceparent.and_then(parse) {
            Some((trace_id, parent_id, flags)) => Self {
                trace_id,
                span_id,
                flags,
                parent_id: Some(parent_id),
            },
            None => Self {
                trace_id: nonzero_random(),
                span_id,
                flags: 0x01,
                parent_id: None,
            },
        }
    }

    /// The trace id as the logs and `traceparent` write it: 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        push_hex(&mut out, &self.trace_id);
        out
    }

    /// The `traceparent` the replica gets: this trace, with the balancer's span as the
    /// parent.
    pub fn traceparent(&self) -> String {
        // Made on every request: one allocation, no formatting machinery.
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }
}

/// The balancer's spans, exported over OTLP/HTTP (protobuf).
pub struct Exporter {
    /// It holds its provider, and with it the batch exporter's thread.
    tracer: SdkTracer,
}

/// One hop's span, open while the request is served.
pub struct HopSpan(opentelemetry_sdk::trace::Span);

impl Exporter {
    /// Exports to a collector: its base URL (`/v1/traces` is added) or the traces URL.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/');
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("ecanteen-balancer")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("ecanteen-balancer");
        Ok(Self { tracer })
    }

    /// Opens the hop's span, a child of the client's span when it sent one, and makes
    /// `trace` name it: what the replica is sent as its parent.
    pub fn open(&self, trace: &mut TraceContext, method: &str, start: SystemTime) -> HopSpan {
        let parent = match trace.parent_id {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(trace.trace_id),
                    SpanId::from_bytes(parent),
                    TraceFlags::new(trace.flags),
                    true,
                    TraceState::default(),
                ))
            }
            None => opentelemetry::Context::new(),
        };
        let span = self
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([KeyValue::new("http.request.method", method.to_owned())])
            .start_with_context(&self.tracer, &parent);
        let context = span.span_context();
        if context.is_valid() {
            trace.trace_id = context.trace_id().to_bytes();
            trace.span_id = context.span_id().to_bytes();
            trace.flags = context.trace_flags().to_u8();
        }
        HopSpan(span)
    }
}

impl HopSpan {
    /// Closes the span with what the hop did.
    pub fn close(mut self, status: u16, attempts: usize, replica: Option<String>) {
        self.0.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        self.0.set_attribute(KeyValue::new(
            "ecanteen.attempts",
            i64::try_from(attempts).unwrap_or(i64::MAX),
        ));
        if let Some(replica) = replica {
            self.0
                .set_attribute(KeyValue::new("server.address", replica));
        }
        self.0.end();
    }
}

/// `version-traceid-parentid-flags`, per the spec's rules for a version-00 parser: a
/// later version is read by its first four fields (and must then be followed by `-`
/// or nothing), version `ff` is invalid, ids of all zeros are invalid.
fn parse(header: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    if !text.is_ascii() || text.len() < 55 {
        return None;
    }
    let (head, rest) = text.split_at(55);
    let version = u8::from_str_radix(head.get(0..2)?, 16).ok()?;
    let tail_ok = match version {
        0xff => false,
        0 => rest.is_empty(),
        _ => rest.is_empty() || rest.starts_with('-'),
    };
    if !tail_ok {
        return None;
    }
    let bytes = head.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id: [u8; 16] = unhex(&head[3..35])?;
    let parent_id: [u8; 8] = unhex(&head[36..52])?;
    let flags = u8::from_str_radix(&head[53..55], 16).ok()?;
    if trace_id == [0; 16] || parent_id == [0; 8] || !is_lower_hex(head) {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

/// The spec's fields are lower-case hex only.
fn is_lower_hex(head: &str) -> bool {
    head.bytes()
        .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Appends `bytes` as lower-case hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    push_hex(&mut out, bytes);
    out
}

/// Random bytes, never all zero (the spec's invalid id).
fn nonzero_random<const N: usize>() -> [u8; N] {
    use rand::Rng as _;
    let mut bytes = [0u8; N];
    while bytes == [0; N] {
        rand::thread_rng().fill(&mut bytes[..]);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let trace = TraceContext::continue_or_start(Some(SPEC_EXAMPLE.as_bytes()));
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace.parent_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(trace.flags, 1);
        let header = trace.traceparent();
        assert!(
            header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{header}"
        );
        assert!(header.ends_with("-01"));
        assert_ne!(
            &header[36..52],
            "00f067aa0ba902b7",
            "the balancer's hop is a span of its own"
        );
        // What it passes on parses as it would at the next hop.
        assert_eq!(parse(header.as_bytes()).map(|p| p.0), Some(trace.trace_id));
        // Not sampled stays not sampled.
        let unsampled = SPEC_EXAMPLE.replace("-01", "-00");
        assert_eq!(
            TraceContext::continue_or_start(Some(unsampled.as_bytes())).flags,
            0
        );
        // A later version is read by its first four fields.
        let future = format!("cc{}-what-comes-next", &SPEC_EXAMPLE[2..]);
        assert_eq!(parse(future.as_bytes()).map(|p| p.2), Some(1));
    }

    #[test]
    fn anything_else_starts_a_new_sampled_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
            let trace = TraceContext::continue_or_start(Some(bad.as_bytes()));
            assert_eq!(trace.parent_id, None, "{bad}");
            assert_eq!(trace.flags, 1);
            assert_ne!(trace.trace_id, [0; 16]);
        }
        let a = TraceContext::continue_or_start(None);
        let b = TraceContext::continue_or_start(None);
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.traceparent().len(), 55);
    }

    #[test]
    fn any_bytes_at_all_parse_or_are_refused_without_a_panic() {
        let mut seed = 0x9e3779b97f4a7c15_u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 96 + 32) as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}

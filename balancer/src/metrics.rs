//! Counters the admin endpoint renders in Prometheus' text format.
//!
//! Per-replica counts live on each `Upstream`; these are the balancer-wide ones. They are
//! plain atomics, written once per request when its answer ends (`proxy::Balancer`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::upstream::{Health, Pool};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Answered by the balancer itself because no replica was ready.
    pub unavailable: AtomicU64,
    pub too_large: AtomicU64,
    /// Answered 429 by the rate limits.
    pub rate_limited: AtomicU64,
    /// Client connections closed at once, past a connection cap.
    pub connections_refused: AtomicU64,
    /// WebSocket upgrades refused past the WebSocket budget.
    pub websockets_refused: AtomicU64,
    /// Client connections closed because a phase outlasted its deadline (the header,
    /// the body, the wait for the next request).
    pub client_timeouts: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // One bucket per observation (the first whose bound holds); the cumulative
        // counts Prometheus expects are summed when rendering, not paid per request.
        let secs = elapsed.as_secs_f64();
        if let Some(bucket) = self
            .buckets
            .iter()
            .zip(BUCKETS)
            .find(|(_, bound)| secs <= *bound)
        {
            bucket.0.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn render(&self, pool: &Pool) -> String {
        let mut out = String::new();
        let members = pool.members();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, counter) in [
            ("requests_total", "Requests handled.", &self.requests),
            (
                "retries_total",
                "Attempts moved to another replica.",
                &self.retries,
            ),
            (
                "unavailable_total",
                "Requests answered 503 because no replica was ready.",
                &self.unavailable,
            ),
            (
                "too_large_total",
                "Requests refused with 413.",
                &self.too_large,
            ),
            (
                "rate_limited_total",
                "Requests refused with 429 by the rate limits.",
                &self.rate_limited,
            ),
            (
                "connections_refused_total",
                "Client connections closed at once, past a connection cap.",
                &self.connections_refused,
            ),
            (
                "websockets_refused_total",
                "WebSocket upgrades refused with 503, past the WebSocket budget.",
                &self.websockets_refused,
            ),
            (
                "client_timeouts_total",
                "Client connections closed for taking too long to send a header or body, or for idling past the keep-alive timeout.",
                &self.client_timeouts,
            ),
        ] {
            let _ = writeln!(out, "# HELP ecanteen_balancer_{name} {help}");
            let _ = writeln!(out, "# TYPE ecanteen_balancer_{name} counter");
            let _ = writeln!(out, "ecanteen_balancer_{name} {}", load(counter));
        }

        for (name, help, kind) in [
            (
                "upstream_requests_total",
                "Requests sent to a replica.",
                "counter",
            ),
            (
                "upstream_errors_total",
                "Connect failures and 5xx answers of a replica.",
                "counter",
            ),
            (
                "upstream_in_flight",
                "Requests in flight on a replica.",
                "gauge",
            ),
            (
                "upstream_healthy",
                "1 when a replica passes its health checks.",
                "gauge",
            ),
            (
                "upstream_ready",
                "1 when a replica may take new requests.",
                "gauge",
            ),
        ] {
            let _ = writeln!(out, "# HELP ecanteen_balancer_{name} {help}");
            let _ = writeln!(out, "# TYPE ecanteen_balancer_{name} {kind}");
            for u in &members {
                let s = u.status();
                let value = match name {
                    "upstream_requests_total" => s.requests,
                    "upstream_errors_total" => s.errors,
                    "upstream_in_flight" => s.in_flight,
                    "upstream_healthy" => u64::from(s.health == Health::Healthy),
                    _ => u64::from(s.ready),
                };
                let _ = writeln!(
                    out,
                    "ecanteen_balancer_{name}{{upstream=\"{}\"}} {value}",
                    s.addr
                );
            }
        }

        let _ = writeln!(out, "# HELP ecanteen_balancer_request_duration_seconds Time from request to last response byte.");
        let _ = writeln!(
            out,
            "# TYPE ecanteen_balancer_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            cumulative += load(bucket);
            let _ = writeln!(
                out,
                "ecanteen_balancer_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "ecanteen_balancer_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "ecanteen_balancer_request_duration_seconds_sum {}",
            load(&self.latency_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "ecanteen_balancer_request_duration_seconds_count {count}"
        );
        out
    }
}

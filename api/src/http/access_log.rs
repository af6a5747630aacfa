//! The access log: one line per request, for one request in `--access-log-every`; the
//! health and metrics probes are left out.
//!
//! Each line names the method, the route's template (never the raw path, which carries
//! ids and, on the REST routes, usernames), the status, the duration in milliseconds
//! and the request id that the answer also carries in `X-Request-Id`, so an operator
//! can follow one request through the balancer's and the replica's logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{AppState, REQUEST_ID};

/// Which requests are logged: one in `every` (0: none).
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    every: u64,
    seen: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn new(every: u64) -> Self {
        Self {
            every,
            seen: Arc::default(),
        }
    }

    /// Whether the next request is one to log.
    fn sample(&self) -> bool {
        match self.every {
            0 => false,
            1 => true,
            every => self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every),
        }
    }
}

/// The routes the balancer and monitoring poll every second or so: the metrics count
/// them, and a line for each would bury the requests a person wants to read.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    // Nothing to measure when the line would be filtered out (`RUST_LOG=warn`).
    if route.is_some_and(|r| PROBES.contains(&r))
        || !tracing::enabled!(target: "access", tracing::Level::INFO)
        || !state.settings.access_log.sample()
    {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let route = route.unwrap_or("unmatched").to_owned();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let duration_ms = (start.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    tracing::info!(
        target: "access",
        %method,
        route,
        status = response.status().as_u16(),
        duration_ms,
        request_id,
        "access"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_in_every_is_logged_and_zero_is_none() {
        let count = |every: u64| {
            let log = AccessLog::new(every);
            (0..100).filter(|_| log.sample()).count()
        };
        assert_eq!(count(0), 0);
        assert_eq!(count(1), 100);
        assert_eq!(count(10), 10);
        assert_eq!(count(3), 34);
    }
}

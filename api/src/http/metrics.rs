//! Prometheus metrics: requests, latencies and database pool use at `/metrics`.
//!
//! The `metrics` facade records; the exporter renders. Its recorder is process-global,
//! so it is installed once, however many apps a process builds (tests build many).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!(error = %err, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> Response {
    let (size, idle) = state.service.db().pool_stats();
    metrics::gauge!("ecanteen_db_pool_connections").set(f64::from(size));
    metrics::gauge!("ecanteen_db_pool_idle_connections").set(idle as f64);
    let batches = state.service.stock_batches();
    metrics::counter!("ecanteen_stock_batches_total")
        .absolute(batches.batches.load(std::sync::atomic::Ordering::Relaxed));
    metrics::counter!("ecanteen_stock_batched_changes_total")
        .absolute(batches.changes.load(std::sync::atomic::Ordering::Relaxed));
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// The method as a label: one of the methods the service knows, else `other`. A label
/// set must be bounded: a label taken from the request as it came grows the exporter's
/// memory (and `/metrics`) by a series for every made-up method, for good.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts each request and times it, labelled by route pattern (not raw path, which
/// would explode the label set), method (from a fixed set) and status. The layer runs
/// after routing, so a route's template is known; whatever no route matched (the
/// client's files, and unknown paths) is `unmatched`.
pub async fn record(req: Request, next: Next) -> Response {
    // Make sure the recorder exists before the first request is counted.
    let _ = handle();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("ecanteen_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ecanteen_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

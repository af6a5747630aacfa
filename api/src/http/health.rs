//! Liveness and readiness, for balancers and orchestrators.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{with_retry_after, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up and serving HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready for traffic: not draining, and the database answers within a second.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return not_ready("draining");
    }
    let db = state.service.db();
    match tokio::time::timeout(Duration::from_secs(1), db.ping()).await {
        Ok(true) => Json(json!({ "status": "ready" })).into_response(),
        _ => not_ready("database unreachable"),
    }
}

fn not_ready(status: &str) -> Response {
    with_retry_after(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        )
            .into_response(),
        1,
    )
}

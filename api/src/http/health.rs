//! Liveness and readiness, for balancers and orchestrators.
//!
//! Readiness tells the truth about writes: a replica that cannot take the write lock
//! within a write's own bound says it is not ready, so the balancer sends its traffic
//! elsewhere, and says it is ready again once a probe takes the lock.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{with_retry_after, AppState};
use crate::db::Db;

/// Whether this replica can start a write now, as a probe on a task of its own finds
/// by taking the write lock every `period` ([`Db::probe_writes`]).
///
/// The probe is never cancelled (a readiness request that timed out does not drop it,
/// which could leave its transaction open), so `/readyz` only reads its state: not
/// ready when the last probe failed, or when the running one has waited past `bound`.
/// The probe stops once every clone of this handle is gone.
#[derive(Clone, Debug)]
pub struct WriteHealth(Arc<Mutex<Probe>>);

#[derive(Debug)]
struct Probe {
    /// A write's own bound on waiting for the lock.
    bound: Duration,
    /// What the last finished probe found (true before the first: the migrations that
    /// ran at start-up took the lock).
    ok: bool,
    running_since: Option<Instant>,
}

impl WriteHealth {
    pub fn start(db: Db, bound: Duration, period: Duration) -> Self {
        let health = Self(Arc::new(Mutex::new(Probe {
            bound,
            ok: true,
            running_since: None,
        })));
        tokio::spawn(probe_forever(db, period, Arc::downgrade(&health.0)));
        health
    }

    /// The last probe took the lock, and the one running (if any) has not waited
    /// longer than a write may.
    pub fn is_healthy(&self) -> bool {
        let probe = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        probe.ok
            && probe
                .running_since
                .is_none_or(|since| since.elapsed() <= probe.bound)
    }
}

async fn probe_forever(db: Db, period: Duration, health: Weak<Mutex<Probe>>) {
    while update(&health, |probe| probe.running_since = Some(Instant::now())) {
        let result = db.probe_writes().await;
        let recorded = update(&health, |probe| {
            match &result {
                Err(err) if probe.ok => {
                    tracing::warn!(error = %err, "cannot take the write lock; not ready")
                }
                Ok(()) if !probe.ok => tracing::info!("the write lock is free again; ready"),
                _ => {}
            }
            probe.ok = result.is_ok();
            probe.running_since = None;
        });
        if !recorded {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

/// Changes the probe's state; false once nobody holds the [`WriteHealth`] any more.
fn update(health: &Weak<Mutex<Probe>>, change: impl FnOnce(&mut Probe)) -> bool {
    let Some(state) = health.upgrade() else {
        return false;
    };
    change(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
    true
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up and serving HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready for traffic: not draining, the database answers within a second, and a write
/// could take the write lock within its bound.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return not_ready("draining");
    }
    let db = state.service.db();
    match tokio::time::timeout(Duration::from_secs(1), db.ping()).await {
        Ok(true) if state.writes.is_healthy() => Json(json!({ "status": "ready" })).into_response(),
        Ok(true) => not_ready("writes unavailable"),
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

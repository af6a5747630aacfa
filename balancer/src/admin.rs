//! The admin endpoint: `GET /status` (JSON) and `GET /metrics` (Prometheus).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Algorithm;
use crate::connections::AddressCaps;
use crate::metrics::Metrics;
use crate::spawn::Supervisor;
use crate::upstream::Pool;

#[derive(Clone)]
pub struct Admin {
    /// Bound before the server starts (`server::build`), so a taken port is an error
    /// at start; taken once, by the service.
    pub listener: Arc<Mutex<Option<std::net::TcpListener>>>,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub algorithm: Algorithm,
    /// With `--spawn`: the replicas this balancer started, shown as `replicas`.
    pub supervisor: Option<Arc<Supervisor>>,
    /// Client connections open, and their cap.
    pub connections: Arc<AddressCaps>,
    /// WebSocket tunnels open, and their cap.
    pub websockets: Arc<AddressCaps>,
}

async fn status(State(admin): State<Admin>) -> impl IntoResponse {
    let upstreams: Vec<_> = admin.pool.members().iter().map(|u| u.status()).collect();
    let ready = upstreams.iter().filter(|u| u.ready).count();
    let replicas = admin.supervisor.as_ref().map(|s| s.status());
    Json(serde_json::json!({
        "algorithm": match admin.algorithm {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::LeastConnections => "least-connections",
        },
        "ready": ready,
        "upstreams": upstreams,
        "replicas": replicas,
        "connections": { "open": admin.connections.open(), "max": admin.connections.total() },
        "websockets": { "open": admin.websockets.open(), "max": admin.websockets.total() },
        "totals": {
            "requests": admin.metrics.requests.load(std::sync::atomic::Ordering::Relaxed),
            "retries": admin.metrics.retries.load(std::sync::atomic::Ordering::Relaxed),
            "unavailable": admin.metrics.unavailable.load(std::sync::atomic::Ordering::Relaxed),
        },
    }))
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.metrics.render(&admin.pool),
    )
}

#[async_trait]
impl BackgroundService for Admin {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let app = Router::new()
            .route("/status", get(status))
            .route("/metrics", get(metrics))
            .with_state(self.clone());
        let bound = self.listener.lock().ok().and_then(|mut l| l.take());
        let listener = match bound.map(tokio::net::TcpListener::from_std) {
            Some(Ok(listener)) => listener,
            Some(Err(err)) => {
                tracing::error!(error = %err, "cannot serve the admin endpoint");
                return;
            }
            None => return,
        };
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "admin endpoint failed");
        }
    }
}

//! Active health checks: `GET /readyz` on every replica, with rise/fall hysteresis.
//!
//! The probe itself is pingora's `HttpHealthCheck`; the state (unknown until `rise`
//! passes, unhealthy after `fall` failures) lives in [`Upstream`], where the selection
//! reads it. Probes run concurrently, each replica on its own schedule: a replica whose
//! health is still undecided is probed four times as often, so a new one joins within
//! about `rise × interval / 4`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::upstream::{Pool, Upstream};

pub struct HealthChecker {
    pool: Arc<Pool>,
    probe: Arc<HttpHealthCheck>,
}

impl HealthChecker {
    pub fn new(pool: Arc<Pool>) -> anyhow::Result<Self> {
        let mut probe = HttpHealthCheck::new("localhost", false);
        let mut req = RequestHeader::build("GET", b"/readyz", None)?;
        req.insert_header("Host", "localhost")?;
        req.insert_header("User-Agent", "ecanteen-balancer health check")?;
        probe.req = req;
        probe.reuse_connection = false;
        let timeout = Some(Duration::from_millis(900));
        probe.peer_template.options.connection_timeout = timeout;
        probe.peer_template.options.read_timeout = timeout;
        probe.peer_template.options.total_connection_timeout = timeout;
        Ok(Self {
            pool,
            probe: Arc::new(probe),
        })
    }
}

async fn probe_one(probe: Arc<HttpHealthCheck>, upstream: Arc<Upstream>, pool: Arc<Pool>) {
    let ok = match Backend::new(&upstream.addr.to_string()) {
        Ok(backend) => probe.check(&backend).await.is_ok(),
        Err(_) => false,
    };
    if let Some(health) = upstream.record_probe(ok, &pool.policy) {
        tracing::info!(upstream = %upstream.addr, ?health, "health changed");
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut running: Vec<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            running.retain(|(_, task)| !task.is_finished());
            let now = Instant::now();
            for upstream in self.pool.members() {
                let busy = running.iter().any(|(addr, _)| *addr == upstream.addr);
                if !busy && upstream.probe_due(now) {
                    let addr = upstream.addr;
                    let task =
                        tokio::spawn(probe_one(self.probe.clone(), upstream, self.pool.clone()));
                    running.push((addr, task));
                }
            }
        }
    }
}

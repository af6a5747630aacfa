//! `--spawn N`: start and supervise local `ecanteen-api` replicas.
//!
//! Each replica gets a free loopback port, chosen once and kept across restarts, so the
//! membership never changes. A replica that dies is restarted with exponential backoff
//! (0.25 s doubling to 8 s; reset after 30 s of running). Children are started with
//! `--exit-with-parent` and a pipe as their standard input: closing it (on shutdown) asks
//! them to drain and exit, and if the balancer dies however abruptly, the pipe closes and
//! they exit too, so no replica outlives its balancer.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

struct Slot {
    addr: SocketAddr,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

pub struct Supervisor {
    bin: PathBuf,
    database_url: String,
    slots: Mutex<Vec<Slot>>,
}

/// A free port on loopback, found by binding port 0.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The `ecanteen-api` beside this executable (how cargo lays out a workspace build).
pub fn default_api_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.with_file_name(format!("ecanteen-api{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

impl Supervisor {
    /// Starts `n` replicas; returns their addresses.
    pub fn start(n: usize, bin: PathBuf, database_url: String) -> anyhow::Result<Arc<Self>> {
        let supervisor = Arc::new(Self {
            bin,
            database_url,
            slots: Mutex::new(Vec::new()),
        });
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let addr = free_port()?;
            let child = supervisor.launch(addr)?;
            slots.push(Slot {
                addr,
                child: Some(child),
                started: Instant::now(),
                backoff: Duration::from_millis(250),
                restart_at: None,
            });
        }
        if let Ok(mut guard) = supervisor.slots.lock() {
            *guard = slots;
        }
        Ok(supervisor)
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.slots
            .lock()
            .map(|s| s.iter().map(|slot| slot.addr).collect())
            .unwrap_or_default()
    }

    fn launch(&self, addr: SocketAddr) -> anyhow::Result<Child> {
        let child = Command::new(&self.bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--exit-with-parent")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
        tracing::info!(replica = %addr, pid = child.id(), "replica started");
        Ok(child)
    }

    /// Restarts replicas that died, once their backoff has passed.
    fn check(&self) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let now = Instant::now();
        for slot in slots.iter_mut() {
            if let Some(child) = slot.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => {
                        if now.duration_since(slot.started) > Duration::from_secs(30) {
                            slot.backoff = Duration::from_millis(250);
                        }
                        continue;
                    }
                    Ok(Some(status)) => {
                        tracing::warn!(replica = %slot.addr, %status, backoff_ms = slot.backoff.as_millis(), "replica exited; restarting");
                    }
                    Err(err) => {
                        tracing::warn!(replica = %slot.addr, error = %err, "cannot watch replica")
                    }
                }
                slot.child = None;
                slot.restart_at = Some(now + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(Duration::from_secs(8));
            }
            if slot.restart_at.is_some_and(|at| now >= at) {
                match self.launch(slot.addr) {
                    Ok(child) => {
                        slot.child = Some(child);
                        slot.started = now;
                        slot.restart_at = None;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "restart failed");
                        slot.restart_at = Some(now + slot.backoff);
                    }
                }
            }
        }
    }

    /// Asks every replica to drain and exit (by closing its stdin), waits up to
    /// `grace`, then kills what is left.
    fn stop(&self, grace: Duration) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        for slot in slots.iter_mut() {
            if let Some(child) = slot.child.as_mut() {
                drop(child.stdin.take());
            }
        }
        let deadline = Instant::now() + grace;
        for slot in slots.iter_mut() {
            if let Some(mut child) = slot.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Ok(None) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!("replicas stopped");
    }
}

/// Runs the supervision loop as a pingora background service, and stops the replicas
/// on graceful shutdown.
pub struct SupervisorService {
    pub supervisor: Arc<Supervisor>,
    pub grace: Duration,
}

#[async_trait]
impl BackgroundService for SupervisorService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let supervisor = self.supervisor.clone();
                    let _ = tokio::task::spawn_blocking(move || supervisor.check()).await;
                }
            }
        }
        let supervisor = self.supervisor.clone();
        let grace = self.grace;
        let _ = tokio::task::spawn_blocking(move || supervisor.stop(grace)).await;
    }
}

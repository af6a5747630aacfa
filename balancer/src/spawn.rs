//! `--spawn N`: start and supervise local `ecanteen-api` replicas.
//!
//! Each replica gets a free loopback port, chosen once and kept across restarts, so the
//! membership never changes. A replica that dies is restarted with exponential backoff
//! (0.25 s doubling to 8 s; reset after 30 s of running). Children are started with
//! `--exit-with-parent` and a pipe as their standard input: closing it (on shutdown) asks
//! them to drain and exit, and if the balancer dies however abruptly, the pipe closes and
//! they exit too, so no replica outlives its balancer.
//!
//! A replica's output (its logs on standard error, its "listening" line on standard
//! output) is forwarded to the balancer's standard error, line by line, with the
//! replica's address: a prefix in text, a `replica` field in JSON ([`forward`]).

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::LogFormat;

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
    log_format: LogFormat,
    /// Passed on as the replicas' `--otlp-endpoint`.
    otlp_endpoint: Option<String>,
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
    pub fn start(
        n: usize,
        bin: PathBuf,
        database_url: String,
        log_format: LogFormat,
        otlp_endpoint: Option<String>,
    ) -> anyhow::Result<Arc<Self>> {
        let supervisor = Arc::new(Self {
            bin,
            database_url,
            log_format,
            otlp_endpoint,
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
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--log-format")
            .arg(self.log_format.as_str())
            .arg("--exit-with-parent")
            .args(
                self.otlp_endpoint
                    .iter()
                    .flat_map(|endpoint| ["--otlp-endpoint", endpoint.as_str()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
        tracing::info!(replica = %addr, pid = child.id(), "replica started");
        if let Some(out) = child.stdout.take() {
            forward(out, addr, self.log_format);
        }
        if let Some(err) = child.stderr.take() {
            forward(err, addr, self.log_format);
        }
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

/// Copies a replica's output to the balancer's standard error, one line at a time, on a
/// thread of its own that ends when the replica closes the pipe (when it exits).
fn forward(pipe: impl Read + Send + 'static, replica: SocketAddr, format: LogFormat) {
    let spawned = std::thread::Builder::new()
        .name(format!("replica {replica} log"))
        .spawn(move || {
            let mut lines = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                let forwarded = with_replica(text.trim_end_matches(['\r', '\n']), replica, format);
                // One write per line, so lines of different replicas never interleave.
                let _ = writeln!(std::io::stderr().lock(), "{forwarded}");
                line.clear();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%replica, error = %err, "cannot forward the replica's output");
    }
}

/// One line of a replica's output as the balancer prints it: `127.0.0.1:9001 | line` in
/// text; in JSON, the replica's own object with a `replica` field (or, for a line that
/// is not an object, `{"replica": …, "message": line}`).
pub fn with_replica(line: &str, replica: SocketAddr, format: LogFormat) -> String {
    match format {
        LogFormat::Text => format!("{replica} | {line}"),
        LogFormat::Json => {
            let object = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(mut object)) => {
                    object.insert("replica".into(), replica.to_string().into());
                    object
                }
                _ => {
                    let mut object = serde_json::Map::new();
                    object.insert("replica".into(), replica.to_string().into());
                    object.insert("message".into(), line.into());
                    object
                }
            };
            serde_json::Value::Object(object).to_string()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_line_names_its_replica() {
        let replica: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(
            with_replica("INFO started", replica, LogFormat::Text),
            "127.0.0.1:9001 | INFO started"
        );
        let json = with_replica(
            r#"{"level":"INFO","message":"ok"}"#,
            replica,
            LogFormat::Json,
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["replica"], "127.0.0.1:9001");
        assert_eq!(value["level"], "INFO");
        let plain = with_replica("listening on http://x", replica, LogFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(value["message"], "listening on http://x");
        assert_eq!(value["replica"], "127.0.0.1:9001");
    }
}

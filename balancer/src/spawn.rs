//! `--spawn N`: start and supervise local `ecanteen-api` replicas.
//!
//! Each replica's port is bound here, by the supervisor, before the replica starts, and
//! the listening socket is handed to the child as descriptor 3 with `LISTEN_FDS=1`
//! (systemd's socket-activation protocol; the replica reads it with `listenfd`). The
//! supervisor keeps its copy for as long as it runs, so no two replicas can be given one
//! port, no other process can take a port between the pick and the replica's start, and a
//! restarted replica serves the very socket its predecessor did: connections that arrive
//! while it restarts wait in the socket's backlog instead of being refused. The
//! membership never changes.
//!
//! The price of holding the socket: while a replica is down, connections to its port are
//! not refused but wait in the backlog. So a replica that exits is marked not ready in
//! the pool at once ([`Upstream::mark_down`]; `rise` probes bring it back), and no new
//! request is sent there; on shutdown the supervisor lets its sockets go as soon as it
//! has asked the replicas to stop.
//!
//! A replica that dies is restarted with exponential backoff (0.25 s doubling to 8 s;
//! reset after 30 s of running). One that keeps dying within seconds of its start, or
//! cannot be started at all, [`FAILING_AFTER`] times in a row, is logged as an error on
//! every exit and shown as `failing` in the admin endpoint's `/status`
//! ([`ReplicaStatus`]) until a run of it outlasts those seconds; it is still retried at
//! the longest backoff. Children are started with `--exit-with-parent` and a pipe as
//! their standard input: closing it (on shutdown) asks them to drain and exit, and if the
//! balancer dies however abruptly, the pipe closes and they exit too, so no replica
//! outlives its balancer.
//!
//! A replica's output (its logs on standard error, its "listening" line on standard
//! output) is forwarded to the balancer's standard error, line by line, with the
//! replica's address: a prefix in text, a `replica` field in JSON ([`forward`]).

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use command_fds::{CommandFdExt as _, FdMapping};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::config::LogFormat;
use crate::upstream::{Pool, Upstream};

/// The descriptor a replica finds its listening socket on (`SD_LISTEN_FDS_START`).
const LISTEN_FD: i32 = 3;
/// The socket's name in `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`): a replica
/// takes a socket handed over without `LISTEN_PID` only when it is named so.
pub const LISTEN_FD_NAME: &str = "ecanteen-api";
/// A replica that exits within this long of its start has not come up.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// After this many quick exits in a row, a slot is `failing`.
pub const FAILING_AFTER: u32 = 3;
/// How long a replica must run for its backoff to start again from the shortest.
const STABLE: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const LONGEST_BACKOFF: Duration = Duration::from_secs(8);

struct Slot {
    addr: SocketAddr,
    /// Bound and listening until the supervisor stops; each child gets a copy.
    listener: Option<TcpListener>,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
    /// Exits within [`QUICK_EXIT`] of the start, in a row.
    quick_exits: u32,
    restarts: u64,
    last_exit: Option<String>,
}

/// One spawned replica as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub addr: SocketAddr,
    /// The running child's process id.
    pub pid: Option<u32>,
    /// `running`, `restarting` (waiting out its backoff), or `failing` (it exited within
    /// seconds of its start [`FAILING_AFTER`] times in a row; still retried).
    pub state: &'static str,
    pub restarts: u64,
    /// How the last child ended (`exit status: 1`, `signal: 9 (SIGKILL)`), if one has.
    pub last_exit: Option<String>,
}

impl Slot {
    fn status(&self) -> ReplicaStatus {
        let state = if self.quick_exits >= FAILING_AFTER {
            "failing"
        } else if self.child.is_some() {
            "running"
        } else {
            "restarting"
        };
        ReplicaStatus {
            addr: self.addr,
            pid: self.child.as_ref().map(Child::id),
            state,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
        }
    }
}

pub struct Supervisor {
    bin: PathBuf,
    database_url: String,
    log_format: LogFormat,
    /// Passed on as the replicas' `--otlp-endpoint`.
    otlp_endpoint: Option<String>,
    /// Told at once when a replica exits.
    pool: Arc<Pool>,
    slots: Mutex<Vec<Slot>>,
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
        pool: Arc<Pool>,
    ) -> anyhow::Result<Arc<Self>> {
        let supervisor = Arc::new(Self {
            bin,
            database_url,
            log_format,
            otlp_endpoint,
            pool,
            slots: Mutex::new(Vec::new()),
        });
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            // Every slot's socket stays bound while the next is, so the kernel cannot
            // hand out one port twice.
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| anyhow::anyhow!("cannot bind a port for a replica: {e}"))?;
            let addr = listener.local_addr()?;
            let child = supervisor.launch(addr, &listener)?;
            slots.push(Slot {
                addr,
                listener: Some(listener),
                child: Some(child),
                started: Instant::now(),
                backoff: FIRST_BACKOFF,
                restart_at: None,
                quick_exits: 0,
                restarts: 0,
                last_exit: None,
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

    /// What each spawned replica is doing, in slot order.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.slots
            .lock()
            .map(|s| s.iter().map(Slot::status).collect())
            .unwrap_or_default()
    }

    /// Starts a replica on `listener` (a copy of it becomes the child's descriptor 3).
    /// `--listen` names the same address, so a replica built without socket handover
    /// fails loudly (the port is held here) instead of serving somewhere else.
    fn launch(&self, addr: SocketAddr, listener: &TcpListener) -> anyhow::Result<Child> {
        let socket = OwnedFd::from(
            listener
                .try_clone()
                .map_err(|e| anyhow::anyhow!("cannot hand {addr} to a replica: {e}"))?,
        );
        let mut command = Command::new(&self.bin);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: socket,
                child_fd: LISTEN_FD,
            }])
            .map_err(|e| anyhow::anyhow!("cannot hand {addr} to a replica: {e}"))?;
        let mut child = command
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", LISTEN_FD_NAME)
            // Set by systemd for the balancer itself, it would name the wrong process.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS_FIRST_FD")
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
                let ran = now.duration_since(slot.started);
                match child.try_wait() {
                    Ok(None) => {
                        if ran > STABLE {
                            slot.backoff = FIRST_BACKOFF;
                        }
                        if ran > QUICK_EXIT {
                            slot.quick_exits = 0;
                        }
                        continue;
                    }
                    Ok(Some(status)) => {
                        slot.last_exit = Some(status.to_string());
                        if ran <= QUICK_EXIT {
                            slot.quick_exits = slot.quick_exits.saturating_add(1);
                        }
                        if slot.quick_exits >= FAILING_AFTER {
                            tracing::error!(replica = %slot.addr, %status, quick_exits = slot.quick_exits, backoff_ms = slot.backoff.as_millis(), "replica keeps exiting within seconds of its start (its last lines are above); restarting");
                        } else {
                            tracing::warn!(replica = %slot.addr, %status, backoff_ms = slot.backoff.as_millis(), "replica exited; restarting");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(replica = %slot.addr, error = %err, "cannot watch replica")
                    }
                }
                slot.child = None;
                slot.restart_at = Some(now + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(LONGEST_BACKOFF);
                self.mark_down(slot.addr);
            }
            if slot.restart_at.is_some_and(|at| now >= at) {
                let Some(listener) = slot.listener.as_ref() else {
                    continue;
                };
                match self.launch(slot.addr, listener) {
                    Ok(child) => {
                        slot.child = Some(child);
                        slot.started = now;
                        slot.restart_at = None;
                        slot.restarts += 1;
                    }
                    Err(err) => {
                        tracing::error!(replica = %slot.addr, error = %err, "restart failed");
                        slot.quick_exits = slot.quick_exits.saturating_add(1);
                        slot.last_exit = Some(format!("not started: {err}"));
                        slot.restart_at = Some(now + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(LONGEST_BACKOFF);
                    }
                }
            }
        }
    }

    /// Takes the replica at `addr` out of service until its probes pass again.
    fn mark_down(&self, addr: SocketAddr) {
        if let Some(upstream) = self.pool.members().iter().find(|u| u.addr == addr) {
            Upstream::mark_down(upstream);
        }
    }

    /// Asks every replica to drain and exit (by closing its stdin), lets the ports go,
    /// waits up to `grace`, then kills what is left. The children are taken out first,
    /// so `/status` is not held up meanwhile.
    fn stop(&self, grace: Duration) {
        let mut children = Vec::new();
        if let Ok(mut slots) = self.slots.lock() {
            for slot in slots.iter_mut() {
                if let Some(mut child) = slot.child.take() {
                    drop(child.stdin.take());
                    children.push(child);
                }
                slot.restart_at = None;
                // A connection that comes now is refused, not left in a backlog.
                slot.listener = None;
            }
        }
        let deadline = Instant::now() + grace;
        for mut child in children {
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
                let mut forwarded =
                    with_replica(text.trim_end_matches(['\r', '\n']), replica, format);
                forwarded.push('\n');
                // One write per line (the newline included: `writeln!` would make it a
                // second), so lines of different replicas never interleave.
                let _ = std::io::stderr().lock().write_all(forwarded.as_bytes());
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

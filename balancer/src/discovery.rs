//! The upstreams file, re-read when it changes.
//!
//! It is polled (twice a second) rather than watched with inotify: polling works on
//! every filesystem, including the network and container mounts where change
//! notifications are unreliable, and a file of a few lines costs nothing to re-read.
//! A file that fails to parse, or lists no replica, changes nothing: the previous set
//! stays, and the line at fault is logged. A change is applied once the file has been
//! the same on two reads 100 ms apart, so a file caught mid-write is not applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::upstream::{parse_upstreams, Pool};

pub struct UpstreamsFile {
    pub path: PathBuf,
    pub pool: Arc<Pool>,
    /// Addresses that are always members (from `--upstream` and `--spawn`).
    pub fixed: Vec<(std::net::SocketAddr, u64)>,
}

impl UpstreamsFile {
    /// Reads and applies the file now; an error leaves the membership as it was.
    pub fn load(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut members = parse_upstreams(&text)?;
        if members.is_empty() && self.fixed.is_empty() {
            // An empty list is far likelier a file caught mid-write than a wish to
            // refuse all traffic.
            return Err("no replicas listed".to_owned());
        }
        for fixed in &self.fixed {
            if !members.iter().any(|(a, _)| *a == fixed.0) {
                members.push(*fixed);
            }
        }
        self.pool.set_members(&members);
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for UpstreamsFile {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last = std::fs::read_to_string(&self.path).ok();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let current = std::fs::read_to_string(&self.path).ok();
            if current == last {
                continue;
            }
            // Apply a change only once the file has stopped changing, so a file read
            // while an editor or script is still writing it is not taken for the list.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if std::fs::read_to_string(&self.path).ok() != current {
                continue;
            }
            last = current;
            match self.load() {
                Ok(()) => tracing::info!(file = %self.path.display(), "upstreams reloaded"),
                Err(err) => {
                    tracing::error!(error = %err, "upstreams file rejected; keeping the previous set")
                }
            }
        }
    }
}

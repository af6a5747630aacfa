//! Client connections: how many the balancer holds, in all and per client address.
//!
//! Every connection holds a file descriptor whether it does work or not, so a client
//! that opens connections and sends nothing (or one request, then silence) is bounded
//! here, at the door, and by the deadlines on each phase of a connection (the header,
//! the body, the wait for the next request: [`crate::proxy`]). Both caps are set below
//! the file-descriptor limit, so `accept()` never fails for want of one and the health
//! checks and the connections to the replicas always have descriptors left.
//!
//! A connection past a cap is closed at once, before anything is read from it: the
//! cheapest refusal there is, and the one nginx's `limit_conn` and HAProxy's `maxconn`
//! come down to under attack. The per-address cap counts the peer's address: a trusted
//! proxy ([`crate::client_addr`]) carries many clients over its connections, so it is
//! held only to the total.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::client_addr::TrustedProxies;
use crate::metrics::Metrics;
use crate::proxy::Balancer;

/// Descriptors kept back from the connection caps' share of the limit: the listeners,
/// the admin endpoint, logs, the spawned replicas' pipes, health checks.
const RESERVED_FDS: u64 = 256;

/// A count of things held (client connections; WebSocket tunnels), in all and per
/// client address.
pub struct AddressCaps {
    total: usize,
    per_address: usize,
    open: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    trusted: Arc<TrustedProxies>,
}

/// One admitted connection (or tunnel); counted out when dropped.
pub struct Admitted<'a> {
    caps: &'a AddressCaps,
    address: Option<IpAddr>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(address) = self.address {
            if let Ok(mut by_address) = self.caps.by_address.lock() {
                if let Some(n) = by_address.get_mut(&address) {
                    *n -= 1;
                    if *n == 0 {
                        by_address.remove(&address);
                    }
                }
            }
        }
    }
}

impl AddressCaps {
    /// At most `total` in all and `per_address` from one address (0: no per-address
    /// cap); the `trusted` proxies' addresses are held to the total only.
    pub fn new(total: usize, per_address: usize, trusted: Arc<TrustedProxies>) -> Self {
        Self {
            total,
            per_address,
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
            trusted,
        }
    }

    /// The default total: three quarters of the descriptors left after
    /// [`RESERVED_FDS`], at most 16,384. The last quarter is for the connections to the
    /// replicas, which are not one per client: at most the requests in flight
    /// (`--max-in-flight` a replica) and the idle ones kept per thread. (Half, as it
    /// was, closed the connections of honest users past 9,872 of them at the usual limit
    /// of 20,000: the 10,000-user overload run.)
    pub fn default_total(fd_limit: u64) -> usize {
        usize::try_from(fd_limit.saturating_sub(RESERVED_FDS) / 4 * 3)
            .unwrap_or(usize::MAX)
            .clamp(16, 16_384)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Admits a connection from `peer`, or `None` past a cap.
    pub fn admit(&self, peer: Option<IpAddr>) -> Option<Admitted<'_>> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut admitted = Admitted {
            caps: self,
            address: None,
        };
        let Some(peer) = peer.filter(|p| self.per_address > 0 && !self.trusted.contains(*p)) else {
            return Some(admitted);
        };
        let mut by_address = self.by_address.lock().ok()?;
        let n = by_address.entry(peer).or_insert(0);
        if *n >= self.per_address {
            // Counted out of the total by `admitted`'s drop.
            return None;
        }
        *n += 1;
        admitted.address = Some(peer);
        Some(admitted)
    }
}

/// The server app pingora runs: admits each connection under the caps, then hands it
/// to the proxy for as long as it lives (every request on it, kept alive or upgraded).
pub struct Front {
    pub balancer: Arc<Balancer>,
    pub caps: Arc<AddressCaps>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let Some(_admitted) = self.caps.admit(peer) else {
            self.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return None;
        };
        ServerApp::process_new(&self.balancer, stream, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.balancer.as_ref()).await;
    }
}

/// The soft limit on open descriptors, raised to the hard limit first (as Go's runtime
/// does for every server): the caps are set below it.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    limit.current.unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_address: usize, trusted: &str) -> AddressCaps {
        AddressCaps::new(
            total,
            per_address,
            Arc::new(TrustedProxies::parse(trusted).unwrap()),
        )
    }

    #[test]
    fn each_address_gets_its_share_and_the_total_holds() {
        let caps = caps(5, 2, "");
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = caps.admit(Some(a)).unwrap();
        let _a2 = caps.admit(Some(a)).unwrap();
        assert!(caps.admit(Some(a)).is_none(), "a third from one address");
        assert_eq!(caps.open(), 2, "a refusal is counted out");
        let _b1 = caps.admit(Some(b)).unwrap();
        let _b2 = caps.admit(Some(b)).unwrap();
        let _none = caps.admit(None).unwrap();
        assert!(caps.admit(None).is_none(), "past the total");
        drop(a1);
        assert!(
            caps.admit(Some(a)).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn a_trusted_proxy_is_held_to_the_total_only() {
        let caps = caps(4, 1, "10.0.0.0/8");
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..4).map(|_| caps.admit(Some(proxy)).unwrap()).collect();
        assert!(caps.admit(Some(proxy)).is_none());
        drop(held);
        assert_eq!(caps.open(), 0);
        assert!(caps.by_address.lock().unwrap().is_empty());
    }

    #[test]
    fn the_default_total_stays_below_the_descriptor_limit() {
        assert_eq!(AddressCaps::default_total(1024), 576);
        assert_eq!(AddressCaps::default_total(20_000), 14_808);
        assert_eq!(AddressCaps::default_total(1 << 20), 16_384);
        assert_eq!(AddressCaps::default_total(64), 16);
    }
}

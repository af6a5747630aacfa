//! Replicas, their health, and how one is chosen for a request.
//!
//! # State kept outside pingora's `LoadBalancer`
//!
//! pingora's `LoadBalancer` rebuilds its selector on every membership update and starts
//! new backends as healthy. Here a [`Pool`] keeps one [`Upstream`] per address for as
//! long as the address is listed, so in-flight counts, totals and health survive a
//! reload of the upstreams file, and a replica nobody has probed yet is *unknown*, not
//! ready.
//!
//! # Leases and their races
//!
//! Choosing a replica takes a [`Lease`], which counts the request as in flight on it
//! until dropped (at the end of the request, of a WebSocket tunnel, or when a retry
//! moves the request elsewhere). Least-connections reads the counts and then increments
//! the chosen one without a lock: two requests choosing at the same instant may both see
//! the same least-loaded replica and both go there. The imbalance is bounded by the
//! number of simultaneous choices and corrects itself on the next choice, which is why
//! a lock on the hot path is not worth it. Round robin does take a short lock, because
//! its promise (each replica's share within ±1) needs the weights updated atomically.
//!
//! A replica removed from the file is dropped from selection at once; its requests in
//! flight hold `Arc`s to it and finish normally (it is drained, not cut off).
//!
//! # Capacity
//!
//! A replica takes at most `max_in_flight` requests at once (0: no cap). The count is
//! checked and raised in one compare-and-swap when the lease is taken, so two requests
//! choosing at once cannot both take the last place. Past the cap on every replica, a
//! request waits for a lease to end ([`Pool::wait_for_room`]; each ending lease wakes one
//! waiter) for a short while, then is refused: a slow replica is given no more than it
//! can hold, and the excess is answered at once rather than left to time out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::Algorithm;

/// What active health checks have concluded about a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not yet probed `rise` times in a row: not ready.
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug)]
struct HealthState {
    health: Health,
    /// Consecutive probe results of the same kind.
    streak: u32,
    last_ok: Option<bool>,
    next_probe: Instant,
}

/// Milliseconds since the first use, for deadlines kept in atomics.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One replica.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    weight: AtomicU64,
    in_flight: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    removed: AtomicBool,
    health: Mutex<HealthState>,
    /// Mirrors `health == Healthy`, so the hot path reads an atomic, not the mutex.
    healthy: AtomicBool,
    /// Passive checks: consecutive failed requests, and the end of an ejection (in
    /// [`now_ms`] time; 0 when not ejected). Atomics: every response updates them.
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

/// Thresholds of health and ejection.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub rise: u32,
    pub fall: u32,
    pub interval: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Most requests in flight on one replica (0: no cap).
    pub max_in_flight: u64,
}

/// A snapshot of one replica for the status page.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamStatus {
    pub addr: String,
    pub weight: u64,
    pub health: Health,
    pub ejected: bool,
    pub ready: bool,
    pub in_flight: u64,
    pub requests: u64,
    pub errors: u64,
}

impl Upstream {
    fn new(addr: SocketAddr, weight: u64) -> Self {
        Self {
            addr,
            weight: AtomicU64::new(weight.max(1)),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            health: Mutex::new(HealthState {
                health: Health::Unknown,
                streak: 0,
                last_ok: None,
                next_probe: Instant::now(),
            }),
            healthy: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    pub fn weight(&self) -> u64 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        self.health.lock().map_or(Health::Unknown, |h| h.health)
    }

    fn ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Ready for new requests: healthy, not ejected, still listed.
    pub fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.removed.load(Ordering::Relaxed)
            && !self.ejected()
    }

    /// Whether a probe is due; an undecided replica is probed more often, so a new one
    /// joins quickly.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.health
            .lock()
            .map(|h| now >= h.next_probe)
            .unwrap_or(false)
    }

    /// Applies one active probe result (rise/fall hysteresis). Returns the new health
    /// when it changed.
    pub fn record_probe(&self, ok: bool, policy: &Policy) -> Option<Health> {
        let Ok(mut h) = self.health.lock() else {
            return None;
        };
        h.streak = if h.last_ok == Some(ok) {
            h.streak.saturating_add(1)
        } else {
            1
        };
        h.last_ok = Some(ok);
        let before = h.health;
        h.health = match (before, ok) {
            (Health::Healthy, false) if h.streak >= policy.fall => Health::Unhealthy,
            (Health::Unknown | Health::Unhealthy, true) if h.streak >= policy.rise => {
                Health::Healthy
            }
            (Health::Unknown, false) if h.streak >= policy.fall => Health::Unhealthy,
            (current, _) => current,
        };
        self.healthy
            .store(h.health == Health::Healthy, Ordering::Relaxed);
        let settled = h.health != Health::Unknown;
        h.next_probe = Instant::now()
            + if settled {
                policy.interval
            } else {
                policy.interval / 4
            };
        if h.health == Health::Healthy && before != Health::Healthy {
            // A replica that answers its probes again is given another chance.
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
        (h.health != before).then_some(h.health)
    }

    /// The replica's process is gone (a spawned replica that exited): not ready at once,
    /// without waiting for `fall` probes to fail, and ready again only after `rise`
    /// probes pass. (A spawned replica's port is held by the supervisor while it
    /// restarts, so connections to it would wait in the backlog instead of being
    /// refused; none should be sent there meanwhile.)
    pub fn mark_down(&self) {
        if let Ok(mut h) = self.health.lock() {
            h.health = Health::Unhealthy;
            h.streak = 0;
            h.last_ok = Some(false);
            self.healthy.store(false, Ordering::Relaxed);
        }
    }

    /// Whether a replica's answer with `status` counts as a failure for passive checks:
    /// a 5xx, except 503. A replica that answers 503 is alive and says it is busy (its
    /// password workers are full) or that its database is away; ejecting it for that
    /// turned a login storm into "no replica is ready" for every request, reads
    /// included, since each replica was ejected again as soon as it came back. Whether
    /// it takes traffic is for its readiness, which the active checks ask. (nginx's
    /// `max_fails` does not count `http_503` by default either.)
    pub fn counts_as_failure(status: u16) -> bool {
        status >= 500 && status != 503
    }

    /// Applies the outcome of a proxied request (passive checks, as nginx's
    /// `max_fails`/`fail_timeout`): after `max_fails` consecutive failures the replica
    /// is skipped for `fail_timeout`.
    pub fn record_outcome(&self, ok: bool, policy: &Policy) {
        if ok {
            // Read first: most responses succeed, and a store would dirty a shared line.
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if policy.max_fails > 0 && failures >= policy.max_fails {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            let timeout = u64::try_from(policy.fail_timeout.as_millis()).unwrap_or(u64::MAX);
            self.ejected_until_ms
                .store(now_ms().saturating_add(timeout).max(1), Ordering::Relaxed);
            tracing::warn!(upstream = %self.addr, "ejected after {} consecutive failures", policy.max_fails);
        }
    }

    pub fn status(&self) -> UpstreamStatus {
        UpstreamStatus {
            addr: self.addr.to_string(),
            weight: self.weight(),
            health: self.health(),
            ejected: self.ejected(),
            ready: self.is_ready(),
            in_flight: self.in_flight(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A request's claim on a replica: counted as in flight until dropped.
#[derive(Debug)]
pub struct Lease {
    upstream: Arc<Upstream>,
    /// Told when this lease ends, so a request waiting for room can try again.
    freed: Arc<Notify>,
}

impl Lease {
    /// Counts a request in flight on `upstream` if it has room under `cap` (0: no cap).
    fn try_take(upstream: Arc<Upstream>, cap: u64, freed: &Arc<Notify>) -> Option<Self> {
        upstream
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (cap == 0 || n < cap).then_some(n + 1)
            })
            .ok()?;
        upstream.requests.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            upstream,
            freed: freed.clone(),
        })
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }
}

/// The replicas and the selection algorithm.
#[derive(Debug)]
pub struct Pool {
    members: RwLock<Vec<Arc<Upstream>>>,
    algorithm: Algorithm,
    pub policy: Policy,
    /// Smooth weighted round robin's running weights, by address.
    round_robin: Mutex<HashMap<SocketAddr, i64>>,
    /// Where least-connections starts looking, so equals take turns.
    cursor: AtomicUsize,
    /// Notified whenever a lease ends.
    freed: Arc<Notify>,
}

impl Pool {
    pub fn new(algorithm: Algorithm, policy: Policy) -> Self {
        Self {
            members: RwLock::new(Vec::new()),
            algorithm,
            policy,
            round_robin: Mutex::new(HashMap::new()),
            cursor: AtomicUsize::new(0),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Replaces the membership. Replicas that stay keep their state and counts; new
    /// ones start unknown; removed ones leave selection and drain.
    pub fn set_members(&self, wanted: &[(SocketAddr, u64)]) {
        let Ok(mut members) = self.members.write() else {
            return;
        };
        let mut next = Vec::with_capacity(wanted.len());
        for &(addr, weight) in wanted {
            match members.iter().find(|u| u.addr == addr) {
                Some(existing) => {
                    existing.weight.store(weight.max(1), Ordering::Relaxed);
                    next.push(existing.clone());
                }
                None => {
                    tracing::info!(upstream = %addr, weight, "replica added");
                    next.push(Arc::new(Upstream::new(addr, weight)));
                }
            }
        }
        for old in members.iter() {
            if !next.iter().any(|u| u.addr == old.addr) {
                tracing::info!(upstream = %old.addr, in_flight = old.in_flight(), "replica removed; draining");
                old.removed.store(true, Ordering::Relaxed);
            }
        }
        *members = next;
    }

    pub fn members(&self) -> Vec<Arc<Upstream>> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn any_ready(&self) -> bool {
        self.members
            .read()
            .is_ok_and(|m| m.iter().any(|u| u.is_ready()))
    }

    /// Chooses a ready replica that is not in `exclude` (the ones this request already
    /// failed on) and has room, and leases it. `None` when there is none.
    pub fn select(&self, exclude: &[SocketAddr]) -> Option<Lease> {
        let cap = self.policy.max_in_flight;
        // A lease lost to a concurrent request (the last place taken between the look
        // and the swap) is chosen again, a few times at most.
        for _ in 0..4 {
            let chosen = {
                let members = self.members.read().ok()?;
                let candidates: Vec<&Arc<Upstream>> = members
                    .iter()
                    .filter(|u| u.is_ready() && !exclude.contains(&u.addr))
                    .filter(|u| cap == 0 || u.in_flight() < cap)
                    .collect();
                if candidates.is_empty() {
                    return None;
                }
                match self.algorithm {
                    Algorithm::RoundRobin => self.round_robin(&candidates),
                    Algorithm::LeastConnections => self.least_connections(&candidates),
                }?
            };
            if let Some(lease) = Lease::try_take(chosen, cap, &self.freed) {
                return Some(lease);
            }
        }
        None
    }

    /// Whether a ready replica not in `exclude` exists, with room or not.
    pub fn any_ready_besides(&self, exclude: &[SocketAddr]) -> bool {
        self.members
            .read()
            .is_ok_and(|m| m.iter().any(|u| u.is_ready() && !exclude.contains(&u.addr)))
    }

    /// Waits until a lease ends, or `deadline`; false at the deadline. Call it only after
    /// [`Pool::select`] found no room, and select again after it.
    pub async fn wait_for_room(&self, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, self.freed.notified())
            .await
            .is_ok()
    }

    /// nginx's smooth weighted round robin: every candidate gains its weight, the
    /// richest is chosen and pays the total. Equal weights give a strict rotation.
    fn round_robin(&self, candidates: &[&Arc<Upstream>]) -> Option<Arc<Upstream>> {
        let mut current = self.round_robin.lock().ok()?;
        current.retain(|addr, _| candidates.iter().any(|u| u.addr == *addr));
        let mut total = 0i64;
        let mut best: Option<(&Arc<Upstream>, i64)> = None;
        let candidates = candidates.iter().copied();
        for u in candidates {
            let weight = i64::try_from(u.weight()).unwrap_or(1);
            total += weight;
            let w = current.entry(u.addr).or_insert(0);
            *w += weight;
            if best.is_none_or(|(_, b)| *w > b) {
                best = Some((u, *w));
            }
        }
        let (chosen, _) = best?;
        if let Some(w) = current.get_mut(&chosen.addr) {
            *w -= total;
        }
        Some(Arc::clone(chosen))
    }

    /// Fewest in flight per unit of weight; among equals, the next in turn.
    fn least_connections(&self, candidates: &[&Arc<Upstream>]) -> Option<Arc<Upstream>> {
        // One snapshot of the counts: other requests change them while we compare.
        let loads: Vec<(u128, u128)> = candidates
            .iter()
            .map(|u| (u128::from(u.in_flight()), u128::from(u.weight())))
            .collect();
        // a.in_flight / a.weight compared as a.in_flight × b.weight, without division.
        let (best_num, best_den) = loads.iter().copied().reduce(|best, (num, den)| {
            if num * best.1 < best.0 * den {
                (num, den)
            } else {
                best
            }
        })?;
        let equals: Vec<&Arc<Upstream>> = candidates
            .iter()
            .zip(&loads)
            .filter(|(_, (num, den))| num * best_den == best_num * den)
            .map(|(u, _)| *u)
            .collect();
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        equals
            .get(turn % equals.len().max(1))
            .map(|u| Arc::clone(u))
    }
}

/// Parses an upstreams file: one `host:port [weight]` per line; blank lines and `#`
/// comments are ignored. An error names the line at fault.
pub fn parse_upstreams(text: &str) -> Result<Vec<(SocketAddr, u64)>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fault = |why: &str| format!("line {}: {why}: {raw:?}", n + 1);
        let mut parts = line.split_whitespace();
        let addr = parts.next().ok_or_else(|| fault("empty"))?;
        let addr = resolve(addr).ok_or_else(|| fault("not a host:port"))?;
        let weight = match parts.next() {
            None => 1,
            Some(w) => match w.parse::<u64>() {
                Ok(w) if (1..=1000).contains(&w) => w,
                _ => return Err(fault("the weight must be a whole number from 1 to 1000")),
            },
        };
        if parts.next().is_some() {
            return Err(fault("expected `host:port [weight]`"));
        }
        if out.iter().any(|(a, _)| *a == addr) {
            return Err(fault("listed twice"));
        }
        out.push((addr, weight));
    }
    Ok(out)
}

/// `host:port` to an address (names such as `localhost` are resolved).
pub fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(addr) = addr.parse() {
        return Some(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(addr).ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            rise: 2,
            fall: 3,
            interval: Duration::from_secs(1),
            max_fails: 2,
            fail_timeout: Duration::from_secs(60),
            max_in_flight: 0,
        }
    }

    fn pool(algorithm: Algorithm, members: &[(&str, u64)]) -> Pool {
        let pool = Pool::new(algorithm, policy());
        let list: Vec<_> = members
            .iter()
            .map(|(a, w)| (a.parse().unwrap(), *w))
            .collect();
        pool.set_members(&list);
        for u in pool.members() {
            u.record_probe(true, &policy());
            u.record_probe(true, &policy());
        }
        pool
    }

    #[test]
    fn replicas_start_unknown_and_need_rise_probes() {
        let pool = Pool::new(Algorithm::RoundRobin, policy());
        pool.set_members(&[("127.0.0.1:1".parse().unwrap(), 1)]);
        assert!(pool.select(&[]).is_none(), "never probed: not ready");
        let u = pool.members()[0].clone();
        assert_eq!(u.health(), Health::Unknown);
        u.record_probe(true, &policy());
        assert!(pool.select(&[]).is_none(), "one probe is not enough");
        assert_eq!(u.record_probe(true, &policy()), Some(Health::Healthy));
        assert!(pool.select(&[]).is_some());
        u.record_probe(false, &policy());
        u.record_probe(false, &policy());
        assert_eq!(u.health(), Health::Healthy, "fall is 3");
        assert_eq!(u.record_probe(false, &policy()), Some(Health::Unhealthy));
        assert!(pool.select(&[]).is_none());
    }

    #[test]
    fn round_robin_is_even_within_one_over_any_window() {
        let pool = pool(
            Algorithm::RoundRobin,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
        );
        let picks: Vec<SocketAddr> = (0..300)
            .map(|_| pool.select(&[]).unwrap().upstream().addr)
            .collect();
        for window in 1..=picks.len() {
            for slice in picks.windows(window).step_by(7) {
                let counts: Vec<usize> = pool
                    .members()
                    .iter()
                    .map(|u| slice.iter().filter(|a| **a == u.addr).count())
                    .collect();
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(max - min <= 1, "window {window}: {counts:?}");
            }
        }
    }

    #[test]
    fn round_robin_follows_weights() {
        let pool = pool(
            Algorithm::RoundRobin,
            &[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)],
        );
        let heavy: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let picks = (0..400)
            .filter(|_| pool.select(&[]).unwrap().upstream().addr == heavy)
            .count();
        assert_eq!(picks, 300);
    }

    /// Two places on each of two replicas: the fifth request finds no room, and an
    /// ending lease makes room and wakes the one waiting.
    #[tokio::test]
    async fn a_replica_takes_no_more_than_its_cap_and_an_ending_lease_makes_room() {
        let pool = Pool::new(
            Algorithm::LeastConnections,
            Policy {
                max_in_flight: 2,
                ..policy()
            },
        );
        pool.set_members(&[
            ("127.0.0.1:1".parse().unwrap(), 1),
            ("127.0.0.1:2".parse().unwrap(), 1),
        ]);
        for u in pool.members() {
            u.record_probe(true, &pool.policy);
            u.record_probe(true, &pool.policy);
        }
        let mut leases: Vec<Lease> = (0..4).map(|_| pool.select(&[]).unwrap()).collect();
        assert!(pool.members().iter().all(|u| u.in_flight() == 2));
        assert!(pool.select(&[]).is_none(), "no room left");
        assert!(pool.any_ready_besides(&[]));
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(!pool.wait_for_room(soon).await, "nothing ended");
        let waiter = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            assert!(pool.wait_for_room(deadline).await);
            pool.select(&[])
        };
        let ending = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            leases.pop();
        };
        let (room, ()) = tokio::join!(waiter, ending);
        assert!(room.is_some(), "the freed place was taken");
        assert!(pool.members().iter().all(|u| u.in_flight() == 2));
    }

    /// A storm of 503s (busy, with Retry-After) from a live replica does not eject it;
    /// 500s and 502s still do.
    #[test]
    fn a_replicas_503s_do_not_eject_it_but_other_5xx_do() {
        let pool = pool(Algorithm::RoundRobin, &[("127.0.0.1:1", 1)]);
        let replica = &pool.members()[0];
        for _ in 0..10 {
            replica.record_outcome(!Upstream::counts_as_failure(503), &pool.policy);
        }
        assert!(replica.is_ready(), "busy is not dead");
        for status in [500, 502, 504] {
            assert!(Upstream::counts_as_failure(status));
        }
        for _ in 0..2 {
            replica.record_outcome(!Upstream::counts_as_failure(500), &pool.policy);
        }
        assert!(
            !replica.is_ready(),
            "two 500s in a row eject it (max_fails 2)"
        );
    }

    #[test]
    fn least_connections_prefers_the_idle_and_rotates_among_equals() {
        let pool = pool(
            Algorithm::LeastConnections,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
        );
        let busy = pool.select(&[]).unwrap();
        let busy_addr = busy.upstream().addr;
        let _busier = (0..5)
            .map(|_| Lease::try_take(busy.upstream().clone(), 0, &pool.freed).unwrap())
            .collect::<Vec<_>>();
        // With one replica busy, the other two take turns.
        let picks: Vec<SocketAddr> = (0..10)
            .map(|_| pool.select(&[]).unwrap().upstream().addr)
            .collect();
        assert!(!picks.contains(&busy_addr));
        let distinct: std::collections::HashSet<_> = picks.iter().collect();
        assert_eq!(distinct.len(), 2);
        drop(busy);
        assert_eq!(pool.members().iter().map(|u| u.in_flight()).sum::<u64>(), 5);
    }

    #[test]
    fn weights_scale_least_connections() {
        let pool = pool(
            Algorithm::LeastConnections,
            &[("127.0.0.1:1", 2), ("127.0.0.1:2", 1)],
        );
        let leases: Vec<Lease> = (0..30).map(|_| pool.select(&[]).unwrap()).collect();
        let heavy = leases
            .iter()
            .filter(|l| l.upstream().addr.port() == 1)
            .count();
        assert_eq!(heavy, 20);
    }

    #[test]
    fn counts_survive_a_membership_change_and_removed_replicas_drain() {
        let pool = pool(
            Algorithm::LeastConnections,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)],
        );
        let lease = pool.select(&[]).unwrap();
        let addr = lease.upstream().addr;
        let other = pool
            .members()
            .into_iter()
            .find(|u| u.addr != addr)
            .unwrap()
            .addr;
        pool.set_members(&[(addr, 1), ("127.0.0.1:3".parse().unwrap(), 1)]);
        let kept = pool.members().into_iter().find(|u| u.addr == addr).unwrap();
        assert_eq!(kept.in_flight(), 1, "the count survived the reload");
        assert!(pool.members().iter().all(|u| u.addr != other));
        pool.set_members(&[("127.0.0.1:3".parse().unwrap(), 1)]);
        assert!(!lease.upstream().is_ready(), "removed: no new requests");
        assert_eq!(
            lease.upstream().in_flight(),
            1,
            "but the request in flight goes on"
        );
    }

    #[test]
    fn consecutive_failures_eject_for_a_while() {
        let pool = pool(Algorithm::RoundRobin, &[("127.0.0.1:1", 1)]);
        let u = pool.members()[0].clone();
        u.record_outcome(false, &policy());
        assert!(u.is_ready());
        u.record_outcome(false, &policy());
        assert!(!u.is_ready(), "ejected after max_fails");
        assert!(pool.select(&[]).is_none());
    }

    #[test]
    fn exclusions_skip_replicas_already_tried() {
        let pool = pool(
            Algorithm::LeastConnections,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)],
        );
        let first = pool.select(&[]).unwrap().upstream().addr;
        for _ in 0..5 {
            assert_ne!(pool.select(&[first]).unwrap().upstream().addr, first);
        }
        let second = pool.select(&[first]).unwrap().upstream().addr;
        assert!(pool.select(&[first, second]).is_none());
    }

    #[test]
    fn the_upstreams_file_format() {
        let ok =
            parse_upstreams("# replicas\n127.0.0.1:8081\n127.0.0.1:8082 3 # big one\n\n").unwrap();
        assert_eq!(
            ok,
            vec![
                ("127.0.0.1:8081".parse().unwrap(), 1),
                ("127.0.0.1:8082".parse().unwrap(), 3)
            ]
        );
        let err = parse_upstreams("127.0.0.1:8081\nnot an address\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_upstreams("127.0.0.1:1 0").is_err());
        assert!(parse_upstreams("127.0.0.1:1 2 3").is_err());
        assert!(parse_upstreams("127.0.0.1:1\n127.0.0.1:1").is_err());
    }
}

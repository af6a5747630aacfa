//! Rate limits: per client IP and per partner, answered with 429 and `Retry-After`.
//!
//! # Why here, and not in the replicas
//!
//! Every request passes the balancer, so one in-memory count per key is exactly shared
//! by all replicas: a partner cannot get N times its budget by landing on N replicas,
//! and no replica pays a database write per request to keep a shared count (on SQLite
//! that write would queue behind stock changes). With several balancers, each enforces
//! the limits for the traffic it sees.
//!
//! # Who a partner is
//!
//! The balancer does not read sessions or tokens. A replica names the partner it
//! authenticated in an `X-Ecanteen-Partner` response header, which the balancer removes
//! before the answer leaves. The balancer remembers which credential (a keyed hash of the
//! bearer token or of the session cookie; never the secret itself) belongs to which
//! partner, so every session and token of one partner draws on one budget. A credential
//! not yet seen counts on its own budget until its first answer names the partner.
//! Requests without credentials count only against their IP.
//!
//! The algorithm is GCRA (the `governor` crate): a steady rate with a burst of one
//! second's worth, and an exact time until the next request is allowed.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;

/// The response header a replica names its authenticated partner in.
pub const PARTNER_HEADER: &str = "x-ecanteen-partner";

/// The replicas' session cookie.
const SESSION_COOKIE: &str = "ecanteen_session";

/// Credentials remembered at most; past it the map starts again (a partner's next
/// answer teaches it back).
const MAX_CREDENTIALS: usize = 100_000;

/// Idle keys are dropped this often (in checks).
const SWEEP_EVERY: u64 = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PartnerKey {
    Partner(i64),
    Credential(u64),
}

pub struct Limits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_partner: Option<DefaultKeyedRateLimiter<PartnerKey>>,
    /// Read on every request with a credential, written only when a credential is new
    /// (or changes partner): a read-write lock keeps the readers from queuing.
    owners: RwLock<std::collections::HashMap<u64, i64>>,
    hasher: RandomState,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl Limits {
    /// `0` turns a limit off.
    pub fn new(per_ip_per_sec: u32, per_partner_per_sec: u32) -> Self {
        Self {
            per_ip: NonZeroU32::new(per_ip_per_sec)
                .map(|r| RateLimiter::keyed(Quota::per_second(r))),
            per_partner: NonZeroU32::new(per_partner_per_sec)
                .map(|r| RateLimiter::keyed(Quota::per_second(r))),
            owners: RwLock::default(),
            hasher: RandomState::new(),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_ip.is_some() || self.per_partner.is_some()
    }

    /// A keyed hash of the request's credential, read exactly as a replica reads it
    /// (`api/src/http/auth.rs`): an `Authorization` header of the Bearer scheme (in any
    /// case) with its token trimmed, else the *last* session cookie (the one the
    /// replica's cookie jar keeps). Read any other way, a client could send a credential
    /// the replica ignores (`Basic …`, a second cookie) beside the one it uses, and get a
    /// fresh budget each time. Never the secret itself.
    pub fn credential(&self, headers: &HeaderMap) -> Option<u64> {
        if let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        {
            return Some(self.hasher.hash_one(("bearer", token)));
        }
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .rfind(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| self.hasher.hash_one(("cookie", value)))
    }

    /// `Err(wait)` when either budget is spent: the request is refused and may be
    /// retried after `wait`.
    pub fn check(&self, ip: Option<IpAddr>, credential: Option<u64>) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            limiter
                .check_key(&ip)
                .map_err(|until| until.wait_time_from(self.clock.now()))?;
        }
        if let (Some(limiter), Some(credential)) = (&self.per_partner, credential) {
            let key = self
                .owners
                .read()
                .ok()
                .and_then(|owners| owners.get(&credential).copied())
                .map_or(PartnerKey::Credential(credential), PartnerKey::Partner);
            limiter
                .check_key(&key)
                .map_err(|until| until.wait_time_from(self.clock.now()))?;
        }
        Ok(())
    }

    /// Records that `credential` belongs to `partner` (from a replica's answer).
    pub fn learn(&self, credential: u64, partner: i64) {
        if self.per_partner.is_none() {
            return;
        }
        let known = self
            .owners
            .read()
            .is_ok_and(|owners| owners.get(&credential) == Some(&partner));
        if known {
            return;
        }
        if let Ok(mut owners) = self.owners.write() {
            if owners.len() >= MAX_CREDENTIALS {
                owners.clear();
            }
            owners.insert(credential, partner);
        }
    }

    fn sweep(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_partner {
            limiter.retain_recent();
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_credential_is_the_bearer_token_else_the_session_cookie() {
        let limits = Limits::new(0, 10);
        let token = limits.credential(&headers(&[("authorization", "Bearer abc")]));
        let cookie = limits.credential(&headers(&[("cookie", "a=1; ecanteen_session=xyz; b=2")]));
        let other = limits.credential(&headers(&[("cookie", "ecanteen_session=xyw")]));
        assert!(token.is_some() && cookie.is_some());
        assert_ne!(cookie, other);
        assert_eq!(limits.credential(&headers(&[("cookie", "other=1")])), None);
        assert_eq!(limits.credential(&HeaderMap::new()), None);
    }

    /// Each variant once got a budget of its own, beside the credential the replica
    /// actually used.
    #[test]
    fn a_credential_spelled_another_way_is_the_same_credential() {
        let limits = Limits::new(0, 10);
        let key = |pairs: &[(&str, &str)]| limits.credential(&headers(pairs));
        let token = key(&[("authorization", "Bearer abc")]);
        for spelling in ["bearer abc", "BEARER abc", "Bearer  abc ", "bEaReR abc\t"] {
            assert_eq!(key(&[("authorization", spelling)]), token, "{spelling:?}");
        }
        let cookie = key(&[("cookie", "ecanteen_session=real")]);
        // A scheme the replica ignores: the replica uses the cookie, and so does this.
        assert_eq!(
            key(&[
                ("authorization", "Basic eHl6"),
                ("cookie", "ecanteen_session=real")
            ]),
            cookie
        );
        assert_eq!(key(&[("authorization", "Basic eHl6")]), None);
        // Two session cookies: the replica keeps the last, in one header or across two.
        assert_eq!(
            key(&[("cookie", "ecanteen_session=decoy; ecanteen_session=real")]),
            cookie
        );
        assert_eq!(
            key(&[
                ("cookie", "ecanteen_session=decoy"),
                ("cookie", "a=1; ecanteen_session=real")
            ]),
            cookie
        );
        assert_ne!(key(&[("cookie", "ecanteen_session=decoy")]), cookie);
    }

    #[test]
    fn a_partners_credentials_share_one_budget_once_learned() {
        let limits = Limits::new(0, 3);
        let (a, b) = (1, 2);
        limits.learn(a, 7);
        limits.learn(b, 7);
        let allowed = (0..6)
            .filter(|i| {
                limits
                    .check(None, Some(if i % 2 == 0 { a } else { b }))
                    .is_ok()
            })
            .count();
        assert_eq!(allowed, 3);
        // Another partner is untouched.
        limits.learn(3, 8);
        assert!(limits.check(None, Some(3)).is_ok());
    }

    #[test]
    fn the_ip_budget_refuses_with_the_wait_until_the_next_request() {
        let limits = Limits::new(2, 0);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!(limits.check(Some(ip), None).is_ok());
        assert!(limits.check(Some(ip), None).is_ok());
        let wait = limits.check(Some(ip), None).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(limits.check(Some([10, 0, 0, 2].into()), None).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = Limits::new(0, 0);
        assert!(!limits.enabled());
        assert!((0..1000).all(|_| limits.check(Some([10, 0, 0, 1].into()), Some(1)).is_ok()));
    }
}

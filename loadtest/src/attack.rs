//! `ecanteen-loadtest attack`: hostile clients against a running stack, one attack at a
//! time, while honest partners read and sell through it (issue #33).
//!
//! Each attack needs no account (but one, which needs a token by its nature) and runs at
//! its budget for `--duration`, from its own loopback address (`--attacker-ip`,
//! 127.0.0.2 by default), while `--honest` partners on 127.0.0.1 read the catalogue and
//! sell. A defence keyed on the client's address can only be told apart that way. Each
//! attack must then hold every item of the goal:
//! - the honest partners saw no failed request (refusals included) and their p99 stayed
//!   under `--max-p99-ms`;
//! - no replica was ejected or marked unhealthy at any moment (the balancer's `/status`,
//!   watched every 100 ms);
//! - each replica's peak resident memory (`VmHWM`) stayed under `--max-replica-rss-mib`;
//! - the balancer still accepted a new connection and answered it.
//!
//! The attacker speaks raw HTTP/1.1 (and raw WebSocket frames) over its own sockets: it
//! is a client that does what no client library lets one do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::ValueEnum;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::api::{ApiKind, NewProduct, Partner};
use crate::metrics::Recorder;

/// The attacks of issue #33, each at its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Attack {
    /// 50 POSTs a second declaring a 4 MiB body, each sending what it can of it.
    OversizedBodies,
    /// 1,000 connections each holding an unfinished body.
    HeldBodies,
    /// 1,000 connections each holding an unfinished body sent with `Upgrade: websocket`.
    HeldUpgradeBodies,
    /// 5,000 connections, one request each, then silence.
    IdleKeepalives,
    /// 8 parallel POSTs, again and again, of a 1 MiB batch of persisted-query hashes
    /// that all name a stored 32 KiB text.
    PersistedBatches,
    /// 500 WebSocket upgrades a second that never send `connection_init`.
    AnonymousUpgrades,
    /// One account's token socket: subscribe and complete as fast as it can.
    SocketOperations,
    /// 10,000 distinct anonymous query texts sent to be persisted.
    PersistedEviction,
}

impl Attack {
    pub const ALL: [Attack; 8] = [
        Attack::OversizedBodies,
        Attack::HeldBodies,
        Attack::HeldUpgradeBodies,
        Attack::IdleKeepalives,
        Attack::PersistedBatches,
        Attack::AnonymousUpgrades,
        Attack::SocketOperations,
        Attack::PersistedEviction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::OversizedBodies => "oversized bodies (50/s, 4 MiB declared)",
            Self::HeldBodies => "held bodies (1,000 connections)",
            Self::HeldUpgradeBodies => "held bodies with Upgrade (1,000 connections)",
            Self::IdleKeepalives => "idle keep-alives (5,000 connections)",
            Self::PersistedBatches => "persisted-query batches (8 × 1 MiB in parallel)",
            Self::AnonymousUpgrades => "anonymous WebSocket upgrades (500/s)",
            Self::SocketOperations => "operations inside one token socket",
            Self::PersistedEviction => "persisted-query store eviction (10,000 texts)",
        }
    }
}

/// What a run is told.
#[derive(Debug, Clone)]
pub struct AttackOptions {
    pub base: String,
    /// The balancer's admin endpoint, watched; or, in front of another proxy (nginx),
    /// none, and `replicas` are watched instead.
    pub admin: Option<String>,
    /// The replicas' own URLs and pids, when there is no admin endpoint to name them.
    pub replicas: Vec<(String, u32)>,
    pub attacker_ip: IpAddr,
    pub honest: usize,
    pub duration: Duration,
    pub attacks: Vec<Attack>,
    pub password: String,
    pub request_timeout: Duration,
    pub run_id: String,
    pub max_p99_ms: f64,
    pub max_replica_rss_mib: f64,
}

/// How one attack went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attack: Attack,
    /// What the attacker got through: requests or connections made.
    pub attacker_attempts: u64,
    pub honest_requests: u64,
    pub honest_failures: u64,
    pub honest_p99_ms: f64,
    /// The fewest replicas ready at any moment of the attack, and how many there are.
    pub min_ready: u64,
    pub replicas: u64,
    pub ejected_or_unhealthy: bool,
    pub replica_peak_rss_mib: f64,
    pub balancer_accepting: bool,
    /// A partner's persisted query still answered by its hash on every replica (the
    /// eviction attack only).
    pub partner_hash_kept: Option<bool>,
}

impl Outcome {
    /// Every item of the goal, each with whether it held.
    pub fn checks(&self, options: &AttackOptions) -> Vec<(String, bool)> {
        let mut checks = vec![
            (
                format!("honest failures {} (0 allowed)", self.honest_failures),
                self.honest_failures == 0 && self.honest_requests > 0,
            ),
            (
                format!(
                    "honest p99 {:.1} ms (under {:.0})",
                    self.honest_p99_ms, options.max_p99_ms
                ),
                self.honest_p99_ms < options.max_p99_ms,
            ),
            (
                format!(
                    "replicas ready {} of {} at the least, none ejected or unhealthy",
                    self.min_ready, self.replicas
                ),
                !self.ejected_or_unhealthy && self.min_ready == self.replicas,
            ),
            (
                format!(
                    "replica peak RSS {:.0} MiB (under {:.0})",
                    self.replica_peak_rss_mib, options.max_replica_rss_mib
                ),
                self.replica_peak_rss_mib < options.max_replica_rss_mib,
            ),
            (
                "the balancer still accepts".to_owned(),
                self.balancer_accepting,
            ),
        ];
        if let Some(kept) = self.partner_hash_kept {
            checks.push((
                "a partner's persisted text was not evicted".to_owned(),
                kept,
            ));
        }
        checks
    }

    pub fn holds(&self, options: &AttackOptions) -> bool {
        self.checks(options).iter().all(|(_, ok)| *ok)
    }
}

/// The honest side: partners signed in once, each with a product to sell from.
struct Honest {
    partners: Vec<(Arc<Partner>, i64)>,
    recorder: Arc<Recorder>,
}

/// Runs every attack in turn; one [`Outcome`] each.
pub async fn run(options: AttackOptions) -> anyhow::Result<Vec<Outcome>> {
    let recorder = Arc::new(Recorder::new());
    let mut partners = Vec::new();
    for n in 0..options.honest {
        let partner = Partner::new(
            &options.base,
            ApiKind::Rest,
            format!("honest-{}-{n}", options.run_id),
            options.request_timeout,
            recorder.clone(),
        )?;
        partner.register(&options.password).await?;
        partner.login(&options.password).await?;
        let product = NewProduct {
            name: format!("Nasi goreng {n}"),
            description: "honest".into(),
            price: 15_000,
            quantity: 1_000_000,
            category: "makanan",
            picture: None,
        };
        let seen = partner
            .create_product(&product, &format!("honest-{}-{n}", options.run_id))
            .await?;
        partners.push((Arc::new(partner), seen.id));
    }
    let honest = Honest { partners, recorder };
    let mut outcomes = Vec::new();
    for (n, attack) in options.attacks.iter().enumerate() {
        eprintln!(
            "attack {}/{}: {}",
            n + 1,
            options.attacks.len(),
            attack.name()
        );
        let outcome = run_one(&options, *attack, &honest).await?;
        for (check, ok) in outcome.checks(&options) {
            eprintln!("  {} {check}", if ok { "ok  " } else { "FAIL" });
        }
        outcomes.push(outcome);
        // The attack's sockets close and the stack settles before the next one.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(outcomes)
}

async fn run_one(
    options: &AttackOptions,
    attack: Attack,
    honest: &Honest,
) -> anyhow::Result<Outcome> {
    let eviction_probe = if attack == Attack::PersistedEviction {
        Some(persist_as_partner(options).await?)
    } else {
        None
    };
    // Each attempt (a refusal included) is in the partners' own recorder; each request
    // as a partner lived it (its waits for refusals included) in this one.
    let attempts_before = honest.recorder.snapshot().total;
    let lived = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (n, (seller, id)) in honest.partners.iter().enumerate() {
        let (seller, id, stop, lived) = (seller.clone(), *id, stop.clone(), lived.clone());
        let run_id = options.run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let read = seller.read_page().await;
                record(
                    &lived,
                    "GET /ecanteen/product?limit=20",
                    started,
                    read.is_ok(),
                );
                let started = Instant::now();
                let key = format!("{run_id}-{}-{n}-{i}", attack as u8);
                let sold = seller.adjust_stock(id, -1, &key).await;
                record(
                    &lived,
                    "POST /ecanteen/product/[id]/stock",
                    started,
                    sold.is_ok(),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let watch = match &options.admin {
        Some(admin) => tokio::spawn(watch_status(admin.clone(), stop.clone())),
        None => tokio::spawn(watch_replicas(options.replicas.clone(), stop.clone())),
    };
    let attempts = Arc::new(AtomicU64::new(0));
    let attacker = tokio::spawn(attack_for(
        options.clone(),
        attack,
        attempts.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(options.duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), attacker).await;
    let (min_ready, replicas, ejected_or_unhealthy, pids) =
        watch.await.unwrap_or((0, 0, true, Vec::new()));
    let lived = lived.snapshot();
    let attempts_after = honest.recorder.snapshot().total;
    let replica_peak_rss_mib = pids
        .iter()
        .filter_map(|pid| peak_rss_mib(*pid))
        .fold(0.0, f64::max);
    let balancer_accepting = accepts(&options.base).await;
    let partner_hash_kept = match eviction_probe {
        Some(hash) => Some(hash_answered(options, &hash).await),
        None => None,
    };
    Ok(Outcome {
        attack,
        attacker_attempts: attempts.load(Ordering::Relaxed),
        honest_requests: lived.total.requests,
        // A request that failed, or an attempt refused on the way (429, 503).
        honest_failures: lived.total.failures
            + (attempts_after.failures - attempts_before.failures)
                .max(attempts_after.refusals - attempts_before.refusals),
        honest_p99_ms: lived.total.percentile_ms(0.99),
        min_ready,
        replicas,
        ejected_or_unhealthy,
        replica_peak_rss_mib,
        balancer_accepting,
        partner_hash_kept,
    })
}

/// Records an honest request as the recorder counts them (the partner's own sample,
/// with its retries, goes to the partner's recorder; this one is the request as the
/// partner lived it, waits for refusals included).
fn record(recorder: &Recorder, route: &'static str, started: Instant, ok: bool) {
    recorder.record(crate::metrics::Sample {
        route: crate::metrics::Route::new("honest", route),
        latency: started.elapsed(),
        size: 0,
        error: (!ok).then(|| "failed".to_owned()),
        refused: false,
    });
}

/// Polls the balancer's `/status` every 100 ms until `stop`: the fewest replicas ready,
/// how many there are, whether any was ever ejected or unhealthy, and the spawned
/// replicas' pids.
async fn watch_status(admin: String, stop: Arc<AtomicBool>) -> (u64, u64, bool, Vec<u32>) {
    let http = reqwest::Client::new();
    let (mut min_ready, mut replicas, mut bad, mut pids) = (u64::MAX, 0, false, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let status: Option<Value> = match http
            .get(format!("{admin}/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if let Some(status) = status {
            let upstreams = status["upstreams"].as_array().cloned().unwrap_or_default();
            replicas = upstreams.len() as u64;
            min_ready = min_ready.min(status["ready"].as_u64().unwrap_or(0));
            bad |= upstreams
                .iter()
                .any(|u| u["ejected"] == true || u["health"] != "healthy");
            pids = status["replicas"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|r| r["pid"].as_u64())
                        .map(|p| p as u32)
                        .collect()
                })
                .unwrap_or_default();
        } else {
            // The admin endpoint did not answer: count it against the run.
            bad = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        if min_ready == u64::MAX { 0 } else { min_ready },
        replicas,
        bad,
        pids,
    )
}

/// Without a balancer's `/status` (another proxy in front): asks each replica's
/// `/readyz` every 100 ms; a replica that does not answer 200 counts as not ready then
/// (no other proxy's ejections can be seen from outside).
async fn watch_replicas(
    replicas: Vec<(String, u32)>,
    stop: Arc<AtomicBool>,
) -> (u64, u64, bool, Vec<u32>) {
    let http = reqwest::Client::new();
    let (mut min_ready, mut bad) = (u64::MAX, false);
    while !stop.load(Ordering::Relaxed) {
        let mut ready = 0;
        for (url, _) in &replicas {
            let answer = http
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                ready += 1;
            } else {
                bad = true;
            }
        }
        min_ready = min_ready.min(ready);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pids = replicas.iter().map(|(_, pid)| *pid).collect();
    let min_ready = if min_ready == u64::MAX { 0 } else { min_ready };
    (min_ready, replicas.len() as u64, bad, pids)
}

/// A process's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A fresh connection from the honest address gets an answer.
async fn accepts(base: &str) -> bool {
    let answer = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    answer.is_ok_and(|r| r.status().is_success())
}

/// The balancer's address, from `base`.
fn target(base: &str) -> anyhow::Result<SocketAddr> {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--target must be http://IP:PORT")
}

/// A connection from the attacker's address.
async fn connect(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Reads and throws away what comes, until the peer closes or `stop`.
async fn drain(mut stream: TcpStream, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            _ => {}
        }
    }
}

async fn attack_for(
    options: AttackOptions,
    attack: Attack,
    attempts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let Ok(to) = target(&options.base) else {
        return;
    };
    let from = options.attacker_ip;
    match attack {
        Attack::OversizedBodies => {
            at_rate(Duration::from_millis(20), from, to, attempts, stop, |mut stream, stop| async move {
                let head = "POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..64 {
                    if stop.load(Ordering::Relaxed) || stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                drain(stream, stop).await;
            })
            .await;
        }
        Attack::HeldBodies | Attack::HeldUpgradeBodies => {
            let upgrade = if attack == Attack::HeldUpgradeBodies {
                "Connection: Upgrade\r\nUpgrade: websocket\r\n"
            } else {
                ""
            };
            let head = format!(
                "POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n{upgrade}Content-Length: 100000\r\n\r\n{{\"query\":"
            );
            hold(from, to, 1_000, head.into_bytes(), attempts, stop).await;
        }
        Attack::IdleKeepalives => {
            let head = b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n".to_vec();
            hold(from, to, 5_000, head, attempts, stop).await;
        }
        Attack::PersistedBatches => {
            // A 32 KiB text, persisted anonymously, then named by hash 1 MiB at a time.
            let text = format!("{{ __typename }} #{}", "x".repeat(32 * 1024 - 20));
            let hash = sha256_hex(&text);
            let Ok(http) = reqwest::Client::builder().local_address(from).build() else {
                return;
            };
            let _ = http
                .post(format!("{}/graphql", options.base))
                .json(&persisted(&text, &hash))
                .send()
                .await;
            let entry =
                json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } })
                    .to_string();
            // Just under the 1 MiB bound, so the batch passes the door and reaches a
            // replica, as the attack did.
            let count = (1024 * 1024 - 1024) / (entry.len() + 1);
            let body = format!("[{}]", vec![entry; count].join(","));
            let mut workers = Vec::new();
            for _ in 0..8 {
                let (body, stop, attempts) = (body.clone(), stop.clone(), attempts.clone());
                workers.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let Ok(mut stream) = connect(from, to).await else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let head = format!(
                            "POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        if stream.write_all(head.as_bytes()).await.is_ok()
                            && stream.write_all(body.as_bytes()).await.is_ok()
                        {
                            drain(stream, stop.clone()).await;
                        }
                    }
                }));
            }
            for worker in workers {
                let _ = worker.await;
            }
        }
        Attack::AnonymousUpgrades => {
            at_rate(
                Duration::from_millis(2),
                from,
                to,
                attempts,
                stop,
                |mut stream, stop| async move {
                    if stream.write_all(WS_HANDSHAKE.as_bytes()).await.is_ok() {
                        drain(stream, stop).await;
                    }
                },
            )
            .await;
        }
        Attack::SocketOperations => socket_operations(&options, attempts, stop).await,
        Attack::PersistedEviction => {
            // From the attacker's address, as everything of the attack's.
            let Ok(http) = reqwest::Client::builder().local_address(from).build() else {
                return;
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 10_000 {
                n += 1;
                attempts.fetch_add(1, Ordering::Relaxed);
                let text = format!(
                    "{{ e{n}_{}: __typename }}",
                    options.run_id.replace('-', "_")
                );
                let hash = sha256_hex(&text);
                let _ = http
                    .post(format!("{}/graphql", options.base))
                    .json(&persisted(&text, &hash))
                    .send()
                    .await;
            }
        }
    }
}

/// Opens a connection from `from` every `period` until `stop`, and has `then` do the
/// attack's part on it, on a task of its own.
async fn at_rate<F, Fut>(
    period: Duration,
    from: IpAddr,
    to: SocketAddr,
    attempts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    then: F,
) where
    F: Fn(TcpStream, Arc<AtomicBool>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut every = tokio::time::interval(period);
    while !stop.load(Ordering::Relaxed) {
        every.tick().await;
        attempts.fetch_add(1, Ordering::Relaxed);
        let (stop, then) = (stop.clone(), then.clone());
        tokio::spawn(async move {
            if let Ok(stream) = connect(from, to).await {
                then(stream, stop).await;
            }
        });
    }
}

/// The handshake of a WebSocket that will never send `connection_init`.
const WS_HANDSHAKE: &str = "GET /graphql/ws HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n";

/// Keeps `count` connections open, each having sent `head` and nothing more, opening a
/// new one whenever one is closed.
async fn hold(
    from: IpAddr,
    to: SocketAddr,
    count: usize,
    head: Vec<u8>,
    attempts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let head = Arc::new(head);
    let mut slots = Vec::new();
    for _ in 0..count {
        let (head, attempts, stop) = (head.clone(), attempts.clone(), stop.clone());
        slots.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut stream) = connect(from, to).await {
                    if stream.write_all(&head).await.is_ok() {
                        drain(stream, stop.clone()).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for slot in slots {
        let _ = slot.await;
    }
}

/// A signed-in attacker opens a token socket and subscribes and completes as fast as it
/// can.
async fn socket_operations(
    options: &AttackOptions,
    attempts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let setup = Arc::new(Recorder::new());
    let Ok(attacker) = Partner::new(
        &options.base,
        ApiKind::Rest,
        format!("attacker-{}", options.run_id),
        options.request_timeout,
        setup,
    ) else {
        return;
    };
    if attacker.register(&options.password).await.is_err()
        || attacker.login(&options.password).await.is_err()
    {
        return;
    }
    let Ok(token) = attacker.create_token("attack").await else {
        return;
    };
    let Ok(to) = target(&options.base) else {
        return;
    };
    let Ok(mut stream) = connect(options.attacker_ip, to).await else {
        return;
    };
    if stream.write_all(WS_HANDSHAKE.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 4096];
    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
    else {
        return;
    };
    if !buf[..n].starts_with(b"HTTP/1.1 101") {
        return;
    }
    let (read, mut write) = stream.into_split();
    let drainer = tokio::spawn(async move {
        let mut read = read;
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    if write
        .write_all(&ws_text_frame(&init.to_string()))
        .await
        .is_err()
    {
        return;
    }
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        attempts.fetch_add(1, Ordering::Relaxed);
        let subscribe = json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": "subscription { productChanged { id } }" } });
        let complete = json!({ "id": id.to_string(), "type": "complete" });
        let frames = [
            ws_text_frame(&subscribe.to_string()),
            ws_text_frame(&complete.to_string()),
        ]
        .concat();
        if write.write_all(&frames).await.is_err() {
            break;
        }
        if id.is_multiple_of(100) {
            tokio::task::yield_now().await;
        }
    }
    drainer.abort();
}

/// A masked client text frame (RFC 6455 §5.2).
fn ws_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask: [u8; 4] = rand::random();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A query sent with its text and hash, to be persisted.
fn persisted(text: &str, hash: &str) -> Value {
    json!({ "query": text, "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } })
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// A signed-in partner persists a query of its own; its hash is what the eviction
/// attack must not push out.
async fn persist_as_partner(options: &AttackOptions) -> anyhow::Result<String> {
    // A partner of its own, with a token: the credential simplest to send from here.
    let setup = Arc::new(Recorder::new());
    let owner = Partner::new(
        &options.base,
        ApiKind::Rest,
        format!("keeper-{}", options.run_id),
        options.request_timeout,
        setup,
    )?;
    owner.register(&options.password).await?;
    owner.login(&options.password).await?;
    let token = owner.create_token("keeper").await?;
    let text = format!(
        "query Kept{} {{ products(first: 1) {{ totalCount }} }}",
        options.run_id.replace('-', "")
    );
    let hash = sha256_hex(&text);
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/graphql", options.base))
        .bearer_auth(&token)
        .json(&persisted(&text, &hash))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        answer["errors"].is_null(),
        "the partner's query failed: {answer}"
    );
    Ok(hash)
}

/// Whether the hash alone is answered, on every replica (each is asked a few times
/// through the balancer, which spreads them).
async fn hash_answered(options: &AttackOptions, hash: &str) -> bool {
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let http = reqwest::Client::new();
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let answer = http
            .get(format!("{}/graphql", options.base))
            .query(&[("extensions", extensions.as_str())])
            .send()
            .await;
        let Ok(answer) = answer else { return false };
        let Ok(body) = answer.json::<Value>().await else {
            return false;
        };
        *seen.entry(body["errors"].is_null()).or_insert(0) += 1;
    }
    !seen.contains_key(&false)
}

/// The outcomes as one Markdown table (what `docs/BENCHMARKS.md` shows), with the
/// command that made it.
pub fn table(outcomes: &[Outcome], options: &AttackOptions, command: &str) -> String {
    let mut out = format!(
        "Hostile clients: {} honest partners, each attack for {:.0} s from {}\n`{command}`\n\n\
         | attack | attacker attempts | honest requests | honest failures | honest p99 (ms) | replicas ready (least / all) | ejected or unhealthy | replica peak RSS (MiB) | balancer accepts | holds |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        options.honest,
        options.duration.as_secs_f64(),
        options.attacker_ip,
    );
    for o in outcomes {
        let extra = match o.partner_hash_kept {
            Some(true) => " (a partner's text kept)",
            Some(false) => " (a partner's text EVICTED)",
            None => "",
        };
        out.push_str(&format!(
            "| {}{extra} | {} | {} | {} | {:.1} | {} / {} | {} | {:.0} | {} | {} |\n",
            o.attack.name(),
            o.attacker_attempts,
            o.honest_requests,
            o.honest_failures,
            o.honest_p99_ms,
            o.min_ready,
            o.replicas,
            if o.ejected_or_unhealthy { "yes" } else { "no" },
            o.replica_peak_rss_mib,
            if o.balancer_accepting { "yes" } else { "no" },
            if o.holds(options) { "yes" } else { "NO" },
        ));
    }
    out
}

//! Clients that hang up mid-write never wedge the database.
//!
//! For 30 seconds, bursts of keyed stock changes (GraphQL and REST) go to the balancer
//! and straight to the replicas over raw sockets, and each client goes away at a random
//! moment: mid-header, mid-body, after sending (while the write runs), mid-response, or
//! not at all. A hang-up may be a FIN or a reset. Then every write must succeed within
//! a second, every replica must still be ready, and the ledger check must hold: each
//! dropped change is sent again with its key and is applied exactly once, whether it
//! had been applied before (a replay) or not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::*;

/// How long the clients keep hanging up.
const STORM: Duration = Duration::from_secs(30);
/// Requests per burst, all in flight together.
const BURST: usize = 24;

/// A small xorshift generator: the run prints its seed, so a failure can be replayed
/// with `ECANTEEN_HANGUP_SEED`.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Graphql,
    Rest,
}

/// When the client goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HangUp {
    MidHeader,
    MidBody,
    /// The whole request is sent, then the client waits up to `after_ms` and leaves:
    /// the write is most likely running then.
    AfterSending {
        after_ms: u64,
    },
    MidResponse,
    Never,
}

struct Shop {
    token: String,
    product_id: i64,
}

impl Shop {
    /// A keyed +1 stock change, as raw HTTP/1.1 bytes: the header, then the body.
    fn request(&self, api: Api, key: &str) -> (Vec<u8>, Vec<u8>) {
        let (path, body, key_header) = match api {
            Api::Graphql => (
                "/graphql".to_owned(),
                json!({
                    "query": "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { product { quantity } replayed } }",
                    "variables": { "i": {
                        "productId": self.product_id.to_string(), "delta": 1,
                        "reason": "RESTOCK", "idempotencyKey": key,
                    } },
                }),
                String::new(),
            ),
            Api::Rest => (
                format!("/ecanteen/product/{}/stock", self.product_id),
                json!({ "delta": 1, "reason": "restock" }),
                format!("Idempotency-Key: {key}\r\n"),
            ),
        };
        let body = body.to_string().into_bytes();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{key_header}\
             Connection: close\r\n\r\n",
            self.token,
            body.len()
        );
        (head.into_bytes(), body)
    }

    /// Sends one change and hangs up as told. `Some(true)` when it was answered with
    /// success (acknowledged), `Some(false)` when answered otherwise, `None` when the
    /// client left before the answer.
    async fn send(
        &self,
        to: SocketAddr,
        api: Api,
        key: &str,
        hang_up: HangUp,
        rng: &mut Rng,
    ) -> Option<bool> {
        let (head, body) = self.request(api, key);
        let mut stream = TcpStream::connect(to).await.ok()?;
        let _ = stream.set_nodelay(true);
        if rng.below(2) == 0 {
            // Half the hang-ups are resets rather than orderly closes.
            let _ = stream.set_zero_linger();
        }
        match hang_up {
            HangUp::MidHeader => {
                let cut = 1 + rng.below(head.len() as u64 - 1) as usize;
                let _ = stream.write_all(&head[..cut]).await;
                return None;
            }
            HangUp::MidBody => {
                let cut = rng.below(body.len() as u64) as usize;
                let _ = stream.write_all(&head).await;
                let _ = stream.write_all(&body[..cut]).await;
                return None;
            }
            _ => {}
        }
        stream.write_all(&head).await.ok()?;
        stream.write_all(&body).await.ok()?;
        match hang_up {
            HangUp::AfterSending { after_ms } => {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                None
            }
            HangUp::MidResponse => {
                let mut some = vec![0; 1 + rng.below(40) as usize];
                let _ = stream.read(&mut some).await;
                None
            }
            _ => {
                let mut answer = Vec::new();
                tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
                    .await
                    .ok()?
                    .ok()?;
                let text = String::from_utf8_lossy(&answer);
                let ok = text.starts_with("HTTP/1.1 200")
                    && match api {
                        Api::Graphql => {
                            text.contains("\"quantity\"") && !text.contains("\"errors\"")
                        }
                        Api::Rest => true,
                    };
                Some(ok)
            }
        }
    }
}

impl Shop {
    /// Sends a change again, through `base` with its key: whether it had been applied
    /// before, as GraphQL's `replayed` says (REST's answer does not say; the ledger check
    /// below holds either way).
    async fn send_again(
        &self,
        http: &reqwest::Client,
        base: &str,
        api: Api,
        key: &str,
    ) -> Option<bool> {
        let (path, body) = match api {
            Api::Graphql => ("/graphql".to_owned(), self.request(api, key).1),
            Api::Rest => (
                format!("/ecanteen/product/{}/stock", self.product_id),
                self.request(api, key).1,
            ),
        };
        // Sent concurrently, the re-sends queue for SQLite's one writer, and those that
        // would wait past the write deadline are refused with 503 and Retry-After: a
        // polite client waits and sends the same key again.
        for attempt in 0..20u64 {
            let mut request = http
                .post(format!("{base}{path}"))
                .bearer_auth(&self.token)
                .header("content-type", "application/json");
            if api == Api::Rest {
                request = request.header("idempotency-key", key);
            }
            let r = request.body(body.clone()).send().await.unwrap();
            let status = r.status();
            let refused = status == 503 && r.headers().contains_key("retry-after");
            let v: Value = r.json().await.unwrap();
            if refused && attempt < 19 {
                tokio::time::sleep(Duration::from_millis(300 + (attempt * 97) % 400)).await;
                continue;
            }
            assert_eq!(status, 200, "{key}: {v}");
            return (api == Api::Graphql).then(|| v["data"]["adjustStock"]["replayed"] == true);
        }
        unreachable!("the last attempt returns or fails")
    }
}

/// The keys sent, by outcome.
#[derive(Default)]
struct Ledger {
    acked: Mutex<Vec<String>>,
    /// Not acknowledged: (key, the API it was sent through).
    unknown: Mutex<Vec<(String, Api)>>,
    hang_ups: AtomicU64,
}

fn random_hang_up(rng: &mut Rng) -> HangUp {
    match rng.below(10) {
        0 | 1 => HangUp::MidHeader,
        2 | 3 => HangUp::MidBody,
        4..=6 => HangUp::AfterSending {
            after_ms: rng.below(15),
        },
        7 | 8 => HangUp::MidResponse,
        _ => HangUp::Never,
    }
}

async fn clients_hanging_up_never_wedge(database_url: &str) {
    let (replicas, balancer) = stack(2, database_url, &[], &[]);
    let mut owner = partner(&balancer.url, "hangups").await;
    let token = owner.api_token("till").await;
    let shop = Arc::new(Shop {
        token: token.clone(),
        product_id: owner.create_product("Es Teler", 0).await.parse().unwrap(),
    });
    let balancer_addr: SocketAddr = balancer.url.trim_start_matches("http://").parse().unwrap();
    let targets: Vec<SocketAddr> = std::iter::once(balancer_addr)
        .chain(replicas.iter().map(|r| r.addr))
        .collect();

    let seed = std::env::var("ECANTEEN_HANGUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("hang-up storm on {database_url}: seed {seed}");
    let mut rng = Rng(seed);
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let mut bursts = 0;
    while started.elapsed() < STORM {
        bursts += 1;
        let mut tasks = Vec::new();
        for i in 0..BURST {
            let to = targets[rng.below(targets.len() as u64) as usize];
            let api = if rng.below(2) == 0 {
                Api::Graphql
            } else {
                Api::Rest
            };
            let hang_up = random_hang_up(&mut rng);
            let key = format!("b{bursts}-{i}");
            let (shop, ledger, mut rng) = (shop.clone(), ledger.clone(), Rng(rng.next() | 1));
            tasks.push(tokio::spawn(async move {
                match shop.send(to, api, &key, hang_up, &mut rng).await {
                    Some(true) => ledger.acked.lock().unwrap().push(key),
                    outcome => {
                        if outcome.is_none() {
                            ledger.hang_ups.fetch_add(1, Ordering::Relaxed);
                        }
                        ledger.unknown.lock().unwrap().push((key, api));
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    eprintln!(
        "{bursts} bursts: {} acknowledged, {} not ({} hang-ups)",
        ledger.acked.lock().unwrap().len(),
        ledger.unknown.lock().unwrap().len(),
        ledger.hang_ups.load(Ordering::Relaxed),
    );
    assert!(
        ledger.hang_ups.load(Ordering::Relaxed) > 500,
        "the storm hung up often"
    );

    // Nothing is wedged: every write now succeeds within a second, on every door.
    for i in 0..30 {
        let to = targets[i % targets.len()];
        let api = if i % 2 == 0 { Api::Graphql } else { Api::Rest };
        let key = format!("after-{i}");
        let began = Instant::now();
        let outcome = shop.send(to, api, &key, HangUp::Never, &mut rng).await;
        assert_eq!(
            outcome,
            Some(true),
            "{api:?} write {i} to {to} failed after the storm"
        );
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{api:?} write {i} to {to} took {:?}",
            began.elapsed()
        );
        ledger.acked.lock().unwrap().push(key);
    }
    let status = balancer.status().unwrap();
    assert_eq!(
        status["ready"].as_u64(),
        Some(2),
        "every replica is ready: {status}"
    );

    // Each change whose client left, sent again with its key: applied once, before
    // (a replay) or now.
    let unknown = std::mem::take(&mut *ledger.unknown.lock().unwrap());
    let http = client();
    let replays: Vec<Option<bool>> = futures_util::stream::iter(unknown)
        .map(|(key, api)| {
            let (http, shop, ledger, base) = (
                http.clone(),
                shop.clone(),
                ledger.clone(),
                balancer.url.clone(),
            );
            async move {
                let replayed = shop.send_again(&http, &base, api, &key).await;
                ledger.acked.lock().unwrap().push(key);
                replayed
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let replayed = replays.iter().filter(|r| **r == Some(true)).count();
    let fresh = replays.iter().filter(|r| **r == Some(false)).count();
    eprintln!(
        "dropped changes sent again: GraphQL {replayed} replayed, {fresh} applied now; REST {}",
        replays.iter().filter(|r| r.is_none()).count()
    );

    let acked = ledger.acked.lock().unwrap().clone();
    assert_ledger(&balancer.url, &token, shop.product_id, acked, Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_mid_write_never_wedge_sqlite() {
    let db = Database::new();
    clients_hanging_up_never_wedge(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_mid_write_never_wedge_postgres() {
    let pg = PrivatePostgres::start();
    let url = pg.create_database("hangups");
    clients_hanging_up_never_wedge(&url).await;
}

//! Faults under a mixed load of reads and keyed stock changes: a replica killed, a
//! rolling restart, PostgreSQL restarted or cut off, SQLite's writer stuck, and 200
//! concurrent SQLite writers. After each, failed writes are retried with their keys and
//! the ledger is checked with the load test's invariant: every change is there exactly
//! once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const READ: &str = "/graphql?query=%7B%20products(first%3A%205)%20%7B%20totalCount%20%7D%20%7D";

/// A request that did not succeed: its status (none: no answer at all) and a snippet.
#[derive(Debug, Clone)]
struct Failure {
    write: bool,
    status: Option<u16>,
    retry_after: bool,
    /// Read through `Debug`, in the assertions' messages.
    #[allow(dead_code)]
    detail: String,
}

/// What the load saw.
#[derive(Default)]
struct Outcomes {
    reads: AtomicU64,
    acked: Mutex<Vec<String>>,
    /// Keys of stock changes that were not acknowledged: their outcome is unknown.
    unacked: Mutex<Vec<String>>,
    failures: Mutex<Vec<Failure>>,
}

impl Outcomes {
    fn failures(&self) -> Vec<Failure> {
        self.failures.lock().unwrap().clone()
    }
}

/// The owner of one product that the load reads and changes.
struct Shop {
    url: String,
    token: String,
    product_id: i64,
}

impl Shop {
    async fn open(url: &str, username: &str) -> Self {
        let mut owner = partner(url, username).await;
        let token = owner.api_token("till").await;
        let product_id = owner.create_product("Es Teh", 0).await.parse().unwrap();
        Self {
            url: url.to_owned(),
            token,
            product_id,
        }
    }

    /// One keyed `adjustStock` of +1: `Ok` when acknowledged.
    async fn restock(&self, http: &reqwest::Client, key: &str) -> Result<(), Failure> {
        let query =
            "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { product { quantity } } }";
        let body = json!({ "query": query, "variables": { "i": {
            "productId": self.product_id.to_string(), "delta": 1, "reason": "RESTOCK",
            "idempotencyKey": key,
        } } });
        let sent = http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await;
        let response = sent.map_err(|e| Failure {
            write: true,
            status: None,
            retry_after: false,
            detail: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let text = response.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && v["data"]["adjustStock"]["product"]["quantity"].is_i64() {
            return Ok(());
        }
        Err(Failure {
            write: true,
            status: Some(status),
            retry_after,
            detail: text.chars().take(300).collect(),
        })
    }

    /// Retries each unacknowledged change with its key until it is acknowledged, as an
    /// integrator would.
    async fn settle(&self, outcomes: &Outcomes) {
        let http = client();
        let unacked = std::mem::take(&mut *outcomes.unacked.lock().unwrap());
        for key in unacked {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match self.restock(&http, &key).await {
                    Ok(()) => break,
                    Err(f) => assert!(Instant::now() < deadline, "{key} never settled: {f:?}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcomes.acked.lock().unwrap().push(key);
        }
    }

    /// The ledger holds every acknowledged change exactly once, and nothing else: the
    /// load test's invariant check, which counts an unacknowledged change that was
    /// applied as a violation (so call it after `settle` when writes failed).
    async fn assert_ledger(&self, outcomes: &Outcomes) {
        let acked = outcomes.acked.lock().unwrap().clone();
        let unacked = outcomes.unacked.lock().unwrap().clone();
        assert_ledger(&self.url, &self.token, self.product_id, acked, unacked).await;
    }
}

/// Readers and keyed writers running until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Outcomes>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(shop: &Arc<Shop>, readers: usize, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Outcomes::default());
        let mut tasks = Vec::new();
        for _ in 0..readers {
            let (stop, outcomes, url) = (stop.clone(), outcomes.clone(), shop.url.clone());
            tasks.push(tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::SeqCst) {
                    let failure = match http.get(format!("{url}{READ}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            outcomes.reads.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        Ok(r) => Failure {
                            write: false,
                            status: Some(r.status().as_u16()),
                            retry_after: r.headers().contains_key("retry-after"),
                            detail: r.text().await.unwrap_or_default(),
                        },
                        Err(e) => Failure {
                            write: false,
                            status: None,
                            retry_after: false,
                            detail: e.to_string(),
                        },
                    };
                    outcomes.failures.lock().unwrap().push(failure);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        for w in 0..writers {
            let (stop, outcomes, shop) = (stop.clone(), outcomes.clone(), shop.clone());
            tasks.push(tokio::spawn(async move {
                let http = client();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let key = format!("w{w}-{n}");
                    match shop.restock(&http, &key).await {
                        Ok(()) => outcomes.acked.lock().unwrap().push(key),
                        Err(failure) => {
                            outcomes.unacked.lock().unwrap().push(key);
                            outcomes.failures.lock().unwrap().push(failure);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        Self {
            stop,
            outcomes,
            tasks,
        }
    }

    async fn finish(self) -> Arc<Outcomes> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let o = &self.outcomes;
        let mut statuses = std::collections::BTreeMap::<Option<u16>, usize>::new();
        for f in o.failures() {
            *statuses.entry(f.status).or_default() += 1;
        }
        eprintln!(
            "load: {} reads, {} acknowledged writes, failures by status: {statuses:?}",
            o.reads.load(Ordering::SeqCst),
            o.acked.lock().unwrap().len(),
        );
        self.outcomes
    }
}

/// Takes the lock SQLite writers of `db` share (as a replica stuck mid-write would
/// hold it): every write waits until it is dropped or unlocked.
fn hold_writer_lock(db: &Database) -> std::fs::File {
    let path = db.url.trim_start_matches("sqlite://").to_owned() + "-writer.lock";
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    lock.lock().unwrap();
    lock
}

/// Requests in flight on the replica at `addr`, as the balancer's status reports them.
fn in_flight(status: &Value, addr: std::net::SocketAddr) -> u64 {
    Balancer::upstream(status, addr)["in_flight"]
        .as_u64()
        .unwrap_or(0)
}

/// Every failure was answered, with a retryable status and `Retry-After` where the
/// status is 503.
fn assert_retryable(failures: &[Failure], allowed: &[u16]) {
    for f in failures {
        let status = f.status.unwrap_or(0);
        assert!(allowed.contains(&status), "not a retryable answer: {f:?}");
        assert!(
            status != 503 || f.retry_after,
            "a 503 without Retry-After: {f:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_mixed_load_fails_only_writes_it_held_and_none_twice() {
    let db = Database::new();
    let (mut replicas, balancer) = stack(3, &db.url, &[], &[]);
    let shop = Arc::new(Shop::open(&balancer.url, "killed").await);

    let writers = 6;
    let load = Load::start(&shop, 3, writers);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Writes are held up until all of them are in flight (least connections spreads the
    // six among the three), and the replica holding the most is killed: so some writes
    // are certainly in the middle of it, however slow the machine.
    let lock = hold_writer_lock(&db);
    let loads = |status: &Value| -> Vec<u64> {
        replicas.iter().map(|r| in_flight(status, r.addr)).collect()
    };
    let status = tokio::task::block_in_place(|| {
        balancer.wait_for(
            |s| loads(s).iter().sum::<u64>() >= writers as u64,
            Duration::from_secs(10),
        )
    });
    let held = loads(&status);
    let busiest = (0..held.len()).max_by_key(|&i| held[i]).unwrap();
    eprintln!("in flight when killed: {held:?}; killing replica {busiest}");
    replicas[busiest].proc.kill9();
    drop(lock);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcomes = load.finish().await;

    let failures = outcomes.failures();
    // Reads are retried elsewhere; a write that may have reached the dead replica is
    // not, so the writes it held fail (at most one per writer), each with a 502.
    assert!(
        failures.iter().all(|f| f.write),
        "a read failed: {failures:?}"
    );
    // At most one per writer. (None is possible too: the SQLite stock writer's group
    // commit does not wait on the `-writer.lock` file this test holds, so writes finish
    // in moments and the kill may catch none of them in flight; what must hold either way
    // is the rest: no read fails, every failure is retryable, no write applies twice.)
    assert!(failures.len() <= writers, "{failures:?}");
    assert_retryable(&failures, &[502, 503]);
    let acked = outcomes.acked.lock().unwrap().len();
    assert!(
        acked > 20 && outcomes.reads.load(Ordering::SeqCst) > 20,
        "the load ran"
    );

    // A failed write's outcome is unknown (the replica may have committed it just
    // before it died): retried with their keys, as an integrator would, every change
    // is then in the ledger exactly once, acknowledged ones included.
    shop.settle(&outcomes).await;
    shop.assert_ledger(&outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_mixed_load_fails_no_request() {
    let db = Database::new();
    // Draining replicas keep serving until the balancer has seen them not ready
    // (fall 3 × 200 ms probes). A replica that stops closes its pool, and SQLite
    // checkpoints the WAL while holding the write lock: in a debug build on two busy
    // cores that outlasts the 100 ms write deadline, and the writes queued behind it
    // would be refused with 503 and Retry-After (the admission's own tests are in
    // api/tests/api/overload.rs). Here every write must simply wait its turn.
    let drain = ["--drain-delay-ms", "1500", "--write-wait-ms", "3000"];
    let (mut replicas, balancer) = stack(3, &db.url, &drain, &[]);
    let shop = Arc::new(Shop::open(&balancer.url, "rolling").await);

    let load = Load::start(&shop, 3, 3);
    for replica in &mut replicas {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = replica.proc.pid();
        replica.proc.term();
        let exit = replica.proc.wait_exit(Duration::from_secs(15));
        assert!(
            exit.is_some_and(|e| e.success()),
            "{pid} drained and exited: {exit:?}"
        );
        *replica = Replica::start_on(replica.addr, &db.url, &drain);
        balancer.wait_ready(3);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcomes = load.finish().await;

    let failures = outcomes.failures();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(outcomes.acked.lock().unwrap().len() > 20, "the load ran");
    shop.assert_ledger(&outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_gives_503s_with_retry_after_and_replicas_recover() {
    let pg = PrivatePostgres::start();
    let url = pg.create_database("restart");
    let (replicas, balancer) = stack(2, &url, &["--db-timeout-secs", "1"], &[]);
    let shop = Arc::new(Shop::open(&balancer.url, "restarted").await);
    let load = Load::start(&shop, 2, 3);
    tokio::time::sleep(Duration::from_millis(700)).await;

    pg.stop();
    // The replicas say they are not ready, and answer 503 (not 500) meanwhile.
    for addr in replicas.iter().map(|r| r.addr) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while raw::status(&format!("http://{addr}/readyz")) != Some(503) {
            assert!(
                Instant::now() < deadline,
                "{addr} still ready without its database"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.start_again();
    // They recover by themselves: the same processes turn ready again.
    balancer.wait_for(|s| s["ready"].as_u64() == Some(2), Duration::from_secs(15));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let outcomes = load.finish().await;
    for replica in &replicas {
        assert_eq!(
            raw::status(&format!("http://{}/readyz", replica.addr)),
            Some(200)
        );
    }

    let failures = outcomes.failures();
    assert!(!failures.is_empty(), "the outage was seen");
    assert_retryable(&failures, &[503]);
    // Nothing acknowledged was lost by the restart, and every change lands once. (A
    // write whose COMMIT was cut off by the shutdown is answered 503 though it may have
    // committed; its retry with the same key returns the first result.)
    shop.settle(&outcomes).await;
    shop.assert_ledger(&outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_gives_503_or_504_within_the_bound_and_none_hang() {
    let pg = PrivatePostgres::start();
    let direct = pg.create_database("cut");
    let cut = Cut::start(pg.port).await;
    let url = direct.replace(&format!(":{}/", pg.port), &format!(":{}/", cut.port));
    let replica = Replica::start(
        &url,
        &["--db-timeout-secs", "1", "--request-timeout-secs", "3"],
    );
    let base = format!("http://{}", replica.addr);
    let shop = Shop::open(&base, "stranded").await;
    let http = client();
    assert!(shop.restock(&http, "before").await.is_ok());

    // The network to the database goes silent: nothing is refused, nothing answers.
    cut.cut();
    let mut answers = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (http, base) = (http.clone(), base.clone());
        let shop = Shop {
            url: shop.url.clone(),
            token: shop.token.clone(),
            product_id: shop.product_id,
        };
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = if i % 2 == 0 {
                match shop.restock(&http, &format!("cut-{i}")).await {
                    Ok(()) => Some(200),
                    Err(f) => f.status,
                }
            } else {
                http.get(format!("{base}{READ}"))
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16())
            };
            (status, started.elapsed())
        }));
    }
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    for (status, took) in &answers {
        assert!(
            matches!(status, Some(503 | 504)),
            "not a 503/504: {answers:?}"
        );
        // The bound: the request timeout, plus scheduling slack; never the client's 10 s.
        assert!(*took < Duration::from_secs(5), "{answers:?}");
    }

    cut.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while shop.restock(&http, "after").await.is_err() {
        assert!(Instant::now() < deadline, "the replica did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sqlite_writer_gives_503_within_the_bound_and_reads_go_on() {
    let db = Database::new();
    let replica = Replica::start(&db.url, &["--db-timeout-secs", "1"]);
    let base = format!("http://{}", replica.addr);
    let shop = Shop::open(&base, "stuck").await;
    let http = client();

    // Another "replica" holds the writers' lock and never lets go.
    let lock = hold_writer_lock(&db);
    let started = Instant::now();
    let failure = shop.restock(&http, "stuck").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(failure.status, Some(503), "{failure:?}");
    assert!(failure.retry_after, "{failure:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let read = http.get(format!("{base}{READ}")).send().await.unwrap();
    assert_eq!(read.status(), 200, "reads do not wait for writers");

    lock.unlock().unwrap();
    assert!(shop.restock(&http, "unstuck").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sqlite_writers_on_three_replicas_never_see_database_is_locked() {
    let db = Database::new();
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&db.url, &[])).collect();
    let first = format!("http://{}", replicas[0].addr);
    let shop = Shop::open(&first, "crowded").await;
    let writes_each = 3;
    let mut tasks = Vec::new();
    for w in 0..200 {
        // Each writer talks to one replica process directly.
        let replica = format!("http://{}", replicas[w % 3].addr);
        let shop = Shop {
            url: replica,
            token: shop.token.clone(),
            product_id: shop.product_id,
        };
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut results = Vec::new();
            let mut refusals = 0;
            for n in 0..writes_each {
                let key = format!("crowd-{w}-{n}");
                // A write that would wait past the write deadline is refused with 503
                // and Retry-After; a polite writer waits and sends it again with its
                // key, as an integrator does.
                let mut result = shop.restock(&http, &key).await;
                for attempt in 0..20 {
                    match &result {
                        Err(f) if f.status == Some(503) && f.retry_after => {
                            refusals += 1;
                            let jitter = (w as u64 * 37 + attempt * 11) % 500;
                            tokio::time::sleep(Duration::from_millis(500 + jitter)).await;
                            result = shop.restock(&http, &key).await;
                        }
                        _ => break,
                    }
                }
                results.push((key.clone(), result));
            }
            (results, refusals)
        }));
    }
    let outcomes = Outcomes::default();
    let mut refusals = 0;
    for task in tasks {
        let (results, refused) = task.await.unwrap();
        refusals += refused;
        for (key, result) in results {
            match result {
                Ok(()) => outcomes.acked.lock().unwrap().push(key),
                Err(f) => outcomes.failures.lock().unwrap().push(f),
            }
        }
    }
    eprintln!("{refusals} writes were refused past the write deadline and sent again");
    // Every write was acknowledged, at once or once sent again after a refusal: none
    // failed otherwise, and none was told the database is locked.
    let failures = outcomes.failures();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(outcomes.acked.lock().unwrap().len(), 200 * writes_each);
    shop.assert_ledger(&outcomes).await;
}

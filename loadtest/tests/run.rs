//! The load test against a real replica (in process, on a loopback port, on a fresh
//! SQLite file): the scenario runs clean over both APIs, the capacity mode steps, and the
//! invariant check catches a stock change nobody acknowledged.
// Panicking on a broken expectation is what a test is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ecanteen_api::config::Config;
use ecanteen_api::startup::Application;
use ecanteen_loadtest::api::{routes, ApiKind};
use ecanteen_loadtest::capacity::{self, CapacityOptions, Workload};
use ecanteen_loadtest::invariant;
use ecanteen_loadtest::metrics::Recorder;
use ecanteen_loadtest::scenario::{self, ScenarioOptions};
use serde_json::json;

struct Replica {
    base: String,
    _dir: tempfile::TempDir,
}

async fn replica() -> Replica {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.database_url = format!("sqlite://{}", dir.path().join("e.db").display());
    config.listen = "127.0.0.1:0".parse().expect("address");
    // The scenario tests the journey, not overload: on a CI machine busy with other
    // work, a login may wait longer for a password worker than the default allows, and
    // its BUSY refusal (right under overload) would read as a failed journey here.
    config.password_queue = 64;
    config.password_wait_ms = 30_000;
    let app = Application::build(&config).await.expect("replica");
    let base = format!("http://{}", app.local_addr().expect("address"));
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Replica { base, _dir: dir }
}

fn options(base: &str, api: ApiKind) -> ScenarioOptions {
    ScenarioOptions {
        base: base.to_owned(),
        api,
        users: 4,
        spawn_rate: 8.0,
        duration: Duration::from_secs(4),
        think_min: Duration::from_millis(10),
        think_max: Duration::from_millis(40),
        picture_share: 0.5,
        password: "loadtest-password-1".into(),
        request_timeout: Duration::from_secs(20),
        run_id: format!("{api:?}").to_lowercase(),
    }
}

async fn scenario_runs_clean(api: ApiKind) {
    let replica = replica().await;
    let recorder = Arc::new(Recorder::new());
    let expectations = scenario::run(options(&replica.base, api), recorder.clone()).await;
    let snapshot = recorder.snapshot();

    assert_eq!(snapshot.total.failures, 0, "{:?}", snapshot.routes);
    // Every step of the journey was taken by someone.
    let names: Vec<_> = snapshot.routes.keys().map(|r| r.name).collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(snapshot.routes.keys().any(routes::is_deliberately_slow));
    assert_eq!(
        recorder.active_users(),
        0,
        "every user logged out and stopped"
    );

    assert!(!expectations.is_empty());
    assert!(expectations.iter().any(|e| !e.acknowledged_keys.is_empty()));
    assert!(expectations.iter().any(|e| e.deleted));
    let report = invariant::check(&replica.base, expectations.clone(), Duration::from_secs(20))
        .await
        .expect("check");
    assert!(report.holds(), "{:?}", report.violations);
    assert_eq!(report.products_checked, expectations.len());

    // A stock change that no user acknowledged breaks the invariant for that product.
    let target = expectations
        .iter()
        .find(|e| !e.deleted)
        .expect("a product that is still there")
        .clone();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/graphql", replica.base))
        .bearer_auth(&target.token)
        .json(&json!({
            "query": "mutation($id: ID!) { adjustStock(input: {productId: $id, delta: 2}) { replayed } }",
            "variables": { "id": target.product_id.to_string() },
        }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["data"]["adjustStock"]["replayed"], false, "{answer}");
    let report = invariant::check(&replica.base, expectations, Duration::from_secs(20))
        .await
        .expect("check");
    assert!(!report.holds());
    let id = target.product_id;
    assert!(
        report
            .violations
            .iter()
            .all(|v| v.starts_with(&format!("product {id}:"))),
        "{:?}",
        report.violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_scenario_runs_clean_and_the_check_catches_a_stray_change() {
    scenario_runs_clean(ApiKind::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_scenario_runs_clean_and_the_check_catches_a_stray_change() {
    scenario_runs_clean(ApiKind::Graphql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_steps_up_and_keeps_every_stock_change() {
    let replica = replica().await;
    let (steps, invariant, storm) = capacity::run(CapacityOptions {
        base: replica.base.clone(),
        api: ApiKind::Graphql,
        workload: Workload::Stock,
        start_users: 1,
        max_users: 4,
        factor: 2,
        step_duration: Duration::from_millis(700),
        // Generous: this checks the stepping, not the speed of a debug build.
        p99_bound: Duration::from_secs(10),
        password: "loadtest-password-1".into(),
        request_timeout: Duration::from_secs(20),
        run_id: "cap".into(),
        login_storm: 0,
    })
    .await
    .expect("capacity run");
    assert!(storm.is_none());
    assert_eq!(steps.iter().map(|s| s.users).collect::<Vec<_>>(), [1, 2, 4]);
    assert!(
        steps.iter().all(|s| s.held && s.stats.requests > 0),
        "{steps:?}"
    );
    assert_eq!(steps[0].stats.name, "adjustStock");
    let invariant = invariant.expect("the stock workload is checked");
    assert!(invariant.holds(), "{:?}", invariant.violations);
    assert_eq!(invariant.products_checked, 4);
    let total: u64 = steps.iter().map(|s| s.stats.requests).sum();
    assert_eq!(invariant.acknowledged_changes as u64, total);

    // A bound nothing can meet: no step holds, and the run stops at the first. A login
    // storm runs beside it, and is reported apart.
    let (steps, _, storm) = capacity::run(CapacityOptions {
        base: replica.base.clone(),
        api: ApiKind::Rest,
        workload: Workload::Reads,
        start_users: 1,
        max_users: 4,
        factor: 2,
        step_duration: Duration::from_millis(300),
        p99_bound: Duration::from_nanos(1),
        password: "loadtest-password-1".into(),
        request_timeout: Duration::from_secs(20),
        run_id: "cap2".into(),
        login_storm: 2,
    })
    .await
    .expect("capacity run");
    let (storm_users, logins) = storm.expect("the storm is reported");
    assert_eq!(storm_users, 2);
    assert!(
        logins.requests > 0 && logins.name == "login storm",
        "{logins:?}"
    );
    assert_eq!(steps.len(), 1);
    assert!(!steps[0].held);
    assert!(capacity::best(&steps).is_none());
}

/// A server that refuses the first `refusals` requests with 503 and `Retry-After: 1`,
/// then answers `[]`; it counts the requests it read.
async fn refusing_server(refusals: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    request.clear();
                    let answer = if counter.fetch_add(1, Ordering::SeqCst) < refusals {
                        let body = r#"{"error":{"code":"INTERNAL","message":"busy"}}"#;
                        format!("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]".to_owned()
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_waits_out_retry_after_and_is_sent_again() {
    use ecanteen_loadtest::api::Partner;

    let (base, seen) = refusing_server(2).await;
    let recorder = Arc::new(Recorder::new());
    let partner = Partner::with_token(
        &base,
        ApiKind::Rest,
        "t",
        Duration::from_secs(5),
        recorder.clone(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert!(
        partner.view_all().await.is_ok(),
        "admitted on the third try"
    );
    // Waited Retry-After (1 s), then twice that, each stretched by up to half.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_millis(4600),
        "{waited:?}"
    );
    let total = recorder.snapshot().total;
    assert_eq!((total.requests, total.failures, total.refusals), (3, 2, 2));
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

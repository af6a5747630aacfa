//! How many database queries one request runs: each bound on a request's work, proved
//! by counting.
//!
//! sqlx logs every statement it runs as a `tracing` event (target `sqlx::query`); on
//! SQLite it logs from the connection's worker thread, outside any request's span. So
//! the count is process-wide, and this is a test binary of its own with one test, run
//! with the replica's background readers (the feed tailer, the write probe) slowed to
//! once an hour.
// Panicking on a broken expectation is what a test is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The replica tests' harness; this binary uses a part of it.
#[allow(dead_code, unused_macros, unused_imports)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

use helpers::*;

/// The summary of every statement sqlx has logged, in order.
static QUERIES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records sqlx's statement events.
struct CountQueries;

impl<S: tracing::Subscriber> Layer<S> for CountQueries {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            struct Summary(String);
            impl tracing::field::Visit for Summary {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "summary" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut summary = Summary(String::new());
            event.record(&mut summary);
            // A new pooled SQLite connection runs its set-up pragmas: the pool's work,
            // at whatever moment it opens one, not the request's (no request runs a
            // pragma).
            if !summary.0.contains("PRAGMA") {
                QUERIES.lock().unwrap().push(summary.0);
            }
        }
    }
}

/// The statements `request` runs (their count is the `len()`; printed with `{:?}`).
async fn queries_of<T>(request: impl std::future::Future<Output = T>) -> (Queries, T) {
    let before = QUERIES.lock().unwrap().len();
    let out = request.await;
    (Queries(QUERIES.lock().unwrap()[before..].to_vec()), out)
}

/// Statements, compared by number.
#[derive(Debug)]
struct Queries(Vec<String>);

impl PartialEq<usize> for Queries {
    fn eq(&self, n: &usize) -> bool {
        self.0.len() == *n
    }
}

impl PartialOrd<usize> for Queries {
    fn partial_cmp(&self, n: &usize) -> Option<std::cmp::Ordering> {
        self.0.len().partial_cmp(n)
    }
}

async fn quiet_app(engine: Engine) -> TestApp {
    let app = TestApp::with_config(engine, |c| {
        c.event_poll_ms = 3_600_000;
        c.write_probe_ms = 3_600_000;
    })
    .await;
    // The write probe's first round runs at start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app
}

async fn bounds_hold(engine: Engine) {
    let app = quiet_app(engine).await;
    let mut c = app.client();
    let owner = c.register("hitung", PASSWORD).await;
    let owner_id: i64 = owner["id"].as_str().unwrap().parse().unwrap();
    let sql = Sql::new(
        "with recursive seq(i) as (select 1 union all select i + 1 from seq where i < 1005)
         insert into products (owner_id, name, name_key, price, quantity, category, created_at, updated_at)
         select $1, 'Kerupuk ' || i, 'kerupuk ' || i, 500, 1, 'makanan', 0, 0 from seq",
    )
    .arg(owner_id);
    app.state.service.db().execute(&sql).await.unwrap();
    let mut anonymous = app.client();

    // The most root fields an operation may have, each a page and a count: two
    // queries each, and no more.
    let fields: String = (0..16)
        .map(|i| format!("a{i}: products(first: 0) {{ totalCount }} "))
        .collect();
    let (n, r) = queries_of(anonymous.gql(&format!("{{ {fields} }}"), json!({}))).await;
    assert!(r.get("errors").is_none(), "{r}");
    assert!(n == 32, "16 pages and counts: {n:?}");

    // One more root field: refused before anything runs.
    let fields: String = (0..17)
        .map(|i| format!("a{i}: products(first: 0) {{ totalCount }} "))
        .collect();
    let (n, r) = queries_of(anonymous.gql(&format!("{{ {fields} }}"), json!({}))).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert!(n == 0, "a refused document ran {n:?}");

    // A page of a hundred products with their owners: the page, and one batch of owners.
    let (n, r) = queries_of(anonymous.gql(
        "{ products(first: 100) { nodes { id owner { username } } } }",
        json!({}),
    ))
    .await;
    assert_eq!(
        r["data"]["products"]["nodes"].as_array().unwrap().len(),
        100
    );
    assert!(n <= 2, "a page with owners ran {n:?}");

    // A hundred products each with its ledger would be a hundred and one queries: it is
    // priced as such, and refused.
    let (n, r) = queries_of(anonymous.gql(
        "{ products(first: 100) { nodes { stockMovements(first: 10) { nodes { id } } } } }",
        json!({}),
    ))
    .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("complex"),
        "{r}"
    );
    assert_eq!(n, 0);

    // An alias bomb of logins: refused whole, no lookup, no failure recorded.
    let bomb: String = (0..20)
        .map(|i| format!("a{i}: login(username: \"hitung\", password: \"guess {i}\") {{ id }} "))
        .collect();
    let (n, r) = queries_of(anonymous.gql(&format!("mutation {{ {bomb} }}"), json!({}))).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert!(n == 0, "{n:?}");

    // The REST "view all" of 1005 products: a bounded page, in a bounded number of
    // queries.
    let (n, r) = queries_of(anonymous.get("/ecanteen/product")).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1000);
    assert!(n <= 3, "the REST listing ran {n:?}");
}

#[test]
fn each_bound_on_a_requests_work_holds_by_count_of_queries() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountQueries))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bounds_hold(Engine::Sqlite));
    runtime.block_on(bounds_hold(Engine::Postgres));
}

//! The change feeds on PostgreSQL, where writers take no lock: rows committed out of id
//! order are each delivered once, live and on replay, and writers to different
//! products do not wait for each other.

use std::time::{Duration, Instant};

use ecanteen_api::domain::{StockDelta, StockReason};
use ecanteen_api::service::{Actor, AdjustStock, AuthMethod};
use serde_json::{json, Value};
use sqlx::Connection as _;

use crate::helpers::*;
use crate::live::{assert_quiet, next_event, subscribe, subscription, user_id, STOCK};

/// A writer from outside the replica, holding its transaction open.
async fn writer(app: &TestApp) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("begin").execute(&mut conn).await.unwrap();
    conn
}

/// Appends a ledger row inside `conn`'s transaction; its id.
async fn append(conn: &mut sqlx::PgConnection, product: &str, actor: i64) -> i64 {
    sqlx::query_scalar(
        "insert into stock_movements (product_id, actor_id, delta, quantity_after, reason, created_at)
         values ($1, $2, -1, 9, 'SALE', 0) returning id",
    )
    .bind(product.parse::<i64>().unwrap())
    .bind(actor)
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn commit(mut conn: sqlx::PgConnection) {
    sqlx::query("commit").execute(&mut conn).await.unwrap();
}

fn event_id(event: &Value) -> i64 {
    event["stockChanged"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Both ways two writers can commit out of id order. In each, a tailer that read "after
/// the last id" would have read the later id first and never the earlier one. Here the
/// live subscription gets both, and a subscriber resuming from either gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailer_never_skips_a_row_when_two_writers_commit_out_of_id_order() {
    let app = TestApp::new(Engine::Postgres).await;
    let mut seller = app.partner("out_of_order").await;
    let owner = user_id(&mut seller).await;
    let a = seller.create_product("Nasi uduk", 10).await;
    let b = seller.create_product("Lontong", 10).await;
    let mut live = subscribe(&app, owner, STOCK, json!({"o": owner.to_string()})).await;

    // 1. The lower id commits last.
    let mut first = writer(&app).await;
    let low = append(&mut first, &a, owner).await;
    let mut second = writer(&app).await;
    let high = append(&mut second, &b, owner).await;
    assert!(low < high);
    commit(second).await;
    // The tailer reads while `high` is visible and `low` is not (these writers send no
    // notification, and the fallback poll comes within a second): nothing may come
    // yet, since `low` could still commit before it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_quiet(&mut live).await;
    commit(first).await;
    let got = [
        event_id(&next_event(&mut live, Duration::from_secs(3)).await),
        event_id(&next_event(&mut live, Duration::from_secs(3)).await),
    ];
    assert_eq!(got, [low, high]);

    // 2. The older transaction writes the higher id and commits first.
    let mut older = writer(&app).await;
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut older)
        .await
        .unwrap();
    let mut younger = writer(&app).await;
    let low = append(&mut younger, &b, owner).await;
    let high = append(&mut older, &a, owner).await;
    assert!(low < high);
    commit(older).await;
    // `high` is final (every older transaction has ended) and comes now.
    let early = event_id(&next_event(&mut live, Duration::from_secs(3)).await);
    assert_eq!(early, high);
    commit(younger).await;
    let late = event_id(&next_event(&mut live, Duration::from_secs(3)).await);
    assert_eq!(late, low, "the lower id, committed later, is not skipped");
    assert_quiet(&mut live).await;

    // Resuming after the row delivered first gives the one delivered after it, and
    // resuming after the last gives nothing.
    let mut resumed = subscription(
        &app,
        owner,
        STOCK,
        json!({"o": owner.to_string(), "a": early.to_string()}),
    );
    assert_eq!(
        event_id(&next_event(&mut resumed, Duration::from_secs(3)).await),
        low
    );
    assert_quiet(&mut resumed).await;
    let mut caught_up = subscription(
        &app,
        owner,
        STOCK,
        json!({"o": owner.to_string(), "a": late.to_string()}),
    );
    assert_quiet(&mut caught_up).await;
}

/// A stock change that is slow inside its transaction (a trigger sleeps while it
/// appends its ledger row) does not hold up a change to another product: no writer
/// holds a lock that every other writer needs. Both are delivered, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stock_change_does_not_hold_up_another_products() {
    let app = TestApp::new(Engine::Postgres).await;
    let mut seller = app.partner("parallel").await;
    let owner = user_id(&mut seller).await;
    let slow = seller.create_product("Es campur", 10).await;
    let fast = seller.create_product("Es teh", 10).await;
    let db = app.state.service.db();
    db.execute(&Sql::new(format!(
        "create function slow_append() returns trigger language plpgsql as $$
         begin
             if new.product_id = {slow} then perform pg_sleep(1.5); end if;
             return new;
         end $$"
    )))
    .await
    .unwrap();
    db.execute(&Sql::new(
        "create trigger slow_append before insert on stock_movements
         for each row execute function slow_append()",
    ))
    .await
    .unwrap();
    let mut live = subscribe(&app, owner, STOCK, json!({"o": owner.to_string()})).await;

    let actor = Actor {
        user_id: owner,
        method: AuthMethod::Session,
    };
    let change = |product: &str| AdjustStock {
        product_id: product.parse().unwrap(),
        delta: StockDelta::parse("delta", -1).unwrap(),
        reason: Some(StockReason::Sale),
        note: None,
        expected_quantity: None,
        idempotency_key: None,
    };
    let service = app.state.service.clone();
    let slow_change = change(&slow);
    let slow_write = tokio::spawn(async move { service.adjust_stock(&actor, slow_change).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    app.state
        .service
        .adjust_stock(&actor, change(&fast))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        !slow_write.is_finished(),
        "the slow change ended before the fast one was made"
    );
    assert!(
        took < Duration::from_millis(1000),
        "the fast change waited {took:?} for the slow one"
    );
    slow_write.await.unwrap().unwrap();

    let mut products = [
        next_event(&mut live, Duration::from_secs(3)).await["stockChanged"]["productId"].clone(),
        next_event(&mut live, Duration::from_secs(3)).await["stockChanged"]["productId"].clone(),
    ];
    products.sort_by_key(|p| p.as_str().map(str::to_owned));
    let mut expected = [json!(slow), json!(fast)];
    expected.sort_by_key(|p| p.as_str().map(str::to_owned));
    assert_eq!(products, expected);
    assert_quiet(&mut live).await;
}

/// A transaction left open in another database of the same PostgreSQL server (another
/// application's, a test's) cannot write to this one's tables, and does not hold this
/// database's feeds back: a change is delivered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_in_another_database_does_not_hold_the_feed_back() {
    let app = TestApp::new(Engine::Postgres).await;
    let neighbour = TestDb::new(Engine::Postgres).await;
    let mut seller = app.partner("tetangga").await;
    let owner = user_id(&mut seller).await;
    let id = seller.create_product("Kue lumpur", 10).await;
    let mut live = subscribe(&app, owner, STOCK, json!({"o": owner.to_string()})).await;

    let mut open = sqlx::PgConnection::connect(&neighbour.url).await.unwrap();
    sqlx::query("begin").execute(&mut open).await.unwrap();
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut open)
        .await
        .unwrap();
    let sent = Instant::now();
    let r = seller.adjust(&id, -1).await;
    assert!(r.get("errors").is_none(), "{r}");
    let event = next_event(&mut live, Duration::from_secs(2)).await;
    assert_eq!(event["stockChanged"]["productId"], json!(id));
    assert!(
        sent.elapsed() < Duration::from_millis(900),
        "held back {:?} by another database's transaction",
        sent.elapsed()
    );
    sqlx::query("rollback").execute(&mut open).await.unwrap();
}

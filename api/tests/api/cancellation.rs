//! Cancellation is an input: a client can go away at any await of a write (a phone loses
//! its signal mid-sale; a timeout fires), and that must never leave a transaction,
//! SQLite's write lock or the write gate held.
//!
//! Each write path is driven through the whole HTTP stack, in process, and dropped after
//! its n-th suspension, for every n until it finishes on its own. After every drop, the
//! next write must go through within a second. At the end, each keyed stock change that
//! was dropped is sent again with its key: it was applied once or not at all, never
//! twice, and the ledger sums to the quantity.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::helpers::*;

/// More suspensions than any write has; a request still unfinished after this many is a
/// bug in the test, not a wedge.
const MAX_SUSPENSIONS: usize = 400;

/// Polls `future` until it has suspended `suspensions` times, then drops it: `None`
/// when it was dropped, its output when it finished first.
async fn dropped_after<F: Future>(future: F, suspensions: usize) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut left = suspensions;
    std::future::poll_fn(move |cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if left == 0 => Poll::Ready(None),
        Poll::Pending => {
            left -= 1;
            Poll::Pending
        }
    })
    .await
}

/// A partner and a product of theirs that proves the write path is free.
struct Probe {
    client: Client,
    product: String,
    writes: i64,
}

impl Probe {
    async fn new(app: &TestApp) -> Self {
        let mut client = app.partner("prober").await;
        let product = client.create_product("Probe", 0).await;
        Self {
            client,
            product,
            writes: 0,
        }
    }

    /// A stock change that must be acknowledged within a second: nothing holds a
    /// transaction, the write lock or the gate.
    async fn write_goes_through(&mut self, after: &str) {
        let r = tokio::time::timeout(Duration::from_secs(1), self.client.adjust(&self.product, 1))
            .await
            .unwrap_or_else(|_| panic!("the next write waited over a second after {after}"));
        assert!(r.get("errors").is_none(), "after {after}: {r:#}");
        self.writes += 1;
    }
}

/// Sends the request that `make` builds for attempt n, dropped after n suspensions, for
/// n = 0, 1, … until a request finishes by itself; after each drop a probe write must go
/// through. Returns the number of attempts that were dropped (0 when the request never
/// had to wait, which a fast path on a fast machine can do).
async fn drop_at_every_await(
    app: &TestApp,
    probe: &mut Probe,
    what: &str,
    mut make: impl AsyncFnMut(usize) -> Request<Body>,
) -> usize {
    for n in 0..MAX_SUSPENSIONS {
        let request = make(n).await;
        let finished = dropped_after(app.router.clone().oneshot(request), n).await;
        probe
            .write_goes_through(&format!("{what} dropped at await {n}"))
            .await;
        if finished.is_some() {
            return n;
        }
    }
    panic!("{what} did not finish within {MAX_SUSPENSIONS} suspensions");
}

const ADJUST: &str = "mutation($i: AdjustStockInput!) {
    adjustStock(input: $i) { product { quantity } replayed } }";

dual_tests! {
    async fn a_stock_change_dropped_at_any_await_holds_nothing_and_applies_at_most_once(app) {
        let mut probe = Probe::new(&app).await;
        let mut owner = app.partner("kasir").await;
        let product = owner.create_product("Es Jeruk", 0).await;
        let token = owner.api_token("till").await;
        let mut till = app.client();
        till.bearer = Some(token);

        let mut keys = Vec::new();
        let mut rest_keys = Vec::new();
        let rest_uri = format!("/ecanteen/product/{product}/stock");
        // A request can finish on its first poll when every await happens to be ready
        // already (the machine is busy elsewhere): nothing was dropped then, and the
        // round is run again, up to three times.
        for round in 0..3 {
            let dropped_gql = drop_at_every_await(&app, &mut probe, "adjustStock", async |n| {
                let key = format!("gql-{round}-{n}");
                keys.push(key.clone());
                owner.authorize(gql_request(
                    ADJUST,
                    json!({"i": {"productId": product, "delta": 1, "reason": "RESTOCK", "idempotencyKey": key}}),
                ))
            })
            .await;
            eprintln!("adjustStock dropped at {dropped_gql} awaits");

            let dropped = drop_at_every_await(&app, &mut probe, "REST stock", async |n| {
                let key = format!("rest-{round}-{n}");
                rest_keys.push(key.clone());
                till.authorize(
                    Request::post(rest_uri.as_str())
                        .header("content-type", "application/json")
                        .header("idempotency-key", key)
                        .body(Body::from(json!({"delta": 1, "reason": "restock"}).to_string()))
                        .unwrap(),
                )
            })
            .await;
            eprintln!("the REST stock route dropped at {dropped} awaits");
            if dropped_gql + dropped > 0 {
                break;
            }
            assert!(round < 2, "a stock change never waited in three rounds: nothing was tested");
        }

        drop_at_every_await(&app, &mut probe, "setStock", async |n| {
            owner.authorize(gql_request(
                "mutation($i: SetStockInput!) { setStock(input: $i) { replayed } }",
                json!({"i": {"productId": product, "quantity": 1000 + n, "idempotencyKey": format!("set-{n}")}}),
            ))
        })
        .await;
        // Back to a known quantity, so that the sum below counts only the keyed +1s.
        owner.ok(
            "mutation($i: SetStockInput!) { setStock(input: $i) { replayed } }",
            json!({"i": {"productId": product, "quantity": 0}}),
        ).await;
        let base = owner.quantity(&product).await;
        assert_eq!(base, 0);

        // Each dropped change, sent again with its key: applied before (replayed) or now,
        // and in either case exactly once.
        let (mut replayed, mut fresh) = (0, 0);
        for key in &keys {
            let r = owner
                .ok(ADJUST, json!({"i": {"productId": product, "delta": 1, "reason": "RESTOCK", "idempotencyKey": key}}))
                .await;
            if r["adjustStock"]["replayed"] == true { replayed += 1 } else { fresh += 1 }
        }
        for key in &rest_keys {
            let r = till.rest("POST", &rest_uri, Some(json!({"delta": 1, "reason": "restock"})), &[("idempotency-key", key)]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        eprintln!("GraphQL keys: {replayed} had been applied, {fresh} had not");
        // The replays return the first result, as it was before the count reset, so
        // the quantity counts only the changes applied now; the ledger has every one.
        let ledger = owner
            .ok("query($id: ID!) { stockMovements(productId: $id, first: 1000) { nodes { delta idempotencyKey } } }",
                json!({"id": product}))
            .await;
        let nodes = ledger["stockMovements"]["nodes"].as_array().unwrap().clone();
        for key in keys.iter().chain(&rest_keys) {
            let rows = nodes.iter().filter(|m| m["idempotencyKey"] == key.as_str()).count();
            assert_eq!(rows, 1, "{key} is in the ledger {rows} times");
        }
        let sum: i64 = nodes.iter().map(|m| m["delta"].as_i64().unwrap()).sum();
        assert_eq!(sum, owner.quantity(&product).await, "the ledger sums to the quantity");
        assert_eq!(probe.client.quantity(&probe.product).await, probe.writes);
    }

    async fn product_writes_dropped_at_any_await_hold_nothing(app) {
        let mut probe = Probe::new(&app).await;
        let mut owner = app.partner("penjual").await;
        let product = owner.create_product("Soto", 5).await;

        drop_at_every_await(&app, &mut probe, "createProduct", async |n| {
            owner.authorize(gql_request(
                "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }",
                json!({"i": {"name": format!("Bakso {n}"), "price": 1000, "quantity": 3, "category": "makanan"}}),
            ))
        })
        .await;
        drop_at_every_await(&app, &mut probe, "updateProduct", async |n| {
            owner.authorize(gql_request(
                "mutation($id: ID!, $i: UpdateProductInput!) { updateProduct(id: $id, input: $i) { version } }",
                json!({"id": product, "i": {"name": format!("Soto {n}"), "quantity": 5 + n}}),
            ))
        })
        .await;
        drop_at_every_await(&app, &mut probe, "setProductImage", async |_| {
            owner.authorize(gql_request(
                "mutation($id: ID!) { setProductImage(productId: $id, image: null) { version } }",
                json!({"id": product}),
            ))
        })
        .await;
        drop_at_every_await(&app, &mut probe, "deleteProduct", async |n| {
            let doomed = owner.create_product(&format!("Doomed {n}"), 1).await;
            owner.authorize(gql_request(
                "mutation($id: ID!) { deleteProduct(id: $id) { id } }",
                json!({"id": doomed}),
            ))
        })
        .await;

        // Every ledger still sums to its product's quantity.
        let mine = owner
            .ok("{ products(first: 100, filter: {ownerUsername: \"penjual\"}) { nodes { id quantity } } }", json!({}))
            .await;
        for p in mine["products"]["nodes"].as_array().unwrap() {
            let ledger = owner
                .ok("query($id: ID!) { stockMovements(productId: $id, first: 1000) { nodes { delta } } }",
                    json!({"id": p["id"]}))
                .await;
            let sum: i64 = ledger["stockMovements"]["nodes"].as_array().unwrap().iter()
                .map(|m| m["delta"].as_i64().unwrap()).sum();
            assert_eq!(sum, p["quantity"].as_i64().unwrap(), "{p}");
        }
    }

    async fn account_writes_dropped_at_any_await_hold_nothing(app) {
        let mut probe = Probe::new(&app).await;
        let anonymous = app.client();
        drop_at_every_await(&app, &mut probe, "register", async |n| {
            anonymous.authorize(gql_request(
                documents::REGISTER,
                json!({"u": format!("baru{n}"), "p": PASSWORD}),
            ))
        })
        .await;

        let mut owner = app.partner("pemilik").await;
        drop_at_every_await(&app, &mut probe, "login", async |_| {
            gql_request(
                documents::LOGIN,
                json!({"u": "pemilik", "p": PASSWORD}),
            )
        })
        .await;
        // Logins with the right password that were dropped still finished, and left no
        // failure behind: the partner is not locked out by a bad signal.
        app.client().login("pemilik", PASSWORD).await;
        drop_at_every_await(&app, &mut probe, "logout", async |_| {
            let mut session = app.client();
            session.login("pemilik", PASSWORD).await;
            session.authorize(gql_request(documents::LOGOUT, json!({})))
        })
        .await;
        drop_at_every_await(&app, &mut probe, "createApiToken", async |n| {
            owner.authorize(gql_request(
                documents::CREATE_API_TOKEN,
                json!({"n": format!("till {n}")}),
            ))
        })
        .await;
        drop_at_every_await(&app, &mut probe, "revokeApiToken", async |n| {
            let created: Value = owner
                .ok("mutation($n: String!) { createApiToken(name: $n) { apiToken { id } } }",
                    json!({"n": format!("doomed {n}")}))
                .await;
            let id = created["createApiToken"]["apiToken"]["id"].clone();
            owner.authorize(gql_request(
                "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
                json!({"id": id}),
            ))
        })
        .await;
        // A password change: the hash and the end of the other sessions commit together,
        // then the session is renewed, each dropped at any await. A fresh partner each
        // time, as a change that finished leaves another password behind.
        drop_at_every_await(&app, &mut probe, "changePassword", async |n| {
            let partner = app.partner(&format!("sandi{n}")).await;
            partner.authorize(gql_request(
                "mutation($c: String!, $n: String!) { changePassword(current: $c, new: $n) }",
                json!({"c": PASSWORD, "n": "a new password, longer"}),
            ))
        })
        .await;
    }
}

/// The backstop under [`Service`]'s detached writes, proved on the bare pool. A `begin`
/// dropped between its BEGIN and the `Transaction` (sqlx issue #3932) leaves a
/// connection that counts a transaction no one can end; a forgotten `Transaction` leaves
/// exactly that, every time. Handed back to the pool holding the write lock (SQLite) or
/// the feed lock (PostgreSQL), the connection is closed rather than pooled, so the next
/// write goes through.
///
/// [`Service`]: ecanteen_api::service::Service
async fn leak_a_transaction_holding_the_write_lock(db: &ecanteen_api::db::Db) {
    use sqlx::Connection as _;
    match db {
        ecanteen_api::db::Db::Sqlite(pool, _) => {
            let mut conn = pool.acquire().await.unwrap();
            std::mem::forget(conn.begin_with("BEGIN IMMEDIATE").await.unwrap());
        }
        ecanteen_api::db::Db::Postgres(lanes, _) => {
            // The write lane's pool, where writes run.
            let lane = lanes.lane(ecanteen_api::db::Class::Write);
            let mut conn = lane.pool().acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("lock table products in share mode")
                .execute(&mut *tx)
                .await
                .unwrap();
            std::mem::forget(tx);
        }
    }
}

/// Holds the lock every write takes, from outside the replica (as a wedged writer
/// would), until rolled back.
async fn hold_the_write_lock(app: &TestApp) -> Box<dyn std::any::Any + Send> {
    use sqlx::Connection as _;
    match app.engine() {
        Engine::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
            sqlx::query("begin immediate")
                .execute(&mut conn)
                .await
                .unwrap();
            Box::new(conn)
        }
        Engine::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
            sqlx::query("begin").execute(&mut conn).await.unwrap();
            // What blocks every write to products (as a schema change would).
            sqlx::query("lock table products in share mode")
                .execute(&mut conn)
                .await
                .unwrap();
            Box::new(conn)
        }
    }
}

/// Polls `/readyz` until it answers `status`, for at most `within`.
async fn readiness_turns(app: &TestApp, status: u16, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = app.client().get("/readyz").await;
        if r.status.as_u16() == status {
            return r.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {} after {within:?}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

dual_tests! {
    async fn a_connection_handed_back_inside_a_transaction_is_closed_not_pooled(app) {
        let mut probe = Probe::new(&app).await;
        for round in 0..3 {
            leak_a_transaction_holding_the_write_lock(app.state.service.db()).await;
            probe.write_goes_through(&format!("leaked transaction {round}")).await;
        }
    }

    async fn readiness_is_false_while_the_write_lock_cannot_be_taken_and_recovers_by_itself(app) {
        let app = TestApp::on(app.db.clone(), |c| c.db_timeout_secs = 1).await;
        readiness_turns(&app, 200, Duration::from_secs(2)).await;

        let holder = hold_the_write_lock(&app).await;
        // The probe waits at most the write bound (1 s), then says so; the period is
        // half a second.
        let body = readiness_turns(&app, 503, Duration::from_secs(4)).await;
        assert_eq!(body["status"], "writes unavailable");

        drop(holder); // closing the holder's connection rolls its transaction back
        readiness_turns(&app, 200, Duration::from_secs(4)).await;
        let mut c = app.partner("pulih").await;
        let product = c.create_product("Pulih", 0).await;
        assert!(c.adjust(&product, 1).await.get("errors").is_none());
    }
}

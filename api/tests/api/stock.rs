//! Stock changes: the guarded update, the ledger, compare-and-set and idempotency.

use serde_json::json;

use crate::helpers::*;

const ADJUST: &str = "mutation($i: AdjustStockInput!) { adjustStock(input: $i) {
    product { quantity version } movement { id delta quantityAfter reason note idempotencyKey actor { username } } replayed } }";
const SET: &str = "mutation($i: SetStockInput!) { setStock(input: $i) {
    product { quantity } movement { id delta quantityAfter reason } replayed } }";
const LEDGER: &str =
    "query($id: ID!, $f: Int, $a: String) { stockMovements(productId: $id, first: $f, after: $a) {
    pageInfo { hasNextPage endCursor } edges { node { id delta quantityAfter reason } } } }";

dual_tests! {
    async fn a_change_without_a_reason_gets_the_same_default_on_both_apis(app) {
        let mut c = app.partner("reasonless").await;
        let id = c.create_product("Bakwan", 10).await;
        for (delta, reason) in [(-2, "SALE"), (3, "RESTOCK")] {
            let r = c.ok(ADJUST, json!({"i": {"productId": id, "delta": delta}})).await;
            assert_eq!(r["adjustStock"]["movement"]["reason"], reason, "GraphQL, {delta}");
            let r = c.rest("POST", &format!("/ecanteen/product/{id}/stock"), Some(json!({"delta": delta})), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let ledger = c.ok(LEDGER, json!({"id": id, "f": 1})).await;
            assert_eq!(ledger["stockMovements"]["edges"][0]["node"]["reason"], reason, "REST, {delta}");
        }
    }

    async fn adjusting_stock_writes_one_ledger_row_per_change(app) {
        let mut c = app.partner("seller").await;
        let id = c.create_product("Mie Ayam", 10).await;
        let r = c.ok(ADJUST, json!({"i": {"productId": id, "delta": -3, "reason": "SALE", "note": "lunch"}})).await;
        let change = &r["adjustStock"];
        assert_eq!(change["product"]["quantity"], 7);
        assert_eq!(change["movement"]["delta"], -3);
        assert_eq!(change["movement"]["quantityAfter"], 7);
        assert_eq!(change["movement"]["reason"], "SALE");
        assert_eq!(change["movement"]["note"], "lunch");
        assert_eq!(change["movement"]["actor"]["username"], "seller");
        assert_eq!(change["replayed"], false);
        let r = c.ok(ADJUST, json!({"i": {"productId": id, "delta": 5, "reason": "RESTOCK"}})).await;
        assert_eq!(r["adjustStock"]["product"]["quantity"], 12);
        let ledger = c.ok(LEDGER, json!({"id": id})).await;
        let deltas: Vec<i64> = ledger["stockMovements"]["edges"].as_array().unwrap().iter()
            .map(|e| e["node"]["delta"].as_i64().unwrap()).collect();
        assert_eq!(deltas, [5, -3, 10], "newest first, initial stock included");
    }

    async fn stock_never_goes_below_zero(app) {
        let mut c = app.partner("careful").await;
        let id = c.create_product("Bakwan", 2).await;
        let r = c.gql(ADJUST, json!({"i": {"productId": id, "delta": -3}})).await;
        assert_eq!(first_code(&r).as_deref(), Some("INSUFFICIENT_STOCK"));
        assert_eq!(r["errors"][0]["extensions"]["available"], 2);
        assert_eq!(c.quantity(&id).await, 2);
        c.ok(ADJUST, json!({"i": {"productId": id, "delta": -2}})).await;
        assert_eq!(c.err_code(ADJUST, json!({"i": {"productId": id, "delta": -1}})).await, "INSUFFICIENT_STOCK");
        let ledger = c.ok(LEDGER, json!({"id": id})).await;
        assert_eq!(ledger["stockMovements"]["edges"].as_array().unwrap().len(), 2);
    }

    async fn bad_stock_input_is_refused_by_field(app) {
        let mut c = app.partner("typo").await;
        let id = c.create_product("Tahu", 1).await;
        for (input, field) in [
            (json!({"productId": id, "delta": 0}), "input.delta"),
            (json!({"productId": id, "delta": 2_000_000_000_i64}), "input.delta"),
            (json!({"productId": "abc", "delta": 1}), "input.productId"),
            (json!({"productId": id, "delta": 1, "idempotencyKey": ""}), "input.idempotencyKey"),
            (json!({"productId": id, "delta": 1, "expectedQuantity": -1}), "input.expectedQuantity"),
            (json!({"productId": id, "delta": 1, "note": "n".repeat(501)}), "input.note"),
        ] {
            let r = c.gql(ADJUST, json!({"i": input})).await;
            assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{field}: {r:#}");
            assert_eq!(r["errors"][0]["extensions"]["field"], field);
        }
        let r = c.gql(ADJUST, json!({"i": {"productId": id, "delta": 1, "reason": "GIFT"}})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
        assert_eq!(c.err_code(ADJUST, json!({"i": {"productId": "999999", "delta": 1}})).await, "NOT_FOUND");
        let big = c.gql(ADJUST, json!({"i": {"productId": id, "delta": 1_000_000_000}})).await;
        assert_eq!(first_code(&big).as_deref(), Some("BAD_USER_INPUT"), "above the maximum quantity");
        assert_eq!(c.quantity(&id).await, 1);
    }

    async fn a_stale_expected_quantity_is_a_conflict(app) {
        let mut c = app.partner("cashier").await;
        let id = c.create_product("Gorengan", 10).await;
        c.ok(ADJUST, json!({"i": {"productId": id, "delta": -1, "expectedQuantity": 10}})).await;
        let r = c.gql(ADJUST, json!({"i": {"productId": id, "delta": -1, "expectedQuantity": 10}})).await;
        assert_eq!(first_code(&r).as_deref(), Some("CONFLICT"));
        assert_eq!(r["errors"][0]["extensions"]["current"], 9);
        assert_eq!(c.err_code(SET, json!({"i": {"productId": id, "quantity": 3, "expectedQuantity": 8}})).await, "CONFLICT");
        assert_eq!(c.quantity(&id).await, 9);
    }

    async fn set_stock_records_the_counted_difference(app) {
        let mut c = app.partner("closer").await;
        let id = c.create_product("Lontong", 10).await;
        let r = c.ok(SET, json!({"i": {"productId": id, "quantity": 7}})).await;
        assert_eq!(r["setStock"]["product"]["quantity"], 7);
        assert_eq!(r["setStock"]["movement"]["delta"], -3);
        assert_eq!(r["setStock"]["movement"]["reason"], "COUNT");
        // A count that matches is still recorded, as a zero change.
        let r = c.ok(SET, json!({"i": {"productId": id, "quantity": 7, "expectedQuantity": 7}})).await;
        assert_eq!(r["setStock"]["movement"]["delta"], 0);
        assert_eq!(c.err_code(SET, json!({"i": {"productId": id, "quantity": -1}})).await, "BAD_USER_INPUT");
    }

    async fn an_idempotency_key_replays_the_first_result(app) {
        let mut c = app.partner("retrier").await;
        let id = c.create_product("Pisang", 10).await;
        let input = json!({"i": {"productId": id, "delta": -2, "reason": "SALE", "idempotencyKey": "sale-42"}});
        let first = c.ok(ADJUST, input.clone()).await["adjustStock"].clone();
        let again = c.ok(ADJUST, input).await["adjustStock"].clone();
        assert_eq!(first["replayed"], false);
        assert_eq!(again["replayed"], true);
        assert_eq!(first["movement"], again["movement"]);
        assert_eq!(again["movement"]["idempotencyKey"], "sale-42");
        assert_eq!(c.quantity(&id).await, 8, "applied once");
        // The same key with another payload is refused, and changes nothing.
        let r = c.gql(ADJUST, json!({"i": {"productId": id, "delta": -3, "reason": "SALE", "idempotencyKey": "sale-42"}})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
        assert_eq!(r["errors"][0]["extensions"]["field"], "idempotencyKey");
        assert_eq!(c.err_code(SET, json!({"i": {"productId": id, "quantity": 1, "idempotencyKey": "sale-42"}})).await, "BAD_USER_INPUT");
        assert_eq!(c.quantity(&id).await, 8);
        // Keys are per partner: another partner may use the same key for itself.
        let mut other = app.partner("other_retrier").await;
        let own = other.create_product("Salak", 1).await;
        other.ok(ADJUST, json!({"i": {"productId": own, "delta": 1, "idempotencyKey": "sale-42"}})).await;
        assert_eq!(other.quantity(&own).await, 2);
    }

    async fn a_failed_change_does_not_burn_its_idempotency_key(app) {
        let mut c = app.partner("patient").await;
        let id = c.create_product("Rambutan", 1).await;
        let input = json!({"i": {"productId": id, "delta": -2, "idempotencyKey": "k1"}});
        assert_eq!(c.err_code(ADJUST, input.clone()).await, "INSUFFICIENT_STOCK");
        c.ok(ADJUST, json!({"i": {"productId": id, "delta": 5}})).await;
        let r = c.ok(ADJUST, input).await;
        assert_eq!(r["adjustStock"]["replayed"], false);
        assert_eq!(c.quantity(&id).await, 4);
    }

    async fn the_ledger_pages_newest_first(app) {
        let mut c = app.partner("pager").await;
        let id = c.create_product("Kopi", 1).await;
        for _ in 0..4 {
            c.ok(ADJUST, json!({"i": {"productId": id, "delta": 1}})).await;
        }
        let p1 = c.ok(LEDGER, json!({"id": id, "f": 3})).await;
        let after: Vec<i64> = p1["stockMovements"]["edges"].as_array().unwrap().iter()
            .map(|e| e["node"]["quantityAfter"].as_i64().unwrap()).collect();
        assert_eq!(after, [5, 4, 3]);
        assert_eq!(p1["stockMovements"]["pageInfo"]["hasNextPage"], true);
        let p2 = c.ok(LEDGER, json!({"id": id, "f": 3, "a": p1["stockMovements"]["pageInfo"]["endCursor"]})).await;
        let after: Vec<i64> = p2["stockMovements"]["edges"].as_array().unwrap().iter()
            .map(|e| e["node"]["quantityAfter"].as_i64().unwrap()).collect();
        assert_eq!(after, [2, 1]);
        assert_eq!(p2["stockMovements"]["pageInfo"]["hasNextPage"], false);
    }

    async fn the_ledger_is_append_only_in_the_database(app) {
        let mut c = app.partner("auditor").await;
        c.create_product("Susu", 3).await;
        let db = app.state.service.db();
        let update = db.execute(&Sql::new("update stock_movements set delta = 100")).await;
        let delete = db.execute(&Sql::new("delete from stock_movements")).await;
        assert!(update.is_err() && delete.is_err());
        let quantity_check = db.execute(&Sql::new("update products set quantity = -1")).await;
        assert!(quantity_check.is_err(), "the CHECK constraint backs the guard");
    }
}

/// A key that another request claims while this one's one-statement change waits for
/// it (PostgreSQL: the insert of the key blocks on the other's uncommitted row, then
/// fails on the primary key) is answered as that key's answer, here a key reused for
/// another request, and nothing is written; never an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_claimed_while_the_change_waits_is_answered_as_that_keys() {
    use sqlx::Connection as _;
    let app = TestApp::new(Engine::Postgres).await;
    let mut c = app.partner("waiting_key").await;
    let id = c.create_product("Cireng", 10).await;
    let me: i64 = c.ok("{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut other = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("begin").execute(&mut other).await.unwrap();
    sqlx::query(
        "insert into idempotency_keys (user_id, key, operation, request_hash, response, created_at)
         values ($1, 'contested', 'adjustStock', 'another request', '', 0)",
    )
    .bind(me)
    .execute(&mut other)
    .await
    .unwrap();
    let mut waiting = c.clone();
    let product = id.clone();
    let change = tokio::spawn(async move {
        waiting
            .gql(
                ADJUST,
                json!({"i": {"productId": product, "delta": -1, "idempotencyKey": "contested"}}),
            )
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!change.is_finished(), "the change did not wait for the key");
    sqlx::query("commit").execute(&mut other).await.unwrap();
    let answer = change.await.unwrap();
    let error = &answer["errors"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{answer}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used for a different request")),
        "{answer}"
    );
    assert_eq!(c.quantity(&id).await, 10);
}

/// SQLite's stock writer applies the changes that queued while the write turn was held
/// together, in batches of one transaction each (`service::stock::batch`). Each still
/// succeeds or fails alone: the one that would take stock below zero is refused with its
/// own error, the key sent twice applies once and replays once, the others apply; and
/// none is answered before its batch has committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_applied_in_one_batch_succeed_or_fail_alone() {
    let app = TestApp::with_config(Engine::Sqlite, |c| {
        c.write_wait_ms = 5_000;
        c.db_timeout_secs = 5;
    })
    .await;
    let mut c = app.partner("sekaligus").await;
    let id = c.create_product("Gorengan", 3).await;
    let gate = app.sqlite_write_gate();
    let turn = gate.enter().await.unwrap();
    let changes = [
        (-1, Some("a")),
        (-1, Some("b")),
        (-50, Some("c")),
        (-1, Some("a")),
        (2, None),
        (-1, Some("d")),
    ];
    let tasks: Vec<_> = changes
        .iter()
        .map(|&(delta, key)| {
            let mut till = c.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut input = json!({"productId": id, "delta": delta});
                if let Some(key) = key {
                    input["idempotencyKey"] = json!(key);
                }
                till.gql(ADJUST, json!({ "i": input })).await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "a change was answered while the turn was held"
    );
    drop(turn);
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let refused = &answers[2]["errors"][0]["extensions"]["code"];
    assert_eq!(refused, "INSUFFICIENT_STOCK", "{}", answers[2]);
    for n in [0, 1, 3, 4, 5] {
        assert!(answers[n].get("errors").is_none(), "{}", answers[n]);
    }
    let (first, again) = (
        &answers[0]["data"]["adjustStock"],
        &answers[3]["data"]["adjustStock"],
    );
    assert_eq!(first["movement"]["id"], again["movement"]["id"]);
    assert_eq!(
        [first["replayed"].as_bool(), again["replayed"].as_bool()]
            .iter()
            .filter(|r| **r == Some(true))
            .count(),
        1,
        "the key sent twice replays once"
    );
    assert_eq!(c.quantity(&id).await, 3 - 1 - 1 + 2 - 1);
    let ledger = c.ok(LEDGER, json!({"id": id, "f": 10})).await;
    let deltas: i64 = ledger["stockMovements"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["delta"].as_i64().unwrap())
        .sum();
    assert_eq!(deltas, 2, "the ledger sums to the stock");
    // They went through the writer, not around it: the first alone (it was taken
    // before the turn was free), the rest together.
    let stats = app.state.service.stock_batches();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    let changes = stats.changes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches <= 3, "{batches} batches");
    assert_eq!(
        changes, 4,
        "four changes applied in batches (the others went the general path)"
    );
}

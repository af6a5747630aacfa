//! Concurrency is tested, not assumed.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::*;

/// 32 tasks each try 10 sales of one item from a stock of 100, spread over `apps`.
async fn hammer(apps: &[TestApp]) {
    let mut owner = apps[0].partner("stall").await;
    let id = owner.create_product("Nasi Uduk", 100).await;
    let mut tasks = Vec::new();
    for task in 0..32 {
        let mut client = owner.to(&apps[task % apps.len()]);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..10 {
                let r = client.adjust(&id, -1).await;
                outcomes.push(first_code(&r).unwrap_or_else(|| "OK".to_owned()));
            }
            outcomes
        }));
    }
    let mut ok = 0;
    for task in tasks {
        for outcome in task.await.unwrap() {
            match outcome.as_str() {
                "OK" => ok += 1,
                "INSUFFICIENT_STOCK" => {}
                other => panic!("unexpected outcome {other}"),
            }
        }
    }
    assert_eq!(ok, 100, "exactly the stock was sold");
    assert_eq!(owner.quantity(&id).await, 0);
    let sales: i64 = apps[0]
        .state
        .service
        .db()
        .scalar(&Sql::new(
            "select count(*) from stock_movements where delta = -1",
        ))
        .await
        .unwrap();
    assert_eq!(sales, 100, "one ledger row per sale");
}

dual_tests! {
    async fn adjust_stock_never_goes_below_zero_under_concurrency(app) {
        hammer(&[app]).await;
    }

    async fn two_replicas_on_one_database_sell_exactly_the_stock(app) {
        let other = app.sibling().await;
        hammer(&[app, other]).await;
    }

    async fn the_same_idempotency_key_sent_concurrently_applies_once(app) {
        let other = app.sibling().await;
        let mut owner = app.partner("dup").await;
        let id = owner.create_product("Teh", 50).await;
        let input = Arc::new(json!({"i": {"productId": id, "delta": -1, "idempotencyKey": "once"}}));
        let mut tasks = Vec::new();
        for n in 0..16 {
            let mut client = owner.to(if n % 2 == 0 { &app } else { &other });
            let input = input.clone();
            tasks.push(tokio::spawn(async move {
                client.ok(
                    "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { movement { id } replayed } }",
                    (*input).clone(),
                ).await
            }));
        }
        let mut movement_ids = Vec::new();
        let mut fresh = 0;
        for task in tasks {
            let data = task.await.unwrap();
            movement_ids.push(data["adjustStock"]["movement"]["id"].clone());
            if data["adjustStock"]["replayed"] == false {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1);
        assert!(movement_ids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(owner.quantity(&id).await, 49);
    }
}

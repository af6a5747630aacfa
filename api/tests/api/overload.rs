//! Graceful overload: past a bound, the excess is refused at once with a retryable
//! answer, and what was admitted is served.

use serde_json::json;

use crate::helpers::*;
use ecanteen_api::db::Class;
use ecanteen_test_client::documents::LOGIN;

/// One password worker, a queue of one, a short wait: a handful of concurrent logins is
/// already a storm.
async fn tight_app(engine: Engine) -> TestApp {
    TestApp::with_config(engine, |c| {
        c.password_workers = 1;
        c.password_queue = 1;
        c.password_wait_ms = 50;
    })
    .await
}

/// Makes `n` products for the partner `owner_id` in one statement.
async fn many_products(app: &TestApp, owner_id: i64, n: i64) {
    let sql = Sql::new(
        "with recursive seq(i) as (select 1 union all select i + 1 from seq where i < $2)
         insert into products (owner_id, name, name_key, price, quantity, category, created_at, updated_at)
         select $1, 'Kerupuk ' || i, 'kerupuk ' || i, 500, 1, 'makanan', 0, 0 from seq",
    )
    .arg(owner_id)
    .arg(n);
    app.state.service.db().execute(&sql).await.unwrap();
}

dual_tests! {
    async fn a_rest_listing_returns_at_most_a_thousand_and_links_the_next_page(app) {
        let mut c = app.client();
        let owner = c.register("grosir", PASSWORD).await;
        many_products(&app, owner["id"].as_str().unwrap().parse().unwrap(), 1005).await;

        let first = c.get("/ecanteen/product").await;
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(first.json().as_array().unwrap().len(), 1000, "the default page");
        let link = first.headers.get("link").expect("a full page links the next").to_str().unwrap().to_owned();
        assert_eq!(link, r#"</ecanteen/product?offset=1000>; rel="next""#);
        let rest = c.get("/ecanteen/product?offset=1000").await;
        assert_eq!(rest.json().as_array().unwrap().len(), 5);
        assert!(rest.headers.get("link").is_none(), "the last page links nothing");

        // Filters and the page size are kept; past the maximum is refused.
        let paged = c.get("/ecanteen/product?user_id=grosir&limit=3&offset=2").await;
        let ids: Vec<i64> = paged.json().as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            paged.headers.get("link").unwrap().to_str().unwrap(),
            r#"</ecanteen/product?user_id=grosir&limit=3&offset=5>; rel="next""#
        );
        assert_eq!(c.get("/ecanteen/product?limit=1001").await.status, 400);
    }

    async fn a_login_storm_past_the_password_workers_is_refused_as_busy_with_retry_after(app) {
        let app = tight_app(app.engine()).await;
        app.client().register("ramai", PASSWORD).await;

        let attempts: Vec<_> = (0..12)
            .map(|i| {
                let mut c = app.client();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        let r = c.send(gql_request(LOGIN, json!({"u": "ramai", "p": PASSWORD}))).await;
                        (r.status.as_u16(), r.headers.contains_key("retry-after"), r.json())
                    } else {
                        let r = c.rest("POST", "/ecanteen/login",
                            Some(json!({"username": "ramai", "password": PASSWORD})), &[]).await;
                        (r.status.as_u16(), r.headers.contains_key("retry-after"), r.json())
                    }
                })
            })
            .collect();
        let (mut admitted, mut busy) = (0, 0);
        for attempt in attempts {
            let (status, retry_after, body) = attempt.await.unwrap();
            match status {
                200 if body.get("errors").is_none() => admitted += 1,
                503 => {
                    assert!(retry_after, "a 503 without Retry-After: {body}");
                    // GraphQL says BUSY; REST keeps to its contract's codes.
                    let code = body["errors"][0]["extensions"]["code"].as_str()
                        .or(body["error"]["code"].as_str());
                    assert!(matches!(code, Some("BUSY" | "INTERNAL")), "{body}");
                    assert!(body.to_string().contains("busy"), "{body}");
                    if let Some(ext) = body["errors"][0]["extensions"].as_object() {
                        assert_eq!(ext["retryAfter"], 1, "{body}");
                        assert_eq!(ext["retryable"], true, "{body}");
                    }
                    busy += 1;
                }
                _ => panic!("neither admitted nor BUSY: {status} {body}"),
            }
        }
        assert!(admitted >= 1, "the first logins were served");
        assert!(busy >= 1, "the excess was refused: {admitted} admitted");
        // A refusal is not a failed login: the account is not throttled by the storm.
        app.client().login("ramai", PASSWORD).await;
    }

    async fn concurrent_guesses_never_pass_the_login_throttle(app) {
        // Room for every guess to run at once, so that they really race.
        let app = TestApp::on(app.db.clone(), |c| {
            c.password_workers = 4;
            c.password_queue = 64;
            c.password_wait_ms = 30_000;
        })
        .await;
        app.client().register("rebutan", PASSWORD).await;
        let guesses: Vec<_> = (0..20)
            .map(|i| {
                let mut c = app.client();
                tokio::spawn(async move {
                    let r = c.gql(LOGIN, json!({"u": "rebutan", "p": format!("wrong guess {i}")})).await;
                    first_code(&r).unwrap_or_default()
                })
            })
            .collect();
        let mut codes = std::collections::BTreeMap::<String, usize>::new();
        for guess in guesses {
            *codes.entry(guess.await.unwrap()).or_default() += 1;
        }
        // Five guesses are checked (the limit); the other fifteen are refused unchecked.
        assert_eq!(codes.get("UNAUTHENTICATED"), Some(&5), "{codes:?}");
        assert_eq!(codes.get("TOO_MANY_REQUESTS"), Some(&15), "{codes:?}");
        let r = app.client().gql(LOGIN, json!({"u": "rebutan", "p": PASSWORD})).await;
        assert_eq!(first_code(&r).as_deref(), Some("TOO_MANY_REQUESTS"), "{r}");
    }

    async fn one_request_holds_at_most_one_login_or_register(app) {
        let mut c = app.client();
        c.register("sekali", PASSWORD).await;
        let bomb = format!(
            "mutation {{ {} }}",
            (0..50).map(|i| format!("a{i}: login(username: \"sekali\", password: \"guess{i}xx\") {{ id }}"))
                .collect::<Vec<_>>().join(" ")
        );
        let r = c.gql(&bomb, json!({})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains("at most one login or register"), "{r}");
        // Through fragments too, and a register beside a login.
        let mixed = "mutation { ...L register(input: {username: \"dua\", password: \"correct horse battery\"}) { id } }
            fragment L on MutationRoot { login(username: \"sekali\", password: \"correct horse battery\") { id } }";
        assert_eq!(first_code(&c.gql(mixed, json!({})).await).as_deref(), Some("BAD_USER_INPUT"));
        assert!(app.client().gql("{ products { totalCount } }", json!({})).await.get("errors").is_none());

        // Across a batch: two documents of one login each.
        let one = json!({"query": LOGIN, "variables": {"u": "sekali", "p": "wrong guess 1"}});
        let batch = json!([one, {"query": LOGIN, "variables": {"u": "sekali", "p": "wrong guess 2"}}]);
        let r = c.post_raw("application/json", batch.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("at most one login or register"), "{}", r.text());
        // One login in a batch with a query is fine.
        let fine = json!([{"query": "{ products { totalCount } }"}, {"query": LOGIN, "variables": {"u": "sekali", "p": PASSWORD}}]);
        let r = c.post_raw("application/json", fine.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()[1].get("errors").is_none(), "{}", r.text());

        // None of the refused guesses was tried: no failure counts against the account.
        for _ in 0..4 {
            c.gql(LOGIN, json!({"u": "sekali", "p": "wrong guess!"})).await;
        }
        assert!(c.gql(LOGIN, json!({"u": "sekali", "p": PASSWORD})).await.get("errors").is_none(),
            "five failures would have throttled the account");
    }
}

/// Labels come from fixed sets: 200 made-up methods and 200 made-up paths add no series
/// to `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_come_from_fixed_sets_whatever_the_requests_say() {
    use axum::body::Body;
    use axum::http::{Method, Request};

    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    for i in 0..200 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        c.send(
            Request::builder()
                .method(method)
                .uri("/graphql")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        c.get(&format!("/no/such/path/{i}")).await;
    }
    let metrics = c.get("/metrics").await.text();
    assert!(!metrics.contains("BREW"), "a made-up method became a label");
    assert!(
        !metrics.contains("/no/such/path"),
        "a raw path became a label"
    );
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
}

/// SQLite has one writer: past what it commits, writes queue at the write gate. A
/// write that would wait past `--write-wait-ms` is refused at once, 503 with
/// Retry-After on both APIs, long before the database timeout, and nothing of it is
/// applied; sent again with its key once the writer is free, it applies once. The
/// write probe waits as long as the database timeout, so a queue does not make the
/// replica look unready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_the_write_deadline_is_refused_at_once_and_applies_once_when_sent_again() {
    let app = TestApp::with_config(Engine::Sqlite, |c| {
        c.write_wait_ms = 100;
        c.db_timeout_secs = 5;
    })
    .await;
    let mut c = app.partner("antrian").await;
    let id = c.create_product("Cilok", 10).await;
    let stock = format!("/ecanteen/product/{id}/stock");
    let adjust = "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { product { quantity } replayed } }";
    let gql_input = json!({"i": {"productId": id, "delta": -1, "reason": "SALE", "idempotencyKey": "antre-gql"}});
    let gate = app.sqlite_write_gate();

    // Another writer holds the only turn.
    let turn = gate.enter().await.unwrap();
    let started = std::time::Instant::now();
    let rest = c
        .rest(
            "POST",
            &stock,
            Some(json!({"delta": -1})),
            &[("idempotency-key", "antre-rest")],
        )
        .await;
    assert_eq!(rest.status, 503, "{}", rest.text());
    assert_eq!(rest.headers["retry-after"], "1");
    assert_eq!(rest.json()["error"]["code"], "INTERNAL");
    let gql = c.send(gql_request(adjust, gql_input.clone())).await;
    assert_eq!(gql.status, 503, "{}", gql.text());
    assert!(gql.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "refused at the write deadline, not at the 5 s database timeout: {:?}",
        started.elapsed()
    );
    // The replica is still ready: its probe is patient.
    assert_eq!(app.client().get("/readyz").await.status, 200);
    drop(turn);

    // Nothing was applied; sent again, each applies once.
    assert_eq!(c.quantity(&id).await, 10);
    let rest = c
        .rest(
            "POST",
            &stock,
            Some(json!({"delta": -1})),
            &[("idempotency-key", "antre-rest")],
        )
        .await;
    assert_eq!(rest.status, 200, "{}", rest.text());
    let again = c.ok(adjust, gql_input.clone()).await;
    assert_eq!(again["adjustStock"]["replayed"], false);
    assert_eq!(
        c.ok(adjust, gql_input).await["adjustStock"]["replayed"],
        true
    );
    assert_eq!(c.quantity(&id).await, 8);
}

/// At most `--write-queue` writes wait for their turn at once: one more is refused at
/// once, without first waiting out the deadline, and the ones waiting are served once
/// the writer is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_a_full_write_queue_is_refused_at_once_and_those_waiting_are_served() {
    let app = TestApp::with_config(Engine::Sqlite, |c| {
        c.write_queue = 2;
        c.write_wait_ms = 5_000;
        c.db_timeout_secs = 5;
    })
    .await;
    let mut c = app.partner("berjejal").await;
    let id = c.create_product("Cireng", 10).await;
    let token = c.api_token("kasir").await;
    let gate = app.sqlite_write_gate();

    let turn = gate.enter().await.unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|n| {
            let mut till = app.client();
            till.bearer = Some(token.clone());
            let id = id.clone();
            tokio::spawn(async move {
                let key = [("idempotency-key", format!("tunggu-{n}"))];
                let key: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
                till.rest(
                    "POST",
                    &format!("/ecanteen/product/{id}/stock"),
                    Some(json!({"delta": -1})),
                    &key,
                )
                .await
                .status
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "two writes wait their turn"
    );

    let started = std::time::Instant::now();
    let refused = c
        .rest(
            "POST",
            &format!("/ecanteen/product/{id}/stock"),
            Some(json!({"delta": -1})),
            &[],
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a third is refused at once, not after the 5 s deadline: {:?}",
        started.elapsed()
    );

    drop(turn);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    assert_eq!(c.quantity(&id).await, 8);
}

/// On SQLite a failed login costs no write on the main file: its count lives in the
/// login ledger's own file, lock and gate. With the stock writer's turn held (as a
/// long queue of stock changes would), failed logins are still answered and counted,
/// and the throttle still locks the account at its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_takes_no_turn_from_the_stock_writer() {
    let app = TestApp::new(Engine::Sqlite).await;
    app.client().register("tamu", PASSWORD).await;
    let ecanteen_api::db::Db::Sqlite(pool, gate) = app.state.service.db() else {
        unreachable!("a SQLite app")
    };
    let turn = gate.enter().await.unwrap();
    let started = std::time::Instant::now();
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = app
            .client()
            .send(gql_request(
                LOGIN,
                json!({"u": "tamu", "p": "a wrong guess"}),
            ))
            .await;
        codes.push(first_code(&r.json()).unwrap_or_default());
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the guesses waited for the stock writer: {:?}",
        started.elapsed()
    );
    assert_eq!(codes[..5], ["UNAUTHENTICATED"; 5]);
    assert_eq!(codes[5], "TOO_MANY_REQUESTS");
    drop(turn);
    let in_main: i64 = sqlx::query_scalar("select count(*) from login_failures")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(in_main, 0, "nothing was written to the main file");
}

/// Every connection a lane has, held: a lane refuses the next acquire once its wait has
/// passed, so this takes them all and stops there.
async fn hold_lane(
    lane: &ecanteen_api::db::Lane,
) -> Vec<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    let mut held = Vec::new();
    while let Ok(connection) = lane.acquire().await {
        held.push(connection);
        assert!(held.len() <= 64, "the lane never ran out of connections");
    }
    held
}

/// On PostgreSQL, reads have connections of their own: with every connection of the
/// write lane held (writes stuck behind a lock), a read is answered at once, a
/// login (its ledger and its session are the session lane's) goes through, and a write
/// is refused with 503 and `Retry-After` at its deadline, not after the 5 s database
/// timeout. With one pool for all, the read and the login waited behind the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_and_logins_never_wait_behind_writes_and_writes_are_refused_at_their_deadline(
) {
    let app = TestApp::with_config(Engine::Postgres, |c| {
        c.write_wait_ms = 200;
        c.write_queue = 64;
        c.read_wait_ms = 200;
        c.db_timeout_secs = 5;
    })
    .await;
    let mut c = app.partner("lajur").await;
    let id = c.create_product("Cilok", 10).await;
    app.partner("lajur-dua").await;
    let lanes = app.postgres_lanes();
    let held = hold_lane(lanes.lane(Class::Write)).await;
    assert!(!held.is_empty());

    let started = std::time::Instant::now();
    let read = c
        .rest("GET", &format!("/ecanteen/product/{id}"), None, &[])
        .await;
    assert_eq!(read.status, 200, "{}", read.text());
    let mut other = app.client();
    let login = other
        .rest(
            "POST",
            "/ecanteen/login",
            Some(json!({"username": "lajur-dua", "password": PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the read and the login waited: {:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let write = c
        .rest(
            "POST",
            &format!("/ecanteen/product/{id}/stock"),
            Some(json!({"delta": -1})),
            &[],
        )
        .await;
    assert_eq!(write.status, 503, "{}", write.text());
    assert_eq!(write.headers["retry-after"], "1");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "refused at the write deadline, not at the database timeout: {:?}",
        started.elapsed()
    );
    // The replica is still ready: its probes wait past the lanes' queues.
    drop(held);
    assert_eq!(app.client().get("/readyz").await.status, 200);
    let write = c
        .rest(
            "POST",
            &format!("/ecanteen/product/{id}/stock"),
            Some(json!({"delta": -1})),
            &[],
        )
        .await;
    assert_eq!(write.status, 200, "{}", write.text());
    assert_eq!(
        c.quantity(&id).await,
        9,
        "the refused write was not applied"
    );
}

/// At most `--read-queue` reads wait for a connection of PostgreSQL's read lane: one
/// more is refused at once, without waiting out the deadline, and the one waiting gets
/// a connection as soon as one is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_read_past_a_full_read_queue_is_refused_at_once_and_the_one_waiting_is_served() {
    let app = TestApp::with_config(Engine::Postgres, |c| {
        c.read_queue = 1;
        c.read_wait_ms = 1_000;
    })
    .await;
    let lane = app.postgres_lanes().lane(Class::Read).clone();
    let mut held = hold_lane(&lane).await;

    let waiter = lane.clone();
    let waiting = tokio::spawn(async move { waiter.acquire().await.is_ok() });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(lane.waiting(), 1, "one read waits");

    let started = std::time::Instant::now();
    assert!(matches!(
        lane.acquire().await,
        Err(sqlx::Error::PoolTimedOut)
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "refused at once: {:?}",
        started.elapsed()
    );
    held.pop();
    assert!(
        waiting.await.unwrap(),
        "the waiting read got the free connection"
    );
}

/// A stock change is read back after it commits (its ledger row). With every connection
/// of PostgreSQL's read lane busy and reads refused after 100 ms, the change is still
/// applied and answered: a 503 then would tell the client that an applied change
/// failed, and an unkeyed one sent again would apply twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stock_change_whose_reads_are_all_busy_is_applied_and_answered() {
    use ecanteen_api::domain::{Quantity, StockReason};
    use ecanteen_api::service::stock::SetStock;
    use ecanteen_api::service::{Actor, AuthMethod};

    let app = TestApp::with_config(Engine::Postgres, |c| {
        c.read_wait_ms = 100;
        c.read_queue = 64;
    })
    .await;
    let mut c = app.partner("baca-sibuk").await;
    c.create_product("Kerupuk", 10).await;
    let db = app.state.service.db();
    let (product_id, user_id): (i64, i64) = db
        .fetch_one(&Sql::new(
            "select id, owner_id from products where name = 'Kerupuk'",
        ))
        .await
        .unwrap();
    let held = hold_lane(app.postgres_lanes().lane(Class::Read)).await;

    let actor = Actor {
        user_id,
        method: AuthMethod::Session,
    };
    let input = SetStock {
        product_id,
        quantity: Quantity::parse("quantity", 7).unwrap(),
        reason: StockReason::Count,
        note: None,
        expected_quantity: None,
        idempotency_key: None,
    };
    let change = app.state.service.set_stock(&actor, input).await;
    let change = change.expect("applied and answered");
    assert_eq!(change.product.quantity, 7);
    assert_eq!(change.movement.delta, -3);
    drop(held);
}

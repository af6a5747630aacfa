//! Protection at the HTTP edge: CSRF, GET, body size, query limits, and error hygiene.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::helpers::*;

const CREATE: &str = r#"{"query":"mutation { createProduct(input: {name: \"csrf\", price: 1, category: \"c\"}) { id } }"}"#;

async fn product_count(app: &TestApp) -> i64 {
    app.state
        .service
        .db()
        .scalar(&Sql::new("select count(*) from products"))
        .await
        .unwrap()
}

dual_tests! {
    async fn the_replica_is_ready_on_either_engine(app) {
        let mut c = app.client();
        let ready = c.get("/readyz").await;
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert_eq!(ready.json()["status"], "ready");
    }

    async fn cross_site_content_types_are_refused_and_write_nothing(app) {
        let mut c = app.partner("csrf_target").await;
        for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""] {
            let response = c.post_raw(content_type, CREATE).await;
            assert_eq!(response.status, 415, "{content_type}");
            assert_eq!(first_code(&response.json()).as_deref(), Some("BAD_USER_INPUT"));
        }
        assert_eq!(product_count(&app).await, 0);
        // The same request as JSON does go through, so the refusal is the content type.
        let response = c.post_raw("application/json; charset=utf-8", CREATE).await;
        assert_eq!(response.status, 200);
        assert_eq!(product_count(&app).await, 1);
    }

    async fn mutations_over_get_are_405_and_queries_work(app) {
        let mut c = app.partner("getter").await;
        let mutation = "mutation%20%7B%20logout%20%7D";
        let response = c.get(&format!("/graphql?query={mutation}")).await;
        assert_eq!(response.status, 405);
        assert_eq!(response.headers["allow"], "POST");
        assert_eq!(c.ok("{ me { username } }", json!({})).await["me"]["username"], "getter", "still logged in");
        let response = c.get("/graphql?query=%7B%20me%20%7B%20username%20%7D%20%7D").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["data"]["me"]["username"], "getter");
    }

    async fn internal_errors_show_no_sql(app) {
        let mut c = app.partner("unlucky").await;
        // Break the schema under the app: the failure is ours, not the client's.
        app.state.service.db().execute(&Sql::new("drop table api_tokens")).await.unwrap();
        let response = c.post_raw("application/json", json!({"query": "mutation { createApiToken(name: \"t\") { token } }"}).to_string()).await;
        let body = response.text();
        assert_eq!(first_code(&response.json()).as_deref(), Some("INTERNAL"));
        assert!(body.contains("internal error"), "{body}");
        for leak in ["api_tokens", "insert", "sqlx", "Sqlite", "Database", "relation", "table"] {
            assert!(!body.to_lowercase().contains(&leak.to_lowercase()), "leaked {leak}: {body}");
        }
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = TestApp::with_config(Engine::Sqlite, |c| c.body_limit = 1024).await;
    let mut c = app.client();
    let big = json!({"query": format!("{{ me {{ id }} }} #{}", "x".repeat(2000))}).to_string();
    let response = c.post_raw("application/json", big.clone()).await;
    assert_eq!(response.status, 413);
    assert_eq!(
        first_code(&response.json()).as_deref(),
        Some("BAD_USER_INPUT")
    );
    // Without a Content-Length (streamed), the limit holds too.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    assert_eq!(c.send(req).await.status, 413);
}

#[tokio::test]
async fn depth_complexity_and_batch_limits_give_clear_errors() {
    let app = TestApp::with_config(Engine::Sqlite, |c| {
        c.max_query_depth = 5;
        // Ten queries' worth (each costs 50).
        c.max_query_complexity = 500;
        c.max_batch = 2;
    })
    .await;
    let mut c = app.client();
    let deep = "{ products(first: 1) { edges { node { owner { apiTokens { name } } } } } }";
    let r = c.gql(deep, json!({})).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nested"),
        "{r}"
    );

    // Twelve queries: within the root-field and alias caps, past the complexity.
    let aliases: String = (0..12).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let r = c.gql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{r}"
    );
    // Past the caps on root fields (16) and aliases (32), whatever they cost.
    let roots: String = (0..17).map(|_| "__typename ").collect();
    let r = c.gql(&format!("{{ {roots} }}"), json!({})).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("root fields of an operation: at most 16"),
        "{r}"
    );
    let aliases: String = (0..33).map(|i| format!("a{i}: id ")).collect();
    let r = c.gql(&format!("{{ me {{ {aliases} }} }}"), json!({})).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("aliases in an operation: at most 32"),
        "{r}"
    );

    let batch =
        json!([{"query": "{ me { id } }"}, {"query": "{ me { id } }"}, {"query": "{ me { id } }"}]);
    let response = c.post_raw("application/json", batch.to_string()).await;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("at most 2"));
    let ok = json!([{"query": "{ me { id } }"}, {"query": "{ me { id } }"}]);
    let response = c.post_raw("application/json", ok.to_string()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json().as_array().unwrap().len(), 2);
}

/// GraphQL tools (GraphiQL's docs, code generators, schemathesis) introspect with a
/// standard query 15 levels deep; the default limits let it through.
#[tokio::test]
async fn the_standard_introspection_query_fits_the_default_limits() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    let of_type = "ofType { ".repeat(10);
    let closing = "} ".repeat(10);
    let query = format!(
        "{{ __schema {{ queryType {{ name }} types {{ name fields(includeDeprecated: true) {{ name type {{ {of_type} name {closing} }} }} }} }} }}"
    );
    let data = c.ok(&query, json!({})).await;
    assert!(data["__schema"]["types"].as_array().unwrap().len() > 10);
}

#[tokio::test]
async fn malformed_requests_are_400_not_500() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    for body in [&b"{not json"[..], b"[]", b"{\"query\": 5}", b"\xff\xfe"] {
        let response = c.post_raw("application/json", body.to_vec()).await;
        assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(body));
    }
    let r = c.gql("{ nope }", json!({})).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
    let r = c.gql("{ me { ", json!({})).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
    let response = c.get("/nowhere").await;
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn introspection_and_graphiql_can_be_switched_off() {
    let on = TestApp::new(Engine::Sqlite).await;
    let mut c = on.client();
    assert!(c.ok("{ __schema { queryType { name } } }", json!({})).await["__schema"].is_object());
    let page = c.get("/graphql").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("graphiql"));

    let off = TestApp::with_config(Engine::Sqlite, |c| {
        c.introspection = false;
        c.graphiql = false;
    })
    .await;
    let mut c = off.client();
    let r = c
        .gql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(r["data"]["__schema"], json!(null), "{r}");
    assert_ne!(c.get("/graphql").await.status, 200);
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    assert_eq!(c.get("/healthz").await.status, 200);
    let ready = c.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    c.gql("{ me { id } }", json!({})).await;
    let metrics = c.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("ecanteen_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/graphql\""), "{text}");
    assert!(text.contains("ecanteen_db_pool_connections"), "{text}");

    app.state
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let draining = c.get("/readyz").await;
    assert_eq!(draining.status, 503);
    assert!(draining.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    let made = c.get("/healthz").await;
    assert!(!made.headers["x-request-id"].is_empty());
    let req = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(c.send(req).await.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn paged_fields_are_priced_per_item() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    let wide = "{ products(first: 100) { edges { node { stockMovements(first: 100) { edges { node { id delta } } } } } } }";
    let r = c.gql(wide, json!({})).await;
    assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    // A realistic page is well within the default limit.
    let page = "{ products(first: 50) { totalCount edges { node { id name price quantity category isLowStock version owner { username } } } } }";
    c.ok(page, json!({})).await;
}

#[tokio::test]
async fn requests_past_the_timeout_get_504() {
    let app = TestApp::with_config(Engine::Sqlite, |c| c.request_timeout_secs = 0).await;
    let mut c = app.client();
    // A zero timeout fires at the timer's next tick (a millisecond), so the request must
    // surely take longer than that: a login's password check (tens of milliseconds of
    // argon2). A catalogue read once finished inside the tick on a fast run, and got 200.
    let response = c
        .post_raw(
            "application/json",
            json!({"query": "mutation { login(username: \"nobody\", password: \"not the password\") { id } }"}).to_string(),
        )
        .await;
    assert_eq!(response.status, 504, "{}", response.text());
}

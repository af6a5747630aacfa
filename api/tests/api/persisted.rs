//! Automatic persisted queries (Apollo's APQ protocol, `http::persisted`): a hash alone
//! is PERSISTED_QUERY_NOT_FOUND until some replica has been sent its text, then serves
//! the text, by GET as well; the stored text obeys every rule a sent one does.

use ecanteen_test_client::requests;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const CATALOGUE: &str = "query Catalogue { products(first: 3) { nodes { id name } } }";

fn sha256(query: &str) -> String {
    format!("{:x}", Sha256::digest(query.as_bytes()))
}

fn extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// A GET with the hash alone.
fn get_hash(hash: &str) -> String {
    format!(
        "/graphql?{}",
        serde_urlencoded::to_string([("extensions", extension(hash).to_string())]).unwrap()
    )
}

/// A POST with the hash and, when given, the text.
fn post(query: Option<&str>, hash: &str) -> axum::http::Request<axum::body::Bytes> {
    let mut body = json!({ "extensions": extension(hash) });
    if let Some(query) = query {
        body["query"] = json!(query);
    }
    requests::json("POST", "/graphql", &body, &[])
}

/// How many texts the store holds.
async fn stored(app: &TestApp) -> i64 {
    app.state
        .service
        .db()
        .scalar(&Sql::new("select count(*) from persisted_queries"))
        .await
        .unwrap()
}

dual_tests! {
    async fn a_hash_is_unknown_until_its_text_is_sent_then_any_replica_serves_it_by_get(app) {
        let mut owner = app.partner("apq_stall").await;
        owner.create_product("Bakso", 4).await;
        let hash = sha256(CATALOGUE);
        let mut c = app.client();

        let unknown = c.get(&get_hash(&hash)).await;
        assert_eq!(unknown.status, 200);
        assert_eq!(first_code(&unknown.json()).as_deref(), Some("PERSISTED_QUERY_NOT_FOUND"));
        assert_eq!(unknown.json()["errors"][0]["message"], "PersistedQueryNotFound");
        assert_eq!(unknown.headers["cache-control"], "private, no-store");

        let learned = c.send_built(post(Some(CATALOGUE), &hash)).await;
        assert_eq!(learned.json()["data"]["products"]["nodes"][0]["name"], "Bakso");

        let by_hash = c.get(&get_hash(&hash)).await;
        assert_eq!(by_hash.status, 200, "{}", by_hash.text());
        assert_eq!(by_hash.json()["data"]["products"]["nodes"][0]["name"], "Bakso");
        // An anonymous GET by hash is the catalogue as well: a cache may hold it.
        assert!(by_hash.headers["cache-control"].to_str().unwrap().starts_with("public"));
        assert!(by_hash.headers.contains_key("etag"));

        // Another replica (its own memory) reads what this one learned.
        let sibling = app.sibling().await;
        let there = sibling.client().get(&get_hash(&hash)).await;
        assert_eq!(there.json()["data"]["products"]["nodes"][0]["name"], "Bakso");
        // And by POST with the hash alone.
        let posted = sibling.client().send_built(post(None, &hash)).await;
        assert_eq!(posted.json()["data"]["products"]["nodes"][0]["name"], "Bakso");
    }

    async fn a_wrong_or_malformed_hash_is_bad_user_input_and_nothing_is_kept(app) {
        let mut c = app.client();
        let wrong = c.send_built(post(Some(CATALOGUE), &sha256("{ __typename }"))).await;
        assert_eq!(wrong.status, 400, "{}", wrong.text());
        assert_eq!(first_code(&wrong.json()).as_deref(), Some("BAD_USER_INPUT"));
        for extensions in [
            json!({ "persistedQuery": { "version": 2, "sha256Hash": sha256(CATALOGUE) } }),
            json!({ "persistedQuery": { "version": 1, "sha256Hash": "abc" } }),
            json!({ "persistedQuery": { "version": 1 } }),
            json!({ "persistedQuery": "yes" }),
        ] {
            let body = json!({ "query": CATALOGUE, "extensions": extensions });
            let response = c.send_built(requests::json("POST", "/graphql", &body, &[])).await;
            assert_eq!(response.status, 400, "{extensions}: {}", response.text());
            assert_eq!(first_code(&response.json()).as_deref(), Some("BAD_USER_INPUT"), "{extensions}");
        }
        let not_json = c.get("/graphql?extensions=%7Bnope").await;
        assert_eq!(not_json.status, 400);
        let unknown = c.get(&get_hash(&sha256(CATALOGUE))).await;
        assert_eq!(first_code(&unknown.json()).as_deref(), Some("PERSISTED_QUERY_NOT_FOUND"));
        assert_eq!(stored(&app).await, 0);
    }

    async fn a_stored_text_obeys_every_rule_a_sent_one_does(app) {
        let mut partner = app.partner("apq_rules").await;
        // A mutation learned by POST is still refused over GET by its hash.
        let logout = "mutation { logout }";
        let ran = partner.send_built(post(Some(logout), &sha256(logout))).await;
        assert_eq!(ran.json()["data"]["logout"], true);
        let by_get = partner.get(&get_hash(&sha256(logout))).await;
        assert_eq!(by_get.status, 405, "{}", by_get.text());

        // Two logins by hash in one batch: one password field per batch, as with texts.
        let mut c = app.client();
        let login = "mutation { login(username: \"apq_rules\", password: \"x\") { id } }";
        let first = c.send_built(post(Some(login), &sha256(login))).await;
        assert_eq!(first.status, 200);
        let twice = json!([
            { "extensions": extension(&sha256(login)) },
            { "extensions": extension(&sha256(login)) },
        ]);
        let batch = c.send_built(requests::json("POST", "/graphql", &twice, &[])).await;
        assert_eq!(batch.status, 400, "{}", batch.text());
        assert_eq!(first_code(&batch.json()).as_deref(), Some("BAD_USER_INPUT"));

        // A text past the depth limit is refused, and is not kept for its hash.
        let nested = (0..14).fold("name".to_owned(), |inner, _| format!("ofType {{ {inner} }}"));
        let too_deep = format!("{{ __schema {{ types {{ fields {{ type {{ {nested} }} }} }} }} }}");
        let refused = c.send_built(post(Some(&too_deep), &sha256(&too_deep))).await;
        assert!(refused.json()["data"].is_null(), "{}", refused.text());
        assert!(refused.text().contains("nested too deep"), "{}", refused.text());
        let again = c.get(&get_hash(&sha256(&too_deep))).await;
        assert_eq!(first_code(&again.json()).as_deref(), Some("PERSISTED_QUERY_NOT_FOUND"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_at_most_its_bound_and_drops_the_oldest() {
    let app = TestApp::with_config(Engine::Sqlite, |c| c.persisted_queries_max = 2).await;
    // A partner's texts, held to the partners' bound.
    let mut c = app.partner("apq_bound").await;
    let queries = [
        "{ a: __typename }",
        "{ b: __typename }",
        "{ c: __typename }",
    ];
    for query in queries {
        let response = c.send_built(post(Some(query), &sha256(query))).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(stored(&app).await, 2);
    // A replica that did not cache them: the oldest is gone, the newer two are there.
    let sibling = app.sibling().await;
    let mut there = sibling.client();
    let oldest = there.get(&get_hash(&sha256(queries[0]))).await;
    assert_eq!(
        first_code(&oldest.json()).as_deref(),
        Some("PERSISTED_QUERY_NOT_FOUND")
    );
    for query in &queries[1..] {
        let response = there.get(&get_hash(&sha256(query))).await;
        assert!(response.json()["errors"].is_null(), "{}", response.text());
        assert_eq!(
            response.json()["data"].as_object().map(|o| o.len()),
            Some(1),
            "{}",
            response.text()
        );
    }
    // A text longer than the limit runs, and is not kept.
    let long = format!("{{ __typename }} # {}", "x".repeat(33 * 1024));
    let ran = c.send_built(post(Some(&long), &sha256(&long))).await;
    assert_eq!(ran.json()["data"]["__typename"], "QueryRoot");
    assert_eq!(stored(&app).await, 2);
}

/// A stranger who sends thousands of distinct texts fills only the anonymous quota and
/// pushes out only anonymous texts: a partner's stored text stays (issue #33, the
/// store-eviction attack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_evict_a_partners_texts() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        strangers_cannot_evict_a_partners_texts_on(engine).await;
    }
}

async fn strangers_cannot_evict_a_partners_texts_on(engine: Engine) {
    let app = TestApp::with_config(engine, |c| {
        c.persisted_queries_max = 5;
        c.persisted_queries_anonymous_max = 3;
    })
    .await;
    let mut partner = app.partner("apq_owner").await;
    let kept = partner
        .send_built(post(Some(CATALOGUE), &sha256(CATALOGUE)))
        .await;
    assert!(kept.json()["errors"].is_null(), "{}", kept.text());
    let mut stranger = app.client();
    for n in 0..10 {
        let query = format!("{{ n{n}: __typename }}");
        let ran = stranger
            .send_built(post(Some(&query), &sha256(&query)))
            .await;
        assert_eq!(ran.status, 200, "{}", ran.text());
    }
    let anonymous: i64 = app
        .state
        .service
        .db()
        .scalar(&Sql::new(
            "select count(*) from persisted_queries where anonymous = true",
        ))
        .await
        .unwrap();
    assert_eq!(anonymous, 3, "the anonymous quota holds");
    assert_eq!(
        stored(&app).await,
        4,
        "the partner's text and three anonymous ones"
    );
    // Another replica, which cached nothing, still serves the partner's text by hash.
    let sibling = app.sibling().await;
    let served = sibling.client().get(&get_hash(&sha256(CATALOGUE))).await;
    assert!(served.json()["errors"].is_null(), "{}", served.text());
}

/// A batch's length is checked before any of its hashes is resolved: a long batch of
/// hashes is refused as too long, and no stored text is copied for it (a 1 MiB body of
/// hashes once became a quarter of a GiB of copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_of_hashes_is_refused_before_any_is_resolved() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    let hash = sha256(CATALOGUE);
    let batch: Vec<Value> = (0..500)
        .map(|_| json!({ "extensions": extension(&hash) }))
        .collect();
    let response = c
        .send_built(requests::json("POST", "/graphql", &json!(batch), &[]))
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("a batch may hold at most"),
        "{}",
        response.text()
    );
}

/// A batch is counted before it is built: a 1 MiB body of half a million elements is
/// refused as too long without becoming half a million requests in memory. (The
/// elements here are not even requests: the count comes first, so the answer says the
/// batch is too long, not that an element is malformed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_half_a_million_elements_is_refused_as_too_long_before_it_is_built() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    let count = (1024 * 1024 - 2) / 2;
    let body = format!("[{}1]", "1,".repeat(count - 1));
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/graphql")
        .header("content-type", "application/json")
        .body(axum::body::Bytes::from(body))
        .unwrap();
    let response = c.send_built(request).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains(&format!(
            "a batch may hold at most 10 operations, not {count}"
        )),
        "{}",
        response.text()
    );
}

//! Generated and mutated requests against every GraphQL and REST entry point: each is
//! answered with a 4xx or a GraphQL error that has a code; never a 5xx, never a leak,
//! and the replica keeps serving. Inputs come from a seeded generator, so a failure
//! names a reproducible case. The same promise is checked from outside, by
//! schemathesis against a real replica: `tests/fuzz/run.sh`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

use crate::helpers::*;

/// How many generated cases each family gets.
const CASES: usize = 48;

/// What no answer may contain.
const LEAKS: [&str; 8] = [
    "sqlx",
    "SQLITE_",
    "select ",
    "panicked",
    "RUST_BACKTRACE",
    "src/",
    "Error {",
    "database is locked",
];

struct Fuzzer {
    app: TestApp,
    anonymous: Client,
    partner: Client,
    runner: TestRunner,
    sent: usize,
}

impl Fuzzer {
    async fn new() -> Self {
        let app = TestApp::new(Engine::Sqlite).await;
        let mut partner = app.partner("fuzzed").await;
        partner.create_product("Nasi Goreng", 10).await;
        Self {
            anonymous: app.client(),
            partner,
            app,
            // A fixed seed: every run sends the same cases, so a failure reproduces.
            runner: TestRunner::deterministic(),
            sent: 0,
        }
    }

    fn sample<T: std::fmt::Debug>(&mut self, strategy: impl Strategy<Value = T>) -> T {
        strategy
            .new_tree(&mut self.runner)
            .expect("a generated value")
            .current()
    }

    /// Sends `request` as both clients and checks each answer.
    async fn send(&mut self, make: impl Fn() -> Request<Body>, case: &str) {
        for client in [&mut self.anonymous, &mut self.partner] {
            let response = client.send(make()).await;
            check(&response, case);
        }
        self.sent += 2;
    }

    async fn graphql(&mut self, content_type: &str, body: Vec<u8>, case: &str) {
        let content_type = content_type.to_owned();
        self.send(
            || {
                Request::post("/graphql")
                    .header(header::CONTENT_TYPE, &content_type)
                    .header("x-requested-with", "fuzz")
                    .body(Body::from(body.clone()))
                    .expect("request")
            },
            case,
        )
        .await;
    }

    async fn rest(&mut self, method: &str, uri: &str, content_type: &str, body: Vec<u8>) {
        let case = format!("{method} {uri} ({content_type}): {}", preview(&body));
        let (method, uri, content_type) =
            (method.to_owned(), uri.to_owned(), content_type.to_owned());
        self.send(
            || {
                Request::builder()
                    .method(method.as_str())
                    .uri(uri.as_str())
                    .header(header::CONTENT_TYPE, &content_type)
                    .header("x-requested-with", "fuzz")
                    .body(Body::from(body.clone()))
                    .expect("request")
            },
            &case,
        )
        .await;
    }
}

fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

fn check(response: &HttpResponse, case: &str) {
    assert!(
        response.status < StatusCode::INTERNAL_SERVER_ERROR,
        "{} for {case}: {}",
        response.status,
        response.text()
    );
    let text = response.text();
    for leak in LEAKS {
        assert!(!text.contains(leak), "{leak:?} leaked for {case}: {text}");
    }
    if let Ok(body) = serde_json::from_slice::<Value>(&response.body) {
        let errors = body.get("errors").and_then(Value::as_array).cloned();
        for error in errors.unwrap_or_default() {
            assert!(
                error["extensions"]["code"].is_string(),
                "an error without a code for {case}: {error}"
            );
        }
    }
}

/// Valid requests the mutators start from: every operation of the schema a partner
/// uses, with variables.
fn graphql_seeds() -> Vec<Value> {
    let product = json!({ "name": "Es Teh", "price": 3000, "quantity": 5, "category": "minuman", "description": "dingin" });
    vec![
        json!({ "query": "{ me { id username } }" }),
        json!({ "query": "query($f: Int, $a: String) { products(first: $f, after: $a, orderBy: {field: PRICE, direction: DESC}) { totalCount edges { cursor node { id name price owner { username } stockMovements(first: 3) { nodes { delta } } } } pageInfo { hasNextPage endCursor } } }", "variables": { "f": 5, "a": null } }),
        json!({ "query": "query($id: ID!) { product(id: $id) { id name quantity version isLowStock imageUrl } }", "variables": { "id": "1" } }),
        json!({ "query": "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }", "variables": { "i": product } }),
        json!({ "query": "mutation($id: ID!, $i: UpdateProductInput!, $v: Int) { updateProduct(id: $id, input: $i, expectedVersion: $v) { id version } }", "variables": { "id": "1", "i": { "name": "Teh", "price": 2500, "lowStockThreshold": 3 }, "v": 1 } }),
        json!({ "query": "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { product { quantity } replayed } }", "variables": { "i": { "productId": "1", "delta": -1, "reason": "SALE", "idempotencyKey": "k-1" } } }),
        json!({ "query": "mutation($i: SetStockInput!) { setStock(input: $i) { product { quantity } } }", "variables": { "i": { "productId": "1", "quantity": 7 } } }),
        json!({ "query": "mutation($id: ID!) { deleteProduct(id: $id) { id } }", "variables": { "id": "999" } }),
        json!({ "query": documents::LOGIN, "variables": { "u": "nobody", "p": "wrong password" } }),
        json!({ "query": documents::CREATE_API_TOKEN, "variables": { "n": "till" } }),
        json!({ "query": "query($id: ID!, $a: String) { stockMovements(productId: $id, first: 2, after: $a) { edges { cursor } } }", "variables": { "id": "1", "a": "bm9wZQ" } }),
    ]
}

/// Replaces one value somewhere in `value` with another of a different type.
fn swap_type(value: &mut Value, path_choice: usize, replacement: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(path_choice % map.len())
                .cloned()
                .unwrap_or_default();
            let child = map.get_mut(&key).expect("present");
            if path_choice.is_multiple_of(3) || !(child.is_object() || child.is_array()) {
                *child = replacement.clone();
            } else {
                swap_type(child, path_choice / 3, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            swap_type(&mut items[path_choice % n], path_choice / 2, replacement);
        }
        other => *other = replacement.clone(),
    }
}

fn odd_values() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(u64::MAX)),
        "\\PC{0,40}".prop_map(Value::from),
        Just(Value::from("9".repeat(400))),
        Just(Value::from("x".repeat(100_000))),
        Just(json!([1, [2, [3, [4]]]])),
        Just(json!({ "nested": { "deeper": {} } })),
        Just(Value::Array(vec![json!(1); 20_000])),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_and_mutated_graphql_is_never_answered_with_a_5xx() {
    let mut f = Fuzzer::new().await;
    let seeds = graphql_seeds();

    // The seeds are valid operations: they may fail on data (an error with a path),
    // never on parsing or validation (an error without one).
    for seed in &seeds {
        let query = seed["query"].as_str().unwrap();
        let response = f.partner.gql(query, seed["variables"].clone()).await;
        let errors = response["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors.iter().all(|e| e.get("path").is_some()),
            "seed {seed}: {response}"
        );
    }

    // Wrong JSON types anywhere in a valid request.
    for i in 0..CASES * 2 {
        let mut body = seeds[i % seeds.len()].clone();
        let (choice, replacement) = f.sample((any::<usize>(), odd_values()));
        swap_type(&mut body, choice, &replacement);
        let bytes = body.to_string().into_bytes();
        let case = format!("type swap: {}", preview(&bytes));
        f.graphql("application/json", bytes, &case).await;
    }

    // Byte-level damage: flips, insertions, deletions, truncation, invalid UTF-8.
    for i in 0..CASES * 2 {
        let mut bytes = seeds[i % seeds.len()].to_string().into_bytes();
        let edits = f.sample(proptest::collection::vec(
            (0..4u8, any::<usize>(), any::<u8>()),
            1..6,
        ));
        for (kind, at, byte) in edits {
            let at = at % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] ^= byte | 1,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        let case = format!("byte damage: {}", preview(&bytes));
        f.graphql("application/json", bytes, &case).await;
    }

    // Shapes meant to exhaust: depth, width, aliases, fragments, lists, numbers.
    let deep = |n: usize| {
        let mut q = String::from("{ products(first: 1) { nodes { id ");
        for _ in 0..n {
            q.push_str("owner { products(first: 1) { nodes { id ");
        }
        q.push_str(&"} } ".repeat(n));
        q.push_str("} } }");
        q
    };
    let aliases = |n: usize| {
        let fields: String = (0..n)
            .map(|i| format!("a{i}: products(first: 100) {{ nodes {{ id name }} }} "))
            .collect();
        format!("{{ {fields} }}")
    };
    let mut shapes = vec![
        deep(3),
        deep(40),
        deep(400),
        aliases(50),
        aliases(3000),
        format!("{{ {} }}", "me { id } ".repeat(20_000)),
        "fragment A on Query { ...B } fragment B on Query { ...A } { ...A }".to_owned(),
        "query { products(first: 2147483647) { totalCount } }".to_owned(),
        "query { products(first: -1) { totalCount } }".to_owned(),
        "query { products(first: 99999999999999999999999) { totalCount } }".to_owned(),
        "query { product(id: \"99999999999999999999999\") { id } }".to_owned(),
        "query { product(id: \"-1\") { id } }".to_owned(),
        format!("query {{ product(id: \"{}\") {{ id }} }}", "1".repeat(10_000)),
        format!("{{ me {} {{ id }} }}", "@skip(if: false) ".repeat(5000)),
        "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }".to_owned(),
        "subscription { stockChanged { quantity } }".to_owned(),
        "mutation { adjustStock(input: {productId: \"1\", delta: 99999999999999999999}) { replayed } }".to_owned(),
        "mutation { createProduct(input: {name: \"x\", price: 1.5, category: \"y\"}) { id } }".to_owned(),
        "{".repeat(10_000),
        "\u{0}".to_owned(),
        String::new(),
    ];
    for _ in 0..CASES {
        shapes.push(f.sample("[{}a-z :(),\"$@!.]{0,200}"));
    }
    for query in shapes {
        let bytes = json!({ "query": query }).to_string().into_bytes();
        let case = format!("shape: {}", preview(&bytes));
        f.graphql("application/json", bytes, &case).await;
    }

    // Huge variable lists and batches.
    let big_list = json!({ "query": "query($id: ID!) { product(id: $id) { id } }", "variables": { "id": vec!["1"; 50_000] } });
    let batch = Value::Array(vec![json!({ "query": "{ me { id } }" }); 500]);
    for body in [
        big_list,
        batch,
        json!([]),
        json!([[]]),
        json!({}),
        json!(null),
        json!("query"),
    ] {
        let bytes = body.to_string().into_bytes();
        let case = format!("lists: {}", preview(&bytes));
        f.graphql("application/json", bytes, &case).await;
    }

    // Multipart oddities (the upload spec).
    let boundary = "XyZ";
    let part = |name: &str, extra: &str, content: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{extra}\r\n\r\n{content}\r\n")
    };
    let ops = r#"{"query":"mutation($f: Upload!) { replaceProductImage(productId: \"1\", image: $f) { id } }","variables":{"f":null}}"#;
    let multiparts = vec![
        format!("{}--{boundary}--\r\n", part("operations", "", ops)),
        format!(
            "{}{}--{boundary}--\r\n",
            part("operations", "", ops),
            part("map", "", r#"{"0":["variables.f"]}"#)
        ),
        format!(
            "{}{}{}--{boundary}--\r\n",
            part("operations", "", ops),
            part("map", "", r#"{"0":["variables.nope.deeper"]}"#),
            part("0", "; filename=\"a.png\"", "not a png")
        ),
        format!(
            "{}{}",
            part("operations", "", ops),
            part("map", "", "not json")
        ),
        format!(
            "{}{}{}--{boundary}--\r\n",
            part("operations", "", ops),
            part("map", "", r#"{"0":["variables.f"],"1":["variables.f"]}"#),
            part("0", "; filename=\"a.png\"", "x")
        ),
        format!("--{boundary}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{boundary}--\r\n"),
        format!("--{boundary}\r\n\r\n"),
        "garbage without boundaries".to_owned(),
        format!("{}--{boundary}--\r\n", part(&"n".repeat(70_000), "", "x")),
    ];
    for body in multiparts {
        let case = format!("multipart: {}", preview(body.as_bytes()));
        f.graphql(
            &format!("multipart/form-data; boundary={boundary}"),
            body.into_bytes(),
            &case,
        )
        .await;
    }
    for content_type in [
        "multipart/form-data",
        "application/json; charset=latin1",
        "application/graphql",
        "application/json\u{0}",
    ] {
        let case = format!("content type {content_type:?}");
        let content_type = content_type.replace('\u{0}', "");
        f.graphql(&content_type, b"{}".to_vec(), &case).await;
    }

    assert_still_serving(&mut f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_and_mutated_rest_requests_are_never_answered_with_a_5xx() {
    let mut f = Fuzzer::new().await;
    let product = json!({ "name": "Es Teh", "description": "dingin", "price": "3000", "quantity": 5, "category": "minuman", "image": "" });
    let seeds: Vec<(&str, &str, Value)> = vec![
        (
            "POST",
            "/ecanteen/join",
            json!({ "username": "someone", "password": "correct horse battery" }),
        ),
        (
            "POST",
            "/ecanteen/login",
            json!({ "username": "fuzzed", "password": "wrong" }),
        ),
        ("POST", "/ecanteen/product", product.clone()),
        ("PUT", "/ecanteen/product/1", product.clone()),
        (
            "PUT",
            "/ecanteen/product",
            json!({ "id": 1, "name": "Teh", "before": { "quantity": 10 } }),
        ),
        (
            "POST",
            "/ecanteen/product/1/stock",
            json!({ "delta": -1, "reason": "sale" }),
        ),
        ("POST", "/ecanteen/tokens", json!({ "name": "till" })),
    ];
    let paths = [
        "/ecanteen/product",
        "/ecanteen/product/1",
        "/ecanteen/product/99999999999999999999999",
        "/ecanteen/product/-1",
        "/ecanteen/product/%FF%FE",
        "/ecanteen/product/1/stock",
        "/ecanteen/product/1/image",
        "/ecanteen/product?page=99999999999999&per_page=-5&category=%00",
        "/ecanteen/product?owner=abc&q=%25%5F%5C",
        "/ecanteen/tokens/abc",
        "/ecanteen/tokens/99999999999999999999",
        "/ecanteen/logout",
        "/ecanteen/openapi.json",
        "/images/..%2F..%2Fetc%2Fpasswd",
        "/images/zz.png",
        "/ecanteen/%E0%A4%A",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];

    // Wrong JSON types in every write.
    for i in 0..CASES * 3 {
        let (method, uri, seed) = &seeds[i % seeds.len()];
        let mut body = seed.clone();
        let (choice, replacement) = f.sample((any::<usize>(), odd_values()));
        swap_type(&mut body, choice, &replacement);
        f.rest(
            method,
            uri,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
    }
    // Byte-level damage.
    for i in 0..CASES * 2 {
        let (method, uri, seed) = &seeds[i % seeds.len()];
        let mut bytes = seed.to_string().into_bytes();
        let (at, byte, cut) = f.sample((any::<usize>(), any::<u8>(), any::<bool>()));
        let at = at % bytes.len();
        bytes[at] = byte;
        if cut {
            bytes.truncate(at);
        }
        f.rest(method, uri, "application/json", bytes).await;
    }
    // Every path with every method, and odd bodies and content types.
    for path in paths {
        for method in methods {
            f.rest(method, path, "application/json", b"{\"name\":".to_vec())
                .await;
        }
    }
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("application/x-www-form-urlencoded", b"username=%FF&password=%".to_vec()),
        ("application/x-www-form-urlencoded", b"username=a&username=b&password=".to_vec()),
        ("multipart/form-data; boundary=B", b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\nnot a picture\r\n--B--\r\n".to_vec()),
        ("multipart/form-data; boundary=B", b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n".to_vec()),
        ("multipart/form-data", b"--B--".to_vec()),
        ("text/plain", b"hello".to_vec()),
        ("application/json", vec![0xff, 0xfe, 0x00, 0x7b]),
        ("application/json", format!("{{\"image\":\"data:image/png;base64,{}\"}}", "A".repeat(10_001)).into_bytes()),
        ("application/json", b"{\"image\":\"data:image/png;base64,====\"}".to_vec()),
        ("application/json", b"{\"image\":\"data:;base64,\"}".to_vec()),
    ];
    for (content_type, body) in forms {
        for (method, uri) in [
            ("POST", "/ecanteen/join"),
            ("POST", "/ecanteen/login"),
            ("POST", "/ecanteen/product"),
            ("PUT", "/ecanteen/product/1"),
            ("PUT", "/ecanteen/product/1/image"),
        ] {
            f.rest(method, uri, content_type, body.clone()).await;
        }
    }
    assert_still_serving(&mut f).await;
}

async fn assert_still_serving(f: &mut Fuzzer) {
    assert!(f.sent > 200, "only {} requests were sent", f.sent);
    let health = f.anonymous.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    // (The fuzzed partner may have been logged out or throttled by the cases.)
    let mut fresh = f.app.partner("afterwards").await;
    let data = fresh.ok("{ me { username } }", json!({})).await;
    assert_eq!(data["me"]["username"], "afterwards");
}

//! One table of rules × transports × credentials: every rule holds at every door.
//!
//! A rule is one row: the request that exercises it over REST, over GraphQL (sent over
//! HTTP, and over a WebSocket), and the outcome each credential must get. The runner
//! sends every row through every transport with every credential, and compares codes.
//! Adding a rule is one row; adding a transport is one arm of [`Transport`].
//!
//! A WebSocket carries subscriptions only: a query or mutation over it is refused with
//! `BAD_USER_INPUT` whoever sends it, and a socket opens only with a valid credential
//! (a revoked token or an expired session is refused at `connection_init`, which counts
//! as `UNAUTHENTICATED`).

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::live::{connect, send, serve_with, Ws};

/// Who sends the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    /// The owner's cookie session.
    Session,
    /// The owner's API token.
    Token,
    /// The owner's API token, revoked.
    Revoked,
    /// The owner's cookie session, expired.
    Expired,
    /// Another partner's session.
    Other,
}

const CREDS: [Cred; 5] = [
    Cred::Session,
    Cred::Token,
    Cred::Revoked,
    Cred::Other,
    Cred::Expired,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Rest,
    GraphqlHttp,
    GraphqlWs,
}

/// One rule. `expect` gives the code each credential gets ("OK" for success); `check`
/// must hold of every successful answer's body.
struct Row {
    rule: &'static str,
    rest: Option<(&'static str, String, Option<Value>)>,
    graphql: Option<(String, Value)>,
    expect: fn(Cred) -> &'static str,
    check: fn(&Value) -> bool,
}

fn owner_only(cred: Cred) -> &'static str {
    match cred {
        Cred::Session | Cred::Token => "OK",
        Cred::Other => "FORBIDDEN",
        Cred::Revoked | Cred::Expired => "UNAUTHENTICATED",
    }
}

fn sessions_only(cred: Cred) -> &'static str {
    match cred {
        Cred::Session | Cred::Other => "OK",
        Cred::Token => "FORBIDDEN",
        Cred::Revoked | Cred::Expired => "UNAUTHENTICATED",
    }
}

/// A public read: anyone, even with an expired session (it reads as anonymous), but a
/// bearer token that is sent must be valid.
fn public_read(cred: Cred) -> &'static str {
    match cred {
        Cred::Revoked => "UNAUTHENTICATED",
        _ => "OK",
    }
}

fn any_body(_: &Value) -> bool {
    true
}

fn rows(product: &str, owner: &str) -> Vec<Row> {
    vec![
        Row {
            rule: "API tokens cannot manage API tokens",
            rest: Some(("POST", "/ecanteen/tokens".into(), Some(json!({"name": "parity"})))),
            graphql: Some(("mutation { createApiToken(name: \"parity\") { token } }".into(), json!({}))),
            expect: sessions_only,
            check: any_body,
        },
        Row {
            rule: "only the owner changes a product's stock",
            rest: Some(("POST", format!("/ecanteen/product/{product}/stock"), Some(json!({"delta": -1})))),
            graphql: Some((
                "mutation($p: ID!) { adjustStock(input: {productId: $p, delta: -1}) { movement { reason } } }".into(),
                json!({"p": product}),
            )),
            expect: owner_only,
            check: any_body,
        },
        Row {
            rule: "only the owner edits a product",
            rest: Some(("PUT", format!("/ecanteen/product/{product}"), Some(json!({"desc": "parity"})))),
            graphql: Some((
                "mutation($p: ID!) { updateProduct(id: $p, input: {description: \"parity\"}) { id } }".into(),
                json!({"p": product}),
            )),
            expect: owner_only,
            check: any_body,
        },
        Row {
            rule: "only the owner reads a product's ledger",
            rest: None,
            graphql: Some((
                "query($p: ID!) { stockMovements(productId: $p, first: 1) { edges { node { delta } } } }".into(),
                json!({"p": product}),
            )),
            expect: owner_only,
            check: any_body,
        },
        Row {
            rule: "low-stock alerts are only the owner's",
            rest: None,
            graphql: Some((
                "subscription($o: ID) { lowStock(ownerId: $o) { quantity } }".into(),
                json!({"o": owner}),
            )),
            expect: owner_only,
            check: any_body,
        },
        Row {
            rule: "a filter on a partner nobody is matches nothing",
            rest: Some(("GET", "/ecanteen/product?user_id=nobody_at_all".into(), None)),
            graphql: Some((
                "{ products(filter: {ownerUsername: \"nobody_at_all\"}) { totalCount nodes { id } } }".into(),
                json!({}),
            )),
            expect: public_read,
            check: |body| match body {
                Value::Array(items) => items.is_empty(),
                other => other["data"]["products"] == json!({"totalCount": 0, "nodes": []}),
            },
        },
    ]
}

/// The code of a REST or GraphQL-over-HTTP answer ("OK" when it succeeded), and its body.
fn code_of(status: u16, body: &Value) -> String {
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        return code.to_owned();
    }
    // REST's envelope (the contract's).
    if let Some(code) = body["error"]["code"].as_str() {
        return code.to_owned();
    }
    if (200..300).contains(&status) {
        "OK".to_owned()
    } else {
        format!("HTTP {status}")
    }
}

/// Sends a GraphQL document over a fresh socket with `cred`'s credential: the code of
/// its first answer, "OK" for data, or for a subscription that is quietly running.
async fn over_websocket(
    addr: std::net::SocketAddr,
    client: &Client,
    query: &str,
    variables: &Value,
) -> String {
    let mut ws: Ws = connect(addr, "graphql-transport-ws", client.cookie.as_deref()).await;
    let payload = match &client.bearer {
        Some(token) => json!({"token": token}),
        None => json!({}),
    };
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    match next_message(&mut ws).await {
        Some(m) if m["type"] == "connection_ack" => {}
        _ => return "UNAUTHENTICATED".to_owned(),
    }
    send(&mut ws, json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})).await;
    match next_message(&mut ws).await {
        None => "OK".to_owned(),
        Some(m) if m["type"] == "error" => m["payload"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("?")
            .to_owned(),
        Some(m) => code_of(200, &m["payload"]),
    }
}

/// The next JSON message within a short wait, keep-alives skipped; `None` when nothing
/// came (or the socket closed).
async fn next_message(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_millis(700), ws.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).ok()?;
            if !matches!(value["type"].as_str(), Some("ka" | "ping" | "pong")) {
                return Some(value);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_holds_on_every_transport_for_every_credential() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let addr = serve_with(&db, |_| {}).await;
    let app = TestApp::on(db.clone(), |_| {}).await;
    let mut owner = app.partner("parity_owner").await;
    let owner_id = owner.ok("{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let product = owner.create_product("Tempe", 1000).await;
    let token = owner.api_token("parity").await;
    let revoked = owner
        .ok(
            "mutation { createApiToken(name: \"revoked\") { token apiToken { id } } }",
            json!({}),
        )
        .await;
    owner
        .ok(
            "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            json!({"id": revoked["createApiToken"]["apiToken"]["id"]}),
        )
        .await;
    let other = app.partner("parity_other").await;
    let client_for = |cred: Cred| {
        let mut c = app.client();
        match cred {
            Cred::Session | Cred::Expired => c.cookie = owner.cookie.clone(),
            Cred::Token => c.bearer = Some(token.clone()),
            Cred::Revoked => {
                c.bearer = revoked["createApiToken"]["token"]
                    .as_str()
                    .map(str::to_owned)
            }
            Cred::Other => c.cookie = other.cookie.clone(),
        }
        c
    };
    let rows = rows(&product, &owner_id);
    let mut failures = Vec::new();
    for cred in CREDS {
        if cred == Cred::Expired {
            // Last: it ends every session.
            app.expire_sessions().await;
        }
        for row in &rows {
            for transport in [
                Transport::Rest,
                Transport::GraphqlHttp,
                Transport::GraphqlWs,
            ] {
                let mut client = client_for(cred);
                let (got, body) = match (transport, &row.rest, &row.graphql) {
                    (Transport::Rest, Some((method, path, body)), _) => {
                        let r = client.rest(method, path, body.clone(), &[]).await;
                        let json: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                        (code_of(r.status.as_u16(), &json), json)
                    }
                    (Transport::GraphqlHttp, _, Some((query, vars)))
                        if !query.starts_with("subscription") =>
                    {
                        let json = client.gql(query, vars.clone()).await;
                        (code_of(200, &json), json)
                    }
                    (Transport::GraphqlWs, _, Some((query, vars))) => (
                        over_websocket(addr, &client, query, vars).await,
                        Value::Null,
                    ),
                    _ => continue,
                };
                let is_operation = row
                    .graphql
                    .as_ref()
                    .is_some_and(|(q, _)| !q.starts_with("subscription"));
                let want = match transport {
                    // A socket opens only with a valid credential, and then carries
                    // subscriptions only.
                    Transport::GraphqlWs if matches!(cred, Cred::Revoked | Cred::Expired) => {
                        "UNAUTHENTICATED"
                    }
                    Transport::GraphqlWs if is_operation => "BAD_USER_INPUT",
                    _ => (row.expect)(cred),
                };
                let checked = got != "OK" || body.is_null() || (row.check)(&body);
                if got != want || !checked {
                    failures.push(format!(
                        "{}: {cred:?} over {transport:?}: got {got}, want {want}; {body}",
                        row.rule
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

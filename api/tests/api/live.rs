//! Live updates: subscriptions fed by the change feeds, across replicas.

use std::time::{Duration, Instant};

use async_graphql::{Request, Response, Variables};
use ecanteen_api::graphql::{request_data, RequestAuth};
use ecanteen_api::service::{Actor, AuthMethod};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

pub(crate) const STOCK: &str = "subscription($p: ID, $o: ID, $a: ID) {
    stockChanged(productId: $p, ownerId: $o, afterId: $a) { id productId delta quantity reason movement { id note } } }";

pub(crate) async fn user_id(c: &mut Client) -> i64 {
    c.ok("{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Subscribes in-process on `app` as `user_id`, and waits until the subscription is
/// registered with the replica's event hub.
pub(crate) async fn subscribe(
    app: &TestApp,
    user_id: i64,
    query: &str,
    variables: Value,
) -> impl Stream<Item = Response> + Unpin {
    let mut stream = subscription(app, user_id, query, variables);
    // The first poll runs the resolver, which subscribes; nothing is there to yield yet.
    let first = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(first.is_err(), "unexpected early event: {first:?}");
    stream
}

/// A subscription stream, not yet polled.
pub(crate) fn subscription(
    app: &TestApp,
    user_id: i64,
    query: &str,
    variables: Value,
) -> impl Stream<Item = Response> + Unpin {
    let (auth, loader) = request_data(
        &app.state.service,
        RequestAuth {
            actor: Some(Actor {
                user_id,
                method: AuthMethod::Session,
            }),
            session: None,
        },
    );
    let request = Request::new(query)
        .variables(Variables::from_json(variables))
        .data(auth)
        .data(loader);
    Box::pin(app.state.schema.execute_stream(request))
}

pub(crate) async fn next_event(
    stream: &mut (impl Stream<Item = Response> + Unpin),
    within: Duration,
) -> Value {
    let response = tokio::time::timeout(within, stream.next())
        .await
        .expect("no event in time")
        .expect("stream ended");
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    response.data.into_json().unwrap()
}

pub(crate) async fn assert_quiet(stream: &mut (impl Stream<Item = Response> + Unpin)) {
    let extra = tokio::time::timeout(Duration::from_millis(600), stream.next()).await;
    assert!(extra.is_err(), "unexpected extra event: {extra:?}");
}

dual_tests! {
    async fn stock_changes_on_one_replica_reach_subscribers_on_another_within_a_second(app) {
        let other = app.sibling().await;
        let mut seller = app.partner("live_seller").await;
        let id = seller.create_product("Martabak", 10).await;
        // The owner, who is sent every change (another partner only the newest).
        let watcher_id = user_id(&mut seller).await;
        let mut events = subscribe(&other, watcher_id, STOCK, json!({"p": id})).await;

        let mut sent_at = Vec::new();
        for delta in [-1, -2, 3, -4, 1] {
            let r = seller.adjust(&id, delta).await;
            assert!(r.get("errors").is_none(), "{r}");
            sent_at.push(Instant::now());
        }
        let mut last_id = 0;
        let mut quantities = Vec::new();
        for sent in sent_at {
            let event = next_event(&mut events, Duration::from_secs(1)).await["stockChanged"].clone();
            assert!(sent.elapsed() < Duration::from_secs(1), "arrived {:?} after the change", sent.elapsed());
            let event_id: i64 = event["id"].as_str().unwrap().parse().unwrap();
            assert!(event_id > last_id, "in ledger order");
            last_id = event_id;
            assert_eq!(event["productId"], id);
            assert!(event["movement"]["id"].is_string(), "the owner sees the ledger row");
            quantities.push(event["quantity"].as_i64().unwrap());
        }
        assert_eq!(quantities, [9, 7, 10, 6, 7]);
        assert_quiet(&mut events).await;
    }

    async fn reconnecting_with_the_last_seen_id_replays_what_was_missed(app) {
        let mut seller = app.partner("replayer").await;
        let owner = user_id(&mut seller).await;
        let id = seller.create_product("Klepon", 10).await;
        let first = seller.adjust(&id, -1).await;
        let seen: i64 = first["data"]["adjustStock"]["movement"]["id"].as_str().unwrap().parse().unwrap();
        // Missed while disconnected:
        seller.adjust(&id, -2).await;
        seller.adjust(&id, -3).await;
        let mut events = subscription(&app, owner, STOCK, json!({"o": owner.to_string(), "a": seen.to_string()}));
        let a = next_event(&mut events, Duration::from_secs(1)).await["stockChanged"].clone();
        let b = next_event(&mut events, Duration::from_secs(1)).await["stockChanged"].clone();
        assert_eq!((a["delta"].as_i64(), b["delta"].as_i64()), (Some(-2), Some(-3)));
        assert!(a["movement"]["id"].is_string(), "the owner sees the ledger row");
        // Then live, without duplicates.
        seller.adjust(&id, 5).await;
        let c = next_event(&mut events, Duration::from_secs(1)).await["stockChanged"].clone();
        assert_eq!(c["quantity"], 9);
        assert_quiet(&mut events).await;
    }

    async fn another_partner_sees_the_catalogue_not_the_sales_history(app) {
        let mut seller = app.partner("history_owner").await;
        let owner = user_id(&mut seller).await;
        let kept = seller.create_product("Lemper", 10).await;
        let gone = seller.create_product("Lumpia", 10).await;
        seller.adjust(&kept, -3).await;
        seller.adjust(&kept, -2).await;
        seller.adjust(&gone, -4).await;
        seller.ok("mutation($id: ID!) { deleteProduct(id: $id) { id } }", json!({"id": gone})).await;
        let rival = user_id(&mut app.partner("history_rival").await).await;
        const EVENT: &str = "subscription($o: ID, $a: ID) { stockChanged(ownerId: $o, afterId: $a) {
            productId delta quantity inStock reason createdAt movement { id } product { id } } }";
        let from_start = json!({"o": owner.to_string(), "a": "0"});

        // Another partner replays from the start: the kept product's stock now, once,
        // and nothing of the deleted one.
        let mut theirs = subscription(&app, rival, EVENT, from_start.clone());
        let only = next_event(&mut theirs, Duration::from_secs(1)).await["stockChanged"].clone();
        assert_eq!(only, json!({"productId": kept, "delta": null, "quantity": 5, "inStock": true,
            "reason": null, "createdAt": null, "movement": null, "product": {"id": kept}}));
        assert_quiet(&mut theirs).await;
        // Live: the stock after the change, not the change.
        seller.adjust(&kept, -5).await;
        let live = next_event(&mut theirs, Duration::from_secs(1)).await["stockChanged"].clone();
        assert_eq!(
            (&live["quantity"], &live["inStock"], &live["delta"], &live["reason"], &live["createdAt"]),
            (&json!(0), &json!(false), &json!(null), &json!(null), &json!(null))
        );

        // The owner replays every change, with what it was.
        let mut mine = subscription(&app, owner, EVENT, from_start);
        let mut changes = Vec::new();
        for _ in 0..6 {
            let e = next_event(&mut mine, Duration::from_secs(1)).await["stockChanged"].clone();
            assert!(e["movement"]["id"].is_string() && e["createdAt"].is_string(), "{e}");
            changes.push((e["productId"] == json!(kept), e["delta"].as_i64().unwrap()));
        }
        assert_eq!(changes, [(true, 10), (false, 10), (true, -3), (true, -2), (false, -4), (true, -5)]);
        assert_quiet(&mut mine).await;
    }

    async fn product_changes_are_announced(app) {
        let mut seller = app.partner("announcer").await;
        let owner = user_id(&mut seller).await;
        let mut events = subscribe(
            &app,
            owner,
            "subscription($o: ID) { productChanged(ownerId: $o) { id kind productId version product { name deletedAt } } }",
            json!({"o": owner.to_string()}),
        )
        .await;
        let id = seller.create_product("Onde", 1).await;
        seller.ok("mutation($id: ID!) { updateProduct(id: $id, input: {name: \"Onde-onde\"}) { id } }", json!({"id": id})).await;
        seller.ok("mutation($id: ID!) { deleteProduct(id: $id) { id } }", json!({"id": id})).await;
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let e = next_event(&mut events, Duration::from_secs(1)).await["productChanged"].clone();
            assert_eq!(e["productId"], id);
            kinds.push(e["kind"].as_str().unwrap().to_owned());
        }
        assert_eq!(kinds, ["CREATED", "UPDATED", "DELETED"]);
        assert_quiet(&mut events).await;
    }

    async fn low_stock_fires_when_the_threshold_is_crossed_or_stock_runs_out(app) {
        let mut seller = app.partner("alerted").await;
        let owner = user_id(&mut seller).await;
        let id = seller.create_product("Cilok", 10).await;
        seller.ok("mutation($id: ID!) { updateProduct(id: $id, input: {lowStockThreshold: 3}) { id } }", json!({"id": id})).await;
        let mut events = subscribe(&app, owner, "subscription { lowStock { productId quantity threshold outOfStock } }", json!({})).await;
        seller.adjust(&id, -5).await; // 5: above the threshold
        seller.adjust(&id, -2).await; // 3: crosses it
        seller.adjust(&id, -1).await; // 2: already low, no new alert
        seller.adjust(&id, -2).await; // 0: runs out
        let crossed = next_event(&mut events, Duration::from_secs(1)).await["lowStock"].clone();
        assert_eq!(crossed, json!({"productId": id, "quantity": 3, "threshold": 3, "outOfStock": false}));
        let out = next_event(&mut events, Duration::from_secs(1)).await["lowStock"].clone();
        assert_eq!(out["outOfStock"], true);
        assert_quiet(&mut events).await;
        // Someone else's alerts are not for you.
        let stranger = user_id(&mut app.partner("stranger").await).await;
        let (auth, loader) = request_data(&app.state.service, RequestAuth { actor: Some(Actor { user_id: stranger, method: AuthMethod::Session }), session: None });
        let request = Request::new(format!("subscription {{ lowStock(ownerId: \"{owner}\") {{ quantity }} }}")).data(auth).data(loader);
        let mut refused = Box::pin(app.state.schema.execute_stream(request));
        let response = refused.next().await.unwrap();
        assert_eq!(response.errors[0].extensions.as_ref().unwrap().get("code"), Some(&async_graphql::Value::from("FORBIDDEN")));
    }
}

/// Starts a real replica on a socket, on `db`.
async fn serve(db: &TestDb) -> std::net::SocketAddr {
    serve_with(db, |_| {}).await
}

/// Starts a real replica on a socket, on `db`, configured by `tweak`.
pub(crate) async fn serve_with(
    db: &TestDb,
    tweak: impl FnOnce(&mut ecanteen_api::config::Config),
) -> std::net::SocketAddr {
    let mut config = test_config(&db.url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    tweak(&mut config);
    let app = ecanteen_api::startup::Application::build(&config)
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The handshake request for `/graphql/ws` on `addr`, speaking `protocol`.
fn ws_request(
    addr: std::net::SocketAddr,
    protocol: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    request
}

pub(crate) async fn connect(
    addr: std::net::SocketAddr,
    protocol: &str,
    cookie: Option<&str>,
) -> Ws {
    let mut request = ws_request(addr, protocol);
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    ws
}

pub(crate) async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON message, or `None` when the server closed the connection.
pub(crate) async fn receive(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("nothing received")?;
        match message {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if matches!(value["type"].as_str(), Some("ka" | "ping" | "pong")) {
                    continue;
                }
                return Some(value);
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscriptions_speak_both_protocols_and_authenticate_at_init() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let addr = serve(&db).await;
    let app = TestApp::on(db.clone(), |_| {}).await;
    let mut seller = app.partner("ws_seller").await;
    let id = seller.create_product("Serabi", 10).await;
    let token = seller.api_token("ws").await;
    let query = format!(
        "subscription {{ stockChanged(productId: \"{id}\") {{ quantity movement {{ note }} }} }}"
    );

    // graphql-transport-ws, with a bearer token in the init payload.
    let mut modern = connect(addr, "graphql-transport-ws", None).await;
    send(
        &mut modern,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        receive(&mut modern).await.unwrap()["type"],
        "connection_ack"
    );
    send(
        &mut modern,
        json!({"id": "1", "type": "subscribe", "payload": {"query": query}}),
    )
    .await;

    // The legacy graphql-ws protocol, with the session cookie.
    let mut legacy = connect(addr, "graphql-ws", seller.cookie.as_deref()).await;
    send(
        &mut legacy,
        json!({"type": "connection_init", "payload": {}}),
    )
    .await;
    assert_eq!(
        receive(&mut legacy).await.unwrap()["type"],
        "connection_ack"
    );
    send(
        &mut legacy,
        json!({"id": "1", "type": "start", "payload": {"query": query}}),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    seller.ok(
        "mutation($id: ID!) { adjustStock(input: {productId: $id, delta: -1, note: \"ws\"}) { replayed } }",
        json!({"id": id}),
    ).await;
    let event = receive(&mut modern).await.unwrap();
    assert_eq!(event["type"], "next");
    assert_eq!(
        event["payload"]["data"]["stockChanged"],
        json!({"quantity": 9, "movement": {"note": "ws"}})
    );
    let event = receive(&mut legacy).await.unwrap();
    assert_eq!(event["type"], "data");
    assert_eq!(event["payload"]["data"]["stockChanged"]["quantity"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_without_credentials_are_refused_at_init() {
    let db = TestDb::new(Engine::Sqlite).await;
    let addr = serve(&db).await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = connect(addr, protocol, None).await;
        send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
        match receive(&mut ws).await {
            None => {}
            Some(message) => {
                assert_eq!(message["type"], "connection_error", "{protocol}: {message}")
            }
        }
        let mut ws = connect(addr, protocol, None).await;
        send(
            &mut ws,
            json!({"type": "connection_init", "payload": {"token": "ect_forged"}}),
        )
        .await;
        match receive(&mut ws).await {
            None => {}
            Some(message) => {
                assert_eq!(message["type"], "connection_error", "{protocol}: {message}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_page_cannot_ride_the_session_cookie() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let addr = serve(&db).await;
    let app = TestApp::on(db.clone(), |_| {}).await;
    let seller = app.partner("hijack_target").await;
    let mut request = ws_request(addr, "graphql-transport-ws");
    request
        .headers_mut()
        .insert("cookie", seller.cookie.as_deref().unwrap().parse().unwrap());
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
    if let Some(message) = receive(&mut ws).await {
        assert_ne!(message["type"], "connection_ack", "{message}");
    }
}

/// Waits up to `within` for the server to close `ws`, passing over whatever else
/// arrives: the close code, or `Err` when the socket stayed open.
async fn close_code(ws: &mut Ws, within: Duration) -> Result<u16, &'static str> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("still open"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Ok(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Ok(None | Some(Err(_))) => return Err("dropped without a close frame"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Opens a graphql-transport-ws socket with `payload` (and `cookie`), expects the ack,
/// and starts a stock subscription on it.
async fn open_subscribed(addr: std::net::SocketAddr, payload: Value, cookie: Option<&str>) -> Ws {
    let mut ws = connect(addr, "graphql-transport-ws", cookie).await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    assert_eq!(receive(&mut ws).await.unwrap()["type"], "connection_ack");
    send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { stockChanged { quantity } }"}}),
    )
    .await;
    ws
}

/// The code of the error a subscribe message was answered with.
async fn refusal_code(ws: &mut Ws) -> String {
    let mut message = receive(ws).await.expect("an answer");
    // The end of an earlier refused operation.
    while message["type"] == "complete" {
        message = receive(ws).await.expect("an answer");
    }
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        _ => message["payload"]["errors"].clone(),
    };
    errors[0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {message}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_closes_once_its_credential_is_revoked_logged_out_or_expired() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let addr = serve_with(&db, |c| c.ws_recheck_ms = 200).await;
    // Revocations and logouts go through another replica: the socket's learns of them
    // from the database.
    let app = TestApp::on(db.clone(), |_| {}).await;
    let mut seller = app.partner("ws_revoked").await;
    let minted = seller
        .ok(
            "mutation { createApiToken(name: \"till\") { token apiToken { id } } }",
            json!({}),
        )
        .await;
    let (token_id, token) = (
        minted["createApiToken"]["apiToken"]["id"].clone(),
        minted["createApiToken"]["token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let spare = seller.api_token("spare").await;
    let mut revoked = open_subscribed(addr, json!({"token": token}), None).await;
    let mut kept = open_subscribed(addr, json!({"token": spare}), None).await;
    let mut logged_out = open_subscribed(addr, json!({}), seller.cookie.as_deref()).await;
    let other = app.partner("ws_expired").await;
    let mut expired = open_subscribed(addr, json!({}), other.cookie.as_deref()).await;
    assert_eq!(
        close_code(&mut revoked, Duration::from_millis(500)).await,
        Err("still open")
    );

    seller
        .ok(
            "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            json!({"id": token_id}),
        )
        .await;
    assert_eq!(
        close_code(&mut revoked, Duration::from_secs(2)).await,
        Ok(4403)
    );
    seller.ok(documents::LOGOUT, json!({})).await;
    assert_eq!(
        close_code(&mut logged_out, Duration::from_secs(2)).await,
        Ok(4403)
    );
    app.expire_sessions().await;
    assert_eq!(
        close_code(&mut expired, Duration::from_secs(2)).await,
        Ok(4403)
    );
    // A credential still good keeps its socket.
    assert_eq!(
        close_code(&mut kept, Duration::from_millis(600)).await,
        Err("still open")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_a_websocket_checks_its_credential_and_only_subscriptions_run() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    // No periodic check within the test: what is tested is the check per operation.
    let addr = serve_with(&db, |c| c.ws_recheck_ms = 600_000).await;
    let app = TestApp::on(db.clone(), |_| {}).await;
    let mut seller = app.partner("ws_per_op").await;
    let product = seller.create_product("Dawet", 10).await;
    let minted = seller
        .ok(
            "mutation { createApiToken(name: \"till\") { token apiToken { id } } }",
            json!({}),
        )
        .await;
    let token = minted["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Queries and mutations are refused on a socket, whatever its credential: they
    // belong to HTTP, with its rate limits, timeout and credential per request.
    let mut ws = open_subscribed(addr, json!({"token": token}), None).await;
    send(&mut ws, json!({"id": "2", "type": "subscribe", "payload": {
        "query": "mutation($p: ID!) { adjustStock(input: {productId: $p, delta: -1}) { replayed } }",
        "variables": {"p": product}}})).await;
    assert_eq!(refusal_code(&mut ws).await, "BAD_USER_INPUT");
    send(
        &mut ws,
        json!({"id": "3", "type": "subscribe", "payload": {"query": "{ me { id } }"}}),
    )
    .await;
    assert_eq!(refusal_code(&mut ws).await, "BAD_USER_INPUT");
    assert_eq!(seller.quantity(&product).await, 10, "nothing was written");

    // Revoked, the token starts nothing more on the socket it opened.
    seller
        .ok(
            "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            json!({"id": minted["createApiToken"]["apiToken"]["id"]}),
        )
        .await;
    send(
        &mut ws,
        json!({"id": "4", "type": "subscribe", "payload": {
        "query": "subscription { stockChanged { quantity } }"}}),
    )
    .await;
    assert_eq!(refusal_code(&mut ws).await, "UNAUTHENTICATED");

    // The same for a session, once logged out.
    let mut cookie_ws = open_subscribed(addr, json!({}), seller.cookie.as_deref()).await;
    seller.ok(documents::LOGOUT, json!({})).await;
    send(
        &mut cookie_ws,
        json!({"id": "2", "type": "subscribe", "payload": {
        "query": "subscription { productChanged { id } }"}}),
    )
    .await;
    assert_eq!(refusal_code(&mut cookie_ws).await, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_dropped_not_buffered() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut seller = app.partner("flood").await;
    let owner = user_id(&mut seller).await;
    let id: i64 = seller.create_product("Air", 1).await.parse().unwrap();
    let mut events = subscribe(&app, owner, STOCK, json!({})).await;
    // Far more changes than a subscriber may fall behind, while it reads none of them.
    let mut tx = app.state.service.db().begin_write().await.unwrap();
    for n in 0..1500_i64 {
        tx.execute(&Sql::new("insert into stock_movements (product_id, actor_id, delta, quantity_after, reason, created_at)
                              values ($1, $2, 1, $3, 'RESTOCK', 0)").arg(id).arg(owner).arg(n + 2))
            .await.unwrap();
    }
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ended_with_error = false;
    while let Ok(Some(response)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await
    {
        if !response.errors.is_empty() {
            assert!(
                response.errors[0].message.contains("afterId"),
                "{:?}",
                response.errors
            );
            ended_with_error = true;
        }
    }
    assert!(
        ended_with_error,
        "the lagging subscription was closed with a way to resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_bounded_per_replica_per_connection_per_message_and_at_init() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let addr = serve_with(&db, |c| {
        c.max_websockets = 2;
        c.max_subscriptions_per_socket = 2;
        c.ws_init_timeout_ms = 300;
    })
    .await;
    let app = TestApp::on(db.clone(), |_| {}).await;
    let mut seller = app.partner("ws_bounded").await;
    let token = seller.api_token("ws").await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});

    // A client that never sends connection_init is closed at the init deadline, long
    // before the 30 s keep-alive would.
    let mut silent = connect(addr, "graphql-transport-ws", None).await;
    let started = Instant::now();
    assert!(
        receive(&mut silent).await.is_none(),
        "the silent socket was closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Two initialised sockets per replica: a third may upgrade (it waits for its init
    // in the pending pool), and its init is refused while the two are open.
    let mut first = connect(addr, "graphql-transport-ws", None).await;
    send(&mut first, init.clone()).await;
    assert_eq!(receive(&mut first).await.unwrap()["type"], "connection_ack");
    let mut second = connect(addr, "graphql-transport-ws", None).await;
    send(&mut second, init.clone()).await;
    assert_eq!(
        receive(&mut second).await.unwrap()["type"],
        "connection_ack"
    );
    let mut third = connect(addr, "graphql-transport-ws", None).await;
    send(&mut third, init.clone()).await;
    assert!(
        receive(&mut third).await.is_none(),
        "a third socket's init was refused and the socket closed"
    );

    // Two subscriptions per socket: a third is refused; once one completes, there is room.
    let sub = |id: &str| json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { productChanged { id } }"}});
    send(&mut first, sub("1")).await;
    send(&mut first, sub("2")).await;
    send(&mut first, sub("3")).await;
    // The server starts the three in an order of its own: whichever comes third is
    // refused.
    let refused = receive(&mut first).await.unwrap();
    let refused_id = refused["id"].as_str().unwrap().to_owned();
    let refused = refused.to_string();
    assert!(
        refused.contains("TOO_MANY_REQUESTS") && refused.contains("at most 2 subscriptions"),
        "{refused}"
    );
    let held = ["1", "2", "3"]
        .into_iter()
        .find(|id| *id != refused_id)
        .unwrap();
    send(&mut first, json!({"id": held, "type": "complete"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut first, sub("4")).await;
    let quiet = tokio::time::timeout(Duration::from_millis(300), first.next()).await;
    assert!(
        !matches!(&quiet, Ok(Some(Ok(Message::Text(t)))) if t.contains("\"4\"")),
        "the fourth subscription was refused: {quiet:?}"
    );

    // A message larger than 64 KiB closes the socket.
    send(
        &mut second,
        json!({"id": "9", "type": "subscribe", "payload": {"query": "x".repeat(70_000)}}),
    )
    .await;
    assert!(
        receive(&mut second).await.is_none(),
        "the oversized message closed the socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_bounded_and_says_where_to_resume() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut seller = app.partner("replayer").await;
    // Its initial stock is the ledger's first row: the replay starts after it.
    let product = seller.create_product("Onde-onde", 1).await;
    let me = user_id(&mut seller).await;
    let db = app.state.service.db();
    let first_row: i64 = db
        .scalar(&Sql::new("select max(id) from stock_movements"))
        .await
        .unwrap();
    let sql = Sql::new(
        "with recursive seq(i) as (select 1 union all select i + 1 from seq where i < 1200)
         insert into stock_movements (product_id, actor_id, delta, quantity_after, reason, created_at)
         select $1, $2, 1, i, 'RESTOCK', 0 from seq",
    )
    .arg(product.parse::<i64>().unwrap())
    .arg(me);
    db.execute(&sql).await.unwrap();
    let mut stream = subscription(
        &app,
        me,
        STOCK,
        json!({"p": product, "a": first_row.to_string()}),
    );
    let mut last = String::new();
    for _ in 0..ecanteen_api::graphql::live::MAX_REPLAY {
        let event = next_event(&mut stream, Duration::from_secs(5)).await;
        last = event["stockChanged"]["id"].as_str().unwrap().to_owned();
    }
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    let error = &end.errors[0];
    assert!(
        error.message.contains("replays at most 1000 events"),
        "{error:?}"
    );
    let ext = error.extensions.as_ref().unwrap();
    assert_eq!(
        ext.get("afterId"),
        Some(&async_graphql::Value::from(last.clone()))
    );
    assert!(tokio::time::timeout(Duration::from_secs(1), stream.next())
        .await
        .unwrap()
        .is_none());

    // Resumed from there, the rest comes, and then live events.
    let mut resumed = subscription(&app, me, STOCK, json!({"p": product, "a": last}));
    let mut rest = 0;
    while let Ok(Some(response)) =
        tokio::time::timeout(Duration::from_millis(500), resumed.next()).await
    {
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        rest += 1;
    }
    assert_eq!(rest, 1200 - ecanteen_api::graphql::live::MAX_REPLAY);
}

/// Sockets that have not initialised wait in a small pool of their own, capped per
/// client address: strangers upgrading by the hundred from one address hold a few
/// places of it, briefly, and a partner's socket from another address still upgrades
/// and initialises (issue #33). A partner's operations over its sockets draw on a
/// budget of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninitialised_sockets_wait_in_a_pool_of_their_own_and_operations_are_budgeted() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let addr = serve_with(&db, |c| {
        c.ws_pending_max = 8;
        c.ws_pending_per_address = 2;
        c.ws_init_timeout_ms = 500;
        c.ws_operations_per_sec = 1;
    })
    .await;
    let app = TestApp::on(db.clone(), |_| {}).await;
    let mut seller = app.partner("ws_pending").await;
    let token = seller.api_token("ws").await;
    let from = |address: &str| {
        let mut request = ws_request(addr, "graphql-transport-ws");
        request
            .headers_mut()
            .insert("x-forwarded-for", address.parse().unwrap());
        request
    };
    let stranger = "203.0.113.5";
    let mut held = Vec::new();
    for _ in 0..2 {
        let (ws, _) = tokio_tungstenite::connect_async(from(stranger))
            .await
            .unwrap();
        held.push(ws);
    }
    match tokio_tungstenite::connect_async(from(stranger)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!(
            "a third from one address: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // A partner from another address: upgraded, initialised.
    let (mut partner, _) = tokio_tungstenite::connect_async(from("198.51.100.9"))
        .await
        .unwrap();
    send(
        &mut partner,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        receive(&mut partner).await.unwrap()["type"],
        "connection_ack"
    );
    // The stranger's places are given back at the init deadline.
    for ws in &mut held {
        assert!(receive(ws).await.is_none(), "closed at the init deadline");
    }
    assert!(tokio_tungstenite::connect_async(from(stranger))
        .await
        .is_ok());

    // One operation a second, a burst of two: of three subscribes at once, whichever
    // the server starts third is refused.
    let sub = |id: &str| json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { productChanged { id } }"}});
    for id in ["1", "2", "3"] {
        send(&mut partner, sub(id)).await;
    }
    let refused = receive(&mut partner).await.expect("an answer").to_string();
    assert!(refused.contains("TOO_MANY_REQUESTS"), "{refused}");
}

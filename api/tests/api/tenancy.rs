//! A partner changes only its own products, with a session or with a token.

use serde_json::{json, Value};

use crate::helpers::*;

/// Every mutation that targets a product, aimed at `id`.
fn attacks(id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("mutation($id: ID!) { updateProduct(id: $id, input: {price: 1}) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { updateProduct(id: $id, input: {quantity: 0}, expectedVersion: 1) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { deleteProduct(id: $id) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { adjustStock(input: {productId: $id, delta: -1}) { replayed } }", json!({"id": id})),
        ("mutation($id: ID!) { adjustStock(input: {productId: $id, delta: 1, idempotencyKey: \"x\"}) { replayed } }", json!({"id": id})),
        ("mutation($id: ID!) { setStock(input: {productId: $id, quantity: 0}) { replayed } }", json!({"id": id})),
        ("query($id: ID!) { stockMovements(productId: $id) { edges { node { id } } } }", json!({"id": id})),
        ("query($id: ID!) { product(id: $id) { stockMovements { edges { node { id } } } } }", json!({"id": id})),
    ]
}

/// A client that authenticates with a new API token of `owner`'s partner.
async fn token_client(app: &TestApp, owner: &mut Client) -> Client {
    let mut bot = app.client();
    bot.bearer = Some(owner.api_token("bot").await);
    bot
}

async fn snapshot(owner: &mut Client, id: &str) -> Value {
    owner
        .ok(
            "query($id: ID!) { product(id: $id) { name price quantity version }
               stockMovements(productId: $id) { edges { node { id } } } }",
            json!({"id": id}),
        )
        .await
}

async fn assert_refused_everywhere(attacker: &mut Client, owner: &mut Client, id: &str) {
    let before = snapshot(owner, id).await;
    for (query, vars) in attacks(id) {
        let code = attacker.err_code(query, vars).await;
        assert!(
            code == "FORBIDDEN" || code == "NOT_FOUND",
            "{query}: {code}"
        );
    }
    assert_eq!(
        snapshot(owner, id).await,
        before,
        "the victim's data is unchanged"
    );
}

dual_tests! {
    async fn another_partners_session_is_refused_on_every_mutation(app) {
        let mut victim = app.partner("victim").await;
        let mut attacker = app.partner("attacker").await;
        let id = victim.create_product("Rendang", 10).await;
        assert_refused_everywhere(&mut attacker, &mut victim, &id).await;
        // Public reads still work.
        assert_eq!(attacker.quantity(&id).await, 10);
    }

    async fn another_partners_token_is_refused_on_every_mutation(app) {
        let mut victim = app.partner("victim2").await;
        let mut attacker = app.partner("attacker2").await;
        let mut bot = token_client(&app, &mut attacker).await;
        let id = victim.create_product("Gudeg", 10).await;
        assert_refused_everywhere(&mut bot, &mut victim, &id).await;
    }

    async fn anonymous_requests_are_refused_on_every_mutation(app) {
        let mut owner = app.partner("owner").await;
        let id = owner.create_product("Pecel", 10).await;
        let mut anonymous = app.client();
        for (query, vars) in attacks(&id) {
            assert_eq!(anonymous.err_code(query, vars).await, "UNAUTHENTICATED", "{query}");
        }
        assert_eq!(
            anonymous.err_code("mutation { createProduct(input: {name: \"x\", price: 1, category: \"c\"}) { id } }", json!({})).await,
            "UNAUTHENTICATED"
        );
        assert_eq!(owner.quantity(&id).await, 10);
    }

    async fn api_tokens_of_another_partner_are_private(app) {
        let mut a = app.partner("private_a").await;
        a.ok("mutation { createApiToken(name: \"t\") { token } }", json!({})).await;
        let id = a.create_product("Sate", 1).await;
        let mut b = app.partner("private_b").await;
        let code = b.err_code("query($id: ID!) { product(id: $id) { owner { apiTokens { name } } } }", json!({"id": id})).await;
        assert_eq!(code, "FORBIDDEN");
    }
}

/// Every REST write aimed at product `id`: (method, uri, content type, body).
fn rest_attacks(id: &str) -> Vec<(&'static str, String, &'static str, Vec<u8>)> {
    let json = |v: Value| v.to_string().into_bytes();
    let boundary = "bola-boundary";
    let mut upload = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    upload.extend_from_slice(&pictures::png(4, 4, 9));
    upload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let numeric: i64 = id.parse().unwrap();
    vec![
        (
            "PUT",
            format!("/ecanteen/product/{id}"),
            "application/json",
            json(json!({"price": 1})),
        ),
        (
            "PUT",
            "/ecanteen/product".to_owned(),
            "application/json",
            json(json!({"id": numeric, "price": 1})),
        ),
        (
            "DELETE",
            format!("/ecanteen/product/{id}"),
            "application/json",
            Vec::new(),
        ),
        (
            "POST",
            format!("/ecanteen/product/{id}/stock"),
            "application/json",
            json(json!({"delta": -1})),
        ),
        (
            "POST",
            format!("/ecanteen/product/{id}/stock"),
            "application/json",
            json(json!({"delta": 5, "reason": "restock"})),
        ),
        (
            "PUT",
            format!("/ecanteen/product/{id}/image"),
            "multipart/form-data; boundary=bola-boundary",
            upload,
        ),
    ]
}

/// Sends every REST write at `id` as `attacker`; each must get one of `statuses`.
async fn assert_rest_refused(attacker: &mut Client, id: &str, statuses: &[u16]) {
    for (method, uri, content_type, body) in rest_attacks(id) {
        let headers = [
            ("x-requested-with", "XMLHttpRequest"),
            ("idempotency-key", "bola"),
        ];
        let response = attacker
            .rest_raw(method, &uri, content_type, body, &headers)
            .await;
        assert!(
            statuses.contains(&response.status.as_u16()),
            "{method} {uri}: {} {}",
            response.status,
            response.text()
        );
    }
}

/// A token of `client`'s partner, created and then revoked.
async fn revoked_token(client: &mut Client) -> String {
    let created = client
        .ok(
            "mutation { createApiToken(name: \"old\") { token apiToken { id } } }",
            json!({}),
        )
        .await;
    let id = created["createApiToken"]["apiToken"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .ok(
            "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            json!({"id": id}),
        )
        .await;
    created["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

dual_tests! {
    async fn rest_writes_with_another_partners_session_or_token_are_refused(app) {
        let mut victim = app.partner("rest_victim").await;
        let id = victim.create_product("Soto", 10).await;
        let mut attacker = app.partner("rest_attacker").await;
        let mut bot = token_client(&app, &mut attacker).await;
        let before = snapshot(&mut victim, &id).await;
        assert_rest_refused(&mut attacker, &id, &[403, 404]).await;
        assert_rest_refused(&mut bot, &id, &[403, 404]).await;
        let mut anonymous = app.client();
        assert_rest_refused(&mut anonymous, &id, &[401]).await;
        assert_eq!(snapshot(&mut victim, &id).await, before, "the victim's data is unchanged");
    }

    async fn a_revoked_token_and_an_expired_session_are_refused_everywhere(app) {
        let mut owner = app.partner("lapsed").await;
        let id = owner.create_product("Bakso", 10).await;
        let mut revoked = app.client();
        revoked.bearer = Some(revoked_token(&mut owner).await);
        // A copy of the session cookie, expired below as inactivity would expire it.
        let mut expired = owner.clone();
        let before = snapshot(&mut owner, &id).await;
        let extra = [
            ("mutation { createProduct(input: {name: \"x\", price: 1, category: \"c\"}) { id } }", json!({})),
            ("mutation { createApiToken(name: \"again\") { token } }", json!({})),
        ];

        for (query, vars) in attacks(&id).into_iter().chain(extra.clone()) {
            assert_eq!(revoked.err_code(query, vars).await, "UNAUTHENTICATED", "{query}");
        }
        assert_rest_refused(&mut revoked, &id, &[401]).await;

        app.expire_sessions().await;
        for (query, vars) in attacks(&id).into_iter().chain(extra) {
            assert_eq!(expired.err_code(query, vars).await, "UNAUTHENTICATED", "{query}");
        }
        assert_rest_refused(&mut expired, &id, &[401]).await;

        let mut fresh = app.client();
        fresh.login("lapsed", PASSWORD).await;
        assert_eq!(snapshot(&mut fresh, &id).await, before, "nothing was written");
    }
}

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
        let token = attacker
            .ok("mutation { createApiToken(name: \"bot\") { token } }", json!({}))
            .await["createApiToken"]["token"].as_str().unwrap().to_owned();
        let mut bot = app.client();
        bot.bearer = Some(token);
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

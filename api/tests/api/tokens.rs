//! API tokens for integrators.

use serde_json::json;

use crate::helpers::*;

const CREATE: &str =
    "mutation($n: String!) { createApiToken(name: $n) { token apiToken { id name revokedAt } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeApiToken(id: $id) { id revokedAt } }";

dual_tests! {
    async fn a_token_authenticates_and_its_revocation_holds_on_every_replica(app) {
        let other = app.sibling().await;
        let mut owner = app.partner("integrator").await;
        let created = owner.ok(CREATE, json!({"n": "till #1"})).await["createApiToken"].clone();
        let token = created["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("ect_") && token.len() == 68, "{token}");
        assert_eq!(created["apiToken"]["revokedAt"], json!(null));

        let mut till = other.client();
        till.bearer = Some(token.clone());
        assert_eq!(till.ok("{ me { username } }", json!({})).await["me"]["username"], "integrator");
        let id = till.create_product("Es Teh", 3).await;
        assert_eq!(till.quantity(&id).await, 3);

        let revoked = owner.ok(REVOKE, json!({"id": created["apiToken"]["id"]})).await;
        assert!(revoked["revokeApiToken"]["revokedAt"].is_string());
        // Refused at once, on the other replica too, with a 401.
        let response = till.post_raw("application/json", json!({"query": "{ me { id } }"}).to_string()).await;
        assert_eq!(response.status, 401);
        assert_eq!(first_code(&response.json()).as_deref(), Some("UNAUTHENTICATED"));
    }

    async fn only_the_hash_of_a_token_is_stored(app) {
        let mut owner = app.partner("hashy").await;
        let token = owner.ok(CREATE, json!({"n": "t"})).await["createApiToken"]["token"]
            .as_str().unwrap().to_owned();
        let stored: String = app.state.service.db().scalar(&Sql::new("select token_hash from api_tokens")).await.unwrap();
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains(&token[4..]));
        let listed = owner.ok("{ me { apiTokens { name lastUsedAt } } }", json!({})).await;
        assert_eq!(listed["me"]["apiTokens"][0]["name"], "t");
    }

    async fn tokens_cannot_mint_or_revoke_tokens(app) {
        let mut owner = app.partner("minter").await;
        let created = owner.ok(CREATE, json!({"n": "t"})).await["createApiToken"].clone();
        let mut bot = app.client();
        bot.bearer = Some(created["token"].as_str().unwrap().to_owned());
        assert_eq!(bot.err_code(CREATE, json!({"n": "more"})).await, "FORBIDDEN");
        assert_eq!(bot.err_code(REVOKE, json!({"id": created["apiToken"]["id"]})).await, "FORBIDDEN");

        // The same over REST: the rule is the service's, not one transport's.
        let minted = bot.rest("POST", "/ecanteen/tokens", Some(json!({"name": "more"})), &[]).await;
        assert_eq!(minted.status, 403, "{}", minted.text());
        assert_eq!(minted.json()["error"]["code"], "FORBIDDEN");
        let id = created["apiToken"]["id"].as_str().unwrap().to_owned();
        let revoked = bot.rest("DELETE", &format!("/ecanteen/tokens/{id}"), None, &[]).await;
        assert_eq!(revoked.status, 403, "{}", revoked.text());
        // Nothing was minted, and the owner's token still works.
        let listed = owner.ok("{ me { apiTokens { name revokedAt } } }", json!({})).await;
        assert_eq!(listed["me"]["apiTokens"], json!([{"name": "t", "revokedAt": null}]));
        assert_eq!(bot.ok("{ me { username } }", json!({})).await["me"]["username"], "minter");
    }

    async fn unknown_bearer_tokens_are_refused_not_ignored(app) {
        let mut c = app.client();
        c.bearer = Some("ect_0000".to_owned());
        let response = c.post_raw("application/json", json!({"query": "{ me { id } }"}).to_string()).await;
        assert_eq!(response.status, 401);
    }

    async fn a_partner_cannot_revoke_another_partners_token(app) {
        let mut a = app.partner("tok_a").await;
        let mut b = app.partner("tok_b").await;
        let created = a.ok(CREATE, json!({"n": "mine"})).await["createApiToken"].clone();
        assert_eq!(b.err_code(REVOKE, json!({"id": created["apiToken"]["id"]})).await, "NOT_FOUND");
        let mut bot = app.client();
        bot.bearer = Some(created["token"].as_str().unwrap().to_owned());
        assert_eq!(bot.ok("{ me { username } }", json!({})).await["me"]["username"], "tok_a");
    }
}

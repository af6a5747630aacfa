//! `Idempotency-Key` on POST, PUT and DELETE: a retry returns the first response, and
//! the same key with a different body is a 422.

use std::sync::Arc;

use serde_json::json;

use super::{assert_error, create, fetch, id_of, rest_partner};
use crate::helpers::{dual_tests, SendTo as _};

dual_tests! {
    async fn the_same_key_sent_twice_creates_one_product(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let body = json!({"name": "Nasi Goreng", "price": "9999", "quantity": "1", "category": "makanan"});
        let key = [("idempotency-key", "create-nasi-1")];
        let first = saif.rest("POST", "/ecanteen/product", Some(body.clone()), &key).await;
        assert_eq!(first.status, 200, "{}", first.text());
        // The retry goes to another replica, as a balancer may send it.
        let mut elsewhere = saif.to(&app.sibling().await);
        let again = elsewhere.rest("POST", "/ecanteen/product", Some(body.clone()), &key).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.body, first.body, "the retry returns the first response");
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

        // The same key with another body writes nothing.
        let mut other = body.clone();
        other["quantity"] = json!(2);
        let r = saif.rest("POST", "/ecanteen/product", Some(other.clone()), &key).await;
        assert!(assert_error(&r, 422, "BAD_REQUEST").contains("Idempotency-Key"));
        // And so does the same key on another route.
        let id = id_of(&first.json());
        let r = saif.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"price": 1})), &key).await;
        assert_error(&r, 422, "BAD_REQUEST");
        assert_eq!(fetch(&mut saif, id).await.json()["price"], 9999);
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(1));

        // Keys are per partner: another partner's identical key is a new request.
        let mut budi = rest_partner(&app, "budi").await;
        let r = budi.rest("POST", "/ecanteen/product", Some(body), &key).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["user_id"], "budi");
        // A malformed key is refused.
        let r = saif.rest("POST", "/ecanteen/product", Some(other), &[("idempotency-key", "")]).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").contains("Idempotency-Key"));
    }

    async fn concurrent_retries_with_one_key_create_one_product(app) {
        let saif = rest_partner(&app, "saif").await;
        let sibling = app.sibling().await;
        let body = Arc::new(json!({"name": "Es Teh", "price": 3000, "quantity": 10, "category": "minuman"}));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let mut client = if i % 2 == 0 { saif.clone() } else { saif.to(&sibling) };
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                client.rest("POST", "/ecanteen/product", Some((*body).clone()), &[("idempotency-key", "burst")]).await
            }));
        }
        let mut bodies = Vec::new();
        for task in tasks {
            let r = task.await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            bodies.push(r.body);
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every retry got the first response");
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    }

    async fn updates_deletes_and_stock_changes_replay_their_first_response(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 1).await);

        // An update guarded by `before`: its retry must not turn into a 409.
        let update = json!({"quantity": 0, "before": 1});
        let key = [("idempotency-key", "sell-last")];
        let uri = format!("/ecanteen/product/{id}");
        let first = saif.rest("PUT", &uri, Some(update.clone()), &key).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let again = saif.rest("PUT", &uri, Some(update.clone()), &key).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.body, first.body);
        // Without the key, the same request is a new one, and stale.
        assert_error(&saif.rest("PUT", &uri, Some(update), &[]).await, 409, "CONFLICT");

        // A stock change applies once and replays the product as it left it.
        let stock = format!("/ecanteen/product/{id}/stock");
        let key = [("idempotency-key", "restock-5")];
        let first = saif.rest("POST", &stock, Some(json!({"delta": 5})), &key).await;
        assert_eq!(first.json()["quantity"], 5);
        saif.rest("POST", &stock, Some(json!({"delta": 1})), &[]).await;
        let again = saif.rest("POST", &stock, Some(json!({"delta": "5"})), &key).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.body, first.body);
        assert_eq!(fetch(&mut saif, id).await.json()["quantity"], 6);
        let r = saif.rest("POST", &stock, Some(json!({"delta": 4})), &key).await;
        assert_error(&r, 422, "BAD_REQUEST");

        // A delete's retry is answered as the first was, not with a 404.
        let key = [("idempotency-key", "remove")];
        let first = saif.rest("DELETE", &uri, None, &key).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let again = saif.rest("DELETE", &uri, None, &key).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.body, first.body);
    }

    async fn a_failed_write_does_not_burn_its_key(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 1).await);
        let stock = format!("/ecanteen/product/{id}/stock");
        let key = [("idempotency-key", "sell-2")];
        let r = saif.rest("POST", &stock, Some(json!({"delta": -2})), &key).await;
        assert_error(&r, 409, "INSUFFICIENT_STOCK");
        saif.rest("POST", &stock, Some(json!({"delta": 1})), &[]).await;
        let r = saif.rest("POST", &stock, Some(json!({"delta": -2})), &key).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["quantity"], 0);
    }
}

dual_tests! {
    async fn a_retried_join_gets_the_first_answer_not_a_conflict(app) {
        let mut c = app.client();
        let body = json!({"username": "saif", "password": crate::helpers::PASSWORD});
        let key = [("idempotency-key", "join-saif")];
        let first = c.rest("POST", "/ecanteen/join", Some(body.clone()), &key).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let again = c.rest("POST", "/ecanteen/join", Some(body.clone()), &key).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.body, first.body);
        // Without the key, or with another, the name is simply taken.
        assert_error(&c.rest("POST", "/ecanteen/join", Some(body.clone()), &[]).await, 409, "CONFLICT");
        let other = [("idempotency-key", "join-other")];
        assert_error(&c.rest("POST", "/ecanteen/join", Some(body), &other).await, 409, "CONFLICT");
    }

    async fn a_retried_token_creation_makes_no_second_token(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let key = [("idempotency-key", "till-token")];
        let first = saif.rest("POST", "/ecanteen/tokens", Some(json!({"name": "till"})), &key).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let id = first.json()["id"].as_i64().unwrap();
        // The secret is not kept, so the retry cannot show it: it names the token.
        let again = saif.rest("POST", "/ecanteen/tokens", Some(json!({"name": "till"})), &key).await;
        let message = assert_error(&again, 409, "CONFLICT");
        assert!(message.contains(&format!("API token {id}")), "{message}");
        let other = saif.rest("POST", "/ecanteen/tokens", Some(json!({"name": "kiosk"})), &key).await;
        assert_error(&other, 422, "BAD_REQUEST");
        let tokens = saif.ok("{ me { apiTokens { id } } }", json!({})).await;
        assert_eq!(tokens["me"]["apiTokens"].as_array().map(Vec::len), Some(1), "{tokens}");

        let uri = format!("/ecanteen/tokens/{id}");
        let key = [("idempotency-key", "revoke-till")];
        let first = saif.rest("DELETE", &uri, None, &key).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let again = saif.rest("DELETE", &uri, None, &key).await;
        assert_eq!(again.body, first.body);
        let elsewhere = saif.rest("DELETE", "/ecanteen/tokens/999999", None, &key).await;
        assert_error(&elsewhere, 422, "BAD_REQUEST");
    }
}

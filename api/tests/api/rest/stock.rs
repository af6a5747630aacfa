//! `POST /ecanteen/product/{id}/stock`: the +/− buttons.

use serde_json::json;

use super::{assert_error, create, fetch, id_of, rest_partner};
use crate::helpers::dual_tests;

dual_tests! {
    async fn stock_goes_up_and_down_but_never_below_zero(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 2).await);
        let uri = format!("/ecanteen/product/{id}/stock");
        let r = saif.rest("POST", &uri, Some(json!({"delta": 3, "reason": "restock"})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["quantity"], 5);
        assert_eq!(r.json()["user_id"], "saif");
        let r = saif.rest("POST", &uri, Some(json!({"delta": -5})), &[]).await;
        assert_eq!(r.json()["quantity"], 0);
        let r = saif.rest("POST", &uri, Some(json!({"delta": -1, "reason": "sale"})), &[]).await;
        let message = assert_error(&r, 409, "INSUFFICIENT_STOCK");
        assert!(message.contains("0 available"), "{message}");
        assert_eq!(fetch(&mut saif, id).await.json()["quantity"], 0);

        // The ledger records each change, visible over GraphQL to the owner.
        let history = saif.ok("query($id: ID!) { stockMovements(productId: $id) { nodes { delta reason } } }",
            json!({"id": id.to_string()})).await;
        let deltas: Vec<i64> = history["stockMovements"]["nodes"].as_array().unwrap().iter()
            .map(|m| m["delta"].as_i64().unwrap()).collect();
        assert_eq!(deltas, [-5, 3, 2]);
    }

    async fn stock_changes_are_checked_like_every_other_write(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 2).await);
        let uri = format!("/ecanteen/product/{id}/stock");
        for (body, field) in [
            (json!({"delta": 0}), "delta"),
            (json!({}), "delta"),
            (json!({"delta": 1, "reason": "stolen"}), "reason"),
            (json!({"delta": 1, "note": "x".repeat(501)}), "note"),
            (json!({"delta": 2_000_000_000}), "delta"),
        ] {
            let r = saif.rest("POST", &uri, Some(body.clone()), &[]).await;
            let message = assert_error(&r, 400, "BAD_REQUEST");
            assert!(message.contains(field), "{body}: {message}");
        }
        let r = app.client().rest("POST", &uri, Some(json!({"delta": 1})), &[]).await;
        assert_error(&r, 401, "UNAUTHENTICATED");
        let mut budi = rest_partner(&app, "budi").await;
        let r = budi.rest("POST", &uri, Some(json!({"delta": -1})), &[]).await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = saif.rest("POST", "/ecanteen/product/999999/stock", Some(json!({"delta": 1})), &[]).await;
        assert_error(&r, 404, "NOT_FOUND");
        let r = saif.rest("POST", &uri, Some(json!({"delta": -1, "before": 5})), &[]).await;
        assert_error(&r, 409, "CONFLICT");
        let r = saif.rest_raw("POST", &uri, "text/plain", "{\"delta\": -1}", &[]).await;
        assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
        assert_eq!(fetch(&mut saif, id).await.json()["quantity"], 2);
        let r = saif.rest("POST", &uri, Some(json!({"delta": -1, "before": 2})), &[]).await;
        assert_eq!(r.json()["quantity"], 1);
    }
}

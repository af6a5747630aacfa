//! The paper's Postman bodies, sent byte for byte.

use super::{fetch, rest_partner};
use crate::helpers::{dual_tests, pictures};

const CREATE_WITHOUT_PICTURE: &str = r#"{"user_id": "saif", "desc": "hellofrompostman", "name": "NASI GORENG", "price": "9999", "quantity": "1", "category": "nothing"}"#;

const UPDATE: &str = r#"{"id": "48", "user_id": "saif", "desc": "hellofrompostman", "name": "NASI GORENG", "price": "9999", "quantity": "2", "category": "nothing", "before": "1"}"#;

fn create_with_picture(data_uri: &str) -> String {
    format!(
        r#"{{"user_id": "saif", "desc": "hellofrompostman", "name": "NASI GORENG", "price": "9999", "quantity": "1", "category": "nothing", "image": "{data_uri}"}}"#
    )
}

dual_tests! {
    async fn the_original_create_and_update_bodies_work(app) {
        let mut saif = rest_partner(&app, "saif").await;
        // Products 1 to 46, then one with a picture (47), so that the plain Postman
        // create is product 48 and the PUT with `"id": "48"` is byte for byte the paper's.
        for n in 1..=46 {
            let r = saif.rest_raw("POST", "/ecanteen/product", "application/json",
                CREATE_WITHOUT_PICTURE.replace("NASI GORENG", &format!("Menu {n}")), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        use base64::Engine as _;
        let png = pictures::png(16, 16, 3);
        let uri = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
        let r = saif.rest_raw("POST", "/ecanteen/product", "application/json", create_with_picture(&uri), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let with_picture = r.json();
        assert_eq!(with_picture["id"], 47);
        let image = with_picture["image"].as_str().unwrap().to_owned();
        assert!(image.starts_with("/images/") && image.ends_with(".png"), "{image}");
        let served = saif.get(&image).await;
        assert_eq!(served.status, 200);
        assert_eq!(served.body, png);

        let r = saif.rest_raw("POST", "/ecanteen/product", "application/json", CREATE_WITHOUT_PICTURE, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let created = r.json();
        assert_eq!(created, serde_json::json!({"id": 48, "user_id": "saif", "name": "NASI GORENG",
            "desc": "hellofrompostman", "price": 9999, "quantity": 1, "category": "nothing", "image": ""}));

        let r = saif.rest_raw("PUT", "/ecanteen/product", "application/json", UPDATE, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "\"product 48 updated\"");
        assert_eq!(fetch(&mut saif, 48).await.json()["quantity"], 2);
        // Sent again, `before` is stale: a second cashier's edit is not silently lost.
        let r = saif.rest_raw("PUT", "/ecanteen/product", "application/json", UPDATE, &[]).await;
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(r.json()["product"]["quantity"], 2);
    }
}

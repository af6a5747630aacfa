//! The product rows of the contract: listing, one product, create, update, delete, and
//! the JSON 404 and 405.

use serde_json::{json, Value};

use super::{assert_error, create, fetch, id_of, rest_partner};
use crate::helpers::{dual_tests, SendTo as _};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

dual_tests! {
    async fn the_catalogue_is_public_ordered_by_id_and_filtered_and_paged(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let mut budi = rest_partner(&app, "budi").await;
        create(&mut saif, "Nasi Goreng", 5).await;
        let r = budi.rest("POST", "/ecanteen/product",
            Some(json!({"name": "Es Teh", "price": 3000, "quantity": 9, "category": "minuman"})), &[]).await;
        assert_eq!(r.status, 200);
        let r = saif.rest("POST", "/ecanteen/product",
            Some(json!({"name": "Kopi", "desc": "", "price": 5000, "quantity": 2, "category": "minuman"})), &[]).await;
        assert_eq!(r.status, 200);

        let mut anyone = app.client();
        let all = anyone.rest("GET", "/ecanteen/product", None, &[]).await;
        assert_eq!(all.status, 200);
        let all = all.json();
        assert_eq!(names(&all), ["Nasi Goreng", "Es Teh", "Kopi"]);
        let ids: Vec<i64> = all.as_array().unwrap().iter().map(id_of).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ordered by id: {ids:?}");

        let mine = anyone.rest("GET", "/ecanteen/product?user_id=saif", None, &[]).await.json();
        assert_eq!(names(&mine), ["Nasi Goreng", "Kopi"]);
        let drinks = anyone.rest("GET", "/ecanteen/product?category=minuman", None, &[]).await.json();
        assert_eq!(names(&drinks), ["Es Teh", "Kopi"]);
        let both = anyone.rest("GET", "/ecanteen/product?user_id=saif&category=minuman", None, &[]).await.json();
        assert_eq!(names(&both), ["Kopi"]);
        let page = anyone.rest("GET", "/ecanteen/product?limit=1&offset=1", None, &[]).await.json();
        assert_eq!(names(&page), ["Es Teh"]);
        let past = anyone.rest("GET", "/ecanteen/product?limit=10&offset=3", None, &[]).await.json();
        assert_eq!(past, json!([]));
        let nobody = anyone.rest("GET", "/ecanteen/product?user_id=nobody", None, &[]).await.json();
        assert_eq!(nobody, json!([]));

        for bad in ["limit=0", "limit=-1", "limit=abc", "limit=1001", "limit=1.5", "offset=-1", "offset=x", "category="] {
            let r = anyone.rest("GET", &format!("/ecanteen/product?{bad}"), None, &[]).await;
            let message = assert_error(&r, 400, "BAD_REQUEST");
            let field = bad.split('=').next().unwrap();
            assert!(message.contains(field), "{bad}: {message}");
        }
    }

    async fn one_product_in_the_original_shape(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let created = create(&mut saif, "Nasi Goreng", 5).await;
        let id = id_of(&created);
        assert_eq!(created, json!({"id": id, "user_id": "saif", "name": "Nasi Goreng", "desc": "enak",
            "price": 12000, "quantity": 5, "category": "makanan", "image": ""}));
        let r = fetch(&mut app.client(), id).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), created);
        assert_error(&fetch(&mut app.client(), id + 1000).await, 404, "NOT_FOUND");
        let r = app.client().rest("GET", "/ecanteen/product/abc", None, &[]).await;
        assert_error(&r, 404, "NOT_FOUND");
    }

    async fn create_needs_a_partner_writing_as_itself_with_valid_fields(app) {
        let body = json!({"name": "Soto", "desc": "ayam", "price": 15000, "quantity": 3, "category": "makanan"});
        let r = app.client().rest("POST", "/ecanteen/product", Some(body.clone()), &[]).await;
        assert_error(&r, 401, "UNAUTHENTICATED");

        let mut saif = rest_partner(&app, "saif").await;
        rest_partner(&app, "budi").await;
        let mut as_budi = body.clone();
        as_budi["user_id"] = json!("budi");
        let r = saif.rest("POST", "/ecanteen/product", Some(as_budi), &[]).await;
        assert_error(&r, 403, "FORBIDDEN");
        let mut as_self = body.clone();
        as_self["user_id"] = json!("saif");
        let r = saif.rest("POST", "/ecanteen/product", Some(as_self), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());

        for (field, value) in [("name", json!("")), ("name", json!(5)), ("price", json!(-1)), ("quantity", json!(-1)),
                               ("category", json!("")), ("desc", json!("x".repeat(1001)))] {
            let mut bad = body.clone();
            bad[field] = value;
            let r = saif.rest("POST", "/ecanteen/product", Some(bad), &[]).await;
            let message = assert_error(&r, 400, "BAD_REQUEST");
            assert!(message.starts_with(field), "{field}: {message}");
        }
        for field in ["name", "price", "quantity", "category"] {
            let mut missing = body.clone();
            missing.as_object_mut().unwrap().remove(field);
            let r = saif.rest("POST", "/ecanteen/product", Some(missing), &[]).await;
            assert!(assert_error(&r, 400, "BAD_REQUEST").contains(field));
        }
        let r = saif.rest("POST", "/ecanteen/product", Some(json!([1, 2])), &[]).await;
        assert_error(&r, 400, "BAD_REQUEST");
        // A form or text body is refused before anything is read: the CSRF defence.
        for content_type in ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"] {
            let r = saif.rest_raw("POST", "/ecanteen/product", content_type, body.to_string(), &[]).await;
            assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
        }
        // Only the one valid create was written.
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(1));
    }

    async fn update_changes_the_fields_present_by_path_or_by_body_id(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 5).await);
        let r = saif.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"price": 13000, "desc": "pedas"})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!(format!("product {id} updated")));
        let now = fetch(&mut saif, id).await.json();
        assert_eq!((now["price"].clone(), now["desc"].clone(), now["name"].clone()), (json!(13000), json!("pedas"), json!("Nasi Goreng")));

        let r = saif.rest("PUT", "/ecanteen/product", Some(json!({"id": id, "name": "Nasi Goreng Spesial", "quantity": 7})), &[]).await;
        assert_eq!(r.json(), json!(format!("product {id} updated")));
        let now = fetch(&mut saif, id).await.json();
        assert_eq!((now["name"].clone(), now["quantity"].clone()), (json!("Nasi Goreng Spesial"), json!(7)));

        let r = saif.rest("PUT", "/ecanteen/product", Some(json!({"name": "x"})), &[]).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").contains("id"));
        let r = saif.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"id": id + 1, "name": "x"})), &[]).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").contains("id"));
        let r = saif.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"price": "mahal"})), &[]).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").starts_with("price"));
        let r = app.client().rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"price": 1})), &[]).await;
        assert_error(&r, 401, "UNAUTHENTICATED");
        let mut budi = rest_partner(&app, "budi").await;
        let r = budi.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"price": 1})), &[]).await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = saif.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"price": 1, "user_id": "budi"})), &[]).await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = saif.rest("PUT", "/ecanteen/product/999999", Some(json!({"price": 1})), &[]).await;
        assert_error(&r, 404, "NOT_FOUND");
        // The same failures through the original form, with the id in the body.
        let r = app.client().rest("PUT", "/ecanteen/product", Some(json!({"id": id, "price": 1})), &[]).await;
        assert_error(&r, 401, "UNAUTHENTICATED");
        let r = budi.rest("PUT", "/ecanteen/product", Some(json!({"id": id, "price": 1})), &[]).await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = saif.rest("PUT", "/ecanteen/product", Some(json!({"id": "999999", "price": 1})), &[]).await;
        assert_error(&r, 404, "NOT_FOUND");
        let r = saif.rest("PUT", "/ecanteen/product", Some(json!({"id": id, "price": 1, "before": 4})), &[]).await;
        assert_error(&r, 409, "CONFLICT");
        assert_eq!(r.json()["product"]["price"], 13000);
        // None of the refused updates changed anything.
        assert_eq!(fetch(&mut saif, id).await.json()["price"], 13000);
    }

    async fn a_stale_before_writes_nothing_and_answers_409_with_the_current_product(app) {
        let mut kasir1 = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut kasir1, "Nasi Goreng", 1).await);
        let mut kasir2 = kasir1.to(&app.sibling().await);
        // The first cashier sells one with `before: 1`.
        let r = kasir1.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"quantity": 0, "before": 1})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        // The second still thinks there is one, and would overwrite the sale.
        let r = kasir2.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"quantity": 5, "price": 1, "before": 1})), &[]).await;
        assert_error(&r, 409, "CONFLICT");
        let body = r.json();
        assert_eq!(body["product"]["id"], id);
        assert_eq!(body["product"]["quantity"], 0);
        let now = fetch(&mut kasir2, id).await.json();
        assert_eq!((now["quantity"].clone(), now["price"].clone()), (json!(0), json!(12000)));
        // With the current quantity it goes through.
        let r = kasir2.rest("PUT", &format!("/ecanteen/product/{id}"), Some(json!({"quantity": 5, "before": "0"})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(fetch(&mut kasir2, id).await.json()["quantity"], 5);
    }

    async fn delete_removes_a_product_of_the_callers(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 5).await);
        let r = app.client().rest("DELETE", &format!("/ecanteen/product/{id}"), None, &[]).await;
        assert_error(&r, 401, "UNAUTHENTICATED");
        let mut budi = rest_partner(&app, "budi").await;
        let r = budi.rest("DELETE", &format!("/ecanteen/product/{id}"), None, &[]).await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = saif.rest("DELETE", &format!("/ecanteen/product/{id}"), None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!(format!("product {id} deleted")));
        assert_error(&fetch(&mut saif, id).await, 404, "NOT_FOUND");
        let r = saif.rest("DELETE", &format!("/ecanteen/product/{id}"), None, &[]).await;
        assert_error(&r, 404, "NOT_FOUND");
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all, json!([]));
    }

    async fn unknown_routes_are_a_json_404_and_wrong_methods_a_json_405_with_allow(app) {
        let mut c = app.client();
        for uri in ["/ecanteen/nope", "/ecanteen/product/1/nope", "/ecanteen/", "/ecanteen"] {
            let r = c.rest("GET", uri, None, &[]).await;
            assert_error(&r, 404, "NOT_FOUND");
        }
        for (method, uri, allowed) in [
            ("DELETE", "/ecanteen/product", vec!["GET", "POST", "PUT"]),
            ("POST", "/ecanteen/product/1", vec!["GET", "PUT", "DELETE"]),
            ("GET", "/ecanteen/join", vec!["POST"]),
            ("PUT", "/ecanteen/product/1/stock", vec!["GET", "POST"]),
            ("POST", "/ecanteen/report", vec!["GET"]),
            ("GET", "/ecanteen/password", vec!["PUT"]),
            ("POST", "/ecanteen/product/1/image", vec!["PUT"]),
            ("PUT", "/ecanteen/logout", vec!["GET", "POST"]),
        ] {
            let r = c.rest(method, uri, None, &[]).await;
            assert_error(&r, 405, "BAD_REQUEST");
            let allow = r.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            for m in allowed {
                assert!(allow.contains(m), "{method} {uri}: Allow: {allow}");
            }
        }
    }
}

//! Every integer field takes a JSON number or a decimal string; anything else is a 400
//! that names the field, and writes nothing.

use serde_json::{json, Value};

use super::{assert_error, create, fetch, id_of, rest_partner};
use crate::helpers::dual_tests;

/// Forms no integer field accepts.
fn malformed() -> Vec<Value> {
    vec![
        json!("12.5"),
        json!("abc"),
        json!(""),
        json!(" 7"),
        json!("7 "),
        json!("+7"),
        json!("0x10"),
        json!(12.5),
        json!(1e3),
        json!(true),
        json!(null),
        json!([1]),
        json!({"n": 1}),
        json!("99999999999999999999"),
        json!(99999999999999999999u128 as f64),
    ]
}

dual_tests! {
    async fn integer_fields_accept_numbers_and_decimal_strings(app) {
        let mut saif = rest_partner(&app, "saif").await;
        for (price, quantity) in [(json!(9999), json!(1)), (json!("9999"), json!("1"))] {
            let r = saif.rest("POST", "/ecanteen/product",
                Some(json!({"name": "Nasi", "price": price, "quantity": quantity, "category": "makanan"})), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!((r.json()["price"].clone(), r.json()["quantity"].clone()), (json!(9999), json!(1)));
        }
        let id = id_of(&create(&mut saif, "Teh", 1).await);
        for form in [json!(2), json!("2")] {
            let r = saif.rest("PUT", "/ecanteen/product",
                Some(json!({"id": id.to_string(), "price": form, "quantity": form, "before": "1"})), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let r = saif.rest("PUT", &format!("/ecanteen/product/{id}"),
                Some(json!({"id": id, "quantity": 1, "before": form})), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let mut expected = 1;
        for (delta, step) in [(json!(1), 1), (json!("1"), 1), (json!(-1), -1), (json!("-1"), -1)] {
            // `before` alternates between its two forms too.
            let before = if expected % 2 == 0 { json!(expected) } else { json!(expected.to_string()) };
            let r = saif.rest("POST", &format!("/ecanteen/product/{id}/stock"),
                Some(json!({"delta": delta, "before": before})), &[]).await;
            assert_eq!(r.status, 200, "{delta}: {}", r.text());
            expected += step;
            assert_eq!(r.json()["quantity"], expected);
        }
        assert_eq!(fetch(&mut saif, id).await.json()["quantity"], 1);
    }

    async fn malformed_integers_are_a_400_naming_the_field(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Teh", 1).await);
        let create_body = json!({"name": "Nasi", "price": 1, "quantity": 1, "category": "makanan"});
        for bad in malformed() {
            for field in ["price", "quantity"] {
                let mut body = create_body.clone();
                body[field] = bad.clone();
                let r = saif.rest("POST", "/ecanteen/product", Some(body), &[]).await;
                let message = assert_error(&r, 400, "BAD_REQUEST");
                assert!(message.starts_with(field), "{field} = {bad}: {message}");
            }
            for field in ["id", "price", "quantity", "before"] {
                if field != "id" && bad.is_null() {
                    // An explicit null leaves an optional field as it is.
                    continue;
                }
                let mut body = json!({"id": id, "name": "Teh Manis"});
                body[field] = bad.clone();
                let r = saif.rest("PUT", "/ecanteen/product", Some(body), &[]).await;
                if field == "id" && bad.is_null() {
                    // A null id is a missing id.
                    assert!(assert_error(&r, 400, "BAD_REQUEST").contains("id"));
                    continue;
                }
                let message = assert_error(&r, 400, "BAD_REQUEST");
                assert!(message.starts_with(field), "{field} = {bad}: {message}");
            }
            for field in ["delta", "before"] {
                let mut body = json!({"delta": -1});
                body[field] = bad.clone();
                if field == "before" && bad.is_null() {
                    continue;
                }
                let r = saif.rest("POST", &format!("/ecanteen/product/{id}/stock"), Some(body), &[]).await;
                let message = assert_error(&r, 400, "BAD_REQUEST");
                assert!(message.starts_with(field), "{field} = {bad}: {message}");
            }
        }
        // `1e3` exactly as an integrator might type it.
        let raw = r#"{"name": "Nasi", "price": 1e3, "quantity": 1, "category": "makanan"}"#;
        let r = saif.rest_raw("POST", "/ecanteen/product", "application/json", raw, &[]).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").starts_with("price"));
        // Numbers outside a field's range are refused by the same rules as GraphQL's.
        for (field, value) in [("price", json!("1000000001")), ("quantity", json!(-1)), ("price", json!("-5"))] {
            let mut body = create_body.clone();
            body[field] = value;
            let r = saif.rest("POST", "/ecanteen/product", Some(body), &[]).await;
            assert!(assert_error(&r, 400, "BAD_REQUEST").starts_with(field));
        }
        // Nothing was written.
        let now = fetch(&mut saif, id).await.json();
        assert_eq!((now["name"].clone(), now["quantity"].clone()), (json!("Teh"), json!(1)));
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(1));
    }
}

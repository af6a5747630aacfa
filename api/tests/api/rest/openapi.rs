//! The OpenAPI document at `/ecanteen/openapi.json` is generated from the handlers,
//! lists every route of the contract, and states the limits the handlers enforce.

use serde_json::{json, Value};

use super::{assert_error, id_of, rest_partner};
use crate::helpers::{Client, Engine, TestApp};

/// Every route of `shared/specs/rest-compat.md`, as method and path.
const CONTRACT: [(&str, &str); 15] = [
    ("post", "/ecanteen/join"),
    ("post", "/ecanteen/login"),
    ("get", "/ecanteen/logout"),
    ("post", "/ecanteen/logout"),
    ("post", "/ecanteen/tokens"),
    ("delete", "/ecanteen/tokens/{id}"),
    ("get", "/ecanteen/product"),
    ("get", "/ecanteen/product/{id}"),
    ("post", "/ecanteen/product"),
    ("put", "/ecanteen/product/{id}"),
    ("put", "/ecanteen/product"),
    ("delete", "/ecanteen/product/{id}"),
    ("post", "/ecanteen/product/{id}/stock"),
    ("put", "/ecanteen/product/{id}/image"),
    ("get", "/ecanteen/openapi.json"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_of_the_contract() {
    let app = TestApp::new(Engine::Sqlite).await;
    let r = app.client().get("/ecanteen/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc: Value = r.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for (method, path) in CONTRACT {
        if path == "/ecanteen/openapi.json" {
            continue;
        }
        let operation = &doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is missing from the document"
        );
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path} has no 200"
        );
    }
    // The listed failures of a write, shared ones included.
    let update = &doc["paths"]["/ecanteen/product/{id}"]["put"]["responses"];
    for status in ["400", "401", "403", "404", "409", "413", "415", "422"] {
        assert!(
            update[status].is_object(),
            "PUT /ecanteen/product/{{id}} lacks {status}"
        );
    }
    // Integer fields are documented as numbers or strings.
    let price = &doc["components"]["schemas"]["CreateProduct"]["properties"]["price"];
    assert!(
        price["oneOf"].as_array().is_some_and(|v| v.len() == 2),
        "{price}"
    );
    // The error envelope.
    assert!(doc["components"]["schemas"]["ErrorBody"]["properties"]["error"].is_object());
}

/// Every route the contract lists answers something other than a 404 or 405: the
/// router and the document agree.
#[tokio::test]
async fn every_route_of_the_contract_is_routed() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    for (method, path) in CONTRACT {
        let uri = path.replace("{id}", "1");
        let r = c.rest(&method.to_uppercase(), &uri, None, &[]).await;
        assert!(
            r.status != 404
                || r.json()["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.contains("no such route")),
            "{method} {path}: {}",
            r.text()
        );
        assert_ne!(r.status, 405, "{method} {path}");
    }
}

/// Sends `body` with `field` set to `value`: accepted when `ok`, else a 400 naming the
/// field.
async fn expect(
    client: &mut Client,
    method: &str,
    path: &str,
    body: &Value,
    field: &str,
    value: Value,
    ok: bool,
) {
    let mut body = body.clone();
    body[field] = value.clone();
    let r = client.rest(method, path, Some(body), &[]).await;
    let shown = value.to_string().chars().take(40).collect::<String>();
    if ok {
        assert_eq!(
            r.status,
            200,
            "{method} {path} {field}={shown}…: {}",
            r.text()
        );
    } else {
        let message = assert_error(&r, 400, "BAD_REQUEST");
        assert!(message.starts_with(field), "{field}={shown}…: {message}");
    }
}

/// A string property's stated `(minLength, maxLength)`.
fn lengths(property: &Value) -> (usize, usize) {
    let bound = |key: &str| property[key].as_u64().and_then(|n| usize::try_from(n).ok());
    let max = bound("maxLength").unwrap_or_else(|| panic!("no maxLength in {property}"));
    (bound("minLength").unwrap_or(0), max)
}

/// An integer property's stated `(minimum, maximum)`, on its JSON-number form.
fn range(property: &Value) -> (i64, i64) {
    let number = &property["oneOf"][0];
    match (number["minimum"].as_i64(), number["maximum"].as_i64()) {
        (Some(min), Some(max)) => (min, max),
        _ => panic!("no range in {property}"),
    }
}

/// Every bound the document states for a body field is the handler's: a value at the
/// bound is accepted, and one past it is refused with a 400 naming the field. Lengths
/// count characters, as JSON Schema does, so the values are made of a two-byte one.
#[tokio::test]
async fn the_documented_limits_are_the_ones_enforced() {
    let app = TestApp::new(Engine::Sqlite).await;
    let doc: Value = app.client().get("/ecanteen/openapi.json").await.json();
    let schemas = &doc["components"]["schemas"];
    let mut saif = rest_partner(&app, "saif").await;

    let product =
        json!({"name": "Soto", "desc": "", "price": 1, "quantity": 0, "category": "makanan"});
    let create = &schemas["CreateProduct"]["properties"];
    for field in ["name", "desc", "category"] {
        let (min, max) = lengths(&create[field]);
        expect(
            &mut saif,
            "POST",
            "/ecanteen/product",
            &product,
            field,
            json!("é".repeat(max)),
            true,
        )
        .await;
        expect(
            &mut saif,
            "POST",
            "/ecanteen/product",
            &product,
            field,
            json!("é".repeat(max + 1)),
            false,
        )
        .await;
        if min > 0 {
            expect(
                &mut saif,
                "POST",
                "/ecanteen/product",
                &product,
                field,
                json!("é".repeat(min)),
                true,
            )
            .await;
            expect(
                &mut saif,
                "POST",
                "/ecanteen/product",
                &product,
                field,
                json!("é".repeat(min - 1)),
                false,
            )
            .await;
        }
    }
    for field in ["price", "quantity"] {
        let (min, max) = range(&create[field]);
        for (value, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
            expect(
                &mut saif,
                "POST",
                "/ecanteen/product",
                &product,
                field,
                json!(value),
                ok,
            )
            .await;
            expect(
                &mut saif,
                "POST",
                "/ecanteen/product",
                &product,
                field,
                json!(value.to_string()),
                ok,
            )
            .await;
        }
    }

    // Paging the catalogue.
    let parameters = doc["paths"]["/ecanteen/product"]["get"]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bound = |name: &str, key: &str| {
        parameters
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["schema"][key].as_i64())
            .unwrap_or_else(|| panic!("no {key} for {name}"))
    };
    let (limit_min, limit_max, offset_min) = (
        bound("limit", "minimum"),
        bound("limit", "maximum"),
        bound("offset", "minimum"),
    );
    for (query, ok) in [
        (format!("limit={limit_min}"), true),
        (format!("limit={limit_max}"), true),
        (format!("limit={}", limit_min - 1), false),
        (format!("limit={}", limit_max + 1), false),
        (format!("offset={offset_min}"), true),
        (format!("offset={}", offset_min - 1), false),
    ] {
        let r = saif
            .rest("GET", &format!("/ecanteen/product?{query}"), None, &[])
            .await;
        if ok {
            assert_eq!(r.status, 200, "{query}: {}", r.text());
        } else {
            let message = assert_error(&r, 400, "BAD_REQUEST");
            assert!(
                query.starts_with(message.split(':').next().unwrap_or_default()),
                "{query}: {message}"
            );
        }
    }

    // A stock change: all the way up from 0, and all the way down again.
    let id = id_of(
        &saif
            .rest("POST", "/ecanteen/product", Some(product.clone()), &[])
            .await
            .json(),
    );
    let stock = format!("/ecanteen/product/{id}/stock");
    let (min, max) = range(&schemas["StockBody"]["properties"]["delta"]);
    let change = json!({"note": ""});
    expect(
        &mut saif,
        "POST",
        &stock,
        &change,
        "delta",
        json!(max + 1),
        false,
    )
    .await;
    expect(
        &mut saif,
        "POST",
        &stock,
        &change,
        "delta",
        json!(min - 1),
        false,
    )
    .await;
    expect(
        &mut saif,
        "POST",
        &stock,
        &change,
        "delta",
        json!(max),
        true,
    )
    .await;
    expect(
        &mut saif,
        "POST",
        &stock,
        &change,
        "delta",
        json!(min),
        true,
    )
    .await;
    let (_, note) = lengths(&schemas["StockBody"]["properties"]["note"]);
    let one = json!({"delta": 1});
    expect(
        &mut saif,
        "POST",
        &stock,
        &one,
        "note",
        json!("é".repeat(note)),
        true,
    )
    .await;
    expect(
        &mut saif,
        "POST",
        &stock,
        &one,
        "note",
        json!("é".repeat(note + 1)),
        false,
    )
    .await;

    // Accounts and tokens.
    let credentials = &schemas["Credentials"]["properties"];
    let mut anyone = app.client();
    let (min, max) = lengths(&credentials["username"]);
    let account = json!({"password": "correct horse battery"});
    for (n, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
        let name = format!("u{}", "x".repeat(n - 1));
        expect(
            &mut anyone,
            "POST",
            "/ecanteen/join",
            &account,
            "username",
            json!(name),
            ok,
        )
        .await;
    }
    let (min, max) = lengths(&credentials["password"]);
    for (i, (n, ok)) in [(min, true), (max, true), (min - 1, false), (max + 1, false)]
        .into_iter()
        .enumerate()
    {
        let account = json!({"username": format!("pw{i}")});
        expect(
            &mut anyone,
            "POST",
            "/ecanteen/join",
            &account,
            "password",
            json!("é".repeat(n)),
            ok,
        )
        .await;
    }
    let (min, max) = lengths(&schemas["NewToken"]["properties"]["name"]);
    for (n, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
        expect(
            &mut saif,
            "POST",
            "/ecanteen/tokens",
            &json!({}),
            "name",
            json!("é".repeat(n)),
            ok,
        )
        .await;
    }
}

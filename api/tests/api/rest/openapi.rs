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

/// One route and a valid body, whose fields are tried one value at a time.
struct Probe<'a> {
    client: &'a mut Client,
    method: &'static str,
    path: String,
    body: Value,
}

impl Probe<'_> {
    /// Sends the body with `field` set to `value`: accepted when `ok`, else a 400 naming
    /// the field.
    async fn check(&mut self, field: &str, value: Value, ok: bool) {
        let mut body = self.body.clone();
        body[field] = value.clone();
        let (method, path) = (self.method, self.path.as_str());
        let r = self.client.rest(method, path, Some(body), &[]).await;
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

    /// A string field at and past each stated length bound (in two-byte characters).
    async fn lengths(&mut self, field: &str, property: &Value) {
        let (min, max) = lengths(property);
        for (n, ok) in edges(min, max) {
            if let Ok(n) = usize::try_from(n) {
                self.check(field, json!("é".repeat(n)), ok).await;
            }
        }
    }

    /// An integer field at and past each stated bound, as a number and as a string.
    async fn range(&mut self, field: &str, property: &Value) {
        let (min, max) = range(property);
        for (n, ok) in edges(min, max) {
            self.check(field, json!(n), ok).await;
            self.check(field, json!(n.to_string()), ok).await;
        }
    }
}

/// The values at each bound (accepted) and just past it (refused).
fn edges(min: i64, max: i64) -> [(i64, bool); 4] {
    [(min, true), (max, true), (min - 1, false), (max + 1, false)]
}

/// A string property's stated `(minLength, maxLength)`.
fn lengths(property: &Value) -> (i64, i64) {
    let bound = |key: &str| property[key].as_i64();
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
    let mut creating = Probe {
        client: &mut saif,
        method: "POST",
        path: "/ecanteen/product".into(),
        body: product.clone(),
    };
    for field in ["name", "desc", "category"] {
        creating.lengths(field, &create[field]).await;
    }
    for field in ["price", "quantity"] {
        creating.range(field, &create[field]).await;
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
    let limit = edges(bound("limit", "minimum"), bound("limit", "maximum"));
    let offset = bound("offset", "minimum");
    let tries = limit
        .map(|(n, ok)| ("limit", n, ok))
        .into_iter()
        .chain([("offset", offset, true), ("offset", offset - 1, false)]);
    for (name, n, ok) in tries {
        let r = saif
            .rest("GET", &format!("/ecanteen/product?{name}={n}"), None, &[])
            .await;
        if ok {
            assert_eq!(r.status, 200, "{name}={n}: {}", r.text());
        } else {
            let message = assert_error(&r, 400, "BAD_REQUEST");
            assert!(message.starts_with(name), "{name}={n}: {message}");
        }
    }

    // A stock change: all the way up from 0 and down again, in the stated range but not 0.
    let id = id_of(
        &saif
            .rest("POST", "/ecanteen/product", Some(product), &[])
            .await
            .json(),
    );
    let stock = &schemas["StockBody"]["properties"];
    let mut changing = Probe {
        client: &mut saif,
        method: "POST",
        path: format!("/ecanteen/product/{id}/stock"),
        body: json!({"note": ""}),
    };
    let (min, max) = range(&stock["delta"]);
    for (delta, ok) in [
        (max + 1, false),
        (min - 1, false),
        (0, false),
        (max, true),
        (min, true),
    ] {
        changing.check("delta", json!(delta), ok).await;
    }
    changing.body = json!({"delta": 1});
    changing.lengths("note", &stock["note"]).await;

    // Accounts and tokens.
    let credentials = &schemas["Credentials"]["properties"];
    let mut anyone = app.client();
    let (min, max) = lengths(&credentials["username"]);
    let mut joining = Probe {
        client: &mut anyone,
        method: "POST",
        path: "/ecanteen/join".into(),
        body: json!({"password": "correct horse battery"}),
    };
    // Each username is new: one "u" and then "x"s, to the length tried.
    for (n, ok) in edges(min, max) {
        let name = format!("u{}", "x".repeat(usize::try_from(n - 1).unwrap_or(0)));
        joining.check("username", json!(name), ok).await;
    }
    let (min, max) = lengths(&credentials["password"]);
    for (i, (n, ok)) in edges(min, max).into_iter().enumerate() {
        joining.body = json!({"username": format!("pw{i}")});
        let password = "é".repeat(usize::try_from(n).unwrap_or(0));
        joining.check("password", json!(password), ok).await;
    }
    let mut naming = Probe {
        client: &mut saif,
        method: "POST",
        path: "/ecanteen/tokens".into(),
        body: json!({}),
    };
    naming
        .lengths("name", &schemas["NewToken"]["properties"]["name"])
        .await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_report_the_exports_and_password_change() {
    let app = TestApp::new(Engine::Sqlite).await;
    let doc: Value = app.client().get("/ecanteen/openapi.json").await.json();
    for (method, path) in [
        ("get", "/ecanteen/report"),
        ("get", "/ecanteen/export/products"),
        ("get", "/ecanteen/product/{id}/stock"),
        ("put", "/ecanteen/password"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path}: {operation}"
        );
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} lacks 401"
        );
    }
    let report = &doc["paths"]["/ecanteen/report"]["get"];
    let params: Vec<&str> = report["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["from", "to", "group_by", "format", "top"]);
    assert!(report["responses"]["200"]["content"]["text/csv"].is_object());
    assert!(doc["components"]["schemas"]["RestSalesReport"].is_object());
}

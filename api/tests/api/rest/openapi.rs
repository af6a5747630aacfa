//! The OpenAPI document at `/ecanteen/openapi.json` is generated from the handlers and
//! lists every route of the contract.

use serde_json::Value;

use crate::helpers::{Engine, TestApp};

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

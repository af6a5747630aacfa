//! The REST compatibility routes under `/ecanteen` (`shared/specs/rest-compat.md`):
//! every row of the contract, for success and each listed failure, on SQLite and on
//! PostgreSQL.

mod auth;
mod concurrency;
mod idempotency;
mod numbers;
mod openapi;
mod pictures;
mod postman;
mod products;
mod stock;

use serde_json::{json, Value};

use crate::helpers::{Client, HttpResponse, TestApp, PASSWORD};

/// A client logged in over REST as a freshly joined partner.
pub async fn rest_partner(app: &TestApp, username: &str) -> Client {
    let mut client = app.client();
    let credentials = json!({"username": username, "password": PASSWORD});
    let joined = client
        .rest("POST", "/ecanteen/join", Some(credentials.clone()), &[])
        .await;
    assert_eq!(joined.status, 200, "{}", joined.text());
    let logged_in = client
        .rest("POST", "/ecanteen/login", Some(credentials), &[])
        .await;
    assert_eq!(logged_in.status, 200, "{}", logged_in.text());
    assert!(client.cookie.is_some(), "login sets the session cookie");
    client
}

/// Asserts a failure's status and envelope, returning its message.
#[track_caller]
pub fn assert_error(response: &HttpResponse, status: u16, code: &str) -> String {
    assert_eq!(
        response.status.as_u16(),
        status,
        "expected {status} {code}, got {}",
        response.text()
    );
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body:#}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body:#}"))
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// Creates a product over REST and returns it.
pub async fn create(client: &mut Client, name: &str, quantity: i64) -> Value {
    let body = json!({"name": name, "desc": "enak", "price": 12000, "quantity": quantity, "category": "makanan"});
    let response = client
        .rest("POST", "/ecanteen/product", Some(body), &[])
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// A product as the public catalogue shows it now.
pub async fn fetch(client: &mut Client, id: i64) -> HttpResponse {
    client
        .rest("GET", &format!("/ecanteen/product/{id}"), None, &[])
        .await
}

pub fn id_of(product: &Value) -> i64 {
    product["id"].as_i64().expect("id")
}

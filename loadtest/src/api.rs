//! How a simulated partner talks to the stack: the same operations over the REST
//! compatibility routes or over GraphQL. Every request is timed and recorded under its
//! route; a request fails when the connection fails, the status is not 2xx, or a
//! GraphQL answer carries errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use clap::ValueEnum;
use ecanteen_test_client::{documents, requests, Client, Remote, UploadFile};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::metrics::{Recorder, Route, Sample};

/// Which of the stack's two APIs the simulated users speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKind {
    /// The REST compatibility routes under `/ecanteen` (the paper's web service).
    Rest,
    /// `/graphql`.
    Graphql,
}

/// A request that failed; it is already recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// A product as a partner last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: i64,
    pub quantity: i64,
    /// GraphQL's optimistic version (0 over REST, which guards with the quantity).
    pub version: i64,
}

/// What a partner sends to create a product.
#[derive(Clone, Debug)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub price: i64,
    pub quantity: i64,
    pub category: &'static str,
    /// PNG bytes, when the product has a picture.
    pub picture: Option<Vec<u8>>,
}

pub mod routes {
    //! The routes as the report names them.
    use crate::metrics::Route;

    pub const REST_JOIN: Route = Route::sign_in("POST", "/ecanteen/join");
    pub const REST_LOGIN: Route = Route::sign_in("POST", "/ecanteen/login");
    pub const REST_TOKEN: Route = Route::sign_in("POST", "/ecanteen/tokens");
    pub const REST_CREATE: Route = Route::new("POST", "/ecanteen/product");
    pub const REST_VIEW_OWN: Route = Route::new("GET", "/ecanteen/product?user_id=[name]");
    pub const REST_VIEW_ALL: Route = Route::new("GET", "/ecanteen/product?limit=50");
    pub const REST_READ: Route = Route::new("GET", "/ecanteen/product?limit=20");
    pub const REST_EDIT: Route = Route::new("PUT", "/ecanteen/product/[id]");
    pub const REST_STOCK: Route = Route::new("POST", "/ecanteen/product/[id]/stock");
    pub const REST_DELETE: Route = Route::new("DELETE", "/ecanteen/product/[id]");
    pub const REST_LOGOUT: Route = Route::sign_in("GET", "/ecanteen/logout");

    pub const GQL_REGISTER: Route = Route::sign_in("GraphQL", "register");
    pub const GQL_LOGIN: Route = Route::sign_in("GraphQL", "login");
    pub const GQL_TOKEN: Route = Route::sign_in("GraphQL", "createApiToken");
    pub const GQL_CREATE: Route = Route::new("GraphQL", "createProduct");
    pub const GQL_VIEW_OWN: Route = Route::new("GraphQL", "products(filter: owner)");
    pub const GQL_VIEW_ALL: Route = Route::new("GraphQL", "products(first: 50) with owners");
    pub const GQL_READ: Route = Route::new("GraphQL", "products(first: 20)");
    pub const GQL_EDIT: Route = Route::new("GraphQL", "updateProduct");
    pub const GQL_STOCK: Route = Route::new("GraphQL", "adjustStock");
    pub const GQL_DELETE: Route = Route::new("GraphQL", "deleteProduct");
    pub const GQL_LOGOUT: Route = Route::sign_in("GraphQL", "logout");

    /// Sign-up and login hash passwords with argon2 on purpose; targets exempt them.
    pub fn is_deliberately_slow(route: &Route) -> bool {
        [REST_JOIN, REST_LOGIN, GQL_REGISTER, GQL_LOGIN].contains(route)
    }
}

use routes::*;

/// One simulated partner's connection to the stack, with its own credential and
/// connection pool, as a browser or a Locust user has. It speaks through the one test
/// client ([`ecanteen_test_client`]); what it adds is the load tester's own: each
/// attempt timed and recorded under its route, and refusals waited out.
pub struct Partner {
    client: Mutex<Client<Remote>>,
    api: ApiKind,
    recorder: Arc<Recorder>,
    pub username: String,
}

impl Partner {
    pub fn new(
        base: &str,
        api: ApiKind,
        username: String,
        timeout: Duration,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        Self::build(base, api, username, None, timeout, recorder)
    }

    /// A partner that authenticates with an API token instead of a session.
    pub fn with_token(
        base: &str,
        api: ApiKind,
        token: &str,
        timeout: Duration,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        Self::build(base, api, String::new(), Some(token), timeout, recorder)
    }

    fn build(
        base: &str,
        api: ApiKind,
        username: String,
        token: Option<&str>,
        timeout: Duration,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        let mut client = Client::new(Remote::with_client(base, http_client(timeout)?));
        client.bearer = token.map(str::to_owned);
        Ok(Self {
            client: Mutex::new(client),
            api,
            recorder,
            username,
        })
    }

    pub async fn register(&self, password: &str) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => {
                let body = self.credentials(password);
                self.rest(REST_JOIN, || {
                    requests::json("POST", "/ecanteen/join", &body, &[])
                })
                .await
            }
            ApiKind::Graphql => {
                let variables = json!({ "u": self.username, "p": password });
                self.graphql(GQL_REGISTER, documents::REGISTER, variables)
                    .await
            }
        }
        .map(drop)
    }

    pub async fn login(&self, password: &str) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => {
                let body = self.credentials(password);
                self.rest(REST_LOGIN, || {
                    requests::json("POST", "/ecanteen/login", &body, &[])
                })
                .await
            }
            ApiKind::Graphql => {
                let variables = json!({ "u": self.username, "p": password });
                self.graphql(GQL_LOGIN, documents::LOGIN, variables).await
            }
        }
        .map(drop)
    }

    /// Creates an API token (the invariant check reads the ledger with it after logout).
    pub async fn create_token(&self, name: &str) -> Result<String, Failed> {
        let value = match self.api {
            ApiKind::Rest => {
                let body = json!({ "name": name });
                self.rest(REST_TOKEN, || {
                    requests::json("POST", "/ecanteen/tokens", &body, &[])
                })
                .await?
            }
            ApiKind::Graphql => {
                let variables = json!({ "n": name });
                self.graphql(GQL_TOKEN, documents::CREATE_API_TOKEN, variables)
                    .await?["createApiToken"]
                    .clone()
            }
        };
        value["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failed("no token in the answer".into()))
    }

    pub async fn create_product(&self, product: &NewProduct, key: &str) -> Result<Seen, Failed> {
        match self.api {
            ApiKind::Rest => {
                let image = product.picture.as_deref().map(data_uri).unwrap_or_default();
                let body = json!({
                    "user_id": self.username,
                    "name": product.name,
                    "desc": product.description,
                    "price": product.price.to_string(),
                    "quantity": product.quantity.to_string(),
                    "category": product.category,
                    "image": image,
                });
                let headers = [("idempotency-key", key)];
                let answer = self
                    .rest(REST_CREATE, || {
                        requests::json("POST", "/ecanteen/product", &body, &headers)
                    })
                    .await?;
                seen_rest(&answer)
            }
            ApiKind::Graphql => {
                let variables = json!({
                    "i": {
                        "name": product.name,
                        "description": product.description,
                        "price": product.price,
                        "quantity": product.quantity,
                        "category": product.category,
                    },
                    "image": null,
                });
                let data = match &product.picture {
                    None => {
                        self.graphql(GQL_CREATE, documents::CREATE_PRODUCT, variables)
                            .await?
                    }
                    Some(png) => {
                        let upload = || {
                            let picture = UploadFile {
                                variable: "image",
                                filename: "picture.png",
                                content_type: "image/png",
                                bytes: png.clone(),
                            };
                            let files = [picture];
                            requests::upload(
                                documents::CREATE_PRODUCT,
                                variables.clone(),
                                &files,
                                true,
                            )
                        };
                        self.send(GQL_CREATE, upload, true).await?
                    }
                };
                seen_graphql(&data["createProduct"])
            }
        }
    }

    /// The partner's own products (the original "view").
    pub async fn view_own(&self) -> Result<usize, Failed> {
        match self.api {
            ApiKind::Rest => {
                let mut uri = reqwest::Url::parse("http://partner/ecanteen/product")
                    .map_err(|e| Failed(e.to_string()))?;
                uri.query_pairs_mut().append_pair("user_id", &self.username);
                let uri = format!("{}?{}", uri.path(), uri.query().unwrap_or_default());
                let answer = self
                    .rest(REST_VIEW_OWN, || requests::empty("GET", &uri, &[]))
                    .await?;
                Ok(array_len(&answer))
            }
            ApiKind::Graphql => {
                let variables = json!({ "u": self.username });
                let data = self
                    .graphql(GQL_VIEW_OWN, documents::OWN_PRODUCTS, variables)
                    .await?;
                Ok(array_len(&data["products"]["nodes"]))
            }
        }
    }

    /// The first page of the whole catalogue (the original "view all"), with owners.
    pub async fn view_all(&self) -> Result<usize, Failed> {
        match self.api {
            ApiKind::Rest => {
                let answer = self
                    .rest(REST_VIEW_ALL, || {
                        requests::empty("GET", "/ecanteen/product?limit=50", &[])
                    })
                    .await?;
                Ok(array_len(&answer))
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(GQL_VIEW_ALL, documents::CATALOGUE_WITH_OWNERS, json!({}))
                    .await?;
                Ok(array_len(&data["products"]["nodes"]))
            }
        }
    }

    /// The read the capacity mode repeats: 20 products, no owners.
    pub async fn read_page(&self) -> Result<usize, Failed> {
        match self.api {
            ApiKind::Rest => {
                let answer = self
                    .rest(REST_READ, || {
                        requests::empty("GET", "/ecanteen/product?limit=20", &[])
                    })
                    .await?;
                Ok(array_len(&answer))
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(GQL_READ, documents::CATALOGUE_PAGE, json!({}))
                    .await?;
                Ok(array_len(&data["products"]["nodes"]))
            }
        }
    }

    /// Renames and reprices a product, guarded by what the partner last saw: REST's
    /// `before` (the quantity) or GraphQL's `expectedVersion`.
    pub async fn edit(&self, seen: Seen, name: &str, price: i64) -> Result<Seen, Failed> {
        match self.api {
            ApiKind::Rest => {
                let body = json!({ "name": name, "price": price, "before": seen.quantity });
                let uri = format!("/ecanteen/product/{}", seen.id);
                self.rest(REST_EDIT, || requests::json("PUT", &uri, &body, &[]))
                    .await?;
                Ok(seen)
            }
            ApiKind::Graphql => {
                let variables = json!({
                    "id": seen.id.to_string(),
                    "i": { "name": name, "price": price },
                    "v": seen.version,
                });
                let data = self
                    .graphql(GQL_EDIT, documents::UPDATE_PRODUCT, variables)
                    .await?;
                seen_graphql(&data["updateProduct"])
            }
        }
    }

    /// Adds (`delta > 0`) or sells (`delta < 0`) stock, with an idempotency key.
    pub async fn adjust_stock(&self, id: i64, delta: i64, key: &str) -> Result<Seen, Failed> {
        let reason = if delta > 0 { "restock" } else { "sale" };
        match self.api {
            ApiKind::Rest => {
                let body = json!({ "delta": delta, "reason": reason });
                let uri = format!("/ecanteen/product/{id}/stock");
                let headers = [("idempotency-key", key)];
                let answer = self
                    .rest(REST_STOCK, || requests::json("POST", &uri, &body, &headers))
                    .await?;
                seen_rest(&answer)
            }
            ApiKind::Graphql => {
                let variables = json!({ "i": {
                    "productId": id.to_string(),
                    "delta": delta,
                    "reason": reason.to_uppercase(),
                    "idempotencyKey": key,
                } });
                let data = self
                    .graphql(GQL_STOCK, documents::ADJUST_STOCK, variables)
                    .await?;
                seen_graphql(&data["adjustStock"]["product"])
            }
        }
    }

    pub async fn delete(&self, seen: Seen) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => {
                let uri = format!("/ecanteen/product/{}", seen.id);
                self.rest(REST_DELETE, || requests::empty("DELETE", &uri, &[]))
                    .await
            }
            ApiKind::Graphql => {
                let variables = json!({ "id": seen.id.to_string(), "v": seen.version });
                self.graphql(GQL_DELETE, documents::DELETE_PRODUCT, variables)
                    .await
            }
        }
        .map(drop)
    }

    pub async fn logout(&self) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => {
                self.rest(REST_LOGOUT, || {
                    requests::empty("GET", "/ecanteen/logout", &[])
                })
                .await
            }
            ApiKind::Graphql => self.graphql(GQL_LOGOUT, documents::LOGOUT, json!({})).await,
        }
        .map(drop)
    }

    fn credentials(&self, password: &str) -> Value {
        json!({ "username": self.username, "password": password })
    }

    async fn rest(
        &self,
        route: Route,
        request: impl Fn() -> Request<Bytes>,
    ) -> Result<Value, Failed> {
        self.send(route, request, false).await
    }

    /// A GraphQL operation; answers its `data`.
    async fn graphql(&self, route: Route, query: &str, variables: Value) -> Result<Value, Failed> {
        self.send(route, || requests::graphql(query, variables.clone()), true)
            .await
    }

    /// Sends a request, as a polite client would: a refusal (429 or 503 with
    /// `Retry-After`) is waited out, the wait doubling at each further refusal and
    /// stretched by up to half at random (so refused clients do not all come back in
    /// the same instant), and the request (built again by `request`) is sent again, up
    /// to [`MAX_RETRIES`] times. Each attempt is recorded.
    async fn send(
        &self,
        route: Route,
        request: impl Fn() -> Request<Bytes>,
        graphql: bool,
    ) -> Result<Value, Failed> {
        let mut retries = 0;
        loop {
            let started = Instant::now();
            let answer = self.client.lock().await.try_send_built(request()).await;
            let latency = started.elapsed();
            let (size, outcome, refused_for) = match answer {
                Ok(response) => {
                    let refused = matches!(response.status.as_u16(), 429 | 503)
                        .then(|| response.retry_after())
                        .flatten();
                    let outcome = judge(response.status, &response.body, graphql);
                    (response.body.len() as u64, outcome, refused)
                }
                Err(err) => (0, Err(err.0), None),
            };
            self.recorder.record(Sample {
                route,
                latency,
                size,
                error: outcome.as_ref().err().cloned(),
                refused: refused_for.is_some(),
            });
            match refused_for {
                Some(wait) if retries < MAX_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(backoff(wait, retries, rand::random::<f64>())).await;
                }
                _ => return outcome.map_err(Failed),
            }
        }
    }
}

/// How many times a refused request is sent again.
pub const MAX_RETRIES: u32 = 3;

/// The longest a refused request waits before it is sent again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retry number `retry` (1, 2, …) of a request refused with
/// `Retry-After: wait`: the wait, doubled for each retry after the first, times 1 to
/// 1.5 (`jitter` is uniform in 0–1), at most [`MAX_BACKOFF`].
pub fn backoff(wait: Duration, retry: u32, jitter: f64) -> Duration {
    let doubled = wait.saturating_mul(1 << retry.saturating_sub(1).min(8));
    doubled
        .mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0)
        .min(MAX_BACKOFF)
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4)
        .build()?)
}

/// Decides whether an answer is a success: a 2xx whose body is JSON (and, for GraphQL,
/// carries no errors). A failure reads like `409 CONFLICT` or `GraphQL FORBIDDEN`.
fn judge(status: StatusCode, body: &[u8], graphql: bool) -> Result<Value, String> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        let code = value
            .as_ref()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .or_else(|| {
                value.as_ref().and_then(|v| {
                    v["errors"][0]["extensions"]["code"]
                        .as_str()
                        .map(str::to_owned)
                })
            })
            .unwrap_or_default();
        return Err(format!("{} {code}", status.as_u16()).trim_end().to_owned());
    }
    let Some(value) = value else {
        return Err(format!("{} with a body that is not JSON", status.as_u16()));
    };
    if !graphql {
        return Ok(value);
    }
    if let Some(error) = value["errors"].get(0) {
        let code = error["extensions"]["code"].as_str().unwrap_or("no code");
        return Err(format!("GraphQL {code}"));
    }
    Ok(value["data"].clone())
}

fn data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

fn array_len(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

/// An integer from a JSON number or a string holding one (GraphQL IDs are strings).
pub fn int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn seen_rest(product: &Value) -> Result<Seen, Failed> {
    match (int(&product["id"]), int(&product["quantity"])) {
        (Some(id), Some(quantity)) => Ok(Seen {
            id,
            quantity,
            version: 0,
        }),
        _ => Err(Failed("no product in the answer".into())),
    }
}

fn seen_graphql(product: &Value) -> Result<Seen, Failed> {
    match (
        int(&product["id"]),
        int(&product["quantity"]),
        int(&product["version"]),
    ) {
        (Some(id), Some(quantity), Some(version)) => Ok(Seen {
            id,
            quantity,
            version,
        }),
        _ => Err(Failed("no product in the answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_json_answer_without_graphql_errors_succeeds() {
        let ok = judge(StatusCode::OK, br#"{"id": 1}"#, false);
        assert_eq!(ok, Ok(json!({"id": 1})));
        assert_eq!(
            judge(
                StatusCode::CONFLICT,
                br#"{"error": {"code": "CONFLICT", "message": "m"}}"#,
                false
            ),
            Err("409 CONFLICT".into())
        );
        assert_eq!(
            judge(StatusCode::BAD_GATEWAY, b"<html>", false),
            Err("502".into())
        );
        assert_eq!(
            judge(
                StatusCode::OK,
                br#"{"data": null, "errors": [{"message": "m", "extensions": {"code": "FORBIDDEN"}}]}"#,
                true
            ),
            Err("GraphQL FORBIDDEN".into())
        );
        assert_eq!(
            judge(StatusCode::OK, br#"{"data": {"me": null}}"#, true),
            Ok(json!({"me": null}))
        );
        assert!(judge(StatusCode::OK, b"not json", false).is_err());
    }

    #[test]
    fn a_refused_request_backs_off_from_retry_after_with_jitter_and_a_cap() {
        let second = Duration::from_secs(1);
        assert_eq!(backoff(second, 1, 0.0), second);
        assert_eq!(backoff(second, 1, 1.0), Duration::from_millis(1500));
        assert_eq!(backoff(second, 2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(second, 3, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(Duration::from_secs(20), 3, 1.0), MAX_BACKOFF);
    }

    #[test]
    fn ids_arrive_as_numbers_or_strings() {
        assert_eq!(int(&json!(48)), Some(48));
        assert_eq!(int(&json!("48")), Some(48));
        assert_eq!(int(&json!("x")), None);
        assert_eq!(int(&Value::Null), None);
    }
}

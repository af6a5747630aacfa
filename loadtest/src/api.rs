//! How a simulated partner talks to the stack: the same operations over the REST
//! compatibility routes or over GraphQL. Every request is timed and recorded under its
//! route; a request fails when the connection fails, the status is not 2xx, or a
//! GraphQL answer carries errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::ValueEnum;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};

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

/// One simulated partner's connection to the stack, with its own cookie jar and
/// connection pool, as a browser or a Locust user has.
#[derive(Clone)]
pub struct Partner {
    http: reqwest::Client,
    base: String,
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
        Ok(Self {
            http: http_client(timeout, token)?,
            base: base.trim_end_matches('/').to_owned(),
            api,
            recorder,
            username,
        })
    }

    pub async fn register(&self, password: &str) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => self
                .rest(
                    REST_JOIN,
                    self.post("/ecanteen/join")
                        .json(&self.credentials(password)),
                )
                .await
                .map(drop),
            ApiKind::Graphql => self
                .graphql(
                    GQL_REGISTER,
                    "mutation($i: RegisterInput!) { register(input: $i) { id } }",
                    json!({ "i": self.credentials(password) }),
                )
                .await
                .map(drop),
        }
    }

    pub async fn login(&self, password: &str) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => self
                .rest(REST_LOGIN, self.post("/ecanteen/login").json(&self.credentials(password)))
                .await
                .map(drop),
            ApiKind::Graphql => self
                .graphql(
                    GQL_LOGIN,
                    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id } }",
                    json!({ "u": self.username, "p": password }),
                )
                .await
                .map(drop),
        }
    }

    /// Creates an API token (the invariant check reads the ledger with it after logout).
    pub async fn create_token(&self, name: &str) -> Result<String, Failed> {
        let value = match self.api {
            ApiKind::Rest => {
                self.rest(
                    REST_TOKEN,
                    self.post("/ecanteen/tokens").json(&json!({ "name": name })),
                )
                .await?
            }
            ApiKind::Graphql => self
                .graphql(
                    GQL_TOKEN,
                    "mutation($n: String!) { createApiToken(name: $n) { token } }",
                    json!({ "n": name }),
                )
                .await?["createApiToken"]
                .clone(),
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
                let request = self
                    .post("/ecanteen/product")
                    .header("idempotency-key", key)
                    .json(&body);
                seen_rest(&self.rest(REST_CREATE, request).await?)
            }
            ApiKind::Graphql => {
                let query = "mutation($i: CreateProductInput!, $image: Upload) { \
                    createProduct(input: $i, image: $image) { id quantity version } }";
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
                    None => self.graphql(GQL_CREATE, query, variables).await?,
                    Some(png) => {
                        let form = reqwest::multipart::Form::new()
                            .text(
                                "operations",
                                json!({ "query": query, "variables": variables }).to_string(),
                            )
                            .text("map", r#"{"0": ["variables.image"]}"#)
                            .part(
                                "0",
                                reqwest::multipart::Part::bytes(png.clone())
                                    .file_name("picture.png")
                                    .mime_str("image/png")
                                    .map_err(|e| Failed(e.to_string()))?,
                            );
                        let request = self
                            .post("/graphql")
                            .header("apollo-require-preflight", "1")
                            .multipart(form);
                        self.send(GQL_CREATE, request, true).await?
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
                let request = self
                    .http
                    .get(self.url("/ecanteen/product"))
                    .query(&[("user_id", &self.username)]);
                Ok(array_len(&self.rest(REST_VIEW_OWN, request).await?))
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(
                        GQL_VIEW_OWN,
                        "query($u: String!) { products(first: 100, filter: {ownerUsername: $u}) \
                         { nodes { id name description price quantity category version imageUrl } } }",
                        json!({ "u": self.username }),
                    )
                    .await?;
                Ok(array_len(&data["products"]["nodes"]))
            }
        }
    }

    /// The first page of the whole catalogue (the original "view all"), with owners.
    pub async fn view_all(&self) -> Result<usize, Failed> {
        match self.api {
            ApiKind::Rest => {
                let request = self.http.get(self.url("/ecanteen/product?limit=50"));
                Ok(array_len(&self.rest(REST_VIEW_ALL, request).await?))
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(
                        GQL_VIEW_ALL,
                        "{ products(first: 50) { nodes { id name description price quantity \
                         category imageUrl owner { username } } } }",
                        json!({}),
                    )
                    .await?;
                Ok(array_len(&data["products"]["nodes"]))
            }
        }
    }

    /// The read the capacity mode repeats: 20 products, no owners.
    pub async fn read_page(&self) -> Result<usize, Failed> {
        match self.api {
            ApiKind::Rest => {
                let request = self.http.get(self.url("/ecanteen/product?limit=20"));
                Ok(array_len(&self.rest(REST_READ, request).await?))
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(
                        GQL_READ,
                        "{ products(first: 20) { nodes { id name price quantity } } }",
                        json!({}),
                    )
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
                let request = self
                    .http
                    .put(self.url(&format!("/ecanteen/product/{}", seen.id)))
                    .json(&body);
                self.rest(REST_EDIT, request).await?;
                Ok(seen)
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(
                        GQL_EDIT,
                        "mutation($id: ID!, $i: UpdateProductInput!, $v: Int) { \
                         updateProduct(id: $id, input: $i, expectedVersion: $v) { id quantity version } }",
                        json!({ "id": seen.id.to_string(), "i": { "name": name, "price": price }, "v": seen.version }),
                    )
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
                let request = self
                    .post(&format!("/ecanteen/product/{id}/stock"))
                    .header("idempotency-key", key)
                    .json(&json!({ "delta": delta, "reason": reason }));
                seen_rest(&self.rest(REST_STOCK, request).await?)
            }
            ApiKind::Graphql => {
                let data = self
                    .graphql(
                        GQL_STOCK,
                        "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { \
                         product { id quantity version } } }",
                        json!({ "i": {
                            "productId": id.to_string(),
                            "delta": delta,
                            "reason": reason.to_uppercase(),
                            "idempotencyKey": key,
                        } }),
                    )
                    .await?;
                seen_graphql(&data["adjustStock"]["product"])
            }
        }
    }

    pub async fn delete(&self, seen: Seen) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => {
                let request = self
                    .http
                    .delete(self.url(&format!("/ecanteen/product/{}", seen.id)));
                self.rest(REST_DELETE, request).await.map(drop)
            }
            ApiKind::Graphql => self
                .graphql(
                    GQL_DELETE,
                    "mutation($id: ID!, $v: Int) { deleteProduct(id: $id, expectedVersion: $v) { id } }",
                    json!({ "id": seen.id.to_string(), "v": seen.version }),
                )
                .await
                .map(drop),
        }
    }

    pub async fn logout(&self) -> Result<(), Failed> {
        match self.api {
            ApiKind::Rest => {
                let request = self.http.get(self.url("/ecanteen/logout"));
                self.rest(REST_LOGOUT, request).await.map(drop)
            }
            ApiKind::Graphql => self
                .graphql(GQL_LOGOUT, "mutation { logout }", json!({}))
                .await
                .map(drop),
        }
    }

    fn credentials(&self, password: &str) -> Value {
        json!({ "username": self.username, "password": password })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(self.url(path))
    }

    async fn rest(&self, route: Route, request: RequestBuilder) -> Result<Value, Failed> {
        self.send(route, request, false).await
    }

    /// A GraphQL operation; answers its `data`.
    async fn graphql(&self, route: Route, query: &str, variables: Value) -> Result<Value, Failed> {
        let request = self
            .post("/graphql")
            .json(&json!({ "query": query, "variables": variables }));
        self.send(route, request, true).await
    }

    /// Sends a request, as a polite client would: a refusal (429 or 503 with
    /// `Retry-After`) is waited out, the wait doubling at each further refusal and
    /// stretched by up to half at random (so refused clients do not all come back in
    /// the same instant), and the request is sent again, up to [`MAX_RETRIES`] times.
    /// Each attempt is recorded. A request whose body cannot be sent twice (a streamed
    /// upload) is not retried.
    async fn send(
        &self,
        route: Route,
        mut request: RequestBuilder,
        graphql: bool,
    ) -> Result<Value, Failed> {
        let mut retries = 0;
        loop {
            let again = request.try_clone();
            let started = Instant::now();
            let answer = async {
                let response = request.send().await?;
                let status = response.status();
                let retry_after = retry_after(&response);
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, retry_after, body))
            }
            .await;
            let latency = started.elapsed();
            let (size, outcome, refused_for) = match answer {
                Ok((status, retry_after, body)) => {
                    let refused = matches!(status.as_u16(), 429 | 503)
                        .then_some(retry_after)
                        .flatten();
                    (body.len() as u64, judge(status, &body, graphql), refused)
                }
                Err(err) => (0, Err(transport_error(&err)), None),
            };
            self.recorder.record(Sample {
                route,
                latency,
                size,
                error: outcome.as_ref().err().cloned(),
                refused: refused_for.is_some(),
            });
            match (refused_for, again) {
                (Some(wait), Some(again)) if retries < MAX_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(backoff(wait, retries, rand::random::<f64>())).await;
                    request = again;
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

/// The `Retry-After` of a response, in seconds (the form this service sends).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn http_client(timeout: Duration, token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
    }
    Ok(reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
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

fn transport_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connection failed".into()
    } else if err.is_body() || err.is_decode() {
        "answer cut short".into()
    } else {
        "connection error".into()
    }
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

//! The one HTTP client the tests and the load tester speak to e-canteen with.
//!
//! - [`Client`] keeps a partner's credential (the session cookie the service sets, or
//!   an API token), sends requests through a [`Transport`], and runs a partner's
//!   everyday operations ([`Client::register`], [`Client::login`], …).
//! - [`documents`] holds the GraphQL documents of those operations, each written once.
//! - [`requests`] builds the requests (GraphQL as JSON or as a multipart upload, REST
//!   with a JSON body), so that the load tester, which times and retries each one
//!   itself, builds them the same way.
//! - A transport is where the requests go: [`Remote`] to an address (a replica or the
//!   balancer, over reqwest); the API tests drive a replica's router in process.
//!
//! The operations that return values panic when the service refuses them: this is a
//! test client, and a refusal there is a broken expectation. Code that must go on after
//! a failure (the load tester) uses [`Client::try_send`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use serde_json::{json, Value};

pub mod documents;
mod remote;
pub mod requests;

pub use remote::Remote;
pub use requests::UploadFile;

/// Where a [`Client`]'s requests go.
pub trait Transport {
    /// The body type the transport sends (every such type can be made from bytes).
    type Body: From<Bytes> + From<String> + From<Vec<u8>> + From<&'static str> + Send;

    /// Sends one request and reads the whole answer.
    fn round_trip(
        &self,
        request: Request<Self::Body>,
    ) -> impl Future<Output = Result<Response, TransportError>> + Send;
}

/// A request that got no answer: the connection failed, timed out or was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError(pub String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

/// A whole HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Retry-After`, in seconds (the form this service sends).
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

/// The first GraphQL error's code in an answer, if any.
pub fn first_code(response: &Value) -> Option<String> {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

/// The password the tests' partners sign up with.
pub const PASSWORD: &str = "correct horse battery";

/// A browser-like client: it keeps the session cookie the service sets (and forgets it
/// when the service clears it), or sends an API token as `Authorization: Bearer`.
#[derive(Clone)]
pub struct Client<T> {
    transport: T,
    pub cookie: Option<String>,
    pub bearer: Option<String>,
}

impl<T: Transport> Client<T> {
    /// A client with no credential.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            cookie: None,
            bearer: None,
        }
    }

    /// The same credentials, sent elsewhere (another replica, say).
    pub fn via<U>(&self, transport: U) -> Client<U> {
        Client {
            transport,
            cookie: self.cookie.clone(),
            bearer: self.bearer.clone(),
        }
    }

    /// Adds this client's cookie or bearer token to a request.
    pub fn authorize<B>(&self, mut request: Request<B>) -> Request<B> {
        if let Some(cookie) = self.cookie.as_deref().and_then(|c| c.parse().ok()) {
            request.headers_mut().insert(header::COOKIE, cookie);
        }
        let bearer = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
        if let Some(value) = bearer.and_then(|b| b.parse().ok()) {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        request
    }

    /// Sends a request with this client's credential, and keeps the cookie the answer
    /// sets or clears.
    pub async fn try_send(
        &mut self,
        request: Request<T::Body>,
    ) -> Result<Response, TransportError> {
        let response = self.transport.round_trip(self.authorize(request)).await?;
        for set_cookie in response.headers.get_all(header::SET_COOKIE) {
            let raw = set_cookie.to_str().unwrap_or_default();
            let pair = raw.split(';').next().unwrap_or_default().trim().to_owned();
            let cleared = raw.contains("Max-Age=0") || pair.ends_with('=');
            self.cookie = if cleared { None } else { Some(pair) };
        }
        Ok(response)
    }

    /// [`Client::try_send`] for a test: a request that gets no answer panics.
    pub async fn send(&mut self, request: Request<T::Body>) -> Response {
        self.try_send(request)
            .await
            .unwrap_or_else(|e| panic!("no answer: {e}"))
    }

    /// Sends a request built by [`requests`].
    pub async fn send_built(&mut self, request: Request<Bytes>) -> Response {
        self.send(request.map(T::Body::from)).await
    }

    /// Sends a request built by [`requests`]; no answer is an error.
    pub async fn try_send_built(
        &mut self,
        request: Request<Bytes>,
    ) -> Result<Response, TransportError> {
        self.try_send(request.map(T::Body::from)).await
    }

    pub async fn get(&mut self, uri: &str) -> Response {
        self.send_built(requests::empty("GET", uri, &[])).await
    }

    /// A `POST /graphql` with a body of any content type.
    pub async fn post_raw(&mut self, content_type: &str, body: impl Into<T::Body>) -> Response {
        self.rest_raw("POST", "/graphql", content_type, body, &[])
            .await
    }

    /// A REST call: `body` is sent as JSON, with any extra headers.
    pub async fn rest(
        &mut self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let request = match body {
            Some(body) => requests::json(method, uri, &body, headers),
            None => requests::empty(method, uri, headers),
        };
        self.send_built(request).await
    }

    /// A REST call with a body of any content type.
    pub async fn rest_raw(
        &mut self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: impl Into<T::Body>,
        headers: &[(&str, &str)],
    ) -> Response {
        let request = requests::empty(method, uri, headers).map(|_| body.into());
        self.send(requests::with_header(request, "content-type", content_type))
            .await
    }

    /// Runs one GraphQL operation and returns the whole answer.
    pub async fn gql(&mut self, query: &str, variables: Value) -> Value {
        self.send_built(requests::graphql(query, variables))
            .await
            .json()
    }

    /// Runs an operation that must succeed, returning `data`.
    pub async fn ok(&mut self, query: &str, variables: Value) -> Value {
        let response = self.gql(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response:#}"
        );
        response["data"].clone()
    }

    /// Runs an operation that must fail, returning its first error's code.
    pub async fn err_code(&mut self, query: &str, variables: Value) -> String {
        let response = self.gql(query, variables).await;
        first_code(&response).unwrap_or_else(|| panic!("expected an error, got {response:#}"))
    }

    /// Sends a GraphQL multipart request (the upload spec): `operations`, `map`, files.
    /// `preflight` adds the `X-Requested-With` header that cookie uploads need.
    pub async fn upload(
        &mut self,
        query: &str,
        variables: Value,
        files: Vec<UploadFile<'_>>,
        preflight: bool,
    ) -> Response {
        self.send_built(requests::upload(query, variables, &files, preflight))
            .await
    }

    /// Signs a partner up; answers `{ id username }`.
    pub async fn register(&mut self, username: &str, password: &str) -> Value {
        let data = self
            .ok(documents::REGISTER, json!({ "u": username, "p": password }))
            .await;
        data["register"].clone()
    }

    /// Logs in (the client keeps the session cookie); answers `{ id username }`.
    pub async fn login(&mut self, username: &str, password: &str) -> Value {
        let data = self
            .ok(documents::LOGIN, json!({ "u": username, "p": password }))
            .await;
        data["login"].clone()
    }

    /// Signs up and logs in with [`PASSWORD`].
    pub async fn sign_in(&mut self, username: &str) {
        self.register(username, PASSWORD).await;
        self.login(username, PASSWORD).await;
    }

    pub async fn logout(&mut self) {
        self.ok(documents::LOGOUT, json!({})).await;
    }

    /// Creates an API token (the client needs a session) and returns its secret.
    pub async fn api_token(&mut self, name: &str) -> String {
        let data = self
            .ok(documents::CREATE_API_TOKEN, json!({ "n": name }))
            .await;
        data["createApiToken"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {data}"))
            .to_owned()
    }

    /// Creates a product (price Rp 10.000, category makanan) and returns its id.
    pub async fn create_product(&mut self, name: &str, quantity: i64) -> String {
        let input =
            json!({ "name": name, "price": 10000, "quantity": quantity, "category": "makanan" });
        let data = self
            .ok(documents::CREATE_PRODUCT, json!({ "i": input }))
            .await;
        data["createProduct"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {data}"))
            .to_owned()
    }

    pub async fn quantity(&mut self, id: &str) -> i64 {
        let data = self
            .ok(documents::PRODUCT_QUANTITY, json!({ "id": id }))
            .await;
        data["product"]["quantity"]
            .as_i64()
            .unwrap_or_else(|| panic!("no quantity in {data}"))
    }

    /// Sells (`delta < 0`) or adds stock; answers the whole GraphQL answer.
    pub async fn adjust(&mut self, id: &str, delta: i64) -> Value {
        let input = json!({ "productId": id, "delta": delta, "reason": "SALE" });
        self.gql(documents::ADJUST_STOCK, json!({ "i": input }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport that answers every request with the same headers, and keeps what
    /// it was sent.
    struct Answering {
        set_cookie: &'static str,
        sent: std::sync::Mutex<Vec<HeaderMap>>,
    }

    impl Transport for Answering {
        type Body = Bytes;

        async fn round_trip(&self, request: Request<Bytes>) -> Result<Response, TransportError> {
            self.sent
                .lock()
                .map_err(|e| TransportError(e.to_string()))?
                .push(request.headers().clone());
            let mut headers = HeaderMap::new();
            if let Ok(value) = self.set_cookie.parse() {
                headers.insert(header::SET_COOKIE, value);
            }
            Ok(Response {
                status: StatusCode::OK,
                headers,
                body: Bytes::from_static(b"{}"),
            })
        }
    }

    fn answering(set_cookie: &'static str) -> Client<Answering> {
        Client::new(Answering {
            set_cookie,
            sent: std::sync::Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn the_session_cookie_is_kept_sent_and_forgotten_when_cleared() {
        let mut c = answering("ecanteen_session=abc; Path=/; HttpOnly; SameSite=Lax");
        c.get("/").await;
        assert_eq!(c.cookie.as_deref(), Some("ecanteen_session=abc"));
        c.get("/").await;
        let sent = c.transport.sent.lock().unwrap().clone();
        assert_eq!(sent[1][header::COOKIE], "ecanteen_session=abc");

        let mut cleared = answering("ecanteen_session=; Max-Age=0; Path=/");
        cleared.cookie = Some("ecanteen_session=abc".into());
        cleared.get("/").await;
        assert_eq!(cleared.cookie, None);
    }

    #[tokio::test]
    async fn a_token_is_sent_as_a_bearer() {
        let mut c = answering("");
        c.bearer = Some("ect_1".into());
        c.get("/").await;
        let sent = c.transport.sent.lock().unwrap().clone();
        assert_eq!(sent[0][header::AUTHORIZATION], "Bearer ect_1");
        assert!(sent[0].get(header::COOKIE).is_none());
    }

    #[test]
    fn an_upload_names_each_file_in_the_map() {
        let files = [UploadFile {
            variable: "image",
            filename: "p.png",
            content_type: "image/png",
            bytes: vec![1, 2, 3],
        }];
        let request = requests::upload("mutation { x }", json!({}), &files, true);
        let body = String::from_utf8_lossy(request.body()).into_owned();
        assert!(body.contains(r#"{"0":["variables.image"]}"#), "{body}");
        assert!(body.contains("filename=\"p.png\"\r\nContent-Type: image/png"));
        assert_eq!(request.headers()["x-requested-with"], "XMLHttpRequest");
        let content_type = request.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with("multipart/form-data; boundary="));
    }
}

//! Test harness: an app per test on its own database, driven without sockets.
//!
//! [`dual_tests!`] runs each test body twice, once on a fresh SQLite file and once on a
//! fresh PostgreSQL database (`ECANTEEN_TEST_POSTGRES_URL`, default the local server),
//! so both engines pass the same tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use ecanteen_api::config::Config;
pub use ecanteen_api::db::Sql;
use ecanteen_api::http::{router, AppState};
use ecanteen_api::startup::build_state;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

fn postgres_admin_url() -> String {
    std::env::var("ECANTEEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub url: String,
    pub engine: Engine,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> Self {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self {
                    url,
                    engine,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Engine::Postgres => {
                static N: AtomicU64 = AtomicU64::new(0);
                let name = format!(
                    "ecanteen_test_{}_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst),
                    rand_suffix()
                );
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL must be running for the tests ({admin}): {e}")
                    });
                sqlx::query(&format!("create database {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(b, _)| b)
                    .to_owned();
                Self {
                    url: format!("{base}/{name}"),
                    engine,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = postgres_admin_url();
        // Drop runs outside any async context we may block, so use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
                sqlx::query(&format!("drop database if exists {name} with (force)"))
                    .execute(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
    }
}

/// One replica instance, as a router on a database.
#[derive(Clone)]
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub db: Arc<TestDb>,
}

pub fn test_config(url: &str) -> Config {
    let mut config = Config::defaults();
    config.database_url = url.to_owned();
    // Debug builds write slowly, and the tests' bursts of concurrent writes are not
    // overload: a write waits for its turn as long as the database timeout. The write
    // deadline and queue have their own tests (overload::a_write_past_the_write_…).
    config.write_wait_ms = config.db_timeout_secs * 1000;
    config.write_queue = 100_000;
    config
}

impl TestApp {
    pub async fn new(engine: Engine) -> Self {
        let db = Arc::new(TestDb::new(engine).await);
        Self::on(db, |_| {}).await
    }

    pub async fn with_config(engine: Engine, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = Arc::new(TestDb::new(engine).await);
        Self::on(db, tweak).await
    }

    /// Another instance (its own pool, as a separate replica would have) on `db`.
    pub async fn on(db: Arc<TestDb>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(&db.url);
        tweak(&mut config);
        let state = build_state(&config).await.expect("build app state");
        Self {
            router: router(state.clone()),
            state,
            db,
        }
    }

    /// A second replica on the same database.
    pub async fn sibling(&self) -> Self {
        Self::on(self.db.clone(), |_| {}).await
    }

    pub fn client(&self) -> Client {
        Client {
            router: self.router.clone(),
            cookie: None,
            bearer: None,
        }
    }

    /// A client logged in as a freshly registered partner.
    pub async fn partner(&self, username: &str) -> Client {
        let mut client = self.client();
        client.register(username, PASSWORD).await;
        client.login(username, PASSWORD).await;
        client
    }

    pub fn engine(&self) -> Engine {
        self.db.engine
    }

    /// Lets every session's time run out, as inactivity would.
    pub async fn expire_sessions(&self) {
        let statement = match self.engine() {
            Engine::Sqlite => "update tower_sessions set expiry_date = '2000-01-01T00:00:00Z'",
            Engine::Postgres => {
                "update tower_sessions.session set expiry_date = now() - interval '1 second'"
            }
        };
        self.state
            .service
            .db()
            .execute(&Sql::new(statement))
            .await
            .expect("expire sessions");
    }
}

pub const PASSWORD: &str = "correct horse battery";

/// A raw HTTP response.
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A browser-like client: keeps its session cookie, or sends a bearer token.
#[derive(Clone)]
pub struct Client {
    router: Router,
    pub cookie: Option<String>,
    pub bearer: Option<String>,
}

impl Client {
    /// The same credentials, sent to another instance.
    pub fn to(&self, app: &TestApp) -> Client {
        Client {
            router: app.router.clone(),
            ..self.clone()
        }
    }

    /// Adds this client's cookie or bearer token to a request.
    pub fn authorize(&self, mut req: Request<Body>) -> Request<Body> {
        if let Some(cookie) = &self.cookie {
            req.headers_mut()
                .insert(header::COOKIE, cookie.parse().expect("cookie header"));
        }
        if let Some(token) = &self.bearer {
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("auth header"),
            );
        }
        req
    }

    pub async fn send(&mut self, req: Request<Body>) -> HttpResponse {
        let req = self.authorize(req);
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        for set_cookie in headers.get_all(header::SET_COOKIE) {
            let raw = set_cookie.to_str().unwrap_or_default();
            let pair = raw.split(';').next().unwrap_or_default().trim().to_owned();
            let removed = raw.contains("Max-Age=0") || pair.ends_with('=');
            self.cookie = if removed { None } else { Some(pair) };
        }
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn post_raw(&mut self, content_type: &str, body: impl Into<Body>) -> HttpResponse {
        let req = Request::post("/graphql")
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .expect("request");
        self.send(req).await
    }

    /// A REST call: `body` is sent as JSON, with any extra headers.
    pub async fn rest(
        &mut self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        match body {
            Some(body) => {
                self.rest_raw(method, uri, "application/json", body.to_string(), headers)
                    .await
            }
            None => {
                let mut req = Request::builder().method(method).uri(uri);
                for (name, value) in headers {
                    req = req.header(*name, *value);
                }
                self.send(req.body(Body::empty()).expect("request")).await
            }
        }
    }

    /// A REST call with a body of any content type.
    pub async fn rest_raw(
        &mut self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(body.into()).expect("request")).await
    }

    pub async fn get(&mut self, uri: &str) -> HttpResponse {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    /// Runs one GraphQL operation and returns the whole response body.
    pub async fn gql(&mut self, query: &str, variables: Value) -> Value {
        let response = self.send(gql_request(query, variables)).await;
        response.json()
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

    pub async fn register(&mut self, username: &str, password: &str) -> Value {
        self.ok(
            "mutation($u: String!, $p: String!) { register(input: {username: $u, password: $p}) { id username } }",
            json!({ "u": username, "p": password }),
        )
        .await["register"]
            .clone()
    }

    pub async fn login(&mut self, username: &str, password: &str) -> Value {
        self.ok(
            "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id username } }",
            json!({ "u": username, "p": password }),
        )
        .await["login"]
            .clone()
    }

    /// Creates an API token (the client needs a session) and returns its secret.
    pub async fn api_token(&mut self, name: &str) -> String {
        self.ok(
            "mutation($n: String!) { createApiToken(name: $n) { token } }",
            json!({ "n": name }),
        )
        .await["createApiToken"]["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Creates a product and returns its id.
    pub async fn create_product(&mut self, name: &str, quantity: i64) -> String {
        let data = self
            .ok(
                "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }",
                json!({ "i": { "name": name, "price": 10000, "quantity": quantity, "category": "makanan" } }),
            )
            .await;
        data["createProduct"]["id"].as_str().expect("id").to_owned()
    }

    pub async fn quantity(&mut self, id: &str) -> i64 {
        let data = self
            .ok(
                "query($id: ID!) { product(id: $id) { quantity } }",
                json!({ "id": id }),
            )
            .await;
        data["product"]["quantity"].as_i64().expect("quantity")
    }

    pub async fn adjust(&mut self, id: &str, delta: i64) -> Value {
        self.gql(
            "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { product { quantity } movement { id quantityAfter } replayed } }",
            json!({ "i": { "productId": id, "delta": delta, "reason": "SALE" } }),
        )
        .await
    }
}

/// A GraphQL operation as a JSON `POST /graphql`, without credentials.
pub fn gql_request(query: &str, variables: Value) -> Request<Body> {
    let body = json!({ "query": query, "variables": variables }).to_string();
    Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request")
}

pub fn first_code(response: &Value) -> Option<String> {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

/// Declares tests that run once on SQLite and once on PostgreSQL:
/// `dual_tests! { async fn name(app) { … } }`.
macro_rules! dual_tests {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $app = $crate::helpers::TestApp::new($crate::helpers::Engine::Sqlite).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $app = $crate::helpers::TestApp::new($crate::helpers::Engine::Postgres).await;
                    $body
                }
            }
        )*
    };
}
pub(crate) use dual_tests;

/// One file of a GraphQL multipart request: the variable path it fills, and its bytes.
pub struct UploadFile<'a> {
    pub variable: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub bytes: Vec<u8>,
}

impl Client {
    /// Sends a GraphQL multipart request (the upload spec): `operations`, `map`, files.
    /// `preflight` adds the `X-Requested-With` header that cookie uploads need.
    pub async fn upload(
        &mut self,
        query: &str,
        variables: Value,
        files: Vec<UploadFile<'_>>,
        preflight: bool,
    ) -> HttpResponse {
        let boundary = "ecanteen-test-boundary-7MA4YWxkTrZu0gW";
        let mut body: Vec<u8> = Vec::new();
        let mut part = |name: &str, filename: Option<(&str, &str)>, content: &[u8]| {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some((filename, content_type)) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        };
        let operations = json!({ "query": query, "variables": variables }).to_string();
        part("operations", None, operations.as_bytes());
        let map: serde_json::Map<String, Value> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (i.to_string(), json!([format!("variables.{}", f.variable)])))
            .collect();
        part("map", None, Value::Object(map).to_string().as_bytes());
        for (i, f) in files.iter().enumerate() {
            part(&i.to_string(), Some((f.filename, f.content_type)), &f.bytes);
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut req = Request::post("/graphql").header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        );
        if preflight {
            req = req.header("x-requested-with", "XMLHttpRequest");
        }
        self.send(req.body(Body::from(body)).expect("request"))
            .await
    }
}

/// Test pictures, made with the same image crate the server decodes with.
pub mod pictures {
    use std::io::Cursor;

    use image::{ImageFormat, Rgba, RgbaImage};

    pub fn encode(width: u32, height: u32, format: ImageFormat, seed: u8) -> Vec<u8> {
        // Noise, so that size in bytes grows with size in pixels.
        let img = RgbaImage::from_fn(width, height, |x, y| {
            let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503))
                .wrapping_mul(2_246_822_519);
            Rgba([seed, (n >> 8) as u8, (n >> 16) as u8, 255])
        });
        let mut out = Cursor::new(Vec::new());
        match format {
            ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(img)
                .to_rgb8()
                .write_to(&mut out, format)
                .expect("encode"),
            _ => img.write_to(&mut out, format).expect("encode"),
        }
        out.into_inner()
    }

    pub fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
        encode(width, height, ImageFormat::Png, seed)
    }

    /// A small, valid PNG whose header claims `width`×`height`: a decompression bomb's
    /// shape (the CRC is recomputed, so only the size gives it away).
    pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(8, 8, 1);
        // Signature (8) + length (4) + "IHDR" (4), then width and height.
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

//! Test harness: an app per test on its own database, driven without sockets.
//!
//! [`dual_tests!`] runs each test body twice, once on a fresh SQLite file and once on a
//! fresh PostgreSQL database (`ECANTEEN_TEST_POSTGRES_URL`, default the local server),
//! so both engines pass the same tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use ecanteen_api::config::Config;
pub use ecanteen_api::db::Sql;
use ecanteen_api::http::{router, AppState};
use ecanteen_api::startup::build_state;
use ecanteen_test_client::{requests, Transport, TransportError};
use http_body_util::BodyExt as _;
use serde_json::Value;
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
    // So do reads, for a connection of PostgreSQL's read lane (`db::lanes`, tested in
    // overload::postgres_…).
    config.read_wait_ms = config.db_timeout_secs * 1000;
    config.read_queue = 100_000;
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
        Client::new(InProcess(self.router.clone()))
    }

    /// A client logged in as a freshly registered partner.
    pub async fn partner(&self, username: &str) -> Client {
        let mut client = self.client();
        client.sign_in(username).await;
        client
    }

    /// The SQLite write gate of this replica, for a test that holds the write turn
    /// itself; panics on PostgreSQL.
    pub fn sqlite_write_gate(&self) -> &ecanteen_api::db::WriteGate {
        let ecanteen_api::db::Db::Sqlite(_, gate) = self.state.service.db() else {
            unreachable!("a SQLite app")
        };
        gate
    }

    /// PostgreSQL's lanes (`db::lanes`) of a PostgreSQL app.
    pub fn postgres_lanes(&self) -> &ecanteen_api::db::PgLanes {
        let ecanteen_api::db::Db::Postgres(lanes, _) = self.state.service.db() else {
            unreachable!("a PostgreSQL app")
        };
        lanes
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

pub use ecanteen_test_client::{documents, first_code, UploadFile, PASSWORD};

/// A client of one replica, driven in process through its router.
pub type Client = ecanteen_test_client::Client<InProcess>;

/// A whole HTTP answer.
pub type HttpResponse = ecanteen_test_client::Response;

/// The transport of the API tests: a replica's router, called without sockets.
#[derive(Clone)]
pub struct InProcess(Router);

impl Transport for InProcess {
    type Body = Body;

    async fn round_trip(&self, request: Request<Body>) -> Result<HttpResponse, TransportError> {
        let response = self
            .0
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| match e {})?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| TransportError(e.to_string()))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Sends a client's credentials to another replica.
pub trait SendTo {
    fn to(&self, app: &TestApp) -> Client;
}

impl SendTo for Client {
    fn to(&self, app: &TestApp) -> Client {
        self.via(InProcess(app.router.clone()))
    }
}

/// A GraphQL operation as a JSON `POST /graphql`, without credentials.
pub fn gql_request(query: &str, variables: Value) -> Request<Body> {
    requests::graphql(query, variables).map(Body::from)
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

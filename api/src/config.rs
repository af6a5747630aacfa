//! Configuration: command-line flags, each also an `ECANTEEN_…` environment variable.
//!
//! The flags `--listen` and `--database-url` are the CLI contract of
//! `shared/design.md`; the rest are tuning with safe defaults. `ecanteen-api --help`
//! lists them all, and the README's configuration table mirrors this file.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::service::PasswordAdmission;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// One e-canteen replica.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ecanteen-api",
    version,
    about = "One stateless e-canteen inventory replica (GraphQL over HTTP)"
)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port, printed at start). A socket handed
    /// over by a supervisor is served instead: `LISTEN_FDS=1` with the socket on
    /// descriptor 3, and `LISTEN_PID` naming this process (systemd's socket activation)
    /// or `LISTEN_FDNAMES=ecanteen-api` (the balancer's `--spawn`).
    #[arg(long, env = "ECANTEEN_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// `sqlite://FILE` (created and migrated on start) or `postgres://…`.
    #[arg(
        long,
        env = "ECANTEEN_DATABASE_URL",
        default_value = "sqlite://ecanteen.db"
    )]
    pub database_url: String,

    /// Database connections per replica.
    #[arg(long, env = "ECANTEEN_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: u32,

    /// Seconds a request waits for a database connection or SQLite's write lock before
    /// it is answered 503.
    #[arg(long, env = "ECANTEEN_DB_TIMEOUT_SECS", default_value_t = 5)]
    pub db_timeout_secs: u64,

    /// Milliseconds a write waits for its turn at SQLite's one writer before it is
    /// refused with 503 and `Retry-After`. Past what SQLite commits per second, writes
    /// queue; this bounds the queue, so the writes admitted stay fast. At most the
    /// database timeout.
    #[arg(long, env = "ECANTEEN_WRITE_WAIT_MS", default_value_t = 100)]
    pub write_wait_ms: u64,

    /// Writes that may wait for their turn at SQLite's one writer at once, per
    /// replica; one more is refused at once with 503 and `Retry-After`. Keeps the
    /// writer busy and the writes admitted fast under overload. 64: one batch of the
    /// stock writer (`service::stock::batch`), a few milliseconds of work.
    #[arg(long, env = "ECANTEEN_WRITE_QUEUE", default_value_t = 64)]
    pub write_queue: usize,

    /// On PostgreSQL, milliseconds a read waits for a connection of its own share of
    /// the pool (the read lane) before it is refused with 503 and `Retry-After`; 0 (the
    /// default): as long as the database timeout. The connections are split per class
    /// of work (reads, writes, sessions, upkeep: `db::lanes`), so reads never wait
    /// behind writes; writes have a bounded queue and a deadline (`--write-queue`,
    /// `--write-wait-ms`). Reads are not refused by default because a request that
    /// has written reads afterwards (a product's owner, to answer): refused then, the
    /// client is told 503 for a write that was applied, and an unkeyed write sent again
    /// applies twice. Set it only where clients send idempotency keys.
    #[arg(long, env = "ECANTEEN_READ_WAIT_MS", default_value_t = 0)]
    pub read_wait_ms: u64,

    /// On PostgreSQL, reads that may wait for a connection of the read lane at once, per
    /// replica (one more is refused with 503 and `Retry-After`); 0 (the default): no
    /// bound. See `--read-wait-ms` for why.
    #[arg(long, env = "ECANTEEN_READ_QUEUE", default_value_t = 0)]
    pub read_queue: usize,

    /// Longest a single PostgreSQL statement may run, in seconds.
    #[arg(long, env = "ECANTEEN_STATEMENT_TIMEOUT_SECS", default_value_t = 10)]
    pub statement_timeout_secs: u64,

    /// Longest a request may take, in seconds (then 504).
    #[arg(long, env = "ECANTEEN_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Largest request body, in bytes (then 413).
    #[arg(long, env = "ECANTEEN_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Largest picture, in bytes.
    #[arg(long, env = "ECANTEEN_PICTURE_MAX_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub picture_max_bytes: usize,

    /// Longest side of a picture, in pixels.
    #[arg(long, env = "ECANTEEN_PICTURE_MAX_SIDE", default_value_t = 4096)]
    pub picture_max_side: u32,

    /// Most files in one multipart request.
    #[arg(long, env = "ECANTEEN_MAX_FILES", default_value_t = 4)]
    pub max_files: usize,

    /// Most MiB of pictures (with thumbnails) one partner's live products may show.
    #[arg(long, env = "ECANTEEN_PICTURE_QUOTA_MIB", default_value_t = 256)]
    pub picture_quota_mib: u64,

    /// How often (milliseconds) a replica on SQLite polls the change feeds for live
    /// updates. PostgreSQL replicas are woken by LISTEN/NOTIFY instead.
    #[arg(long, env = "ECANTEEN_EVENT_POLL_MS", default_value_t = 200)]
    pub event_poll_ms: u64,

    /// Sessions expire after this many minutes without a request.
    #[arg(long, env = "ECANTEEN_SESSION_TTL_MINS", default_value_t = 12 * 60)]
    pub session_ttl_mins: u64,

    /// A session's expiry is pushed forward (a database write) at most this often, in
    /// seconds: writing it on every request would make every read a write.
    #[arg(long, env = "ECANTEEN_SESSION_REFRESH_SECS", default_value_t = 60)]
    pub session_refresh_secs: u64,

    /// The canteen's time zone (an IANA name): where the sales report's days begin.
    #[arg(long, env = "ECANTEEN_TIME_ZONE", default_value = "Asia/Jakarta", value_parser = parse_time_zone)]
    pub time_zone: chrono_tz::Tz,

    /// Mark the session cookie `Secure` (set this behind HTTPS).
    #[arg(long, env = "ECANTEEN_SECURE_COOKIES", default_value_t = false, action = ArgAction::Set)]
    pub secure_cookies: bool,

    /// Serve GraphiQL at `GET /graphql`.
    #[arg(long, env = "ECANTEEN_GRAPHIQL", default_value_t = true, action = ArgAction::Set)]
    pub graphiql: bool,

    /// Answer introspection queries.
    #[arg(long, env = "ECANTEEN_INTROSPECTION", default_value_t = true, action = ArgAction::Set)]
    pub introspection: bool,

    /// Deepest selection nesting a query may have. The standard introspection query of
    /// GraphQL tools (GraphiQL, graphql-js, graphql-core) is 15 deep.
    #[arg(long, env = "ECANTEEN_MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,

    /// Highest complexity a query may have: fields resolved, with each paged field
    /// counted once per item a page may hold.
    #[arg(long, env = "ECANTEEN_MAX_QUERY_COMPLEXITY", default_value_t = 5000)]
    pub max_query_complexity: usize,

    /// How often, in milliseconds, readiness checks that a write could take the write
    /// lock (`/readyz` turns 503 while it cannot within --db-timeout-secs).
    #[arg(long, env = "ECANTEEN_WRITE_PROBE_MS", default_value_t = 500)]
    pub write_probe_ms: u64,

    /// Most WebSocket connections one replica holds; past it, an upgrade is answered
    /// 503 with Retry-After.
    #[arg(long, env = "ECANTEEN_MAX_WEBSOCKETS", default_value_t = 1024)]
    pub max_websockets: usize,

    /// Most WebSocket connections waiting for their connection_init at once (a socket
    /// whose session cookie checked out at the upgrade does not wait); past it an
    /// upgrade is answered 503 with Retry-After.
    #[arg(long, env = "ECANTEEN_WS_PENDING_MAX", default_value_t = 64)]
    pub ws_pending_max: usize,

    /// Most WebSocket connections waiting for their connection_init from one client
    /// address (the last X-Forwarded-For hop, else the peer).
    #[arg(long, env = "ECANTEEN_WS_PENDING_PER_ADDRESS", default_value_t = 8)]
    pub ws_pending_per_address: usize,

    /// Operations (subscribes) one partner may start per second over its WebSockets on
    /// one replica, with a burst of twice as many; past it, TOO_MANY_REQUESTS.
    #[arg(long, env = "ECANTEEN_WS_OPERATIONS_PER_SEC", default_value_t = 10)]
    pub ws_operations_per_sec: u32,

    /// Most subscriptions one WebSocket connection holds at once.
    #[arg(
        long,
        env = "ECANTEEN_MAX_SUBSCRIPTIONS_PER_SOCKET",
        default_value_t = 16
    )]
    pub max_subscriptions_per_socket: usize,

    /// Milliseconds a WebSocket client has after the upgrade to send connection_init.
    #[arg(long, env = "ECANTEEN_WS_INIT_TIMEOUT_MS", default_value_t = 5000)]
    pub ws_init_timeout_ms: u64,

    /// Milliseconds between checks of an open WebSocket's credential: within about
    /// this long of a token's revocation or a session's logout or expiry, the socket is
    /// closed (code 4403). Each check is one indexed read per socket.
    #[arg(long, env = "ECANTEEN_WS_RECHECK_MS", default_value_t = 2000)]
    pub ws_recheck_ms: u64,

    /// Milliseconds a WebSocket may stay silent before it is closed (code 3008, at
    /// least 1000). The browser client pings at a third of it, which it learns from
    /// the server's first pong.
    #[arg(long, env = "ECANTEEN_WS_KEEPALIVE_MS", default_value_t = 30_000)]
    pub ws_keepalive_ms: u64,

    /// Most fields at the root of one GraphQL operation (aliases and fragments included).
    #[arg(long, env = "ECANTEEN_MAX_ROOT_FIELDS", default_value_t = 16)]
    pub max_root_fields: usize,

    /// Most aliased fields in one GraphQL operation.
    #[arg(long, env = "ECANTEEN_MAX_ALIASES", default_value_t = 32)]
    pub max_aliases: usize,

    /// Most operations in one batched request.
    #[arg(long, env = "ECANTEEN_MAX_BATCH", default_value_t = 10)]
    pub max_batch: usize,

    /// argon2id memory in KiB (at least the OWASP 19456).
    #[arg(long, env = "ECANTEEN_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// argon2id passes (at least 2).
    #[arg(long, env = "ECANTEEN_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// argon2id lanes.
    #[arg(long, env = "ECANTEEN_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes and verifies run at once (0: one per core). Past these and the
    /// queue, logins and sign-ups are refused with 503 BUSY and Retry-After.
    #[arg(long, env = "ECANTEEN_PASSWORD_WORKERS", default_value_t = 0)]
    pub password_workers: usize,

    /// Logins and sign-ups that may wait for a password worker (0: two per worker).
    #[arg(long, env = "ECANTEEN_PASSWORD_QUEUE", default_value_t = 0)]
    pub password_queue: usize,

    /// Milliseconds a login or sign-up waits for a password worker before it is refused.
    #[arg(long, env = "ECANTEEN_PASSWORD_WAIT_MS", default_value_t = 500)]
    pub password_wait_ms: u64,

    /// Failed logins on one account tolerated within the window before it is throttled.
    #[arg(long, env = "ECANTEEN_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: i64,

    /// The login-throttling window, in minutes.
    #[arg(long, env = "ECANTEEN_LOGIN_WINDOW_MINS", default_value_t = 15)]
    pub login_window_mins: u64,

    /// The most persisted query texts (automatic persisted queries) the database keeps
    /// for all replicas; past it the oldest are dropped, and their clients send them
    /// again once.
    #[arg(long, env = "ECANTEEN_PERSISTED_QUERIES_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub persisted_queries_max: i64,

    /// The most persisted query texts kept from callers without a valid credential, a
    /// quota apart: an anonymous text only pushes out the oldest anonymous one.
    #[arg(long, env = "ECANTEEN_PERSISTED_QUERIES_ANONYMOUS_MAX", default_value_t = 1_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub persisted_queries_anonymous_max: i64,

    /// Seconds a client has to send a request's whole header (slow-loris defence); an
    /// idle keep-alive connection is closed after as long. Keep it above the idle
    /// timeout of a balancer's upstream pool (`ecanteen-balancer`: 20 s), so the
    /// balancer, not the replica, closes idle connections.
    #[arg(long, env = "ECANTEEN_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    pub header_timeout_secs: u64,

    /// On SIGTERM, milliseconds to keep serving while reporting not-ready, so a
    /// balancer stops sending new requests before the listener closes.
    #[arg(long, env = "ECANTEEN_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,

    /// On SIGTERM, seconds to wait for requests in flight before exiting anyway.
    #[arg(long, env = "ECANTEEN_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// Exit (draining first) when standard input closes: set by a supervisor such as
    /// `ecanteen-balancer --spawn`, so a replica never outlives it.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,

    /// The browser client's folder, served at `/` (the repository's `client/` by
    /// default).
    #[arg(long, env = "ECANTEEN_CLIENT_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../client"))]
    pub client_dir: std::path::PathBuf,

    /// Log line format. Logs go to standard error; standard output carries only the
    /// "listening" line.
    #[arg(long, env = "ECANTEEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// An OpenTelemetry collector to send spans to, over OTLP/HTTP (protobuf): its base
    /// URL (`http://127.0.0.1:4318`; `/v1/traces` is added) or the traces URL itself.
    /// Off by default. Each request's span continues the balancer's trace and holds the
    /// spans of its SQL statements.
    #[arg(long, env = "ECANTEEN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The access log: one line per request (method, route, status, duration,
    /// request id) for one request in N; 0 turns it off, 1 logs every request.
    #[arg(long, env = "ECANTEEN_ACCESS_LOG_EVERY", default_value_t = 1)]
    pub access_log_every: u64,
}

impl Config {
    /// The defaults, as if started with no flags and no environment.
    pub fn defaults() -> Self {
        Self::parse_from(["ecanteen-api"])
    }

    /// The password admission these flags describe (zeros pick the defaults).
    pub fn password_admission(&self) -> PasswordAdmission {
        let default = PasswordAdmission::default();
        let workers = match self.password_workers {
            0 => default.workers,
            n => n,
        };
        PasswordAdmission {
            workers,
            queue: match self.password_queue {
                0 => 2 * workers,
                n => n,
            },
            max_wait: Duration::from_millis(self.password_wait_ms),
        }
    }

    pub fn db_timeout(&self) -> Duration {
        Duration::from_secs(self.db_timeout_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn session_refresh(&self) -> Duration {
        Duration::from_secs(self.session_refresh_secs)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_mins * 60)
    }
}

/// An IANA time zone name, as `--time-zone` takes it.
fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("{name:?} is not an IANA time zone name (e.g. Asia/Jakarta, Asia/Makassar)")
    })
}

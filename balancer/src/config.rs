//! Flags of `ecanteen-balancer`, each also an `ECANTEEN_BALANCER_…` variable (and the
//! shared `ECANTEEN_DATABASE_URL`, which spawned replicas use).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The flag's value, as `ecanteen-api --log-format` takes it too.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// Each ready replica in turn, by weight (smooth weighted round robin).
    RoundRobin,
    /// The ready replica with the fewest requests in flight per unit of weight, round
    /// robin among equals.
    #[default]
    LeastConnections,
}

/// The e-canteen front door: a reverse proxy over `ecanteen-api` replicas.
#[derive(Clone, Debug, Parser)]
#[command(name = "ecanteen-balancer", version, about)]
pub struct Config {
    /// Address to serve on.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// A replica, `host:port` (repeatable; the variable takes a comma-separated list).
    #[arg(
        long = "upstream",
        env = "ECANTEEN_BALANCER_UPSTREAM",
        value_delimiter = ','
    )]
    pub upstreams: Vec<String>,

    /// A file of replicas, one `host:port [weight]` per line (`#` comments); re-read
    /// when it changes.
    #[arg(
        long = "upstreams",
        value_name = "FILE",
        env = "ECANTEEN_BALANCER_UPSTREAMS_FILE"
    )]
    pub upstreams_file: Option<PathBuf>,

    /// How to pick a replica.
    #[arg(long, env = "ECANTEEN_BALANCER_ALGORITHM", value_enum, default_value_t = Algorithm::LeastConnections)]
    pub algorithm: Algorithm,

    /// Address of the status page and Prometheus metrics.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_ADMIN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin: SocketAddr,

    /// Start and supervise this many local `ecanteen-api` replicas on free ports.
    #[arg(long, env = "ECANTEEN_BALANCER_SPAWN", default_value_t = 0)]
    pub spawn: usize,

    /// The database the spawned replicas share.
    #[arg(
        long,
        env = "ECANTEEN_DATABASE_URL",
        default_value = "sqlite://ecanteen.db"
    )]
    pub database_url: String,

    /// The `ecanteen-api` binary to spawn (default: the one beside this binary).
    #[arg(long, env = "ECANTEEN_BALANCER_API_BIN")]
    pub api_bin: Option<PathBuf>,

    /// Milliseconds between health probes (`GET /readyz`) of each replica.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_HEALTH_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub health_interval_ms: u64,

    /// Consecutive passed probes that make a replica ready.
    #[arg(long, env = "ECANTEEN_BALANCER_RISE", default_value_t = 2)]
    pub rise: u32,

    /// Consecutive failed probes that make a replica not ready.
    #[arg(long, env = "ECANTEEN_BALANCER_FALL", default_value_t = 3)]
    pub fall: u32,

    /// Consecutive connect failures or 5xx answers that eject a replica (0: never).
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_FAILS", default_value_t = 3)]
    pub max_fails: u32,

    /// Milliseconds an ejected replica is skipped.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_FAIL_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub fail_timeout_ms: u64,

    /// Most attempts for one request (the first included).
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_TRIES", default_value_t = 3)]
    pub max_tries: usize,

    /// Most requests in flight on one replica (0: no cap). Past it on every replica, a
    /// request waits up to --queue-ms for room, then gets 503 with Retry-After.
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: u64,

    /// Milliseconds a request waits for room on a replica at its cap.
    #[arg(long, env = "ECANTEEN_BALANCER_QUEUE_MS", default_value_t = 250)]
    pub queue_ms: u64,

    /// Most requests waiting for room at once; more get 503 at once.
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_QUEUED", default_value_t = 512)]
    pub max_queued: usize,

    /// Largest JSON body (GraphQL and REST), in bytes; then 413 in the route's envelope,
    /// before any replica is asked. The replicas' `--body-limit`.
    #[arg(long, env = "ECANTEEN_BALANCER_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Largest picture, in bytes: a picture upload (`PUT /ecanteen/product/{id}/image`)
    /// may have this plus --body-limit, a GraphQL upload --max-files of them plus
    /// --body-limit. The replicas' `--picture-max-bytes`.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_PICTURE_MAX_BYTES",
        default_value_t = 5 * 1024 * 1024
    )]
    pub picture_max_bytes: usize,

    /// Most files in one GraphQL upload. The replicas' `--max-files`.
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_FILES", default_value_t = 4)]
    pub max_files: usize,

    /// Seconds a client has to send a JSON body, from the end of its header (then 408).
    /// Such a body is read whole before a replica is leased.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_CLIENT_BODY_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub client_body_timeout_secs: u64,

    /// The access log: one line per request (method, status, duration, attempts,
    /// request id and trace id) for one request in N; 0 turns it off, 1 logs every
    /// request. Nothing is written below `RUST_LOG=info`.
    #[arg(long, env = "ECANTEEN_BALANCER_ACCESS_LOG_EVERY", default_value_t = 1)]
    pub access_log_every: u64,

    /// An OpenTelemetry collector to send each request's span to, over OTLP/HTTP
    /// (protobuf): its base URL (`http://127.0.0.1:4318`) or the traces URL. Off by
    /// default. Replicas started with `--spawn` are given it too.
    #[arg(long, env = "ECANTEEN_BALANCER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Milliseconds to connect to a replica.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_CONNECT_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub connect_timeout_ms: u64,

    /// Seconds to wait for a replica's answer.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_READ_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub read_timeout_secs: u64,

    /// Seconds an idle keep-alive connection to a replica is kept. Keep it below the
    /// replicas' `--header-timeout-secs` (30 s), so the balancer closes an idle
    /// connection before a replica can, and never sends a request on one being closed.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_IDLE_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub idle_timeout_secs: u64,

    /// Seconds a new connection has to send its whole request header (then it is
    /// closed), as HAProxy's `timeout http-request` and nginx's `client_header_timeout`.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_CLIENT_HEADER_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub client_header_timeout_secs: u64,

    /// Seconds a kept-alive connection may wait for its next request, the whole header
    /// of it included (then it is closed), as HAProxy's `timeout http-keep-alive`.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 15
    )]
    pub keepalive_timeout_secs: u64,

    /// Seconds one write of an answer to a client may wait for the client to read
    /// (then the connection is closed), as nginx's `send_timeout`.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_CLIENT_SEND_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub client_send_timeout_secs: u64,

    /// Most client connections open at once; past it a new one is closed at once.
    /// Default: three quarters of the file descriptors (the soft limit, raised to the
    /// hard one at start) less 256, at most 16,384, so `accept()` never runs out of
    /// descriptors and the connections to the replicas have the last quarter.
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most client connections from one address (a trusted proxy's excepted); 0: no
    /// per-address cap.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,

    /// Most requests in flight from one client address, the writing of their answers
    /// included (0: no cap); past it, 429 with Retry-After. One address cannot take
    /// every replica's --max-in-flight.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_MAX_IN_FLIGHT_PER_ADDRESS",
        default_value_t = 64
    )]
    pub max_in_flight_per_address: usize,

    /// Seconds an upload (a picture) may take to arrive whole, from its header (then
    /// 408). Keep it below the replicas' --request-timeout-secs (30).
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_UPLOAD_TIMEOUT_SECS",
        default_value_t = 25
    )]
    pub upload_timeout_secs: u64,

    /// Most WebSocket tunnels open at once. A tunnel is not a request in flight: once
    /// upgraded it leaves the replica's --max-in-flight and counts here; past it an
    /// upgrade gets 503 with Retry-After.
    #[arg(long, env = "ECANTEEN_BALANCER_MAX_WEBSOCKETS", default_value_t = 4096)]
    pub max_websockets: usize,

    /// Most WebSocket tunnels from one client address.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_MAX_WEBSOCKETS_PER_ADDRESS",
        default_value_t = 64
    )]
    pub max_websockets_per_address: usize,

    /// Proxies in front of the balancer (a TLS terminator), as `CIDR,CIDR,…`: from
    /// their connections the client's address is read from `X-Forwarded-For`, right to
    /// left past every trusted hop, for the per-address limits and the logs. Empty:
    /// none, and the header is never believed.
    #[arg(long, env = "ECANTEEN_BALANCER_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Requests per second one client IP may make (a burst of one second's worth);
    /// then 429 with `Retry-After`. 0 turns the limit off.
    #[arg(long, env = "ECANTEEN_BALANCER_RATE_LIMIT_IP", default_value_t = 1000)]
    pub rate_limit_ip: u32,

    /// Requests per second one partner may make, over all its sessions and tokens
    /// (a burst of one second's worth); then 429 with `Retry-After`. 0 turns it off.
    #[arg(
        long,
        env = "ECANTEEN_BALANCER_RATE_LIMIT_PARTNER",
        default_value_t = 100
    )]
    pub rate_limit_partner: u32,

    /// Seconds SIGTERM waits for requests in flight before exiting.
    #[arg(long, env = "ECANTEEN_BALANCER_GRACE_SECS", default_value_t = 5)]
    pub grace_secs: u64,

    /// Worker threads of the proxy (default: the number of CPUs).
    #[arg(long, env = "ECANTEEN_BALANCER_THREADS")]
    pub threads: Option<usize>,

    /// Log line format, on standard error; spawned replicas log the same way, and their
    /// lines are forwarded with the replica's address (text: a prefix; JSON: a
    /// `replica` field).
    #[arg(long, env = "ECANTEEN_BALANCER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

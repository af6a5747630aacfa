//! Assembles the pingora server: the proxy's listening service and its background
//! services.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use pingora::connectors::ConnectorOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::client_addr::TrustedProxies;
use crate::config::Config;
use crate::connections::{raise_fd_limit, AddressCaps, Front};
use crate::discovery::UpstreamsFile;
use crate::health::HealthChecker;
use crate::keepalive::Keepalive;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::proxy::{Balancer, Settings};
use crate::routes::BodyLimits;
use crate::spawn::{default_api_bin, Supervisor, SupervisorService};
use crate::tracecontext::Exporter;
use crate::upstream::{resolve, Policy, Pool};

/// Idle connections kept to each replica, over all worker threads.
const IDLE_PER_REPLICA: usize = 256;

/// The server, ready to run, and the addresses it serves on.
pub struct Built {
    pub server: Server,
    /// The proxy's address (port 0 in `--listen` resolved to the port taken).
    pub listen: SocketAddr,
    /// The admin endpoint's address, likewise.
    pub admin: SocketAddr,
    /// With `--listen …:0`, what holds the port until pingora binds it: keep it for as
    /// long as the server runs ([`reserve`]).
    pub reservation: Option<socket2::Socket>,
}

/// Takes a free port for `--listen …:0`: binds port 0 with `SO_REUSEPORT` and does not
/// listen. No other process can then bind the port, unless it runs as the same user and
/// sets `SO_REUSEPORT` on that very port itself; pingora's listener, which sets it too
/// (here only), binds it when its service starts. Connections go only to listening
/// sockets, so this one never takes any.
///
/// Only port 0 is served this way, for scripts and tests that start a balancer on one
/// machine and read its port from the listening line. An explicit port is bound as
/// before, without `SO_REUSEPORT`: another process of the same user could otherwise
/// share a production port, and a restart could not bind over the `TIME_WAIT` sockets of
/// connections a listener without it left behind. pingora-core 0.9 takes no bound socket
/// from its caller (only from a graceful upgrade's hand-over), which is what would close
/// this for every port.
fn reserve(addr: SocketAddr) -> std::io::Result<(socket2::Socket, SocketAddr)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("the reserved socket has no IP address"))?;
    Ok((socket, bound))
}

/// Builds the server from the configuration: starts spawned replicas (if any), loads
/// the initial membership, and wires every service. `run_forever` is the caller's.
pub fn build(config: &Config) -> anyhow::Result<Built> {
    // Both ports are tried before anything starts, so a taken one ends the balancer
    // with one line and no replica left behind. The admin listener is kept and served.
    // The proxy's explicit port is let go and bound again at once by pingora; port 0 is
    // reserved ([`reserve`]) so that the port named in the listening line stays ours.
    let cannot_listen = || format!("cannot listen on {}", config.listen);
    let (reservation, listen) = if config.listen.port() == 0 {
        let (socket, bound) = reserve(config.listen).with_context(cannot_listen)?;
        (Some(socket), bound)
    } else {
        drop(std::net::TcpListener::bind(config.listen).with_context(cannot_listen)?);
        (None, config.listen)
    };
    let admin = std::net::TcpListener::bind(config.admin)
        .with_context(|| format!("cannot serve the admin endpoint on {}", config.admin))?;
    admin.set_nonblocking(true)?;
    let admin_addr = admin.local_addr()?;
    let policy = Policy {
        rise: config.rise.max(1),
        fall: config.fall.max(1),
        interval: Duration::from_millis(config.health_interval_ms.max(50)),
        max_fails: config.max_fails,
        fail_timeout: Duration::from_millis(config.fail_timeout_ms),
        max_in_flight: config.max_in_flight,
    };
    let pool = Arc::new(Pool::new(config.algorithm, policy));
    let metrics = Arc::new(Metrics::default());
    let trusted = Arc::new(
        TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?,
    );
    // Keyed by the client's address as `trusted` resolved it: no exemption here.
    let websockets = Arc::new(AddressCaps::new(
        config.max_websockets,
        config.max_websockets_per_address,
        Arc::new(TrustedProxies::default()),
    ));
    let fd_limit = raise_fd_limit();
    let caps = Arc::new(AddressCaps::new(
        config
            .max_connections
            .unwrap_or_else(|| AddressCaps::default_total(fd_limit)),
        config.max_connections_per_address,
        trusted.clone(),
    ));

    let mut fixed = Vec::new();
    for upstream in &config.upstreams {
        let addr = resolve(upstream)
            .ok_or_else(|| anyhow::anyhow!("--upstream {upstream}: not a host:port"))?;
        fixed.push((addr, 1));
    }
    let supervisor = if config.spawn > 0 {
        let bin = config
            .api_bin
            .clone()
            .or_else(default_api_bin)
            .ok_or_else(|| anyhow::anyhow!("ecanteen-api not found beside this binary; build the workspace (cargo build --release) or pass --api-bin"))?;
        let supervisor = Supervisor::start(
            config.spawn,
            bin,
            config.database_url.clone(),
            config.log_format,
            config.otlp_endpoint.clone(),
            pool.clone(),
        )?;
        fixed.extend(supervisor.addrs().into_iter().map(|a| (a, 1)));
        Some(supervisor)
    } else {
        None
    };

    let file = config.upstreams_file.as_ref().map(|path| UpstreamsFile {
        path: path.clone(),
        pool: pool.clone(),
        fixed: fixed.clone(),
    });
    match &file {
        Some(file) => file
            .load()
            .map_err(|e| anyhow::anyhow!("upstreams file: {e}"))?,
        None => pool.set_members(&fixed),
    }
    anyhow::ensure!(
        !pool.members().is_empty() || file.is_some(),
        "no replicas: pass --upstream, --upstreams or --spawn"
    );

    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(config.grace_secs),
        graceful_shutdown_timeout_seconds: Some(config.grace_secs),
        // One current-thread runtime per worker (pingora's "no steal" flavour): a
        // connection stays on the thread that accepted it, with no cross-thread wakeups.
        // About 7 % less CPU per proxied request than tokio's work-stealing runtime
        // (docs/BENCHMARKS.md). Our filters never block, so nothing waits behind them.
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let traces = config
        .otlp_endpoint
        .as_deref()
        .map(Exporter::start)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint: {e:#}"))?;

    let balancer = Balancer {
        pool: pool.clone(),
        metrics: metrics.clone(),
        limits: Arc::new(Limits::new(config.rate_limit_ip, config.rate_limit_partner)),
        settings: Settings {
            max_tries: config.max_tries.max(1),
            bodies: BodyLimits {
                json: config.body_limit,
                picture: config.picture_max_bytes,
                max_files: config.max_files,
            },
            client_body_timeout: Duration::from_secs(config.client_body_timeout_secs.max(1)),
            client_header_timeout: Duration::from_secs(config.client_header_timeout_secs.max(1)),
            keepalive_timeout: Duration::from_secs(config.keepalive_timeout_secs.max(1)),
            client_send_timeout: Duration::from_secs(config.client_send_timeout_secs.max(1)),
            upload_timeout: Duration::from_secs(config.upload_timeout_secs.max(1)),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            read_timeout: Duration::from_secs(config.read_timeout_secs),
            queue_wait: Duration::from_millis(config.queue_ms),
            max_queued: config.max_queued,
            access_log_every: config.access_log_every,
        },
        websockets: websockets.clone(),
        in_flight_per_address: AddressCaps::new(
            usize::MAX,
            config.max_in_flight_per_address,
            Arc::new(TrustedProxies::default()),
        ),
        trusted,
        queued: AtomicUsize::new(0),
        seen: AtomicU64::new(0),
        traces: traces.map(Arc::new),
        // IDLE_PER_REPLICA idle connections per replica in all, shared out among the
        // worker threads. (pingora-core's connector opens the connections; its own pool,
        // and the ServerConf settings that size it, are not used on this path.)
        keepalive: Keepalive::new(
            ConnectorOptions::from_server_conf(&server.configuration),
            Duration::from_secs(config.idle_timeout_secs),
            IDLE_PER_REPLICA / threads.max(1),
        ),
    };
    let mut proxy = Service::new(
        "ecanteen-balancer".to_owned(),
        Front {
            balancer: Arc::new(balancer),
            caps: caps.clone(),
            metrics: metrics.clone(),
        },
    );
    // Pingora buffers at most one MSS (1,460 bytes) of a response before writing, so a
    // header and a body of a few KiB went out in two writes. With 16 KiB both leave in
    // one. Only bodies of a known length are buffered: chunked bodies and WebSocket
    // frames are still flushed as they come.
    let mut listener = ListenerConfig::tcp(listen.to_string())
        .l4_buffer(L4BufferSettings::default().write(16 * 1024));
    if reservation.is_some() {
        let mut reuse_port = TcpSocketOptions::default();
        reuse_port.so_reuseport = Some(true);
        listener = listener.tcp_socket_options(reuse_port);
    }
    proxy.add_listener(listener);

    server.add_service(background_service(
        "health checks",
        HealthChecker::new(pool.clone())?,
    ));
    server.add_service(background_service(
        "admin",
        Admin {
            listener: Arc::new(std::sync::Mutex::new(Some(admin))),
            pool: pool.clone(),
            metrics,
            algorithm: config.algorithm,
            supervisor: supervisor.clone(),
            connections: caps,
            websockets,
        },
    ));
    if let Some(file) = file {
        server.add_service(background_service("upstreams file", file));
    }
    if let Some(supervisor) = supervisor {
        server.add_service(background_service(
            "replicas",
            SupervisorService {
                supervisor,
                grace: Duration::from_secs(config.grace_secs),
            },
        ));
    }
    server.add_service(proxy);
    Ok(Built {
        server,
        listen,
        admin: admin_addr,
        reservation,
    })
}

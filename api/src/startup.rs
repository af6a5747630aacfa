//! Building and running a replica: [`Application::build`] connects, migrates and binds
//! (port 0 allowed, [`Application::local_addr`] reports it); [`Application::run_until_stopped`]
//! serves until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tower_sessions::ExpiredDeletion as _;

use crate::config::Config;
use crate::db::{Db, DbOptions};
use crate::domain::PictureLimits;
use crate::events::EventHub;
use crate::graphql::{build_schema, SchemaLimits};
use crate::http::access_log::AccessLog;
use crate::http::health::WriteHealth;
use crate::http::ws::WsLimits;
use crate::http::{router, AppState, HttpSettings};
use crate::service::{LoginThrottle, PasswordHasher, Service};

/// How often expired sessions, old login failures, idempotency records and unused
/// pictures are purged.
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// How long an idempotency key is remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Connects to and migrates the database, and builds the state every handler shares.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let options = DbOptions {
        url: config.database_url.clone(),
        max_connections: config.max_connections,
        acquire_timeout: config.db_timeout(),
        statement_timeout: Duration::from_secs(config.statement_timeout_secs),
        write_wait: Duration::from_millis(config.write_wait_ms),
        write_queue: config.write_queue,
        read_wait: match config.read_wait_ms {
            0 => config.db_timeout(),
            ms => Duration::from_millis(ms),
        },
        read_queue: match config.read_queue {
            0 => usize::MAX,
            n => n,
        },
    };
    let setup = Db::setup_turn(&options).await?;
    let db = Db::connect(&options).await?;
    db.migrate().await?;
    crate::sessions::Store::new(&db)
        .migrate()
        .await
        .context("session table migration failed")?;
    let logins = db.open_login_ledger(&options).await?;
    drop(setup);
    let hasher = PasswordHasher::new(
        config.argon2_memory_kib,
        config.argon2_iterations,
        config.argon2_parallelism,
    )?
    .with_admission(config.password_admission());
    let throttle = LoginThrottle {
        max_failures: config.login_max_failures,
        window: Duration::from_secs(config.login_window_mins * 60),
    };
    let pictures = PictureLimits {
        max_bytes: config.picture_max_bytes,
        max_side: config.picture_max_side,
        max_files: config.max_files,
        quota_bytes: config.picture_quota_mib.saturating_mul(1024 * 1024),
    };
    let writes = WriteHealth::start(
        db.clone(),
        config.db_timeout(),
        Duration::from_millis(config.write_probe_ms.max(10)),
    );
    let service = Service::new(db, hasher, throttle, pictures)
        .with_login_ledger(logins)
        .with_time_zone(config.time_zone)
        .with_max_persisted_queries(
            config.persisted_queries_max,
            config.persisted_queries_anonymous_max,
        );
    let events = EventHub::start(
        service.clone(),
        Duration::from_millis(config.event_poll_ms.max(10)),
    );
    let schema = build_schema(
        service.clone(),
        events,
        SchemaLimits {
            max_depth: config.max_query_depth,
            max_complexity: config.max_query_complexity,
            max_root_fields: config.max_root_fields,
            max_aliases: config.max_aliases,
            introspection: config.introspection,
        },
    );
    Ok(AppState {
        service,
        schema,
        settings: HttpSettings {
            body_limit: config.body_limit,
            pictures,
            max_batch: config.max_batch,
            graphiql: config.graphiql,
            client_dir: config.client_dir.clone(),
            request_timeout: config.request_timeout(),
            session_ttl: config.session_ttl(),
            session_refresh: config.session_refresh(),
            secure_cookies: config.secure_cookies,
            access_log: AccessLog::new(config.access_log_every),
        },
        draining: Arc::new(AtomicBool::new(false)),
        writes,
        ws: WsLimits::new(
            config.max_websockets,
            config.ws_pending_max,
            config.ws_pending_per_address,
            config.ws_operations_per_sec,
            config.max_subscriptions_per_socket,
            Duration::from_millis(config.ws_init_timeout_ms),
            Duration::from_millis(config.ws_recheck_ms),
            Duration::from_millis(config.ws_keepalive_ms.max(1000)),
        ),
    })
}

/// The name a supervisor gives the socket it hands over (`LISTEN_FDNAMES`; systemd's
/// `FileDescriptorName=`), as the balancer's `--spawn` does.
pub const LISTEN_FD_NAME: &str = "ecanteen-api";

/// The listening socket a supervisor handed over, by systemd's socket-activation
/// protocol (read by `listenfd`): `LISTEN_FDS=1` and the socket on descriptor 3. The
/// balancer's `--spawn` binds each replica's port itself and passes it on this way, so
/// no other process can take the port between the pick and the bind.
///
/// Taken only when the hand-over is meant for this process: `LISTEN_PID` names it (as
/// systemd sets it), or, without `LISTEN_PID` (a supervisor cannot know its child's pid
/// before it starts), `LISTEN_FDNAMES` is [`LISTEN_FD_NAME`]. A stray `LISTEN_FDS` in the
/// environment (a development tool's) is left alone, and `--listen` is bound instead.
///
/// Call it before any other thread starts: `listenfd` removes the variables from the
/// environment, which is only sound while the process has one thread.
pub fn inherited_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    let pid = std::env::var("LISTEN_PID").ok().filter(|p| !p.is_empty());
    let named = std::env::var("LISTEN_FDNAMES").is_ok_and(|n| n == LISTEN_FD_NAME);
    let meant_for_us = match pid {
        Some(pid) => pid == std::process::id().to_string(),
        None => named,
    };
    if !meant_for_us || std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("the socket handed over in LISTEN_FDS is not a TCP listener")?;
    if let Some(listener) = &listener {
        listener.set_nonblocking(true)?;
    }
    Ok(listener)
}

/// A replica, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    app: Router,
    state: AppState,
    drain_delay: Duration,
    shutdown_timeout: Duration,
    header_timeout: Duration,
}

impl Application {
    /// A replica on `--listen`.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_on(config, None).await
    }

    /// A replica on `inherited` (see [`inherited_listener`]) when there is one, else on
    /// `--listen`.
    pub async fn build_on(
        config: &Config,
        inherited: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let state = build_state(config).await?;
        let listener = match inherited {
            Some(listener) => TcpListener::from_std(listener)?,
            None => TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?,
        };
        Ok(Self {
            listener,
            app: router(state.clone()),
            state,
            drain_delay: Duration::from_millis(config.drain_delay_ms),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then: readiness turns false, new requests are
    /// still served for the drain delay (so a balancer notices), the listener closes,
    /// requests in flight finish (up to the shutdown timeout), and the pool closes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            app,
            state,
            drain_delay,
            shutdown_timeout,
            header_timeout,
        } = self;
        let maintenance = tokio::spawn(maintenance(state.service.clone()));

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let draining = state.draining.clone();
        let graceful = async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis(),
                "shutting down: not ready any more"
            );
            tokio::time::sleep(drain_delay).await;
            let _ = stopping_tx.send(());
            tracing::info!("listener closed; finishing requests in flight");
        };
        let server = serve(listener, app, header_timeout, graceful);
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(shutdown_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => {}
            () = deadline => tracing::warn!("requests still in flight after the shutdown timeout; exiting anyway"),
        }
        maintenance.abort();
        // Writes whose clients went away may still be running on their own tasks: let
        // them commit or roll back before the pool closes.
        if !state.service.finish_writes(shutdown_timeout).await {
            tracing::warn!(
                "writes still running after the shutdown timeout; closing the pool anyway"
            );
        }
        state.service.db().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades, for WebSockets) until `graceful`
/// completes, then lets open connections finish. This is `axum::serve`, plus what it
/// has no knob for: a deadline on reading a request's header, so a slow-loris client
/// that trickles its header is cut off.
async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    graceful: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let connections = GracefulShutdown::new();
    tokio::pin!(graceful);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut graceful => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for who a WebSocket's pending place is counted against.
        let peer = stream.peer_addr().ok();
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        if let Some(peer) = peer {
                            request
                                .extensions_mut()
                                .insert(axum::extract::ConnectInfo(peer));
                        }
                        request
                    },
                )
                .service(app.clone()),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

async fn maintenance(service: Service) {
    let store = crate::sessions::Store::new(service.db());
    let mut interval = tokio::time::interval(MAINTENANCE_PERIOD);
    loop {
        interval.tick().await;
        if let Err(err) = store.delete_expired().await {
            tracing::warn!(error = %err, "cannot delete expired sessions");
        }
        if let Err(err) = service.purge_expired(IDEMPOTENCY_TTL).await {
            err.log();
        }
        if let Err(err) = service.sweep_pictures().await {
            err.log();
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

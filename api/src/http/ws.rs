//! GraphQL subscriptions over WebSocket at `/graphql/ws`.
//!
//! Both subprotocols are spoken: `graphql-transport-ws` (graphql-ws) and the legacy
//! `graphql-ws` (subscriptions-transport-ws). A connection is authenticated at
//! `connection_init`: by a bearer token in the init payload (`{"Authorization":
//! "Bearer …"}` or `{"token": "…"}`), or else by the session cookie sent with the
//! upgrade request. Without either, the connection is refused at init.
//!
//! The credential is not trusted for the socket's life. It is checked again before each
//! operation (`graphql::connection`, which also refuses queries and mutations over the
//! socket), and every `--ws-recheck-ms` while the socket is open: once the token is
//! revoked, or the session is logged out, replaced or expired, on any replica, the
//! socket is closed with code 4403. Every replica reads it from the database, so a
//! logout through one replica closes the sockets held by all.
//!
//! Browsers attach cookies to WebSocket handshakes from any page, so the cookie counts
//! only when the handshake's `Origin` is this server's own (cross-site WebSocket
//! hijacking); token authentication is unaffected.
//!
//! # Bounds
//!
//! A socket is state a replica keeps for as long as the client likes, so each part is
//! bounded ([`WsLimits`]): open sockets per replica (past them the upgrade is answered
//! 503 with `Retry-After`), subscriptions per socket, the size of a message, and the
//! time a client has to send `connection_init` after the upgrade (then the socket is
//! closed). A subscription's replay is bounded too (`graphql::live::MAX_REPLAY`), and
//! the operations a partner starts over its sockets (`OperationBudget`).
//!
//! A socket joins the replica's cap only once its credential checks out. A session
//! cookie, or a bearer token in the upgrade's `Authorization` header, is checked at the
//! upgrade; a socket without either (a browser's token comes only in
//! `connection_init`) waits in a small pool of its own, `--ws-pending-max` in all and
//! `--ws-pending-per-address` from one client address, until its init: so strangers
//! upgrading by the hundred, never to authenticate, hold a few places of that pool for
//! `--ws-init-timeout-ms` each, and never one a partner's socket needs. The client's
//! address is the balancer's word for it (`X-Ecanteen-Client`, its view past trusted
//! proxies), else the last `X-Forwarded-For` hop, else the connection's peer: replicas
//! sit behind the balancer, and one reachable directly could be told any address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSender;
use tower_sessions::session::Id;
use tower_sessions::Session;

use super::auth::SocketCredential;
use super::{json_error, with_retry_after, AppState};
use crate::error::ServiceError;
use crate::graphql::connection::{ConnectionAuth, ConnectionCredential as _, OperationBudget};
use crate::graphql::live::SubscriptionSlots;
use crate::graphql::{request_data, RequestAuth};
use crate::service::{AuthMethod, Service};
use crate::sessions::PartnerSession;

pub fn router() -> Router<AppState> {
    Router::new().route("/graphql/ws", get(upgrade))
}

/// The largest WebSocket message (and frame) a client may send: subscription requests
/// and pings are small.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The bounds of the module docs, shared by every socket of a replica.
#[derive(Clone)]
pub struct WsLimits {
    /// One permit per open socket whose credential checked out.
    pub sockets: Arc<Semaphore>,
    /// Sockets not yet initialised, in all and by client address.
    pub pending: Pending,
    /// Operations per partner over its sockets.
    pub operations: OperationBudget,
    pub subscriptions_per_socket: usize,
    pub init_timeout: Duration,
    /// How often an open socket's credential is checked again (see [`guard`]).
    pub recheck: Duration,
    /// How long a socket may stay silent before it is closed (3008). Clients learn it
    /// from the payload of the pong to their first ping, `{"keepAliveMs": …}`, and ping
    /// well within it.
    pub keepalive: Duration,
}

/// The pool of sockets waiting for their `connection_init`.
#[derive(Clone)]
pub struct Pending {
    total: Arc<Semaphore>,
    per_address: usize,
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A place in the pending pool, given back when dropped (at init, or when the socket
/// ends first).
pub struct PendingPlace {
    _total: OwnedSemaphorePermit,
    address: Option<IpAddr>,
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let (Some(address), Ok(mut by_address)) = (self.address, self.by_address.lock()) else {
            return;
        };
        if let Some(n) = by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                by_address.remove(&address);
            }
        }
    }
}

impl Pending {
    pub fn new(total: usize, per_address: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_address,
            by_address: Arc::default(),
        }
    }

    /// A place for a socket from `address`, or `None` past either cap.
    pub fn admit(&self, address: Option<IpAddr>) -> Option<PendingPlace> {
        let total = self.total.clone().try_acquire_owned().ok()?;
        let mut by_address = self.by_address.lock().ok()?;
        // 0: no cap per address.
        let address = address.filter(|_| self.per_address > 0);
        if let Some(address) = address {
            let n = by_address.entry(address).or_insert(0);
            if *n >= self.per_address {
                return None;
            }
            *n += 1;
        }
        Some(PendingPlace {
            _total: total,
            address,
            by_address: self.by_address.clone(),
        })
    }
}

/// The socket's place in the replica's cap, kept in the connection's data for as long
/// as the socket lives.
struct SocketPermit(
    #[expect(dead_code, reason = "held for the socket's life, never read")] OwnedSemaphorePermit,
);

/// Who the client is, by address: what the balancer says (`X-Ecanteen-Client`: its own
/// view, past any trusted proxy in front of it, and never a client's word), else the
/// last `X-Forwarded-For` hop, else this connection's peer.
fn client_address(headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
    let header = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|hop| hop.trim().parse().ok())
    };
    header("x-ecanteen-client")
        .or_else(|| header("x-forwarded-for"))
        .or(peer.map(|p| p.ip()))
}

fn replica_full() -> Response {
    with_retry_after(
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_REQUESTS",
            "this replica holds as many WebSocket connections as it may; retry later",
        ),
        1,
    )
}

impl WsLimits {
    #[expect(
        clippy::too_many_arguments,
        reason = "one bound each, all flags of the replica, named at the one call"
    )]
    pub fn new(
        sockets: usize,
        pending: usize,
        pending_per_address: usize,
        operations_per_sec: u32,
        subscriptions_per_socket: usize,
        init_timeout: Duration,
        recheck: Duration,
        keepalive: Duration,
    ) -> Self {
        Self {
            sockets: Arc::new(Semaphore::new(sockets)),
            pending: Pending::new(pending, pending_per_address),
            operations: OperationBudget::new(operations_per_sec),
            subscriptions_per_socket,
            init_timeout,
            recheck,
            keepalive,
        }
    }
}

async fn upgrade(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    session: Session,
    headers: HeaderMap,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A bearer token at the upgrade (a till or an app; a browser cannot send one)
    // counts as a cookie does: checked now, the socket skips the pending pool.
    let upgrade_token = bearer(&headers);
    let token_ok = match &upgrade_token {
        Some(token) => state.service.authenticate_token(token).await.is_ok(),
        None => false,
    };
    let cookie_session = if super::origin::same_origin(&headers) {
        let session = PartnerSession::new(session);
        match session.user_id(state.settings.session_refresh).await {
            Ok(Some(_)) => session.id(),
            _ => None,
        }
    } else {
        None
    };
    // A socket whose cookie checked out joins the replica's cap now, for its life; any
    // other waits for its init in the pending pool, and joins the cap then.
    let (socket_permit, pending) = if cookie_session.is_some() || token_ok {
        match state.ws.sockets.clone().try_acquire_owned() {
            Ok(permit) => (Some(permit), None),
            Err(_) => return replica_full(),
        }
    } else {
        match state.ws.pending.admit(client_address(
            &headers,
            peer.map(|axum::Extension(ConnectInfo(p))| p),
        )) {
            Some(place) => (None, Some(place)),
            None => return replica_full(),
        }
    };
    let pending = Arc::new(Mutex::new(pending));
    let schema = state.schema.clone();
    let service = state.service.clone();
    let limits = state.ws.clone();
    let sockets = state.ws.sockets.clone();
    let operations = state.ws.operations.clone();
    let pending_at_init = pending.clone();
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let _socket_permit = socket_permit;
            // Given back when the socket ends, if its init has not given it back first.
            let _pending = pending;
            let subscriptions = limits.subscriptions_per_socket;
            let keepalive_ms = u64::try_from(limits.keepalive.as_millis()).unwrap_or(u64::MAX);
            // async-graphql writes to a channel, and this task to the socket: so the
            // socket can still be closed with a reason when the credential ends.
            let (mut sink, stream) = socket.split();
            let (to_client, mut outbox) = mpsc::channel::<Message>(16);
            let (initialised, init_done) = oneshot::channel::<Arc<SocketCredential>>();
            let serve = GraphQLWebSocket::new_with_pair(
                PollSender::new(to_client),
                stream,
                schema,
                protocol,
            )
            .keepalive_timeout(limits.keepalive)
            .on_ping(move |_: Option<&Data>, _| async move {
                Ok(Some(serde_json::json!({ "keepAliveMs": keepalive_ms })))
            })
            .on_connection_init(move |payload| async move {
                let credential = Arc::new(
                    init_credential(&service, &payload, upgrade_token.as_deref(), cookie_session)
                        .await?,
                );
                // From the pending pool into the replica's cap (unless the cookie
                // took its place at the upgrade).
                let was_pending = pending_at_init
                    .lock()
                    .map(|mut p| p.take().is_some())
                    .unwrap_or(false);
                let permit = if was_pending {
                    Some(
                        sockets
                            .try_acquire_owned()
                            .map_err(|_| ServiceError::Busy {
                                retry_after: Duration::from_secs(1),
                            })?,
                    )
                } else {
                    None
                };
                let _ = initialised.send(credential.clone());
                let (_, loader) = request_data(&service, RequestAuth::default());
                // The connection's data lasts as long as the socket: its loader must
                // not cache, or it would keep every owner it ever loaded.
                loader.enable_all_cache(false);
                let mut data = Data::default();
                data.insert(ConnectionAuth(credential));
                data.insert(operations);
                if let Some(permit) = permit {
                    data.insert(SocketPermit(permit));
                }
                data.insert(loader);
                data.insert(SubscriptionSlots::new(subscriptions));
                Ok(data)
            })
            .serve();
            let closed = tokio::select! {
                // The client left, or async-graphql closed the socket (a failed init):
                // what it wrote last is sent before the task ends.
                ((), ()) = futures_util::future::join(serve, async {
                    while let Some(message) = outbox.recv().await {
                        if sink.send(message).await.is_err() {
                            break;
                        }
                    }
                }) => return,
                closed = guard(init_done, limits.init_timeout, limits.recheck) => closed,
            };
            let (code, reason) = match closed {
                Closed::InitTimeout => (4408, "connection initialisation timeout"),
                Closed::CredentialEnded => {
                    (4403, "the credential was revoked, logged out or expired")
                }
            };
            tracing::debug!(code, reason, "closing a WebSocket");
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        })
}

/// Why this side closed a socket.
enum Closed {
    /// The client upgraded and never initialised: it held a socket for nothing.
    InitTimeout,
    /// The token was revoked, or the session logged out, replaced or expired.
    CredentialEnded,
}

/// Watches a socket from outside async-graphql: the client must initialise within
/// `init_timeout`, and from then on its credential is checked every `every` (it is
/// checked before each operation as well, by `graphql::connection`). A check that
/// cannot run (the database is unavailable) closes nothing.
async fn guard(
    init_done: oneshot::Receiver<Arc<SocketCredential>>,
    init_timeout: Duration,
    every: Duration,
) -> Closed {
    let credential = tokio::select! {
        Ok(credential) = init_done => credential,
        () = tokio::time::sleep(init_timeout) => return Closed::InitTimeout,
    };
    loop {
        tokio::time::sleep(every).await;
        match credential.check().await {
            Ok(_) => {}
            Err(ServiceError::Unauthenticated(_)) => return Closed::CredentialEnded,
            Err(err) => err.log(),
        }
    }
}

/// A bearer token in the upgrade request's `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// What the connection is opened with, valid now: the init payload's token
/// (authenticated here), else the upgrade's bearer token, else the cookie's session
/// (read at the upgrade, and checked again here: it may have been logged out since).
async fn init_credential(
    service: &Service,
    payload: &serde_json::Value,
    upgrade_token: Option<&str>,
    cookie_session: Option<Id>,
) -> async_graphql::Result<SocketCredential> {
    let token = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| payload.get("token").and_then(|v| v.as_str()))
        .or(upgrade_token);
    if let Some(token) = token {
        let actor = service.authenticate_token(token.trim()).await?;
        let AuthMethod::Token(token_id) = actor.method else {
            return Err(ServiceError::Unauthenticated("invalid or revoked API token").into());
        };
        return Ok(SocketCredential::Token {
            service: Box::new(service.clone()),
            token_id,
        });
    }
    let Some(id) = cookie_session else {
        return Err(ServiceError::Unauthenticated(
            "log in or send an API token in connection_init",
        )
        .into());
    };
    let credential = SocketCredential::Session {
        store: Box::new(crate::sessions::Store::new(service.db())),
        id,
    };
    credential.check().await?;
    Ok(credential)
}

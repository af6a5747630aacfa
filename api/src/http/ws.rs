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
//! closed). A subscription's replay is bounded too (`graphql::live::MAX_REPLAY`).

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::PollSender;
use tower_sessions::session::Id;
use tower_sessions::Session;

use super::auth::SocketCredential;
use super::{json_error, with_retry_after, AppState};
use crate::error::ServiceError;
use crate::graphql::connection::{ConnectionAuth, ConnectionCredential as _};
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
#[derive(Clone, Debug)]
pub struct WsLimits {
    /// One permit per open socket.
    pub sockets: Arc<Semaphore>,
    pub subscriptions_per_socket: usize,
    pub init_timeout: Duration,
    /// How often an open socket's credential is checked again (see [`guard`]).
    pub recheck: Duration,
    /// How long a socket may stay silent before it is closed (3008). Clients learn it
    /// from the payload of the pong to their first ping, `{"keepAliveMs": …}`, and ping
    /// well within it.
    pub keepalive: Duration,
}

impl WsLimits {
    pub fn new(
        sockets: usize,
        subscriptions_per_socket: usize,
        init_timeout: Duration,
        recheck: Duration,
        keepalive: Duration,
    ) -> Self {
        Self {
            sockets: Arc::new(Semaphore::new(sockets)),
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
    upgrade: WebSocketUpgrade,
) -> Response {
    let cookie_session = if super::origin::same_origin(&headers) {
        let session = PartnerSession::new(session);
        match session.user_id(state.settings.session_refresh).await {
            Ok(Some(_)) => session.id(),
            _ => None,
        }
    } else {
        None
    };
    // Held for the socket's life.
    let Ok(socket_permit) = state.ws.sockets.clone().try_acquire_owned() else {
        return with_retry_after(
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOO_MANY_REQUESTS",
                "this replica holds as many WebSocket connections as it may; retry later",
            ),
            1,
        );
    };
    let schema = state.schema.clone();
    let service = state.service.clone();
    let limits = state.ws.clone();
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let _socket_permit = socket_permit;
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
                let credential =
                    Arc::new(init_credential(&service, &payload, cookie_session).await?);
                let _ = initialised.send(credential.clone());
                let (_, loader) = request_data(&service, RequestAuth::default());
                // The connection's data lasts as long as the socket: its loader must
                // not cache, or it would keep every owner it ever loaded.
                loader.enable_all_cache(false);
                let mut data = Data::default();
                data.insert(ConnectionAuth(credential));
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

/// What the connection is opened with, valid now: the init payload's token
/// (authenticated here), else the cookie's session (read at the upgrade, and checked
/// again here: it may have been logged out since).
async fn init_credential(
    service: &Service,
    payload: &serde_json::Value,
    cookie_session: Option<Id>,
) -> async_graphql::Result<SocketCredential> {
    let token = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| payload.get("token").and_then(|v| v.as_str()));
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
        store: crate::sessions::Store::new(service.db()),
        id,
    };
    credential.check().await?;
    Ok(credential)
}

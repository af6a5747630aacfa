//! GraphQL subscriptions over WebSocket at `/graphql/ws`.
//!
//! Both subprotocols are spoken: `graphql-transport-ws` (graphql-ws) and the legacy
//! `graphql-ws` (subscriptions-transport-ws). A connection is authenticated at
//! `connection_init`: by a bearer token in the init payload (`{"Authorization":
//! "Bearer …"}` or `{"token": "…"}`), or else by the session cookie sent with the
//! upgrade request. Without either, the connection is refused at init.
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
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tower_sessions::Session;

use super::session::PartnerSession;
use super::{json_error, with_retry_after, AppState};
use crate::error::ServiceError;
use crate::graphql::live::SubscriptionSlots;
use crate::graphql::{request_data, RequestAuth};
use crate::service::{Actor, AuthMethod, Service};

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
}

impl WsLimits {
    pub fn new(sockets: usize, subscriptions_per_socket: usize, init_timeout: Duration) -> Self {
        Self {
            sockets: Arc::new(Semaphore::new(sockets)),
            subscriptions_per_socket,
            init_timeout,
        }
    }
}

/// Whether the handshake comes from a page of this very server (or from a
/// non-browser client, which sends no `Origin`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn upgrade(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    session: Session,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let cookie_user = if same_origin(&headers) {
        PartnerSession::new(session)
            .user_id(state.settings.session_refresh)
            .await
            .ok()
            .flatten()
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
    let (initialised, init_done) = tokio::sync::oneshot::channel::<()>();
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let _socket_permit = socket_permit;
            let subscriptions = limits.subscriptions_per_socket;
            let serve = GraphQLWebSocket::new(socket, schema, protocol)
                .keepalive_timeout(Duration::from_secs(30))
                .on_connection_init(move |payload| async move {
                    let actor = init_actor(&service, &payload, cookie_user).await?;
                    let _ = initialised.send(());
                    let (auth, loader) = request_data(
                        &service,
                        RequestAuth {
                            actor: Some(actor),
                            session: None,
                        },
                    );
                    // The connection's data lasts as long as the socket: its loader
                    // must not cache, or it would keep every owner it ever loaded.
                    loader.enable_all_cache(false);
                    let mut data = Data::default();
                    data.insert(auth);
                    data.insert(loader);
                    data.insert(SubscriptionSlots::new(subscriptions));
                    Ok(data)
                })
                .serve();
            // A client that upgrades and never initialises holds a socket for nothing:
            // it gets `init_timeout`, then the socket is dropped. Once initialised, the
            // keep-alive rules. (A failed init is answered and closed by `serve`
            // itself; the deadline only makes sure.)
            let deadline = tokio::time::sleep(limits.init_timeout);
            let init_deadline = async move {
                tokio::select! {
                    Ok(()) = init_done => std::future::pending::<()>().await,
                    () = deadline => {}
                }
            };
            tokio::select! {
                () = serve => {}
                () = init_deadline => {
                    tracing::debug!("closing a WebSocket that did not initialise in time");
                }
            }
        })
}

/// Who opens the connection: the init payload's token, else the cookie's partner.
async fn init_actor(
    service: &Service,
    payload: &serde_json::Value,
    cookie_user: Option<i64>,
) -> async_graphql::Result<Actor> {
    let token = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| payload.get("token").and_then(|v| v.as_str()));
    if let Some(token) = token {
        return Ok(service.authenticate_token(token.trim()).await?);
    }
    cookie_user
        .map(|user_id| Actor {
            user_id,
            method: AuthMethod::Session,
        })
        .ok_or_else(|| {
            ServiceError::Unauthenticated("log in or send an API token in connection_init").into()
        })
}

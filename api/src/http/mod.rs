//! HTTP: the axum router and its middleware. Each area owns its routes.
//!
//! - [`client`]: the browser client's files at `/`, with strict security headers;
//! - [`graphql`]: `POST /graphql` (JSON, or multipart uploads) and `GET /graphql`
//!   (GraphiQL, read-only queries);
//! - [`ws`]: subscriptions over WebSocket at `/graphql/ws`;
//! - [`images`]: pictures and thumbnails at `/images/…`;
//! - [`health`]: `/healthz` (alive) and `/readyz` (database reachable, writes possible,
//!   not draining);
//! - [`metrics`]: Prometheus `/metrics`, and the middleware that feeds it;
//! - [`rest`]: the REST compatibility routes under `/ecanteen`;
//! - [`auth`]: who a request is (bearer token or cookie session);
//! - [`origin`]: whether a browser request comes from a page of this server;
//! - [`partner_tag`]: names that partner to the balancer (for its rate limits);
//! - [`session`]: a session that could not be saved is answered 503, not a bare 500.

pub mod access_log;
pub mod auth;
pub mod caching;
pub mod client;
pub mod graphql;
pub mod health;
pub mod images;
pub mod metrics;
pub mod origin;
pub mod partner_tag;
pub mod persisted;
pub mod rest;
pub mod session;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::graphql::AppSchema;
use crate::service::Service;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub schema: AppSchema,
    pub settings: HttpSettings,
    /// Set on SIGTERM: `/readyz` turns 503 so balancers stop sending new requests.
    pub draining: Arc<AtomicBool>,
    /// Whether a write could take the write lock now, for `/readyz`.
    pub writes: health::WriteHealth,
    /// The bounds on WebSocket connections, shared by every socket.
    pub ws: ws::WsLimits,
}

/// The HTTP-level knobs, taken from the configuration.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub body_limit: usize,
    pub pictures: crate::domain::PictureLimits,
    pub max_batch: usize,
    pub graphiql: bool,
    pub request_timeout: Duration,
    pub session_ttl: Duration,
    /// How often a session's expiry is pushed forward (see `PartnerSession::user_id`).
    pub session_refresh: Duration,
    pub secure_cookies: bool,
    /// The browser client's folder, served at `/`.
    pub client_dir: std::path::PathBuf,
    /// Which requests the access log records.
    pub access_log: access_log::AccessLog,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the whole application; no socket needed (tests drive it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let session_ttl =
        time::Duration::try_from(state.settings.session_ttl).unwrap_or(time::Duration::hours(12));
    let sessions = SessionManagerLayer::new(crate::sessions::Store::new(state.service.db()))
        .with_name("ecanteen_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.settings.secure_cookies)
        .with_expiry(Expiry::OnInactivity(session_ttl));
    let timeout = state.settings.request_timeout;
    let client = client::service(&state.settings.client_dir);

    Router::new()
        .merge(graphql::router())
        .merge(ws::router())
        .merge(images::router())
        .merge(health::router())
        .merge(metrics::router())
        .nest("/ecanteen", rest::router())
        .fallback_service(client)
        .layer(axum::middleware::from_fn(partner_tag::tag))
        .layer(sessions)
        .layer(axum::middleware::from_fn(
            session::failed_saves_are_unavailable,
        ))
        .layer(axum::middleware::from_fn(metrics::record))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        // Outside the timeout, so a 504 is logged as one.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access_log::record,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    crate::telemetry::request_span(req, request_id)
                })
                .on_failure(log_failure),
        )
        // Keeps a client's (or the balancer's) X-Request-Id, or makes one.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Logs a request that failed: at ERROR, except a 503, which is a designed answer (a
/// refusal under overload with `Retry-After`, or readiness while shutting down), not a
/// fault; it is counted in the metrics and kept at DEBUG. A 503 logged as an ERROR made
/// every overload an alarm, and a readiness probe racing a shutdown an error in the log.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    let latency_ms = latency.as_millis();
    match class {
        Class::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(status = 503, latency_ms, "request refused: unavailable")
        }
        Class::StatusCode(status) => {
            tracing::error!(status = status.as_u16(), latency_ms, "response failed")
        }
        Class::Error(error) => tracing::error!(%error, latency_ms, "response failed"),
    }
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    // `/ecanteen` itself and `/ecanteen/` fall outside the nested router.
    if uri.path().starts_with("/ecanteen") {
        return rest::not_found().await.into_response();
    }
    json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

/// A transport-level failure as a GraphQL-shaped JSON body, so clients parse one shape.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (status, axum::Json(body)).into_response()
}

/// The media type of the body, lower-cased, without parameters.
pub(crate) fn content_essence(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
}

/// The body length a request declares, if it declares one.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Whether a multipart request may be trusted not to come from a cross-site form: it
/// carries a bearer token (which a form cannot), or a header that only a preflighted
/// request can (`X-Requested-With`, `Apollo-Require-Preflight`).
pub(crate) fn is_preflighted(headers: &HeaderMap) -> bool {
    auth::bearer(headers).is_some()
        || headers.contains_key("x-requested-with")
        || headers.contains_key("apollo-require-preflight")
}

/// Adds `Retry-After` to a response.
pub fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

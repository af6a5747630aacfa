//! The REST compatibility routes under `/ecanteen`, for integrators of the original
//! Flask service. The contract is `shared/specs/rest-compat.md`; the OpenAPI document
//! generated from these handlers is served at `/ecanteen/openapi.json`.
//!
//! The routes are thin adapters: each reads its input (numbers may arrive as strings),
//! calls the same [`Service`](crate::service::Service) operation as GraphQL and renders
//! the answer in the original shapes (`desc`, `user_id`, `image`). Every failure is
//! `{"error": {"code", "message"}}` ([`error`]).
//!
//! - [`users`]: `join`, `login`, `logout` and API `tokens`;
//! - [`products`]: the catalogue, edits, stock and pictures;
//! - [`report`]: the sales report and the CSV exports;
//! - [`body`]: reading bodies, integers as strings, `data:` URIs, `Idempotency-Key`;
//! - [`openapi`]: the OpenAPI 3.1 document.
//!
//! Writes need the session cookie or a bearer token, and a JSON body (or multipart, for
//! a picture): a cross-site HTML form can send neither with the partner's cookie, which
//! is the CSRF defence. `join` and `login` also take forms, checked against `Origin`.

pub mod body;
pub mod error;
pub mod openapi;
pub mod products;
pub mod report;
pub mod users;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower_sessions::Session;

use self::error::RestError;
use crate::http::{auth, AppState};
use crate::service::Actor;
use crate::sessions::PartnerSession;

/// The routes, to be nested under `/ecanteen`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/join", post(users::join))
        .route("/login", post(users::login))
        .route("/logout", get(users::logout_get).post(users::logout))
        .route("/password", put(users::change_password))
        .route("/tokens", post(users::create_token))
        .route("/tokens/{id}", axum::routing::delete(users::revoke_token))
        .route(
            "/product",
            get(products::list)
                .post(products::create)
                .put(products::update_with_id_in_body),
        )
        .route(
            "/product/{id}",
            get(products::show)
                .put(products::update)
                .delete(products::delete),
        )
        .route(
            "/product/{id}/stock",
            get(report::stock_history).post(products::adjust_stock),
        )
        .route("/report", get(report::report))
        .route("/export/products", get(report::export_products))
        .route(
            "/product/{id}/image",
            // The handler bounds the body by the picture limit itself.
            put(products::replace_image).layer(DefaultBodyLimit::disable()),
        )
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .layer(map_response(json_method_not_allowed))
}

pub(crate) async fn not_found() -> RestError {
    RestError::not_found("no such route under /ecanteen; see /ecanteen/openapi.json")
}

/// axum answers a known path with the wrong method with an empty 405 and `Allow`; the
/// contract wants the JSON envelope too.
async fn json_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut json = RestError::method_not_allowed().into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        json.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    json
}

/// The partner behind a write: 401 when there is none.
pub(crate) async fn actor(
    state: &AppState,
    headers: &HeaderMap,
    session: Session,
) -> Result<Actor, RestError> {
    reader(state, headers, session)
        .await?
        .ok_or_else(RestError::unauthenticated)
}

/// Who reads a public route: anyone, but a bearer token that is sent must be valid (401
/// otherwise), as on `/graphql`: an integrator notices a revoked token at once, on
/// either API.
pub(crate) async fn reader(
    state: &AppState,
    headers: &HeaderMap,
    session: Session,
) -> Result<Option<Actor>, RestError> {
    let session = PartnerSession::new(session);
    Ok(auth::resolve(
        &state.service,
        headers,
        &session,
        state.settings.session_refresh,
    )
    .await?)
}

/// A partner's username, by id.
pub(crate) async fn username_of(state: &AppState, user_id: i64) -> Result<String, RestError> {
    state
        .service
        .user(user_id)
        .await?
        .map(|u| u.username)
        .ok_or_else(|| RestError::from(crate::error::ServiceError::NotFound("user")))
}

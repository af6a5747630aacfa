//! `/ecanteen/join`, `login`, `logout` and `tokens`: accounts, sessions and API tokens.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::ToSchema;

use super::actor;
use super::body::{self, IdempotencyHeader};
use super::error::{ErrorBody, RestError};
use crate::domain::parse_id;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::sessions::PartnerSession;

/// A username and password, as JSON or as a form.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// Letters are lower-cased: `Saif` and `saif` are one account.
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    pub username: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}

/// A partner account.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: i64,
    pub username: String,
}

/// A form post that a browser says comes from another site is refused: it would log
/// the victim in as the attacker (login CSRF). Integrators send no `Origin`.
fn check_form_origin(headers: &HeaderMap) -> Result<(), RestError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if origin_host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(RestError::forbidden(
            "a form may only be posted from this site's own pages",
        ))
    }
}

async fn credentials(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Credentials, RestError> {
    let is_form = crate::http::content_essence(headers).as_deref()
        == Some("application/x-www-form-urlencoded");
    if is_form {
        check_form_origin(headers)?;
    }
    body::json_or_form(headers, body, state.settings.body_limit).await
}

/// Creates a partner account.
#[utoipa::path(post, path = "/ecanteen/join", tag = "auth", params(IdempotencyHeader),
    request_body(content(
        (Credentials = "application/json"),
        (Credentials = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The new account", body = Account),
        (status = 400, description = "The username or password is invalid", body = ErrorBody),
        (status = 409, description = "The username is taken (a retry with the Idempotency-Key of a join that succeeded gets that join's answer instead)", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 503, description = "Busy: password hashing is at its bound (code `INTERNAL`); retry after Retry-After", body = ErrorBody),
    ))]
pub async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Account>, RestError> {
    let input = credentials(&state, &headers, body).await?;
    let key = body::idempotency_key(&headers)?;
    let user = state
        .service
        .register(&input.username, &input.password, key.as_ref())
        .await?;
    Ok(Json(Account {
        id: user.id,
        username: user.username,
    }))
}

/// Logs in: answers with the account and sets the session cookie.
#[utoipa::path(post, path = "/ecanteen/login", tag = "auth",
    request_body(content(
        (Credentials = "application/json"),
        (Credentials = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in; the `ecanteen_session` cookie is set", body = Account),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
        (status = 503, description = "Busy: password checking is at its bound (code `INTERNAL`); retry after Retry-After", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Account>, RestError> {
    let input = credentials(&state, &headers, body).await?;
    let login = state
        .service
        .login(&input.username, &input.password)
        .await?;
    PartnerSession::new(session)
        .log_in(login.user.id, login.password_version)
        .await?;
    Ok(Json(Account {
        id: login.user.id,
        username: login.user.username,
    }))
}

/// Logs out: the session is deleted, so its cookie is dead on every replica.
#[utoipa::path(post, path = "/ecanteen/logout", tag = "auth",
    responses((status = 200, description = "\"logged out\"", body = String)))]
pub async fn logout(session: Session) -> Result<Json<&'static str>, RestError> {
    PartnerSession::new(session).log_out().await?;
    Ok(Json("logged out"))
}

/// `GET /ecanteen/logout`, as the original service had it. A browser sends the session
/// cookie with a link or a redirect from any site, so this route refuses a request from
/// another site's page (by `Sec-Fetch-Site`, else `Origin`): an image or a link
/// elsewhere must not log a partner out. `POST` is not reached cross-site with the
/// cookie (`SameSite=Lax`).
#[utoipa::path(get, path = "/ecanteen/logout", tag = "auth",
    responses(
        (status = 200, description = "\"logged out\"", body = String),
        (status = 403, description = "FORBIDDEN: sent from another site's page", body = ErrorBody),
    ))]
pub async fn logout_get(
    session: Session,
    headers: HeaderMap,
) -> Result<Json<&'static str>, RestError> {
    if !crate::http::origin::same_origin(&headers) {
        return Err(ServiceError::Forbidden(
            "a logout by GET from another site's page is refused; POST /ecanteen/logout",
        )
        .into());
    }
    logout(session).await
}

/// A password change.
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password in use now.
    pub current: String,
    /// The new password.
    #[schema(min_length = 8, max_length = 128)]
    pub new: String,
}

/// Changes the caller's password. Every other session of the partner ends on every
/// replica; this one is kept under a new id (a new cookie is set). API tokens are kept.
#[utoipa::path(put, path = "/ecanteen/password", tag = "auth",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "\"password changed\"", body = String),
        (status = 400, description = "`current` is not the password in use, or `new` is not 8–128 characters or equals it", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Sent with an API token: only a logged-in session may change the password", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many failed attempts (wrong passwords count as failed logins); see Retry-After", body = ErrorBody),
        (status = 503, description = "Busy: password hashing is at its bound (code `INTERNAL`); retry after Retry-After", body = ErrorBody),
    ),
    security(("session" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<&'static str>, RestError> {
    let actor = actor(&state, &headers, session.clone()).await?;
    let input: PasswordChange = body::json(&headers, body, state.settings.body_limit).await?;
    let version = state
        .service
        .change_password(&actor, &input.current, &input.new)
        .await?;
    PartnerSession::new(session).renew(version).await?;
    Ok(Json("password changed"))
}

/// The name of a new API token.
#[derive(Deserialize, ToSchema)]
pub struct NewToken {
    /// Surrounding spaces are trimmed.
    #[schema(min_length = 1, max_length = 60)]
    pub name: String,
}

/// A new API token, with its secret: shown once, never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// Creates an API token for the caller.
#[utoipa::path(post, path = "/ecanteen/tokens", tag = "auth", params(IdempotencyHeader),
    request_body = NewToken,
    responses(
        (status = 200, description = "The token; its secret is shown only here", body = CreatedToken),
        (status = 400, description = "The name is invalid", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Sent with an API token: tokens cannot manage tokens", body = ErrorBody),
        (status = 409, description = "A retry with the Idempotency-Key of a token already created: the secret is not shown again", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another request", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CreatedToken>, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let input: NewToken = body::json(&headers, body, state.settings.body_limit).await?;
    let (token, secret) = state
        .service
        .create_api_token(&actor, &input.name, body::idempotency_key(&headers)?)
        .await?;
    Ok(Json(CreatedToken {
        id: token.id,
        token: secret,
    }))
}

/// Revokes one of the caller's API tokens.
#[utoipa::path(delete, path = "/ecanteen/tokens/{id}", tag = "auth",
    params(("id" = i64, Path, minimum = 1, description = "The token's id"), IdempotencyHeader),
    responses(
        (status = 200, description = "\"token {id} revoked\"", body = String),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Sent with an API token: tokens cannot manage tokens", body = ErrorBody),
        (status = 404, description = "No such token of the caller's", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<String>, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let id = parse_id("id", &id).map_err(|_| RestError::not_found("API token not found"))?;
    let idempotency = body::idempotency_key(&headers)?;
    state
        .service
        .revoke_api_token(&actor, id, idempotency)
        .await?;
    Ok(Json(format!("token {id} revoked")))
}

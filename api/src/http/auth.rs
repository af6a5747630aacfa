//! Who a request is: a bearer token, or else the cookie session.
//!
//! A bearer token that is unknown or revoked is refused outright (401) rather than
//! silently treated as anonymous, so an integrator notices a revoked credential at once.

use std::time::Duration;

use axum::http::{header, HeaderMap};

use tower_sessions::session::Id;

use crate::error::{ServiceError, ServiceResult};
use crate::graphql::connection::ConnectionCredential;
use crate::http::partner_tag;
use crate::service::{Actor, AuthMethod, Service};
use crate::sessions::{PartnerSession, Store};

/// The bearer secret of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolves the actor of a request. `Ok(None)` is an anonymous request. A session is
/// re-saved (its inactivity expiry pushed back) once `refresh_after` has passed since
/// it last was.
pub async fn resolve(
    service: &Service,
    headers: &HeaderMap,
    session: &PartnerSession,
    refresh_after: Duration,
) -> ServiceResult<Option<Actor>> {
    let actor = match bearer(headers) {
        Some(secret) => Some(service.authenticate_token(secret).await?),
        None => session.user_id(refresh_after).await?.map(|user_id| Actor {
            user_id,
            method: AuthMethod::Session,
        }),
    };
    if let Some(actor) = &actor {
        partner_tag::note(actor.user_id);
    }
    Ok(actor)
}

/// The credential a WebSocket was opened with, kept to be checked again before each
/// operation and every few seconds while the socket is open (`http::ws`).
pub enum SocketCredential {
    /// An API token, by its id: revoked, it stops at once.
    Token {
        service: Box<Service>,
        token_id: i64,
    },
    /// A cookie session, by its id in the store: logged out, replaced or expired, it
    /// stops.
    Session { store: Box<Store>, id: Id },
}

#[async_trait::async_trait]
impl ConnectionCredential for SocketCredential {
    async fn check(&self) -> ServiceResult<Actor> {
        match self {
            Self::Token { service, token_id } => service.recheck_token(*token_id).await,
            Self::Session { store, id } => match store.partner(id).await? {
                Some(user_id) => Ok(Actor {
                    user_id,
                    method: AuthMethod::Session,
                }),
                None => Err(ServiceError::Unauthenticated(
                    "the session has ended; log in again",
                )),
            },
        }
    }
}

//! The session cookie's HTTP side: what the client sees when a session cannot be saved.
//!
//! tower-sessions saves a changed session after the handler has answered, and when
//! that save fails it replaces the answer with a bare 500 and no body (see
//! `crate::sessions` for when a save can fail, and which failures are noted). The
//! layer below answers such a 500 as what it is. (Upstream, the layer could take a
//! handler for a failed save; see docs/RELIABILITY.md.)

use anyhow::anyhow;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::error::ServiceError;

/// Wraps the session layer: the bare 500 it answers when it cannot save a session
/// becomes a 503 with `Retry-After`, in the REST or GraphQL error shape by path. A 500
/// of any other cause is left as it is.
pub async fn failed_saves_are_unavailable(request: Request, next: Next) -> Response {
    let rest = request.uri().path().starts_with("/ecanteen");
    let (response, failed) = crate::sessions::watching_writes(next.run(request)).await;
    if !failed || response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let unavailable = ServiceError::Unavailable(anyhow!("the session could not be saved"));
    if rest {
        crate::http::rest::error::RestError::from(unavailable).into_response()
    } else {
        crate::http::graphql::service_error_response(unavailable)
    }
}

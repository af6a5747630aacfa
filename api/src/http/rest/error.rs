//! The contract's error envelope: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Service errors map onto the contract's codes and statuses here, once. An internal
//! failure is logged and answered with a fixed message; its cause never reaches the
//! client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::products::RestProduct;
use crate::error::ServiceError;
use crate::http::with_retry_after;

/// A failure, as the contract shows it.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// Boxed: it is rare, and keeps the error small on every `Result`.
    product: Option<Box<RestProduct>>,
}

/// The body of every failure.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// On a 409 from an update: the product as it is now, so the client can merge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<Box<RestProduct>>,
}

/// What went wrong: a stable code to match on, and a message for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `BAD_REQUEST`, `UNAUTHENTICATED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `INSUFFICIENT_STOCK`, `PAYLOAD_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`,
    /// `TOO_MANY_REQUESTS`, `INTERNAL`.
    pub code: &'static str,
    pub message: String,
}

/// The failures of a write to one product the caller may not own (for the OpenAPI
/// document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum OwnerFailures {
    #[response(status = 401, description = "Not logged in")]
    Unauthenticated(ErrorBody),
    #[response(status = 403, description = "Not the owner")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such product")]
    NotFound(ErrorBody),
}

/// The failures of a write with a JSON body (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyFailures {
    #[response(status = 400, description = "A field is invalid; the message names it")]
    BadRequest(ErrorBody),
    #[response(status = 415, description = "The body is not JSON")]
    UnsupportedMediaType(ErrorBody),
    #[response(
        status = 422,
        description = "The Idempotency-Key was used for another request"
    )]
    KeyReused(ErrorBody),
}

impl RestError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            product: None,
        }
    }

    /// 400: the request is malformed; the message names the field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "log in first (POST /ecanteen/login), or send Authorization: Bearer <token>",
        )
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            message,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_REQUEST",
            "this method is not allowed here; see the Allow header",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether this is a conflict the current product explains.
    pub fn is_conflict(&self) -> bool {
        self.code == "CONFLICT"
    }

    /// Attaches the product as it is now (to a 409).
    pub fn with_product(mut self, product: RestProduct) -> Self {
        self.product = Some(Box::new(product));
        self
    }
}

impl From<ServiceError> for RestError {
    /// The mapping itself is the service error's (`ServiceError::http_status`,
    /// `rest_code`, `retry_after`); only the message of a reused key names REST's header.
    fn from(err: ServiceError) -> Self {
        err.log();
        let message = match err {
            ServiceError::IdempotencyKeyReused => {
                "Idempotency-Key: was already used for a different request".to_owned()
            }
            ref other => other.to_string(),
        };
        Self {
            retry_after: err.retry_after().map(|wait| wait.as_secs().max(1)),
            ..Self::new(err.http_status(), err.rest_code(), message)
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
            product: self.product,
        };
        let response = (self.status, Json(body)).into_response();
        match self.retry_after {
            Some(seconds) => with_retry_after(response, seconds),
            None => response,
        }
    }
}

//! The one error type of the service layer, with stable codes.
//!
//! Every variant maps to one code that clients may rely on, one HTTP status, and
//! whether and when to retry; all of it is here ([`ServiceError::code`],
//! [`ServiceError::http_status`], [`ServiceError::rest_code`],
//! [`ServiceError::retry_after`]), so a new variant is one edit. GraphQL puts the code in
//! `extensions.code`; REST and the HTTP layer answer with the status. Internal causes are
//! logged once, where the error leaves the service, and never shown to a client.

use std::time::Duration;

use axum::http::StatusCode;

/// What went wrong, as the client is allowed to see it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `BAD_USER_INPUT` (400): a field failed validation; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// `BAD_USER_INPUT`: an idempotency key sent again with a different request. Nothing
    /// was written. (REST answers 422.)
    #[error("idempotencyKey: was already used for a different request")]
    IdempotencyKeyReused,
    /// `UNAUTHENTICATED` (401): no valid session or token, or wrong credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// `FORBIDDEN` (403): authenticated, but this is another partner's.
    #[error("{0}")]
    Forbidden(&'static str),
    /// `NOT_FOUND` (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// `CONFLICT` (409): a unique value is taken, or an expected version or quantity is
    /// stale. Nothing was written.
    #[error("{message}")]
    Conflict {
        message: String,
        /// The value the client should have expected (current version or quantity).
        current: Option<i64>,
    },
    /// `CONFLICT` (409): the write lost a race it could not wait for (a picture removed
    /// by a cleanup while it was given to a product), and was tried again a few times
    /// first. Nothing was written; sent again, it may succeed.
    #[error("{0}")]
    Raced(&'static str),
    /// `INSUFFICIENT_STOCK` (409): the change would take stock below zero.
    #[error("insufficient stock: {available} available, {requested} requested")]
    InsufficientStock { available: i64, requested: i64 },
    /// `TOO_MANY_REQUESTS` (429).
    #[error("too many attempts; try again in {} seconds", retry_after.as_secs().max(1))]
    TooManyRequests { retry_after: Duration },
    /// `BUSY` (503, retryable): a bounded class of work (password hashing) is at its
    /// limit; sent again after `retry_after`, the request may be admitted.
    #[error("the service is busy; try again in {} seconds", retry_after.as_secs().max(1))]
    Busy { retry_after: Duration },
    /// `INTERNAL` (503, retryable): the database is unreachable or overloaded.
    #[error("the service is temporarily unavailable; please retry")]
    Unavailable(#[source] anyhow::Error),
    /// `INTERNAL` (500): a bug or an unexpected failure. The cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>, current: Option<i64>) -> Self {
        Self::Conflict {
            message: message.into(),
            current,
        }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::IdempotencyKeyReused => "BAD_USER_INPUT",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict { .. } | Self::Raced(_) => "CONFLICT",
            Self::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            Self::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Self::Busy { .. } => "BUSY",
            Self::Unavailable(_) | Self::Internal(_) => "INTERNAL",
        }
    }

    /// The HTTP status this error is answered with, on every transport (REST, and
    /// GraphQL's errors answered before execution).
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::Raced(_) | Self::InsufficientStock { .. } => {
                StatusCode::CONFLICT
            }
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code of the REST contract (shared/specs/rest-compat.md), whose fixed list
    /// names some errors otherwise: a bad field is `BAD_REQUEST`, and a 503 is
    /// `INTERNAL` whatever made the service unavailable (it has no `BUSY`).
    pub fn rest_code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::IdempotencyKeyReused => "BAD_REQUEST",
            Self::Busy { .. } => "INTERNAL",
            other => other.code(),
        }
    }

    /// Whether the same request may succeed if simply sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::TooManyRequests { .. } | Self::Busy { .. }
        )
    }

    /// How long a client should wait before sending the request again, when it should.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyRequests { retry_after } | Self::Busy { retry_after } => {
                Some(*retry_after)
            }
            Self::Unavailable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Logs the hidden cause of a server-side failure. Called once, at the boundary
    /// where the error is turned into a response.
    pub fn log(&self) {
        match self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error")
            }
            // The pool is closed only when the replica stops: a background task that
            // meets it then is not news for the operator.
            Self::Unavailable(cause)
                if matches!(cause.downcast_ref(), Some(sqlx::Error::PoolClosed)) =>
            {
                tracing::debug!("the database is closed: the replica is stopping")
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "database unavailable")
            }
            _ => {}
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                Self::Unavailable(err.into())
            }
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6) should never happen with WAL, a busy
            // timeout and BEGIN IMMEDIATE; if they do, they are overload, not a bug.
            // PostgreSQL: 57P01 admin shutdown, 57P03 cannot connect now, 53300 too many
            // connections, 40001/40P01 serialization failure and deadlock.
            E::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some("5" | "6" | "517" | "57P01" | "57P03" | "53300" | "40001" | "40P01")
                ) =>
            {
                Self::Unavailable(err.into())
            }
            _ => Self::Internal(err.into()),
        }
    }
}

impl From<tower_sessions::session::Error> for ServiceError {
    fn from(err: tower_sessions::session::Error) -> Self {
        Self::Unavailable(err.into())
    }
}

/// Names what a database constraint's refusal means, at the statement that may meet it:
/// no racy pre-check `SELECT`, and no digging the database error back out of
/// `Internal` afterwards. Any other failure maps as `From<sqlx::Error>` does.
pub trait OnConstraint<T> {
    fn on_constraint(self, name: &str, meaning: impl FnOnce() -> ServiceError) -> ServiceResult<T>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, meaning: impl FnOnce() -> ServiceError) -> ServiceResult<T> {
        self.map_err(|err| {
            let refused_by = err.as_database_error().and_then(|e| e.constraint());
            if refused_by == Some(name) {
                meaning()
            } else {
                ServiceError::from(err)
            }
        })
    }
}

/// The result type of the service layer.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant: a new variant that is not added here fails to compile in
    /// `kind` below.
    fn one_of_each() -> Vec<ServiceError> {
        let every = vec![
            ServiceError::invalid("name", "empty"),
            ServiceError::IdempotencyKeyReused,
            ServiceError::Unauthenticated("who"),
            ServiceError::Forbidden("not yours"),
            ServiceError::NotFound("product"),
            ServiceError::conflict("stale", Some(2)),
            ServiceError::Raced("a picture was removed"),
            ServiceError::InsufficientStock {
                available: 1,
                requested: 2,
            },
            ServiceError::TooManyRequests {
                retry_after: Duration::from_secs(7),
            },
            ServiceError::Busy {
                retry_after: Duration::from_secs(2),
            },
            ServiceError::Unavailable(anyhow::anyhow!("pool")),
            ServiceError::Internal(anyhow::anyhow!("bug")),
        ];
        for err in &every {
            // Exhaustive: a variant missing above is a compile error here.
            match err {
                ServiceError::Invalid { .. }
                | ServiceError::IdempotencyKeyReused
                | ServiceError::Unauthenticated(_)
                | ServiceError::Forbidden(_)
                | ServiceError::NotFound(_)
                | ServiceError::Conflict { .. }
                | ServiceError::Raced(_)
                | ServiceError::InsufficientStock { .. }
                | ServiceError::TooManyRequests { .. }
                | ServiceError::Busy { .. }
                | ServiceError::Unavailable(_)
                | ServiceError::Internal(_) => {}
            }
        }
        every
    }

    #[test]
    fn every_error_has_one_status_one_code_and_says_when_to_retry() {
        const REST_CODES: [&str; 10] = [
            "BAD_REQUEST",
            "UNAUTHENTICATED",
            "FORBIDDEN",
            "NOT_FOUND",
            "CONFLICT",
            "INSUFFICIENT_STOCK",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
            "TOO_MANY_REQUESTS",
            "INTERNAL",
        ];
        for err in one_of_each() {
            let status = err.http_status().as_u16();
            assert!(REST_CODES.contains(&err.rest_code()), "{err:?}");
            // A client mistake is never a 5xx, and only a failure of ours is a 500.
            assert_eq!(
                status == 500,
                matches!(err, ServiceError::Internal(_)),
                "{err:?}"
            );
            // What may be retried says when, and is a 429 or a 503; nothing else is.
            assert_eq!(err.is_retryable(), err.retry_after().is_some(), "{err:?}");
            assert_eq!(err.is_retryable(), matches!(status, 429 | 503), "{err:?}");
        }
        let busy = ServiceError::Busy {
            retry_after: Duration::from_secs(2),
        };
        assert_eq!((busy.code(), busy.rest_code()), ("BUSY", "INTERNAL"));
    }
}

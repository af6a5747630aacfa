//! Idempotency keys: a retried write returns its first result instead of running again.
//!
//! Keys are unique per partner. A write claims its key inside its own transaction
//! ([`claim_key!`]) and stores its result there too ([`record_key!`]), so the claim and
//! the change commit together or not at all: a retry either finds the first result or
//! applies the change itself, never both. A write that fails rolls its claim back, so a
//! failed attempt does not burn the key.
//!
//! A key comes with a fingerprint of the request it was sent with; the same key with
//! another fingerprint is [`ServiceError::IdempotencyKeyReused`] and writes nothing.

use sha2::{Digest as _, Sha256};

use crate::domain::IdempotencyKey;

/// An idempotency key and the fingerprint of the request that carries it.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub fingerprint: String,
}

impl Idempotency {
    /// A key for a request described by `parts` (its operation first), hashed so that
    /// any difference in any part gives another fingerprint.
    pub fn new<S: AsRef<str>>(key: IdempotencyKey, parts: &[S]) -> Self {
        Self {
            key,
            fingerprint: fingerprint(parts),
        }
    }
}

/// A SHA-256 over the parts, each terminated so that `["ab", "c"]` and `["a", "bc"]`
/// differ.
pub fn fingerprint<S: AsRef<str>>(parts: &[S]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        let part = part.as_ref();
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// Claims an idempotency key inside the caller's transaction. Evaluates to
/// `Ok(None)` when the key is new (the write goes ahead and must [`record_key!`] its
/// result), `Ok(Some(result))` when the same request ran before, and an error when the
/// key was used for another request.
///
/// A concurrent claim of the same key blocks on the insert until the other transaction
/// ends (a row lock on PostgreSQL, the write lock on SQLite), then sees its committed
/// row. A macro, not a function generic over the executor: such a function's
/// higher-ranked bounds defeat the `Send` inference of the async callers.
macro_rules! claim_key {
    ($tx:expr, $user_id:expr, $operation:expr, $idempotency:expr, $now:expr) => {{
        let idem: &$crate::service::idempotency::Idempotency = $idempotency;
        let inserted = sqlx::query(
            "insert into idempotency_keys (user_id, key, operation, request_hash, response, created_at)
             values ($1, $2, $3, $4, '', $5) on conflict do nothing",
        )
        .bind($user_id)
        .bind(idem.key.as_str())
        .bind($operation)
        .bind(idem.fingerprint.as_str())
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            Ok::<Option<String>, $crate::error::ServiceError>(None)
        } else {
            let (operation, hash, response): (String, String, String) = sqlx::query_as(
                "select operation, request_hash, response from idempotency_keys
                 where user_id = $1 and key = $2",
            )
            .bind($user_id)
            .bind(idem.key.as_str())
            .fetch_one(&mut *$tx)
            .await?;
            if operation == $operation && hash == idem.fingerprint {
                Ok(Some(response))
            } else {
                Err($crate::error::ServiceError::IdempotencyKeyReused)
            }
        }
    }};
}
pub(crate) use claim_key;

/// Stores the result of a write under the key it claimed, in the same transaction.
macro_rules! record_key {
    ($tx:expr, $user_id:expr, $idempotency:expr, $result:expr) => {{
        let idem: &$crate::service::idempotency::Idempotency = $idempotency;
        let stored = serde_json::to_string($result)
            .map_err(|e| $crate::error::ServiceError::Internal(e.into()))?;
        sqlx::query("update idempotency_keys set response = $1 where user_id = $2 and key = $3")
            .bind(stored)
            .bind($user_id)
            .bind(idem.key.as_str())
            .execute(&mut *$tx)
            .await
            .map(|_| ())
    }};
}
pub(crate) use record_key;

/// Reads back a result stored by [`record_key!`].
pub(crate) fn stored_result<T: serde::de::DeserializeOwned>(
    response: &str,
) -> crate::error::ServiceResult<T> {
    serde_json::from_str(response).map_err(|e| crate::error::ServiceError::Internal(e.into()))
}

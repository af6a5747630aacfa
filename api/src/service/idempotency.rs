//! Idempotency keys: a retried write returns its first result instead of running again.
//!
//! Keys are unique per partner. A write claims its key inside its own transaction
//! ([`Tx::claim_key`]) and stores its result there too ([`Tx::record_key`]), so the claim and
//! the change commit together or not at all: a retry either finds the first result or
//! applies the change itself, never both. A write that fails rolls its claim back, so a
//! failed attempt does not burn the key.
//!
//! A key comes with a fingerprint of the request it was sent with; the same key with
//! another fingerprint is [`ServiceError::IdempotencyKeyReused`] and writes nothing.

use sha2::{Digest as _, Sha256};

use crate::db::{Sql, Tx};
use crate::domain::IdempotencyKey;
use crate::error::{ServiceError, ServiceResult};

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

impl Tx {
    /// Claims an idempotency key for `user_id`'s `operation` inside this transaction.
    /// `Ok(None)` when the key is new (the write goes ahead and must
    /// [`record_key`](Self::record_key) its result), `Ok(Some(result))` when the same
    /// request ran before, and an error when the key was used for another request.
    ///
    /// A concurrent claim of the same key blocks on the insert until the other
    /// transaction ends (a row lock on PostgreSQL, the write lock on SQLite), then sees
    /// its committed row.
    pub(crate) async fn claim_key(
        &mut self,
        user_id: i64,
        operation: &str,
        idem: &Idempotency,
        now: i64,
    ) -> ServiceResult<Option<String>> {
        let inserted = self
            .execute(
                &Sql::new(
                    "insert into idempotency_keys (user_id, key, operation, request_hash, response, created_at)
                     values ($1, $2, $3, $4, '', $5) on conflict do nothing",
                )
                .arg(user_id)
                .arg(idem.key.as_str())
                .arg(operation)
                .arg(idem.fingerprint.as_str())
                .arg(now),
            )
            .await?;
        if inserted == 1 {
            return Ok(None);
        }
        let (first_operation, hash, response): (String, String, String) = self
            .fetch_one(
                &Sql::new(
                    "select operation, request_hash, response from idempotency_keys
                     where user_id = $1 and key = $2",
                )
                .arg(user_id)
                .arg(idem.key.as_str()),
            )
            .await?;
        if first_operation == operation && hash == idem.fingerprint {
            Ok(Some(response))
        } else {
            Err(ServiceError::IdempotencyKeyReused)
        }
    }

    /// Stores the result of a write under the key it claimed, in this transaction.
    pub(crate) async fn record_key<T: serde::Serialize>(
        &mut self,
        user_id: i64,
        idem: &Idempotency,
        result: &T,
    ) -> ServiceResult<()> {
        let stored = serde_json::to_string(result).map_err(|e| ServiceError::Internal(e.into()))?;
        self.execute(
            &Sql::new("update idempotency_keys set response = $1 where user_id = $2 and key = $3")
                .arg(stored)
                .arg(user_id)
                .arg(idem.key.as_str()),
        )
        .await?;
        Ok(())
    }
}

/// Reads back a result stored by [`Tx::record_key`].
pub(crate) fn stored_result<T: serde::de::DeserializeOwned>(
    response: &str,
) -> crate::error::ServiceResult<T> {
    serde_json::from_str(response).map_err(|e| crate::error::ServiceError::Internal(e.into()))
}

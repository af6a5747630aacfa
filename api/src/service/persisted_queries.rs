//! Automatic persisted queries (Apollo's APQ protocol): query texts kept by their
//! SHA-256, so a client may send the hash alone, by GET as well, once any replica has
//! seen the text.
//!
//! The texts live in the database (`persisted_queries`), so a hash one replica learned
//! is known to every other; each replica keeps the ones it used last in memory
//! ([`CACHED`]), filled from the database. Both are bounded: a text longer than
//! [`MAX_QUERY_BYTES`] is run but not kept, and past [`MAX_STORED`] rows the oldest are
//! dropped (their clients send the text again once, and it is kept anew). A stored text
//! is only a stand-in for the text the client could have sent: it runs through every
//! check a sent one does (parsing, depth, cost, the per-request limits).
//!
//! Who sent a text decides whose room it takes ([`Sender`]). Texts from callers with
//! no valid credential have a quota of their own ([`MAX_STORED_ANONYMOUS`]), and one of
//! them only ever pushes out the oldest anonymous text: a stranger sending thousands of
//! distinct queries cannot evict the texts signed-in partners' clients rely on.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::Service;
use crate::db::{now_ms, Sql};
use crate::error::{ServiceError, ServiceResult};

/// The most query texts the database keeps, by default.
pub const MAX_STORED: i64 = 10_000;
/// The most texts kept from callers without a valid credential (a quota apart).
pub const MAX_STORED_ANONYMOUS: i64 = 1_000;
/// The longest text that is kept, in bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// How many texts each replica keeps in memory.
pub const CACHED: usize = 1_024;

/// Who sent a text to keep: whose quota it takes, and whose texts it may push out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A caller with a valid session or token.
    Partner,
    /// Anyone else.
    Anonymous,
}

/// The store's bound, and each replica's memory of the texts it used last.
#[derive(Clone)]
pub struct PersistedQueries {
    cache: Arc<Mutex<LruCache<String, Arc<str>>>>,
    max_stored: i64,
    max_stored_anonymous: i64,
}

impl Default for PersistedQueries {
    fn default() -> Self {
        Self {
            cache: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED).unwrap_or(NonZeroUsize::MIN),
            ))),
            max_stored: MAX_STORED,
            max_stored_anonymous: MAX_STORED_ANONYMOUS,
        }
    }
}

impl std::fmt::Debug for PersistedQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistedQueries")
            .field("max_stored", &self.max_stored)
            .field("max_stored_anonymous", &self.max_stored_anonymous)
            .finish_non_exhaustive()
    }
}

impl PersistedQueries {
    fn get(&self, sha256: &str) -> Option<Arc<str>> {
        self.cache.lock().ok()?.get(sha256).cloned()
    }

    fn put(&self, sha256: String, query: Arc<str>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(sha256, query);
        }
    }
}

/// A hash as APQ sends it: 64 lower-case hex digits (upper case is read as lower).
pub fn parse_sha256(field: &'static str, raw: &str) -> ServiceResult<String> {
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ServiceError::invalid(
            field,
            "must be the SHA-256 of the query, as 64 hex digits",
        ))
    }
}

impl Service {
    /// The same service, keeping at most `max` texts from partners in the database
    /// (default [`MAX_STORED`]; `--persisted-queries-max`) and `max_anonymous` from
    /// anyone else (default [`MAX_STORED_ANONYMOUS`];
    /// `--persisted-queries-anonymous-max`).
    pub fn with_max_persisted_queries(self, max: i64, max_anonymous: i64) -> Self {
        Self {
            queries: PersistedQueries {
                max_stored: max,
                max_stored_anonymous: max_anonymous,
                ..PersistedQueries::default()
            },
            ..self
        }
    }

    /// The text stored under a hash (see [`parse_sha256`]), or `None` when no replica
    /// has been sent it (or it was dropped as the oldest).
    pub async fn persisted_query(&self, sha256: &str) -> ServiceResult<Option<Arc<str>>> {
        if let Some(query) = self.queries.get(sha256) {
            return Ok(Some(query));
        }
        let stored: Option<String> = self
            .db
            .scalar_optional(
                &Sql::new("select query from persisted_queries where sha256 = $1").arg(sha256),
            )
            .await?;
        Ok(stored.map(|query| {
            let query: Arc<str> = query.into();
            self.queries.put(sha256.to_owned(), query.clone());
            query
        }))
    }

    /// Keeps a text under its hash (which the caller has checked is the text's), unless
    /// it is longer than [`MAX_QUERY_BYTES`]. Past the sender's bound the oldest rows of
    /// its own kind go (partners': [`MAX_STORED`]; anonymous: [`MAX_STORED_ANONYMOUS`]).
    pub async fn persist_query(
        &self,
        sha256: String,
        query: String,
        sender: Sender,
    ) -> ServiceResult<()> {
        if query.len() > MAX_QUERY_BYTES || self.queries.get(&sha256).is_some() {
            return Ok(());
        }
        let query: Arc<str> = query.into();
        let (db, key, text) = (self.db.clone(), sha256.clone(), query.clone());
        // A literal, not a bound value: the statements differ only in which kind of row
        // they write, count and evict.
        let (anonymous, max_stored) = match sender {
            Sender::Partner => ("false", self.queries.max_stored),
            Sender::Anonymous => ("true", self.queries.max_stored_anonymous),
        };
        let insert = format!(
            "insert into persisted_queries (sha256, query, created_at, anonymous) \
             values ($1, $2, $3, {anonymous}) on conflict (sha256) do nothing"
        );
        let count = format!("select count(*) from persisted_queries where anonymous = {anonymous}");
        let evict = format!(
            "delete from persisted_queries where id in (select id from \
             persisted_queries where anonymous = {anonymous} order by id limit $1)"
        );
        self.detached(async move {
            let mut tx = db.begin_write().await?;
            let added = tx
                .execute(&Sql::new(insert).arg(&key).arg(&*text).arg(now_ms()))
                .await?;
            if added > 0 {
                let stored: i64 = tx.scalar_one(&Sql::new(count)).await?;
                if stored > max_stored {
                    tx.execute(&Sql::new(evict).arg(stored - max_stored))
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .await?;
        self.queries.put(sha256, query);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_64_hex_digits() {
        let hash = "A".repeat(64);
        assert_eq!(parse_sha256("h", &hash).unwrap(), "a".repeat(64));
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65), &"é".repeat(32)] {
            assert_eq!(parse_sha256("h", bad).unwrap_err().code(), "BAD_USER_INPUT");
        }
    }
}

//! Cookie sessions, stored in the database through tower-sessions.
//!
//! The store is the crate's own SQLite or PostgreSQL store, picked by engine, so a login
//! or logout made through one replica is seen by every other at once. Handlers never
//! touch raw session keys: [`PartnerSession`] is the one typed view of a session.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions::Session;
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::db::{now_ms, Db};
use crate::error::ServiceResult;

/// The session store of whichever engine the replica runs on.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    pub fn new(db: &Db) -> Self {
        match db {
            Db::Sqlite(pool, _) => Self::Sqlite(SqliteStore::new(pool.clone())),
            Db::Postgres(pool) => Self::Postgres(PostgresStore::new(pool.clone())),
        }
    }

    /// Creates the session table if it is missing (idempotent, safe to race).
    pub async fn migrate(&self) -> sqlx::Result<()> {
        match self {
            Self::Sqlite(s) => s.migrate().await,
            Self::Postgres(s) => s.migrate().await,
        }
    }
}

/// Runs a session write to its end on a task of its own. tower-sessions writes from the
/// request's future (at login, logout and refresh), and `create` opens a transaction:
/// dropped mid-`begin` when the client goes away, it could leave its connection inside
/// that transaction (see `Service::detached`). Here only the wait is dropped.
async fn detached<T: Send + 'static>(
    write: impl std::future::Future<Output = session_store::Result<T>> + Send + 'static,
) -> session_store::Result<T> {
    tokio::spawn(write)
        .await
        .map_err(|e| session_store::Error::Backend(format!("a session write's task failed: {e}")))?
}

#[async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (store, mut owned) = (self.clone(), record.clone());
        *record = detached(async move {
            match &store {
                Self::Sqlite(s) => s.create(&mut owned).await,
                Self::Postgres(s) => s.create(&mut owned).await,
            }
            .map(|()| owned)
        })
        .await?;
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (store, owned) = (self.clone(), record.clone());
        detached(async move {
            match &store {
                Self::Sqlite(s) => s.save(&owned).await,
                Self::Postgres(s) => s.save(&owned).await,
            }
        })
        .await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Sqlite(s) => s.load(id).await,
            Self::Postgres(s) => s.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let (store, id) = (self.clone(), *id);
        detached(async move {
            match &store {
                Self::Sqlite(s) => s.delete(&id).await,
                Self::Postgres(s) => s.delete(&id).await,
            }
        })
        .await
    }
}

#[async_trait]
impl ExpiredDeletion for Store {
    async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            Self::Sqlite(s) => s.delete_expired().await,
            Self::Postgres(s) => s.delete_expired().await,
        }
    }
}

const KEY: &str = "partner";

/// What a session remembers: who logged in, and when the session was last extended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct SessionData {
    user_id: i64,
    touched_at: i64,
}

/// The typed view of a tower-sessions [`Session`].
#[derive(Clone, Debug)]
pub struct PartnerSession(Session);

impl PartnerSession {
    pub fn new(session: Session) -> Self {
        Self(session)
    }

    /// The logged-in partner, if any.
    ///
    /// Sessions expire after a period of inactivity. Saving a session pushes its expiry
    /// forward, but writing it on every request would make every read a database write,
    /// so it is re-saved only once `refresh_after_ms` has passed since the last save.
    pub async fn user_id(&self, refresh_after_ms: i64) -> ServiceResult<Option<i64>> {
        let Some(data) = self.0.get::<SessionData>(KEY).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if now - data.touched_at >= refresh_after_ms {
            self.0
                .insert(
                    KEY,
                    SessionData {
                        touched_at: now,
                        ..data
                    },
                )
                .await?;
        }
        Ok(Some(data.user_id))
    }

    /// Starts a logged-in session under a fresh id, so an id planted before login
    /// (session fixation) is worthless afterwards.
    pub async fn log_in(&self, user_id: i64) -> ServiceResult<()> {
        self.0.cycle_id().await?;
        self.0
            .insert(
                KEY,
                SessionData {
                    user_id,
                    touched_at: now_ms(),
                },
            )
            .await?;
        Ok(())
    }

    /// Deletes the session from the database: the cookie is dead on every replica.
    pub async fn log_out(&self) -> ServiceResult<()> {
        self.0.flush().await?;
        Ok(())
    }
}

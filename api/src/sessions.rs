//! Partner sessions: the store (in the database, through tower-sessions) and the typed
//! view of a session. Below `graphql` and `http`, which both log partners in and out;
//! the cookie and its layer are `http`'s.
//!
//! The store is the crate's own SQLite or PostgreSQL store, picked by engine, so a login
//! or logout made through one replica is seen by every other at once. Handlers never
//! touch raw session keys: [`PartnerSession`] is the one typed view of a session.
//!
//! # When a session cannot be written
//!
//! tower-sessions saves a changed session after the handler has answered (at login, and
//! when a session's expiry is pushed forward), and when that save fails it replaces the
//! answer with a bare 500 and no body. Under overload a save can fail: the pool or the
//! write lock is not had in time. Those were the plain 500s of the overload run in
//! issue 15. So:
//!
//! - a new session (a login) that cannot be stored is noted in the request's task
//!   ([`watching_writes`]; `http::session` answers that 500 as what it is: 503,
//!   the service is unavailable, with `Retry-After`, in the API's own error shape);
//! - a refresh that cannot be stored is skipped ([`Store::save`]): the answer it would
//!   replace may be that of a write already applied, and a client told "unavailable"
//!   would count that write as lost. A stock change answered 503 after it was applied
//!   broke the ledger check of the 5,000-user run this way.
//!
//! (Upstream, the layer could take a handler for a failed save; see
//! docs/RELIABILITY.md.)
//!
//! On SQLite, session writes also take their turn at the write gate, as every other
//! write does: left to SQLite's busy handler, a session write polled for the lock
//! behind a queue of stock changes and could give up after `--db-timeout-secs`.

use std::cell::Cell;

use std::future::Future;

use anyhow::anyhow;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions::Session;
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::db::{now_ms, Class, Db, Lane, Sql};
use crate::error::{ServiceError, ServiceResult};

/// The session store of whichever engine the replica runs on, and the index of which
/// partner each stored session belongs to (`partner_sessions`; a password change ends a
/// partner's sessions with `Tx::end_sessions_of`).
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
    /// The database of the store and of the index; on SQLite, its write gate is the one
    /// every writer of this process passes.
    db: Db,
}

#[derive(Clone, Debug)]
enum Engine {
    Sqlite(SqliteStore),
    /// On PostgreSQL, a store on each of two lanes (`db::PgLanes`): loads, one per
    /// request that carries a cookie, are reads, bounded as the read lane's queries
    /// are; writes (logins, logouts, refreshes) have the session lane's connections,
    /// so a login storm never takes a stock change's, nor a read's.
    Postgres {
        reads: PostgresStore,
        read_lane: Lane,
        writes: PostgresStore,
    },
}

impl Store {
    pub fn new(db: &Db) -> Self {
        // The store's default table names, which `Tx::end_sessions_of` deletes from.
        let engine = match db {
            Db::Sqlite(pool, _) => Engine::Sqlite(SqliteStore::new(pool.clone())),
            Db::Postgres(lanes, _) => Engine::Postgres {
                reads: PostgresStore::new(lanes.lane(Class::Read).pool().clone()),
                read_lane: lanes.lane(Class::Read).clone(),
                writes: PostgresStore::new(lanes.lane(Class::Session).pool().clone()),
            },
        };
        Self {
            engine,
            db: db.clone(),
        }
    }

    /// Creates the session table if it is missing (idempotent, safe to race).
    pub async fn migrate(&self) -> sqlx::Result<()> {
        match &self.engine {
            Engine::Sqlite(s) => s.migrate().await,
            Engine::Postgres { writes, .. } => writes.migrate().await,
        }
    }

    /// This writer's turn at the write gate, on SQLite; nothing to wait for elsewhere.
    /// A `patient` writer waits as long as the database timeout rather than the write
    /// deadline.
    async fn turn(&self, patient: bool) -> session_store::Result<Option<crate::db::WriteTurn>> {
        match &self.db {
            Db::Sqlite(_, gate) => {
                let turn = if patient {
                    gate.enter_patiently().await
                } else {
                    gate.enter().await
                };
                turn.map(Some).map_err(|e| {
                    session_store::Error::Backend(format!("no turn to write the session: {e}"))
                })
            }
            Db::Postgres(..) => Ok(None),
        }
    }

    /// Notes in the index whose session `record` is, once the store holds it: only
    /// while the password version its login verified is still the partner's. A login
    /// that checked the password just before a change committed stores nothing: the
    /// session is deleted again and the login fails (503, a retry meets the new
    /// password).
    async fn index(&self, record: &Record) -> session_store::Result<()> {
        let Some(data) = session_data(record) else {
            return Ok(());
        };
        let indexed = self
            .db
            .execute_in(
                Class::Session,
                &Sql::new(
                    "insert into partner_sessions (session_id, user_id, expires_at)
                     select $1, id, $3 from users where id = $2 and password_version = $4
                     on conflict (session_id) do update
                         set user_id = excluded.user_id, expires_at = excluded.expires_at",
                )
                .arg(record.id.to_string())
                .arg(data.user_id)
                .arg(expiry_ms(record))
                .arg(data.password_version),
            )
            .await
            .map_err(backend)?;
        if indexed == 0 {
            self.delete_now(&record.id).await?;
            return Err(session_store::Error::Backend(
                "the partner's password changed while logging in".to_owned(),
            ));
        }
        Ok(())
    }
}

fn backend(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

/// What a session record says of its partner, when it is logged in.
fn session_data(record: &Record) -> Option<SessionData> {
    record
        .data
        .get(KEY)
        .cloned()
        .and_then(|data| serde_json::from_value::<SessionData>(data).ok())
}

/// The partner a session record is logged in as.
fn partner_of(record: &Record) -> Option<i64> {
    session_data(record).map(|data| data.user_id)
}

fn expiry_ms(record: &Record) -> i64 {
    i64::try_from(record.expiry_date.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Store {
    /// The partner a stored session is logged in as: `None` once it was logged out,
    /// replaced at login, ended by a password change, or expired. A WebSocket opened
    /// with the session asks this again before each operation
    /// (`http::auth::SocketCredential`).
    pub async fn partner(&self, id: &Id) -> ServiceResult<Option<i64>> {
        let record = self
            .load(id)
            .await
            .map_err(|e| ServiceError::Unavailable(anyhow!("cannot read the session: {e}")))?;
        Ok(record.as_ref().and_then(partner_of))
    }
}

tokio::task_local! {
    /// Whether a session write failed in this request (see the module docs).
    static WRITE_FAILED: Cell<bool>;
}

/// Notes a failed session write in the request's task, for [`watching_writes`].
/// Outside a request (the expiry sweep) there is no one to answer, and nothing is noted.
fn noted<T>(result: session_store::Result<T>) -> session_store::Result<T> {
    if result.is_err() {
        let _ = WRITE_FAILED.try_with(|failed| failed.set(true));
    }
    result
}

/// Runs a request's future, and tells whether a session write failed in it.
pub async fn watching_writes<F: Future>(request: F) -> (F::Output, bool) {
    WRITE_FAILED
        .scope(Cell::new(false), async move {
            let out = request.await;
            (out, WRITE_FAILED.with(Cell::get))
        })
        .await
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
    /// A new session: a login. It waits for its turn as long as the database timeout,
    /// since the login's password work is already done, and a failure fails the login
    /// (503, see the module docs).
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (store, mut owned) = (self.clone(), record.clone());
        *record = noted(
            detached(async move {
                let _turn = store.turn(true).await?;
                match &store.engine {
                    Engine::Sqlite(s) => s.create(&mut owned).await,
                    Engine::Postgres { writes, .. } => writes.create(&mut owned).await,
                }?;
                store.index(&owned).await?;
                Ok(owned)
            })
            .await,
        )?;
        Ok(())
    }

    /// An existing session saved again: in this service, only to push its expiry
    /// forward ([`PartnerSession::user_id`]). tower-sessions saves it after the handler
    /// has answered, so a failure here would turn a write that was applied into an
    /// error, and the client would count it as lost. So a refresh waits no longer than
    /// the write deadline, and one that fails is skipped with a warning: the session
    /// keeps its earlier expiry, and a later request refreshes it.
    ///
    /// The store's save is an upsert: a refresh that loaded the session before a
    /// password change ended it would bring it back. So a partner's session is saved
    /// only while the index still has it, and when the index lost it meanwhile (the
    /// change committed between the check and the save), it is deleted again. A
    /// session the index never had (stored before the index existed) ends here too.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (store, owned) = (self.clone(), record.clone());
        // On PostgreSQL the session lane waits as long as the database timeout (logins
        // and logouts must be written); a refresh, in the request's way, is waited for
        // no longer than a write's deadline, and runs on to its end meanwhile.
        let deadline = match &self.db {
            Db::Sqlite(_, gate) => gate.wait(),
            Db::Postgres(lanes, _) => lanes.lane(Class::Write).wait(),
        };
        let saving = detached(async move {
            let _turn = store.turn(false).await?;
            let Some(_) = partner_of(&owned) else {
                return store.save_unindexed(&owned).await;
            };
            let touch =
                Sql::new("update partner_sessions set expires_at = $1 where session_id = $2")
                    .arg(expiry_ms(&owned))
                    .arg(owned.id.to_string());
            let touched = || store.db.execute_in(Class::Session, &touch);
            if touched().await.map_err(backend)? == 0 {
                return store.delete_now(&owned.id).await;
            }
            store.save_unindexed(&owned).await?;
            if touched().await.map_err(backend)? == 0 {
                store.delete_now(&owned.id).await?;
            }
            Ok(())
        });
        let saved = tokio::time::timeout(deadline, saving)
            .await
            .unwrap_or_else(|_| Err(backend("still running after the write deadline")));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "a session's expiry was not pushed forward");
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match &self.engine {
            Engine::Sqlite(s) => s.load(id).await,
            Engine::Postgres {
                reads, read_lane, ..
            } => read_lane.bounded(reads.load(id)).await.map_err(backend)?,
        }
    }

    /// A session ended: a logout (or a login's old id, replaced). It waits for its turn
    /// as long as the database timeout, not the write deadline: a partner who logs out
    /// must be logged out, and a burst of logouts (a shift ending) is no overload.
    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let (store, id) = (self.clone(), *id);
        noted(
            detached(async move {
                let _turn = store.turn(true).await?;
                store.delete_now(&id).await
            })
            .await,
        )
    }
}

impl Store {
    /// The store's own save.
    async fn save_unindexed(&self, record: &Record) -> session_store::Result<()> {
        match &self.engine {
            Engine::Sqlite(s) => s.save(record).await,
            Engine::Postgres { writes, .. } => writes.save(record).await,
        }
    }

    /// Deletes a session and its index entry; the caller holds the turn.
    async fn delete_now(&self, id: &Id) -> session_store::Result<()> {
        match &self.engine {
            Engine::Sqlite(s) => s.delete(id).await,
            Engine::Postgres { writes, .. } => writes.delete(id).await,
        }?;
        self.db
            .execute_in(
                Class::Session,
                &Sql::new("delete from partner_sessions where session_id = $1").arg(id.to_string()),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for Store {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let _turn = self.turn(true).await?;
        match &self.engine {
            Engine::Sqlite(s) => s.delete_expired().await,
            Engine::Postgres { writes, .. } => writes.delete_expired().await,
        }?;
        self.db
            .execute_in(
                Class::Session,
                &Sql::new("delete from partner_sessions where expires_at < $1").arg(now_ms()),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

const KEY: &str = "partner";

/// What a session remembers: who logged in, with which version of their password, and
/// when the session was last extended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct SessionData {
    user_id: i64,
    touched_at: i64,
    /// `users.password_version` when the login checked the password (0 in sessions
    /// stored before versions were kept: never current).
    #[serde(default)]
    password_version: i64,
}

/// The typed view of a tower-sessions [`Session`].
#[derive(Clone, Debug)]
pub struct PartnerSession(Session);

impl PartnerSession {
    pub fn new(session: Session) -> Self {
        Self(session)
    }

    /// The session's id, once it was loaded (by [`Self::user_id`]) or created.
    pub fn id(&self) -> Option<Id> {
        self.0.id()
    }

    /// The logged-in partner, if any.
    ///
    /// Sessions expire after a period of inactivity. Saving a session pushes its expiry
    /// forward, but writing it on every request would make every read a database write,
    /// so it is re-saved only once `refresh_after` has passed since the last save.
    pub async fn user_id(&self, refresh_after: std::time::Duration) -> ServiceResult<Option<i64>> {
        let refresh_after_ms = i64::try_from(refresh_after.as_millis()).unwrap_or(i64::MAX);
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
    /// (session fixation) is worthless afterwards. `password_version` is the version the
    /// login verified: the session is stored only while it is still the partner's.
    pub async fn log_in(&self, user_id: i64, password_version: i64) -> ServiceResult<()> {
        self.0.cycle_id().await?;
        self.0
            .insert(
                KEY,
                SessionData {
                    user_id,
                    touched_at: now_ms(),
                    password_version,
                },
            )
            .await?;
        Ok(())
    }

    /// Keeps the session, under a fresh id and with the password's new version: after a
    /// password change, whoever learnt the old id holds nothing.
    pub async fn renew(&self, password_version: i64) -> ServiceResult<()> {
        if let Some(data) = self.0.get::<SessionData>(KEY).await? {
            self.0
                .insert(
                    KEY,
                    SessionData {
                        password_version,
                        ..data
                    },
                )
                .await?;
        }
        self.0.cycle_id().await?;
        Ok(())
    }

    /// Deletes the session from the database: the cookie is dead on every replica.
    pub async fn log_out(&self) -> ServiceResult<()> {
        self.0.flush().await?;
        Ok(())
    }
}

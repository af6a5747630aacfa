//! The write transaction: one type, with one arm per engine inside it.
//!
//! A service function opens one with [`Db::begin_write`](super::Db::begin_write), runs
//! statements on it, and calls [`Tx::commit`]. A `?` on the way, or any return before
//! the commit, drops it, and dropping it rolls back. The rules built on it (claiming an
//! idempotency key, appending to the ledger, loading a product for a write) are
//! ordinary async methods on [`Tx`], each in the service module whose rule it is.
//!
//! On SQLite, the transaction holds this process's turn at the [`WriteGate`] from
//! before `BEGIN IMMEDIATE` until it ends, so one write transaction must not open
//! another. Write transactions run on tasks of their own (`Service::detached`), never in
//! a request's future: see the module docs of `db`.

use sqlx::{Postgres, Sqlite, Transaction};

use super::statement::{arguments, Row, Scalar, Sql};
use super::{FeedSignal, WriteTurn};

/// An open write transaction on either engine.
pub struct Tx {
    inner: Inner,
}

enum Inner {
    /// The transaction, and the turn at the write gate it holds until it ends.
    Sqlite(Transaction<'static, Sqlite>, WriteTurn),
    /// The transaction, and the signal its commit raises when it appended to a feed.
    Postgres(Transaction<'static, Postgres>, FeedSignal, bool),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_postgres() {
            "Tx(Postgres)"
        } else {
            "Tx(Sqlite)"
        })
    }
}

impl Tx {
    pub(super) fn sqlite(tx: Transaction<'static, Sqlite>, turn: WriteTurn) -> Self {
        Self {
            inner: Inner::Sqlite(tx, turn),
        }
    }

    pub(super) fn postgres(tx: Transaction<'static, Postgres>, feed: FeedSignal) -> Self {
        Self {
            inner: Inner::Postgres(tx, feed, false),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Postgres(..))
    }

    /// Commits, and gives the write gate's turn back. On PostgreSQL, a transaction that
    /// appended to a feed then raises the feed signal (see [`Tx::appends_to_feed`]).
    pub async fn commit(self) -> sqlx::Result<()> {
        match self.inner {
            Inner::Sqlite(tx, _turn) => tx.commit().await,
            Inner::Postgres(tx, feed, appended) => {
                tx.commit().await?;
                if appended {
                    feed.raise();
                }
                Ok(())
            }
        }
    }

    /// Runs a statement; the number of rows it changed.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn execute(&mut self, sql: &Sql) -> sqlx::Result<u64> {
        Ok(match &mut self.inner {
            Inner::Sqlite(tx, _) => sqlx::query_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Inner::Postgres(tx, ..) => {
                sqlx::query_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// The one row a statement returns (an error when there is none).
    pub async fn fetch_one<T: Row>(&mut self, sql: &Sql) -> sqlx::Result<T> {
        self.fetch_optional(sql)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Every row a statement returns.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> sqlx::Result<Vec<T>> {
        match &mut self.inner {
            Inner::Sqlite(tx, _) => {
                sqlx::query_as_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_all(&mut **tx)
                    .await
            }
            Inner::Postgres(tx, ..) => {
                sqlx::query_as_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
    }

    /// The row a statement returns, if any.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn fetch_optional<T: Row>(&mut self, sql: &Sql) -> sqlx::Result<Option<T>> {
        match &mut self.inner {
            Inner::Sqlite(tx, _) => {
                sqlx::query_as_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
            Inner::Postgres(tx, ..) => {
                sqlx::query_as_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
        }
    }

    /// The first column of the one row a statement returns.
    pub async fn scalar_one<T: Scalar>(&mut self, sql: &Sql) -> sqlx::Result<T> {
        self.scalar_optional(sql)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// The first column of the row a statement returns, if any.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn scalar_optional<T: Scalar>(&mut self, sql: &Sql) -> sqlx::Result<Option<T>> {
        match &mut self.inner {
            Inner::Sqlite(tx, _) => {
                sqlx::query_scalar_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
            Inner::Postgres(tx, ..) => {
                sqlx::query_scalar_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
        }
    }

    /// Notes that this transaction appends to a change feed (`stock_movements` or
    /// `product_events`), so that its commit wakes the tailers.
    ///
    /// No lock is taken: tailers read a feed in (txid, id) order, only below the oldest
    /// transaction still running (see `service::feed`), so ids that commit out of order
    /// are still read once each and none is skipped. SQLite's tailer polls.
    pub fn appends_to_feed(&mut self) {
        if let Inner::Postgres(_, _, appended) = &mut self.inner {
            *appended = true;
        }
    }
}

/// The session store's table (tower-sessions' sqlx store, `sessions::Store`, under the
/// crate's default names) on SQLite, and on PostgreSQL.
const SESSION_TABLES: [&str; 2] = ["tower_sessions", "\"tower_sessions\".\"session\""];

impl Tx {
    /// Ends every stored session of a partner, on every replica, in this transaction (a
    /// password change: the new hash and the end of the old sessions commit together).
    /// `partner_sessions` says which sessions are the partner's; the store's rows are
    /// deleted by id.
    pub(crate) async fn end_sessions_of(&mut self, user_id: i64) -> sqlx::Result<()> {
        let table = SESSION_TABLES[usize::from(self.is_postgres())];
        self.execute(
            &Sql::new(format!(
                "delete from {table} where id in
                     (select session_id from partner_sessions where user_id = $1)"
            ))
            .arg(user_id),
        )
        .await?;
        self.execute(&Sql::new("delete from partner_sessions where user_id = $1").arg(user_id))
            .await?;
        Ok(())
    }
}

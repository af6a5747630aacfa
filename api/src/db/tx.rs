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
use super::WriteTurn;

/// An open write transaction on either engine.
pub struct Tx {
    inner: Inner,
}

enum Inner {
    /// The transaction, and the turn at the write gate it holds until it ends.
    Sqlite(Transaction<'static, Sqlite>, WriteTurn),
    Postgres(Transaction<'static, Postgres>),
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

    pub(super) fn postgres(tx: Transaction<'static, Postgres>) -> Self {
        Self {
            inner: Inner::Postgres(tx),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Postgres(_))
    }

    /// Commits, and gives the write gate's turn back.
    pub async fn commit(self) -> sqlx::Result<()> {
        match self.inner {
            Inner::Sqlite(tx, _turn) => tx.commit().await,
            Inner::Postgres(tx) => tx.commit().await,
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&mut self, sql: &Sql) -> sqlx::Result<u64> {
        Ok(match &mut self.inner {
            Inner::Sqlite(tx, _) => sqlx::query_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Inner::Postgres(tx) => sqlx::query_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// The one row a statement returns (an error when there is none).
    pub async fn fetch_one<T: Row>(&mut self, sql: &Sql) -> sqlx::Result<T> {
        self.fetch_optional(sql)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Every row a statement returns.
    pub async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> sqlx::Result<Vec<T>> {
        match &mut self.inner {
            Inner::Sqlite(tx, _) => {
                sqlx::query_as_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_all(&mut **tx)
                    .await
            }
            Inner::Postgres(tx) => {
                sqlx::query_as_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
    }

    /// The row a statement returns, if any.
    pub async fn fetch_optional<T: Row>(&mut self, sql: &Sql) -> sqlx::Result<Option<T>> {
        match &mut self.inner {
            Inner::Sqlite(tx, _) => {
                sqlx::query_as_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
            Inner::Postgres(tx) => {
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
    pub async fn scalar_optional<T: Scalar>(&mut self, sql: &Sql) -> sqlx::Result<Option<T>> {
        match &mut self.inner {
            Inner::Sqlite(tx, _) => {
                sqlx::query_scalar_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
            Inner::Postgres(tx) => {
                sqlx::query_scalar_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_optional(&mut **tx)
                    .await
            }
        }
    }

    /// Takes the feed lock, just before appending to a change feed (`stock_movements` or
    /// `product_events`), on PostgreSQL.
    ///
    /// Subscribers tail the feeds by id, so ids must become visible in increasing order.
    /// A sequence hands out ids at insert time, not commit time, so two concurrent
    /// transactions could commit ids 11 then 10, and a tailer that had read up to 11
    /// would never see 10. Serialising the appends with one transaction-scoped advisory
    /// lock makes id order equal commit order. The same statement queues a NOTIFY,
    /// delivered at commit, which wakes every replica's tailer. No transaction takes a
    /// row lock after this lock, so it cannot deadlock. SQLite needs neither: its
    /// writers are serialised.
    pub async fn feed_lock(&mut self) -> sqlx::Result<()> {
        if let Inner::Postgres(tx) = &mut self.inner {
            sqlx::query("select pg_advisory_xact_lock($1), pg_notify('ecanteen_feed', '')")
                .bind(super::FEED_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

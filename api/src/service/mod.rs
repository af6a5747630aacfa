//! The service layer: every operation and every rule, with no HTTP or GraphQL in sight.
//!
//! GraphQL resolvers and the REST compatibility routes both call [`Service`], so
//! validation, ownership, stock limits and idempotency live here once.
//!
//! - [`users`]: registration, login and its throttling;
//! - [`tokens`]: API tokens for integrators;
//! - [`products`]: the catalogue, and each partner's products;
//! - [`stock`]: stock changes and the ledger;
//! - [`idempotency`]: idempotency keys, claimed in the transaction of the write;
//! - [`pictures`]: product pictures, stored once per content;
//! - [`feed`]: reading the change feeds (ledger and product events) for live updates;
//! - [`password`]: argon2id, off the async runtime;
//! - [`persisted_queries`]: query texts kept by their hash (automatic persisted queries);
//! - [`admission`]: how much CPU-heavy work (passwords, pictures) runs and waits at once.

pub mod admission;
pub mod feed;
pub mod idempotency;
pub mod password;
pub mod persisted_queries;
pub mod pictures;
pub mod products;
pub mod report;
pub mod stock;
pub mod tokens;
pub mod users;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::db::{Db, Sql};
use crate::domain::PictureLimits;
use crate::error::{ServiceError, ServiceResult};

pub use password::{PasswordAdmission, PasswordHasher};
pub use products::{NewProduct, Product, ProductFilter, ProductOrder, ProductPatch, SortField};
pub use report::{ReportGrouping, ReportGroups, ReportRequest, SalesReport};
pub use stock::{AdjustStock, SetStock, StockChange, StockMovement};
pub use tokens::ApiToken;
pub use users::{Login, User};

/// How a request proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Session,
    /// An API token, by its id.
    Token(i64),
}

/// The authenticated partner behind a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user_id: i64,
    pub method: AuthMethod,
}

/// When failed logins lock an account for a while.
#[derive(Clone, Copy, Debug)]
pub struct LoginThrottle {
    /// Failures tolerated within `window`; the next attempt is refused.
    pub max_failures: i64,
    pub window: Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// The canteen's time zone unless configured: the campus of the original paper is in
/// Indonesia's western zone.
pub const DEFAULT_TIME_ZONE: chrono_tz::Tz = chrono_tz::Asia::Jakarta;

/// The service layer, cheap to clone: a database pool and the policies.
#[derive(Clone, Debug)]
pub struct Service {
    db: Db,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    pictures: PictureLimits,
    /// The writes running on tasks of their own (see [`Service::detached`]).
    writes: TaskTracker,
    /// The picture decoders' places (see [`admission`]).
    decodes: Arc<admission::Admission>,
    /// The SQLite stock writer's queue (see [`stock::StockBatches`]).
    stock_batches: stock::StockBatches,
    /// Where failed logins are counted: the main database, or on SQLite a file of its
    /// own (see `Db::open_login_ledger`).
    logins: Db,
    /// The canteen's time zone: where a report's days begin (see [`report`]).
    time_zone: chrono_tz::Tz,
    /// Query texts by hash: the store's bound and this replica's cache.
    queries: persisted_queries::PersistedQueries,
}

impl Service {
    pub fn new(
        db: Db,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        pictures: PictureLimits,
    ) -> Self {
        Self {
            logins: db.clone(),
            db,
            hasher,
            throttle,
            pictures,
            writes: TaskTracker::new(),
            // A large photo decodes in hundreds of milliseconds: a longer wait than for
            // a password.
            stock_batches: stock::StockBatches::default(),
            decodes: Arc::new(admission::Admission::new(
                "picture",
                admission::AdmissionPolicy::per_core(Duration::from_secs(2)),
            )),
            time_zone: DEFAULT_TIME_ZONE,
            queries: persisted_queries::PersistedQueries::default(),
        }
    }

    /// The same service, with days in `time_zone` (default [`DEFAULT_TIME_ZONE`]).
    pub fn with_time_zone(self, time_zone: chrono_tz::Tz) -> Self {
        Self { time_zone, ..self }
    }

    /// The canteen's time zone.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.time_zone
    }

    /// The same service, counting failed logins in `logins` (see
    /// `Db::open_login_ledger`).
    pub fn with_login_ledger(self, logins: Db) -> Self {
        Self { logins, ..self }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// What the SQLite stock writer has committed (see [`stock::StockBatches`]).
    pub fn stock_batches(&self) -> &stock::BatchStats {
        self.stock_batches.stats()
    }

    /// Runs a write to its end on a task of its own, and waits for its result.
    ///
    /// Cancellation is an input: when a client goes away (a phone loses its signal
    /// mid-sale) or a timeout fires, the request's future is dropped at whatever await
    /// it had reached. sqlx 0.8's transactions are not safe to drop everywhere: a
    /// `begin` dropped between its BEGIN and the `Transaction` that would roll it back
    /// leaves the connection inside the transaction (sqlx issue #3932), and on SQLite
    /// that connection then holds the write lock for good, wedging every writer of the
    /// file. So a write never runs in a request's future. The request only waits for
    /// it; dropping the wait leaves the write running to its commit or rollback, and its
    /// result is dropped. Every write that takes the write gate or opens a transaction
    /// goes through here.
    pub(crate) async fn detached<T, W>(&self, write: W) -> ServiceResult<T>
    where
        T: Send + 'static,
        W: Future<Output = ServiceResult<T>> + Send + 'static,
    {
        match self.writes.spawn(write).await {
            Ok(result) => result,
            Err(err) => Err(ServiceError::Internal(anyhow::anyhow!(
                "a write's task failed: {err}"
            ))),
        }
    }

    /// Waits, up to `within`, for the writes still running on their own tasks (their
    /// clients may be gone), so that a shutdown closes the pool after them. False when
    /// some were still running at the deadline.
    pub async fn finish_writes(&self, within: Duration) -> bool {
        self.writes.close();
        tokio::time::timeout(within, self.writes.wait())
            .await
            .is_ok()
    }

    /// Deletes what has outlived its use: old login failures and idempotency records
    /// older than `idempotency_ttl`. Run periodically by every replica; concurrent runs
    /// are harmless.
    pub async fn purge_expired(&self, idempotency_ttl: Duration) -> ServiceResult<()> {
        let now = crate::db::now_ms();
        let failures_before = now - duration_ms(self.throttle.window);
        let keys_before = now - duration_ms(idempotency_ttl);
        self.logins
            .execute(
                &Sql::new("delete from login_failures where failed_at < $1").arg(failures_before),
            )
            .await?;
        self.db
            .execute(
                &Sql::new("delete from idempotency_keys where created_at < $1").arg(keys_before),
            )
            .await?;
        Ok(())
    }
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Why a write to product `id` by `actor` matched no row: it does not exist (or was
/// deleted), or it belongs to someone else. `None` means it exists and is the actor's,
/// so some other guard of the statement failed.
pub(crate) fn ownership_error(owner_id: Option<i64>, actor: &Actor) -> Option<ServiceError> {
    match owner_id {
        None => Some(ServiceError::NotFound("product")),
        Some(owner) if owner != actor.user_id => Some(ServiceError::Forbidden(
            "this product belongs to another partner",
        )),
        Some(_) => None,
    }
}

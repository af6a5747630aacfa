//! Admission on PostgreSQL: one pool per class of work, each a share of the replica's
//! connections, with a bounded queue and a short deadline in front of it.
//!
//! SQLite's one writer gave the replica its admission for free: writes wait at the
//! write gate (a queue of `--write-queue`, a deadline of `--write-wait-ms`) and are
//! refused past it, while WAL readers never wait for the writer. PostgreSQL has no such
//! gate, so with one pool every request waited for any connection, for up to the
//! acquire timeout: at 10,000 users the p99 of admitted requests was 2.6 s (issue 33).
//!
//! So each [`Class`] has its own [`Lane`]:
//! - **reads** (listings, a product, the feed, a session's partner): most of the
//!   connections, so a read never waits behind a write holding a row lock;
//! - **writes** (write transactions and one-statement writes: stock changes, products,
//!   pictures, idempotency keys);
//! - **sessions** (the session store's writes, the session index, the login ledger,
//!   API tokens' last use), so a login storm's writes never take a stock change's
//!   connection. Logins are admitted already (the password work is CPU, admitted apart
//!   by `service::admission`), so this lane waits as long as the database timeout;
//!   a session's refresh is not waited for past the write deadline (`sessions`);
//! - **upkeep**: three connections for what must never wait behind requests: the change
//!   feed's listener (held for good) and announcer (`events`), and the health probes.
//!
//! Reads that complete a write already committed (a stock change's ledger row, read
//! back) are never refused: a client told 503 would send the applied write again. They
//! wait on the write lane's pool past its queue ([`Class::Committed`]).
//!
//! A request joins its lane's queue (at most `queue` wait; one more is refused at
//! once) and waits for a connection at most `wait`; then it is refused with
//! `PoolTimedOut`, which the API answers 503 with `Retry-After`. A refusal costs no
//! connection. The session store runs its own queries on a lane's pool, so its loads
//! are bounded as a whole instead ([`Lane::bounded`]). What must not be refused for
//! overload (the health probes, the change-feed listener, migrations) uses a pool past
//! its queue, bounded by the database timeout. A lane's deadline also covers opening a
//! connection when none is idle (sqlx connects inside `acquire`): over a slow link,
//! raise `--write-wait-ms` above a connect's time. (Keeping every connection open
//! with `min_connections` would avoid it; with it, a connection given back did not
//! always reach a waiting acquire in this crate's tests, which is not understood yet.)

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::{released_outside_transaction, WaitingRoom};

/// A class of work, each with its own lane on PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    Session,
    Upkeep,
    /// A read that completes a committed write: the write lane's pool, past its queue.
    Committed,
}

/// How many connections a class gets, how many may wait for one, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneShare {
    pub connections: u32,
    pub queue: usize,
    pub wait: Duration,
}

/// The shares of the lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneShares {
    pub reads: LaneShare,
    pub writes: LaneShare,
    pub sessions: LaneShare,
    pub upkeep: LaneShare,
}

/// The upkeep lane's connections: the change feed listener's (held for good), and two
/// for its announcer and the health probes (the write probe may wait on a lock while
/// the database ping must still answer).
const UPKEEP_CONNECTIONS: u32 = 3;

impl LaneShares {
    /// `total` connections split between the lanes: three for upkeep, of the rest a
    /// quarter (rounded up) for writes and a quarter for sessions (at least one), and
    /// what is left, at least one, for reads. Ten make 3 + 2 + 1 + 4; PostgreSQL gets at
    /// least six. Sessions wait `patience` (the database timeout), in a queue as long
    /// as the writes'.
    pub fn split(
        total: u32,
        read: (usize, Duration),
        write: (usize, Duration),
        patience: Duration,
    ) -> Self {
        let rest = total.saturating_sub(UPKEEP_CONNECTIONS).max(3);
        let writes = rest.div_ceil(4);
        let sessions = (rest / 4).max(1);
        let reads = rest.saturating_sub(writes + sessions).max(1);
        let share = |connections, (queue, wait): (usize, Duration)| LaneShare {
            connections,
            queue: queue.max(1),
            wait,
        };
        Self {
            reads: share(reads, read),
            writes: share(writes, write),
            sessions: share(sessions, (write.0, patience)),
            upkeep: share(UPKEEP_CONNECTIONS, (write.0, patience)),
        }
    }
}

/// One class's pool, and the bounded queue in front of it.
#[derive(Clone, Debug)]
pub struct Lane {
    pool: PgPool,
    waiting: Arc<WaitingRoom>,
    wait: Duration,
}

impl Lane {
    async fn open(
        connect: &PgConnectOptions,
        share: LaneShare,
        patience: Duration,
    ) -> sqlx::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(share.connections)
            .acquire_timeout(patience)
            .after_release(released_outside_transaction)
            .connect_with(connect.clone())
            .await?;
        Ok(Self {
            pool,
            waiting: Arc::new(WaitingRoom::new(share.queue)),
            wait: share.wait,
        })
    }

    /// A connection, or `PoolTimedOut` at once when the queue is full, or once the
    /// wait runs out.
    pub async fn acquire(&self) -> sqlx::Result<PoolConnection<Postgres>> {
        if let Some(idle) = self.pool.try_acquire() {
            return Ok(idle);
        }
        let Some(_place) = self.waiting.join() else {
            return Err(sqlx::Error::PoolTimedOut);
        };
        tokio::time::timeout(self.wait, self.pool.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// `work` (a read: it may be dropped at any await) within the lane's queue and
    /// deadline as a whole: the place is held while it runs, and it is dropped, and
    /// refused with `PoolTimedOut`, once `wait` has passed. For queries the lane does not
    /// run itself (the session store's loads).
    pub async fn bounded<F: std::future::Future>(&self, work: F) -> sqlx::Result<F::Output> {
        let Some(_place) = self.waiting.join() else {
            return Err(sqlx::Error::PoolTimedOut);
        };
        tokio::time::timeout(self.wait, work)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)
    }

    /// The pool itself, past the lane's queue, bounded by the database timeout: for what
    /// must not be refused for overload (the health probes, the change-feed listener,
    /// migrations, the session store's writes, which tower-sessions runs itself).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Those waiting for a connection now.
    pub fn waiting(&self) -> usize {
        self.waiting.count()
    }

    /// How long one waits for a connection before it is refused.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// PostgreSQL's lanes.
#[derive(Clone, Debug)]
pub struct PgLanes {
    reads: Lane,
    writes: Lane,
    sessions: Lane,
    upkeep: Lane,
}

impl PgLanes {
    /// Opens the pools; `patience` bounds a wait for a connection past a lane's
    /// queue ([`Lane::pool`]).
    pub async fn open(
        connect: &PgConnectOptions,
        shares: LaneShares,
        patience: Duration,
    ) -> sqlx::Result<Self> {
        Ok(Self {
            reads: Lane::open(connect, shares.reads, patience).await?,
            writes: Lane::open(connect, shares.writes, patience).await?,
            sessions: Lane::open(connect, shares.sessions, patience).await?,
            upkeep: Lane::open(connect, shares.upkeep, patience).await?,
        })
    }

    pub fn lane(&self, class: Class) -> &Lane {
        match class {
            Class::Read => &self.reads,
            Class::Write | Class::Committed => &self.writes,
            Class::Session => &self.sessions,
            Class::Upkeep => &self.upkeep,
        }
    }

    /// A connection for work of `class`: within its lane's queue and deadline, or, for
    /// [`Class::Committed`], on the write lane's pool past its queue.
    pub async fn acquire(&self, class: Class) -> sqlx::Result<PoolConnection<Postgres>> {
        match class {
            Class::Committed => self.writes.pool.acquire().await,
            other => self.lane(other).acquire().await,
        }
    }

    /// The same lanes, where what would be written on the write lane is written on the
    /// lane of `class` (the login ledger's writes, on the session lane).
    pub fn writing_on(&self, class: Class) -> Self {
        Self {
            writes: self.lane(class).clone(),
            ..self.clone()
        }
    }

    fn all(&self) -> [&Lane; 4] {
        [&self.reads, &self.writes, &self.sessions, &self.upkeep]
    }

    /// (open connections, idle connections), over the pools.
    pub fn stats(&self) -> (u32, usize) {
        self.all().iter().fold((0, 0), |(size, idle), lane| {
            (size + lane.pool.size(), idle + lane.pool.num_idle())
        })
    }

    pub async fn close(&self) {
        for lane in self.all() {
            lane.pool.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connections_are_split_and_every_lane_has_one() {
        let read = (128, Duration::from_millis(100));
        let write = (64, Duration::from_millis(100));
        let patience = Duration::from_secs(5);
        let counts = |total| {
            let shares = LaneShares::split(total, read, write, patience);
            (
                shares.upkeep.connections,
                shares.writes.connections,
                shares.sessions.connections,
                shares.reads.connections,
            )
        };
        assert_eq!(counts(10), (3, 2, 1, 4));
        assert_eq!(counts(40), (3, 10, 9, 18));
        for small in [0, 1, 2, 3, 4, 5, 6] {
            assert_eq!(counts(small), (3, 1, 1, 1), "{small}");
        }
        let ten = LaneShares::split(10, read, write, patience);
        assert_eq!((ten.reads.queue, ten.writes.queue), (128, 64));
        assert_eq!(ten.reads.wait, Duration::from_millis(100));
        assert_eq!(ten.sessions.wait, patience, "logins are admitted already");
    }
}

//! Storage: one code path over SQLite and PostgreSQL.
//!
//! # How one code path serves both engines
//!
//! [`Db`] is an enum of the two concrete sqlx pools, and [`Tx`] one of their write
//! transactions. Both run a [`Sql`] (a statement's text and its [`Arg`]s) with ordinary
//! async methods that have one arm per engine inside, so a service function is written
//! once, as the rule it is. The SQL is written once too, in the dialect both engines
//! accept: `$1`-style placeholders (sqlx binds them by number on SQLite too), `returning`,
//! `on conflict do nothing`, and only `bigint`/`text` columns with times as epoch
//! milliseconds, so every row type decodes from either ([`Row`], [`Scalar`]).
//!
//! This was chosen over sqlx's `Any` driver because the concrete pools are still needed
//! (tower-sessions' stores take a `SqlitePool` or a `PgPool`), because engine-specific
//! behaviour (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's statement timeout) stays explicit,
//! and because `Any` would hide type mismatches that the concrete drivers report.
//!
//! # SQLite and "database is locked"
//!
//! SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and
//! every write transaction starts with `BEGIN IMMEDIATE`, so it takes the write lock up
//! front and waits for it in SQLite's busy handler. A deferred transaction that reads and
//! then writes could instead fail at once with `SQLITE_BUSY`, which is the error the
//! paper's Flask service showed its users.
//!
//! # Cancellation
//!
//! A write transaction is never run in a request's future (see
//! `Service::detached`): sqlx 0.8 can leave a connection inside a transaction when a
//! `begin` is dropped at the wrong await. As a backstop, a connection that comes back to
//! the pool still inside a transaction is closed rather than pooled
//! ([`released_outside_transaction`]): closing it rolls the transaction back and
//! releases SQLite's write lock.
//!
//! Write transactions also pass a [`WriteGate`] before `BEGIN IMMEDIATE`: a fair async
//! mutex within the process, then an `flock` on `<database>-writer.lock` shared by every
//! process on the file, so SQLite's busy handler hardly ever has to wait. Left to the
//! busy handler alone, waiting writers poll for the lock with sleeps that grow to 100
//! ms, and under load the unlucky ones waited for up to a second and a half while others
//! went ahead (see "Stock changes" in docs/BENCHMARKS.md).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

mod lanes;
mod statement;
mod tx;
mod waiting;

pub use lanes::{Class, Lane, LaneShares, PgLanes};
pub use statement::{Arg, Row, Scalar, Sql};
pub use tx::Tx;
pub use waiting::{Place, WaitingRoom};

use sqlx::{Postgres, Sqlite};
use statement::arguments;

/// A pool on one of the two supported engines.
#[derive(Clone, Debug)]
pub enum Db {
    /// The pool, and the gate this process's write transactions pass one at a time.
    Sqlite(SqlitePool, WriteGate),
    /// A pool per class of work (see [`PgLanes`]), and the signal raised when a write
    /// to a change feed commits.
    Postgres(PgLanes, FeedSignal),
}

/// Raised by every committed PostgreSQL transaction that appended to a change feed, and
/// awaited by the replica's announcer (`events`), which tells every replica's tailer
/// with one NOTIFY sent after the commit. Raises while the announcer is busy coalesce
/// into one.
///
/// The NOTIFY used to be queued inside the writing transaction. PostgreSQL delivers
/// notifications at commit under a lock held until the commit ends, so every writer
/// that notified waited for the others' commits: a second global lock beside the old
/// feed lock.
#[derive(Clone, Debug, Default)]
pub struct FeedSignal(Arc<tokio::sync::Notify>);

impl FeedSignal {
    pub fn raise(&self) {
        self.0.notify_one();
    }

    /// Waits for the next raise (or one that came while nobody waited).
    pub async fn raised(&self) {
        self.0.notified().await;
    }
}

/// Lets one write transaction at a time ask SQLite for its write lock, in arrival order
/// within this process, and through a lock file shared with the other processes on the
/// same database (see the module docs).
#[derive(Clone, Debug)]
pub struct WriteGate {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// `<database>-writer.lock`; none for an in-memory database.
    lock_file: Option<Arc<PathBuf>>,
    /// How long a request's write waits for its turn before it is refused (503 with
    /// `Retry-After`): the write class's admission deadline.
    wait: Duration,
    /// How long the write probe waits: the database's own bound.
    timeout: Duration,
    /// Writers of this process waiting for their turn now, and how many may.
    waiting: Arc<WaitingRoom>,
}

/// A writer's turn: held until its transaction ends.
#[derive(Debug)]
pub struct WriteTurn {
    _process: tokio::sync::OwnedMutexGuard<()>,
    /// Closing it releases the lock.
    _file: Option<std::fs::File>,
}

impl WriteGate {
    pub fn new(lock_file: Option<PathBuf>, timeout: Duration) -> Self {
        Self {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            lock_file: lock_file.map(Arc::new),
            wait: timeout,
            timeout,
            waiting: Arc::new(WaitingRoom::new(usize::MAX)),
        }
    }

    /// The same gate, where at most `queue` of this process's writes wait for their
    /// turn; one more is refused at once.
    ///
    /// A deadline alone still let every admitted write wait nearly all of it: under
    /// sustained overload the queue is always as long as the deadline allows, so at
    /// 10,000 users the median write took 103 ms of a 100 ms deadline. A short queue
    /// keeps the one writer busy and the writes admitted fast, and refuses the rest
    /// without making them wait first.
    pub fn with_queue(self, queue: usize) -> Self {
        Self {
            waiting: Arc::new(WaitingRoom::new(queue.max(1))),
            ..self
        }
    }

    /// The same gate, where a request's write waits at most `wait` for its turn (never
    /// longer than the timeout).
    ///
    /// SQLite has one writer. Past what it commits per second, writers queue here, and
    /// without a deadline of its own the queue grows until each write waits the whole
    /// database timeout: at 5,000 users every write took a second (docs/BENCHMARKS.md,
    /// "Overload"). With it, a write that would wait longer is refused at once with
    /// 503 and `Retry-After`, and the writes admitted keep a bounded latency.
    pub fn with_wait(self, wait: Duration) -> Self {
        Self {
            wait: wait.min(self.timeout),
            ..self
        }
    }

    /// Waits for this writer's turn. A full queue, or waiting longer than the write
    /// deadline, is a `PoolTimedOut`, answered as 503 with `Retry-After` like a pool
    /// timeout.
    pub async fn enter(&self) -> Result<WriteTurn, sqlx::Error> {
        let Some(_place) = self.waiting.join() else {
            return Err(sqlx::Error::PoolTimedOut);
        };
        self.enter_within(self.wait).await
    }

    /// A place among this process's waiting writes, for a write that waits elsewhere
    /// than at the gate (a stock change queued for its batch, `service::stock::batch`):
    /// `None` when the queue is full, and the write is refused at once.
    pub fn join_queue(&self) -> Option<Place<'_>> {
        self.waiting.join()
    }

    /// How long a request's write may wait for its turn.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The turn of a batch of writes (`service::stock::batch`), taken on the batch
    /// writer's own thread: it blocks that thread, not the runtime. The batch's writes
    /// hold their places in the queue, and their deadlines, themselves
    /// ([`WriteGate::join_queue`]), so the batch takes no place and has no deadline of
    /// its own.
    pub fn enter_blocking(&self) -> std::io::Result<WriteTurn> {
        let process = self.turn.clone().blocking_lock_owned();
        let file = match &self.lock_file {
            None => None,
            Some(path) => {
                let file = open_lock_file(path)?;
                file.lock()?;
                Some(file)
            }
        };
        Ok(WriteTurn {
            _process: process,
            _file: file,
        })
    }

    /// How long a write may wait for SQLite's lock in its busy handler.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// [`WriteGate::enter`] for the write probe, which waits as long as the database's
    /// own bound: it asks whether a write can start at all, not whether it would be
    /// admitted now.
    pub async fn enter_patiently(&self) -> Result<WriteTurn, sqlx::Error> {
        self.enter_within(self.timeout).await
    }

    async fn enter_within(&self, limit: Duration) -> Result<WriteTurn, sqlx::Error> {
        tokio::time::timeout(limit, self.wait_for_turn())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn wait_for_turn(&self) -> Result<WriteTurn, sqlx::Error> {
        let process = self.turn.clone().lock_owned().await;
        let file = match &self.lock_file {
            None => None,
            Some(path) => {
                // Each turn opens the file anew: an flock belongs to one open file, so a
                // turn that timed out and still waits cannot share a later turn's lock.
                // When it does get the lock, nobody awaits it any more, and dropping
                // the file releases the lock at once.
                Some(lock_file(path, || {}).await.map_err(sqlx::Error::Io)?)
            }
        };
        Ok(WriteTurn {
            _process: process,
            _file: file,
        })
    }
}

/// Opens a lock file, creating it if missing (and never truncating it).
fn open_lock_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Opens `path` (creating it) and takes an exclusive `flock` on it, held until the file
/// is dropped. Opening a local file and trying the lock take microseconds; only a
/// contended lock waits, on a blocking thread, after `on_wait` is called.
async fn lock_file(
    path: &std::path::Path,
    on_wait: impl FnOnce(),
) -> std::io::Result<std::fs::File> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            on_wait();
            tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(std::io::Error::other)?
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// How long a starting replica waits for another to finish setting the database up.
const SETUP_WAIT: Duration = Duration::from_secs(60);

/// A replica's turn to set up a SQLite file ([`Db::setup_turn`]); dropping it lets the
/// next one go.
#[must_use = "the turn ends when it is dropped"]
pub struct SetupTurn {
    _lock: Option<std::fs::File>,
}

/// `<database>-writer.lock`, the lock every process on a SQLite file takes to write
/// (none for an in-memory database).
fn writer_lock_file(url: &str, connect: &SqliteConnectOptions) -> Option<PathBuf> {
    (!url.contains(":memory:") && !url.contains("mode=memory")).then(|| {
        let mut name = connect.get_filename().as_os_str().to_owned();
        name.push("-writer.lock");
        PathBuf::from(name)
    })
}

/// The pools' `after_release` check: keeps a connection only if it comes back outside
/// any transaction.
///
/// A `Transaction` dropped without commit queues its ROLLBACK on the connection, so a
/// connection that still counts a transaction is pinged first, which runs the queued
/// ROLLBACK. One still inside a transaction after that had its `begin` dropped between
/// BEGIN and the `Transaction` that would roll it back (sqlx issue #3932): no one can end
/// that transaction, and on SQLite it holds the write lock, so the connection is closed,
/// which rolls it back. Cheap in the usual case: no I/O unless a transaction is counted.
///
/// It sees what sqlx counts. On PostgreSQL, a `begin` dropped after sending BEGIN but
/// before its answer counts nothing and is not seen here; no `begin` is run where it can
/// be dropped (`Service::detached`), and the fix belongs in sqlx (docs/RELIABILITY.md).
pub fn released_outside_transaction<C: sqlx::Connection>(
    conn: &mut C,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if !conn.is_in_transaction() {
            return Ok(true);
        }
        conn.ping().await?;
        if conn.is_in_transaction() {
            tracing::warn!(
                "a connection came back to the pool inside a transaction; closing it to roll \
                 the transaction back and release its locks"
            );
            return Ok(false);
        }
        Ok(true)
    })
}

/// How to open the database.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a pooled connection (and, on SQLite, for the write
    /// lock) before it is answered as unavailable.
    pub acquire_timeout: Duration,
    /// The longest one statement may run on PostgreSQL.
    pub statement_timeout: Duration,
    /// How long a write waits for its turn at SQLite's write gate before it is refused
    /// (see [`WriteGate::with_wait`]).
    pub write_wait: Duration,
    /// How many writes may wait for their turn at SQLite's write gate at once (see
    /// [`WriteGate::with_queue`]); on PostgreSQL, for a connection of the write lane,
    /// and of the session lane ([`PgLanes`]).
    pub write_queue: usize,
    /// On PostgreSQL, how long a read waits for a connection of the read lane, and how
    /// many may wait at once ([`PgLanes`]).
    pub read_wait: Duration,
    pub read_queue: usize,
}

/// Milliseconds since the Unix epoch: the one time representation in the database.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Db {
    /// Opens a write transaction (see [`Tx`]): on SQLite after this process's turn at
    /// the write gate (bounded by the write deadline and queue), with `BEGIN IMMEDIATE`.
    pub async fn begin_write(&self) -> sqlx::Result<Tx> {
        match self {
            Self::Sqlite(pool, gate) => {
                let turn = gate.enter().await?;
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Tx::sqlite(tx, turn))
            }
            Self::Postgres(lanes, feed) => {
                let connection = lanes.acquire(Class::Write).await?;
                let tx = sqlx::Transaction::begin(connection, None).await?;
                Ok(Tx::postgres(tx, feed.clone()))
            }
        }
    }

    /// The SQLite file, for a connection of its own (`service::stock::batch`); none for
    /// PostgreSQL or an in-memory database.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match self {
            Self::Sqlite(pool, gate) if gate.lock_file.is_some() => {
                Some(pool.connect_options().get_filename().to_path_buf())
            }
            _ => None,
        }
    }

    /// Runs a statement outside a transaction; the number of rows it changed.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    /// On PostgreSQL, in the write lane ([`PgLanes`]): a statement run for the rows it
    /// changes is a write.
    pub async fn execute(&self, sql: &Sql) -> sqlx::Result<u64> {
        self.execute_in(Class::Write, sql).await
    }

    /// [`Db::execute`] in the lane of `class` on PostgreSQL (one lane on SQLite).
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn execute_in(&self, class: Class, sql: &Sql) -> sqlx::Result<u64> {
        Ok(match self {
            Self::Sqlite(pool, _) => sqlx::query_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                .execute(pool)
                .await?
                .rows_affected(),
            Self::Postgres(lanes, _) => {
                let mut connection = lanes.acquire(class).await?;
                sqlx::query_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .execute(&mut *connection)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Every row a statement returns.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn fetch_all<T: Row>(&self, sql: &Sql) -> sqlx::Result<Vec<T>> {
        match self {
            Self::Sqlite(pool, _) => {
                sqlx::query_as_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_all(pool)
                    .await
            }
            Self::Postgres(lanes, _) => {
                let mut connection = lanes.acquire(Class::Read).await?;
                sqlx::query_as_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_all(&mut *connection)
                    .await
            }
        }
    }

    /// The one row a statement returns (an error when there is none).
    pub async fn fetch_one<T: Row>(&self, sql: &Sql) -> sqlx::Result<T> {
        self.fetch_one_in(Class::Read, sql).await
    }

    /// [`Db::fetch_one`] in the lane of `class` on PostgreSQL.
    pub async fn fetch_one_in<T: Row>(&self, class: Class, sql: &Sql) -> sqlx::Result<T> {
        self.fetch_optional_in(class, sql)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// The row a statement returns, if any.
    pub async fn fetch_optional<T: Row>(&self, sql: &Sql) -> sqlx::Result<Option<T>> {
        self.fetch_optional_in(Class::Read, sql).await
    }

    /// [`Db::fetch_optional`] in the lane of `class` on PostgreSQL (one lane on
    /// SQLite): a write of one statement that returns a row is [`Class::Write`].
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn fetch_optional_in<T: Row>(
        &self,
        class: Class,
        sql: &Sql,
    ) -> sqlx::Result<Option<T>> {
        match self {
            Self::Sqlite(pool, _) => {
                sqlx::query_as_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_optional(pool)
                    .await
            }
            Self::Postgres(lanes, _) => {
                let mut connection = lanes.acquire(class).await?;
                sqlx::query_as_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_optional(&mut *connection)
                    .await
            }
        }
    }

    /// The first column of the one row a statement returns.
    pub async fn scalar<T: Scalar>(&self, sql: &Sql) -> sqlx::Result<T> {
        self.scalar_optional(sql)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// The first column of the row a statement returns, if any.
    #[tracing::instrument(level = "debug", target = "sql", name = "sql", skip_all, fields(db.statement = %sql.text))]
    pub async fn scalar_optional<T: Scalar>(&self, sql: &Sql) -> sqlx::Result<Option<T>> {
        match self {
            Self::Sqlite(pool, _) => {
                sqlx::query_scalar_with(&sql.text, arguments::<Sqlite>(&sql.args)?)
                    .fetch_optional(pool)
                    .await
            }
            Self::Postgres(lanes, _) => {
                let mut connection = lanes.acquire(Class::Read).await?;
                sqlx::query_scalar_with(&sql.text, arguments::<Postgres>(&sql.args)?)
                    .fetch_optional(&mut *connection)
                    .await
            }
        }
    }

    /// Opens a pool for `sqlite://…` (the file is created if missing) or
    /// `postgres://…`/`postgresql://…`.
    pub async fn connect(options: &DbOptions) -> anyhow::Result<Self> {
        let url = options.url.as_str();
        if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .context("invalid SQLite database URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(options.acquire_timeout);
            let lock_file = writer_lock_file(url, &connect);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .after_release(released_outside_transaction)
                .connect_with(connect)
                .await
                .context("cannot open the SQLite database")?;
            Ok(Self::Sqlite(
                pool,
                WriteGate::new(lock_file, options.acquire_timeout)
                    .with_wait(options.write_wait)
                    .with_queue(options.write_queue),
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let timeout_ms = options.statement_timeout.as_millis().to_string();
            let connect = PgConnectOptions::from_str(url)
                .context("invalid PostgreSQL database URL")?
                .application_name("ecanteen-api")
                .options([("statement_timeout", timeout_ms.as_str())]);
            let shares = LaneShares::split(
                options.max_connections,
                (options.read_queue, options.read_wait),
                (options.write_queue, options.write_wait),
                options.acquire_timeout,
            );
            let lanes = PgLanes::open(&connect, shares, options.acquire_timeout)
                .await
                .context("cannot connect to PostgreSQL")?;
            Ok(Self::Postgres(lanes, FeedSignal::default()))
        } else {
            anyhow::bail!("unsupported database URL: it must start with sqlite: or postgres:")
        }
    }

    /// This replica's turn to open and set up the database, held until it is dropped:
    /// replicas started together on one new SQLite file take turns (the file's writer
    /// lock, which every write takes too), so none of them meets another's schema
    /// change or journal-mode switch half-done, and a replica that comes second waits
    /// instead of failing with "database is locked". Nothing to wait for on
    /// PostgreSQL, whose migrator takes an advisory lock, nor for an in-memory database.
    pub async fn setup_turn(options: &DbOptions) -> anyhow::Result<SetupTurn> {
        let url = options.url.as_str();
        if !url.starts_with("sqlite:") {
            return Ok(SetupTurn { _lock: None });
        }
        let connect = SqliteConnectOptions::from_str(url).context("invalid SQLite database URL")?;
        let Some(path) = writer_lock_file(url, &connect) else {
            return Ok(SetupTurn { _lock: None });
        };
        let waiting =
            || tracing::info!("waiting for another replica to finish setting the database up");
        match tokio::time::timeout(SETUP_WAIT, lock_file(&path, waiting)).await {
            Ok(Ok(file)) => Ok(SetupTurn { _lock: Some(file) }),
            Ok(Err(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
            Err(_) => anyhow::bail!(
                "another process has held {} for {} s; is a replica stuck?",
                path.display(),
                SETUP_WAIT.as_secs()
            ),
        }
    }

    /// Applies the embedded migrations of this engine. (The session store's table is
    /// the store's own: `sessions::Store::migrate`.)
    ///
    /// Replicas started together race to migrate a fresh database. PostgreSQL's migrator
    /// serialises them with an advisory lock; SQLite's has no lock, so a loser of that
    /// race sees a failure and simply tries again once the winner has finished.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            let result = match self {
                Self::Sqlite(pool, _) => SQLITE_MIGRATOR.run(pool).await,
                Self::Postgres(lanes, _) => {
                    POSTGRES_MIGRATOR.run(lanes.lane(Class::Write).pool()).await
                }
            };
            match result {
                Ok(()) => break,
                Err(err) if attempt < 10 => {
                    attempt += 1;
                    tracing::info!(error = %err, attempt, "migration raced another replica; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(err) => return Err(err).context("database migration failed"),
            }
        }
        Ok(())
    }

    /// Opens the login ledger: where failed logins are counted (`service::users`).
    ///
    /// On SQLite every write takes the file's one write lock, so counting each login
    /// attempt in the main database made a login storm a storm of writes competing with
    /// stock changes for that lock. For a SQLite file the ledger is a database of its
    /// own beside it (`<database>-logins`, created with its table if missing), with its
    /// own lock and its own [`WriteGate`]: every replica on the file shares it, and it
    /// takes no turn from the stock writer. On PostgreSQL, whose writers do not share
    /// one lock, and for an in-memory SQLite database, the ledger is the main database.
    pub async fn open_login_ledger(&self, options: &DbOptions) -> anyhow::Result<Db> {
        let (pool, gate) = match self {
            Self::Sqlite(pool, gate) => (pool, gate),
            // The ledger's writes come with logins: the session lane's, never a stock
            // change's connection.
            Self::Postgres(lanes, feed) => {
                return Ok(Self::Postgres(
                    lanes.writing_on(Class::Session),
                    feed.clone(),
                ));
            }
        };
        if gate.lock_file.is_none() {
            return Ok(self.clone());
        }
        let mut path = pool.connect_options().get_filename().as_os_str().to_owned();
        path.push("-logins");
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.acquire_timeout);
        let ledger = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(options.acquire_timeout)
            .after_release(released_outside_transaction)
            .connect_with(connect)
            .await
            .context("cannot open the login ledger's SQLite database")?;
        // Idempotent, and safe for replicas starting together: each statement waits in
        // SQLite's busy handler for the others'.
        for statement in [
            "create table if not exists login_failures (
                id        integer primary key autoincrement,
                username  text    not null,
                failed_at integer not null
            )",
            "create index if not exists login_failures_username_idx
                on login_failures (username, failed_at)",
        ] {
            sqlx::query(statement)
                .execute(&ledger)
                .await
                .context("cannot create the login ledger's table")?;
        }
        let mut lock = path;
        lock.push("-writer.lock");
        // Patient: a login is already admitted by the password workers.
        Ok(Self::Sqlite(
            ledger,
            WriteGate::new(Some(PathBuf::from(lock)), options.acquire_timeout),
        ))
    }

    /// Whether the database answers a trivial query. On PostgreSQL it asks on the upkeep
    /// lane, which requests never use: a full queue is overload, not an outage.
    pub async fn ping(&self) -> bool {
        // `cast`, since a bare `1` is an int4 on PostgreSQL, which is not an i64.
        let one = "select cast(1 as bigint)";
        match self {
            Self::Sqlite(..) => self.scalar::<i64>(&Sql::new(one)).await.is_ok(),
            Self::Postgres(lanes, _) => sqlx::query_scalar::<_, i64>(one)
                .fetch_one(lanes.lane(Class::Upkeep).pool())
                .await
                .is_ok(),
        }
    }

    /// Takes the locks every write takes, and lets them go at once: whether a write
    /// could start now. On SQLite, the write gate and `BEGIN IMMEDIATE`; on PostgreSQL,
    /// a transaction id (refused by a read-only server) and the tables' write locks
    /// (`row exclusive`, which waits behind anything that blocks every write, such as a
    /// schema change). Each wait is bounded as a write's is, so a wedged lock is an
    /// error after the acquire timeout (or the statement timeout), not a hang.
    pub async fn probe_writes(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(pool, gate) => {
                let _turn = gate.enter_patiently().await?;
                pool.begin_with("BEGIN IMMEDIATE").await?.rollback().await
            }
            Self::Postgres(lanes, _) => {
                // On the upkeep lane: whether a write can start at all, not whether
                // one would be admitted now.
                let mut tx = lanes.lane(Class::Upkeep).pool().begin().await?;
                sqlx::query(
                    "lock table products, stock_movements, product_events, idempotency_keys
                     in row exclusive mode",
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query("select pg_current_xact_id()")
                    .execute(&mut *tx)
                    .await?;
                tx.rollback().await
            }
        }
    }

    /// Raises the feed signal after a write to a change feed committed outside a
    /// [`Tx`] (one statement on PostgreSQL); nothing on SQLite, whose tailer polls.
    pub fn feed_written(&self) {
        if let Self::Postgres(_, feed) = self {
            feed.raise();
        }
    }

    /// Pool statistics for `/metrics`: (open connections, idle connections).
    pub fn pool_stats(&self) -> (u32, usize) {
        match self {
            Self::Sqlite(pool, _) => (pool.size(), pool.num_idle()),
            Self::Postgres(lanes, _) => lanes.stats(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(..))
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool, _) => pool.close().await,
            Self::Postgres(lanes, _) => lanes.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two gates on one lock file stand for two replicas on one SQLite file.
    #[tokio::test]
    async fn writers_take_turns_within_and_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db-writer.lock");
        let a = WriteGate::new(Some(path.clone()), Duration::from_secs(5));
        let impatient = WriteGate::new(Some(path.clone()), Duration::from_millis(200));

        let turn = a.enter().await.unwrap();
        // Another process waits for the lock file, and gives up at its timeout.
        assert!(matches!(
            impatient.enter().await,
            Err(sqlx::Error::PoolTimedOut)
        ));
        // Another writer of the same process waits for the process's turn.
        let same = a.clone();
        let waiting = tokio::spawn(async move { same.enter().await.map(drop).is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        drop(turn);
        assert!(waiting.await.unwrap());

        // The writer that timed out does not keep the lock once it frees up.
        let b = WriteGate::new(Some(path), Duration::from_secs(5));
        let turn = tokio::time::timeout(Duration::from_secs(2), b.enter())
            .await
            .expect("the lock was left held")
            .unwrap();
        let a_again = tokio::spawn(async move { a.enter().await.map(drop).is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!a_again.is_finished(), "both processes held the lock");
        drop(turn);
        assert!(a_again.await.unwrap());
    }
}

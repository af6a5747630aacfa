//! Group commit of stock changes on SQLite.
//!
//! SQLite has one writer. A change alone took a turn at the write gate (a mutex and a
//! lock file), a pooled connection, `BEGIN IMMEDIATE`, its statements and `COMMIT`,
//! each statement handed to sqlx's connection thread and back: in a profile under load,
//! half of the replica's CPU went to waking threads. Here one writer thread per replica
//! owns a connection of its own (rusqlite, on the same file and the same SQLite library
//! as sqlx's) and runs the statements itself. It takes the changes queued while the
//! previous batch ran (at most [`MAX_BATCH`], and it waits for none: a change that
//! finds the writer idle runs at once, alone), applies them in one transaction with one
//! turn at the write gate, and answers each after the commit.
//!
//! - Each change still succeeds or fails alone. A change's fast path writes all of its
//!   rows or, when its update matches nothing (a guard failed, or its key was used),
//!   none; it then goes the general path on its own, which tells which. An error in the
//!   middle of a batch rolls the batch back, and every change of it goes the general
//!   path alone.
//! - A change is answered only after its batch has committed.
//! - The limits of the write gate hold: a change takes a place in the gate's queue while
//!   it waits (none free: refused at once, 503). One still queued at the write deadline
//!   is refused (503) and never applied: the writer takes a change for its batch, or the
//!   change's request gives it up, whichever comes first ([`Claim`]).
//!
//! On PostgreSQL a change is one statement and writers run in parallel; there is no
//! batch. Nor for an in-memory database, which a second connection would not see.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use tokio::sync::oneshot;

use super::{fresh_update, Fresh, StockChange, StockMovement, StoredStockResult, INSERT_MOVEMENT};
use crate::db::{Arg, Db, Sql, WriteGate};
use crate::error::{ServiceError, ServiceResult};
use crate::service::products::Product;

/// The most changes one batch applies.
pub const MAX_BATCH: usize = 64;

/// What the writer answers a change: applied, or `None` for the general path.
type Answer = ServiceResult<Option<StockChange>>;

/// Who has a queued change: still queued, taken by the writer, or given up by its
/// request at the write deadline. Exactly one of the two moves it out of `QUEUED`.
#[derive(Default)]
struct Claim(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const GIVEN_UP: u8 = 2;

impl Claim {
    fn to(&self, state: u8) -> bool {
        self.0
            .compare_exchange(QUEUED, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

struct Queued {
    fresh: Fresh,
    claim: Arc<Claim>,
    answer: oneshot::Sender<Answer>,
}

/// The way to a replica's stock writer, started at the first change.
#[derive(Clone, Debug, Default)]
pub struct StockBatches {
    writer: Arc<Mutex<Option<mpsc::Sender<Queued>>>>,
    stats: Arc<BatchStats>,
}

/// What the writer has committed since it started: for `/metrics`, where the ratio is
/// the mean batch size.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Changes applied in them.
    pub changes: AtomicU64,
}

impl StockBatches {
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Applies a change in the next batch, if its guards hold and its key is new (see
    /// the module docs). `None`: the general path decides.
    pub(crate) async fn apply(&self, db: &Db, fresh: Fresh) -> Answer {
        let (Db::Sqlite(_, gate), Some(file)) = (db, db.sqlite_file()) else {
            return Ok(None);
        };
        // The queue is the gate's: bounded, and refused at once when full.
        let Some(_place) = gate.join_queue() else {
            return Err(sqlx::Error::PoolTimedOut.into());
        };
        let claim = Arc::new(Claim::default());
        let (answer, mut answered) = oneshot::channel();
        let queued = Queued {
            fresh,
            claim: claim.clone(),
            answer,
        };
        if let Err(err) = self.send(gate, &file, queued) {
            // No writer (its connection cannot be opened): the general path, through
            // the pool, still serves the change.
            tracing::warn!(error = %err, "the stock writer cannot start; the change goes the general path");
            return Ok(None);
        }
        match tokio::time::timeout(gate.wait(), &mut answered).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            // Not taken by the deadline: refused, and never applied.
            Err(_) if claim.to(GIVEN_UP) => Err(sqlx::Error::PoolTimedOut.into()),
            // Taken just now: its batch is running, and it is answered after the commit.
            Err(_) => answered.await.map_err(|_| stopped())?,
        }
    }

    /// Queues a change for the writer, starting the writer first if needed, or again
    /// if it has stopped.
    fn send(&self, gate: &WriteGate, file: &Path, queued: Queued) -> ServiceResult<()> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let queued = match writer.as_ref() {
            Some(sender) => match sender.send(queued) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(queued)) => queued,
            },
            None => queued,
        };
        let sender = writer.insert(start(gate.clone(), file, self.stats.clone())?);
        sender.send(queued).map_err(|_| stopped())
    }
}

fn stopped() -> ServiceError {
    ServiceError::Internal(anyhow::anyhow!("the stock writer has stopped"))
}

/// Opens the writer's connection and starts its thread, which ends once every
/// [`StockBatches`] (every clone of the service) is gone.
fn start(
    gate: WriteGate,
    file: &Path,
    stats: Arc<BatchStats>,
) -> ServiceResult<mpsc::Sender<Queued>> {
    let conn = open(file, gate.timeout()).map_err(internal)?;
    let (sender, queue) = mpsc::channel();
    std::thread::Builder::new()
        .name("stock-writer".to_owned())
        .spawn(move || write(conn, gate, queue, &stats))
        .map_err(|e| ServiceError::Internal(e.into()))?;
    Ok(sender)
}

/// The writer's connection, set up as sqlx's pool sets up its own.
fn open(file: &Path, busy: Duration) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(file)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

fn internal(err: rusqlite::Error) -> ServiceError {
    ServiceError::Internal(err.into())
}

/// The writer thread: one batch after another.
fn write(
    mut conn: rusqlite::Connection,
    gate: WriteGate,
    queue: mpsc::Receiver<Queued>,
    stats: &BatchStats,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        // A panic would otherwise end the thread, and every later change would find
        // no writer until it restarted one; the batch's changes, unanswered, hear that
        // the writer stopped.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply_batch(&mut conn, &gate, batch, stats)
        }));
        if applied.is_err() {
            tracing::error!("a batch of stock changes panicked; the writer goes on");
        }
    }
}

/// One batch: the turn, one transaction, each change's fast path, one commit, then the
/// answers.
fn apply_batch(
    conn: &mut rusqlite::Connection,
    gate: &WriteGate,
    batch: Vec<Queued>,
    stats: &BatchStats,
) {
    let turn = match gate.enter_blocking() {
        Ok(turn) => turn,
        Err(err) => {
            // Each change goes the general path, which meets the error again.
            tracing::warn!(error = %err, "the stock writer cannot take the write turn");
            for queued in batch {
                if queued.claim.to(TAKEN) {
                    let _ = queued.answer.send(Ok(None));
                }
            }
            return;
        }
    };
    // Only the changes whose requests still wait; the rest were refused.
    let batch: Vec<Queued> = batch.into_iter().filter(|q| q.claim.to(TAKEN)).collect();
    if batch.is_empty() {
        return;
    }
    let outcome = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .and_then(|tx| {
            let mut applied = Vec::with_capacity(batch.len());
            for queued in &batch {
                applied.push(apply(&tx, &queued.fresh)?);
            }
            tx.commit()?;
            Ok(applied)
        });
    drop(turn);
    match outcome {
        Ok(applied) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            let changes = applied.iter().filter(|c| c.is_some()).count();
            stats.changes.fetch_add(changes as u64, Ordering::Relaxed);
            for (queued, change) in batch.into_iter().zip(applied) {
                let _ = queued.answer.send(Ok(change));
            }
        }
        Err(err) => {
            // Rolled back: every change goes the general path, alone.
            tracing::debug!(error = %err, "a batch of stock changes failed; each goes the general path");
            for queued in batch {
                let _ = queued.answer.send(Ok(None));
            }
        }
    }
}

/// A change's fast path in the batch's transaction: the guarded update (also guarded by
/// the key being unused), the ledger row and the key's record, all or, when the update
/// matches nothing, none.
fn apply(tx: &rusqlite::Transaction<'_>, fresh: &Fresh) -> rusqlite::Result<Option<StockChange>> {
    let Fresh {
        actor,
        change,
        idempotency,
        now,
    } = fresh;
    let Some(delta) = change.delta else {
        return Ok(None);
    };
    let Some(product) = query_row(tx, &fresh_update(actor, change, delta, *now), product)? else {
        return Ok(None);
    };
    let movement = change.movement(actor, delta, 0, &product, *now);
    let inserted = Sql::new(INSERT_MOVEMENT)
        .arg(movement.product_id)
        .arg(movement.actor_id)
        .arg(movement.delta)
        .arg(movement.quantity_after)
        .arg(movement.reason.as_str())
        .arg(movement.note.as_deref())
        .arg(movement.idempotency_key.as_deref())
        .arg(movement.created_at)
        .arg(movement.unit_price);
    let id = query_row(tx, &inserted, |row| row.get::<_, i64>("id"))?
        .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    let movement = StockMovement { id, ..movement };
    let result = StoredStockResult {
        movement_id: id,
        product: Some(product),
    };
    if let Some(idem) = idempotency {
        let stored = serde_json::to_string(&result)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let record = Sql::new(
            "insert into idempotency_keys (user_id, key, operation, request_hash, response, created_at)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .arg(actor.user_id)
        .arg(idem.key.as_str())
        .arg(change.operation)
        .arg(idem.fingerprint.as_str())
        .arg(stored)
        .arg(*now);
        execute(tx, &record)?;
    }
    let Some(product) = result.product else {
        return Ok(None);
    };
    Ok(Some(StockChange {
        product,
        movement,
        replayed: false,
    }))
}

/// Binds a statement's `$n` placeholders by name: SQLite numbers named parameters in
/// the order they first appear, which need not be `n`.
fn bind(statement: &mut rusqlite::CachedStatement<'_>, sql: &Sql) -> rusqlite::Result<()> {
    for (n, arg) in sql.args.iter().enumerate() {
        let Some(index) = statement.parameter_index(&format!("${}", n + 1))? else {
            continue;
        };
        let value = match arg {
            Arg::Int(v) => v.map_or(Value::Null, Value::Integer),
            Arg::Text(v) => v.clone().map_or(Value::Null, Value::Text),
            Arg::Bytes(v) => v.clone().map_or(Value::Null, Value::Blob),
        };
        statement.raw_bind_parameter(index, value)?;
    }
    Ok(())
}

fn query_row<T>(
    tx: &rusqlite::Transaction<'_>,
    sql: &Sql,
    read: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut statement = tx.prepare_cached(&sql.text)?;
    bind(&mut statement, sql)?;
    let mut rows = statement.raw_query();
    rows.next()?.map(read).transpose()
}

fn execute(tx: &rusqlite::Transaction<'_>, sql: &Sql) -> rusqlite::Result<usize> {
    let mut statement = tx.prepare_cached(&sql.text)?;
    bind(&mut statement, sql)?;
    statement.raw_execute()
}

/// A product row, by the names of `PRODUCT_COLUMNS`.
fn product(row: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        price: row.get("price")?,
        quantity: row.get("quantity")?,
        category: row.get("category")?,
        low_stock_threshold: row.get("low_stock_threshold")?,
        image_ref: row.get("image_ref")?,
        image_ext: row.get("image_ext")?,
        version: row.get("version")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        deleted_at: row.get("deleted_at")?,
    })
}

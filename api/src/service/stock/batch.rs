//! Group commit of stock changes on SQLite.
//!
//! SQLite has one writer. A change alone took a turn at the write gate (a mutex and a
//! lock file), a pooled connection, `BEGIN IMMEDIATE`, its statements and `COMMIT`,
//! each statement a hand-off to sqlx's connection thread and back. Here one writer task
//! per replica takes the changes queued while the previous batch ran (at most
//! [`MAX_BATCH`], and it waits for none: a change that finds the writer idle runs at
//! once, alone), and applies them in one transaction with one turn at the gate.
//!
//! - Each change still succeeds or fails alone. A change's fast path either writes all
//!   of its rows or, when its update matches nothing (a guard failed, or its key was
//!   used), none; it then goes the general path on its own, which tells which. An
//!   error in the middle of a batch rolls the batch back, and every change of it goes
//!   the general path alone.
//! - A change is answered only after its batch has committed.
//! - The limits of the write gate hold: a change takes a place in the gate's queue
//!   while it waits (none free: refused at once, 503), and one that has waited past the
//!   write deadline before its batch starts is refused (503) and not applied.
//!
//! On PostgreSQL a change is one statement and writers run in parallel; there is no
//! batch.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Fresh, StockChange};
use crate::db::Db;
use crate::error::{ServiceError, ServiceResult};

/// The most changes one batch applies.
pub const MAX_BATCH: usize = 64;

/// What the writer answers a change: applied, or `None` for the general path.
type Answer = ServiceResult<Option<StockChange>>;

struct Queued {
    fresh: Fresh,
    since: Instant,
    answer: oneshot::Sender<Answer>,
}

/// The way to a replica's stock writer, started at the first change.
#[derive(Clone, Debug, Default)]
pub(crate) struct StockBatches {
    writer: Arc<OnceLock<mpsc::UnboundedSender<Queued>>>,
}

impl StockBatches {
    /// Applies a change in the next batch, if its guards hold and its key is new (see
    /// the module docs).
    pub(crate) async fn apply(&self, db: &Db, fresh: Fresh) -> Answer {
        let Db::Sqlite(_, gate) = db else {
            return Ok(None);
        };
        // The queue is the gate's: bounded, and refused at once when full.
        let Some(_place) = gate.join_queue() else {
            return Err(sqlx::Error::PoolTimedOut.into());
        };
        let writer = self.writer.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(write(db.clone(), receiver));
            sender
        });
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            fresh,
            since: Instant::now(),
            answer,
        };
        if writer.send(queued).is_err() {
            return Err(ServiceError::Internal(anyhow::anyhow!(
                "the stock writer has stopped"
            )));
        }
        answered.await.map_err(|_| {
            ServiceError::Internal(anyhow::anyhow!("the stock writer dropped a change"))
        })?
    }
}

/// The writer task: one batch after another, until every [`StockBatches`] is gone.
async fn write(db: Db, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let Db::Sqlite(_, gate) = &db else {
        return;
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deadline = gate.wait();
        let (late, ready): (Vec<_>, Vec<_>) =
            batch.drain(..).partition(|q| q.since.elapsed() > deadline);
        for queued in late {
            let _ = queued.answer.send(Err(sqlx::Error::PoolTimedOut.into()));
        }
        if !ready.is_empty() {
            apply_batch(&db, ready).await;
        }
    }
}

/// One batch: one transaction, each change's fast path, one commit, then the answers.
async fn apply_batch(db: &Db, batch: Vec<Queued>) {
    let mut tx = match db.begin_batch().await {
        Ok(tx) => tx,
        Err(err) => {
            // Past the write deadline at the gate: each change is refused (503). Any
            // other error: each change goes the general path, which meets it again
            // and reports it.
            let timed_out = matches!(err, sqlx::Error::PoolTimedOut);
            for queued in batch {
                let answer = if timed_out {
                    Err(sqlx::Error::PoolTimedOut.into())
                } else {
                    Ok(None)
                };
                let _ = queued.answer.send(answer);
            }
            return;
        }
    };
    let mut applied = Vec::with_capacity(batch.len());
    let mut failed = false;
    for queued in batch {
        if failed {
            let _ = queued.answer.send(Ok(None));
            continue;
        }
        match queued.fresh.apply(&mut tx).await {
            Ok(Some(change)) => applied.push((queued.answer, change)),
            Ok(None) => {
                let _ = queued.answer.send(Ok(None));
            }
            Err(err) => {
                // Rolled back below; this change and the others go the general path,
                // where this one's error, if it is its own, is met again.
                tracing::debug!(error = %err, "a batched stock change failed; the batch goes the general path");
                failed = true;
                let _ = queued.answer.send(Ok(None));
            }
        }
    }
    let committed = if failed {
        drop(tx);
        false
    } else {
        match tx.commit().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "a batch of stock changes did not commit; each goes the general path");
                false
            }
        }
    };
    for (answer, change) in applied {
        let _ = answer.send(Ok(committed.then_some(change)));
    }
}

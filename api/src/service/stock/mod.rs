//! Stock changes and the append-only ledger.
//!
//! A change is one guarded statement, `quantity = quantity + delta` only where the
//! result stays within bounds (and equals the expected quantity, when given), plus one
//! ledger row, in one transaction. There is no read-modify-write to race, and the CHECK
//! constraint on `products.quantity` backs the guard.
//!
//! An idempotency key is claimed in the same transaction (see
//! [`crate::service::idempotency`]); a retry gets the first change's ledger row and the
//! product as that change left it.
//!
//! # The fast path
//!
//! Most changes are a new key (or none) on a product of the actor's, within bounds. An
//! `adjustStock` first tries exactly that ([`Service::apply_fresh`]): the guarded update,
//! also guarded by the key being unused, the ledger row, and the key's record with its
//! result, on PostgreSQL as one statement (one round trip, where the general path takes
//! eight), on SQLite as three statements in a batch that the replica's stock writer
//! commits with the other changes queued meanwhile ([`batch`]). When nothing matches (a
//! guard failed, or the key was used before), or a concurrent request claimed the same
//! key first, nothing was written, and the general path runs: it tells a replay from a
//! reused key, and which guard failed.

mod batch;

pub use batch::{BatchStats, StockBatches};

use serde::{Deserialize, Serialize};

use crate::db::{now_ms, Class, Db, Sql, Tx};
use crate::domain::{IdempotencyKey, Note, Quantity, StockDelta, StockReason, MAX_QUANTITY};
use crate::error::{ServiceError, ServiceResult};
use crate::service::idempotency::{stored_result, Idempotency};
use crate::service::products::{Page, Product, PRODUCT_COLUMNS};
use crate::service::{ownership_error, Actor, Service};

/// One row of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StockMovement {
    pub id: i64,
    pub product_id: i64,
    pub actor_id: i64,
    pub delta: i64,
    pub quantity_after: i64,
    #[sqlx(try_from = "String")]
    pub reason: StockReason,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    /// The product's price, in rupiah, when the change was made; `None` on rows written
    /// before prices were recorded.
    pub unit_price: Option<i64>,
}

impl TryFrom<String> for StockReason {
    type Error = ServiceError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        StockReason::parse("reason", &value)
    }
}

/// The owner and stock of a live product: what a failed guard is diagnosed from.
const OWNER_AND_QUANTITY: &str =
    "select owner_id, quantity from products where id = $1 and deleted_at is null";

pub(crate) const MOVEMENT_COLUMNS: &str =
    "id, product_id, actor_id, delta, quantity_after, reason, note, idempotency_key, created_at, unit_price";

/// Add or remove stock.
#[derive(Clone, Debug)]
pub struct AdjustStock {
    pub product_id: i64,
    pub delta: StockDelta,
    /// `None`: a sale when stock goes out, a restock when it comes in (the same default
    /// on both APIs).
    pub reason: Option<StockReason>,
    pub note: Option<Note>,
    pub expected_quantity: Option<Quantity>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Set stock to a counted quantity (the end-of-day count).
#[derive(Clone, Debug)]
pub struct SetStock {
    pub product_id: i64,
    pub quantity: Quantity,
    pub reason: StockReason,
    pub note: Option<Note>,
    pub expected_quantity: Option<Quantity>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What a stock change did.
#[derive(Clone, Debug)]
pub struct StockChange {
    /// The product as this change left it (on a replay, as the first attempt left it).
    pub product: Product,
    /// The ledger row this change wrote (on a replay, the first attempt's row).
    pub movement: StockMovement,
    /// Whether this answer replays an earlier request with the same idempotency key.
    pub replayed: bool,
}

pub(crate) struct NewMovement<'a> {
    pub product_id: i64,
    pub actor_id: i64,
    pub delta: i64,
    pub quantity_after: i64,
    pub reason: StockReason,
    pub note: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub at: i64,
    /// The product's price at `at`.
    pub unit_price: i64,
}

impl Tx {
    /// Appends one ledger row inside this transaction (see [`Tx::appends_to_feed`]).
    pub(crate) async fn append_movement(
        &mut self,
        m: &NewMovement<'_>,
    ) -> ServiceResult<StockMovement> {
        self.appends_to_feed();
        let row = self
            .fetch_one(
                &Sql::new(INSERT_MOVEMENT)
                    .arg(m.product_id)
                    .arg(m.actor_id)
                    .arg(m.delta)
                    .arg(m.quantity_after)
                    .arg(m.reason.as_str())
                    .arg(m.note)
                    .arg(m.idempotency_key)
                    .arg(m.at)
                    .arg(m.unit_price),
            )
            .await?;
        Ok(row)
    }
}

pub(crate) const INSERT_MOVEMENT: &str = "insert into stock_movements
         (product_id, actor_id, delta, quantity_after, reason, note, idempotency_key, created_at,
          unit_price)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     returning id, product_id, actor_id, delta, quantity_after, reason, note, idempotency_key,
               created_at, unit_price";

/// What an idempotency record stores as the first result of a stock change: its ledger
/// row, and the product as that change left it.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredStockResult {
    pub movement_id: i64,
    #[serde(default)]
    pub product: Option<Product>,
}

/// What the fast path's statement returns: the product as the change left it, and the
/// id of its ledger row.
#[derive(sqlx::FromRow)]
struct Applied {
    #[sqlx(flatten)]
    product: Product,
    movement_id: i64,
}

/// The operation-specific part of a stock change.
#[derive(Clone)]
pub(crate) struct Change {
    product_id: i64,
    operation: &'static str,
    /// `Some(delta)` adds; `None` sets the quantity to `target`.
    delta: Option<i64>,
    target: i64,
    reason: StockReason,
    note: Option<Note>,
    expected_quantity: Option<i64>,
    idempotency_key: Option<IdempotencyKey>,
}

impl Change {
    /// The ledger row the fast path wrote for this change: what it inserted, with the
    /// id it got, for the product as the change left it.
    fn movement(
        &self,
        actor: &Actor,
        delta: i64,
        id: i64,
        product: &Product,
        now: i64,
    ) -> StockMovement {
        StockMovement {
            id,
            product_id: self.product_id,
            actor_id: actor.user_id,
            delta,
            quantity_after: product.quantity,
            unit_price: Some(product.price),
            reason: self.reason,
            note: self.note.as_ref().map(|n| n.as_str().to_owned()),
            idempotency_key: self.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            created_at: now,
        }
    }

    /// What tells a genuine retry from a key reused for another change.
    fn fingerprint_parts(&self) -> [String; 7] {
        [
            self.operation.to_owned(),
            self.product_id.to_string(),
            self.delta.map_or(String::new(), |d| d.to_string()),
            self.target.to_string(),
            self.reason.as_str().to_owned(),
            self.note.as_ref().map_or("", |n| n.as_str()).to_owned(),
            self.expected_quantity
                .map_or(String::new(), |q| q.to_string()),
        ]
    }
}

impl Service {
    /// Adds `delta` (which may be negative) to a product's stock, never below zero.
    pub async fn adjust_stock(
        &self,
        actor: &Actor,
        input: AdjustStock,
    ) -> ServiceResult<StockChange> {
        self.change_stock(
            actor,
            Change {
                product_id: input.product_id,
                operation: "adjustStock",
                delta: Some(input.delta.get()),
                target: 0,
                reason: input.reason.unwrap_or(if input.delta.get() < 0 {
                    StockReason::Sale
                } else {
                    StockReason::Restock
                }),
                note: input.note,
                expected_quantity: input.expected_quantity.map(Quantity::get),
                idempotency_key: input.idempotency_key,
            },
        )
        .await
    }

    /// Sets a product's stock to a counted quantity; the ledger records the difference.
    pub async fn set_stock(&self, actor: &Actor, input: SetStock) -> ServiceResult<StockChange> {
        self.change_stock(
            actor,
            Change {
                product_id: input.product_id,
                operation: "setStock",
                delta: None,
                target: input.quantity.get(),
                reason: input.reason,
                note: input.note,
                expected_quantity: input.expected_quantity.map(Quantity::get),
                idempotency_key: input.idempotency_key,
            },
        )
        .await
    }

    /// A stock change, run to its end on a task of its own.
    async fn change_stock(&self, actor: &Actor, change: Change) -> ServiceResult<StockChange> {
        let (service, actor) = (self.clone(), *actor);
        self.detached(async move { service.change_stock_now(&actor, change).await })
            .await
    }

    /// A stock change, in the caller's task: only [`Service::change_stock`] calls it.
    async fn change_stock_now(&self, actor: &Actor, change: Change) -> ServiceResult<StockChange> {
        let now = now_ms();
        let idempotency = change
            .idempotency_key
            .as_ref()
            .map(|key| Idempotency::new(key.clone(), &change.fingerprint_parts()));
        if let Some(applied) = self
            .apply_fresh(actor, &change, idempotency.as_ref(), now)
            .await?
        {
            return Ok(applied);
        }
        let (result, replayed) = self
            .write_change(actor, &change, idempotency.as_ref(), now)
            .await?;

        // Read back after the commit: never refused for overload (the client would send
        // the applied change again), so on the write lane past its queue.
        let movement: StockMovement = self
            .db
            .fetch_one_in(
                Class::Committed,
                &Sql::new(format!(
                    "select {MOVEMENT_COLUMNS} from stock_movements where id = $1"
                ))
                .arg(result.movement_id),
            )
            .await?;
        // Records written before snapshots were stored: the product as it is now.
        let current: Option<Product> = match result.product {
            Some(_) => None,
            None => Some(
                self.db
                    .fetch_one_in(
                        Class::Committed,
                        &Sql::new(format!(
                            "select {PRODUCT_COLUMNS} from products where id = $1"
                        ))
                        .arg(movement.product_id),
                    )
                    .await?,
            ),
        };
        let product = match (result.product, current) {
            (Some(product), _) | (None, Some(product)) => product,
            (None, None) => return Err(ServiceError::NotFound("product")),
        };
        Ok(StockChange {
            product,
            movement,
            replayed,
        })
    }

    /// The fast path (see the module docs): an `adjustStock` applied at once when its
    /// guards hold and its key is new. `None` when nothing was written, and the general
    /// path must decide.
    async fn apply_fresh(
        &self,
        actor: &Actor,
        change: &Change,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> ServiceResult<Option<StockChange>> {
        let Some(delta) = change.delta else {
            return Ok(None);
        };
        let note = change.note.as_ref().map(Note::as_str);
        let update = fresh_update(actor, change, delta, now);
        let applied = match &self.db {
            Db::Postgres(..) => {
                let statement = Sql::new(format!(
                    "with upd as ({}),
                     mv as (
                         insert into stock_movements
                             (product_id, actor_id, delta, quantity_after, reason, note,
                              idempotency_key, created_at, unit_price)
                         select id, $4, $1, quantity, $8, $9, $7, $2, price from upd
                         returning id
                     ),
                     claimed as (
                         insert into idempotency_keys
                             (user_id, key, operation, request_hash, response, created_at)
                         select $4, $7, $10, $11,
                                cast(json_build_object('movement_id', mv.id,
                                                       'product', row_to_json(upd)) as text),
                                $2
                         from upd, mv where $7 is not null
                     )
                     select upd.*, mv.id as movement_id from upd, mv",
                    update.text
                ));
                let mut statement = Sql {
                    args: update.args,
                    ..statement
                };
                statement = statement
                    .arg(change.reason.as_str())
                    .arg(note)
                    .arg(change.operation)
                    .arg(idempotency.map(|i| i.fingerprint.as_str()));
                match self
                    .db
                    .fetch_optional_in::<Applied>(Class::Write, &statement)
                    .await
                {
                    Ok(applied) => applied,
                    // A concurrent request with the same key claimed it first: the
                    // statement wrote nothing, and the general path waits for it.
                    Err(sqlx::Error::Database(e))
                        if e.constraint() == Some("idempotency_keys_pkey") =>
                    {
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
                .inspect(|_| self.db.feed_written())
            }
            Db::Sqlite(..) => {
                let fresh = Fresh {
                    actor: *actor,
                    change: change.clone(),
                    idempotency: idempotency.cloned(),
                    now,
                };
                return self.stock_batches.apply(&self.db, fresh).await;
            }
        };
        Ok(applied.map(
            |Applied {
                 product,
                 movement_id,
             }| StockChange {
                movement: change.movement(actor, delta, movement_id, &product, now),
                product,
                replayed: false,
            },
        ))
    }

    /// The transaction of a stock change: the first result of its key, or the guarded
    /// update and its ledger row (and the result stored under the key). `true` with a
    /// replayed result.
    async fn write_change(
        &self,
        actor: &Actor,
        change: &Change,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> ServiceResult<(StoredStockResult, bool)> {
        let mut tx = self.db.begin_write().await?;
        if let Some(idem) = idempotency {
            if let Some(first) = tx
                .claim_key(actor.user_id, change.operation, idem, now)
                .await?
            {
                return Ok((stored_result(&first)?, true));
            }
        }
        // For a set, the previous quantity is needed for the ledger's delta, so it is
        // read first and the write is guarded by it (compare-and-set); a concurrent
        // change makes the guard fail and is reported as a conflict.
        let (delta, guard_quantity) = match change.delta {
            Some(d) => (d, change.expected_quantity),
            None => {
                let before = owned_quantity(&mut tx, change.product_id, actor).await?;
                if let Some(expected) = change.expected_quantity {
                    if expected != before {
                        return Err(stale_quantity(before, expected));
                    }
                }
                (change.target - before, Some(before))
            }
        };
        // The product as this change leaves it, in the same statement: the write lock is
        // held for one statement less.
        let updated: Option<Product> = tx
            .fetch_optional(
                &Sql::new(format!(
                    "update products set quantity = quantity + $1, version = version + 1, updated_at = $2
                     where id = $3 and owner_id = $4 and deleted_at is null
                       and quantity + $1 >= 0 and quantity + $1 <= $5
                       and ($6 < 0 or quantity = $6)
                     returning {PRODUCT_COLUMNS}"
                ))
                .arg(delta)
                .arg(now)
                .arg(change.product_id)
                .arg(actor.user_id)
                .arg(MAX_QUANTITY)
                .arg(guard_quantity.unwrap_or(-1)),
            )
            .await?;
        let Some(product) = updated else {
            // Nothing matched: find out which guard failed, for a precise error.
            let quantity = owned_quantity(&mut tx, change.product_id, actor).await?;
            return Err(match guard_quantity {
                Some(expected) if expected != quantity => stale_quantity(quantity, expected),
                _ if quantity + delta < 0 => ServiceError::InsufficientStock {
                    available: quantity,
                    requested: -delta,
                },
                _ => ServiceError::invalid(
                    "delta",
                    format!("would take the stock above {MAX_QUANTITY}"),
                ),
            });
        };
        let movement = tx
            .append_movement(&NewMovement {
                product_id: change.product_id,
                actor_id: actor.user_id,
                delta,
                quantity_after: product.quantity,
                reason: change.reason,
                note: change.note.as_ref().map(Note::as_str),
                idempotency_key: change.idempotency_key.as_ref().map(IdempotencyKey::as_str),
                at: now,
                unit_price: product.price,
            })
            .await?;
        let result = StoredStockResult {
            movement_id: movement.id,
            product: Some(product),
        };
        if let Some(idem) = idempotency {
            tx.record_key(actor.user_id, idem, &result).await?;
        }
        tx.commit().await?;
        Ok((result, false))
    }

    /// A product's ledger, newest first; only its owner may read it, also after the
    /// product was deleted.
    pub async fn stock_movements(
        &self,
        actor: &Actor,
        product_id: i64,
        first: i64,
        before_id: Option<i64>,
    ) -> ServiceResult<Page<StockMovement>> {
        let owner: Option<i64> = self
            .db
            .scalar_optional(
                &Sql::new("select owner_id from products where id = $1").arg(product_id),
            )
            .await?;
        if let Some(err) = ownership_error(owner, actor) {
            return Err(err);
        }
        let items: Vec<StockMovement> = self
            .db
            .fetch_all(
                &Sql::new(format!(
                    "select {MOVEMENT_COLUMNS} from stock_movements
                     where product_id = $1 and id < $2 order by id desc limit $3"
                ))
                .arg(product_id)
                .arg(before_id.unwrap_or(i64::MAX))
                .arg(first + 1),
            )
            .await?;
        Ok(Page::of_one_more(items, first))
    }
}

/// The stock of a product of the actor's, read inside the change's transaction:
/// NOT_FOUND or FORBIDDEN when it is not theirs.
async fn owned_quantity(tx: &mut Tx, product_id: i64, actor: &Actor) -> ServiceResult<i64> {
    let current: Option<(i64, i64)> = tx
        .fetch_optional(&Sql::new(OWNER_AND_QUANTITY).arg(product_id))
        .await?;
    if let Some(err) = ownership_error(current.map(|c| c.0), actor) {
        return Err(err);
    }
    Ok(current.map_or(0, |c| c.1))
}

fn stale_quantity(current: i64, expected: i64) -> ServiceError {
    ServiceError::conflict(
        format!("expectedQuantity: the stock is {current}, not {expected}; it was changed by someone else"),
        Some(current),
    )
}

/// A stock change for the fast path, as it waits for its batch (SQLite).
pub(crate) struct Fresh {
    pub actor: Actor,
    pub change: Change,
    pub idempotency: Option<Idempotency>,
    pub now: i64,
}

/// The fast path's update: `adjustStock`'s guards, and the key (`$7`) unused.
pub(crate) fn fresh_update(actor: &Actor, change: &Change, delta: i64, now: i64) -> Sql {
    Sql::new(format!(
        "update products set quantity = quantity + $1, version = version + 1, updated_at = $2
         where id = $3 and owner_id = $4 and deleted_at is null
           and quantity + $1 >= 0 and quantity + $1 <= $5
           and ($6 < 0 or quantity = $6)
           and not exists (select 1 from idempotency_keys where user_id = $4 and key = $7)
         returning {PRODUCT_COLUMNS}"
    ))
    .arg(delta)
    .arg(now)
    .arg(change.product_id)
    .arg(actor.user_id)
    .arg(MAX_QUANTITY)
    .arg(change.expected_quantity.unwrap_or(-1))
    .arg(change.idempotency_key.as_ref().map(IdempotencyKey::as_str))
}

//! Reading the change feeds: the stock ledger and the product events, in order.
//!
//! # Order without a lock
//!
//! A feed is read in [`FeedPosition`] order, (txid, id), and on PostgreSQL only below
//! the *horizon*: the oldest transaction still running when the read's snapshot was
//! taken (`pg_current_snapshot()`), of those that may run in this database (a
//! transaction known to run in another database of the cluster cannot write to these
//! tables, and does not hold the feed back). Every row of an older transaction
//! is final (its transaction committed or rolled back), so no row can later appear at
//! a position a reader has passed: "everything after position P" is a complete answer,
//! and a subscriber that reconnects with the last id it saw misses nothing and gets
//! nothing twice.
//!
//! Ids alone would not do: a sequence hands ids out at insert time, so two writers can
//! commit ids 11 then 10, and a reader that had read "after 10" up to 11 would never
//! read 10. This used to be prevented by one advisory lock that every writer held until
//! its commit ended, which made all writers of all replicas run one at a time. Now
//! writers take no lock, and a row is read once every older transaction has ended
//! (usually within a commit's time; a transaction that stays open holds the feed back
//! for as long, and the statement timeout bounds ours).
//!
//! On SQLite writers are serialised, ids become visible in commit order, every txid is
//! 0, and a position is its id.
//!
//! A subscriber names a position by the id of the last row it saw (`afterId`): the
//! row's txid is looked up ([`Service::feed_position`]).

use crate::db::Sql;
use crate::error::ServiceResult;
use crate::service::stock::StockMovement;
use crate::service::{Actor, Service};

/// Where a reader stands in a feed: rows are read in this order (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    /// The writing transaction's id on PostgreSQL (0 on SQLite, and for rows written
    /// before positions existed).
    pub txid: i64,
    pub id: i64,
}

impl FeedPosition {
    /// Before every row.
    pub const START: Self = Self { txid: 0, id: 0 };
}

/// One of the two change feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedKind {
    Stock,
    Product,
}

impl FeedKind {
    fn table(self) -> &'static str {
        match self {
            Self::Stock => "stock_movements",
            Self::Product => "product_events",
        }
    }
}

/// The horizon of the statement's snapshot (PostgreSQL only): the oldest transaction
/// that was still running when the snapshot was taken, leaving out those
/// `pg_stat_get_activity` shows in another database of the server (they cannot write to
/// these tables), or the snapshot's xmax when none is left. Rows of older transactions
/// are final.
///
/// A transaction of the snapshot's running list that has ended by the time the activity
/// is read is not found there, and counts as ours: the horizon is then lower than it
/// could be, never higher. The activity shows 32-bit xids; the running list spans far
/// less than 2^32 of them, so the low 32 bits name one transaction. Written out in each
/// statement rather than as a SQL function, so that it is planned once with the
/// statement (a function's body was parsed and planned again at every call).
const PG_HORIZON: &str = "(select coalesce(
        (select min(cast(cast(x as text) as bigint))
         from pg_snapshot_xip(pg_current_snapshot()) as x
         where cast(cast(x as text) as bigint) % 4294967296 not in (
             select cast(cast(a.backend_xid as text) as bigint)
             from pg_stat_get_activity(null) as a
             where a.backend_xid is not null
               and a.datid <> (select oid from pg_database where datname = current_database()))),
        cast(cast(pg_snapshot_xmax(pg_current_snapshot()) as text) as bigint)))";

/// A ledger row with what subscribers filter and alert on, as it stood when it was read.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StockFeedItem {
    #[sqlx(flatten)]
    pub movement: StockMovement,
    pub txid: i64,
    pub owner_id: i64,
    pub low_stock_threshold: Option<i64>,
    /// Whether this row was its product's newest.
    pub latest: bool,
    /// Whether the product was deleted.
    pub product_deleted: bool,
}

/// What a subscriber may see of a ledger row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockView {
    /// The product's owner: the row itself (delta, reason, time, note, actor).
    Owner,
    /// Anyone else: what the public catalogue shows, the product's quantity now and
    /// whether it is in stock. Never the delta, the reason or the time: those are the
    /// partner's sales history, which `stockMovements` keeps for the owner.
    Catalogue,
}

impl StockFeedItem {
    pub fn position(&self) -> FeedPosition {
        FeedPosition {
            txid: self.txid,
            id: self.movement.id,
        }
    }

    /// Whether, and how much of, this row `viewer` may see. A non-owner sees only a
    /// row that was its product's newest, of a product not deleted: the catalogue as it
    /// is. So a replay from an old `afterId` gives another partner each changed
    /// product's current stock once, and not the sequence of quantities it went
    /// through, from which every sale could be read back.
    pub fn view_for(&self, viewer: &Actor) -> Option<StockView> {
        if viewer.user_id == self.owner_id {
            Some(StockView::Owner)
        } else if self.latest && !self.product_deleted {
            Some(StockView::Catalogue)
        } else {
            None
        }
    }

    /// Whether this change took the product to or below its threshold, or to zero,
    /// from above: the moment a "low stock" alert is due.
    pub fn crossed_low_stock(&self) -> bool {
        let after = self.movement.quantity_after;
        let before = after - self.movement.delta;
        let crossed_threshold = self
            .low_stock_threshold
            .is_some_and(|t| before > t && after <= t);
        let ran_out = before > 0 && after == 0;
        crossed_threshold || ran_out
    }
}

/// What happened to a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductEventKind {
    Created,
    Updated,
    Deleted,
}

impl TryFrom<String> for ProductEventKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "CREATED" => Ok(Self::Created),
            "UPDATED" => Ok(Self::Updated),
            "DELETED" => Ok(Self::Deleted),
            other => Err(format!("unknown product event kind {other}")),
        }
    }
}

/// One row of the product feed.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductEvent {
    pub id: i64,
    pub product_id: i64,
    pub owner_id: i64,
    #[sqlx(try_from = "String")]
    pub kind: ProductEventKind,
    pub version: i64,
    pub created_at: i64,
    pub txid: i64,
}

impl ProductEvent {
    pub fn position(&self) -> FeedPosition {
        FeedPosition {
            txid: self.txid,
            id: self.id,
        }
    }
}

impl Service {
    /// `and <column> < horizon` on PostgreSQL (see the module docs); nothing on SQLite.
    fn below_horizon(&self, column: &str) -> String {
        if self.db.is_postgres() {
            format!(" and {column} < {PG_HORIZON}")
        } else {
            String::new()
        }
    }

    /// Ledger rows after `after`, in feed order, at most `limit`.
    pub async fn stock_feed_after(
        &self,
        after: FeedPosition,
        limit: i64,
    ) -> ServiceResult<Vec<StockFeedItem>> {
        let sql = Sql::new(format!(
            "select m.id, m.product_id, m.actor_id, m.delta, m.quantity_after, m.reason, m.note,
                    m.idempotency_key, m.created_at, m.unit_price, m.txid, p.owner_id,
                    p.low_stock_threshold,
                    m.id = (select max(n.id) from stock_movements n
                            where n.product_id = m.product_id) as latest,
                    p.deleted_at is not null as product_deleted
             from stock_movements m join products p on p.id = m.product_id
             where (m.txid, m.id) > ($1, $2){}
             order by m.txid, m.id limit $3",
            self.below_horizon("m.txid")
        ))
        .arg(after.txid)
        .arg(after.id)
        .arg(limit);
        Ok(self.db.fetch_all(&sql).await?)
    }

    /// Product events after `after`, in feed order, at most `limit`.
    pub async fn product_feed_after(
        &self,
        after: FeedPosition,
        limit: i64,
    ) -> ServiceResult<Vec<ProductEvent>> {
        let sql = Sql::new(format!(
            "select id, product_id, owner_id, kind, version, created_at, txid from product_events
             where (txid, id) > ($1, $2){} order by txid, id limit $3",
            self.below_horizon("txid")
        ))
        .arg(after.txid)
        .arg(after.id)
        .arg(limit);
        Ok(self.db.fetch_all(&sql).await?)
    }

    /// The newest readable position of a feed: where a fresh reader starts.
    pub async fn feed_head(&self, feed: FeedKind) -> ServiceResult<FeedPosition> {
        let sql = Sql::new(format!(
            "select txid, id from {} where 1 = 1{} order by txid desc, id desc limit 1",
            feed.table(),
            self.below_horizon("txid")
        ));
        let head: Option<(i64, i64)> = self.db.fetch_optional(&sql).await?;
        Ok(head.map_or(FeedPosition::START, |(txid, id)| FeedPosition { txid, id }))
    }

    /// The position of the row `id` of a feed, as a subscriber names it (`afterId`). An
    /// id that is no row's (a rolled-back insert, or one not written yet) stands after
    /// the row before it; 0 is the start.
    pub async fn feed_position(&self, feed: FeedKind, id: i64) -> ServiceResult<FeedPosition> {
        if id <= 0 {
            return Ok(FeedPosition::START);
        }
        let sql = Sql::new(format!(
            "select txid from {} where id <= $1 order by id desc limit 1",
            feed.table()
        ))
        .arg(id);
        let txid: Option<i64> = self.db.scalar_optional(&sql).await?;
        Ok(FeedPosition {
            txid: txid.unwrap_or(0),
            id,
        })
    }

    /// Whether some committed feed rows wait behind an older transaction still running
    /// (PostgreSQL; never on SQLite): the tailer then reads again soon, since no
    /// notification may come when that transaction ends.
    pub async fn feeds_held_back(&self) -> ServiceResult<bool> {
        if !self.db.is_postgres() {
            return Ok(false);
        }
        let sql = Sql::new(format!(
            "select cast(case when exists (select 1 from stock_movements where txid >= {PG_HORIZON})
                               or exists (select 1 from product_events where txid >= {PG_HORIZON})
                          then 1 else 0 end as bigint)"
        ));
        Ok(self.db.scalar::<i64>(&sql).await? == 1)
    }
}

//! Reading the change feeds: the stock ledger and the product events, by id.
//!
//! Ids become visible in increasing order (see `Tx::feed_lock` in `db`), so "everything
//! after id N" is a complete answer: a subscriber that reconnects with the last id it
//! saw misses nothing.

use crate::db::Sql;
use crate::error::ServiceResult;
use crate::service::stock::StockMovement;
use crate::service::{Actor, Service};

/// A ledger row with what subscribers filter and alert on, as it stood when it was read.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StockFeedItem {
    #[sqlx(flatten)]
    pub movement: StockMovement,
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
}

impl Service {
    /// Ledger rows after `after_id`, oldest first, at most `limit`.
    pub async fn stock_feed_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> ServiceResult<Vec<StockFeedItem>> {
        let sql = Sql::new(
            "select m.id, m.product_id, m.actor_id, m.delta, m.quantity_after, m.reason, m.note,
                        m.idempotency_key, m.created_at, p.owner_id, p.low_stock_threshold,
                        m.id = (select max(n.id) from stock_movements n
                                where n.product_id = m.product_id) as latest,
                        p.deleted_at is not null as product_deleted
                 from stock_movements m join products p on p.id = m.product_id
                 where m.id > $1 order by m.id limit $2",
        )
        .arg(after_id)
        .arg(limit);
        Ok(self.db.fetch_all(&sql).await?)
    }

    /// Product events after `after_id`, oldest first, at most `limit`.
    pub async fn product_feed_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> ServiceResult<Vec<ProductEvent>> {
        let sql = Sql::new(
            "select id, product_id, owner_id, kind, version, created_at from product_events
             where id > $1 order by id limit $2",
        )
        .arg(after_id)
        .arg(limit);
        Ok(self.db.fetch_all(&sql).await?)
    }

    /// The newest ids of both feeds: where a fresh tailer starts.
    pub async fn feed_heads(&self) -> ServiceResult<(i64, i64)> {
        let sql = Sql::new(
            "select coalesce((select max(id) from stock_movements), 0),
                    coalesce((select max(id) from product_events), 0)",
        );
        Ok(self.db.fetch_one(&sql).await?)
    }
}

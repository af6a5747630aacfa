//! Stock changes and the ledger in GraphQL.

use async_graphql::connection::{
    Connection, CursorType, Edge, EmptyFields, OpaqueCursor, PageInfo,
};
use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::products::ProductNode;
use super::users::{OwnerLoader, UserNode};
use super::{actor, datetime, id_arg, page_size, service};
use crate::domain::{IdempotencyKey, Note, Quantity, StockDelta};
use crate::error::ServiceError;
use crate::service::{AdjustStock, SetStock, StockChange, StockMovement};

/// Why stock changed.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "StockReason", remote = "crate::domain::StockReason")]
pub enum StockReasonGql {
    /// A delivery or new production.
    Restock,
    /// Units sold (or, with a positive delta, returned): what the sales report counts.
    Sale,
    /// Spoiled, broken or thrown away.
    Waste,
    /// A fix of an earlier mistake.
    Correction,
    /// A physical count (`setStock`).
    Count,
    /// Anything else; say what in the movement's `note`.
    Other,
}

/// A ledger row as GraphQL shows it (described on the `Object` impl below).
#[derive(Clone, Debug)]
pub struct StockMovementNode(pub StockMovement);

/// One row of the append-only stock ledger: one change of one product's stock. Rows
/// are never edited or deleted. Only the product's owner may read them.
#[Object(name = "StockMovement")]
impl StockMovementNode {
    /// Ledger ids increase with every change.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The product whose stock changed.
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }

    /// Who made the change.
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        let loader = ctx.data::<DataLoader<OwnerLoader, HashMapCache>>()?;
        let user = loader.load_one(self.0.actor_id).await?.ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!("movement {} has no actor", self.0.id))
        })?;
        Ok(UserNode(user))
    }

    /// The change in units: positive added stock, negative removed it.
    async fn delta(&self) -> i64 {
        self.0.delta
    }

    /// The stock after this change, in units (never below 0).
    async fn quantity_after(&self) -> i64 {
        self.0.quantity_after
    }

    /// Why the stock changed.
    async fn reason(&self) -> StockReasonGql {
        self.0.reason.into()
    }

    /// The note given with the change (at most 500 characters), or null.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }

    /// The idempotency key the change was made with, or null.
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }

    /// When the change was made (UTC, RFC 3339).
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }

    /// The product's price, in rupiah, when the change was made: what a sale earned per
    /// unit. Null on changes recorded before prices were kept.
    async fn unit_price(&self) -> Option<i64> {
        self.0.unit_price
    }
}

/// One page of a ledger. Wraps async-graphql's connection, whose type has no
/// description, to describe it.
pub struct MovementConnection(Connection<OpaqueCursor<i64>, StockMovementNode>);

/// One page of a product's stock ledger, newest first, at most 100 rows.
#[Object(name = "StockMovementConnection")]
impl MovementConnection {
    /// Where this page is: whether older rows follow, and the cursor to pass as `after`
    /// to read them.
    async fn page_info(&self) -> PageInfo {
        super::page_info(&self.0)
    }

    /// The rows of this page, each with its cursor.
    async fn edges(&self) -> &[Edge<OpaqueCursor<i64>, StockMovementNode, EmptyFields>] {
        &self.0.edges
    }

    /// The rows of this page, without cursors.
    async fn nodes(&self) -> Vec<&StockMovementNode> {
        self.0.edges.iter().map(|e| &e.node).collect()
    }
}

/// One page of a product's ledger, newest first, for its owner only.
pub(crate) async fn movements_connection(
    ctx: &Context<'_>,
    product_id: i64,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<MovementConnection> {
    let actor = actor(ctx)?;
    let first = page_size(first)?;
    let after = after
        .map(|c| OpaqueCursor::<i64>::decode_cursor(&c))
        .transpose()
        .map_err(|_| ServiceError::invalid("after", "is not a valid cursor"))?;
    let page = service(ctx)?
        .stock_movements(&actor, product_id, first, after.as_ref().map(|c| c.0))
        .await?;
    let mut connection = Connection::new(after.is_some(), page.has_next);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|m| Edge::new(OpaqueCursor(m.id), StockMovementNode(m))),
    );
    Ok(MovementConnection(connection))
}

/// A change of stock by a number of units. Only the product's owner may make it
/// (FORBIDDEN otherwise).
#[derive(InputObject)]
pub struct AdjustStockInput {
    /// The product, one of the caller's (NOT_FOUND when there is none or it was
    /// deleted).
    product_id: ID,
    /// Units added to the stock; negative removes. -1,000,000,000 to 1,000,000,000, not
    /// 0 (BAD_USER_INPUT). Never takes stock below zero: INSUFFICIENT_STOCK, with
    /// nothing written.
    delta: i64,
    /// Why the stock changed. Default: SALE when `delta` is negative, RESTOCK when it
    /// is positive (as REST's `POST /ecanteen/product/{id}/stock`).
    reason: Option<StockReasonGql>,
    /// Free text kept with the ledger row, at most 500 characters.
    note: Option<String>,
    /// When given, the change applies only if the stock is exactly this (else CONFLICT).
    expected_quantity: Option<i64>,
    /// Makes retries safe: a repeat with the same key returns the first result, with
    /// `replayed: true`. 1–128 visible ASCII characters; the same key with another
    /// change is BAD_USER_INPUT.
    idempotency_key: Option<String>,
}

/// A physical count: sets the stock to what was counted, and the ledger records the
/// difference. Only the product's owner may make it (FORBIDDEN otherwise).
#[derive(InputObject)]
pub struct SetStockInput {
    /// The product, one of the caller's (NOT_FOUND when there is none or it was
    /// deleted).
    product_id: ID,
    /// The counted quantity, in units, 0 to 1,000,000,000.
    quantity: i64,
    /// Why the stock changed. Default: COUNT.
    #[graphql(default_with = "StockReasonGql::Count")]
    reason: StockReasonGql,
    /// Free text kept with the ledger row, at most 500 characters.
    note: Option<String>,
    /// When given, the count applies only if the stock is exactly this (else CONFLICT).
    expected_quantity: Option<i64>,
    /// Makes retries safe: a repeat with the same key returns the first result, with
    /// `replayed: true`. 1–128 visible ASCII characters; the same key with another
    /// change is BAD_USER_INPUT.
    idempotency_key: Option<String>,
}

/// The result of a stock change.
#[derive(SimpleObject)]
pub struct StockChangePayload {
    /// The product as this change left it (on a replay, as the first attempt left it).
    product: ProductNode,
    /// The ledger row of this change (the first attempt's, on a replay).
    movement: StockMovementNode,
    /// True when this answers a retry with an idempotency key already used.
    replayed: bool,
}

impl From<StockChange> for StockChangePayload {
    fn from(c: StockChange) -> Self {
        Self {
            product: ProductNode(c.product),
            movement: StockMovementNode(c.movement),
            replayed: c.replayed,
        }
    }
}

fn note(raw: Option<&str>) -> Result<Option<Note>, ServiceError> {
    raw.map(|n| Note::parse("input.note", n)).transpose()
}

fn key(raw: Option<&str>) -> Result<Option<IdempotencyKey>, ServiceError> {
    raw.map(|k| IdempotencyKey::parse("input.idempotencyKey", k))
        .transpose()
}

fn expected(raw: Option<i64>) -> Result<Option<Quantity>, ServiceError> {
    raw.map(|q| Quantity::parse("input.expectedQuantity", q))
        .transpose()
}

#[derive(Default)]
pub struct StockQuery;

#[Object]
impl StockQuery {
    /// A product's stock ledger, newest first (owner only; deleted products included).
    #[graphql(
        cache_control(private, no_cache),
        complexity = "super::page_complexity(first, child_complexity)"
    )]
    async fn stock_movements(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product, one of the caller's (else FORBIDDEN).")] product_id: ID,
        #[graphql(desc = "The page size: 0 to 100 (more is read as 100; default 20). \
                          Negative is BAD_USER_INPUT.")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before; leave it out for the \
                          newest. A cursor not given by this field is BAD_USER_INPUT.")]
        after: Option<String>,
    ) -> async_graphql::Result<MovementConnection> {
        let product_id = id_arg("productId", &product_id)?;
        movements_connection(ctx, product_id, first, after).await
    }
}

#[derive(Default)]
pub struct StockMutation;

#[Object]
impl StockMutation {
    /// Adds or removes stock atomically; never below zero (INSUFFICIENT_STOCK).
    async fn adjust_stock(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product and the change.")] input: AdjustStockInput,
    ) -> async_graphql::Result<StockChangePayload> {
        let actor = actor(ctx)?;
        let change = AdjustStock {
            product_id: id_arg("input.productId", &input.product_id)?,
            delta: StockDelta::parse("input.delta", input.delta)?,
            reason: input.reason.map(Into::into),
            note: note(input.note.as_deref())?,
            expected_quantity: expected(input.expected_quantity)?,
            idempotency_key: key(input.idempotency_key.as_deref())?,
        };
        Ok(service(ctx)?.adjust_stock(&actor, change).await?.into())
    }

    /// Sets stock to a counted quantity, e.g. at the end of the day.
    async fn set_stock(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product and its counted quantity.")] input: SetStockInput,
    ) -> async_graphql::Result<StockChangePayload> {
        let actor = actor(ctx)?;
        let change = SetStock {
            product_id: id_arg("input.productId", &input.product_id)?,
            quantity: Quantity::parse("input.quantity", input.quantity)?,
            reason: input.reason.into(),
            note: note(input.note.as_deref())?,
            expected_quantity: expected(input.expected_quantity)?,
            idempotency_key: key(input.idempotency_key.as_deref())?,
        };
        Ok(service(ctx)?.set_stock(&actor, change).await?.into())
    }
}

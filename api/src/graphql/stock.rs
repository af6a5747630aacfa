//! Stock changes and the ledger in GraphQL.

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
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
    Sale,
    /// Spoiled, broken or thrown away.
    Waste,
    /// A fix of an earlier mistake.
    Correction,
    /// A physical count (`setStock`).
    Count,
    Other,
}

/// One row of the append-only stock ledger.
#[derive(Clone, Debug)]
pub struct StockMovementNode(pub StockMovement);

#[Object(name = "StockMovement")]
impl StockMovementNode {
    /// Ledger ids increase with every change.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

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

    async fn delta(&self) -> i64 {
        self.0.delta
    }

    async fn quantity_after(&self) -> i64 {
        self.0.quantity_after
    }

    async fn reason(&self) -> StockReasonGql {
        self.0.reason.into()
    }

    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }

    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }

    /// The product's price, in rupiah, when the change was made: what a sale earned per
    /// unit. Null on changes recorded before prices were kept.
    async fn unit_price(&self) -> Option<i64> {
        self.0.unit_price
    }
}

pub type MovementConnection = Connection<OpaqueCursor<i64>, StockMovementNode>;

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
    Ok(connection)
}

#[derive(InputObject)]
pub struct AdjustStockInput {
    product_id: ID,
    /// Added to the stock; negative removes. Never takes stock below zero.
    delta: i64,
    /// Why the stock changed. Default: SALE when `delta` is negative, RESTOCK when it
    /// is positive (as REST's `POST /ecanteen/product/{id}/stock`).
    reason: Option<StockReasonGql>,
    note: Option<String>,
    /// When given, the change applies only if the stock is exactly this (else CONFLICT).
    expected_quantity: Option<i64>,
    /// Makes retries safe: a repeat with the same key returns the first result.
    idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct SetStockInput {
    product_id: ID,
    /// The counted quantity.
    quantity: i64,
    #[graphql(default_with = "StockReasonGql::Count")]
    reason: StockReasonGql,
    note: Option<String>,
    expected_quantity: Option<i64>,
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
    #[graphql(complexity = "super::page_complexity(first, child_complexity)")]
    async fn stock_movements(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        first: Option<i32>,
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
        input: AdjustStockInput,
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
        input: SetStockInput,
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

//! Subscriptions: stock, product and low-stock events, live from every replica.
//!
//! Each event carries the id of its feed row. A client that reconnects passes the last
//! id it saw as `afterId` and first receives everything it missed, read from the
//! database, then live events; ids only increase, so nothing arrives twice. Events for
//! one product arrive in ledger order.

use std::sync::Arc;

use async_graphql::{Context, Enum, ErrorExtensions as _, Object, Subscription, ID};
use async_stream::stream;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;

use super::products::ProductNode;
use super::stock::{StockMovementNode, StockReasonGql};
use super::{actor, datetime, id_arg, service};
use crate::error::ServiceError;
use crate::events::{EventHub, FeedEvent};
use crate::service::feed::{ProductEvent, ProductEventKind, StockFeedItem};
use crate::service::{Actor, Service};

/// A change of stock. Quantities are public, like the catalogue; the ledger row
/// itself (who, and their note) is only for the product's owner.
pub struct StockChangedEvent {
    item: Arc<StockFeedItem>,
    viewer: Actor,
}

#[Object]
impl StockChangedEvent {
    /// The ledger id: pass the last one seen as `afterId` when reconnecting.
    async fn id(&self) -> ID {
        ID(self.item.movement.id.to_string())
    }

    async fn product_id(&self) -> ID {
        ID(self.item.movement.product_id.to_string())
    }

    async fn owner_id(&self) -> ID {
        ID(self.item.owner_id.to_string())
    }

    async fn delta(&self) -> i64 {
        self.item.movement.delta
    }

    /// The stock after this change.
    async fn quantity(&self) -> i64 {
        self.item.movement.quantity_after
    }

    async fn reason(&self) -> StockReasonGql {
        self.item.movement.reason.into()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.item.movement.created_at)
    }

    /// The ledger row; null unless the subscriber owns the product.
    async fn movement(&self) -> Option<StockMovementNode> {
        (self.viewer.user_id == self.item.owner_id)
            .then(|| StockMovementNode(self.item.movement.clone()))
    }

    /// The product as it is now.
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        Ok(service(ctx)?
            .product_any(self.item.movement.product_id)
            .await?
            .map(ProductNode))
    }
}

/// A product's stock reached its low-stock threshold, or zero.
pub struct LowStockEvent {
    item: Arc<StockFeedItem>,
}

#[Object]
impl LowStockEvent {
    /// The ledger id of the change that crossed the threshold.
    async fn id(&self) -> ID {
        ID(self.item.movement.id.to_string())
    }

    async fn product_id(&self) -> ID {
        ID(self.item.movement.product_id.to_string())
    }

    async fn quantity(&self) -> i64 {
        self.item.movement.quantity_after
    }

    async fn threshold(&self) -> Option<i64> {
        self.item.low_stock_threshold
    }

    async fn out_of_stock(&self) -> bool {
        self.item.movement.quantity_after == 0
    }

    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        Ok(service(ctx)?
            .product_any(self.item.movement.product_id)
            .await?
            .map(ProductNode))
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ProductChangeKind {
    Created,
    Updated,
    Deleted,
}

/// A product was created, edited (its picture included) or deleted.
pub struct ProductChangedEvent(Arc<ProductEvent>);

#[Object]
impl ProductChangedEvent {
    /// The product-feed id: pass the last one seen as `afterId` when reconnecting.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn kind(&self) -> ProductChangeKind {
        match self.0.kind {
            ProductEventKind::Created => ProductChangeKind::Created,
            ProductEventKind::Updated => ProductChangeKind::Updated,
            ProductEventKind::Deleted => ProductChangeKind::Deleted,
        }
    }

    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }

    async fn owner_id(&self) -> ID {
        ID(self.0.owner_id.to_string())
    }

    /// The product's version after this change.
    async fn version(&self) -> i64 {
        self.0.version
    }

    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }

    /// The product as it is now (a deleted one has `deletedAt` set).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        Ok(service(ctx)?
            .product_any(self.0.product_id)
            .await?
            .map(ProductNode))
    }
}

#[derive(Clone, Copy)]
enum Feed {
    Stock,
    Product,
}

impl Feed {
    fn id_of(self, event: &FeedEvent) -> Option<i64> {
        match (self, event) {
            (Feed::Stock, FeedEvent::Stock(item)) => Some(item.movement.id),
            (Feed::Product, FeedEvent::Product(event)) => Some(event.id),
            _ => None,
        }
    }

    async fn after(self, service: &Service, after: i64) -> Result<Vec<FeedEvent>, ServiceError> {
        Ok(match self {
            Feed::Stock => service
                .stock_feed_after(after, 500)
                .await?
                .into_iter()
                .map(|i| FeedEvent::Stock(Arc::new(i)))
                .collect(),
            Feed::Product => service
                .product_feed_after(after, 500)
                .await?
                .into_iter()
                .map(|e| FeedEvent::Product(Arc::new(e)))
                .collect(),
        })
    }
}

/// The subscriptions one WebSocket connection may hold at once, put in the connection's
/// data at `connection_init`. Each subscription holds a permit until it ends.
#[derive(Clone, Debug)]
pub struct SubscriptionSlots {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl SubscriptionSlots {
    pub fn new(capacity: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }
}

/// The most events one subscription replays from the database after `afterId`. Past
/// it, the subscription ends with an error naming the `afterId` to resume from, as when
/// it falls behind: a replay from `afterId: "0"` is pages of work for as long as the
/// ledger, and its client can as well resume in steps (the browser client does).
pub const MAX_REPLAY: usize = 1_000;

/// The error that ends a subscription which should resume from `last`.
fn resume_from(last: i64, why: &str) -> async_graphql::Error {
    async_graphql::Error::new(format!("{why}; resubscribe with afterId: \"{last}\"")).extend_with(
        |_, ext| {
            ext.set("code", "TOO_MANY_REQUESTS");
            ext.set("afterId", last.to_string());
        },
    )
}

/// The events of one feed after `after` (replayed from the database, at most
/// [`MAX_REPLAY`]), or from now, then live ones, each passed through `pick`.
fn feed_stream<T, P>(
    ctx: &Context<'_>,
    feed: Feed,
    after: Option<i64>,
    pick: P,
) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<T>> + use<T, P>>
where
    T: Send + 'static,
    P: Fn(&FeedEvent) -> Option<T> + Send + 'static,
{
    let service = service(ctx)?.clone();
    // Over a WebSocket, a place among the connection's subscriptions, held by the
    // stream until it ends.
    let slot = match ctx.data_opt::<SubscriptionSlots>() {
        None => None,
        Some(slots) => Some(slots.permits.clone().try_acquire_owned().map_err(|_| {
            async_graphql::Error::new(format!(
                "a connection may hold at most {} subscriptions at once",
                slots.capacity
            ))
            .extend_with(|_, ext| ext.set("code", "TOO_MANY_REQUESTS"))
        })?),
    };
    // Subscribe before reading the backlog, so nothing committed in between is lost;
    // ids already delivered from the backlog are skipped below.
    let mut live = ctx.data::<EventHub>()?.subscribe();
    Ok(stream! {
        let _slot = slot;
        // Without `afterId`, the subscription starts now: at the feed's current head.
        let mut last = match after {
            Some(after) => after,
            None => match service.feed_heads().await {
                Ok((stock, product)) => match feed {
                    Feed::Stock => stock,
                    Feed::Product => product,
                },
                Err(err) => {
                    yield Err(err.into());
                    return;
                }
            },
        };
        if after.is_some() {
            let mut replayed = 0;
            loop {
                if replayed >= MAX_REPLAY {
                    yield Err(resume_from(last, &format!(
                        "a subscription replays at most {MAX_REPLAY} events"
                    )));
                    return;
                }
                match feed.after(&service, last).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => {
                        replayed += batch.len();
                        for event in batch {
                            last = feed.id_of(&event).unwrap_or(last);
                            if let Some(item) = pick(&event) {
                                yield Ok(item);
                            }
                        }
                    }
                    Err(err) => {
                        yield Err(err.into());
                        return;
                    }
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    let Some(id) = feed.id_of(&event) else { continue };
                    if id <= last {
                        continue;
                    }
                    last = id;
                    if let Some(item) = pick(&event) {
                        yield Ok(item);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // The client reads slower than events come: close this stream rather
                    // than buffer for it, and say where to resume.
                    yield Err(resume_from(last, "this subscription fell too far behind and was closed"));
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

fn optional_id(field: &'static str, id: Option<&ID>) -> Result<Option<i64>, ServiceError> {
    id.map(|id| id_arg(field, id)).transpose()
}

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Stock changes, optionally of one product or one partner's products.
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        product_id: Option<ID>,
        owner_id: Option<ID>,
        after_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<StockChangedEvent>>> {
        let viewer = actor(ctx)?;
        let product_id = optional_id("productId", product_id.as_ref())?;
        let owner_id = optional_id("ownerId", owner_id.as_ref())?;
        let after = optional_id("afterId", after_id.as_ref())?;
        feed_stream(ctx, Feed::Stock, after, move |event| match event {
            FeedEvent::Stock(item)
                if product_id.is_none_or(|p| p == item.movement.product_id)
                    && owner_id.is_none_or(|o| o == item.owner_id) =>
            {
                Some(StockChangedEvent {
                    item: item.clone(),
                    viewer,
                })
            }
            _ => None,
        })
    }

    /// Products created, edited or deleted, optionally of one partner.
    async fn product_changed(
        &self,
        ctx: &Context<'_>,
        owner_id: Option<ID>,
        after_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ProductChangedEvent>>> {
        actor(ctx)?;
        let owner_id = optional_id("ownerId", owner_id.as_ref())?;
        let after = optional_id("afterId", after_id.as_ref())?;
        feed_stream(ctx, Feed::Product, after, move |event| match event {
            FeedEvent::Product(e) if owner_id.is_none_or(|o| o == e.owner_id) => {
                Some(ProductChangedEvent(e.clone()))
            }
            _ => None,
        })
    }

    /// Alerts when one of the subscriber's products reaches its low-stock threshold or
    /// runs out. `ownerId`, when given, must be the subscriber.
    async fn low_stock(
        &self,
        ctx: &Context<'_>,
        owner_id: Option<ID>,
        after_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<LowStockEvent>>> {
        let viewer = actor(ctx)?;
        let owner = optional_id("ownerId", owner_id.as_ref())?.unwrap_or(viewer.user_id);
        if owner != viewer.user_id {
            return Err(ServiceError::Forbidden(
                "low-stock alerts are only for the products' owner",
            )
            .into());
        }
        let after = optional_id("afterId", after_id.as_ref())?;
        feed_stream(ctx, Feed::Stock, after, move |event| match event {
            FeedEvent::Stock(item) if item.owner_id == owner && item.crossed_low_stock() => {
                Some(LowStockEvent { item: item.clone() })
            }
            _ => None,
        })
    }
}

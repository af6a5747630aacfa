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
use crate::service::feed::{
    FeedKind, FeedPosition, ProductEvent, ProductEventKind, StockFeedItem, StockView,
};
use crate::service::{Actor, Service};

/// A change of stock, for `stockChanged`. What a subscriber may see of it is the
/// service's rule (`StockFeedItem::view_for`): another partner is sent only a product's
/// newest change, of a product not deleted, so no sales history can be read back.
pub struct StockChangedEvent {
    item: Arc<StockFeedItem>,
    view: StockView,
}

impl StockChangedEvent {
    fn owners<T>(&self, value: T) -> Option<T> {
        (self.view == StockView::Owner).then_some(value)
    }
}

/// A change of stock. Every subscriber learns which product changed and its stock
/// now, as the public catalogue shows it; the change itself (delta, reason, time, the
/// ledger row) is only for the product's owner, and null for anyone else.
#[Object]
impl StockChangedEvent {
    /// The ledger id: pass the last one seen as `afterId` when reconnecting.
    async fn id(&self) -> ID {
        ID(self.item.movement.id.to_string())
    }

    /// The product whose stock changed.
    async fn product_id(&self) -> ID {
        ID(self.item.movement.product_id.to_string())
    }

    /// The partner who owns the product.
    async fn owner_id(&self) -> ID {
        ID(self.item.owner_id.to_string())
    }

    /// The change in units; null unless the subscriber owns the product.
    async fn delta(&self) -> Option<i64> {
        self.owners(self.item.movement.delta)
    }

    /// The stock after this change, in units (for another partner: the product's
    /// stock now).
    async fn quantity(&self) -> i64 {
        self.item.movement.quantity_after
    }

    /// Whether the product has stock left after this change.
    async fn in_stock(&self) -> bool {
        self.item.movement.quantity_after > 0
    }

    /// Why the stock changed; null unless the subscriber owns the product.
    async fn reason(&self) -> Option<StockReasonGql> {
        self.owners(self.item.movement.reason.into())
    }

    /// When the change was made; null unless the subscriber owns the product.
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        self.owners(datetime(self.item.movement.created_at))
    }

    /// The ledger row; null unless the subscriber owns the product.
    async fn movement(&self) -> Option<StockMovementNode> {
        self.owners(StockMovementNode(self.item.movement.clone()))
    }

    /// The product as it is now: for its owner even when deleted (with `deletedAt`).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        let service = service(ctx)?;
        let id = self.item.movement.product_id;
        let product = match self.view {
            StockView::Owner => service.product_any(id).await?,
            StockView::Catalogue => service.product(id).await?,
        };
        Ok(product.map(ProductNode))
    }
}

/// An alert for `lowStock` (described on the `Object` impl below).
pub struct LowStockEvent {
    item: Arc<StockFeedItem>,
}

/// A product's stock reached its low-stock threshold, or zero. Sent only to the
/// product's owner.
#[Object]
impl LowStockEvent {
    /// The ledger id of the change that crossed the threshold: pass the last one seen
    /// as `afterId` when reconnecting.
    async fn id(&self) -> ID {
        ID(self.item.movement.id.to_string())
    }

    /// The product that ran low.
    async fn product_id(&self) -> ID {
        ID(self.item.movement.product_id.to_string())
    }

    /// The stock after the change, in units.
    async fn quantity(&self) -> i64 {
        self.item.movement.quantity_after
    }

    /// The product's low-stock threshold in units, or null when it has none (then the
    /// alert is for running out).
    async fn threshold(&self) -> Option<i64> {
        self.item.low_stock_threshold
    }

    /// True when the change left no stock at all.
    async fn out_of_stock(&self) -> bool {
        self.item.movement.quantity_after == 0
    }

    /// The product as it is now, even when deleted since (with `deletedAt`).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        Ok(service(ctx)?
            .product_any(self.item.movement.product_id)
            .await?
            .map(ProductNode))
    }
}

/// What happened to a product.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ProductChangeKind {
    /// It was added to the catalogue.
    Created,
    /// Its fields or picture changed (stock changes are `stockChanged`'s).
    Updated,
    /// It was deleted; its stock history stays readable to its owner.
    Deleted,
}

/// An event for `productChanged` (described on the `Object` impl below).
pub struct ProductChangedEvent {
    event: Arc<ProductEvent>,
    viewer: Actor,
}

/// A product was created, edited (its picture included) or deleted. Every subscriber
/// receives these: the catalogue is public.
#[Object]
impl ProductChangedEvent {
    /// The product-feed id: pass the last one seen as `afterId` when reconnecting.
    async fn id(&self) -> ID {
        ID(self.event.id.to_string())
    }

    /// What happened.
    async fn kind(&self) -> ProductChangeKind {
        match self.event.kind {
            ProductEventKind::Created => ProductChangeKind::Created,
            ProductEventKind::Updated => ProductChangeKind::Updated,
            ProductEventKind::Deleted => ProductChangeKind::Deleted,
        }
    }

    /// The product that changed.
    async fn product_id(&self) -> ID {
        ID(self.event.product_id.to_string())
    }

    /// The partner who owns it.
    async fn owner_id(&self) -> ID {
        ID(self.event.owner_id.to_string())
    }

    /// The product's version after this change.
    async fn version(&self) -> i64 {
        self.event.version
    }

    /// When the change was made (UTC, RFC 3339).
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.event.created_at)
    }

    /// The product as it is now. A deleted one is null, except to its owner (who sees
    /// it with `deletedAt` set).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        let service = service(ctx)?;
        let id = self.event.product_id;
        let product = if self.viewer.user_id == self.event.owner_id {
            service.product_any(id).await?
        } else {
            service.product(id).await?
        };
        Ok(product.map(ProductNode))
    }
}

/// The position of `event` in `feed`, or `None` when it belongs to the other feed.
fn position_in(feed: FeedKind, event: &FeedEvent) -> Option<FeedPosition> {
    match (feed, event) {
        (FeedKind::Stock, FeedEvent::Stock(item)) => Some(item.position()),
        (FeedKind::Product, FeedEvent::Product(event)) => Some(event.position()),
        _ => None,
    }
}

/// A page of `feed` after `after`, as events.
async fn read_after(
    feed: FeedKind,
    service: &Service,
    after: FeedPosition,
) -> Result<Vec<FeedEvent>, ServiceError> {
    Ok(match feed {
        FeedKind::Stock => service
            .stock_feed_after(after, 500)
            .await?
            .into_iter()
            .map(|i| FeedEvent::Stock(Arc::new(i)))
            .collect(),
        FeedKind::Product => service
            .product_feed_after(after, 500)
            .await?
            .into_iter()
            .map(|e| FeedEvent::Product(Arc::new(e)))
            .collect(),
    })
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

/// The error that ends a subscription which should resume after the row `last`.
fn resume_from(last: FeedPosition, why: &str) -> async_graphql::Error {
    let last = last.id;
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
    feed: FeedKind,
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
        let start = match after {
            Some(after) => service.feed_position(feed, after).await,
            None => service.feed_head(feed).await,
        };
        let mut last = match start {
            Ok(position) => position,
            Err(err) => {
                yield Err(err.into());
                return;
            }
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
                match read_after(feed, &service, last).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => {
                        replayed += batch.len();
                        for event in batch {
                            last = position_in(feed, &event).unwrap_or(last);
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
                    let Some(position) = position_in(feed, &event) else { continue };
                    if position <= last {
                        continue;
                    }
                    last = position;
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

/// An `afterId`: a feed id, or `"0"` to replay from the feed's start.
fn after_id(id: Option<&ID>) -> Result<Option<i64>, ServiceError> {
    match id {
        Some(id) if id.as_str() == "0" => Ok(Some(0)),
        other => optional_id("afterId", other),
    }
}

#[derive(Default)]
pub struct SubscriptionRoot;

/// Live events over a WebSocket (`graphql-transport-ws`, at `/graphql/ws`). Every
/// subscription needs credentials (a session cookie or an API token, at
/// `connection_init`), checked again before each operation: UNAUTHENTICATED once they
/// are revoked or expire.
#[Subscription]
impl SubscriptionRoot {
    /// Stock changes, optionally of one product or one partner's products. The owner
    /// of a product receives each change, replayed from `afterId` as well; any other
    /// subscriber receives only the product and its stock now (see
    /// `StockChangedEvent`).
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this product's changes.")] product_id: Option<ID>,
        #[graphql(desc = "Only changes of this partner's products.")] owner_id: Option<ID>,
        #[graphql(desc = "The `id` of the last event seen: the events after it are \
                          replayed from the database first (at most 1,000; past that \
                          the subscription ends with an error naming the `afterId` to \
                          resume from). \"0\" replays from the start; left out, events \
                          start from now. Not a decimal integer: BAD_USER_INPUT.")]
        after_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<StockChangedEvent>>> {
        let viewer = actor(ctx)?;
        let product_id = optional_id("productId", product_id.as_ref())?;
        let owner_id = optional_id("ownerId", owner_id.as_ref())?;
        let after = self::after_id(after_id.as_ref())?;
        feed_stream(ctx, FeedKind::Stock, after, move |event| match event {
            FeedEvent::Stock(item)
                if product_id.is_none_or(|p| p == item.movement.product_id)
                    && owner_id.is_none_or(|o| o == item.owner_id) =>
            {
                item.view_for(&viewer).map(|view| StockChangedEvent {
                    item: item.clone(),
                    view,
                })
            }
            _ => None,
        })
    }

    /// Products created, edited or deleted, optionally of one partner.
    async fn product_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this partner's products.")] owner_id: Option<ID>,
        #[graphql(desc = "The `id` of the last event seen: the events after it are \
                          replayed from the database first (at most 1,000; past that \
                          the subscription ends with an error naming the `afterId` to \
                          resume from). \"0\" replays from the start; left out, events \
                          start from now. Not a decimal integer: BAD_USER_INPUT.")]
        after_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ProductChangedEvent>>> {
        let viewer = actor(ctx)?;
        let owner_id = optional_id("ownerId", owner_id.as_ref())?;
        let after = self::after_id(after_id.as_ref())?;
        feed_stream(ctx, FeedKind::Product, after, move |event| match event {
            FeedEvent::Product(e) if owner_id.is_none_or(|o| o == e.owner_id) => {
                Some(ProductChangedEvent {
                    event: e.clone(),
                    viewer,
                })
            }
            _ => None,
        })
    }

    /// Alerts when one of the subscriber's products reaches its low-stock threshold or
    /// runs out. `ownerId`, when given, must be the subscriber.
    async fn low_stock(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The subscriber's own id, or left out; anyone else's is \
                          FORBIDDEN.")]
        owner_id: Option<ID>,
        #[graphql(desc = "The `id` of the last event seen: the events after it are \
                          replayed from the database first (at most 1,000; past that \
                          the subscription ends with an error naming the `afterId` to \
                          resume from). \"0\" replays from the start; left out, events \
                          start from now. Not a decimal integer: BAD_USER_INPUT.")]
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
        let after = self::after_id(after_id.as_ref())?;
        feed_stream(ctx, FeedKind::Stock, after, move |event| match event {
            FeedEvent::Stock(item) if item.owner_id == owner && item.crossed_low_stock() => {
                Some(LowStockEvent { item: item.clone() })
            }
            _ => None,
        })
    }
}

//! Live updates: each replica tails the change feeds once and fans events out to its
//! subscribers.
//!
//! One task per replica reads "everything after the last id seen" from the stock ledger
//! and the product events, and broadcasts it on a bounded channel. On PostgreSQL it is
//! woken by LISTEN/NOTIFY (writers notify at commit) and polls every second as a
//! fallback; on SQLite, which has no notifications, it polls at a short interval. Either
//! way it is one query per tick for the whole replica, not one per subscriber.
//!
//! A subscriber that cannot keep up falls behind the channel's capacity; its stream then
//! ends with an error (the client reconnects with the last id it saw and misses
//! nothing), so a slow client never grows the replica's memory.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::db::Db;
use crate::service::feed::{ProductEvent, StockFeedItem};
use crate::service::Service;

/// An event of either feed.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    Stock(Arc<StockFeedItem>),
    Product(Arc<ProductEvent>),
}

/// How many events a subscriber may fall behind before it is dropped.
const CHANNEL_CAPACITY: usize = 1024;
/// Most rows read per feed per tick.
const BATCH: i64 = 500;

/// The fan-out point of one replica.
#[derive(Clone, Debug)]
pub struct EventHub {
    sender: broadcast::Sender<FeedEvent>,
}

impl EventHub {
    /// Starts the tailer task. `poll` is SQLite's polling interval (PostgreSQL polls
    /// once a second besides its notifications).
    pub fn start(service: Service, poll: Duration) -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        tokio::spawn(tail(service, sender.clone(), poll));
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }
}

async fn tail(service: Service, sender: broadcast::Sender<FeedEvent>, poll: Duration) {
    let (mut stock_seen, mut product_seen) = loop {
        match service.feed_heads().await {
            Ok(heads) => break heads,
            Err(err) => {
                err.log();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut wake = Wakeup::new(service.db(), poll).await;
    loop {
        wake.wait().await;
        // Drain both feeds completely before sleeping again.
        loop {
            let mut read = 0;
            match service.stock_feed_after(stock_seen, BATCH).await {
                Ok(items) => {
                    read += items.len();
                    for item in items {
                        stock_seen = item.movement.id;
                        // No receivers is not an error: nobody is subscribed right now.
                        let _ = sender.send(FeedEvent::Stock(Arc::new(item)));
                    }
                }
                Err(err) => err.log(),
            }
            match service.product_feed_after(product_seen, BATCH).await {
                Ok(events) => {
                    read += events.len();
                    for event in events {
                        product_seen = event.id;
                        let _ = sender.send(FeedEvent::Product(Arc::new(event)));
                    }
                }
                Err(err) => err.log(),
            }
            if read == 0 {
                break;
            }
        }
        if sender.is_empty() && sender.receiver_count() == 0 && sender.strong_count() == 1 {
            // Only our own sender is left: the replica is gone.
            return;
        }
    }
}

/// Sleeps until the feeds may have something new.
enum Wakeup {
    Poll(tokio::time::Interval),
    Listen {
        listener: Option<PgListener>,
        pool: sqlx::PgPool,
        fallback: tokio::time::Interval,
    },
}

const CHANNEL: &str = "ecanteen_feed";

impl Wakeup {
    async fn new(db: &Db, poll: Duration) -> Self {
        match db {
            Db::Sqlite(..) => Self::Poll(interval(poll)),
            Db::Postgres(pool) => Self::Listen {
                listener: listen(pool).await,
                pool: pool.clone(),
                fallback: interval(Duration::from_secs(1)),
            },
        }
    }

    async fn wait(&mut self) {
        match self {
            Self::Poll(interval) => {
                interval.tick().await;
            }
            Self::Listen {
                listener,
                pool,
                fallback,
            } => {
                if listener.is_none() {
                    *listener = listen(pool).await;
                }
                match listener {
                    Some(l) => tokio::select! {
                        received = l.recv() => {
                            if let Err(err) = received {
                                tracing::warn!(error = %err, "feed listener lost; polling until it is back");
                                *listener = None;
                            }
                        }
                        _ = fallback.tick() => {}
                    },
                    None => {
                        fallback.tick().await;
                    }
                }
            }
        }
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

async fn listen(pool: &sqlx::PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(CHANNEL).await.ok()?;
    Some(listener)
}

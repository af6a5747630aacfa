//! Live updates: each replica tails the change feeds once and fans events out to its
//! subscribers.
//!
//! One task per replica reads "everything after the last position read" from the stock
//! ledger and the product events (see `service::feed`), and broadcasts it on a bounded
//! channel. On PostgreSQL it is woken by LISTEN/NOTIFY and polls every second as a
//! fallback; on SQLite, which has no notifications, it polls at a short interval. Either
//! way it is one query per tick for the whole replica, not one per subscriber.
//!
//! On PostgreSQL the NOTIFY is sent after a write's commit, not inside its transaction
//! (see `db::FeedSignal`): each replica's announcer sends one for every burst of its
//! writes, at most one every [`ANNOUNCE_GAP`]. Rows that committed but wait behind an
//! older transaction are read again soon ([`HELD_BACK_RETRY`]), since the transaction
//! they wait for may send no notification when it ends.
//!
//! A subscriber that cannot keep up falls behind the channel's capacity; its stream then
//! ends with an error (the client reconnects with the last id it saw and misses
//! nothing), so a slow client never grows the replica's memory.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::db::{Class, Db, FeedSignal};
use crate::service::feed::{FeedKind, ProductEvent, StockFeedItem};
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
/// The shortest time between two of a replica's notifications: bursts of writes are
/// announced once.
pub const ANNOUNCE_GAP: Duration = Duration::from_millis(5);
/// How soon rows held back behind an older transaction are read again, at first; the
/// wait doubles up to the fallback poll while they stay held back.
const HELD_BACK_RETRY: Duration = Duration::from_millis(2);

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
        if let Db::Postgres(lanes, signal) = service.db() {
            let pool = lanes.lane(Class::Upkeep).pool().clone();
            tokio::spawn(announce(pool, signal.clone(), sender.downgrade()));
        }
        tokio::spawn(tail(service, sender.clone(), poll));
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }
}

/// Tells every replica's tailer, with one NOTIFY after the commits, that this replica
/// wrote to a feed; stops with the replica's event hub.
async fn announce(pool: sqlx::PgPool, signal: FeedSignal, hub: broadcast::WeakSender<FeedEvent>) {
    loop {
        // Looks up once a second whether the hub is still there, raised or not.
        let raised = tokio::time::timeout(Duration::from_secs(1), signal.raised())
            .await
            .is_ok();
        if hub.upgrade().is_none() {
            return;
        }
        if !raised {
            continue;
        }
        let sent = sqlx::query("select pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await;
        if let Err(err) = sent {
            // The tailers' fallback poll reads the rows all the same, a second later.
            tracing::debug!(error = %err, "cannot announce a feed write");
        }
        tokio::time::sleep(ANNOUNCE_GAP).await;
    }
}

async fn tail(service: Service, sender: broadcast::Sender<FeedEvent>, poll: Duration) {
    let mut stock_seen = head(&service, FeedKind::Stock).await;
    let mut product_seen = head(&service, FeedKind::Product).await;
    let mut wake = Wakeup::new(service.db(), poll).await;
    let mut retry = HELD_BACK_RETRY;
    let mut progressed = false;
    loop {
        // Under a steady stream of writes some row is nearly always held back behind
        // a transaction still running, which ends within a commit's time: read again
        // soon. Only while nothing moves does the wait grow.
        if service.feeds_held_back().await.unwrap_or(false) {
            retry = if progressed {
                HELD_BACK_RETRY
            } else {
                (retry * 2).min(Duration::from_secs(1))
            };
            tokio::time::sleep(retry).await;
        } else {
            retry = HELD_BACK_RETRY;
            wake.wait().await;
        }
        progressed = false;
        // Drain both feeds completely before sleeping again.
        loop {
            let (mut read, mut more) = (0, false);
            match service.stock_feed_after(stock_seen, BATCH).await {
                Ok(items) => {
                    read += items.len();
                    more |= items.len() == BATCH as usize;
                    for item in items {
                        stock_seen = item.position();
                        // No receivers is not an error: nobody is subscribed right now.
                        let _ = sender.send(FeedEvent::Stock(Arc::new(item)));
                    }
                }
                Err(err) => err.log(),
            }
            match service.product_feed_after(product_seen, BATCH).await {
                Ok(events) => {
                    read += events.len();
                    more |= events.len() == BATCH as usize;
                    for event in events {
                        product_seen = event.position();
                        let _ = sender.send(FeedEvent::Product(Arc::new(event)));
                    }
                }
                Err(err) => err.log(),
            }
            if read > 0 {
                progressed = true;
            }
            // A feed that gave fewer rows than a batch is drained.
            if !more {
                break;
            }
        }
        if sender.is_empty() && sender.receiver_count() == 0 && sender.strong_count() == 1 {
            // Only our own sender is left: the replica is gone.
            return;
        }
    }
}

/// Where the tailer starts: the feed's head now.
async fn head(service: &Service, feed: FeedKind) -> crate::service::feed::FeedPosition {
    loop {
        match service.feed_head(feed).await {
            Ok(head) => return head,
            Err(err) => {
                err.log();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
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
            Db::Postgres(lanes, _) => Self::Listen {
                listener: listen(lanes.lane(Class::Upkeep).pool()).await,
                pool: lanes.lane(Class::Upkeep).pool().clone(),
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

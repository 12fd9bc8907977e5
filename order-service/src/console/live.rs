//! The console's live feed: orders as they change, and the last minute's counters, to every
//! open console of this replica.
//!
//! It is fed by the order's own events: while a console is open, a tap reads the saga's
//! topics from their end (every partition, so each replica sees every order, whoever's
//! consumer handles it), and each order heard of is read from the read model and pushed.
//! Nothing polls the database in a loop, and nothing is added to the event path: a trigger
//! with `pg_notify` would have been simpler, but it serializes the commits of every
//! transaction that notifies (measured: half the commit rate), and that cost would be paid
//! whether or not anyone watches. The tap costs nothing while no console is open.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_runtime::per_key_limit::{PerKeyLimit, PerKeySlot};
use shared_events::contracts::{Contract, Topic};
use shared_events::{EventTap, KafkaConfig, RegistryCodec, TopicNames};
use sqlx::PgPool;
use tokio::sync::{Notify, broadcast};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::feed::{Counters, Feed};
use crate::http::{OrderView, order_views};

/// How often changed orders are read and pushed.
const PUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How long the tap stays open after the last console closed (a reload should not reopen it).
const LINGER: Duration = Duration::from_secs(30);
/// Updates a slow console may fall behind by before it is told to reload.
const BACKLOG: usize = 1_024;

/// One message to the consoles.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum LiveUpdate {
    Order(Box<OrderView>),
    Counters(Counters),
}

impl LiveUpdate {
    /// The server-sent event's name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveUpdate::Order(_) => "order",
            LiveUpdate::Counters(_) => "counters",
        }
    }
}

/// Where the feed reads from.
pub struct FeedSource {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub names: TopicNames,
    pub codec: RegistryCodec,
}

/// Most live streams one subject may have open at once (a console per tab).
pub const STREAMS_PER_SUBJECT: usize = 8;

pub struct LiveOrders {
    source: FeedSource,
    /// Open streams by subject.
    streams: PerKeyLimit<String>,
    updates: broadcast::Sender<Arc<LiveUpdate>>,
    watcher_arrived: Notify,
    closed: CancellationToken,
}

impl LiveOrders {
    pub fn new(source: FeedSource) -> Arc<Self> {
        Arc::new(Self {
            source,
            streams: PerKeyLimit::new(STREAMS_PER_SUBJECT),
            updates: broadcast::channel(BACKLOG).0,
            watcher_arrived: Notify::new(),
            closed: CancellationToken::new(),
        })
    }

    /// Updates from now on for `subject`, and its place among its streams while it holds
    /// it; `None` when it has [`STREAMS_PER_SUBJECT`] open. The feed starts if it is not
    /// running.
    pub fn subscribe(
        &self,
        subject: &str,
    ) -> Option<(broadcast::Receiver<Arc<LiveUpdate>>, PerKeySlot<String>)> {
        let slot = self.streams.take(&subject.to_owned())?;
        let updates = self.updates.subscribe();
        self.watcher_arrived.notify_one();
        Some((updates, slot))
    }

    /// Cancelled when the service stops: open streams end, so shutdown does not wait on them.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Runs the feed whenever a console is open, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let _close_streams = self.closed.clone().drop_guard();
        loop {
            while self.updates.receiver_count() == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = self.watcher_arrived.notified() => {}
                }
            }
            if let Err(e) = self.watch(&shutdown).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the console's live feed failed; reopening it"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Taps the topics and pushes updates until no console has been open for [`LINGER`].
    async fn watch(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let event_types = order_event_types();
        let topics = shared_events::contracts::topics_of(&event_types)?;
        let source = &self.source;
        let tap = EventTap::open(
            source.kafka.reader(),
            &source.names,
            source.codec.clone(),
            &topics,
            &event_types,
        )
        .await?;
        tracing::info!("the console's live feed is open");
        let mut feed = Feed::new(Utc::now());
        let mut push = tokio::time::interval(PUSH_INTERVAL);
        push.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tally = tokio::time::interval(Duration::from_secs(1));
        let mut unwatched_since: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                record = tap.next() => {
                    let order_id = record.key.as_deref().and_then(|k| Uuid::parse_str(k).ok());
                    if let Some(order_id) = order_id {
                        let at = record
                            .timestamp_ms
                            .and_then(DateTime::from_timestamp_millis)
                            .unwrap_or_else(Utc::now);
                        feed.heard(order_id, &record.event_type, at);
                    }
                }
                _ = push.tick() => {
                    let due = feed.due(Instant::now());
                    if !due.is_empty() {
                        let views = shared_events::database::bounded(order_views(&source.pool, &due));
                        for view in views.await? {
                            self.send(LiveUpdate::Order(Box::new(view)));
                        }
                    }
                }
                _ = tally.tick() => {
                    self.send(LiveUpdate::Counters(feed.counters(Utc::now())));
                    if self.updates.receiver_count() > 0 {
                        unwatched_since = None;
                    } else if unwatched_since.get_or_insert_with(Instant::now).elapsed() > LINGER {
                        tracing::info!("no console open; the live feed is closed");
                        return Ok(());
                    }
                }
            }
        }
    }

    fn send(&self, update: LiveUpdate) {
        // No receiver is not an error: the last console just closed.
        let _ = self.updates.send(Arc::new(update));
    }
}

/// Every event type that belongs to an order: those order-service watches (its own) and
/// those it receives, but not the catalog's. The topology's `watches` is what lets
/// order-service's Kafka user read its own topic (`shared_events::acl`).
fn order_event_types() -> Vec<&'static str> {
    let order_service = shared_events::contracts::topology::ORDER_SERVICE;
    order_service
        .watches
        .iter()
        .chain(order_service.receives)
        .filter(|t| Contract::by_event_type(t).is_some_and(|c| c.topic != Topic::Catalog))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::contracts::CONTRACTS;

    #[test]
    fn the_console_shows_every_event_of_an_order_s_saga() {
        let mut shown = order_event_types();
        shown.sort_unstable();
        // Not the catalog's, nor an operator's requests (the timeline shows those).
        let mut of_orders: Vec<&str> = CONTRACTS
            .iter()
            .filter(|c| !matches!(c.topic, Topic::Catalog | Topic::Operations))
            .map(|c| c.event_type)
            .collect();
        of_orders.sort_unstable();
        assert_eq!(shown, of_orders);
    }
}

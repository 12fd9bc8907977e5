//! Watches the `orders` topic for terminal events: how the load generator learns that an
//! order finished, and when, without polling the services it is measuring.

use shared_events::contracts::{EventPayload, Topic};
use shared_events::{EventTap, KafkaConfig, RegistryCodec, TopicNames};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::mix::Outcome;

/// How long the watcher's fetches wait at the broker.
const WATCH_POLL_MS: u32 = 100;

/// An order's terminal event, as published.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    pub order_id: Uuid,
    pub outcome: Outcome,
    /// When the relay produced the record (its Kafka timestamp), in Unix milliseconds: just
    /// after order-service committed the outcome.
    pub at_ms: i64,
}

pub struct TerminalWatcher {
    tap: EventTap,
}

impl TerminalWatcher {
    /// A watcher positioned at the current end of every partition of the `orders` topic, so
    /// it sees what is published from now on.
    pub async fn start(
        kafka: &KafkaConfig,
        names: &TopicNames,
        codec: RegistryCodec,
    ) -> anyhow::Result<Self> {
        let mut config = kafka.reader();
        // Latency comes from the records' timestamps, so polling the broker less often only
        // delays when the run notices an outcome, not what it measures; and it leaves the
        // broker's CPU to the system under test.
        config.set("fetch.wait.max.ms", WATCH_POLL_MS.to_string());
        let terminal = &["OrderCompleted", "OrderCancelled"];
        let tap = EventTap::open(config, names, codec, &[Topic::Orders], terminal).await?;
        Ok(Self { tap })
    }

    /// Sends every terminal event to `sink` until `stop`.
    pub async fn run(self, sink: mpsc::UnboundedSender<Terminal>, stop: CancellationToken) {
        loop {
            let record = tokio::select! {
                () = stop.cancelled() => return,
                record = self.tap.next() => record,
            };
            let Ok(event) = self.tap.decode(&record).await else {
                continue;
            };
            let outcome = match &event.payload {
                EventPayload::OrderCompleted(_) => Outcome::Completed,
                EventPayload::OrderCancelled(cancelled) => {
                    Outcome::of_cancellation(&cancelled.reason)
                }
                _ => continue,
            };
            let (Some(order_id), Some(at_ms)) = (event.metadata.order_id, record.timestamp_ms)
            else {
                continue;
            };
            if sink
                .send(Terminal {
                    order_id,
                    outcome,
                    at_ms,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

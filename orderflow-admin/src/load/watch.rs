//! Watches the `orders` topic for terminal events: how the load generator learns that an
//! order finished, and when, without polling the services it is measuring.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use shared_events::{EventPayload, KafkaConfig, RegistryCodec, Topic, TopicNames};
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
    consumer: StreamConsumer,
    codec: RegistryCodec,
}

impl TerminalWatcher {
    /// A watcher positioned at the current end of every partition of the `orders` topic, so
    /// it sees what is published from now on.
    pub async fn start(
        kafka: &KafkaConfig,
        names: &TopicNames,
        codec: RegistryCodec,
    ) -> anyhow::Result<Self> {
        let topic = names.name(Topic::Orders);
        let mut config = kafka.reader();
        // Latency comes from the records' timestamps, so polling the broker less often only
        // delays when the run notices an outcome, not what it measures; and it leaves the
        // broker's CPU to the system under test.
        config.set("fetch.wait.max.ms", WATCH_POLL_MS.to_string());
        let assignment = {
            let (config, topic) = (config.clone(), topic.clone());
            tokio::task::spawn_blocking(move || end_of_each_partition(&config, &topic)).await??
        };
        let consumer: StreamConsumer = config.create()?;
        consumer.assign(&assignment)?;
        Ok(Self { consumer, codec })
    }

    /// Sends every terminal event to `sink` until `stop`.
    pub async fn run(self, sink: mpsc::UnboundedSender<Terminal>, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                received = self.consumer.recv() => match received {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the orders topic");
                        continue;
                    }
                },
            };
            let is_terminal = message.headers().is_some_and(|headers| {
                headers.iter().any(|h| {
                    h.key == "event_type"
                        && matches!(h.value, Some(b"OrderCompleted" | b"OrderCancelled"))
                })
            });
            if !is_terminal {
                continue;
            }
            let Ok(event) = self.codec.decode(message.payload()).await else {
                continue;
            };
            let outcome = match &event.payload {
                EventPayload::OrderCompleted(_) => Outcome::Completed,
                EventPayload::OrderCancelled(cancelled) => {
                    Outcome::of_cancellation(&cancelled.reason)
                }
                _ => continue,
            };
            let (Some(order_id), Some(at_ms)) =
                (event.metadata.order_id, message.timestamp().to_millis())
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

/// The high watermark of each partition of `topic`, as an assignment.
fn end_of_each_partition(
    config: &rdkafka::ClientConfig,
    topic: &str,
) -> anyhow::Result<TopicPartitionList> {
    let timeout = Duration::from_secs(10);
    let probe: BaseConsumer = config.create()?;
    let metadata = probe
        .fetch_metadata(Some(topic), timeout)
        .context("reading the orders topic's partitions")?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = probe.fetch_watermarks(topic, partition.id(), timeout)?;
        assignment.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
    }
    anyhow::ensure!(
        assignment.count() > 0,
        "topic {topic} has no partitions; provision the topics first"
    );
    Ok(assignment)
}

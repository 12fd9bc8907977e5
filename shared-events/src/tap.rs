//! A tap on the saga's topics: every record published from now on, read with no consumer
//! group and no commits. For live views and tools that watch the flow (the console's feed,
//! the load generator's outcome watcher); they see what happens without touching the
//! services' consumer groups, and a tap that goes away leaves nothing behind.
//!
//! Records are filtered by their `event_type` header before anything is copied, and keyed
//! by order, so most watchers never decode a payload; [`EventTap::decode`] does when needed.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::codec::DecodeError;
use crate::codec::RegistryCodec;
use crate::contracts::{Event, Topic};
use crate::dead_letter::header_value;
use crate::error::Error;
use crate::kafka::partition_ids;
use crate::topics::TopicNames;

/// One record the tap let through.
#[derive(Debug, Clone)]
pub struct TappedRecord {
    /// The record key: the order id for every order's event.
    pub key: Option<String>,
    pub event_type: String,
    /// When the producer wrote it (the record's timestamp), in Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    payload: Option<Vec<u8>>,
}

/// Reads every partition of some topics from their current end.
pub struct EventTap {
    consumer: StreamConsumer,
    codec: RegistryCodec,
    event_types: Vec<String>,
}

impl EventTap {
    /// A tap positioned at the end of every partition of `topics` (as seen now), letting
    /// through the records whose `event_type` header is one of `event_types`. `reader` is a
    /// [`crate::kafka::KafkaConfig::reader`] configuration, adjusted by the caller if it wants.
    pub async fn open(
        reader: ClientConfig,
        names: &TopicNames,
        codec: RegistryCodec,
        topics: &[Topic],
        event_types: &[&str],
    ) -> Result<Self, Error> {
        let topics: Vec<String> = topics.iter().map(|t| names.name(*t)).collect();
        let assignment = {
            let reader = reader.clone();
            tokio::task::spawn_blocking(move || end_of_each_partition(&reader, &topics))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
        };
        let consumer: StreamConsumer = reader.create().map_err(Error::Kafka)?;
        consumer.assign(&assignment).map_err(Error::Kafka)?;
        Ok(Self {
            consumer,
            codec,
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        })
    }

    /// The next record let through. A failed fetch is logged and retried by librdkafka; it
    /// does not end the tap.
    pub async fn next(&self) -> TappedRecord {
        loop {
            let message = match self.consumer.recv().await {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a tapped topic");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Some(event_type) = header_value(&message, "event_type")
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|t| self.event_types.iter().any(|wanted| wanted == t))
            else {
                continue;
            };
            return TappedRecord {
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                event_type: event_type.to_owned(),
                timestamp_ms: message.timestamp().to_millis(),
                payload: message.payload().map(<[u8]>::to_vec),
            };
        }
    }

    /// The tapped record's event, decoded as a consumer would.
    pub async fn decode(&self, record: &TappedRecord) -> Result<Event, DecodeError> {
        self.codec.decode(record.payload.as_deref()).await
    }
}

/// The high watermark of each partition of `topics`, as an assignment.
fn end_of_each_partition(
    config: &ClientConfig,
    topics: &[String],
) -> Result<TopicPartitionList, Error> {
    let timeout = Duration::from_secs(10);
    let probe: BaseConsumer = config.create().map_err(Error::Kafka)?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let partitions = partition_ids(&probe, topic, timeout)?;
        if partitions.is_empty() {
            return Err(Error::TopicMissing(topic.clone()));
        }
        for partition in partitions {
            let (_, high) = probe
                .fetch_watermarks(topic, partition, timeout)
                .map_err(Error::Kafka)?;
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(high))
                .map_err(Error::Kafka)?;
        }
    }
    Ok(assignment)
}

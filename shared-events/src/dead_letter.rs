//! Dead-letter topics: a poison record is copied to `<topic>.dlq` with headers saying where
//! it came from and why it failed, so the consumer can move on and nothing is lost. The same
//! module lists dead letters and replays them to their original topic.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, ErrorClass};
use crate::kafka::KafkaConfig;
use crate::topics::DLQ_SUFFIX;

/// Header names of a dead letter, beside the original record's own headers.
pub mod headers {
    pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
    pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
    pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
    pub const CONSUMER_GROUP: &str = "dlq.consumer.group";
    pub const ERROR_CLASS: &str = "dlq.error.class";
    pub const ERROR_MESSAGE: &str = "dlq.error.message";
    pub const REPLAYED_FROM: &str = "dlq.replayed.from";
}

/// Publishes poison records to their topic's dead-letter twin.
pub struct DeadLetterPublisher {
    kafka: KafkaConfig,
    /// Made at the first dead letter: a healthy consumer never needs one, and an idle
    /// librdkafka producer still costs a thread polling it. Dropped after a failed send,
    /// so that the retry starts a new producer session.
    producer: Mutex<Option<FutureProducer>>,
    timeout: Duration,
}

impl DeadLetterPublisher {
    pub fn new(kafka: &KafkaConfig) -> Self {
        Self {
            kafka: kafka.clone(),
            producer: Mutex::new(None),
            timeout: Duration::from_millis(u64::from(kafka.message_timeout_ms)),
        }
    }

    fn producer(&self) -> Result<FutureProducer, Error> {
        let mut slot = self.producer.lock().expect("producer lock poisoned");
        if let Some(producer) = slot.as_ref() {
            return Ok(producer.clone());
        }
        let producer: FutureProducer = self
            .kafka
            .idempotent_producer()
            .create()
            .map_err(Error::Kafka)?;
        *slot = Some(producer.clone());
        Ok(producer)
    }

    /// Copies `message` (key, value and headers) to `<topic>.dlq` and waits for the broker's
    /// acknowledgement; only then may the caller store the record's offset.
    pub async fn publish(
        &self,
        message: &impl Message,
        consumer_group: &str,
        class: ErrorClass,
        reason: &str,
    ) -> Result<(), Error> {
        let topic = format!("{}{DLQ_SUFFIX}", message.topic());
        let mut record_headers = copy_headers(message.headers(), |_| true);
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            (headers::ORIGINAL_TOPIC, message.topic()),
            (headers::ORIGINAL_PARTITION, partition.as_str()),
            (headers::ORIGINAL_OFFSET, offset.as_str()),
            (headers::CONSUMER_GROUP, consumer_group),
            (headers::ERROR_CLASS, class.as_str()),
            (headers::ERROR_MESSAGE, reason),
        ] {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let record = record(&topic, message.key(), message.payload(), record_headers);
        let result = self.producer()?.send(record, self.timeout).await;
        if result.is_err() {
            // The retry gets a new producer session, as the relay's start-over does (see
            // relay/publishing.rs).
            *self.producer.lock().expect("producer lock poisoned") = None;
        }
        result.map(drop).map_err(|(e, _)| Error::Kafka(e))
    }
}

fn copy_headers(source: Option<&impl Headers>, keep: impl Fn(&str) -> bool) -> OwnedHeaders {
    let mut copy = OwnedHeaders::new();
    if let Some(source) = source {
        for header in source.iter().filter(|h| keep(h.key)) {
            copy = copy.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    copy
}

/// One record of a dead-letter topic, as listed by the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub original_topic: Option<String>,
    pub original_partition: Option<String>,
    pub original_offset: Option<String>,
    pub consumer_group: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// Its `event_type` header, copied from the original record.
    pub event_type: Option<String>,
    /// When it was dead-lettered (the record's timestamp).
    pub timestamp: Option<DateTime<Utc>>,
    /// The original record's value.
    pub payload: Option<Vec<u8>>,
}

/// Reads every record currently in `dlq_topic` (from the beginning up to the high
/// watermark of each partition) without joining a consumer group.
pub fn read_dead_letters(kafka: &KafkaConfig, dlq_topic: &str) -> Result<Vec<DeadLetter>, Error> {
    let mut letters = Vec::new();
    scan_topic(kafka, dlq_topic, |message| {
        letters.push(DeadLetter {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            original_topic: header(message, headers::ORIGINAL_TOPIC),
            original_partition: header(message, headers::ORIGINAL_PARTITION),
            original_offset: header(message, headers::ORIGINAL_OFFSET),
            consumer_group: header(message, headers::CONSUMER_GROUP),
            error_class: header(message, headers::ERROR_CLASS),
            error_message: header(message, headers::ERROR_MESSAGE),
            event_type: header(message, crate::outbox::headers::EVENT_TYPE),
            timestamp: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            payload: message.payload().map(<[u8]>::to_vec),
        });
        Ok(())
    })?;
    Ok(letters)
}

/// Re-publishes the selected dead letters (`(partition, offset)`; all when `None`) to their
/// original topic with their original key, value and headers. Returns how many were sent.
pub async fn replay_dead_letters(
    kafka: &KafkaConfig,
    dlq_topic: &str,
    selected: Option<&[(i32, i64)]>,
) -> Result<usize, Error> {
    let producer: FutureProducer = kafka.idempotent_producer().create().map_err(Error::Kafka)?;
    let to_send = {
        let (kafka, topic) = (kafka.clone(), dlq_topic.to_owned());
        let selected = selected.map(<[(i32, i64)]>::to_vec);
        // The scan blocks (a plain consumer's poll): off the async threads.
        tokio::task::spawn_blocking(move || read_for_replay(&kafka, &topic, selected.as_deref()))
            .await
            .map_err(|e| Error::Timeout(format!("reading {dlq_topic} for a replay: {e}")))??
    };
    let timeout = Duration::from_millis(u64::from(kafka.message_timeout_ms));
    for (topic, key, payload, record_headers) in &to_send {
        let record = record(
            topic,
            key.as_deref(),
            payload.as_deref(),
            record_headers.clone(),
        );
        producer
            .send(record, timeout)
            .await
            .map_err(|(e, _)| Error::Kafka(e))?;
    }
    Ok(to_send.len())
}

/// A record to send again: topic, key, value and headers.
type Replay = (String, Option<Vec<u8>>, Option<Vec<u8>>, OwnedHeaders);

/// The selected dead letters of `dlq_topic` (all when `None`) as records for their
/// original topic, with the `dlq.` headers replaced by where they were replayed from.
fn read_for_replay(
    kafka: &KafkaConfig,
    dlq_topic: &str,
    selected: Option<&[(i32, i64)]>,
) -> Result<Vec<Replay>, Error> {
    let mut to_send = Vec::new();
    scan_topic(kafka, dlq_topic, |message| {
        let wanted = selected.is_none_or(|s| s.contains(&(message.partition(), message.offset())));
        if wanted {
            let original = header(message, headers::ORIGINAL_TOPIC)
                .unwrap_or_else(|| dlq_topic.trim_end_matches(DLQ_SUFFIX).to_owned());
            let mut record_headers = copy_headers(message.headers(), |k| !k.starts_with("dlq."));
            let from = format!("{dlq_topic}:{}:{}", message.partition(), message.offset());
            record_headers = record_headers.insert(Header {
                key: headers::REPLAYED_FROM,
                value: Some(&from),
            });
            to_send.push((
                original,
                message.key().map(<[u8]>::to_vec),
                message.payload().map(<[u8]>::to_vec),
                record_headers,
            ));
        }
        Ok(())
    })?;
    Ok(to_send)
}

/// A record of raw bytes; Kafka allows records without key or value.
fn record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    record
}

/// The value of the first header named `key`.
pub(crate) fn header_value<'m, M: Message>(message: &'m M, key: &str) -> Option<&'m [u8]> {
    message.headers()?.iter().find(|h| h.key == key)?.value
}

fn header(message: &BorrowedMessage<'_>, key: &str) -> Option<String> {
    header_value(message, key).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Calls `visit` for every record of `topic` between the low and high watermark at call time.
fn scan_topic(
    kafka: &KafkaConfig,
    topic: &str,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = kafka.reader().create().map_err(Error::Kafka)?;
    let partitions = crate::kafka::partition_ids(&consumer, topic, timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(Error::Kafka)?;
        if high > low {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(Error::Kafka)?;
            remaining.insert(partition, high);
        }
    }
    if remaining.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment).map_err(Error::Kafka)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() && std::time::Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = result.map_err(Error::Kafka)?;
        let Some(&high) = remaining.get(&message.partition()) else {
            continue;
        };
        visit(&message)?;
        if message.offset() + 1 >= high {
            remaining.remove(&message.partition());
        }
    }
    if remaining.is_empty() {
        Ok(())
    } else {
        Err(Error::Timeout(format!(
            "timed out reading {topic}: partitions {:?} not read to their end",
            remaining.keys().collect::<Vec<_>>()
        )))
    }
}

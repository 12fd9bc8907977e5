//! Dead-letter topics: a poison record is copied to `<topic>.dlq` with headers saying where
//! it came from and why it failed, so the consumer can move on and nothing is lost. The same
//! module lists dead letters; [`crate::redrive`] sends their records again.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::{Error, ErrorClass};
use crate::kafka::KafkaConfig;
use crate::topic_reading::scan_newest;
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
            .acknowledged_producer()
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

pub(crate) fn copy_headers(
    source: Option<&impl Headers>,
    keep: impl Fn(&str) -> bool,
) -> OwnedHeaders {
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
    /// Set when the record that failed was itself sent again by a redrive: the dead letter
    /// that redrive was for.
    pub replayed_from: Option<String>,
    /// When it was dead-lettered (the record's timestamp).
    pub timestamp: Option<DateTime<Utc>>,
    /// The original record's value.
    pub payload: Option<Vec<u8>>,
}

/// Reads every record currently in `dlq_topic` (from the beginning up to the high
/// watermark of each partition) without joining a consumer group. Blocking.
pub fn read_dead_letters(kafka: &KafkaConfig, dlq_topic: &str) -> Result<Vec<DeadLetter>, Error> {
    read_newest_dead_letters(kafka, dlq_topic, None)
}

/// The newest `per_partition` records of each partition of `dlq_topic` (all when `None`).
/// Blocking.
pub fn read_newest_dead_letters(
    kafka: &KafkaConfig,
    dlq_topic: &str,
    per_partition: Option<i64>,
) -> Result<Vec<DeadLetter>, Error> {
    let mut letters = Vec::new();
    scan_newest(kafka, dlq_topic, per_partition, |message| {
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
            replayed_from: header(message, headers::REPLAYED_FROM),
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

/// A record of raw bytes; Kafka allows records without key or value.
pub(crate) fn record<'a>(
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

pub(crate) fn header(message: &impl Message, key: &str) -> Option<String> {
    header_value(message, key).map(|v| String::from_utf8_lossy(v).into_owned())
}

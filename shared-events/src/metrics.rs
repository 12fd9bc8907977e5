//! Prometheus metrics of the relay and the consumer runner, registered in the registry the
//! service serves at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub topic: String,
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub topic: String,
    pub event_type: String,
    pub error_class: String,
}

/// Every metric of the event plumbing. Clones share the same series.
#[derive(Clone, Debug)]
pub struct EventMetrics {
    pub published: Family<TopicLabels, Counter>,
    pub publish_failures: Family<TopicLabels, Counter>,
    pub outbox_dead_lettered: Family<TopicLabels, Counter>,
    pub outbox_backlog: Gauge,
    pub outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub relay_active: Gauge,
    pub handled: Family<RecordLabels, Counter>,
    pub duplicates_skipped: Family<RecordLabels, Counter>,
    pub parked: Family<RecordLabels, Counter>,
    pub retried: Family<RecordLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub partitions_paused: Family<TopicLabels, Counter>,
    pub partitions_stalled: Family<TopicLabels, Counter>,
    pub rejoins: Counter,
    /// The whole group's lag (every member's), as of the last reading.
    pub consumer_lag: Gauge,
    pub batch_duration: Histogram,
    pub skipped: Family<TopicLabels, Counter>,
    pub batch_size: Histogram,
}

impl EventMetrics {
    /// Creates the metrics and registers them under `orderflow_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("orderflow");
        r.register(
            "outbox_events_published",
            "Outbox events the relay delivered to Kafka",
            metrics.published.clone(),
        );
        r.register(
            "outbox_publish_failures",
            "Outbox events whose delivery failed and will be retried",
            metrics.publish_failures.clone(),
        );
        r.register(
            "outbox_dead_lettered",
            "Outbox rows the broker can never take, moved to outbox_dead_letters",
            metrics.outbox_dead_lettered.clone(),
        );
        r.register(
            "outbox_backlog_events",
            "Outbox rows not yet delivered",
            metrics.outbox_backlog.clone(),
        );
        r.register(
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest outbox row not yet delivered",
            metrics.outbox_oldest_age_seconds.clone(),
        );
        r.register(
            "outbox_relay_active",
            "1 while this replica holds the relay lock and publishes",
            metrics.relay_active.clone(),
        );
        r.register(
            "consumer_records_handled",
            "Records whose handler ran and committed",
            metrics.handled.clone(),
        );
        r.register(
            "consumer_duplicates_skipped",
            "Records skipped because their event id was already processed",
            metrics.duplicates_skipped.clone(),
        );
        r.register(
            "consumer_records_parked",
            "Records set aside behind their order's dead letter, to apply after its redrive",
            metrics.parked.clone(),
        );
        r.register(
            "consumer_retries",
            "Retries after a transient failure",
            metrics.retried.clone(),
        );
        r.register(
            "consumer_dead_lettered",
            "Records sent to a dead-letter topic",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "consumer_partition_pauses",
            "Times a partition was paused for a cool-down after repeated failures",
            metrics.partitions_paused.clone(),
        );
        r.register(
            "consumer_partitions_stalled",
            "Partitions of the group found lagging with nobody committing them",
            metrics.partitions_stalled.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records of the group's topics not yet committed by the group, all members together",
            metrics.consumer_lag.clone(),
        );
        r.register(
            "consumer_group_rejoins",
            "Times the consumer left and rejoined its group because partitions stalled",
            metrics.rejoins.clone(),
        );
        r.register(
            "consumer_batch_duration_seconds",
            "Time to apply one batch: its transaction from the first statement to the commit",
            metrics.batch_duration.clone(),
        );
        r.register(
            "consumer_records_skipped",
            "Records of event types the consumer does not handle, skipped without a transaction",
            metrics.skipped.clone(),
        );
        r.register(
            "consumer_batch_records",
            "Records per batch taken from Kafka (one transaction each)",
            metrics.batch_size.clone(),
        );
        metrics
    }

    /// Metrics that no registry exposes (tools and tests that do not serve `/metrics`).
    pub fn unregistered() -> Self {
        Self {
            published: Family::default(),
            publish_failures: Family::default(),
            outbox_dead_lettered: Family::default(),
            outbox_backlog: Gauge::default(),
            outbox_oldest_age_seconds: Gauge::default(),
            relay_active: Gauge::default(),
            handled: Family::default(),
            duplicates_skipped: Family::default(),
            parked: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            partitions_paused: Family::default(),
            partitions_stalled: Family::default(),
            rejoins: Counter::default(),
            consumer_lag: Gauge::default(),
            batch_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            skipped: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }
}

impl RecordLabels {
    pub fn new(topic: &str, event_type: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            event_type: event_type.to_owned(),
        }
    }
}

//! order-service's own metrics: finished orders by outcome and how long their sagas took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared_events::contracts::{Event, EventPayload};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `completed` or `cancelled`.
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct OrderMetrics {
    finished: Family<OutcomeLabels, Counter>,
    saga_duration: Family<OutcomeLabels, Histogram>,
    deadlines_skipped: Counter,
}

impl Default for OrderMetrics {
    fn default() -> Self {
        Self {
            finished: Family::default(),
            saga_duration: Family::new_with_constructor(|| {
                // 50 ms to ~100 s: a saga takes a second or so, a deadline 30 s.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.05, 2.0, 12,
                ))
            }),
            deadlines_skipped: Counter::default(),
        }
    }
}

impl OrderMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "orders_finished",
            "Orders that reached a terminal state, by outcome",
            self.finished.clone(),
        );
        registry.register(
            "order_saga_duration_seconds",
            "Time from OrderPlaced to the order's terminal event, by outcome",
            self.saga_duration.clone(),
        );
        registry.register(
            "saga_deadlines_skipped",
            "Orders whose saga deadline cannot be enforced (their history does not read back)",
            self.deadlines_skipped.clone(),
        );
    }

    /// The counter the deadline watcher increments for each order it has to skip.
    pub fn deadlines_skipped(&self) -> Counter {
        self.deadlines_skipped.clone()
    }

    /// Counts the orders whose terminal event `published` holds; called once the
    /// transaction that recorded them committed.
    pub fn observe_published(&self, published: &[Event]) {
        for event in published {
            let outcome = match event.payload {
                EventPayload::OrderCompleted(_) => "completed",
                EventPayload::OrderCancelled(_) => "cancelled",
                _ => continue,
            };
            let labels = OutcomeLabels { outcome };
            self.finished.get_or_create(&labels).inc();
            // Order ids are UUIDv7, minted when the order was placed: their timestamp is
            // when the saga started.
            if let Some(placed) = event.metadata.order_id.and_then(|id| id.get_timestamp()) {
                let (seconds, nanos) = placed.to_unix();
                let placed_ms = seconds as i64 * 1000 + i64::from(nanos / 1_000_000);
                let saga_ms = event.metadata.occurred_at.timestamp_millis() - placed_ms;
                self.saga_duration
                    .get_or_create(&labels)
                    .observe((saga_ms.max(0) as f64) / 1000.0);
            }
        }
    }
}

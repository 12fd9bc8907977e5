//! order-service's own metrics: finished orders by outcome and how long their sagas took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `completed` or `cancelled`.
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct OrderMetrics {
    finished: Family<OutcomeLabels, Counter>,
    saga_duration: Family<OutcomeLabels, Histogram>,
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
    }

    /// Counted when the terminal event is recorded. A transaction that then rolls back
    /// (rare: it is retried) counts once too often; the events table stays exact.
    pub fn finished(&self, outcome: &'static str, saga_seconds: f64) {
        let labels = OutcomeLabels { outcome };
        self.finished.get_or_create(&labels).inc();
        self.saga_duration
            .get_or_create(&labels)
            .observe(saga_seconds.max(0.0));
    }
}

//! The metadata every event carries, and money, the one value type every context shares.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identity, causality and provenance of one event (`EventMetadata` in every schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    #[serde(with = "super::avro_uuid")]
    pub event_id: Uuid,
    pub event_type: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub occurred_at: DateTime<Utc>,
    #[serde(with = "super::avro_uuid::option")]
    pub order_id: Option<Uuid>,
    #[serde(with = "super::avro_uuid")]
    pub correlation_id: Uuid,
    #[serde(with = "super::avro_uuid::option")]
    pub causation_id: Option<Uuid>,
    pub producer: String,
    /// When the order's saga gives up; copied from cause to effect (deadline propagation).
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub saga_deadline: Option<DateTime<Utc>>,
}

impl EventMetadata {
    /// Metadata for the first event of an order's flow: the order id is the correlation id.
    pub fn first_of_order(event_type: &str, order_id: Uuid, producer: &str) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            occurred_at: now_millis(),
            order_id: Some(order_id),
            correlation_id: order_id,
            causation_id: None,
            producer: producer.to_owned(),
            saga_deadline: None,
        }
    }

    /// Metadata for an event caused by `cause`: same order and correlation, causation = cause.
    pub fn caused_by(cause: &EventMetadata, event_type: &str, producer: &str) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            occurred_at: now_millis(),
            order_id: cause.order_id,
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.event_id),
            producer: producer.to_owned(),
            saga_deadline: cause.saga_deadline,
        }
    }

    /// Metadata for a catalog event, which belongs to no order and starts its own flow.
    pub fn catalog(event_type: &str, producer: &str) -> Self {
        let event_id = Uuid::now_v7();
        Self {
            event_id,
            event_type: event_type.to_owned(),
            occurred_at: now_millis(),
            order_id: None,
            correlation_id: event_id,
            causation_id: None,
            producer: producer.to_owned(),
            saga_deadline: None,
        }
    }

    /// Whether the saga's deadline has passed at `now` (never, without a deadline).
    pub fn deadline_passed(&self, now: DateTime<Utc>) -> bool {
        self.saga_deadline.is_some_and(|deadline| now >= deadline)
    }
}

/// Avro keeps milliseconds; truncating here makes a decoded event equal the one encoded.
fn now_millis() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// The currencies orderflow accepts (ISO 4217); each has two decimal places.
pub const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "CHF"];

/// One of the [`CURRENCIES`]: a code that parsed can only be one orderflow accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(&'static str);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        CURRENCIES
            .into_iter()
            .find(|known| *known == code)
            .map(Currency)
            .ok_or(UnknownCurrency)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// A currency code that is not one of the [`CURRENCIES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency; use one of {}", CURRENCIES.join(", "))]
pub struct UnknownCurrency;

/// An amount in the currency's minor units. Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

impl Money {
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        Self {
            amount_minor,
            currency: currency.into(),
        }
    }
}

//! What the services say to each other: the event contracts of the order saga (the Avro
//! schemas in `schemas/` and their Rust types), the topics they travel on and who sends and
//! who receives each (`topology`). Nothing here knows how an event travels: this tree uses
//! nothing of the plumbing beside it.
//!
//! The `.avsc` files are the source of truth; [`CONTRACTS`] embeds them at compile time.

mod avro_uuid;
mod metadata;
mod payloads;
mod rules;
mod topic;
pub mod topology;

use apache_avro::types::Value;
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

pub use metadata::{CURRENCIES, Currency, EventMetadata, Money, UnknownCurrency};
pub use payloads::*;
pub use topic::Topic;

/// Namespace of every event record; subjects are `<topic>-orderflow.events.<EventType>`.
pub const NAMESPACE: &str = "orderflow.events";

/// One event type's contract: its name, the topic it travels on and its Avro schema.
#[derive(Debug)]
pub struct Contract {
    pub event_type: &'static str,
    pub topic: Topic,
    pub schema_json: &'static str,
}

impl Contract {
    pub fn full_name(&self) -> String {
        format!("{NAMESPACE}.{}", self.event_type)
    }

    pub fn by_event_type(event_type: &str) -> Option<&'static Contract> {
        CONTRACTS.iter().find(|c| c.event_type == event_type)
    }

    pub fn by_full_name(full_name: &str) -> Option<&'static Contract> {
        let event_type = full_name.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
        Self::by_event_type(event_type)
    }
}

/// The topics `event_types` travel on, each once, in [`Topic`] order: what a consumer of
/// those types subscribes to.
pub fn topics_of(event_types: &[&str]) -> Result<Vec<Topic>, ContractError> {
    let mut topics = Vec::new();
    for event_type in event_types {
        let contract = Contract::by_event_type(event_type)
            .ok_or_else(|| ContractError::UnknownEventType((*event_type).to_owned()))?;
        topics.push(contract.topic);
    }
    topics.sort();
    topics.dedup();
    Ok(topics)
}

macro_rules! event_contracts {
    ($($name:ident => $topic:ident),+ $(,)?) => {
        /// Every contract, in the order the schemas are registered.
        pub static CONTRACTS: &[Contract] = &[$(Contract {
            event_type: stringify!($name),
            topic: Topic::$topic,
            schema_json: include_str!(concat!("../../schemas/", stringify!($name), ".avsc")),
        }),+];

        /// The payload of any orderflow event.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum EventPayload { $($name($name)),+ }

        impl EventPayload {
            pub fn event_type(&self) -> &'static str {
                match self { $(Self::$name(_) => stringify!($name)),+ }
            }

            pub fn topic(&self) -> Topic {
                match self { $(Self::$name(_) => Topic::$topic),+ }
            }

            /// The payload as JSON (the Avro field names), for people to read.
            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(Self::$name(p) => serde_json::to_value(p).expect("plain data always serializes")),+
                }
            }

            fn to_avro(&self) -> Result<Value, apache_avro::Error> {
                match self { $(Self::$name(p) => apache_avro::to_value(p)),+ }
            }

            fn from_avro(event_type: &str, value: &Value) -> Result<Option<Self>, apache_avro::Error> {
                Ok(Some(match event_type {
                    $(stringify!($name) => Self::$name(apache_avro::from_value(value)?),)+
                    _ => return Ok(None),
                }))
            }
        }

        $(impl From<$name> for EventPayload {
            fn from(payload: $name) -> Self { Self::$name(payload) }
        })+
    };
}

event_contracts! {
    OrderPlaced => Orders,
    OrderCancellationRequested => Orders,
    OrderCompleted => Orders,
    OrderCancelled => Orders,
    PaymentAuthorized => Payments,
    PaymentDeclined => Payments,
    PaymentRefunded => Payments,
    StockReserved => Inventory,
    StockRejected => Inventory,
    StockReleased => Inventory,
    ShipmentScheduled => Shipments,
    ShipmentFailed => Shipments,
    ProductUpserted => Catalog,
    DeadLetterRedriveRequested => Operations,
}

/// An event: metadata plus payload. In Avro, `metadata` is the first field of the record and
/// the payload's fields follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub metadata: EventMetadata,
    pub payload: EventPayload,
}

/// Why a decoded Avro value is not a valid event.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("unknown event type {0}")]
    UnknownEventType(String),
    #[error("record does not match the {event_type} contract: {source}")]
    Mismatch {
        event_type: String,
        #[source]
        source: apache_avro::Error,
    },
    #[error("value is not an Avro record")]
    NotARecord,
    #[error("record has no metadata field")]
    MissingMetadata,
    #[error("{0} must carry metadata.order_id")]
    MissingOrderId(&'static str),
    #[error("metadata.event_type is {found} but the record is {expected}")]
    EventTypeMismatch { expected: String, found: String },
    #[error("{event_type} cannot be true: {reason}")]
    Impossible {
        event_type: &'static str,
        reason: String,
    },
}

impl Event {
    /// The first event of an order's saga (correlation id = order id, no causation).
    pub fn first_of_order(
        order_id: Uuid,
        producer: &str,
        payload: impl Into<EventPayload>,
    ) -> Self {
        let payload = payload.into();
        let metadata = EventMetadata::first_of_order(payload.event_type(), order_id, producer);
        Self { metadata, payload }
    }

    /// An event caused by `cause`: it inherits the order and correlation id.
    pub fn caused_by(
        cause: &EventMetadata,
        producer: &str,
        payload: impl Into<EventPayload>,
    ) -> Self {
        let payload = payload.into();
        let metadata = EventMetadata::caused_by(cause, payload.event_type(), producer);
        Self { metadata, payload }
    }

    /// Sets the saga deadline (on an order's first event; effects inherit it).
    pub fn with_saga_deadline(mut self, deadline: DateTime<Utc>) -> Self {
        self.metadata.saga_deadline = Some(deadline.trunc_subsecs(3));
        self
    }

    /// A catalog event (no order).
    pub fn catalog(producer: &str, payload: ProductUpserted) -> Self {
        let metadata = EventMetadata::catalog("ProductUpserted", producer);
        Self {
            metadata,
            payload: payload.into(),
        }
    }

    /// The event as JSON, its metadata beside its payload, for people to read.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "metadata": serde_json::to_value(&self.metadata).expect("plain data always serializes"),
            "payload": self.payload.to_json(),
        })
    }

    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }

    pub fn topic(&self) -> Topic {
        self.payload.topic()
    }

    /// The Kafka record key: the order id, so one order's events share a partition and stay
    /// ordered; catalog events are keyed by product id.
    pub fn key(&self) -> String {
        match (&self.payload, self.metadata.order_id) {
            (EventPayload::ProductUpserted(p), _) => p.product_id.clone(),
            (_, Some(order_id)) => order_id.to_string(),
            // Constructors and `from_avro` guarantee order events carry an order id.
            (_, None) => self.metadata.event_id.to_string(),
        }
    }

    /// The Avro value of the whole record, ready to be resolved against its schema.
    pub fn to_avro(&self) -> Result<Value, apache_avro::Error> {
        let Value::Record(payload_fields) = self.payload.to_avro()? else {
            unreachable!("every payload is a struct, which serializes to a record")
        };
        let mut fields = Vec::with_capacity(payload_fields.len() + 1);
        fields.push((
            "metadata".to_owned(),
            apache_avro::to_value(&self.metadata)?,
        ));
        fields.extend(payload_fields);
        Ok(Value::Record(fields))
    }

    /// Builds an event from a record already resolved against this code's schema of `event_type`.
    pub fn from_avro(event_type: &str, value: &Value) -> Result<Self, ContractError> {
        let mismatch = |source| ContractError::Mismatch {
            event_type: event_type.to_owned(),
            source,
        };
        let Value::Record(fields) = value else {
            return Err(ContractError::NotARecord);
        };
        let metadata_value = fields
            .iter()
            .find_map(|(name, v)| (name == "metadata").then_some(v))
            .ok_or(ContractError::MissingMetadata)?;
        let metadata: EventMetadata = apache_avro::from_value(metadata_value).map_err(mismatch)?;
        let payload = EventPayload::from_avro(event_type, value)
            .map_err(mismatch)?
            .ok_or_else(|| ContractError::UnknownEventType(event_type.to_owned()))?;
        if metadata.event_type != payload.event_type() {
            return Err(ContractError::EventTypeMismatch {
                expected: payload.event_type().to_owned(),
                found: metadata.event_type,
            });
        }
        if payload.topic() != Topic::Catalog && metadata.order_id.is_none() {
            return Err(ContractError::MissingOrderId(payload.event_type()));
        }
        if let Some(reason) = payload.impossibility() {
            return Err(ContractError::Impossible {
                event_type: payload.event_type(),
                reason,
            });
        }
        Ok(Self { metadata, payload })
    }
}

#[cfg(test)]
mod tests;

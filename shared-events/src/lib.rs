//! Event contracts and the event plumbing every orderflow service stands on: Confluent
//! schema-registry serde, the transactional outbox and its relay, the idempotent consumer
//! runner with retries and dead-letter topics, trace-context propagation and metrics.

pub mod acl;
pub mod codec;
pub mod consumer;
pub mod contracts;
pub mod credentials;
pub mod database;
pub mod dead_letter;
mod error;
pub mod kafka;
pub mod key_position;
pub mod metrics;
pub mod migrations;
pub mod outbox;
pub mod redrive;
pub mod relay;
pub mod retention;
pub mod retry;
pub mod saga_state;
pub mod schema_resolution;
pub mod settings;
pub mod stopping;
pub mod tap;
pub mod topics;
pub mod topology;
pub mod trace_context;

pub use codec::{RegistryCodec, RegistryConfig};
pub use consumer::{
    ConsumerConfig, ConsumerSettings, EventHandler, HandlerError, IdempotentConsumer, Pace,
};
pub use contracts::{Event, EventMetadata, EventPayload, Money};
pub use error::{Error, ErrorClass, chain as error_chain, with_causes};
pub use kafka::{GroupProtocol, KafkaConfig};
pub use metrics::EventMetrics;
pub use outbox::{Outbox, OutboxRecord};
pub use relay::{OutboxRelay, RelayConfig};
pub use retention::{PruneTarget, RetentionConfig};
pub use retry::RetryConfig;
pub use tap::{EventTap, TappedRecord};
pub use topics::{Topic, TopicNames};

//! What the orderflow services say to each other, and how it travels.
//!
//! - [`contracts`]: the event contracts (Avro schemas and their Rust types, the rules an
//!   event must keep), the topics and the saga's topology. It stands on nothing else here.
//! - Everything else is the plumbing every service stands on: Confluent schema-registry
//!   serde, the transactional outbox and its relay, the idempotent consumer runner with
//!   retries and dead-letter topics, trace-context propagation and metrics. Its most used
//!   types are re-exported at the crate root.

pub mod contracts;

// --- The plumbing ----------------------------------------------------------------------------
// Kafka and the registry: clients, topics, credentials, the wire format.
pub mod acl;
pub mod codec;
pub mod credentials;
pub mod kafka;
pub mod key_position;
pub mod schema_guard;
mod schema_ids;
pub mod schema_resolution;
pub mod tap;
pub mod topic_reading;
pub mod topics;
// PostgreSQL: connections, migrations, the outbox and per-order saga state, pruning.
pub mod database;
pub mod migrations;
pub mod outbox;
pub mod retention;
pub mod saga_state;
// Moving events: the relay out of the outbox, the consumer runner in, what a failure does.
pub mod consumer;
pub mod dead_letter;
pub mod redrive;
pub mod relay;
pub mod retry;
// Around them: errors, metrics, settings, shutdown, tracing.
mod error;
pub mod metrics;
pub mod settings;
pub mod stopping;
pub mod trace_context;

pub use codec::{RegistryCodec, RegistryConfig};
pub use consumer::{
    ConsumerConfig, ConsumerSettings, EventHandler, HandlerError, IdempotentConsumer, Pace,
};
pub use error::{Error, ErrorClass, chain as error_chain, with_causes};
pub use kafka::{GroupProtocol, KafkaConfig};
pub use metrics::EventMetrics;
pub use outbox::{Outbox, OutboxRecord};
pub use relay::{OutboxRelay, RelayConfig};
pub use retention::{PruneTarget, RetentionConfig};
pub use retry::RetryConfig;
pub use tap::{EventTap, TappedRecord};
pub use topics::TopicNames;

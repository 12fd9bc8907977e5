//! The one error type of the event plumbing, and the classes dead letters are filed under.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Transparent: the inner error says what failed (its own Display already names the
    // database or Kafka), so a chain printed with its causes shows it once, not twice.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Kafka(KafkaError),
    #[error("creating topic {topic}: {code}")]
    TopicProvisioning {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("registering or finding the schema of subject {subject}: {reason}")]
    SchemaRegistration { subject: String, reason: String },
    #[error("event contract: {0}")]
    InvalidContract(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("topic {0} has no partitions; provision the topics first")]
    TopicMissing(String),
}

/// Why a record went to a dead-letter topic; the `dlq.error.class` header carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Not magic byte 0 plus a schema id: garbage, or another serializer.
    NotWireFormat,
    /// The schema id is not in the registry.
    UnknownSchemaId,
    /// The bytes do not decode with the schema their id names.
    MalformedAvro,
    /// A schema that is not one of our contracts, or cannot be read as ours.
    WrongSchema,
    /// Decoded, but breaks a contract rule (e.g. an order event without an order id).
    InvalidEvent,
    /// The handler refused the event as invalid.
    HandlerRejected,
    /// Could pass on a retry; never dead-lettered for this reason alone.
    Transient,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::NotWireFormat => "not_wire_format",
            ErrorClass::UnknownSchemaId => "unknown_schema_id",
            ErrorClass::MalformedAvro => "malformed_avro",
            ErrorClass::WrongSchema => "wrong_schema",
            ErrorClass::InvalidEvent => "invalid_event",
            ErrorClass::HandlerRejected => "handler_rejected",
            ErrorClass::Transient => "transient",
        }
    }
}

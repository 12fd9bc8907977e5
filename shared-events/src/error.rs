//! The one error type of the event plumbing, and the classes dead letters are filed under.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use schema_registry_converter::error::SRCError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Transparent: the inner error says what failed (its own Display already names the
    // database or Kafka), so a chain printed with its causes shows it once, not twice.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("the database lacks migration {version} ({description})")]
    MigrationMissing { version: i64, description: String },
    #[error(transparent)]
    Kafka(KafkaError),
    #[error("creating topic {topic}: {code}")]
    TopicProvisioning {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("schema registry")]
    Registry(#[source] SRCError),
    #[error("registering or finding the schema of subject {subject}")]
    SchemaRegistration {
        subject: String,
        #[source]
        source: SRCError,
    },
    /// An event that does not fit its own contract's schema: a bug, never retried.
    #[error("event {event_type} does not fit its contract")]
    InvalidContract {
        event_type: &'static str,
        #[source]
        source: apache_avro::Error,
    },
    #[error(transparent)]
    Contract(#[from] crate::contracts::ContractError),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0} stopped before it finished")]
    Interrupted(&'static str, #[source] tokio::task::JoinError),
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

/// `error` and its causes, outermost first: the one walk of an error's chain.
pub fn chain<'a>(
    error: &'a (dyn std::error::Error + 'a),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'a)> {
    std::iter::successors(Some(error), |e| {
        e.source().map(|s| s as &(dyn std::error::Error + 'a))
    })
}

/// `error` and its causes, outermost first, joined by `: ` (as a reason in a log line or a
/// dead letter's header, where there is no chain to walk).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    chain(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

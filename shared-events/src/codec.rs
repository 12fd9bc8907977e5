//! Confluent wire-format serde through the schema registry: magic byte 0, a 4-byte big-endian
//! schema id, then the Avro binary datum.
//!
//! Producers write with this build's schema (registered on start-up, or looked up as the
//! subject's latest version when registration is left to a CI job). Consumers decode with the
//! writer's schema fetched by id (cached), then resolve onto this build's schema, so old and
//! new producers can share a topic.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::contracts::{CONTRACTS, Contract, ContractError, Event};
use crate::error::{Error, ErrorClass};
use crate::schema_guard::MAX_RECORD_BYTES;
pub use crate::schema_ids::REMEMBERED_IDS;
use crate::schema_ids::SchemaIds;
use crate::schema_resolution::resolve_onto_reader;
use crate::topics::TopicNames;

/// Where the registry is and whether this service registers its own schemas.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible schema registry.
    #[arg(
        id = "schema_registry_url",
        long = "schema-registry-url",
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub url: String,
    /// Register this build's schemas on start-up. Turn off where a CI job registers them;
    /// producers then write with each subject's latest registered version.
    #[arg(
        long = "schema-registry-auto-register",
        env = "SCHEMA_REGISTRY_AUTO_REGISTER",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub auto_register: bool,
    /// Basic-auth user for the registry (Confluent Cloud: the registry API key).
    #[arg(long = "schema-registry-username", env = "SCHEMA_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Its password (Confluent Cloud: the API secret); from a Secret.
    #[arg(
        long = "schema-registry-password",
        env = "SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    pub password: Option<crate::credentials::Secret>,
}

impl RegistryConfig {
    /// The registry at `url`, without credentials.
    pub fn at(url: impl Into<String>, auto_register: bool) -> Self {
        Self {
            url: url.into(),
            auto_register,
            username: None,
            password: None,
        }
    }
}

/// The subject of a contract on a topic (TopicRecordNameStrategy): `<topic>-<record full name>`.
pub fn subject_name(names: &TopicNames, contract: &Contract) -> String {
    format!("{}-{}", names.name(contract.topic), contract.full_name())
}

/// Encodes and decodes [`Event`]s in the Confluent wire format. Cheap to clone.
#[derive(Clone)]
pub struct RegistryCodec {
    inner: Arc<CodecInner>,
}

struct CodecInner {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    contracts: HashMap<&'static str, ContractCodec>,
    /// Which contract each schema id is registered for, and whether its schema is safe.
    schema_ids: SchemaIds,
}

/// The most the Avro decoder may allocate for one string, bytes value or collection
/// (apache-avro's process-wide `max_allocation_bytes`, 512 MiB by default). Our largest
/// event is a few KB; a forged block count (`array<null>` claiming 9 million items in a
/// 15-byte record) would otherwise reserve hundreds of MB before failing.
pub const MAX_DECODE_ALLOCATION_BYTES: usize = 4 * 1024 * 1024;

/// How long the registry's "schema not found" for an id is believed.
pub const UNKNOWN_ID_RECHECK: Duration = Duration::from_secs(5);

/// Confluent's error code for a schema id the registry does not know.
pub(crate) const SCHEMA_NOT_FOUND: u32 = 40403;

/// Everything encoding and decoding one event type needs, resolved once in `connect`.
struct ContractCodec {
    strategy: SubjectNameStrategy,
    /// This build's schema: decoded values are resolved onto it.
    reader: Schema,
    /// The registered schema records are written with: ours when we registered it, else the
    /// subject's latest.
    writer: Arc<AvroSchema>,
}

/// Why a record could not be decoded into an event. Only [`DecodeError::RegistryUnavailable`]
/// may succeed on a retry; every other variant is a poison record for the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not in the Confluent wire format: {0}")]
    NotWireFormat(String),
    #[error("schema id {id} is not in the registry: {reason}")]
    UnknownSchemaId { id: u32, reason: String },
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    #[error("bytes do not decode with writer schema {id}: {reason}")]
    Malformed { id: u32, reason: String },
    #[error("schema {id} is not an orderflow event's (its record is {record})")]
    UnknownRecord { id: u32, record: String },
    #[error(
        "schema {id} is registered under no orderflow contract's subject{}, only under {subjects:?}",
        .topic.as_ref().map(|t| format!(" on {t}")).unwrap_or_default()
    )]
    NotAContractSubject {
        id: u32,
        topic: Option<String>,
        subjects: Vec<String>,
    },
    #[error("schema {id} is not decoded: {reason}")]
    UnsafeSchema { id: u32, reason: String },
    #[error("a record of {len} bytes is over the {max} bytes any event takes")]
    Oversized { len: usize, max: usize },
    #[error("schema {id} is {event_type}'s, which does not travel on {topic}")]
    NotThisTopicsContract {
        id: u32,
        event_type: &'static str,
        topic: String,
    },
    #[error("cannot resolve onto this build's {event_type} schema: {reason}")]
    Incompatible { event_type: String, reason: String },
    #[error(transparent)]
    Contract(#[from] ContractError),
}

impl DecodeError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable(_))
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            DecodeError::NotWireFormat(_) => ErrorClass::NotWireFormat,
            DecodeError::UnknownSchemaId { .. } => ErrorClass::UnknownSchemaId,
            DecodeError::RegistryUnavailable(_) => ErrorClass::Transient,
            DecodeError::Malformed { .. } | DecodeError::Oversized { .. } => {
                ErrorClass::MalformedAvro
            }
            DecodeError::UnknownRecord { .. }
            | DecodeError::NotAContractSubject { .. }
            | DecodeError::UnsafeSchema { .. }
            | DecodeError::NotThisTopicsContract { .. }
            | DecodeError::Incompatible { .. } => ErrorClass::WrongSchema,
            DecodeError::Contract(_) => ErrorClass::InvalidEvent,
        }
    }
}

impl RegistryCodec {
    /// Connects to the registry and registers (or looks up) every contract's schema, so that
    /// encoding later never waits on the registry and a missing schema fails start-up.
    pub async fn connect(config: &RegistryConfig, names: &TopicNames) -> Result<Self, Error> {
        // Process-wide and set once; every codec asks for the same bound.
        apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION_BYTES);
        let settings = || {
            let mut builder = SrSettings::new_builder(config.url.clone());
            builder.set_timeout(std::time::Duration::from_secs(10));
            if let Some(username) = &config.username {
                builder.set_basic_authorization(
                    username,
                    config.password.as_ref().map(|p| p.expose()),
                );
            }
            builder.build().map_err(Error::Registry)
        };
        let encoder = AvroEncoder::new(settings()?);
        let mut contracts = HashMap::new();
        for contract in CONTRACTS {
            let reader = Schema::parse_str(contract.schema_json).map_err(|source| {
                Error::InvalidContract {
                    event_type: contract.event_type,
                    source,
                }
            })?;
            let topic = names.name(contract.topic);
            let strategy = if config.auto_register {
                let supplied = SuppliedSchema::new(
                    Some(contract.full_name()),
                    SchemaType::Avro,
                    contract.schema_json.to_owned(),
                );
                SubjectNameStrategy::TopicRecordNameStrategyWithSchema(topic, supplied)
            } else {
                SubjectNameStrategy::TopicRecordNameStrategy(topic, contract.full_name())
            };
            let subject = subject_name(names, contract);
            let writer = encoder
                .get_schema_and_id(&subject, strategy.clone())
                .await
                .map_err(|source| Error::SchemaRegistration { subject, source })?;
            contracts.insert(
                contract.event_type,
                ContractCodec {
                    strategy,
                    reader,
                    writer,
                },
            );
        }
        Ok(Self {
            inner: Arc::new(CodecInner {
                encoder,
                decoder: AvroDecoder::new(settings()?),
                contracts,
                schema_ids: SchemaIds::new(config, names)?,
            }),
        })
    }

    /// The event in the Confluent wire format, ready to be a Kafka record value.
    pub async fn encode(&self, event: &Event) -> Result<Vec<u8>, Error> {
        let contract = &self.inner.contracts[event.event_type()];
        let invalid = |source| Error::InvalidContract {
            event_type: event.event_type(),
            source,
        };
        // Resolving onto the writer schema types logical fields (uuid, timestamps) and fills
        // defaults of fields a newer registered version added.
        let value = resolve_onto_reader(event.to_avro().map_err(invalid)?, &contract.writer.parsed)
            .map_err(invalid)?;
        self.inner
            .encoder
            .encode_value(value, &contract.strategy)
            .await
            .map_err(Error::Registry)
    }

    /// Decodes a record value written by any compatible version of any contract (for tools
    /// that read several topics; consumers use [`RegistryCodec::decode_from`]).
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Event, DecodeError> {
        self.decode_checked(None, payload).await
    }

    /// Decodes a record value read from `topic`: only a schema of a contract that travels on
    /// that topic is decoded at all. Any other schema id (a forged record naming a schema
    /// someone registered, an event on the wrong topic) is refused before its bytes are read.
    pub async fn decode_from(
        &self,
        topic: &str,
        payload: Option<&[u8]>,
    ) -> Result<Event, DecodeError> {
        self.decode_checked(Some(topic), payload).await
    }

    async fn decode_checked(
        &self,
        topic: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<Event, DecodeError> {
        let bytes = payload.unwrap_or_default();
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(DecodeError::NotWireFormat(format!(
                "{} bytes, first byte {:?}; expected magic byte 0 and a 4-byte schema id",
                bytes.len(),
                bytes.first()
            )));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        // Which contract the id is registered for decides before anything of the schema is
        // read: a schema someone registered under another subject is never parsed, whatever
        // record name it borrows.
        let contract = self.inner.schema_ids.contract_of(id, topic).await?;
        // Fetched (and cached) apart from decoding, so that a registry outage (retry) is told
        // apart from bytes that do not decode (poison).
        let writer = match self.inner.decoder.get_schema(id).await {
            Ok(writer) => writer,
            Err(e) => return Err(self.classify_lookup_error(id, e)),
        };
        if let Some(reason) = self.inner.schema_ids.verdict(id, &writer.parsed) {
            return Err(DecodeError::UnsafeSchema { id, reason });
        }
        let record = writer
            .parsed
            .name()
            .map_or_else(|| "<unnamed>".to_owned(), |name| name.fullname(None));
        if record != contract.full_name() {
            return Err(DecodeError::UnknownRecord { id, record });
        }
        let decoded =
            self.inner
                .decoder
                .decode(Some(bytes))
                .await
                .map_err(|e| DecodeError::Malformed {
                    id,
                    reason: e.to_string(),
                })?;
        let reader = &self.inner.contracts[contract.event_type].reader;
        let value =
            resolve_onto_reader(decoded.value, reader).map_err(|e| DecodeError::Incompatible {
                event_type: contract.event_type.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Event::from_avro(contract.event_type, &value)?)
    }

    /// How many schema ids the codec remembers an answer for (at most [`REMEMBERED_IDS`]).
    pub fn remembered_ids(&self) -> usize {
        self.inner.schema_ids.len()
    }

    fn classify_lookup_error(&self, id: u32, error: SRCError) -> DecodeError {
        // The converter caches failures it deems final (any 4xx) for the life of the
        // process; ours is the only memory of a failed lookup, and it forgets.
        self.inner.decoder.remove_errors_from_cache();
        // Only the registry's own "schema not found" (40403) says the id was never issued:
        // that record cannot decode now. Anything else (connection refused, a 5xx, a 404
        // from a proxy while the registry restarts) may pass, so it is retried.
        let code = error
            .source()
            .and_then(|source| source.downcast_ref::<RawError>())
            .map(|raw| raw.error_code);
        if code == Some(SCHEMA_NOT_FOUND) {
            DecodeError::UnknownSchemaId {
                id,
                reason: error.to_string(),
            }
        } else {
            DecodeError::RegistryUnavailable(error.to_string())
        }
    }
}

//! Kafka client settings shared by the relay, the consumer runner and the tools.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};

use crate::credentials::KafkaSecurity;

/// How to reach Kafka, and the timeouts that bound failure detection.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated host:port.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Prefix of every topic name and consumer group id (isolates test runs, environments or
    /// tenants on a shared cluster).
    #[arg(
        long = "kafka-topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,
    /// Consumer-group session timeout; a dead consumer's partitions move after this long.
    #[arg(
        long = "kafka-session-timeout-ms",
        env = "KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u32,
    /// Longest gap between polls before the consumer is removed from its group.
    #[arg(
        long = "kafka-max-poll-interval-ms",
        env = "KAFKA_MAX_POLL_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub max_poll_interval_ms: u32,
    /// Longest a consumer's fetch waits at the broker for records. Kafka answers a waiting
    /// fetch as soon as records arrive, so this costs no latency: it only bounds how often an
    /// idle consumer asks again (a shorter wait is broker CPU spent on empty fetches).
    #[arg(
        long = "kafka-fetch-wait-max-ms",
        env = "KAFKA_FETCH_WAIT_MAX_MS",
        default_value_t = 500
    )]
    pub fetch_wait_max_ms: u32,
    /// The consumer-group protocol: `classic` (client-side cooperative-sticky assignment,
    /// the session timeout above) or `consumer` (KIP-848: the broker assigns, and its
    /// `group.consumer.session.timeout.ms` replaces the client's session timeout).
    #[arg(
        long = "kafka-group-protocol",
        env = "KAFKA_GROUP_PROTOCOL",
        value_enum,
        default_value_t = GroupProtocol::Classic
    )]
    pub group_protocol: GroupProtocol,
    /// How long the producer waits to fill a batch before sending it.
    #[arg(long = "kafka-linger-ms", env = "KAFKA_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u32,
    /// How long the producer retries one record before reporting it failed.
    #[arg(
        long = "kafka-message-timeout-ms",
        env = "KAFKA_MESSAGE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub message_timeout_ms: u32,
    /// librdkafka debug contexts (e.g. `cgrp,consumer`), logged at debug level.
    #[arg(long = "kafka-debug", env = "KAFKA_DEBUG")]
    pub debug: Option<String>,
    #[command(flatten)]
    pub security: KafkaSecurity,
    /// The consumer group the plain readers ([`KafkaConfig::reader`]) name. They never join
    /// it nor commit, but librdkafka looks its coordinator up, which a broker with ACLs
    /// allows only on a group the user has rights to: a service sets its own group here.
    #[arg(skip = READER_GROUP.to_owned())]
    pub reader_group: String,
}

/// [`KafkaConfig::reader_group`] of the tools, whose user may use any group.
const READER_GROUP: &str = "orderflow-reader";

impl KafkaConfig {
    /// The dev and test profile: short session and poll timeouts, so that a killed
    /// consumer's partitions move within seconds.
    pub fn local(bootstrap_servers: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic_prefix: String::new(),
            session_timeout_ms: 6_000,
            max_poll_interval_ms: 10_000,
            fetch_wait_max_ms: 500,
            group_protocol: GroupProtocol::Classic,
            linger_ms: 5,
            message_timeout_ms: 30_000,
            debug: None,
            security: KafkaSecurity::default(),
            reader_group: READER_GROUP.to_owned(),
        }
    }

    pub fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        self.security.apply(&mut config);
        if let Some(debug) = &self.debug {
            config.set("debug", debug);
        }
        config
    }

    /// An idempotent producer: acks from all in-sync replicas, broker-side dedup of retries,
    /// and per-partition order kept across retries. Sized for a relay that keeps thousands
    /// of records in flight.
    pub fn idempotent_producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "100000")
            .set("compression.type", "lz4")
            // Named, not left to the default: `key_position` computes where a key's
            // records go from it (crc32 of the key).
            .set("partitioner", "consistent_random")
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        config
    }

    /// A producer of single records whose sender waits for each acknowledgement (dead
    /// letters): acks from all in-sync replicas, one request in flight so that a retry keeps
    /// order. Not idempotent: an idempotent producer's first send waits about half a second
    /// for its producer id, and a consumer waits on its first dead letter before the next
    /// batch. A duplicate a retry may leave is harmless: a redrive applies by event id.
    pub fn acknowledged_producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "false")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "0")
            .set("partitioner", "consistent_random")
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        config
    }

    /// A consumer for readers that assign partitions themselves and commit nothing: an
    /// assigning consumer never joins its group ([`KafkaConfig::reader_group`]).
    pub fn reader(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", &self.reader_group)
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        config
    }

    /// A consumer that stores offsets only when the application says a record is done
    /// (at-least-once), and commits the stored offsets in the background. Its group uses the
    /// cooperative-sticky assignor: a member joining or leaving moves only the partitions
    /// that must move, and the others keep being consumed through the rebalance (the eager
    /// assignors stop every member), and a rejoin that finds no change hands back a
    /// complete assignment instead of the previous one.
    ///
    /// With the `consumer` protocol (KIP-848) the broker computes assignments and owns the
    /// session and heartbeat timing, so those settings are left to it (librdkafka refuses
    /// them); rebalances are incremental there too.
    pub fn at_least_once_consumer(&self, group_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval_ms.to_string(),
            )
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        match self.group_protocol {
            GroupProtocol::Classic => config
                .set("group.protocol", "classic")
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("session.timeout.ms", self.session_timeout_ms.to_string())
                .set(
                    "heartbeat.interval.ms",
                    (self.session_timeout_ms / 3).to_string(),
                ),
            GroupProtocol::Consumer => config.set("group.protocol", "consumer"),
        };
        config
    }
}

/// Which consumer-group protocol the consumers speak (see [`KafkaConfig::group_protocol`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    Classic,
    Consumer,
}

/// The partition ids of `topic`, as the broker reports them now.
pub(crate) fn partition_ids<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, crate::error::Error> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(crate::error::Error::Kafka)?;
    Ok(metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

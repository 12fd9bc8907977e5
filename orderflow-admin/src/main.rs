//! `orderflow-admin`: the operator's tool for the event topology.

mod asyncapi;
mod demo;
mod kafka_acls;
mod load;
mod scratch;
mod urls;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::contracts::Topic;
use shared_events::dead_letter::read_dead_letters;
use shared_events::redrive::redrive_dead_letters;
use shared_events::topics::{DLQ_SUFFIX, provision_topics};
use shared_events::{KafkaConfig, RegistryCodec, RegistryConfig, TopicNames};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create every saga topic and its `.dlq` twin; existing topics are left alone.
    ProvisionTopics {
        #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
        partitions: i32,
        #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 1)]
        replication: i32,
    },
    /// Register every event schema under its TopicRecordNameStrategy subject.
    RegisterSchemas {
        #[command(flatten)]
        registry: RegistryConfig,
    },
    /// Publish one event through the registry serde and read it back from Kafka: proves the
    /// broker, the registry and the wire format work together. Uses `smoke-check-` topics
    /// (created if missing), which no service reads.
    SmokeCheck {
        #[command(flatten)]
        registry: RegistryConfig,
    },
    /// Seed demo products and customers, place one order per saga outcome through the
    /// services' REST APIs, and print each order's timeline.
    Demo {
        #[command(flatten)]
        urls: urls::ServiceUrls,
    },
    /// Place orders over REST at a fixed concurrency (closed loop) or rate (open loop) and
    /// report orders/s to a terminal state, latency percentiles and outcomes.
    Load(load::LoadArgs),
    /// Print the AsyncAPI 3.0 document of the topics (docs/asyncapi.json is its output):
    /// channels with their dead-letter twins, each event's Avro schema, who sends and who
    /// receives it.
    Asyncapi,
    /// Print an access token from the dev token issuer (`dev-token-issuer`, started by
    /// `scripts/stack-up`), e.g. `orderflow-admin token --sub alice` for a customer,
    /// `orderflow-admin token --sub ops --role orderflow-admin` for an operator.
    Token {
        /// Whom the token is for: a customer id.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes: `orders` is a customer's.
        #[arg(long, default_value = "orders")]
        scope: String,
        /// A role to grant (repeatable): `orderflow-admin` makes the holder an operator.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
        #[command(flatten)]
        issuer: urls::DevIssuer,
    },
    /// Print each service's Kafka user and ACLs, generated from the topology: Strimzi
    /// `KafkaUser`s (deploy/overlays/prod/kafka-users.yaml is this output) or `kafka-acls`
    /// commands. Topics are named with KAFKA_TOPIC_PREFIX.
    KafkaAcls {
        #[arg(long, value_enum, default_value = "strimzi")]
        format: kafka_acls::Format,
        /// The Strimzi `Kafka` cluster the users belong to.
        #[arg(long, default_value = "orderflow")]
        cluster: String,
    },
    /// Delete the topics earlier test and benchmark runs left on the broker (their
    /// per-run prefixes only; scripts/test and scripts/bench run it before they start).
    DeleteScratchTopics,
    /// Dead letters of a topic: list them, or replay some to the original topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters of a topic with where they came from and why they failed.
    List {
        /// Topic whose dead letters to list, e.g. `payments` (reads `payments.dlq`).
        topic: String,
    },
    /// Send again the records dead letters stand for (after fixing the cause): each is read
    /// back from the topic itself, never copied from the dead letter.
    Replay {
        /// Topic whose dead letters to replay, e.g. `payments`.
        topic: String,
        /// Dead letters to replay as PARTITION:OFFSET; all of them when omitted.
        #[arg(long = "record", value_parser = parse_partition_offset)]
        records: Vec<(i32, i64)>,
        /// Replay every dead letter of the topic.
        #[arg(long, conflicts_with = "records")]
        all: bool,
    },
}

fn parse_partition_offset(text: &str) -> Result<(i32, i64), String> {
    let (partition, offset) = text
        .split_once(':')
        .ok_or_else(|| format!("expected PARTITION:OFFSET, got {text}"))?;
    Ok((
        partition
            .parse()
            .map_err(|e| format!("partition {partition}: {e}"))?,
        offset
            .parse()
            .map_err(|e| format!("offset {offset}: {e}"))?,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings (a broker or registry that misbehaves) to stderr; RUST_LOG for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let names = TopicNames::new(cli.kafka.topic_prefix.clone());
    match cli.command {
        Command::ProvisionTopics {
            partitions,
            replication,
        } => {
            let admin: AdminClient<DefaultClientContext> = cli
                .kafka
                .base()
                .create()
                .context("creating the Kafka admin client")?;
            let created = provision_topics(&admin, &names, partitions, replication).await?;
            for topic in names.all_with_dead_letters() {
                let state = if created.contains(&topic) {
                    "created"
                } else {
                    "exists"
                };
                println!("{topic:<24} {state}");
            }
        }
        Command::RegisterSchemas { registry } => {
            let registry = RegistryConfig {
                auto_register: true,
                ..registry
            };
            RegistryCodec::connect(&registry, &names).await?;
            for contract in shared_events::contracts::CONTRACTS {
                println!("{}", shared_events::codec::subject_name(&names, contract));
            }
        }
        Command::Demo { urls } => demo::run(urls).await?,
        Command::KafkaAcls { format, cluster } => {
            print!("{}", kafka_acls::render(format, &names, &cluster))
        }
        Command::Asyncapi => {
            println!("{}", serde_json::to_string_pretty(&asyncapi::document())?);
        }
        Command::Token {
            sub,
            scope,
            roles,
            expires_in,
            issuer,
        } => println!("{}", issuer.token(&sub, &scope, &roles, expires_in).await?),
        Command::Load(args) => load::run(&cli.kafka, args).await?,
        Command::SmokeCheck { registry } => {
            // Topics of its own, so that no service ever consumes the made-up order.
            let names = TopicNames::new(format!("{}smoke-check-", cli.kafka.topic_prefix));
            let admin: AdminClient<DefaultClientContext> = cli.kafka.base().create()?;
            provision_topics(&admin, &names, 1, 1).await?;
            smoke_check(&cli.kafka, &registry, &names).await?
        }
        Command::DeleteScratchTopics => {
            let admin: AdminClient<DefaultClientContext> = cli
                .kafka
                .base()
                .create()
                .context("creating the Kafka admin client")?;
            let deleted = scratch::delete_scratch_topics(&admin).await?;
            println!("deleted {deleted} scratch topics of earlier test and benchmark runs");
        }
        Command::Dlq { command } => match command {
            DlqCommand::List { topic } => {
                let dlq = dead_letter_topic(&names, &topic)?;
                let letters = read_dead_letters(&cli.kafka, &dlq)?;
                println!("{} dead letter(s) in {dlq}", letters.len());
                for letter in letters {
                    println!(
                        "{}:{}  key={}  from={}:{}:{}  group={}  class={}  reason={}",
                        letter.partition,
                        letter.offset,
                        letter.key.as_deref().unwrap_or("-"),
                        letter.original_topic.as_deref().unwrap_or("?"),
                        letter.original_partition.as_deref().unwrap_or("?"),
                        letter.original_offset.as_deref().unwrap_or("?"),
                        letter.consumer_group.as_deref().unwrap_or("?"),
                        letter.error_class.as_deref().unwrap_or("?"),
                        letter.error_message.as_deref().unwrap_or("?"),
                    );
                }
            }
            DlqCommand::Replay {
                topic,
                records,
                all,
            } => {
                if records.is_empty() && !all {
                    bail!("name dead letters with --record PARTITION:OFFSET, or pass --all");
                }
                let dlq = dead_letter_topic(&names, &topic)?;
                let topic = dlq.trim_end_matches(DLQ_SUFFIX);
                let selected = (!all).then_some(records.as_slice());
                let redriven = redrive_dead_letters(&cli.kafka, topic, selected, None).await?;
                println!(
                    "sent {} record(s) of {topic} again for the dead letters of {dlq}",
                    redriven.sent
                );
                for refused in &redriven.refused {
                    println!(
                        "refused {}:{}: {}",
                        refused.partition, refused.offset, refused.why
                    );
                }
            }
        },
    }
    Ok(())
}

/// Accepts `payments` or `payments.dlq`; refuses names that are not saga topics.
fn dead_letter_topic(names: &TopicNames, topic: &str) -> anyhow::Result<String> {
    let base = topic.trim_end_matches(DLQ_SUFFIX);
    let parsed: Topic = names
        .parse(base)
        .or_else(|| names.parse(&names.name_for_base(base)))
        .with_context(|| format!("{topic} is not a saga topic"))?;
    Ok(names.dead_letter(parsed))
}

async fn smoke_check(
    kafka: &KafkaConfig,
    registry: &RegistryConfig,
    names: &TopicNames,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use shared_events::contracts::OrderCancellationRequested;
    use std::time::Duration;

    let codec = RegistryCodec::connect(registry, names).await?;
    let order_id = uuid::Uuid::now_v7();
    let event = shared_events::contracts::Event::first_of_order(
        order_id,
        "orderflow-admin",
        OrderCancellationRequested {
            reason: "smoke_check".into(),
        },
    );
    let bytes = codec.encode(&event).await?;
    let topic = names.name(event.topic());
    let producer: FutureProducer = kafka.idempotent_producer().create()?;
    let key = event.key();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key(&key).payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    println!(
        "published {} {} to {topic} partition {} offset {} ({} bytes, schema id {})",
        event.event_type(),
        event.metadata.event_id,
        delivery.partition,
        delivery.offset,
        bytes.len(),
        u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
    );
    let reader: BaseConsumer = kafka.reader().create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, delivery.partition, Offset::Offset(delivery.offset))?;
    reader.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let decoded = codec.decode(message.payload()).await?;
        anyhow::ensure!(decoded == event, "read back a different event: {decoded:?}");
        println!(
            "consumed and decoded it back through the registry: {:?}",
            decoded.payload
        );
        return Ok(());
    }
    bail!("the published record did not come back within 30 s")
}

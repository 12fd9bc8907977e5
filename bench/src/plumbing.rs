//! The event plumbing against baselines measured in the same run: the outbox relay against a
//! raw idempotent producer sending the same records (size, key, headers), and the consumer
//! runner against a raw consumer that decodes each record and stores its offset. Each timed
//! window starts warm: clients connected, group joined, first record in hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use shared_events::contracts::{Event, OrderCancellationRequested, Topic};
use shared_events::metrics::TopicLabels;
use shared_events::outbox::headers;
use shared_events::{
    ConsumerConfig, ConsumerSettings, EventHandler, EventMetrics, HandlerError, IdempotentConsumer,
    KafkaConfig, Outbox, OutboxRecord, OutboxRelay, Pace, RegistryCodec, RelayConfig, RetryConfig,
    TopicNames,
};
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::scratch::Scratch;

/// Events per second of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rates {
    /// The same records without headers: what the broker's per-header cost takes.
    pub raw_producer_bare: f64,
    pub raw_producer: f64,
    pub relay: f64,
    pub raw_consumer: f64,
    pub runner: f64,
}

impl Rates {
    /// The relay against the raw producer sending the same records.
    pub fn relay_ratio(&self) -> f64 {
        self.relay / self.raw_producer
    }

    /// The consumer runner against the raw consumer.
    pub fn runner_ratio(&self) -> f64 {
        self.runner / self.raw_consumer
    }
}

/// Longest any phase may take before the run is declared stuck.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// One run of every phase over `events` events, on topics of its own.
pub async fn run(
    scratch: &Scratch,
    pool: &PgPool,
    run: usize,
    events: usize,
) -> anyhow::Result<Rates> {
    let (kafka, names, codec) = scratch
        .topics(&format!("p{run}"), scratch.stack.partitions)
        .await?;
    let outbox = Outbox::new(codec.clone(), names.clone());
    let records = encode(&outbox, events).await?;
    eprintln!("    raw producer");
    let raw_producer_bare = raw_producer(&kafka, &names, &records, Headers::None).await?;
    let raw_producer = raw_producer(&kafka, &names, &records, Headers::AsTheRelay).await?;
    eprintln!("    relay");
    let relay = relay(pool, &outbox, &kafka, &names, &records).await?;
    eprintln!("    raw consumer");
    let raw_consumer = raw_consumer(&kafka, &names, &codec, events, run).await?;
    eprintln!("    runner");
    let runner = runner(pool, &kafka, &codec, &outbox, events, run).await?;
    let rate = |elapsed: Duration| events as f64 / elapsed.as_secs_f64();
    Ok(Rates {
        raw_producer_bare: rate(raw_producer_bare),
        raw_producer: rate(raw_producer),
        relay: rate(relay),
        raw_consumer: rate(raw_consumer),
        runner: rate(runner),
    })
}

/// The table the runner's handler writes one row per event to.
pub const EFFECTS_TABLE: &str = "CREATE TABLE bench_effects (event_id uuid PRIMARY KEY)";

/// `events` events over 500 orders, encoded as the outbox would store them, with the trace
/// context of a span (services always have one).
async fn encode(outbox: &Outbox, events: usize) -> anyhow::Result<Vec<OutboxRecord>> {
    let orders: Vec<Uuid> = (0..500).map(|_| Uuid::now_v7()).collect();
    let mut records = Vec::with_capacity(events);
    for i in 0..events {
        let event = Event::first_of_order(
            orders[i % orders.len()],
            "orderflow-bench",
            OrderCancellationRequested {
                reason: format!("benchmark step {:06}", i / orders.len()),
            },
        );
        let span = tracing::info_span!("bench_append");
        records.push(outbox.record(&event).instrument(span).await?);
    }
    Ok(records)
}

/// Which headers the raw producer sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Headers {
    None,
    /// `event_type` and `traceparent`, as the relay does.
    AsTheRelay,
}

fn kafka_record<'a>(
    topic: &'a str,
    record: &'a OutboxRecord,
    headers: Headers,
) -> FutureRecord<'a, str, [u8]> {
    let kafka_record = FutureRecord::to(topic)
        .key(record.key.as_str())
        .payload(record.payload.as_slice());
    if headers == Headers::None {
        return kafka_record;
    }
    let mut record_headers = OwnedHeaders::new_with_capacity(2).insert(Header {
        key: headers::EVENT_TYPE,
        value: Some(record.event_type),
    });
    if let Some(traceparent) = &record.traceparent {
        record_headers = record_headers.insert(Header {
            key: headers::TRACEPARENT,
            value: Some(traceparent),
        });
    }
    kafka_record.headers(record_headers)
}

/// The ceiling: the same records, already encoded, straight to Kafka with the relay's
/// producer settings.
async fn raw_producer(
    kafka: &KafkaConfig,
    names: &TopicNames,
    records: &[OutboxRecord],
    headers: Headers,
) -> anyhow::Result<Duration> {
    let producer: FutureProducer = kafka.idempotent_producer().create()?;
    let topic = names.name(Topic::Shipments);
    producer
        .send(
            kafka_record(&topic, &records[0], headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("warming up the raw producer")?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        loop {
            match producer.send_result(kafka_record(&topic, record, headers)) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    Ok(started.elapsed())
}

/// The relay, from the commit of every row (the relay already active and idle) to an empty
/// outbox: every record acknowledged and its row deleted.
async fn relay(
    pool: &PgPool,
    outbox: &Outbox,
    kafka: &KafkaConfig,
    names: &TopicNames,
    records: &[OutboxRecord],
) -> anyhow::Result<Duration> {
    let metrics = EventMetrics::unregistered();
    let relay = OutboxRelay::new(
        pool.clone(),
        outbox,
        kafka,
        RelayConfig::default(),
        RetryConfig::default(),
        metrics.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for("the relay to become active", || async {
        metrics.relay_active.get() == 1
    })
    .await?;
    let mut tx = pool.begin().await?;
    outbox.insert(&mut tx, records).await?;
    let labels = TopicLabels {
        topic: names.name(Topic::Orders),
    };
    outbox.commit(tx).await?;
    let started = Instant::now();
    wait_for("the relay to publish every row", || async {
        metrics.published.get_or_create(&labels).get() >= records.len() as u64
            && sqlx::query_scalar::<_, bool>("SELECT NOT EXISTS (SELECT 1 FROM outbox)")
                .fetch_one(pool)
                .await
                .unwrap_or(false)
    })
    .await?;
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await??;
    Ok(elapsed)
}

/// A plain consumer of the relay's records: decode each, store its offset (committed in the
/// background, as the runner's are), from the first record to the last.
async fn raw_consumer(
    kafka: &KafkaConfig,
    names: &TopicNames,
    codec: &RegistryCodec,
    events: usize,
    run: usize,
) -> anyhow::Result<Duration> {
    let consumer: StreamConsumer = kafka
        .at_least_once_consumer(&format!("{}raw-{run}", kafka.topic_prefix))
        .create()?;
    consumer.subscribe(&[names.name(Topic::Orders).as_str()])?;
    let read = async {
        let mut first = None;
        for _ in 0..events {
            let message = consumer.recv().await?;
            first.get_or_insert_with(Instant::now);
            codec.decode(rdkafka::Message::payload(&message)).await?;
            consumer.store_offset_from_message(&message)?;
        }
        consumer.commit_consumer_state(CommitMode::Sync)?;
        anyhow::Ok(first.map(|f| f.elapsed()).unwrap_or_default())
    };
    tokio::time::timeout(PHASE_LIMIT, read)
        .await
        .context("the raw consumer did not read every record")?
}

/// The runner with a handler that writes one row per event (set-based, as the services'),
/// from its first batch to the commit of the last.
async fn runner(
    pool: &PgPool,
    kafka: &KafkaConfig,
    codec: &RegistryCodec,
    outbox: &Outbox,
    events: usize,
    run: usize,
) -> anyhow::Result<Duration> {
    sqlx::query("TRUNCATE bench_effects").execute(pool).await?;
    let progress = Arc::new(Progress::default());
    let consumer = IdempotentConsumer::new(
        ConsumerSettings {
            kafka: kafka.clone(),
            group_id: format!("{}runner-{run}", kafka.topic_prefix),
            retry: RetryConfig::default(),
            batching: ConsumerConfig::default(),
            pace: Pace::Saga,
        },
        pool.clone(),
        codec.clone(),
        outbox.clone(),
        CountingHandler(progress.clone()),
        EventMetrics::unregistered(),
    )?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    wait_for("the runner to apply every record", || async {
        progress.done.load(Ordering::SeqCst) >= events
    })
    .await?;
    shutdown.cancel();
    task.await??;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_effects")
        .fetch_one(pool)
        .await?;
    if applied as usize != events {
        bail!("the runner applied {applied} events, not {events}");
    }
    let (first, last) = (
        progress.first.lock().unwrap(),
        progress.last.lock().unwrap(),
    );
    match (*first, *last) {
        (Some(first), Some(last)) => Ok(last - first),
        _ => bail!("the runner never applied a batch"),
    }
}

#[derive(Default)]
struct Progress {
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    in_transaction: AtomicUsize,
    done: AtomicUsize,
}

/// Writes one row per event, in one statement per batch. Nothing fails in a benchmark run,
/// so the events handled since the last commit are the ones that commit next (the row count
/// is checked at the end).
struct CountingHandler(Arc<Progress>);

impl EventHandler for CountingHandler {
    const EVENT_TYPES: &'static [&'static str] = &["OrderCancellationRequested"];

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        self.0
            .first
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let ids: Vec<Uuid> = events.iter().map(|e| e.metadata.event_id).collect();
        sqlx::query("INSERT INTO bench_effects (event_id) SELECT * FROM UNNEST($1::uuid[])")
            .bind(ids)
            .execute(tx)
            .await?;
        self.0
            .in_transaction
            .fetch_add(events.len(), Ordering::SeqCst);
        Ok(Vec::new())
    }

    fn committed(&self, _published: &[Event]) {
        *self.0.last.lock().unwrap() = Some(Instant::now());
        let committed = self.0.in_transaction.swap(0, Ordering::SeqCst);
        self.0.done.fetch_add(committed, Ordering::SeqCst);
    }
}

/// Polls `done` every few milliseconds until it holds, for at most [`PHASE_LIMIT`].
pub async fn wait_for<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PHASE_LIMIT;
    while !done().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

//! Harness for integration tests against the local stack (`scripts/stack-up`): each test gets
//! its own database and its own topic prefix, so tests run side by side on one broker.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::contracts::{Event, OrderCancellationRequested, OrderPlaced};
use shared_events::topics::provision_topics;
use shared_events::{
    ConsumerConfig, ConsumerSettings, EventHandler, EventMetrics, HandlerError, IdempotentConsumer,
    KafkaConfig, Outbox, OutboxRelay, Pace, RegistryCodec, RegistryConfig, RelayConfig,
    RetryConfig, TopicNames,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod broker;
pub mod database_proxy;

pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

fn postgres_server() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| shared_events::settings::LOCAL_POSTGRES.into())
}

pub struct TestStack {
    pub id: String,
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub names: TopicNames,
    pub registry: RegistryConfig,
    pub codec: RegistryCodec,
    /// The one outbox of this test's database: its commits wake the relay spawned here.
    pub outbox: Outbox,
    pub metrics: EventMetrics,
}

/// The effect the test handler writes: one row per applied event.
pub const EFFECTS_TABLE: &str = "CREATE TABLE test_effects (
    applied_seq BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL,
    order_id UUID NOT NULL,
    step TEXT NOT NULL
)";

/// Logs appear only when `TEST_LOG` is set (filter with `RUST_LOG`).
fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
}

/// A test's database and topics go with it, so that test runs do not pile them up on the
/// stack: each database costs autovacuum and statistics work while it exists (350 left
/// behind kept an idle PostgreSQL at 4.6% of a core, against 0.1% without them), and each
/// topic broker heap. A failed test keeps them to look at; `scripts/test` clears those.
impl Drop for TestStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kept the failed test's database it_{0} and topics it{0}-*",
                self.id
            );
            return;
        }
        let (server, database) = (postgres_server(), format!("it_{}", self.id));
        let (kafka, prefix) = (self.kafka.clone(), self.kafka.topic_prefix.clone());
        // Drop runs on the test's runtime, which cannot wait on a future: a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                shared_events::database::drop_database(&server, &database).await?;
                let admin: AdminClient<DefaultClientContext> = kafka.base().create()?;
                let metadata = admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(10))?;
                let topics: Vec<&str> = metadata
                    .topics()
                    .iter()
                    .map(|t| t.name())
                    .filter(|name| name.starts_with(&prefix))
                    .collect();
                admin
                    .delete_topics(&topics, &rdkafka::admin::AdminOptions::new())
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!(
                "could not clear test {}'s database or topics: {e:#}",
                self.id
            );
        }
    }
}

impl TestStack {
    pub async fn new(partitions: i32) -> Self {
        init_test_logging();
        let id = Uuid::new_v4().simple().to_string()[..10].to_owned();
        let database = format!("it_{id}");
        let url = shared_events::database::create_database(&postgres_server(), &database)
            .await
            .expect("PostgreSQL must run: start the stack with scripts/stack-up");
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .unwrap();
        shared_events::migrations::PLUMBING
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(EFFECTS_TABLE).execute(&pool).await.unwrap();

        let mut kafka = KafkaConfig::local(&kafka_bootstrap());
        kafka.topic_prefix = format!("it{id}-");
        kafka.debug = std::env::var("KAFKA_DEBUG").ok();
        let names = TopicNames::new(kafka.topic_prefix.clone());
        let admin_client: AdminClient<DefaultClientContext> = kafka.base().create().unwrap();
        provision_topics(&admin_client, &names, partitions, 1)
            .await
            .expect("Kafka must run: start the stack with scripts/stack-up");
        let registry = RegistryConfig::at(registry_url(), true);
        let codec = RegistryCodec::connect(&registry, &names)
            .await
            .expect("the schema registry must run: start the stack with scripts/stack-up");
        Self {
            id,
            pool,
            kafka,
            outbox: Outbox::new(codec.clone(), names.clone()),
            names,
            registry,
            codec,
            metrics: EventMetrics::unregistered(),
        }
    }

    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    pub fn fast_retry() -> RetryConfig {
        RetryConfig {
            initial_delay_ms: 50,
            max_delay_ms: 500,
            max_attempts: 3,
            cool_down_ms: 1_000,
        }
    }

    pub fn relay_config() -> RelayConfig {
        RelayConfig {
            batch_size: 200,
            poll_interval_ms: 200,
            ..RelayConfig::default()
        }
    }

    /// Starts an outbox relay on this test's database.
    pub fn spawn_relay(&self, shutdown: &CancellationToken) -> JoinHandle<()> {
        let relay = OutboxRelay::new(
            self.pool.clone(),
            &self.outbox,
            &self.kafka,
            Self::relay_config(),
            Self::fast_retry(),
            self.metrics.clone(),
        )
        .unwrap();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { relay.run(shutdown).await.unwrap() })
    }

    /// Starts the idempotent consumer runner with a plain [`RecordingHandler`] (which takes
    /// the `orders` topic's events).
    pub fn spawn_consumer(&self, group: &str, shutdown: &CancellationToken) -> JoinHandle<()> {
        self.spawn_consumer_with(group, RecordingHandler::default(), shutdown)
    }

    pub fn spawn_consumer_with<H: EventHandler>(
        &self,
        group: &str,
        handler: H,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        self.spawn_consumer_retrying(group, handler, Self::fast_retry(), shutdown)
    }

    pub fn spawn_consumer_retrying<H: EventHandler>(
        &self,
        group: &str,
        handler: H,
        retry: RetryConfig,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        self.spawn_consumer_on(self.pool.clone(), group, handler, retry, shutdown)
    }

    /// [`spawn_consumer_retrying`](Self::spawn_consumer_retrying) with the handler's
    /// transactions on `pool` (e.g. through a [`database_proxy::DatabaseProxy`]).
    pub fn spawn_consumer_on<H: EventHandler>(
        &self,
        pool: PgPool,
        group: &str,
        handler: H,
        retry: RetryConfig,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        self.spawn_consumer_batching(
            pool,
            group,
            handler,
            retry,
            ConsumerConfig::default(),
            shutdown,
        )
    }

    /// [`spawn_consumer_on`](Self::spawn_consumer_on) with batches made as `batching` says.
    pub fn spawn_consumer_batching<H: EventHandler>(
        &self,
        pool: PgPool,
        group: &str,
        handler: H,
        retry: RetryConfig,
        batching: ConsumerConfig,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        let consumer = IdempotentConsumer::new(
            ConsumerSettings {
                kafka: self.kafka.clone(),
                group_id: format!("{}{group}", self.kafka.topic_prefix),
                retry,
                batching,
                pace: Pace::Saga,
            },
            pool,
            self.codec.clone(),
            self.outbox.clone(),
            handler,
            self.metrics.clone(),
        )
        .unwrap();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { consumer.run(shutdown).await.unwrap() })
    }

    /// Appends `events` to the outbox in one committed transaction.
    pub async fn append_committed(&self, events: &[Event]) {
        let mut tx = self.pool.begin().await.unwrap();
        self.outbox.append(&mut tx, events).await.unwrap();
        self.outbox.commit(tx).await.unwrap();
    }

    /// Commits `events` to the outbox, starts a relay, and returns once they are on Kafka.
    pub async fn publish(&self, events: &[Event], shutdown: &CancellationToken) -> JoinHandle<()> {
        self.append_committed(events).await;
        let relay = self.spawn_relay(shutdown);
        eventually(Duration::from_secs(30), "the relay to publish", || async {
            (self.outbox_len().await == 0).then_some(())
        })
        .await;
        relay
    }

    pub async fn effects(&self) -> Vec<(Uuid, Uuid, String)> {
        sqlx::query_as("SELECT event_id, order_id, step FROM test_effects ORDER BY applied_seq")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    pub async fn outbox_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// A request to cancel `order_id`, the tests' event: its reason tells the
/// [`RecordingHandler`] what to do with it ("reject-me", "flaky-step") or labels it.
pub fn cancellation_request(order_id: Uuid, reason: &str) -> Event {
    Event::first_of_order(
        order_id,
        "integration-test",
        OrderCancellationRequested {
            reason: reason.to_owned(),
        },
    )
}

/// A test event of `order_id` whose step label says where it stands in its order's sequence.
pub fn step_event(order_id: Uuid, step: usize) -> Event {
    cancellation_request(order_id, &format!("step-{step:04}"))
}

/// `order_id`'s cancellation: an event of the tests' handler that ends no parking; with
/// the reason `reject-me`, one it rejects.
pub fn order_cancelled(order_id: Uuid, reason: &str) -> Event {
    Event::first_of_order(
        order_id,
        "integration-test",
        shared_events::contracts::OrderCancelled {
            reason: reason.into(),
        },
    )
}

/// `order_id`'s completion.
pub fn order_completed(order_id: Uuid) -> Event {
    Event::first_of_order(
        order_id,
        "integration-test",
        shared_events::contracts::OrderCompleted {
            total: shared_events::contracts::Money::new(2_500, "EUR"),
        },
    )
}

pub fn sample_order_placed(order_id: Uuid) -> Event {
    use shared_events::contracts::{Address, Money, OrderLine};
    Event::first_of_order(
        order_id,
        "integration-test",
        OrderPlaced {
            customer_id: "customer-1".into(),
            lines: vec![OrderLine {
                product_id: "sku-1".into(),
                quantity: 2,
                unit_price: Money::new(1_250, "EUR"),
            }],
            total: Money::new(2_500, "EUR"),
            shipping_address: Address {
                recipient: "Ada".into(),
                line1: "Main St 1".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
            customer_note: Some("leave at the door".into()),
        },
    )
}

/// Records every event it applies in `test_effects`, inside the runner's transaction, under
/// its step: a cancellation request's reason, an `OrderCancelled` of reason `reject-me` as
/// that, any other event's type. It refuses some steps:
/// - `reject-me`: rejected, always;
/// - `fix-me`: rejected until `fixed`;
/// - `flaky...`: a transient failure while `transient_failures` lasts.
#[derive(Clone, Default)]
pub struct RecordingHandler {
    pub transient_failures: Arc<AtomicUsize>,
    pub fixed: Arc<AtomicBool>,
}

impl RecordingHandler {
    pub fn failing_transiently(times: usize) -> Self {
        Self {
            transient_failures: Arc::new(AtomicUsize::new(times)),
            ..Self::default()
        }
    }
}

impl EventHandler for RecordingHandler {
    const EVENT_TYPES: &'static [&'static str] = &[
        "OrderPlaced",
        "OrderCancellationRequested",
        "OrderCompleted",
        "OrderCancelled",
    ];

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        for event in events {
            self.apply(event, tx).await?;
        }
        Ok(Vec::new())
    }
}

impl RecordingHandler {
    async fn apply(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let step = match &event.payload {
            shared_events::contracts::EventPayload::OrderCancellationRequested(p) => {
                p.reason.clone()
            }
            shared_events::contracts::EventPayload::OrderCancelled(p)
                if p.reason == "reject-me" =>
            {
                p.reason.clone()
            }
            other => other.event_type().to_owned(),
        };
        if step == "reject-me" || (step == "fix-me" && !self.fixed.load(Ordering::SeqCst)) {
            return Err(HandlerError::Rejected(
                "the test asked for a rejection".into(),
            ));
        }
        if step.starts_with("flaky")
            && self
                .transient_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(HandlerError::Transient(
                "the test asked for a transient failure".into(),
            ));
        }
        sqlx::query("INSERT INTO test_effects (event_id, order_id, step) VALUES ($1, $2, $3)")
            .bind(event.metadata.event_id)
            .bind(event.metadata.order_id)
            .bind(step)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Joins `group` (the full group id) as a member that consumes nothing: it pauses whatever it
/// is assigned while it keeps polling (so it stays a live member) until `stop`, and never
/// commits. The receiver hears once it holds a partition. Dropped at the end: it leaves the
/// group, and its partitions move.
pub fn idle_member(
    stack: &TestStack,
    group: &str,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let config = stack.kafka.at_least_once_consumer(group);
    let topic = stack.names.name(shared_events::contracts::Topic::Orders);
    let (assigned_tx, assigned) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let consumer: BaseConsumer = config.create().unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let mut told = false;
        while !stop.load(Ordering::SeqCst) {
            let _ignored = consumer.poll(Duration::from_millis(50));
            let assignment = consumer.assignment().unwrap();
            if assignment.count() > 0 {
                consumer.pause(&assignment).unwrap();
                if !told {
                    told = assigned_tx.send(()).is_ok();
                }
            }
        }
    });
    (thread, assigned)
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! order-service: the REST entry point of the order saga.
//!
//! An order's source of truth is its history in `order_events` (event sourcing);
//! `orders_view` is a projection for queries, rebuilt from the history by
//! `order-service rebuild-view`. The service publishes `OrderPlaced`,
//! `OrderCancellationRequested`, `OrderCompleted` and `OrderCancelled`, and records what
//! billing, inventory and shipping report.

pub mod console;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod operate;
pub mod orders;
pub mod store;

use std::time::Duration;

use service_runtime::admission::OverloadProbe;
use service_runtime::{Application, Maintenance, ServiceConfig, ServiceDefaults};
use shared_events::PruneTarget;
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub use error::Error;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "order-service",
    http_port: 8080,
    database: "orderflow_orders",
};

/// This service's own tables; the plumbing's come from `shared-events`.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Configuration from flags or environment variables; `--help` lists them.
#[derive(Debug, clap::Parser)]
#[command(
    name = "order-service",
    version,
    about = "REST entry point of the order saga: takes orders, keeps their event-sourced history and read model, publishes order events."
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceConfig,
    /// Seconds an order may stay in flight before it is cancelled and compensated: a
    /// business figure (how long a customer may be kept waiting), not a failure detector.
    /// Every participant, and shipping's refusal to ship late, counts from the same instant,
    /// so an outage of the broker or the database shorter than this cancels nothing; stuck
    /// orders are shown to operators after STUCK_AFTER_SECS instead.
    #[arg(
        long = "saga-deadline-secs",
        env = "SAGA_DEADLINE_SECS",
        default_value_t = 900
    )]
    pub saga_deadline_secs: u64,
    /// How often overdue orders are looked for, in milliseconds.
    #[arg(
        long = "deadline-poll-ms",
        env = "DEADLINE_POLL_MS",
        default_value_t = 500
    )]
    pub deadline_poll_ms: u64,
    /// How long an Idempotency-Key is remembered: a retry with the same key within it gets
    /// the first answer, after it places a new order.
    #[arg(
        long = "idempotency-key-retention-hours",
        env = "IDEMPOTENCY_KEY_RETENTION_HOURS",
        default_value_t = 168,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idempotency_key_retention_hours: u64,
    /// Sagas in flight past which new orders get 503 with Retry-After: under more load
    /// than the services can carry, the orders let in still finish in bounded time.
    #[arg(
        long = "overload-orders-in-flight",
        env = "OVERLOAD_ORDERS_IN_FLIGHT",
        default_value_t = 2_000
    )]
    pub overload_orders_in_flight: u32,
    /// Seconds an order in flight may go without an event before `GET /sagas/stuck` lists
    /// it: a few times the saga's normal p99.
    #[arg(
        long = "stuck-after-secs",
        env = "STUCK_AFTER_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub stuck_after_secs: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Rebuild `orders_view` from `order_events`, then exit.
    RebuildView,
    #[command(flatten)]
    Maintenance(Maintenance),
}

/// Runs the service until SIGINT/SIGTERM, or the subcommand given.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let maintenance = match &config.command {
        Some(Command::RebuildView) => {
            let rebuilt = rebuild_view(&config).await?;
            println!("rebuilt orders_view from order_events: {rebuilt} orders");
            return Ok(());
        }
        Some(Command::Maintenance(command)) => Some(command.clone()),
        None => None,
    };
    let service = config.service.clone();
    service_runtime::serve_or_maintain(DEFAULTS, service, maintenance, &MIGRATIONS, || {
        build(config)
    })
    .await
}

/// Builds the service: database, registry, relay, consumer, deadline watcher, HTTP API.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    if config.saga_deadline_secs == 0 || config.deadline_poll_ms == 0 {
        anyhow::bail!("SAGA_DEADLINE_SECS and DEADLINE_POLL_MS must be positive");
    }
    let app = Application::build(DEFAULTS, config.service, &MIGRATIONS).await?;
    let plumbing = app.plumbing().clone();
    let order_metrics = metrics::OrderMetrics::default();
    app.register_metrics(|registry| order_metrics.register(registry));
    let handler = handler::OrderHandler {
        metrics: order_metrics.clone(),
    };
    let watcher = deadline::DeadlineWatcher {
        pool: plumbing.pool.clone(),
        outbox: plumbing.outbox.clone(),
        poll_interval: Duration::from_millis(config.deadline_poll_ms),
        skipped: order_metrics.deadlines_skipped(),
    };
    let live = console::LiveOrders::new(console::FeedSource {
        pool: plumbing.pool.clone(),
        kafka: plumbing.config.kafka.clone(),
        names: plumbing.names.clone(),
        codec: plumbing.codec.clone(),
    });
    let stuck_metrics = operate::StuckMetrics::default();
    app.register_metrics(|registry| stuck_metrics.register(registry));
    let stuck_watch = operate::StuckWatch {
        pool: plumbing.pool.clone(),
        stuck_after: Duration::from_secs(config.stuck_after_secs),
        metrics: stuck_metrics,
    };
    let operate = operate::OperateState {
        pool: plumbing.pool.clone(),
        outbox: plumbing.outbox.clone(),
        codec: plumbing.codec.clone(),
        kafka: plumbing.config.kafka.clone(),
        names: plumbing.names.clone(),
        stuck_after: Duration::from_secs(config.stuck_after_secs),
        dead_letters: operate::DeadLetterScans::default(),
    };
    let api = http::ApiState {
        pool: plumbing.pool,
        outbox: plumbing.outbox,
        saga_timeout: Duration::from_secs(config.saga_deadline_secs),
    };
    Ok(app
        .with_consumer(handler)?
        .with_routes(http::routes(api))
        .with_routes(console::routes(live.clone()))
        .with_routes(operate::routes(operate))
        .with_openapi(api_doc())
        .with_task("saga deadline watcher", |token| watcher.run(token))
        .with_task("console live feed", |token| live.run(token))
        .with_task("stuck saga count", |token| stuck_watch.run(token))
        .with_overload_probe(OverloadProbe {
            name: "sagas in flight",
            count_up_to: store::count_in_flight_up_to,
            threshold: config.overload_orders_in_flight,
        })
        .with_pruning(PruneTarget {
            table: "idempotency_keys",
            retention: Duration::from_secs(config.idempotency_key_retention_hours * 3_600),
            delete_older: store::delete_idempotency_keys_older,
        }))
}

/// The OpenAPI document of the service's own routes.
fn api_doc() -> utoipa::openapi::OpenApi {
    let mut doc = http::ApiDoc::openapi();
    doc.merge(operate::ApiDoc::openapi());
    doc
}

/// `order-service rebuild-view`: replaces the projection with one folded from the history.
pub async fn rebuild_view(config: &Config) -> anyhow::Result<u64> {
    let pool = sqlx::PgPool::connect(&config.service.database_url(&DEFAULTS)).await?;
    shared_events::migrations::with_service_migrations(&MIGRATIONS)
        .run(&pool)
        .await?;
    let mut tx = pool.begin().await?;
    let rebuilt = store::rebuild_view(&mut tx).await?;
    tx.commit().await?;
    Ok(rebuilt)
}

//! Building and running a service: database (with migrations), registry codec, outbox relay,
//! and the HTTP server, all stopped by one cancellation token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use rdkafka::consumer::BaseConsumer;
use shared_events::{
    ConsumerSettings, EventHandler, EventMetrics, IdempotentConsumer, Outbox, OutboxRelay,
    RegistryCodec, TopicNames,
};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};

use crate::config::{ServiceConfig, ServiceDefaults};
use crate::health::{self, HealthState};

/// What a service's own code gets to build its routes and consumers from.
#[derive(Clone)]
pub struct Plumbing {
    pub pool: PgPool,
    pub codec: RegistryCodec,
    pub outbox: Outbox,
    pub names: TopicNames,
    pub metrics: EventMetrics,
    pub config: ServiceConfig,
}

/// Starts a task that runs until the token is cancelled.
type BackgroundTask =
    Box<dyn FnOnce(CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> + Send>;

/// A built service, bound to its port, ready to run.
pub struct Application {
    name: &'static str,
    registry: Arc<Mutex<Registry>>,
    listener: TcpListener,
    router: Router,
    plumbing: Plumbing,
    background: Vec<BackgroundTask>,
}

impl Application {
    /// Connects to the database (running `migrations` after the plumbing's), the registry and
    /// the broker, and binds the HTTP port (port 0 picks a free one, for tests).
    pub async fn build(
        defaults: ServiceDefaults,
        config: ServiceConfig,
        migrations: &Migrator,
    ) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping per checkout: a dead connection fails its statement, which the
            // consumer retries and an HTTP client sees as a 503, and the pool replaces it.
            .test_before_acquire(false)
            .connect(&config.database_url(&defaults))
            .await?;
        shared_events::migrations::with_service_migrations(migrations)
            .run(&pool)
            .await?;
        let names = TopicNames::new(config.kafka.topic_prefix.clone());
        let codec = RegistryCodec::connect(&config.registry, &names).await?;
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Borrowed(defaults.name),
            )]
            .into_iter(),
        );
        let metrics = EventMetrics::register(&mut registry);
        let kafka_probe: BaseConsumer = config.kafka.base().create()?;
        let registry = Arc::new(Mutex::new(registry));
        let health = health::router(HealthState {
            pool: pool.clone(),
            kafka_probe: Arc::new(kafka_probe),
            metrics: registry.clone(),
        });
        let listener = TcpListener::bind(config.http_addr(&defaults)).await?;
        let plumbing = Plumbing {
            outbox: Outbox::new(codec.clone(), names.clone()),
            pool,
            codec,
            names,
            metrics,
            config,
        };
        Ok(Self {
            name: defaults.name,
            registry,
            listener,
            router: health,
            plumbing,
            background: Vec::new(),
        })
    }

    pub fn plumbing(&self) -> &Plumbing {
        &self.plumbing
    }

    /// Registers the service's own metrics beside the plumbing's, under `orderflow_`.
    pub fn register_metrics(&self, register: impl FnOnce(&mut Registry)) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        register(registry.sub_registry_with_prefix("orderflow"));
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Adds the service's own routes beside the health routes.
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// Serves `doc`, completed with the health endpoints, at `/openapi.json`.
    pub fn with_openapi(mut self, mut doc: utoipa::openapi::OpenApi) -> Self {
        doc.merge(health::openapi());
        let doc = Arc::new(doc);
        self.router = self.router.route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        );
        self
    }

    /// Adds an idempotent consumer running `handler` (of the topics its event types travel
    /// on), in the consumer group named after the service.
    pub fn with_consumer<H: EventHandler>(self, handler: H) -> anyhow::Result<Self> {
        let plumbing = &self.plumbing;
        let consumer = IdempotentConsumer::new(
            ConsumerSettings {
                kafka: plumbing.config.kafka.clone(),
                group_id: self.name.to_owned(),
                retry: plumbing.config.retry.clone(),
                batching: plumbing.config.consumer.clone(),
            },
            plumbing.pool.clone(),
            plumbing.codec.clone(),
            plumbing.outbox.clone(),
            handler,
            plumbing.metrics.clone(),
        )?;
        Ok(self.with_task(|token| async move { Ok(consumer.run(token).await?) }))
    }

    /// Adds a task (e.g. an idempotent consumer) that runs until the token is cancelled.
    pub fn with_task<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.background
            .push(Box::new(move |token| tokio::spawn(task(token))));
        self
    }

    /// Serves HTTP and runs the relay and every task until `shutdown` is cancelled: the
    /// server stops taking requests and finishes in-flight ones, the consumers finish their
    /// record and commit, the relay finishes its batch and flushes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Plumbing {
            pool,
            outbox,
            metrics,
            config,
            ..
        } = self.plumbing;
        let relay = OutboxRelay::new(
            pool,
            &outbox,
            &config.kafka,
            config.relay.clone(),
            config.retry.clone(),
            metrics,
        )?;
        let mut tasks = JoinSet::new();
        {
            let token = shutdown.clone();
            tasks.spawn(async move { relay.run(token).await.map_err(anyhow::Error::from) });
        }
        for start in self.background {
            let handle = start(shutdown.clone());
            tasks.spawn(async move { handle.await? });
        }
        let router = self.router.layer((
            // INFO, so that a request's span (the root of an order's trace) passes the
            // default filter and reaches the exporter.
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)),
            DefaultBodyLimit::max(crate::json::BODY_LIMIT_BYTES),
            TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(10),
            ),
        ));
        let server_shutdown = shutdown.clone();
        tracing::info!(address = %self.listener.local_addr()?, "listening");
        let server = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await });
        let mut result = server.await.map_err(anyhow::Error::from);
        // The server only returns on shutdown or failure; either way everything stops.
        shutdown.cancel();
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                tracing::error!(error = %e, "task failed");
                result = result.and(Err(e));
            }
        }
        result
    }
}

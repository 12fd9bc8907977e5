//! Building and running a service: database (with migrations), registry codec, outbox relay,
//! and the HTTP server, all stopped by one cancellation token.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Extension, Json, Router};
use prometheus_client::registry::Registry;
use shared_events::contracts::topology::{self, ServiceTopology};
use shared_events::redrive::Redriver;
use shared_events::stopping::grace_over;
use shared_events::{
    ConsumerSettings, EventHandler, EventMetrics, IdempotentConsumer, Outbox, OutboxRelay, Pace,
    PruneTarget, RegistryCodec, TopicNames,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};

use crate::admission::{self, Admission, OverloadProbe};
use crate::allowed_hosts::AllowedHosts;
use crate::auth::{self, Authenticator};
use crate::config::{ServiceConfig, ServiceDefaults};
use crate::health::{self, BrokerWatch, HealthState};
use crate::startup::database_may_come_up;

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
type StartTask =
    Box<dyn FnOnce(CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> + Send>;

/// A task that must run as long as the service does, and its name for the logs.
struct BackgroundTask {
    name: &'static str,
    start: StartTask,
}

impl BackgroundTask {
    fn new<F, Fut>(name: &'static str, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            start: Box::new(move |token| tokio::spawn(task(token))),
        }
    }
}

/// How long a background task may take to stop after shutdown before it is dropped (see
/// `shared_events::stopping`): the relay's drain (10 s) and the consumers' close fit
/// inside, a task stuck on a database call that does not answer does not.
const TASK_GRACE: Duration = Duration::from_secs(12);

/// A built service, bound to its port, ready to run.
pub struct Application {
    name: &'static str,
    registry: Arc<Mutex<Registry>>,
    listener: TcpListener,
    /// `/metrics` on an address of its own, if one is configured.
    metrics_listener: Option<(TcpListener, Router)>,
    router: Router,
    plumbing: Plumbing,
    broker: BrokerWatch,
    admission: Admission,
    authenticator: Arc<Authenticator>,
    overload_probes: Vec<OverloadProbe>,
    background: Vec<BackgroundTask>,
    /// Tables pruned by age: the dedup record, and what the service adds.
    prune_targets: Vec<PruneTarget>,
}

impl Application {
    /// Connects to the database (running `migrations` after the plumbing's), the registry and
    /// the broker, and binds the HTTP port (port 0 picks a free one, for tests).
    pub async fn build(
        defaults: ServiceDefaults,
        config: ServiceConfig,
        migrations: &Migrator,
    ) -> anyhow::Result<Self> {
        let url = config.database_url(&defaults);
        // Migrations first, on a connection of their own: a long one must not meet the
        // statement timeout the service's own queries run under.
        let startup = config.startup;
        let mut migrating = startup
            .wait_for("the database", database_may_come_up, || {
                PgConnection::connect(&url)
            })
            .await?;
        let migrator = shared_events::migrations::with_service_migrations(migrations);
        if config.database_migrate_on_start {
            migrator.run(&mut migrating).await?;
        } else {
            shared_events::migrations::require_applied(&migrator, &mut migrating)
                .await
                .with_context(|| {
                    format!(
                        "run `{} migrate` with the migration role first (DATABASE_MIGRATE_ON_START=false)",
                        defaults.name
                    )
                })?;
        }
        migrating.close().await?;
        let options = PgConnectOptions::from_str(&url)?.options([
            (
                "statement_timeout",
                format!("{}ms", config.database_statement_timeout_ms),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", config.database_idle_in_transaction_timeout_ms),
            ),
        ]);
        let pool = shared_events::database::pool_options()
            .max_connections(config.database_max_connections)
            .connect_with(options)
            .await?;
        let names = TopicNames::new(config.kafka.topic_prefix.clone());
        // Its plain readers (dead letters, the console's tap) name its own group, the one
        // group its broker user may use.
        let mut config = config;
        config.kafka.reader_group = names.group_of(defaults.name);
        // The provisioning step registers the schemas; it may finish after this replica starts.
        let codec = startup
            .wait_for(
                "the schema subjects",
                |error| matches!(error, shared_events::Error::SchemaRegistration { .. }),
                || RegistryCodec::connect(&config.registry, &names),
            )
            .await?;
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Borrowed(defaults.name),
            )]
            .into_iter(),
        );
        let metrics = EventMetrics::register(&mut registry);
        let broker = BrokerWatch::register(config.kafka.base().create()?, &mut registry);
        let admission = Admission::new(&config.admission, &mut registry);
        let authenticator = Arc::new(Authenticator::new(&config.auth)?);
        let registry = Arc::new(Mutex::new(registry));
        let health_state = HealthState {
            pool: pool.clone(),
            broker: broker.clone(),
            metrics: registry.clone(),
        };
        let listener = TcpListener::bind(config.http_addr(&defaults)).await?;
        let (router, metrics_listener) = match config.metrics_addr {
            Some(address) => (
                health::router(health_state.clone()),
                Some((
                    TcpListener::bind(address).await?,
                    health::metrics_router(health_state),
                )),
            ),
            None => (
                health::router(health_state.clone()).merge(health::metrics_router(health_state)),
                None,
            ),
        };
        let plumbing_retention = config.retention.clone();
        let plumbing = Plumbing {
            outbox: Outbox::new(codec.clone(), names.clone()),
            pool,
            codec,
            names,
            metrics,
            config,
        };
        let app = Self {
            name: defaults.name,
            registry,
            listener,
            metrics_listener,
            router,
            plumbing,
            broker,
            admission,
            authenticator,
            overload_probes: Vec::new(),
            background: Vec::new(),
            prune_targets: vec![PruneTarget::processed_events(&plumbing_retention)],
        };
        // Every service of the saga carries out its share of operators' redrive requests.
        match topology::SERVICES.iter().find(|s| s.name == defaults.name) {
            Some(service) => app.with_redriver(service),
            None => Ok(app),
        }
    }

    /// Adds the consumer that redrives, on an operator's request, the dead letters of the
    /// topics `service` publishes to ([`shared_events::redrive`]), in a group of its own.
    fn with_redriver(self, service: &ServiceTopology) -> anyhow::Result<Self> {
        let redriver = Redriver::new(self.plumbing.config.kafka.clone(), service);
        let group_id = self.plumbing.names.redrive_group_of(self.name);
        // Operators' requests are rare and may wait seconds: polled seldom.
        let consumer = self.consumer(group_id, redriver, Pace::Seldom)?;
        Ok(self.with_task("redrive consumer", |token| async move {
            Ok(consumer.run(token).await?)
        }))
    }

    /// An idempotent consumer in `group_id` running `handler` on the plumbing.
    fn consumer<H: EventHandler>(
        &self,
        group_id: String,
        handler: H,
        pace: Pace,
    ) -> anyhow::Result<IdempotentConsumer<H>> {
        let plumbing = &self.plumbing;
        Ok(IdempotentConsumer::new(
            ConsumerSettings {
                kafka: plumbing.config.kafka.clone(),
                group_id,
                retry: plumbing.config.retry.clone(),
                batching: plumbing.config.consumer.clone(),
                pace,
            },
            plumbing.pool.clone(),
            plumbing.codec.clone(),
            plumbing.outbox.clone(),
            handler,
            plumbing.metrics.clone(),
        )?)
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

    /// Serves `doc`, completed with the health endpoints and what admission control may
    /// answer, at `/openapi.json`.
    pub fn with_openapi(mut self, mut doc: utoipa::openapi::OpenApi) -> Self {
        admission::document(&mut doc);
        auth::document(&mut doc);
        doc.merge(health::openapi());
        let doc = Arc::new(doc);
        self.router = self.router.route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        );
        self
    }

    /// Adds an idempotent consumer running `handler` (of the topics its event types travel
    /// on), in the consumer group named after the service, under the topic prefix: stacks
    /// sharing a cluster share no group, so one's stuck or departed members cannot hold up
    /// another's partitions.
    pub fn with_consumer<H: EventHandler>(self, handler: H) -> anyhow::Result<Self> {
        let consumer =
            self.consumer(self.plumbing.names.group_of(self.name), handler, Pace::Saga)?;
        Ok(self.with_task(
            "consumer",
            |token| async move { Ok(consumer.run(token).await?) },
        ))
    }

    /// Adds a task (e.g. an idempotent consumer) that runs until the token is cancelled. If
    /// it ends before that, with or without an error, the service stops and
    /// [`run_until_stopped`](Self::run_until_stopped) fails: a service missing a part must
    /// not look alive.
    pub fn with_task<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.background.push(BackgroundTask::new(name, task));
        self
    }

    /// Refuses new work (503) also while `probe`'s queue is past its threshold.
    pub fn with_overload_probe(mut self, probe: OverloadProbe) -> Self {
        self.overload_probes.push(probe);
        self
    }

    /// Prunes `target` by age beside the dedup record (e.g. idempotency keys).
    pub fn with_pruning(mut self, target: PruneTarget) -> Self {
        self.prune_targets.push(target);
        self
    }

    /// Serves HTTP and runs the relay and every task until `shutdown` is cancelled: the
    /// server stops taking requests and finishes in-flight ones, the consumers finish their
    /// batch and commit, the relay finishes its batch and flushes. If a task ends on its own
    /// before that, everything stops the same way and this returns that task's failure, so
    /// the process exits non-zero and its supervisor restarts it.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Plumbing {
            pool,
            outbox,
            metrics,
            config,
            ..
        } = self.plumbing;
        let relay = OutboxRelay::new(
            pool.clone(),
            &outbox,
            &config.kafka,
            config.relay.clone(),
            config.retry.clone(),
            metrics.clone(),
        )?;
        let (broker, admission) = (self.broker, self.admission.clone());
        let (overload_probes, prune_targets) = (self.overload_probes, self.prune_targets);
        let prune_interval = Duration::from_secs(config.retention.interval_secs);
        let pruning_pool = pool.clone();
        let background = [
            BackgroundTask::new("outbox relay", |token| async move {
                Ok(relay.run(token).await?)
            }),
            BackgroundTask::new("broker watch", |token| broker.run(token)),
            BackgroundTask::new("admission watch", move |token| {
                admission.watch(pool, metrics, config.admission, overload_probes, token)
            }),
            BackgroundTask::new("pruning", move |token| async move {
                let pruning = shared_events::retention::prune_until_stopped(
                    pruning_pool,
                    prune_targets,
                    prune_interval,
                    token,
                );
                Ok(pruning.await?)
            }),
        ];
        let mut tasks = JoinSet::new();
        for task in background.into_iter().chain(self.background) {
            let mut handle = (task.start)(shutdown.clone());
            let stopping = shutdown.clone();
            tasks.spawn(async move {
                let joined = tokio::select! {
                    joined = &mut handle => joined,
                    () = grace_over(&stopping, TASK_GRACE) => {
                        handle.abort();
                        tracing::warn!(task = task.name, grace = ?TASK_GRACE,
                            "did not stop within its grace after shutdown; dropped");
                        Ok(Ok(()))
                    }
                };
                (task.name, joined)
            });
        }
        let router = self
            .router
            .layer(axum::middleware::from_fn_with_state(
                self.admission,
                admission::admit,
            ))
            .layer(Extension(self.authenticator))
            .layer(axum::middleware::from_fn(crate::json::refuse_nul_in_url))
            .layer(axum::middleware::from_fn_with_state(
                AllowedHosts::new(&config.http.allowed_hosts),
                crate::allowed_hosts::refuse_unknown_hosts,
            ))
            .layer((
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
        tracing::info!(address = %self.listener.local_addr()?, "listening");
        let http = config.http.clone();
        let server = serve_api_and_metrics(
            (self.listener, router),
            self.metrics_listener,
            &http,
            shutdown.clone(),
        );
        tokio::pin!(server);
        let mut result = Ok(());
        let mut served = None;
        // Until the server returns: a task that ends first ends the service.
        while served.is_none() {
            tokio::select! {
                () = &mut server => served = Some(Ok::<_, anyhow::Error>(())),
                Some(Ok((name, joined))) = tasks.join_next() => {
                    let outcome = task_outcome(name, joined, shutdown.is_cancelled());
                    if outcome.is_err() && !shutdown.is_cancelled() {
                        tracing::error!("{name} stopped; stopping the service");
                        shutdown.cancel();
                    }
                    result = result.and(outcome);
                }
            }
        }
        // The server only returns on shutdown or failure; either way everything stops.
        shutdown.cancel();
        while let Some(joined) = tasks.join_next().await {
            // The wrapper only awaits the task's handle: it cannot fail on its own.
            if let Ok((name, joined)) = joined {
                result = result.and(task_outcome(name, joined, true));
            }
        }
        served
            .expect("the loop ends once the server returned")
            .and(result)
    }
}

/// Serves the API and, when `/metrics` has an address of its own, `/metrics` there, until
/// `shutdown`.
async fn serve_api_and_metrics(
    (listener, router): (TcpListener, Router),
    metrics: Option<(TcpListener, Router)>,
    http: &crate::server::HttpConfig,
    shutdown: CancellationToken,
) {
    let api = crate::server::serve(listener, router, http, shutdown.clone());
    match metrics {
        Some((listener, router)) => {
            tracing::info!(address = ?listener.local_addr(), "serving /metrics");
            let metrics = crate::server::serve(listener, router, http, shutdown);
            tokio::join!(api, metrics);
        }
        None => api.await,
    }
}

/// A background task's end as the service's result: an error if it failed, or if it
/// returned before the service was asked to stop.
fn task_outcome(
    name: &'static str,
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
    stopping: bool,
) -> anyhow::Result<()> {
    let outcome = joined
        .map_err(anyhow::Error::from)
        .and_then(|r| r)
        .map_err(|e| e.context(format!("{name} failed")));
    match outcome {
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "background task failed");
            Err(e)
        }
        Ok(()) if !stopping => Err(anyhow::anyhow!(
            "{name} ended although the service was not stopping"
        )),
        Ok(()) => Ok(()),
    }
}

//! Bootstrap shared by the four services: configuration, telemetry, shutdown on signals,
//! health/readiness/metrics endpoints, problem+json errors, and wiring of the event
//! plumbing (database, registry codec, outbox relay, consumers).

pub mod admission;
pub mod allowed_hosts;
mod app;
pub mod auth;
pub mod config;
pub mod health;
pub mod json;
pub mod maintenance;
pub mod path_id;
pub mod per_key_limit;
pub mod precondition;
pub mod problem;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod telemetry;

pub use app::{Application, Plumbing};
pub use auth::{Admin, Caller};
pub use config::{ServiceConfig, ServiceDefaults, TelemetryConfig};
pub use json::{ValidJson, ValidPath, ValidQuery};
pub use maintenance::Maintenance;
pub use path_id::PathId;
pub use precondition::IfMatch;
pub use problem::{ErrorChain, FieldErrors, Problem, error_chain_fmt};

use std::time::{Duration, Instant};

/// What a service binary does after parsing its config: start telemetry, build the
/// application (`build` is not polled before telemetry is up), run until SIGINT/SIGTERM.
pub async fn run(
    defaults: ServiceDefaults,
    telemetry: &TelemetryConfig,
    build: impl Future<Output = anyhow::Result<Application>>,
) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(defaults.name, telemetry)?;
    let shutdown = shutdown::on_signal();
    let application = build.await?;
    let signalled = shutdown.clone();
    let stopping_since = tokio::spawn(async move {
        signalled.cancelled().await;
        Instant::now()
    });
    let stopped = application.run_until_stopped(shutdown).await;
    // The token is cancelled by now, so the task has its instant or is about to.
    let stopping_since = stopping_since.await.unwrap_or_else(|_| Instant::now());
    // Last: no consumer close may still run inside librdkafka while the process exits; but
    // the wait ends with the exit budget, whatever the drain before it took.
    let left = (stopping_since + EXIT_BUDGET).saturating_duration_since(Instant::now());
    shared_events::consumer::finish_abandoned_closes(left).await;
    stopped
}

/// How long after SIGTERM the process exits at the latest, waits for consumer closes that
/// outlived their own wait included: with a pod's 5 s `preStop` sleep before it, well
/// inside the 30 s termination grace period. The relay's drain (10 s) and the consumers'
/// close (5 s) each end sooner on their own.
const EXIT_BUDGET: Duration = Duration::from_secs(15);

/// A service binary's whole life: the maintenance subcommand if one was given, else
/// [`run`] with the application `build` makes.
pub async fn serve_or_maintain<Fut>(
    defaults: ServiceDefaults,
    config: ServiceConfig,
    command: Option<Maintenance>,
    migrations: &sqlx::migrate::Migrator,
    build: impl FnOnce() -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<Application>>,
{
    match command {
        Some(command) => maintenance::run(&command, defaults, &config, migrations).await,
        None => run(defaults, &config.telemetry, build()).await,
    }
}

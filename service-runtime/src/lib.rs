//! Bootstrap shared by the four services: configuration, telemetry, shutdown on signals,
//! health/readiness/metrics endpoints, problem+json errors, and wiring of the event
//! plumbing (database, registry codec, outbox relay, consumers).

pub mod admission;
mod app;
pub mod auth;
pub mod config;
pub mod health;
pub mod json;
pub mod maintenance;
pub mod precondition;
pub mod problem;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use app::{Application, Plumbing};
pub use auth::{Admin, Caller};
pub use config::{ServiceConfig, ServiceDefaults, TelemetryConfig};
pub use json::{ValidJson, ValidPath};
pub use maintenance::Maintenance;
pub use precondition::IfMatch;
pub use problem::{ErrorChain, FieldErrors, Problem, error_chain_fmt};

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
    let stopped = application.run_until_stopped(shutdown).await;
    // Last: no consumer close may still run inside librdkafka while the process exits.
    shared_events::consumer::finish_abandoned_closes(ABANDONED_CLOSE_WAIT).await;
    stopped
}

/// How much longer the exit waits for consumer closes that outlived their own wait: inside
/// a pod's termination grace period (30 s) with the drain before it.
const ABANDONED_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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

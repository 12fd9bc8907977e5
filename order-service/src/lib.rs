//! order-service: REST entry point of the order saga: takes orders, keeps their event-sourced history and read model, publishes order events.
//!
//! For now the service runs the shared event plumbing (migrations, registry, outbox relay)
//! and serves `/healthz`, `/readyz` and `/metrics`; the saga gives it its domain.

use service_runtime::{Application, ServiceConfig, ServiceDefaults};
use sqlx::migrate::Migrator;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "order-service",
    http_port: 8080,
    database: "orderflow_orders",
};

/// This service's own tables; the plumbing's come from `shared-events`.
static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

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
}

/// Builds the service: database, registry, relay, HTTP routes.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    Application::build(DEFAULTS, config.service, &MIGRATIONS).await
}

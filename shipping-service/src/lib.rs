//! shipping-service: Schedules shipments for the order saga.
//!
//! For now the service runs the shared event plumbing (migrations, registry, outbox relay)
//! and serves `/healthz`, `/readyz` and `/metrics`; the saga gives it its domain.

use service_runtime::{Application, ServiceConfig, ServiceDefaults};
use sqlx::migrate::Migrator;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "shipping-service",
    http_port: 8084,
    database: "orderflow_shipping",
};

/// This service's own tables; the plumbing's come from `shared-events`.
static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Configuration from flags or environment variables; `--help` lists them.
#[derive(Debug, clap::Parser)]
#[command(
    name = "shipping-service",
    version,
    about = "Schedules shipments for the order saga."
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceConfig,
}

/// Builds the service: database, registry, relay, HTTP routes.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    Application::build(DEFAULTS, config.service, &MIGRATIONS).await
}

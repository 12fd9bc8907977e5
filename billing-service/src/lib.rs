//! billing-service: authorizes and refunds payments.
//!
//! It hears `OrderPlaced` (charge the customer's account or decline), `StockRejected` and
//! `ShipmentFailed` (refund), and `OrderCompleted` (the charge becomes final). The rules
//! live in [`domain`], free of I/O; [`handler`] applies them in the consumer's transaction.

pub mod domain;
pub mod handler;
pub mod http;

use service_runtime::{Application, Maintenance, ServiceConfig, ServiceDefaults};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "billing-service",
    http_port: 8083,
    database: "orderflow_billing",
};

/// This service's own tables; the plumbing's come from `shared-events`.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Configuration from flags or environment variables; `--help` lists them.
#[derive(Debug, clap::Parser)]
#[command(
    name = "billing-service",
    version,
    about = "Authorizes and refunds payments."
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceConfig,
    #[command(subcommand)]
    pub command: Option<Maintenance>,
}

/// Runs the service until SIGINT/SIGTERM, or the maintenance subcommand given.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (service, command) = (config.service.clone(), config.command.clone());
    service_runtime::serve_or_maintain(DEFAULTS, service, command, &MIGRATIONS, || build(config))
        .await
}

/// Builds the service: database, registry, relay, the saga consumer and the HTTP API.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let app = Application::build(DEFAULTS, config.service, &MIGRATIONS).await?;
    let plumbing = app.plumbing().clone();
    Ok(app
        .with_consumer(handler::BillingHandler)?
        .with_routes(http::routes(plumbing.pool))
        .with_openapi(http::ApiDoc::openapi()))
}

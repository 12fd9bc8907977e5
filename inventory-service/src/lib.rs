//! inventory-service: reserves and releases stock, and owns the product catalog.
//!
//! It reserves an order's lines (all or none) once it has heard both `OrderPlaced` (what)
//! and `PaymentAuthorized` (paid), and releases them on `ShipmentFailed`. Product changes
//! made over REST are published as `ProductUpserted`. The rules live in [`domain`].

pub mod domain;
pub mod handler;
pub mod http;

use service_runtime::{Application, Maintenance, ServiceConfig, ServiceDefaults};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "inventory-service",
    http_port: 8082,
    database: "orderflow_inventory",
};

/// This service's own tables; the plumbing's come from `shared-events`.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Configuration from flags or environment variables; `--help` lists them.
#[derive(Debug, clap::Parser)]
#[command(
    name = "inventory-service",
    version,
    about = "Reserves and releases stock."
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
        .with_consumer(handler::InventoryHandler)?
        .with_routes(http::routes(plumbing.pool, plumbing.outbox))
        .with_openapi(http::ApiDoc::openapi()))
}

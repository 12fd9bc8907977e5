//! shipping-service: schedules shipments, and is the one place that decides whether an
//! order ships. Once it emits `ShipmentScheduled` the order can no longer be cancelled; a
//! cancellation or a passed saga deadline heard first makes it emit `ShipmentFailed`
//! instead, which starts the compensations. The rules live in [`domain`].

pub mod domain;
pub mod handler;
pub mod http;

use service_runtime::{Application, Maintenance, ServiceConfig, ServiceDefaults};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "shipping-service",
    http_port: 8084,
    database: "orderflow_shipping",
};

/// This service's own tables; the plumbing's come from `shared-events`.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Configuration from flags or environment variables; `--help` lists them.
#[derive(Debug, clap::Parser)]
#[command(name = "shipping-service", version, about = "Schedules shipments.")]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceConfig,
    #[command(subcommand)]
    pub command: Option<Maintenance>,
    /// Countries (ISO 3166-1 alpha-2) some carrier ships to; orders elsewhere are refused.
    #[arg(
        long = "shipping-destinations",
        env = "SHIPPING_DESTINATIONS",
        value_delimiter = ',',
        default_value = "US,CA,GB,IE,DE,FR,NL,BE,LU,AT,CH,ES,PT,IT,DK,SE,NO,FI,PL,CZ"
    )]
    pub destinations: Vec<String>,
}

/// Runs the service until SIGINT/SIGTERM, or the maintenance subcommand given.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (service, command) = (config.service.clone(), config.command.clone());
    service_runtime::serve_or_maintain(DEFAULTS, service, command, &MIGRATIONS, || build(config))
        .await
}

/// Builds the service: database, registry, relay, the saga consumer and the HTTP API.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    if let Some(bad) = config
        .destinations
        .iter()
        .find(|d| d.len() != 2 || !d.chars().all(|c| c.is_ascii_alphabetic()))
    {
        anyhow::bail!("SHIPPING_DESTINATIONS: {bad:?} is not a two-letter country code");
    }
    let app = Application::build(DEFAULTS, config.service, &MIGRATIONS).await?;
    let plumbing = app.plumbing().clone();
    let handler = handler::ShippingHandler {
        carriers: domain::Carriers {
            destinations: config.destinations,
        },
    };
    Ok(app
        .with_consumer(handler)?
        .with_routes(http::routes(plumbing.pool))
        .with_openapi(http::ApiDoc::openapi()))
}

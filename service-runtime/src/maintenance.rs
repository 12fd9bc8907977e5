//! Subcommands every service binary has besides serving: a container healthcheck that needs
//! no curl in the image, migrations on their own (for an init container or a Job), and the
//! service's defaults for the scripts that start it (`scripts/demo`).

use anyhow::Context;
use sqlx::migrate::Migrator;

use crate::config::{ServiceConfig, ServiceDefaults};
use crate::startup::database_may_come_up;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Maintenance {
    /// Exit 0 if this service's /readyz answers 200 (for container healthchecks).
    Healthcheck,
    /// Apply this service's database migrations, then exit.
    Migrate,
    /// Print what this service uses when nothing is configured, as one line
    /// `<name> <HTTP port> <database>`, so that scripts take it from the service.
    Defaults,
}

pub async fn run(
    command: &Maintenance,
    defaults: ServiceDefaults,
    config: &ServiceConfig,
    migrations: &Migrator,
) -> anyhow::Result<()> {
    match command {
        Maintenance::Healthcheck => {
            container_healthcheck::probe(config.http_addr(&defaults), "/readyz").await
        }
        Maintenance::Migrate => {
            // Its waits for the database are logged like the service's own.
            let _telemetry = crate::telemetry::init(defaults.name, &config.telemetry)?;
            let url = config.database_url(&defaults);
            let pool = config
                .startup
                .wait_for("the database", database_may_come_up, || {
                    sqlx::PgPool::connect(&url)
                })
                .await
                .context("connecting to the database")?;
            shared_events::migrations::with_service_migrations(migrations)
                .run(&pool)
                .await?;
            println!("{}: migrations applied", defaults.name);
            Ok(())
        }
        Maintenance::Defaults => {
            let ServiceDefaults {
                name,
                http_port,
                database,
            } = defaults;
            println!("{name} {http_port} {database}");
            Ok(())
        }
    }
}

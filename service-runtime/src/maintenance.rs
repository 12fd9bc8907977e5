//! Subcommands every service binary has besides serving: a container healthcheck that needs
//! no curl in the image, migrations on their own (for an init container or a Job), and the
//! service's defaults for the scripts that start it (`scripts/demo`).

use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::migrate::Migrator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{ServiceConfig, ServiceDefaults};

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
        Maintenance::Healthcheck => probe(config.http_addr(&defaults), "/readyz").await,
        Maintenance::Migrate => {
            let pool = sqlx::PgPool::connect(&config.database_url(&defaults))
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

/// Exits 0 (`Ok`) if `GET path` on the server listening at `address` answers 200 within
/// 3 s: a container healthcheck without curl in the image. An unspecified address (a
/// container listening on all interfaces) is probed on loopback.
pub async fn probe(mut address: std::net::SocketAddr, path: &str) -> anyhow::Result<()> {
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let probe = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .context("the probe timed out")??;
    if &head[9..12] != b"200" {
        bail!("{path}: {}", String::from_utf8_lossy(&head).trim_end());
    }
    Ok(())
}

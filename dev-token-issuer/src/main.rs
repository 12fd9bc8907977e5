//! `dev-token-issuer`: mints access tokens for the Docker-less demo and the tests.

use std::sync::Arc;

use clap::Parser;
use dev_token_issuer::Config;

/// The issuer's command line: its settings, and a healthcheck for containers.
#[derive(Parser)]
#[command(
    about = "A development token issuer: signs any token it is asked for. Never for production."
)]
struct Args {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Exit 0 if the issuer listening at DEV_ISSUER_LISTEN serves its JWKS (for container
    /// healthchecks: the image has no curl).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Args { config, command } = Args::parse();
    if let Some(Command::Healthcheck) = command {
        let address = config.listen.parse()?;
        return container_healthcheck::probe(address, "/.well-known/jwks.json").await;
    }
    let issuer = Arc::new(dev_token_issuer::Issuer::generate(config.issuer)?);
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, issuer = issuer.issuer(), "dev token issuer listening; it authenticates nobody, for development only");
    dev_token_issuer::serve(listener, issuer, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

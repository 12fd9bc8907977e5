//! `dev-token-issuer`: mints access tokens for the Docker-less demo and the tests.

use std::sync::Arc;

use clap::Parser;
use dev_token_issuer::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Config::parse();
    let issuer = Arc::new(dev_token_issuer::Issuer::generate(args.issuer)?);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
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

//! `schema-registry-dev`: a Confluent-REST-compatible schema registry for dev and tests.

use std::path::PathBuf;

use clap::Parser;

/// A small Confluent-compatible schema registry for development and tests only.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on.
    #[arg(long, env = "SCHEMA_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// JSON file the registry persists to; ids survive restarts.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_DATA_FILE",
        default_value = "schema-registry-dev.json"
    )]
    data_file: PathBuf,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Exit 0 if the registry listening at SCHEMA_REGISTRY_LISTEN lists its subjects (for
    /// container healthchecks: the image has no curl).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(Command::Healthcheck) = args.command {
        return container_healthcheck::probe(args.listen.parse()?, "/subjects").await;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, data_file = %args.data_file.display(), "dev schema registry listening");
    schema_registry_dev::run(listener, Some(&args.data_file), shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        () = ctrl_c => {},
        _ = term.recv() => {},
    }
}

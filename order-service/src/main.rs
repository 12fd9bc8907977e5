use clap::Parser;
use order_service::{Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(Command::RebuildView) = config.command {
        let rebuilt = order_service::rebuild_view(&config).await?;
        println!("rebuilt orders_view from order_events: {rebuilt} orders");
        return Ok(());
    }
    let telemetry = config.service.telemetry.clone();
    service_runtime::run(
        order_service::DEFAULTS,
        &telemetry,
        order_service::build(config),
    )
    .await
}

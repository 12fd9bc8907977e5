use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = inventory_service::Config::parse();
    let telemetry = config.service.telemetry.clone();
    service_runtime::run(
        inventory_service::DEFAULTS,
        &telemetry,
        inventory_service::build(config),
    )
    .await
}

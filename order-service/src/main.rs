use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = order_service::Config::parse();
    let telemetry = config.service.telemetry.clone();
    service_runtime::run(
        order_service::DEFAULTS,
        &telemetry,
        order_service::build(config),
    )
    .await
}

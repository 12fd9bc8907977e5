use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = shipping_service::Config::parse();
    let telemetry = config.service.telemetry.clone();
    service_runtime::run(
        shipping_service::DEFAULTS,
        &telemetry,
        shipping_service::build(config),
    )
    .await
}

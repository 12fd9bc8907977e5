use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = billing_service::Config::parse();
    let telemetry = config.service.telemetry.clone();
    service_runtime::run(
        billing_service::DEFAULTS,
        &telemetry,
        billing_service::build(config),
    )
    .await
}

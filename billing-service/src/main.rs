use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    billing_service::run(billing_service::Config::parse()).await
}

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    inventory_service::run(inventory_service::Config::parse()).await
}

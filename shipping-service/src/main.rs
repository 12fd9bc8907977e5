use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shipping_service::run(shipping_service::Config::parse()).await
}

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    order_service::run(order_service::Config::parse()).await
}

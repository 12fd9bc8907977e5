//! Where the services' REST APIs are, for the commands that drive them (demo, load).

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceUrls {
    #[arg(
        long,
        env = "ORDER_SERVICE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub order_service: String,
    #[arg(
        long,
        env = "INVENTORY_SERVICE_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub inventory_service: String,
    #[arg(
        long,
        env = "BILLING_SERVICE_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub billing_service: String,
}

//! Configuration every service reads, from flags or environment variables (`--help` lists
//! both). Each service names its own defaults (port, database) through [`ServiceDefaults`].

use std::net::SocketAddr;

use crate::admission::AdmissionConfig;
use crate::auth::AuthConfig;
use crate::server::HttpConfig;
use crate::startup::StartupConfig;
use shared_events::settings::{LOCAL_POSTGRES, database_url};
use shared_events::{
    ConsumerConfig, KafkaConfig, RegistryConfig, RelayConfig, RetentionConfig, RetryConfig,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceConfig {
    /// Address the HTTP API (and /healthz, /readyz) listens on.
    #[arg(long = "http-addr", env = "HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address /metrics is served on, apart from the API: a port that neither the Service
    /// nor an ingress routes to, for Prometheus alone. Unset: /metrics is served with the
    /// API.
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// PostgreSQL URL of this service's own database.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most database connections this replica opens.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,
    /// Longest a statement may run before PostgreSQL cancels it (0: no limit). Migrations
    /// run on a connection of their own, without it.
    #[arg(
        long = "database-statement-timeout-ms",
        env = "DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub database_statement_timeout_ms: u64,
    /// Longest a session may sit idle inside a transaction before PostgreSQL ends it, so a
    /// stalled or vanished replica cannot hold row locks the others wait on (0: no limit).
    #[arg(
        long = "database-idle-in-transaction-timeout-ms",
        env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub database_idle_in_transaction_timeout_ms: u64,
    /// Apply the database migrations at start-up. Set false where migrations run under a
    /// role of their own (`<service> migrate`, e.g. an init container) and the service's
    /// role has no DDL rights: it then only checks they were applied (deploy/README.md).
    #[arg(
        long = "database-migrate-on-start",
        env = "DATABASE_MIGRATE_ON_START",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub database_migrate_on_start: bool,
    #[command(flatten)]
    pub startup: StartupConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub relay: RelayConfig,
    #[command(flatten)]
    pub consumer: ConsumerConfig,
    #[command(flatten)]
    pub retry: RetryConfig,
    #[command(flatten)]
    pub retention: RetentionConfig,
    #[command(flatten)]
    pub admission: AdmissionConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log as JSON lines (for log shippers) instead of human-readable text.
    #[arg(long = "log-json", env = "LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_json: bool,
    /// OTLP/HTTP endpoint spans are exported to, e.g. http://otel-collector:4318/v1/traces.
    /// Without it spans still carry trace ids across services, but are not exported.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP encoding: `http/protobuf` (collectors' default) or `http/json`.
    #[arg(
        long = "otlp-protocol",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value_t
    )]
    pub otlp_protocol: OtlpProtocol,
}

/// How spans are encoded for the collector (the OTLP/HTTP variants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "http/json")]
    HttpJson,
}

/// What differs between services when nothing is configured.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    pub name: &'static str,
    pub http_port: u16,
    pub database: &'static str,
}

impl ServiceConfig {
    pub fn http_addr(&self, defaults: &ServiceDefaults) -> SocketAddr {
        self.http_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], defaults.http_port)))
    }

    pub fn database_url(&self, defaults: &ServiceDefaults) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| database_url(LOCAL_POSTGRES, defaults.database))
    }
}

//! Throwaway state for a benchmark: databases (migrated) and topic prefixes on the local
//! broker, each named after the run, and dropped again at the end.

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::database::{create_database, drop_database};
use shared_events::topics::provision_topics;
use shared_events::{KafkaConfig, RegistryCodec, RegistryConfig, TopicNames};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// Where the local stack is (the same defaults and variables as the tests).
#[derive(Debug, Clone)]
pub struct Stack {
    pub postgres: String,
    pub kafka: KafkaConfig,
    pub registry_url: String,
    /// The dev token issuer the services check tokens against and the load generator
    /// gets its token from.
    pub issuer_url: String,
    pub partitions: i32,
}

impl Stack {
    pub fn from_env(partitions: i32, fetch_wait_ms: u32) -> Self {
        let env_or =
            |key: &str, default: &str| std::env::var(key).unwrap_or_else(|_| default.to_owned());
        let mut kafka = KafkaConfig::local(&env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"));
        kafka.fetch_wait_max_ms = fetch_wait_ms;
        Self {
            postgres: env_or("TEST_POSTGRES_URL", shared_events::settings::LOCAL_POSTGRES),
            kafka,
            registry_url: env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
            issuer_url: env_or("DEV_ISSUER_URL", "http://127.0.0.1:8090"),
            partitions,
        }
    }

    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig::at(self.registry_url.clone(), true)
    }
}

/// The databases a run created, for dropping at the end.
pub struct Scratch {
    pub stack: Stack,
    pub run: String,
    databases: Vec<String>,
}

impl Scratch {
    pub fn new(stack: Stack) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Self {
            stack,
            run,
            databases: Vec::new(),
        }
    }

    /// A fresh topic prefix with every saga topic provisioned (`partitions` each), and a
    /// codec for it.
    pub async fn topics(
        &self,
        label: &str,
        partitions: i32,
    ) -> anyhow::Result<(KafkaConfig, TopicNames, RegistryCodec)> {
        let mut kafka = self.stack.kafka.clone();
        kafka.topic_prefix = format!("bench{}{label}-", self.run);
        let names = TopicNames::new(kafka.topic_prefix.clone());
        let admin: AdminClient<DefaultClientContext> = kafka.base().create()?;
        provision_topics(&admin, &names, partitions, 1).await?;
        let codec = RegistryCodec::connect(&self.stack.registry(), &names).await?;
        Ok((kafka, names, codec))
    }

    /// A fresh database named after the run and `label`, with the plumbing's migrations and
    /// `migrations` applied; returns its URL.
    pub async fn database(
        &mut self,
        label: &str,
        migrations: Option<&Migrator>,
    ) -> anyhow::Result<String> {
        let name = format!("bench_{}_{}", self.run, label.replace('-', "_"));
        let url = create_database(&self.stack.postgres, &name).await?;
        self.databases.push(name);
        let pool = PgPool::connect(&url).await?;
        match migrations {
            Some(service) => {
                shared_events::migrations::with_service_migrations(service)
                    .run(&pool)
                    .await?
            }
            None => shared_events::migrations::PLUMBING.run(&pool).await?,
        }
        pool.close().await;
        Ok(url)
    }

    /// A pool on a database made by [`Scratch::database`].
    pub async fn pool(url: &str, connections: u32) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(connections)
            .test_before_acquire(false)
            .connect(url)
            .await?)
    }

    /// Drops the run's databases.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        for name in self.databases {
            drop_database(&self.stack.postgres, &name).await?;
        }
        Ok(())
    }
}

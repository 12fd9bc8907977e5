//! Every service starts as a real process on the local stack, reports alive and ready, serves
//! metrics, and exits cleanly on SIGTERM. Needs the stack (`scripts/stack-up`) and the
//! service binaries (`cargo build --workspace --bins`); `scripts/test` provides both.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::topics::provision_topics;
use shared_events::{KafkaConfig, TopicNames};
use sqlx::Connection;
use tokio::process::{Child, Command};

const SERVICES: [&str; 4] = [
    "order-service",
    "billing-service",
    "inventory-service",
    "shipping-service",
];

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct RunningService {
    name: &'static str,
    child: Child,
    base_url: String,
}

async fn start(name: &'static str, run_id: &str) -> RunningService {
    let postgres = env_or("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432");
    let database = format!("e2e_{run_id}_{}", name.replace('-', "_"));
    let mut admin = sqlx::PgConnection::connect(&format!("{postgres}/postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let port = free_port();
    let child = Command::new(binary(name))
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", format!("{postgres}/{database}"))
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        )
        .env("KAFKA_TOPIC_PREFIX", format!("e2e{run_id}-"))
        .env(
            "SCHEMA_REGISTRY_URL",
            env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    RunningService {
        name,
        child,
        base_url: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_until_ready(service: &RunningService) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client
            .get(format!("{}/readyz", service.base_url))
            .send()
            .await
            && response.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never became ready",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_service_starts_becomes_ready_serves_metrics_and_stops_on_sigterm() {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let kafka = KafkaConfig::local(&env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"));
    let admin: AdminClient<DefaultClientContext> = kafka.base().create().unwrap();
    provision_topics(&admin, &TopicNames::new(format!("e2e{run_id}-")), 1, 1)
        .await
        .expect("the local stack must run: scripts/stack-up");

    let mut services = Vec::new();
    for name in SERVICES {
        services.push(start(name, &run_id).await);
    }
    let client = reqwest::Client::new();
    for service in &services {
        wait_until_ready(service).await;
        let alive = client
            .get(format!("{}/healthz", service.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(alive.status(), 200);
        let metrics = client
            .get(format!("{}/metrics", service.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains(&format!(
                "orderflow_outbox_relay_active{{service=\"{}\"}}",
                service.name
            )),
            "{}: {text}",
            service.name
        );
        assert!(text.contains("orderflow_outbox_backlog_events"));
    }

    for service in &mut services {
        let pid = service.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(20), service.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 20 s of SIGTERM", service.name))
            .unwrap();
        assert!(exit.success(), "{} exited with {exit}", service.name);
    }
}

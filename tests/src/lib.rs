//! Harness for the end-to-end tests: a "stack" is the four services as real processes,
//! each with its own fresh database, on their own topic prefix of the local broker and
//! registry (`scripts/stack-up`). Tests drive them over HTTP only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use shared_events::database::{create_database, drop_database};
use shared_events::settings::{database_of, database_url};
use shared_events::topics::provision_topics;
use shared_events::{KafkaConfig, TopicNames};
use tokio::process::{Child, Command};

pub mod auth;
pub mod browser;
pub mod client;
pub mod corrupt_history;
pub mod draw;
pub mod fault_proxy;
pub mod invariants;
pub mod kafka_cluster;
pub mod kafka_node;
pub mod local_broker;
pub mod local_postgres;
pub mod offsets;
pub mod secure_broker;
pub mod workload;

pub use auth::http;

pub const SERVICES: [&str; 4] = [
    "order-service",
    "billing-service",
    "inventory-service",
    "shipping-service",
];

pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

pub fn postgres_url() -> String {
    env_or("TEST_POSTGRES_URL", shared_events::settings::LOCAL_POSTGRES)
}

/// The test PostgreSQL server as the services see it through a [`fault_proxy::FaultProxy`].
pub struct ProxiedPostgres {
    pub proxy: fault_proxy::FaultProxy,
    /// The server's URL with the proxy's address in place of the server's.
    server: String,
}

impl ProxiedPostgres {
    /// The URL of service `name`'s database in the stack on `prefix`, through the proxy.
    pub fn url_of(&self, prefix: &str, name: &str) -> String {
        database_url(&self.server, &Stack::database_name(prefix, name))
    }
}

/// A proxy in front of the test PostgreSQL server ([`postgres_url`]).
pub async fn postgres_through() -> ProxiedPostgres {
    let server = postgres_url();
    let after_user = server
        .rsplit_once('@')
        .map_or(server.as_str(), |(_, rest)| rest);
    let address = after_user
        .split(['/', '?'])
        .next()
        .expect("a PostgreSQL URL names its server");
    let proxy = fault_proxy::FaultProxy::start(address).await;
    ProxiedPostgres {
        server: server.replacen(address, &proxy.address, 1),
        proxy,
    }
}

pub fn bootstrap_servers() -> String {
    env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
}

/// Cargo's target folder: where the binaries are, and the service processes' folders.
fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A service binary of the build profile `TEST_PROFILE` names (`debug` unless set; the long
/// chaos run, `scripts/chaos`, runs the `release` binaries users deploy).
pub fn binary(name: &str) -> PathBuf {
    let profile = env_or("TEST_PROFILE", "debug");
    let path = target_dir().join(&profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (cargo build --workspace --bins{})",
        path.display(),
        if profile == "release" {
            " --release"
        } else {
            ""
        }
    );
    path
}

/// The working directory of one service process: `target/service-runs/`, where a crash's
/// core stays for a look (an empty one is removed when the process stops cleanly).
fn run_dir(prefix: &str, name: &str, port: u16) -> PathBuf {
    target_dir()
        .join("service-runs")
        .join(format!("{prefix}{name}-{port}"))
}

/// A loopback port that is free now and that this test process hands out once. Not one the
/// kernel picks (port 0): that comes from the ephemeral range, where the next outgoing
/// connection of any process may take it before the service binds it, and two calls can get
/// the same port once the first is released; a service that then fails to bind leaves its
/// URL to whoever answers there (seen: a stack's PUT answered by another stack's service).
/// So ports come from below the ephemeral range (32768-60999 on Linux), each test process
/// counting from a place of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One service process and how to start it again.
pub struct ServiceProcess {
    pub name: &'static str,
    pub base_url: String,
    pub database_url: String,
    env: Vec<(String, String)>,
    /// Where the process runs, and where a crash leaves its core.
    core_dir: PathBuf,
    child: Option<Child>,
}

/// Every thread's backtrace of the running process `pid`, read with gdb (attached, then
/// detached), or why there is none.
fn live_backtrace(pid: &str) -> String {
    match std::process::Command::new("timeout")
        .args([
            "60",
            "gdb",
            "-batch",
            "-p",
            pid,
            "-ex",
            "thread apply all bt 30",
        ])
        .output()
    {
        Ok(gdb) => String::from_utf8_lossy(&gdb.stdout).into_owned(),
        Err(e) => format!("(no backtrace: gdb did not run: {e})"),
    }
}

impl ServiceProcess {
    fn spawn(&mut self) {
        // The services log to standard output; with TEST_LOG set, it is the test's.
        let output = || {
            if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        // Through a shell that allows core dumps, in a folder of the process's own: a crash
        // leaves its core where `stop_and_report` finds it (the kernel's core_pattern here
        // is `core`, in the working directory).
        std::fs::create_dir_all(&self.core_dir).unwrap();
        let mut command = Command::new("sh");
        command
            .args(["-c", "ulimit -c unlimited 2>/dev/null; exec \"$0\""])
            .arg(binary(self.name))
            .current_dir(&self.core_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true);
        self.child = Some(command.spawn().unwrap());
    }

    pub async fn wait_until_ready(&self) {
        let client = crate::http();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.base_url)).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (the consumer leaves its group on the way out).
    pub async fn stop(&mut self) {
        if let Some(unclean) = self.stop_and_report().await {
            panic!("{unclean}");
        }
    }

    /// SIGTERM, then waits for the exit; how it was not clean, if it was not.
    pub async fn stop_and_report(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let pid = child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let Ok(exit) = tokio::time::timeout(Duration::from_secs(20), child.wait()).await else {
            // Where it hangs, before it is killed: every thread's backtrace, live.
            let backtrace = live_backtrace(&pid);
            let _ = child.start_kill();
            return Some(format!(
                "{} did not stop within 20 s of SIGTERM; its threads then:\n{backtrace}",
                self.name
            ));
        };
        let exit = exit.unwrap();
        if exit.success() {
            let _ = std::fs::remove_dir(&self.core_dir);
        }
        (!exit.success()).then(|| {
            let backtrace = self.core_backtrace().unwrap_or_default();
            format!("{} exited with {exit}{backtrace}", self.name)
        })
    }

    /// Every thread's backtrace from the core a crash left, read with gdb.
    fn core_backtrace(&self) -> Option<String> {
        let core = std::fs::read_dir(&self.core_dir)
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("core"))
            })?;
        let gdb = std::process::Command::new("gdb")
            .args(["-batch", "-ex", "thread apply all bt 30"])
            .arg(binary(self.name))
            .arg(&core)
            .output()
            .ok()?;
        Some(format!(
            "; core {}:\n{}",
            core.display(),
            String::from_utf8_lossy(&gdb.stdout)
        ))
    }

    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.spawn();
        self.wait_until_ready().await;
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// Kills the process with SIGKILL, as a crash would: nothing is flushed or committed.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Freezes the process (SIGSTOP), as a host that vanished: its connections stay open
    /// and answer nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// Makes the service run with `key=value`, restarting it if that changes its setting.
    pub async fn run_with(&mut self, key: &str, value: &str) {
        let setting = self.env.iter_mut().find(|(k, _)| k == key);
        match setting {
            Some((_, current)) if current == value => return,
            Some((_, current)) => *current = value.to_owned(),
            None => self.env.push((key.to_owned(), value.to_owned())),
        }
        if self.child.is_some() {
            self.stop().await;
            self.start().await;
        }
    }
}

/// Four services on a topic prefix and databases of their own.
pub struct Stack {
    pub prefix: String,
    pub services: HashMap<&'static str, ServiceProcess>,
}

impl Stack {
    /// Provisions topics, creates databases and starts every service with `extra_env`.
    pub async fn start(label: &str, extra_env: &[(&str, String)]) -> Stack {
        let kafka = KafkaConfig::local(&bootstrap_servers());
        Self::start_with(Self::new_prefix(label), &kafka, extra_env, |_| Vec::new()).await
    }

    /// A topic and group prefix of a run of its own, and the start of its database names.
    pub fn new_prefix(label: &str) -> String {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        format!("e2e{label}{run_id}-")
    }

    /// [`start_with`](Self::start_with) on `cluster`'s brokers, which the services reach
    /// only through its proxies, as they reach PostgreSQL only through `database`'s.
    pub async fn start_behind_proxies(
        label: &str,
        cluster: &kafka_cluster::KafkaCluster,
        database: &ProxiedPostgres,
        extra_env: &[(&str, String)],
    ) -> Stack {
        let prefix = Self::new_prefix(label);
        let kafka = cluster.kafka_config();
        Self::start_with(prefix.clone(), &kafka, extra_env, |name| {
            vec![
                (
                    "KAFKA_BOOTSTRAP_SERVERS",
                    cluster.service_bootstrap_servers(),
                ),
                ("DATABASE_URL", database.url_of(&prefix, name)),
            ]
        })
        .await
    }

    /// The database of service `name` in the stack on `prefix`.
    pub fn database_name(prefix: &str, name: &str) -> String {
        format!(
            "{}_{}",
            prefix.trim_end_matches('-'),
            name.replace('-', "_")
        )
    }

    /// [`start`](Self::start) on `prefix` (from [`new_prefix`](Self::new_prefix)), on the
    /// broker `kafka` reaches (topics provisioned with its credentials), each service also
    /// with its own `service_env(name)`.
    pub async fn start_with(
        prefix: String,
        kafka: &KafkaConfig,
        extra_env: &[(&str, String)],
        service_env: impl Fn(&str) -> Vec<(&'static str, String)>,
    ) -> Stack {
        let admin: AdminClient<DefaultClientContext> = kafka.base().create().unwrap();
        // Three replicas where the cluster has three brokers (kafka_cluster), else one.
        let brokers = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .map_or(1, |metadata| metadata.brokers().len());
        let replication = brokers.clamp(1, 3) as i32;
        provision_topics(&admin, &TopicNames::new(prefix.clone()), 3, replication)
            .await
            .expect("the local stack must run: scripts/stack-up");
        let postgres = postgres_url();
        let mut services = HashMap::new();
        for name in SERVICES {
            let database = Self::database_name(&prefix, name);
            let database_url = create_database(&postgres, &database).await.unwrap();
            let port = free_port();
            let mut env: Vec<(String, String)> = [
                ("HTTP_ADDR", format!("127.0.0.1:{port}")),
                ("DATABASE_URL", database_url.clone()),
                ("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers()),
                ("KAFKA_TOPIC_PREFIX", prefix.clone()),
                (
                    "SCHEMA_REGISTRY_URL",
                    env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
                ),
                ("KAFKA_SESSION_TIMEOUT_MS", "6000".to_owned()),
                ("KAFKA_MAX_POLL_INTERVAL_MS", "10000".to_owned()),
                ("RUST_LOG", env_or("TEST_RUST_LOG", "info")),
            ]
            .into_iter()
            .chain(auth::service_env())
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env.extend(
                service_env(name)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
            let mut process = ServiceProcess {
                name,
                base_url: format!("http://127.0.0.1:{port}"),
                database_url,
                env,
                core_dir: run_dir(&prefix, name, port),
                child: None,
            };
            process.spawn();
            services.insert(name, process);
        }
        for service in services.values() {
            service.wait_until_ready().await;
        }
        Stack { prefix, services }
    }

    pub fn url(&self, service: &str) -> &str {
        &self.services[service].base_url
    }

    /// Starts another replica of `name`: same database, topics and settings, its own port.
    pub async fn start_replica(&self, name: &str) -> ServiceProcess {
        let original = &self.services[name];
        let port = free_port();
        let mut env = original.env.clone();
        for (key, value) in &mut env {
            if key == "HTTP_ADDR" {
                *value = format!("127.0.0.1:{port}");
            }
        }
        let mut replica = ServiceProcess {
            name: original.name,
            base_url: format!("http://127.0.0.1:{port}"),
            database_url: original.database_url.clone(),
            env,
            core_dir: run_dir(&self.prefix, original.name, port),
            child: None,
        };
        replica.start().await;
        replica
    }

    pub fn service(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.get_mut(name).unwrap()
    }

    /// Starts any service a failed scenario left stopped.
    pub async fn ensure_all_running(&mut self) {
        for service in self.services.values_mut() {
            if service.child.is_none() {
                service.start().await;
            }
        }
    }

    /// Stops every service and drops the stack's databases.
    pub async fn stop_all(&mut self) {
        for service in self.services.values_mut() {
            service.stop().await;
        }
        for service in self.services.values() {
            let database = database_of(&service.database_url);
            drop_database(&postgres_url(), database).await.unwrap();
        }
    }
}

/// A catalog entry and the accounts the tests create, through the services' REST APIs.
pub async fn put_product(stack: &Stack, product_id: &str, price_minor: i64, available: i32) {
    let response = crate::http()
        .put(format!(
            "{}/products/{product_id}",
            stack.url("inventory-service")
        ))
        .json(&json!({"name": product_id, "unit_price_minor": price_minor,
                      "currency": "EUR", "available": available}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        response.text().await.unwrap()
    );
}

pub async fn put_account(stack: &Stack, customer_id: &str, balance_minor: i64) {
    let response = crate::http()
        .put(format!(
            "{}/accounts/{customer_id}",
            stack.url("billing-service")
        ))
        .json(&json!({"currency": "EUR", "credit_limit_minor": 0, "balance_minor": balance_minor}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        response.text().await.unwrap()
    );
}

/// Waits until order-service's catalog copy has every product (ProductUpserted arrived).
pub async fn wait_for_catalog(stack: &Stack, products: &[&str]) {
    let client = crate::http();
    for attempt in 0.. {
        let mut missing = None;
        for product in products {
            // Quantity 0 is always refused, so the probe places nothing; the errors name the
            // product too while the catalog does not know it.
            let response = client
                .post(format!("{}/orders", stack.url("order-service")))
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&client::order_body("probe", &[(product, 0)], "DE"))
                .send()
                .await
                .unwrap();
            let problem: Value = response.json().await.unwrap();
            if problem.to_string().contains("items[0].product_id") {
                missing = Some(*product);
                break;
            }
        }
        if missing.is_none() {
            return;
        }
        assert!(attempt < 150, "order-service never heard of {missing:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn timeline_types(order: &Value) -> Vec<String> {
    order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

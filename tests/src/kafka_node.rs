//! A Kafka broker process of a test's own (KRaft, broker and controller in one), run from
//! the local stack's Kafka classpath (`.stack/kafka-VERSION/libs`, which `scripts/stack-up`
//! resolves) in a temporary directory of its own that goes with it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::KafkaConfig;
use tokio::process::{Child, Command};

/// The KRaft cluster id (16 bytes, base64url): each test broker is a cluster of its own in a
/// directory of its own, so one fixed id serves them all.
const CLUSTER_ID: &str = "b3JkZXJmbG93LXNlY3VyZQ";

/// What a cluster of one broker needs: every internal topic with one replica.
pub const SINGLE_NODE: &str = "offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
";

pub struct KafkaNode {
    pub dir: PathBuf,
    heap_mb: u32,
    process: Option<Child>,
}

impl KafkaNode {
    /// Writes `properties` (with `log.dirs` added) into a new directory named after `label`,
    /// formats its log directory (with `format_args`, e.g. SCRAM users) and starts the broker
    /// with at most `heap_mb` of heap. The caller waits until it serves.
    pub async fn start(
        label: &str,
        properties: &str,
        format_args: &[String],
        heap_mb: u32,
    ) -> KafkaNode {
        let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("orderflow-{label}-{run_id}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("server.properties"),
            format!("{properties}\nlog.dirs={}\n", dir.join("data").display()),
        )
        .unwrap();
        let mut format = java(&dir);
        format
            .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID])
            .args(["-c", "server.properties"])
            .args(format_args);
        run(format, "formatting a test broker's log directory").await;
        let mut node = KafkaNode {
            dir,
            heap_mb,
            process: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let process = java(&self.dir)
            .arg(format!("-Xmx{}m", self.heap_mb))
            .args(["-Xms128m", "kafka.Kafka", "server.properties"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.process = Some(process);
    }

    /// Waits (at most a minute) until the broker answers a metadata request from a client
    /// with `config`.
    pub async fn wait_until_serving(&self, config: &KafkaConfig) {
        let admin: AdminClient<DefaultClientContext> = config.base().create().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| !m.brokers().is_empty())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a test broker did not start; see {}",
                self.log().display()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// SIGKILLs the broker and waits until it is gone; returns its pid.
    pub async fn kill(&mut self) -> u32 {
        let mut process = self.process.take().expect("the broker runs");
        let pid = process.id().expect("the broker runs");
        process.kill().await.unwrap();
        pid
    }

    /// Starts the broker again on its log directory (after [`kill`](Self::kill)); returns
    /// its pid. The caller waits until it serves.
    pub fn restart(&mut self) -> u32 {
        assert!(self.process.is_none(), "the broker still runs");
        self.spawn();
        self.process.as_ref().and_then(Child::id).unwrap()
    }

    /// Where to look when it misbehaves.
    pub fn log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    /// Runs one of Kafka's tools (a class on its classpath) in the broker's directory.
    pub async fn tool(&self, class: &str, arguments: &[String], what: &str) {
        let mut tool = java(&self.dir);
        tool.arg(class).args(arguments);
        run(tool, what).await;
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            let _ = process.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The local stack's Kafka classpath, and the repository root.
fn kafka_libs() -> (PathBuf, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let pom = std::fs::read_to_string(root.join("scripts/kafka/pom.xml")).unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("scripts/kafka/pom.xml names kafka.version");
    let libs = root.join(format!(".stack/kafka-{version}/libs"));
    assert!(
        libs.join(format!("kafka-tools-{version}.jar")).exists(),
        "{} lacks Kafka's tools: run scripts/stack-up",
        libs.display()
    );
    (root, format!("{}/*", libs.display()))
}

/// `java` on the local stack's Kafka classpath, with its logging set up, in `dir`.
fn java(dir: &Path) -> Command {
    let (root, classpath) = kafka_libs();
    let mut java = Command::new("java");
    java.current_dir(dir)
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            root.join("scripts/kafka/log4j2.properties").display()
        ))
        .args(["-cp", &classpath]);
    java
}

async fn run(mut command: Command, what: &str) {
    let output = command.output().await.unwrap();
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

//! A broker of the test's own with authentication and authorization, as production runs
//! one: SASL/SCRAM-SHA-512 on its client listener, KRaft's `StandardAuthorizer`, and no
//! access without an ACL. It runs from the local stack's Kafka classpath
//! (`.stack/kafka-VERSION/libs`, which `scripts/stack-up` resolves) in a directory of its own,
//! and is killed when dropped. Its users exist from the start (SCRAM credentials written
//! when the log directory is formatted); `admin` is the only super user.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::KafkaConfig;
use shared_events::credentials::{KafkaSecurity, SaslMechanism, Secret, SecurityProtocol};
use tokio::process::{Child, Command};

use crate::free_port;

pub const ADMIN: &str = "admin";

pub struct SecureBroker {
    pub bootstrap_servers: String,
    dir: PathBuf,
    users: Vec<(String, String)>,
    _process: Child,
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

impl SecureBroker {
    /// Formats and starts a broker whose SCRAM users are [`ADMIN`] and `users`, each with a
    /// password of their own; no user but the admin may do anything until granted.
    pub async fn start(label: &str, users: &[&str]) -> SecureBroker {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("orderflow-{label}-{}", &run_id[..8]));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (port, controller) = (free_port(), free_port());
        let users: Vec<(String, String)> = std::iter::once(ADMIN)
            .chain(users.iter().copied())
            .map(|user| (user.to_owned(), format!("{user}-{}", &run_id[8..20])))
            .collect();
        let admin_password = &users[0].1;
        std::fs::write(
            dir.join("server.properties"),
            format!(
                "node.id=1
process.roles=broker,controller
controller.quorum.voters=1@127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN}\" password=\"{admin_password}\";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# The broker's own controller connection (loopback, plaintext) is anonymous.
super.users=User:{ADMIN};User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
",
                data = dir.join("data").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("admin.properties"),
            format!(
                "security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN}\" password=\"{admin_password}\";
"
            ),
        )
        .unwrap();
        let mut format = java(&dir);
        format.args([
            "kafka.tools.StorageTool",
            "format",
            "-t",
            CLUSTER_ID,
            "-c",
            "server.properties",
        ]);
        for (user, password) in &users {
            format.args([
                "--add-scram",
                &format!("SCRAM-SHA-512=[name={user},password={password}]"),
            ]);
        }
        run(format, "formatting the secured broker's log directory").await;
        let log = std::fs::File::create(dir.join("kafka.log")).unwrap();
        let process = java(&dir)
            .args(["-Xms128m", "-Xmx384m", "kafka.Kafka", "server.properties"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let broker = SecureBroker {
            bootstrap_servers: format!("127.0.0.1:{port}"),
            dir,
            users,
            _process: process,
        };
        broker.wait_until_serving().await;
        broker
    }

    /// `user`'s password.
    pub fn password(&self, user: &str) -> &str {
        &self
            .users
            .iter()
            .find(|(name, _)| name == user)
            .unwrap_or_else(|| panic!("no user {user}"))
            .1
    }

    /// Client settings that authenticate as `user`.
    pub fn kafka_config(&self, user: &str) -> KafkaConfig {
        KafkaConfig {
            security: KafkaSecurity {
                protocol: SecurityProtocol::SaslPlaintext,
                sasl_mechanism: SaslMechanism::ScramSha512,
                sasl_username: Some(user.to_owned()),
                sasl_password: Some(self.password(user).parse::<Secret>().unwrap()),
                ssl_ca_location: None,
            },
            ..KafkaConfig::local(&self.bootstrap_servers)
        }
    }

    /// The environment that points a service at this broker as `user`.
    pub fn service_env(&self, user: &str) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_BOOTSTRAP_SERVERS", self.bootstrap_servers.clone()),
            ("KAFKA_SECURITY_PROTOCOL", "sasl-plaintext".to_owned()),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
            ("KAFKA_SASL_USERNAME", user.to_owned()),
            ("KAFKA_SASL_PASSWORD", self.password(user).to_owned()),
        ]
    }

    /// Runs Kafka's `kafka-acls` tool as the admin with `arguments` (e.g. a grant's
    /// `kafka_acls_arguments`).
    pub async fn kafka_acls(&self, arguments: &[String]) {
        let mut acls = java(&self.dir);
        acls.args(["org.apache.kafka.tools.AclCommand", "--bootstrap-server"])
            .arg(&self.bootstrap_servers)
            .args(["--command-config", "admin.properties"])
            .args(arguments);
        run(acls, "kafka-acls").await;
    }

    async fn wait_until_serving(&self) {
        let admin: AdminClient<DefaultClientContext> =
            self.kafka_config(ADMIN).base().create().unwrap();
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
                "the secured broker did not start; see {}",
                self.dir.join("kafka.log").display()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker's KRaft cluster id (16 bytes, base64url): each test broker is a cluster of
/// its own in a directory of its own, so one fixed id serves them all.
const CLUSTER_ID: &str = "b3JkZXJmbG93LXNlY3VyZQ";

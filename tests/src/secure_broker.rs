//! A broker of the test's own with authentication and authorization, as production runs
//! one: SASL/SCRAM-SHA-512 on its client listener, KRaft's `StandardAuthorizer`, and no
//! access without an ACL (a [`KafkaNode`], killed when dropped). Its users exist from the
//! start (SCRAM credentials written when the log directory is formatted); `admin` is the only
//! super user.

use shared_events::KafkaConfig;
use shared_events::credentials::{KafkaSecurity, SaslMechanism, Secret, SecurityProtocol};

use crate::free_port;
use crate::kafka_node::{KafkaNode, SINGLE_NODE};

pub const ADMIN: &str = "admin";

pub struct SecureBroker {
    pub bootstrap_servers: String,
    users: Vec<(String, String)>,
    node: KafkaNode,
}

impl SecureBroker {
    /// Formats and starts a broker whose SCRAM users are [`ADMIN`] and `users`, each with a
    /// password of their own; no user but the admin may do anything until granted.
    pub async fn start(label: &str, users: &[&str]) -> SecureBroker {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let (port, controller) = (free_port(), free_port());
        let users: Vec<(String, String)> = std::iter::once(ADMIN)
            .chain(users.iter().copied())
            .map(|user| (user.to_owned(), format!("{user}-{}", &run_id[8..20])))
            .collect();
        let admin_password = &users[0].1;
        let properties = format!(
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
{SINGLE_NODE}"
        );
        let format_args: Vec<String> = users
            .iter()
            .flat_map(|(user, password)| {
                [
                    "--add-scram".to_owned(),
                    format!("SCRAM-SHA-512=[name={user},password={password}]"),
                ]
            })
            .collect();
        let node = KafkaNode::start(label, &properties, &format_args, 384).await;
        std::fs::write(
            node.dir.join("admin.properties"),
            format!(
                "security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN}\" password=\"{admin_password}\";
"
            ),
        )
        .unwrap();
        let broker = SecureBroker {
            bootstrap_servers: format!("127.0.0.1:{port}"),
            users,
            node,
        };
        broker
            .node
            .wait_until_serving(&broker.kafka_config(ADMIN))
            .await;
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
        let mut command = vec![
            "--bootstrap-server".to_owned(),
            self.bootstrap_servers.clone(),
            "--command-config".to_owned(),
            "admin.properties".to_owned(),
        ];
        command.extend_from_slice(arguments);
        self.node
            .tool("org.apache.kafka.tools.AclCommand", &command, "kafka-acls")
            .await;
    }
}

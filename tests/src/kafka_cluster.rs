//! Kafka brokers of a test's own: one, or three as production runs them (KRaft with every
//! node its own controller too, a quorum that outlives one; replication factor 3 and
//! `min.insync.replicas` 2 for every topic; bounded heaps). Each broker has two client
//! listeners: a direct one for the test (provisioning, the checker), and one the services
//! reach through a [`FaultProxy`] of its own, which that listener advertises, so every
//! connection a service opens after bootstrapping goes through a proxy too. Brokers replicate
//! among themselves directly. The chaos tests SIGKILL brokers and fault the proxies.

use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use shared_events::KafkaConfig;

use crate::fault_proxy::FaultProxy;
use crate::free_port;
use crate::kafka_node::KafkaNode;

pub struct KafkaCluster {
    /// The direct listeners, for the test.
    pub bootstrap_servers: String,
    nodes: Vec<KafkaNode>,
    direct_ports: Vec<u16>,
    proxies: Vec<FaultProxy>,
}

impl KafkaCluster {
    /// Formats and starts `size` brokers, and waits until all of them serve.
    pub async fn start(label: &str, size: usize) -> KafkaCluster {
        let ports: Vec<[u16; 3]> = (0..size)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let voters: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, [_, _, controller])| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect();
        let replication = size.min(3);
        let min_insync = replication.saturating_sub(1).max(1);
        let (mut nodes, mut proxies) = (Vec::new(), Vec::new());
        for (i, [direct, proxied, controller]) in ports.iter().enumerate() {
            let proxy = FaultProxy::start(&format!("127.0.0.1:{proxied}")).await;
            let properties = format!(
                "node.id={id}
process.roles=broker,controller
controller.quorum.voters={voters}
controller.listener.names=CONTROLLER
listeners=DIRECT://127.0.0.1:{direct},PROXIED://127.0.0.1:{proxied},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=DIRECT://127.0.0.1:{direct},PROXIED://{proxy}
listener.security.protocol.map=DIRECT:PLAINTEXT,PROXIED:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=DIRECT
default.replication.factor={replication}
min.insync.replicas={min_insync}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_insync}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_insync}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Brokers beside the services on two cores: few threads each.
num.network.threads=2
num.io.threads=2
background.threads=2
num.replica.fetchers=1
{one_node}",
                id = i + 1,
                // As the local stack's (scripts/stack-up): a lone node restarted after a
                // SIGKILL registers again once its old session ends; a cluster keeps Kafka's
                // 9 s, as its other brokers lead meanwhile.
                one_node = if size == 1 {
                    "broker.session.timeout.ms=2500\nbroker.heartbeat.interval.ms=500\n"
                } else {
                    ""
                },
                voters = voters.join(","),
                proxy = proxy.address,
            );
            let heap_mb = if size == 1 { 512 } else { 384 };
            let node_label = format!("{label}-{}", i + 1);
            nodes.push(KafkaNode::start(&node_label, &properties, &[], heap_mb).await);
            proxies.push(proxy);
        }
        let cluster = KafkaCluster {
            bootstrap_servers: ports
                .iter()
                .map(|[direct, _, _]| format!("127.0.0.1:{direct}"))
                .collect::<Vec<_>>()
                .join(","),
            direct_ports: ports.iter().map(|[direct, _, _]| *direct).collect(),
            nodes,
            proxies,
        };
        cluster.wait_for_brokers(size).await;
        cluster
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The test's client settings: the direct listeners, without faults.
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig::local(&self.bootstrap_servers)
    }

    /// What the services bootstrap from: the proxies.
    pub fn service_bootstrap_servers(&self) -> String {
        self.proxies
            .iter()
            .map(|proxy| proxy.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The proxies between the services and each broker.
    pub fn proxies(&self) -> &[FaultProxy] {
        &self.proxies
    }

    /// SIGKILLs broker `index` (0-based); returns its pid.
    pub async fn kill(&mut self, index: usize) -> u32 {
        self.nodes[index].kill().await
    }

    /// Starts broker `index` again and waits until the cluster counts it; returns its pid.
    pub async fn restart(&mut self, index: usize) -> u32 {
        let pid = self.nodes[index].restart();
        let address = format!("127.0.0.1:{}", self.direct_ports[index]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker {} did not come back; see {}",
                index + 1,
                self.nodes[index].log().display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.wait_for_brokers(self.size()).await;
        pid
    }

    /// Waits (at most two minutes) until the cluster's metadata lists `count` brokers.
    async fn wait_for_brokers(&self, count: usize) {
        let admin: AdminClient<DefaultClientContext> = self.kafka_config().base().create().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let listed = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .map_or(0, |metadata| metadata.brokers().len());
            if listed >= count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster lists {listed} of {count} brokers; see {}",
                self.nodes[0].log().display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

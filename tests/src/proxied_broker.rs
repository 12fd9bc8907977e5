//! A broker of the test's own that the services reach only through a [`FaultProxy`]: its
//! client listener advertises the proxy's address, so every connection a client opens after
//! bootstrapping goes through the proxy too. The test itself (provisioning, the checker)
//! uses a second listener, without faults.

use shared_events::KafkaConfig;

use crate::fault_proxy::FaultProxy;
use crate::free_port;
use crate::kafka_node::{KafkaNode, SINGLE_NODE};

pub struct ProxiedBroker {
    /// The listener without faults, for the test.
    pub direct: String,
    /// What the services connect to.
    pub proxy: FaultProxy,
    node: KafkaNode,
}

impl ProxiedBroker {
    pub async fn start(label: &str) -> ProxiedBroker {
        let (direct, proxied, controller) = (free_port(), free_port(), free_port());
        let proxy = FaultProxy::start(&format!("127.0.0.1:{proxied}")).await;
        let properties = format!(
            "node.id=1
process.roles=broker,controller
controller.quorum.voters=1@127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=DIRECT://127.0.0.1:{direct},PROXIED://127.0.0.1:{proxied},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=DIRECT://127.0.0.1:{direct},PROXIED://{proxy}
listener.security.protocol.map=DIRECT:PLAINTEXT,PROXIED:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=DIRECT
{SINGLE_NODE}",
            proxy = proxy.address
        );
        let node = KafkaNode::start(label, &properties, &[], 512).await;
        let broker = ProxiedBroker {
            direct: format!("127.0.0.1:{direct}"),
            proxy,
            node,
        };
        broker.node.wait_until_serving(&broker.kafka_config()).await;
        broker
    }

    /// The test's client settings: the listener without faults.
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig::local(&self.direct)
    }
}

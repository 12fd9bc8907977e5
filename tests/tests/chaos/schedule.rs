//! The fault schedule of one round, drawn from its seed: a SIGKILL to one of the eight
//! service processes 2 s after the last one serves again, and once each, from a drawn moment
//! inside the load, the broker fault, the database outage, the network faults and the
//! poison records. Each fault is checked to have happened (a new process serves).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_e2e::draw::Draw;
use orderflow_e2e::fault_proxy::{FaultProxy, degrade};
use orderflow_e2e::kafka_cluster::KafkaCluster;
use orderflow_e2e::local_postgres;
use orderflow_e2e::workload::inject_poison;
use orderflow_e2e::{ProxiedPostgres, SERVICES, ServiceProcess, Stack};
use shared_events::KafkaConfig;
use shared_events::contracts::Topic;
use tokio::sync::Mutex;

/// How long PostgreSQL is away once, while orders flow.
pub const DATABASE_OUTAGE: Duration = Duration::from_secs(4);
/// How long a cluster's killed broker stays down, while orders flow.
pub const CLUSTER_BROKER_DOWN: Duration = Duration::from_secs(10);
/// The network faults: this much latency for this long, every connection reset, then every
/// connection half-open for this long.
pub const NETWORK_LATENCY: Duration = Duration::from_millis(200);
pub const NETWORK_FAULT: Duration = Duration::from_secs(6);

/// When each one-off fault is due, from the start of the load; the SIGKILLs' victims come
/// from the same draw.
pub struct Schedule {
    draw: Draw,
    broker_at: Duration,
    database_at: Duration,
    network_at: Duration,
    poison_at: Duration,
}

/// What the faults hit: the round's processes, brokers and database proxy.
pub struct Targets {
    pub stack: Arc<Mutex<Stack>>,
    pub replicas: Arc<Mutex<Vec<ServiceProcess>>>,
    pub cluster: KafkaCluster,
    pub database: ProxiedPostgres,
    pub kafka: KafkaConfig,
    pub prefix: String,
}

/// What the schedule did, each one-off fault with when it began.
pub struct Faults {
    pub kills: Vec<String>,
    pub broker: String,
    pub database_down: String,
    pub network: String,
    /// Poison records injected, per topic.
    pub poison: BTreeMap<Topic, usize>,
}

impl Schedule {
    /// The schedule `seed` draws for a load of `duration`: every one-off fault inside it.
    pub fn draw(seed: u64, duration: Duration) -> Self {
        let mut draw = Draw::new(seed);
        let seconds = duration.as_secs();
        let mut inside_the_load =
            |from: u64| Duration::from_secs(draw.between(from, seconds * 3 / 4));
        let broker_at = inside_the_load(seconds / 6);
        let poison_at = inside_the_load(seconds / 10);
        let database_at = inside_the_load(seconds / 6);
        let network_at = inside_the_load(seconds / 6);
        Self {
            draw,
            broker_at,
            database_at,
            network_at,
            poison_at,
        }
    }

    pub fn describe(&self) -> String {
        let Self {
            broker_at,
            database_at,
            network_at,
            poison_at,
            ..
        } = self;
        format!(
            "a SIGKILL 2 s after the last victim serves again; from {broker_at:?} on the broker \
             fault, from {database_at:?} PostgreSQL down for {DATABASE_OUTAGE:?}, from \
             {network_at:?} the network faults, from {poison_at:?} poison (each at the first \
             SIGKILL after)"
        )
    }

    /// Runs the schedule until `load_done`, then checks that every one-off fault happened;
    /// hands the targets back for the teardown.
    pub async fn run(
        mut self,
        mut targets: Targets,
        load_done: Arc<AtomicBool>,
    ) -> (Faults, Targets) {
        let start = tokio::time::Instant::now();
        let mut kills = Vec::new();
        let (mut broker, mut database_down, mut network) = (None, None, None);
        let mut poison = BTreeMap::new();
        while !load_done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            kills.push(format!(
                "{} at {:.0?}",
                self.kill_one(&targets).await,
                start.elapsed()
            ));
            let due = |at: Duration, done: bool| !done && start.elapsed() >= at;
            if due(self.broker_at, broker.is_some()) {
                let began = start.elapsed();
                let fault = broker_fault(&mut targets.cluster, &mut self.draw).await;
                broker = Some(format!("{fault} at {began:.0?}"));
            }
            if due(self.database_at, database_down.is_some()) {
                // No SIGKILL meanwhile: a service started while the database is away
                // cannot migrate, and that is not the fault under test.
                let began = start.elapsed();
                local_postgres::outage(DATABASE_OUTAGE).await;
                database_down = Some(format!("at {began:.0?}"));
            }
            if due(self.network_at, network.is_some()) {
                let began = start.elapsed();
                let proxies: Vec<&FaultProxy> = (targets.cluster.proxies().iter())
                    .chain([&targets.database.proxy])
                    .collect();
                let faults = degrade(&proxies, NETWORK_LATENCY, NETWORK_FAULT).await;
                network = Some(format!("{faults} at {began:.0?}"));
            }
            if due(self.poison_at, !poison.is_empty()) {
                poison = inject_poison(&targets.kafka, &targets.prefix).await;
            }
        }
        let missed = |fault: &str, at: Duration| {
            format!("the schedule's {fault} at {at:?} did not happen within the load")
        };
        let faults = Faults {
            kills,
            broker: broker.unwrap_or_else(|| panic!("{}", missed("broker fault", self.broker_at))),
            database_down: database_down
                .unwrap_or_else(|| panic!("{}", missed("database outage", self.database_at))),
            network: network
                .unwrap_or_else(|| panic!("{}", missed("network faults", self.network_at))),
            poison,
        };
        assert!(
            !faults.poison.is_empty(),
            "{}",
            missed("poison", self.poison_at)
        );
        (faults, targets)
    }

    /// SIGKILLs one of the eight service processes, drawn, and starts it again; returns
    /// which it was.
    async fn kill_one(&mut self, targets: &Targets) -> String {
        let pick = self.draw.below(8) as usize;
        let name = SERVICES[pick % 4];
        let (mut stack, mut replicas) = (targets.stack.lock().await, targets.replicas.lock().await);
        let victim: &mut ServiceProcess = if pick < 4 {
            stack.service(name)
        } else {
            &mut replicas[pick % 4]
        };
        let label = format!("{name}#{}", pick / 4);
        let killed = victim.pid();
        victim.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.start().await;
        // The fault happened: another process serves now (start waited for ready).
        assert_ne!(victim.pid(), killed, "{label} was not replaced");
        label
    }
}

/// The broker fault, checked (a new process serves): the only broker SIGKILLed and
/// restarted at once, or one of three, drawn, SIGKILLed and restarted after
/// [`CLUSTER_BROKER_DOWN`] while the other two lead its partitions.
async fn broker_fault(cluster: &mut KafkaCluster, draw: &mut Draw) -> String {
    let victim = draw.below(cluster.size() as u64) as usize;
    let before = cluster.kill(victim).await;
    let killed_at = std::time::Instant::now();
    if cluster.size() > 1 {
        tokio::time::sleep(CLUSTER_BROKER_DOWN).await;
    }
    let restarted_at = std::time::Instant::now();
    let after = cluster.restart(victim).await;
    // From the restart to the cluster counting the broker again.
    let back_in = restarted_at.elapsed();
    assert_ne!(before, after, "broker {} was not restarted", victim + 1);
    match cluster.size() {
        1 => format!(
            "broker SIGKILLed and restarted, serving again {:.1} s after the kill (pid {before} -> {after})",
            killed_at.elapsed().as_secs_f64()
        ),
        size => format!(
            "broker {} of {size} SIGKILLed, restarted after {CLUSTER_BROKER_DOWN:?} and serving again {:.1} s later (pid {before} -> {after})",
            victim + 1,
            back_in.as_secs_f64()
        ),
    }
}

//! The outbox relay: publishes committed outbox rows to Kafka and deletes each row only after
//! the broker acknowledged its record.
//!
//! One relay per database is active at a time: it holds a Postgres session-level advisory
//! lock, so two replicas never interleave one order's events. When the active replica dies
//! its session ends, the lock is freed and a standby takes over. A host that vanishes
//! (power, network) ends nothing by itself, so the lock is a lease: the lock session
//! proves itself every second, PostgreSQL ends it after `lock_timeout` of silence
//! (`idle_session_timeout`, and `tcp_user_timeout` for unacknowledged writes), and the
//! relay proves its lock before it sends anything more once a second has passed, so a
//! paused or partitioned relay falls silent before a standby can take over.
//!
//! The active relay is pipelined: it reads rows in id order and hands them to an idempotent
//! producer while thousands of earlier ones are still waiting for their acknowledgement,
//! and deletes acknowledged rows in bulk as they come in. The producer keeps each
//! partition's records in order, and one order's rows are inserted one transaction after
//! the other (each holds the order's lock), so id order is that order's event order.
//!
//! An id is taken at INSERT but becomes visible at COMMIT, so a row can appear after rows
//! with higher ids were read. The relay remembers the ids a read skipped ([`Gaps`]) and
//! reads them again until they appear or age out, and sweeps below its cursor now and then
//! for anything older. Redelivery after a crash can duplicate records on the wire;
//! consumers deduplicate on the event id.
//!
//! The active relay's loop is [`publishing`]; the reads of the outbox are in [`reads`],
//! the sends and what becomes of them in [`deliveries`].

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::database::{RELEASE_CHECK_LIMIT, bounded};
use crate::error::Error;
use crate::kafka::KafkaConfig;
use crate::metrics::EventMetrics;
use crate::outbox::Outbox;
use crate::retry::RetryConfig;

mod deliveries;
mod gaps;
mod publishing;
mod reads;

use publishing::Publishing;

/// Advisory-lock key held by the active relay ("outbox" in ASCII). One database per service,
/// so a constant key is enough.
const RELAY_LOCK_KEY: i64 = 0x6f75_7462_6f78;
/// How long the relay waits for the proof that its lock session is alive.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct RelayConfig {
    /// Most rows read in one query.
    #[arg(
        long = "outbox-batch-size",
        env = "OUTBOX_BATCH_SIZE",
        default_value_t = 1_000
    )]
    pub batch_size: i64,
    /// Most records sent and not yet acknowledged.
    #[arg(
        long = "outbox-max-in-flight",
        env = "OUTBOX_MAX_IN_FLIGHT",
        default_value_t = 10_000
    )]
    pub max_in_flight: usize,
    /// Poll interval while idle, and how often a standby tries the lock.
    #[arg(
        long = "outbox-poll-interval-ms",
        env = "OUTBOX_POLL_INTERVAL_MS",
        default_value_t = 500
    )]
    pub poll_interval_ms: u64,
    /// Poll interval while busy: how soon rows committed by another replica (which cannot
    /// wake this one) are seen under load.
    #[arg(
        long = "outbox-busy-poll-interval-ms",
        env = "OUTBOX_BUSY_POLL_INTERVAL_MS",
        default_value_t = 20
    )]
    pub busy_poll_interval_ms: u64,
    /// How long PostgreSQL keeps the lock of a relay that went silent (its host died or
    /// was cut off): a standby takes over after about this long. At least 4 s, well above
    /// the second between the active relay's proofs of its lock.
    #[arg(
        long = "outbox-lock-timeout-ms",
        env = "OUTBOX_LOCK_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(4_000..)
    )]
    pub lock_timeout_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

pub struct OutboxRelay {
    pool: PgPool,
    kafka: KafkaConfig,
    producer: FutureProducer,
    config: RelayConfig,
    retry: RetryConfig,
    metrics: EventMetrics,
    wakeup: Arc<Notify>,
}

impl OutboxRelay {
    /// A relay for `outbox`'s database; [`Outbox::commit`] wakes it.
    pub fn new(
        pool: PgPool,
        outbox: &Outbox,
        kafka: &KafkaConfig,
        config: RelayConfig,
        retry: RetryConfig,
        metrics: EventMetrics,
    ) -> Result<Self, Error> {
        let producer = kafka.idempotent_producer().create().map_err(Error::Kafka)?;
        Ok(Self {
            pool,
            kafka: kafka.clone(),
            producer,
            config,
            retry,
            metrics,
            wakeup: outbox.relay_wakeup(),
        })
    }

    /// Publishes until `shutdown`; records in flight are waited for (within a bound) and
    /// their rows deleted, so nothing acknowledged stays in the outbox and nothing is lost.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut delays = self.retry.endless_delays();
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => delays = self.retry.endless_delays(),
                Err(e) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, ?delay, "outbox relay interrupted; starting over");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        info!("outbox relay stopped");
        Ok(())
    }

    /// Waits to hold the relay lock, then publishes until shutdown or the lock session fails.
    async fn lead(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let options = self.pool.connect_options();
        let mut lock_session = bounded(PgConnection::connect_with(&options)).await?;
        // The lease: PostgreSQL ends this session, and so frees the lock, once it has been
        // silent (or its writes unacknowledged) for lock_timeout.
        let timeout = self.config.lock_timeout_ms;
        let lease =
            format!("SET idle_session_timeout = {timeout}; SET tcp_user_timeout = {timeout}");
        bounded(sqlx::raw_sql(sqlx::AssertSqlSafe(lease)).execute(&mut lock_session)).await?;
        loop {
            let acquired = bounded(
                sqlx::query_scalar!(
                    r#"SELECT pg_try_advisory_lock($1) AS "acquired!""#,
                    RELAY_LOCK_KEY
                )
                .fetch_one(&mut lock_session),
            )
            .await?;
            if acquired {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.idle_poll()) => {}
            }
        }
        info!("outbox relay active");
        self.metrics.relay_active.set(1);
        let result = Publishing::new(self, &mut lock_session).run(shutdown).await;
        self.metrics.relay_active.set(0);
        if result.is_err() {
            // The lock may be gone: nothing queued in this producer may reach the broker
            // while a standby publishes. The rows stay, so nothing is lost.
            self.producer
                .purge(PurgeConfig::default().queue().inflight().non_blocking());
        }
        // Ending the session releases the lock for a standby (or PostgreSQL does, once the
        // session has been silent for lock_timeout, if the goodbye never reaches it).
        let _ = tokio::time::timeout(RELEASE_CHECK_LIMIT, lock_session.close()).await;
        result
    }

    /// Proves the session holding the lock is alive, which also keeps it from going idle.
    /// A session that answers still holds the lock (PostgreSQL frees it only by ending the
    /// session); one that does not may have lost it to a standby, so this relay stops.
    async fn prove_lock(&self, lock_session: &mut PgConnection) -> Result<(), Error> {
        tokio::time::timeout(
            HEARTBEAT_TIMEOUT,
            sqlx::query!("SELECT 1 AS alive").fetch_one(&mut *lock_session),
        )
        .await
        .map_err(|_| Error::Timeout("proving the relay lock".to_owned()))??;
        Ok(())
    }

    fn idle_poll(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms)
    }

    fn busy_poll(&self) -> Duration {
        Duration::from_millis(self.config.busy_poll_interval_ms)
    }
}

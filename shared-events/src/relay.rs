//! The outbox relay: publishes committed outbox rows to Kafka in id order and deletes each
//! row only after the broker acknowledged its record.
//!
//! One relay per database is active at a time: it holds a Postgres session-level advisory
//! lock, so two replicas never interleave one order's events. When the active replica dies
//! its session ends, the lock is freed and a standby takes over. Within the active relay,
//! the idempotent producer keeps each partition's records in order across retries, and a
//! batch's rows are confirmed before the next batch is read, so a failed row is retried
//! before anything written after it. Redelivery after a crash can duplicate records on the
//! wire; consumers deduplicate on the event id.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Error;
use crate::kafka::KafkaConfig;
use crate::metrics::{EventMetrics, TopicLabels};
use crate::retry::RetryConfig;

/// Channel the outbox insert trigger notifies.
const NOTIFY_CHANNEL: &str = "outbox";
/// Advisory-lock key held by the active relay ("outbox" in ASCII). One database per service,
/// so a constant key is enough.
const RELAY_LOCK_KEY: i64 = 0x6f75_7462_6f78;

#[derive(Debug, Clone, clap::Args)]
pub struct RelayConfig {
    /// Most rows read and published in one batch.
    #[arg(
        long = "outbox-batch-size",
        env = "OUTBOX_BATCH_SIZE",
        default_value_t = 500
    )]
    pub batch_size: i64,
    /// Fallback poll when no notification arrives, and how often a standby tries the lock.
    #[arg(
        long = "outbox-poll-interval-ms",
        env = "OUTBOX_POLL_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub poll_interval_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval_ms: 1_000,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    topic: String,
    record_key: String,
    payload: Vec<u8>,
    headers: Json<HashMap<String, String>>,
}

pub struct OutboxRelay {
    pool: PgPool,
    kafka: KafkaConfig,
    producer: FutureProducer,
    config: RelayConfig,
    retry: RetryConfig,
    metrics: EventMetrics,
}

/// What one batch achieved.
struct BatchOutcome {
    read: usize,
    failed: usize,
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
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
        })
    }

    /// Publishes until `shutdown`; a batch in flight is finished first and the producer
    /// flushed, so nothing acknowledged stays in the outbox and nothing sent is lost.
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
        let _ = self.producer.flush(Duration::from_secs(10));
        info!("outbox relay stopped");
        Ok(())
    }

    /// Waits to hold the relay lock, then publishes until shutdown or the lock session fails.
    async fn lead(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let options = self.pool.connect_options();
        let mut lock_session = PgConnection::connect_with(&options).await?;
        loop {
            let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut lock_session)
                .await?;
            if acquired {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.poll_interval()) => {}
            }
        }
        info!("outbox relay active");
        self.metrics.relay_active.set(1);
        let result = self
            .publish_until_stopped(&mut lock_session, shutdown)
            .await;
        self.metrics.relay_active.set(0);
        // Ending the session releases the lock for a standby.
        let _ = lock_session.close().await;
        result
    }

    async fn publish_until_stopped(
        &mut self,
        lock_session: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let mut delays = self.retry.endless_delays();
        let mut gauges_refreshed = Instant::now() - Duration::from_secs(60);
        loop {
            // Proves the session holding the lock is alive; if it died, another relay may
            // already be active and this one must stop publishing.
            sqlx::query("SELECT 1").execute(&mut *lock_session).await?;
            let outcome = self.publish_batch().await?;
            if gauges_refreshed.elapsed() >= Duration::from_secs(1) {
                self.refresh_backlog_gauges().await?;
                gauges_refreshed = Instant::now();
            }
            if outcome.failed > 0 {
                // Every record of the batch is resolved, so the old producer holds nothing.
                // A new producer session (new producer id) retries the failed rows: after a
                // timeout librdkafka bumps the idempotent producer's epoch on its own, which
                // some Kafka-compatible brokers mishandle; a fresh session is valid anywhere.
                self.producer = self
                    .kafka
                    .idempotent_producer()
                    .create()
                    .map_err(Error::Kafka)?;
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            delays = self.retry.endless_delays();
            if outcome.read as i64 == self.config.batch_size {
                continue; // A full batch: more rows are probably waiting.
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(self.poll_interval()) => {}
            }
        }
    }

    /// Sends the oldest rows, waits for every delivery report, deletes the delivered rows.
    async fn publish_batch(&self) -> Result<BatchOutcome, Error> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, topic, record_key, payload, headers FROM outbox ORDER BY id LIMIT $1",
        )
        .bind(self.config.batch_size)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(BatchOutcome { read: 0, failed: 0 });
        }
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut headers = OwnedHeaders::new_with_capacity(row.headers.len());
            for (key, value) in row.headers.iter() {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let record = FutureRecord::to(&row.topic)
                .key(&row.record_key)
                .payload(&row.payload)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => {
                    // Stop here: sending later rows would let them overtake this one.
                    warn!(error = %e, "producer queue refused a record");
                    break;
                }
            }
        }
        let mut delivered = Vec::with_capacity(deliveries.len());
        let mut failed = rows.len() - deliveries.len();
        for (row, delivery) in rows.iter().zip(deliveries) {
            let labels = TopicLabels {
                topic: row.topic.clone(),
            };
            match delivery.await {
                Ok(Ok(_)) => {
                    delivered.push(row.id);
                    self.metrics.published.get_or_create(&labels).inc();
                }
                Ok(Err((e, _))) => {
                    failed += 1;
                    debug!(error = %e, id = row.id, "delivery failed; the row stays for a retry");
                    self.metrics.publish_failures.get_or_create(&labels).inc();
                }
                Err(_canceled) => {
                    failed += 1;
                    self.metrics.publish_failures.get_or_create(&labels).inc();
                }
            }
        }
        if failed > 0 {
            warn!(
                failed,
                delivered = delivered.len(),
                "some outbox records were not delivered; retrying"
            );
        }
        if !delivered.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&delivered)
                .execute(&self.pool)
                .await?;
        }
        Ok(BatchOutcome {
            read: rows.len(),
            failed,
        })
    }

    async fn refresh_backlog_gauges(&self) -> Result<(), Error> {
        let (backlog, oldest_age): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        self.metrics.outbox_backlog.set(backlog);
        self.metrics
            .outbox_oldest_age_seconds
            .set(oldest_age.unwrap_or(0.0));
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms)
    }
}

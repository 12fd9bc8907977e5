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

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::database::{RELEASE_CHECK_LIMIT, bounded};
use crate::kafka::KafkaConfig;
use crate::metrics::{EventMetrics, TopicLabels};
use crate::outbox::{Outbox, headers};
use crate::retry::RetryConfig;

mod gaps;

use gaps::Gaps;

/// Advisory-lock key held by the active relay ("outbox" in ASCII). One database per service,
/// so a constant key is enough.
const RELAY_LOCK_KEY: i64 = 0x6f75_7462_6f78;
/// How often the relay sweeps below its cursor for rows older than any gap it remembers.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How often the gauges are refreshed and the lock session proven alive.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// How long the relay waits for the proof that its lock session is alive.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for records in flight to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a timer poll found rows nothing woke it for (another replica commits them), the
/// relay polls at the busy interval for this long.
const BUSY_FOR: Duration = Duration::from_secs(2);

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

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    topic: String,
    record_key: String,
    payload: Vec<u8>,
    event_type: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    created_at: DateTime<Utc>,
}

/// Reads rows to publish `WHERE` the condition given, in id order. `headers` is read for
/// rows written by the previous release (see migration 0003). The query macros take only
/// literal SQL, so the select list is written once, here, and each read adds its condition.
macro_rules! select_rows {
    ($condition:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            OutboxRow,
            "SELECT id, topic, record_key, payload, event_type,
                    coalesce(traceparent, headers->>'traceparent') AS traceparent,
                    coalesce(tracestate, headers->>'tracestate') AS tracestate,
                    created_at
             FROM outbox WHERE " + $condition,
            $($arg),+
        )
    };
}

pub struct OutboxRelay {
    pool: PgPool,
    kafka: KafkaConfig,
    producer: FutureProducer,
    config: RelayConfig,
    retry: RetryConfig,
    metrics: EventMetrics,
    wakeup: std::sync::Arc<tokio::sync::Notify>,
}

/// What a delivery came to: the row id, its topic, and the outcome.
type Acknowledgement = (i64, String, Delivery);

enum Delivery {
    /// The broker has the record.
    Acknowledged,
    /// Not delivered, but may be on a retry (the broker was away, a timeout).
    Failed,
    /// The broker will never take this record (too large for it, say); the reason.
    Refused(String),
}

/// Why the broker will never take a record, if `error` says it never will: retrying the
/// same bytes can only fail the same way.
fn refusal(error: &KafkaError) -> Option<String> {
    use RDKafkaErrorCode::{InvalidRecord, MessageBatchTooLarge, MessageSizeTooLarge};
    match error.rdkafka_error_code()? {
        MessageSizeTooLarge | MessageBatchTooLarge | InvalidRecord => Some(error.to_string()),
        _ => None,
    }
}

/// The rows between read and delete.
#[derive(Default)]
struct Pipeline {
    /// Delivery reports still to come, one per record in flight.
    deliveries: FuturesUnordered<BoxFuture<'static, Acknowledgement>>,
    /// Highest id read in id order; rows above it are new.
    cursor: i64,
    gaps: Gaps,
    /// Sent, waiting for the broker: id -> when the row was written (for the age gauge).
    in_flight: BTreeMap<i64, DateTime<Utc>>,
    /// Acknowledged, not yet deleted.
    acknowledged: Vec<i64>,
    /// Refused for good, not yet moved to the dead letters: id -> reason.
    refused: Vec<(i64, String)>,
    /// A delivery failed: read nothing more until every record in flight is resolved, then
    /// start over from the oldest row with a new producer session.
    failed: bool,
}

impl Pipeline {
    /// Ids the relay holds (in flight or acknowledged), which a sweep must not send again.
    fn held(&self) -> Vec<i64> {
        self.in_flight
            .keys()
            .copied()
            .chain(self.acknowledged.iter().copied())
            .chain(self.refused.iter().map(|(id, _)| *id))
            .collect()
    }
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
        let result = self
            .publish_until_stopped(&mut lock_session, shutdown)
            .await;
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

    async fn publish_until_stopped(
        &mut self,
        lock_session: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let mut pipeline = Pipeline::default();
        let mut delays = self.retry.endless_delays();
        let mut more_to_read = true;
        // Whether the next read was asked for by a timer rather than a wake-up.
        let mut polled = false;
        let mut busy_until = Instant::now();
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut next_housekeeping = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if drain_deadline.is_none() && shutdown.is_cancelled() {
                drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            if Instant::now() >= next_housekeeping {
                // First, before anything is sent: after a pause (a stopped process, a long
                // stall) the lock may have been taken over, and this relay must stop.
                self.prove_lock(lock_session).await?;
                bounded(self.refresh_gauges(&mut pipeline)).await?;
                next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
            }
            let stopping = drain_deadline.is_some();
            let room = self
                .config
                .max_in_flight
                .saturating_sub(pipeline.in_flight.len());
            if more_to_read && !stopping && !pipeline.failed && room > 0 {
                let limit = (room as i64).min(self.config.batch_size);
                let read = bounded(self.read_and_send(&mut pipeline, limit)).await?;
                more_to_read = read as i64 == limit;
                if read > 0 && polled {
                    busy_until = Instant::now() + BUSY_FOR;
                }
                polled = false;
            }
            if Instant::now() >= next_sweep && !stopping && !pipeline.failed {
                bounded(self.sweep(&mut pipeline)).await?;
                next_sweep = Instant::now() + SWEEP_INTERVAL;
            }
            while let Some(Some(acknowledgement)) = pipeline.deliveries.next().now_or_never() {
                self.settle(&mut pipeline, acknowledgement);
            }
            bounded(self.delete_acknowledged(&mut pipeline)).await?;
            bounded(self.move_refused(&mut pipeline)).await?;
            if pipeline.in_flight.is_empty() {
                if stopping {
                    return Ok(());
                }
                if pipeline.failed {
                    self.start_over(&mut pipeline, &mut delays, shutdown)
                        .await?;
                    more_to_read = true;
                    continue;
                }
            }
            if more_to_read && !stopping && !pipeline.failed && room > 0 {
                continue; // rows are probably waiting: read on without waiting
            }
            let poll = if Instant::now() < busy_until {
                self.busy_poll()
            } else {
                self.idle_poll()
            };
            let wake_at = (Instant::now() + poll).min(next_housekeeping);
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !stopping => {}
                () = tokio::time::sleep_until(drain_deadline.unwrap_or(wake_at)), if stopping => {
                    warn!(in_flight = pipeline.in_flight.len(),
                        "records still unacknowledged at shutdown; their rows stay and are sent again");
                    return Ok(());
                }
                Some(acknowledgement) = pipeline.deliveries.next(), if !pipeline.deliveries.is_empty() => {
                    self.settle(&mut pipeline, acknowledgement);
                }
                () = self.wakeup.notified(), if !stopping => more_to_read = true,
                () = tokio::time::sleep_until(wake_at), if !stopping => {
                    more_to_read = true;
                    polled = true;
                }
            }
        }
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

    /// Reads up to `limit` new rows (and any rows that filled a gap) and sends them;
    /// returns how many new rows the read found.
    async fn read_and_send(&self, pipeline: &mut Pipeline, limit: i64) -> Result<usize, Error> {
        pipeline.gaps.expire(Instant::now());
        if !pipeline.gaps.is_empty() {
            let filled = select_rows!("id = ANY($1) ORDER BY id", &pipeline.gaps.ids())
                .fetch_all(&self.pool)
                .await?;
            for row in filled {
                pipeline.gaps.remove(row.id);
                debug!(id = row.id, "a row committed after higher ids were read");
                self.send(pipeline, row);
            }
        }
        let rows = select_rows!("id > $1 ORDER BY id LIMIT $2", pipeline.cursor, limit)
            .fetch_all(&self.pool)
            .await?;
        let read = rows.len();
        let now = Instant::now();
        for row in rows {
            pipeline.gaps.skipped(pipeline.cursor, row.id, now);
            pipeline.cursor = row.id;
            self.send(pipeline, row);
            if pipeline.failed {
                break;
            }
        }
        Ok(read)
    }

    /// Reads the rows below the cursor that the relay does not hold: ones whose transaction
    /// committed after they left the gap list, or that a failed start-over missed.
    async fn sweep(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        let rows = select_rows!(
            "id <= $1 AND id <> ALL($2) ORDER BY id",
            pipeline.cursor,
            &pipeline.held(),
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            pipeline.gaps.remove(row.id);
            self.send(pipeline, row);
        }
        Ok(())
    }

    fn send(&self, pipeline: &mut Pipeline, row: OutboxRow) {
        let mut record_headers = OwnedHeaders::new_with_capacity(3).insert(Header {
            key: headers::EVENT_TYPE,
            value: Some(&row.event_type),
        });
        for (key, value) in [
            (headers::TRACEPARENT, &row.traceparent),
            (headers::TRACESTATE, &row.tracestate),
        ] {
            if let Some(value) = value {
                record_headers = record_headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
        }
        let record = FutureRecord::to(&row.topic)
            .key(&row.record_key)
            .payload(&row.payload)
            .headers(record_headers);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                pipeline.in_flight.insert(row.id, row.created_at);
                let (id, topic) = (row.id, row.topic);
                pipeline.deliveries.push(
                    delivery
                        .map(move |result| {
                            let outcome = match result {
                                Ok(Ok(_)) => Delivery::Acknowledged,
                                Ok(Err((e, _))) => refusal(&e).map_or_else(
                                    || {
                                        debug!(error = %e, id, "delivery failed; the row stays for a retry");
                                        Delivery::Failed
                                    },
                                    Delivery::Refused,
                                ),
                                Err(_) => Delivery::Failed,
                            };
                            (id, topic, outcome)
                        })
                        .boxed(),
                );
            }
            Err((e, _)) => match refusal(&e) {
                // Nothing was queued, so later rows may go on without overtaking anything.
                Some(reason) => pipeline.refused.push((row.id, reason)),
                None => {
                    // Stop here: sending later rows would let them overtake this one.
                    warn!(error = %e, "the producer refused a record; starting over once the records in flight are resolved");
                    pipeline.failed = true;
                }
            },
        }
    }

    fn settle(&self, pipeline: &mut Pipeline, (id, topic, outcome): Acknowledgement) {
        pipeline.in_flight.remove(&id);
        let labels = TopicLabels { topic };
        match outcome {
            Delivery::Acknowledged => {
                pipeline.acknowledged.push(id);
                self.metrics.published.get_or_create(&labels).inc();
                return;
            }
            // Moved aside, then the usual start-over: records behind it were in flight.
            Delivery::Refused(reason) => pipeline.refused.push((id, reason)),
            Delivery::Failed => {}
        }
        self.metrics.publish_failures.get_or_create(&labels).inc();
        if !pipeline.failed {
            pipeline.failed = true;
            // Abandon everything behind the failed record, so nothing is sent after it in
            // this producer session: after a timeout librdkafka bumps the idempotent
            // producer's epoch on its own and resends the rest under it (valid on Kafka,
            // fatal to some Kafka-compatible brokers), and those records could overtake the
            // failed one. Their rows stay; the start-over sends them again, in id order.
            self.producer
                .purge(PurgeConfig::default().queue().inflight().non_blocking());
        }
    }

    async fn delete_acknowledged(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        if pipeline.acknowledged.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "DELETE FROM outbox WHERE id = ANY($1)",
            &pipeline.acknowledged
        )
        .execute(&self.pool)
        .await?;
        pipeline.acknowledged.clear();
        Ok(())
    }

    /// Moves the rows the broker refused for good out of the outbox, with the reason, so
    /// that the rows behind them go on.
    async fn move_refused(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        if pipeline.refused.is_empty() {
            return Ok(());
        }
        let (ids, reasons): (Vec<i64>, Vec<String>) = pipeline.refused.iter().cloned().unzip();
        let moved = sqlx::query!(
            r#"WITH refused AS (
                 SELECT * FROM unnest($1::bigint[], $2::text[]) AS r(id, reason)
             ), moved AS (
                 DELETE FROM outbox o USING refused r WHERE o.id = r.id
                 RETURNING o.*, r.reason
             )
             INSERT INTO outbox_dead_letters (id, event_id, event_type, topic, record_key,
                 payload, traceparent, tracestate, created_at, reason)
             SELECT id, event_id, event_type, topic, record_key, payload,
                 coalesce(traceparent, headers->>'traceparent'),
                 coalesce(tracestate, headers->>'tracestate'), created_at, reason
             FROM moved
             RETURNING id, topic, reason"#,
            &ids,
            &reasons,
        )
        .fetch_all(&self.pool)
        .await?;
        for row in moved {
            let (id, topic, reason) = (row.id, row.topic, row.reason);
            error!(
                id,
                topic,
                reason,
                "the broker refuses this outbox row for good; moved to outbox_dead_letters"
            );
            self.metrics
                .outbox_dead_lettered
                .get_or_create(&TopicLabels { topic })
                .inc();
        }
        pipeline.refused.clear();
        Ok(())
    }

    /// After a failed delivery: every record is resolved, so the old producer holds nothing.
    /// A new producer session (new producer id) retries from the oldest row: after a timeout
    /// librdkafka bumps the idempotent producer's epoch on its own, which some
    /// Kafka-compatible brokers mishandle; a fresh session is valid anywhere.
    async fn start_over(
        &mut self,
        pipeline: &mut Pipeline,
        delays: &mut impl Iterator<Item = Duration>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        warn!("some outbox records were not delivered; retrying from the oldest row");
        self.producer = self
            .kafka
            .idempotent_producer()
            .create()
            .map_err(Error::Kafka)?;
        *pipeline = Pipeline::default();
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }

    /// Backlog without counting the table: rows above the cursor (an upper bound: ids of
    /// rolled-back inserts count too) plus the rows the relay holds or waits for.
    async fn refresh_gauges(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        let ends = sqlx::query!(
            "SELECT (SELECT max(id) FROM outbox) AS max_id,
                    (SELECT created_at FROM outbox ORDER BY id LIMIT 1) AS oldest"
        )
        .fetch_one(&self.pool)
        .await?;
        let (max_id, oldest) = (ends.max_id, ends.oldest);
        let unread = max_id.map_or(0, |max| (max - pipeline.cursor).max(0));
        let held = pipeline.in_flight.len() + pipeline.acknowledged.len() + pipeline.gaps.len();
        self.metrics.outbox_backlog.set(unread + held as i64);
        let oldest_in_flight = pipeline.in_flight.values().min().copied();
        let oldest = match (oldest, oldest_in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let age = oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        self.metrics.outbox_oldest_age_seconds.set(age);
        Ok(())
    }

    fn idle_poll(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms)
    }

    fn busy_poll(&self) -> Duration {
        Duration::from_millis(self.config.busy_poll_interval_ms)
    }
}

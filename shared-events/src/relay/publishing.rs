//! The active relay's loop. Each turn does what is due, in this order: prove the lock and
//! refresh the gauges (every second), read and send new rows while the pipeline has room,
//! sweep below the cursor (every few seconds), take the delivery outcomes that arrived, and
//! delete or move aside the rows they resolved. Then it reads on at once if rows are
//! probably waiting, or waits for whichever comes first: an outcome, a wake-up from a
//! commit, the poll timer, or shutdown.

use std::time::Duration;

use futures::FutureExt;
use futures::stream::StreamExt;
use sqlx::PgConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::OutboxRelay;
use super::deliveries::Pipeline;
use crate::database::bounded;
use crate::error::Error;

/// How often the relay sweeps below its cursor for rows older than any gap it remembers.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How often the gauges are refreshed and the lock session proven alive.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for records in flight to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a timer poll found rows nothing woke it for (another replica commits them), the
/// relay polls at the busy interval for this long.
const BUSY_FOR: Duration = Duration::from_secs(2);

/// Where the active relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading rows and sending them while the pipeline has room.
    Leading,
    /// A delivery failed: nothing more is read until every record in flight is resolved;
    /// then a new producer session starts over from the oldest row.
    StartingOver,
    /// Shutdown: nothing more is read; the records in flight are waited for until the
    /// deadline.
    Draining { deadline: Instant },
}

/// How a wait ended.
enum Waited {
    /// Something to do: go round again.
    Woken,
    /// Draining, and the deadline passed with records still in flight.
    DrainTimedOut,
}

/// The loop of a relay that holds the lock, with its pipeline and its timers.
pub(super) struct Publishing<'r> {
    relay: &'r mut OutboxRelay,
    lock_session: &'r mut PgConnection,
    pipeline: Pipeline,
    /// Set when shutdown is first seen.
    drain_deadline: Option<Instant>,
    /// Rows are probably waiting (a wake-up, the poll timer, a full read): read at once.
    more_to_read: bool,
    /// The next read was asked for by the poll timer rather than by a commit's wake-up.
    polled: bool,
    /// Polls at the busy interval until then.
    busy_until: Instant,
    next_sweep: Instant,
    next_housekeeping: Instant,
    /// The waits before each start-over.
    start_over_delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl<'r> Publishing<'r> {
    pub(super) fn new(relay: &'r mut OutboxRelay, lock_session: &'r mut PgConnection) -> Self {
        let now = Instant::now();
        Self {
            start_over_delays: Box::new(relay.retry.endless_delays()),
            relay,
            lock_session,
            pipeline: Pipeline::default(),
            drain_deadline: None,
            more_to_read: true,
            polled: false,
            busy_until: now,
            next_sweep: now + SWEEP_INTERVAL,
            next_housekeeping: now,
        }
    }

    /// Publishes until shutdown (the records in flight drained, within a bound), or until
    /// the lock or the database fails.
    pub(super) async fn run(mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        loop {
            if self.drain_deadline.is_none() && shutdown.is_cancelled() {
                self.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            self.housekeep_when_due().await?;
            self.read_when_room().await?;
            self.sweep_when_due().await?;
            self.take_arrived_outcomes();
            bounded(self.relay.delete_acknowledged(&mut self.pipeline)).await?;
            bounded(self.relay.move_refused(&mut self.pipeline)).await?;
            if self.pipeline.in_flight.is_empty() {
                match self.phase() {
                    Phase::Draining { .. } => return Ok(()),
                    Phase::StartingOver => {
                        self.start_over(shutdown).await?;
                        continue;
                    }
                    Phase::Leading => {}
                }
            }
            if self.may_read() {
                continue; // rows are probably waiting: read on without waiting
            }
            if let Waited::DrainTimedOut = self.wait(shutdown).await {
                return Ok(());
            }
        }
    }

    fn phase(&self) -> Phase {
        match self.drain_deadline {
            Some(deadline) => Phase::Draining { deadline },
            None if self.pipeline.failed => Phase::StartingOver,
            None => Phase::Leading,
        }
    }

    /// Records the pipeline may take before it is full.
    fn room(&self) -> usize {
        self.relay
            .config
            .max_in_flight
            .saturating_sub(self.pipeline.in_flight.len())
    }

    fn may_read(&self) -> bool {
        self.more_to_read && self.phase() == Phase::Leading && self.room() > 0
    }

    /// Proves the lock, first of all: after a pause (a stopped process, a long stall) it
    /// may have been taken over, and this relay must send nothing more. Then the gauges.
    async fn housekeep_when_due(&mut self) -> Result<(), Error> {
        if Instant::now() < self.next_housekeeping {
            return Ok(());
        }
        self.relay.prove_lock(self.lock_session).await?;
        bounded(self.relay.refresh_gauges(self.pipeline.held_for_gauges())).await?;
        self.next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
        Ok(())
    }

    /// Reads and sends what the pipeline has room for. A timer's read that found rows no
    /// commit woke the relay for (another replica wrote them) makes it poll busily.
    async fn read_when_room(&mut self) -> Result<(), Error> {
        if !self.may_read() {
            return Ok(());
        }
        let limit = (self.room() as i64).min(self.relay.config.batch_size);
        let read = bounded(self.relay.read_and_send(&mut self.pipeline, limit)).await?;
        self.more_to_read = read as i64 == limit;
        if read > 0 && self.polled {
            self.busy_until = Instant::now() + BUSY_FOR;
        }
        self.polled = false;
        Ok(())
    }

    async fn sweep_when_due(&mut self) -> Result<(), Error> {
        if Instant::now() < self.next_sweep || self.phase() != Phase::Leading {
            return Ok(());
        }
        bounded(self.relay.sweep(&mut self.pipeline)).await?;
        self.next_sweep = Instant::now() + SWEEP_INTERVAL;
        Ok(())
    }

    /// The outcomes already reported, without waiting for more.
    fn take_arrived_outcomes(&mut self) {
        while let Some(Some(outcome)) = self.pipeline.deliveries.next().now_or_never() {
            self.relay.resolve(&mut self.pipeline, outcome);
        }
    }

    /// Every record of the failed session is resolved, so its producer holds nothing: a
    /// new producer session starts from the oldest row, after a backoff.
    async fn start_over(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        warn!("some outbox records were not delivered; retrying from the oldest row");
        self.relay.renew_producer()?;
        self.pipeline = Pipeline::default();
        let delay = self
            .start_over_delays
            .next()
            .unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
        self.more_to_read = true;
        Ok(())
    }

    /// Waits for whichever comes first: a delivery outcome, a commit's wake-up, the poll
    /// timer (busy or idle), housekeeping, shutdown, or, draining, the drain's deadline.
    async fn wait(&mut self, shutdown: &CancellationToken) -> Waited {
        let poll = if Instant::now() < self.busy_until {
            self.relay.busy_poll()
        } else {
            self.relay.idle_poll()
        };
        let wake_at = (Instant::now() + poll).min(self.next_housekeeping);
        let draining = match self.phase() {
            Phase::Draining { deadline } => Some(deadline),
            Phase::Leading | Phase::StartingOver => None,
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if draining.is_none() => {}
            () = tokio::time::sleep_until(draining.unwrap_or(wake_at)), if draining.is_some() => {
                warn!(in_flight = self.pipeline.in_flight.len(),
                    "records still unacknowledged at shutdown; their rows stay and are sent again");
                return Waited::DrainTimedOut;
            }
            Some(outcome) = self.pipeline.deliveries.next(), if !self.pipeline.deliveries.is_empty() => {
                self.relay.resolve(&mut self.pipeline, outcome);
            }
            () = self.relay.wakeup.notified(), if draining.is_none() => self.more_to_read = true,
            () = tokio::time::sleep_until(wake_at), if draining.is_none() => {
                self.more_to_read = true;
                self.polled = true;
            }
        }
        Waited::Woken
    }
}

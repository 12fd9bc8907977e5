//! Retry policy for transient failures: exponential backoff with jitter and a cap, then a
//! cool-down pause (circuit breaker) instead of spinning.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

#[derive(Debug, Clone, clap::Args)]
pub struct RetryConfig {
    /// First delay after a transient failure.
    #[arg(
        long = "retry-initial-delay-ms",
        env = "RETRY_INITIAL_DELAY_MS",
        default_value_t = 100
    )]
    pub initial_delay_ms: u64,
    /// Longest delay between two attempts.
    #[arg(
        long = "retry-max-delay-ms",
        env = "RETRY_MAX_DELAY_MS",
        default_value_t = 5_000
    )]
    pub max_delay_ms: u64,
    /// Retries of one record before its partition is paused for a cool-down.
    #[arg(
        long = "retry-max-attempts",
        env = "RETRY_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: usize,
    /// How long a partition stays paused before the record is tried again.
    #[arg(
        long = "retry-cool-down-ms",
        env = "RETRY_COOL_DOWN_MS",
        default_value_t = 30_000
    )]
    pub cool_down_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl RetryConfig {
    /// Delays for one record's retries; ends after `max_attempts`.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        self.exponential().with_max_times(self.max_attempts).build()
    }

    /// Delays for a loop that never gives up (the relay): the cap still applies.
    pub fn endless_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        self.exponential().without_max_times().build()
    }

    fn exponential(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_delay_ms))
            .with_max_delay(Duration::from_millis(self.max_delay_ms))
            .with_jitter()
    }

    pub fn cool_down(&self) -> Duration {
        Duration::from_millis(self.cool_down_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stop_after_the_configured_attempts_and_never_exceed_the_cap() {
        let config = RetryConfig {
            initial_delay_ms: 10,
            max_delay_ms: 40,
            max_attempts: 6,
            cool_down_ms: 1,
        };
        let delays: Vec<_> = config.delays().collect();
        assert_eq!(delays.len(), 6);
        // Jitter adds at most one more base delay on top of the capped delay.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(80)),
            "{delays:?}"
        );
    }
}

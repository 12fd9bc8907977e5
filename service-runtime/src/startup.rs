//! Start-up that waits for what other parts of a deployment provide, instead of crashing
//! until they are there: the database (a fresh PostgreSQL still initialising) and the schema
//! subjects (registered by the provisioning step, which may finish after the services start).
//! Each attempt's failure is logged with what is awaited; the last one is returned once the
//! budget is spent, so a wrong setting still fails start-up, with its reason.

use std::fmt::Display;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// Whether a failure to connect to PostgreSQL may pass by waiting: nothing listens yet, or
/// the server is still starting (57P03); a refused password or a missing database will not.
pub fn database_may_come_up(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(error) => error.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

/// How long start-up waits, in all, for one thing it needs.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct StartupConfig {
    /// Longest start-up waits for the database and for the schema subjects before it gives
    /// up. Keep it inside the startup probe's budget (deploy/base: 180 s).
    #[arg(
        long = "startup-wait-secs",
        env = "STARTUP_WAIT_SECS",
        default_value_t = 120
    )]
    pub wait_secs: u64,
}

impl StartupConfig {
    /// Runs `attempt` until it succeeds, fails in a way `passes` says will not pass, or the
    /// budget is spent, logging each failure as a wait for `what`.
    pub async fn wait_for<T, E, Fut>(
        &self,
        what: &str,
        passes: impl FnMut(&E) -> bool,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, E>
    where
        E: Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_total_delay(Some(Duration::from_secs(self.wait_secs)))
            .without_max_times();
        attempt
            .retry(backoff)
            .when(passes)
            .notify(|error, delay| {
                tracing::warn!(%error, retry_in = ?delay, "waiting for {what}");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn waits_until_the_attempt_succeeds() {
        let attempts = AtomicU32::new(0);
        let config = StartupConfig { wait_secs: 60 };
        let result: Result<u32, String> = config
            .wait_for(
                "a dependency",
                |_| true,
                || async {
                    match attempts.fetch_add(1, Ordering::SeqCst) {
                        n if n < 3 => Err(format!("not yet ({n})")),
                        n => Ok(n),
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_with_the_last_error_once_the_budget_is_spent() {
        let attempts = AtomicU32::new(0);
        let config = StartupConfig { wait_secs: 10 };
        let result: Result<(), String> = config
            .wait_for(
                "a dependency",
                |_| true,
                || async {
                    Err(format!(
                        "refused ({})",
                        attempts.fetch_add(1, Ordering::SeqCst)
                    ))
                },
            )
            .await;
        let last = attempts.load(Ordering::SeqCst) - 1;
        assert_eq!(result, Err(format!("refused ({last})")));
        assert!(last >= 3, "it retried before giving up: {last} retries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_that_will_not_pass_ends_the_wait_at_once() {
        let attempts = AtomicU32::new(0);
        let config = StartupConfig { wait_secs: 60 };
        let result: Result<(), &str> = config
            .wait_for(
                "a dependency",
                |error| *error != "wrong password",
                || async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    Err("wrong password")
                },
            )
            .await;
        assert_eq!(result, Err("wrong password"));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}

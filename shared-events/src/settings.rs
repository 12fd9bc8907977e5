//! Settings are declared once, with their defaults, on the clap structs that read them from
//! flags and the environment. Code that builds them without a command line (tests, tools)
//! gets those same defaults from [`defaults`], not from a second copy.

use clap::{Args, Command, FromArgMatches};

/// `T` with every field at its declared default, whatever the environment says.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every setting of a defaulted struct has a default");
    T::from_arg_matches(&matches).expect("the defaults parse as their own struct")
}

#[cfg(test)]
mod tests {
    use crate::{ConsumerConfig, RelayConfig, RetryConfig};

    #[test]
    fn defaults_are_the_declared_ones() {
        let retry = RetryConfig::default();
        assert_eq!(
            (
                retry.initial_delay_ms,
                retry.max_delay_ms,
                retry.max_attempts,
                retry.cool_down_ms
            ),
            (100, 5_000, 5, 30_000)
        );
        let relay = RelayConfig::default();
        assert_eq!((relay.batch_size, relay.lock_timeout_ms), (1_000, 10_000));
        let consumer = ConsumerConfig::default();
        assert_eq!(
            (consumer.batch_max_records, consumer.batch_max_wait_ms),
            (500, 0)
        );
    }
}

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

/// The PostgreSQL server of the local stack (`scripts/stack-up`), with no database named: its
/// own cluster, on a port of its own below the ephemeral range (scripts/stack-env says why),
/// reached over loopback, where TLS would only cost time.
pub const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:15432?sslmode=disable";

/// The URL of `database` on the server `server` names, keeping the server URL's parameters
/// (`postgres://h:p?sslmode=disable` and `orders` give `postgres://h:p/orders?sslmode=disable`).
pub fn database_url(server: &str, database: &str) -> String {
    match server.split_once('?') {
        Some((address, parameters)) => format!("{address}/{database}?{parameters}"),
        None => format!("{server}/{database}"),
    }
}

/// The database a URL names: the inverse of [`database_url`].
pub fn database_of(url: &str) -> &str {
    let address = url.split_once('?').map_or(url, |(address, _)| address);
    address.rsplit('/').next().unwrap_or(address)
}

#[cfg(test)]
mod tests {
    use super::{database_of, database_url};
    use crate::consumer::ConsumerConfig;
    use crate::relay::RelayConfig;
    use crate::retry::RetryConfig;

    #[test]
    fn a_database_url_keeps_the_server_urls_parameters() {
        assert_eq!(
            database_url("postgres://u@h:1?sslmode=disable", "orders"),
            "postgres://u@h:1/orders?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://u@h:1", "orders"),
            "postgres://u@h:1/orders"
        );
        assert_eq!(
            database_of("postgres://u@h:1/orders?sslmode=disable"),
            "orders"
        );
        assert_eq!(database_of("postgres://u@h:1/orders"), "orders");
    }

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

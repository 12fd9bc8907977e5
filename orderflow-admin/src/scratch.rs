//! Topics the tests and the benchmark make for each run (a prefix of their own per run, so
//! runs never share state) and leave behind: a broker that kept them all ran out of heap
//! answering metadata requests (12,000 partitions after two days of test runs).

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

/// Whether `topic` is a scratch topic of a test or benchmark run: its prefix (up to the
/// first `-`) is `it` and 10 hex digits (shared-events' tests), `e2e`, a label and 8 hex
/// digits (the end-to-end tests), or `bench`, 8 hex digits and a label (the benchmark).
pub fn is_scratch(topic: &str) -> bool {
    let Some((prefix, _)) = topic.split_once('-') else {
        return false;
    };
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let label = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if let Some(rest) = prefix.strip_prefix("it") {
        return rest.len() == 10 && hex(rest);
    }
    if let Some(rest) = prefix.strip_prefix("e2e") {
        return rest.len() >= 8 && label(rest) && hex(&rest[rest.len() - 8..]);
    }
    if let Some(rest) = prefix.strip_prefix("bench") {
        return rest.len() >= 8 && hex(&rest[..8]) && label(&rest[8..]);
    }
    false
}

/// Deletes every scratch topic on the broker; returns how many.
pub async fn delete_scratch_topics(
    admin: &AdminClient<DefaultClientContext>,
) -> anyhow::Result<usize> {
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .context("listing the broker's topics")?;
    let scratch: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| is_scratch(name))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in scratch.chunks(500) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for result in admin.delete_topics(&names, &options).await? {
            if let Err((topic, error)) = result {
                anyhow::bail!("deleting {topic}: {error}");
            }
        }
    }
    Ok(scratch.len())
}

#[cfg(test)]
mod tests {
    use super::is_scratch;

    #[test]
    fn only_the_prefixes_of_test_and_bench_runs_are_scratch() {
        for scratch in [
            "it0a1b2c3d4e-orders",
            "e2echaosc3c68f9e-payments.dlq",
            "e2ef464ef953-inventory",
            "bench22487ef5saga-orders",
            "bench22487ef5p0-shipments",
        ] {
            assert!(is_scratch(scratch), "{scratch}");
        }
        for kept in [
            "orders",
            "payments.dlq",
            "staging-orders",
            "items-orders",
            "it-orders",
            "e2e-orders",
            "smoke-check-orders",
            "benchmark-orders",
            "__consumer_offsets",
        ] {
            assert!(!is_scratch(kept), "{kept}");
        }
    }
}

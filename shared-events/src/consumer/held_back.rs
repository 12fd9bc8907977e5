//! What the runner says of a partition it holds back, written where any reader of the
//! group's offsets finds it: the metadata of the group's committed offset on that partition
//! (Kafka keeps a short string beside each committed offset for this). The runner writes it
//! when it pauses a partition for a cool-down and when it finds one stalled; the group's
//! next commit there, made once the partition moves again, clears it. So an operator
//! reading an order's partition sees, beside the lag, why nothing moves, without asking
//! the consumer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Marks metadata as ours: anything else in the field (another tool's commit) is not read.
const MARK: &str = "orderflow:";

/// The longest reason kept: the broker refuses metadata over `offset.metadata.max.bytes`
/// (4,096 by default) and fails the whole commit.
const REASON_LIMIT: usize = 500;

/// Why the group's consumer does not move on a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HeldBack {
    /// The record at the committed offset kept failing after its retries: the partition is
    /// not fetched until `until`, then that record is tried again.
    Paused {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        /// The last failure.
        reason: String,
    },
    /// It lagged while its committed offset did not move for several session timeouts,
    /// whoever held it: the member that saw it left and rejoined the group to have every
    /// partition assigned again.
    Stalled { since: DateTime<Utc> },
}

impl HeldBack {
    pub fn paused(since: DateTime<Utc>, until: DateTime<Utc>, reason: &str) -> Self {
        let mut reason = reason.to_owned();
        if reason.len() > REASON_LIMIT {
            let mut end = REASON_LIMIT;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self::Paused {
            since,
            until,
            reason,
        }
    }

    /// The offset commit's metadata that carries it.
    pub fn to_metadata(&self) -> String {
        let json = serde_json::to_string(self).expect("a plain enum serializes");
        format!("{MARK}{json}")
    }

    /// What the runner last wrote with the committed offset, if the metadata is its own.
    pub fn from_metadata(metadata: &str) -> Option<Self> {
        serde_json::from_str(metadata.strip_prefix(MARK)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn what_the_runner_writes_it_reads_back() {
        for held in [
            HeldBack::paused(at(0), at(30), "database unavailable"),
            HeldBack::Stalled { since: at(5) },
        ] {
            assert_eq!(HeldBack::from_metadata(&held.to_metadata()), Some(held));
        }
    }

    #[test]
    fn an_empty_or_foreign_metadata_says_nothing() {
        assert_eq!(HeldBack::from_metadata(""), None);
        assert_eq!(HeldBack::from_metadata("{\"state\":\"paused\"}"), None);
        assert_eq!(HeldBack::from_metadata("orderflow:not json"), None);
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary_to_stay_within_the_broker_limit() {
        let held = HeldBack::paused(at(0), at(30), &"é".repeat(400));
        let HeldBack::Paused { reason, .. } = &held else {
            unreachable!()
        };
        assert_eq!(reason.chars().count(), 250);
        assert!(held.to_metadata().len() < 4096);
    }
}

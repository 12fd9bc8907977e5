//! Ids the relay's reads skipped. An id is taken at INSERT and becomes visible at COMMIT, so
//! when a read returns ids 7 and 9, id 8 is a transaction still running (or one that rolled
//! back). The relay reads the remembered ids again until they appear or age out; its sweep
//! below the cursor covers whatever commits later than that.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How long a skipped id is read again on every pass. A transaction that stays open longer
/// is found by the sweep instead.
const REMEMBER_FOR: Duration = Duration::from_secs(10);
/// Wider skips are not remembered id by id (a relay starting on an old table sees its first
/// id far above zero); the sweep covers them.
const WIDEST_REMEMBERED: i64 = 1_000;

#[derive(Debug, Default)]
pub(super) struct Gaps {
    /// Skipped id -> when it was first skipped.
    skipped: BTreeMap<i64, Instant>,
}

impl Gaps {
    /// Notes the ids between `cursor` (the last id read) and `next` (the id read after it).
    pub(super) fn skipped(&mut self, cursor: i64, next: i64, now: Instant) {
        if cursor == 0 || next - cursor - 1 > WIDEST_REMEMBERED {
            return;
        }
        for id in cursor + 1..next {
            self.skipped.entry(id).or_insert(now);
        }
    }

    pub(super) fn remove(&mut self, id: i64) {
        self.skipped.remove(&id);
    }

    /// Forgets ids skipped longer ago than [`REMEMBER_FOR`] (rolled back, most likely).
    pub(super) fn expire(&mut self, now: Instant) {
        self.skipped
            .retain(|_, since| now.duration_since(*since) < REMEMBER_FOR);
    }

    pub(super) fn ids(&self) -> Vec<i64> {
        self.skipped.keys().copied().collect()
    }

    pub(super) fn len(&self) -> usize {
        self.skipped.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.skipped.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ids_between_two_reads_rows_are_remembered_until_they_appear_or_age_out() {
        let mut gaps = Gaps::default();
        let now = Instant::now();
        gaps.skipped(6, 7, now);
        gaps.skipped(7, 10, now);
        assert_eq!(gaps.ids(), [8, 9]);
        gaps.remove(8);
        assert_eq!(gaps.ids(), [9]);
        tokio::time::advance(REMEMBER_FOR).await;
        gaps.expire(Instant::now());
        assert!(gaps.is_empty());
    }

    #[test]
    fn the_first_read_and_very_wide_skips_are_left_to_the_sweep() {
        let mut gaps = Gaps::default();
        let now = Instant::now();
        gaps.skipped(0, 5_000_000, now);
        gaps.skipped(10, 10 + WIDEST_REMEMBERED + 2, now);
        assert!(gaps.is_empty());
        gaps.skipped(10, 10 + WIDEST_REMEMBERED + 1, now);
        assert_eq!(gaps.len(), WIDEST_REMEMBERED as usize);
    }
}

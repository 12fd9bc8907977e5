//! What the console's live feed has heard and not yet shown: pure bookkeeping, no I/O.
//!
//! The feed hears events from the topics and shows orders from the read model. The read
//! model trails the topics by as long as this service's consumer takes to record an event,
//! so an order is read when it is heard of and once more a moment later; whatever the first
//! read missed, the second shows.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

/// How far back the counters look.
pub const WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// When an order heard of is read again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// Most orders read at once; the rest wait for the next read.
pub const MAX_READ: usize = 200;

/// Orders placed and ended over the last minute (or since the feed started, if later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub since: DateTime<Utc>,
    pub placed: u32,
    pub completed: u32,
    pub cancelled: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Milestone {
    Placed,
    Completed,
    Cancelled,
}

#[derive(Debug)]
pub struct Feed {
    started: DateTime<Utc>,
    changed: VecDeque<Uuid>,
    pending: HashSet<Uuid>,
    rechecks: VecDeque<(Instant, Uuid)>,
    milestones: VecDeque<(DateTime<Utc>, Milestone)>,
}

impl Feed {
    pub fn new(started: DateTime<Utc>) -> Self {
        Self {
            started,
            changed: VecDeque::new(),
            pending: HashSet::new(),
            rechecks: VecDeque::new(),
            milestones: VecDeque::new(),
        }
    }

    /// Notes an event of `order_id`, published at `at`.
    pub fn heard(&mut self, order_id: Uuid, event_type: &str, at: DateTime<Utc>) {
        if self.pending.insert(order_id) {
            self.changed.push_back(order_id);
        }
        let milestone = match event_type {
            "OrderPlaced" => Milestone::Placed,
            "OrderCompleted" => Milestone::Completed,
            "OrderCancelled" => Milestone::Cancelled,
            _ => return,
        };
        self.milestones.push_back((at.max(self.started), milestone));
    }

    /// The orders to read now: those heard of since the last read (at most [`MAX_READ`]),
    /// and those heard of [`RECHECK_AFTER`] ago, read again.
    pub fn due(&mut self, now: Instant) -> Vec<Uuid> {
        let mut due = Vec::new();
        while let Some(&(at, order_id)) = self.rechecks.front() {
            if at > now || due.len() >= MAX_READ {
                break;
            }
            self.rechecks.pop_front();
            if !self.pending.contains(&order_id) {
                due.push(order_id);
            }
        }
        while due.len() < MAX_READ {
            let Some(order_id) = self.changed.pop_front() else {
                break;
            };
            self.pending.remove(&order_id);
            self.rechecks.push_back((now + RECHECK_AFTER, order_id));
            due.push(order_id);
        }
        due
    }

    /// The counters as of `now`; forgets what has left the window.
    pub fn counters(&mut self, now: DateTime<Utc>) -> Counters {
        let since = (now - WINDOW).max(self.started);
        while self.milestones.front().is_some_and(|(at, _)| *at < since) {
            self.milestones.pop_front();
        }
        let count = |wanted| {
            self.milestones
                .iter()
                .filter(|(at, m)| *m == wanted && *at <= now)
                .count() as u32
        };
        Counters {
            since,
            placed: count(Milestone::Placed),
            completed: count(Milestone::Completed),
            cancelled: count(Milestone::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn an_order_heard_of_is_read_now_and_once_more_a_moment_later() {
        let now = Instant::now();
        let mut feed = Feed::new(Utc::now());
        feed.heard(id(1), "OrderPlaced", Utc::now());
        feed.heard(id(1), "PaymentAuthorized", Utc::now());
        feed.heard(id(2), "OrderPlaced", Utc::now());
        assert_eq!(feed.due(now), [id(1), id(2)]);
        assert!(feed.due(now + RECHECK_AFTER / 2).is_empty());
        assert_eq!(feed.due(now + RECHECK_AFTER), [id(1), id(2)]);
        assert!(feed.due(now + RECHECK_AFTER * 3).is_empty());
    }

    #[test]
    fn a_recheck_is_skipped_when_the_order_is_to_be_read_anyway() {
        let now = Instant::now();
        let mut feed = Feed::new(Utc::now());
        feed.heard(id(1), "OrderPlaced", Utc::now());
        assert_eq!(feed.due(now), [id(1)]);
        feed.heard(id(1), "StockReserved", Utc::now());
        // Due for its recheck and changed again: read once, then rechecked later.
        assert_eq!(feed.due(now + RECHECK_AFTER), [id(1)]);
        assert_eq!(feed.due(now + RECHECK_AFTER * 2), [id(1)]);
    }

    #[test]
    fn reads_are_bounded_and_the_rest_wait_their_turn() {
        let now = Instant::now();
        let mut feed = Feed::new(Utc::now());
        for n in 0..(MAX_READ as u128 + 5) {
            feed.heard(id(n), "OrderPlaced", Utc::now());
        }
        assert_eq!(feed.due(now).len(), MAX_READ);
        assert_eq!(
            feed.due(now),
            (MAX_READ as u128..MAX_READ as u128 + 5)
                .map(id)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn counters_cover_the_last_minute_but_not_before_the_feed_started() {
        let start = Utc::now();
        let mut feed = Feed::new(start);
        let at = |secs| start + chrono::TimeDelta::seconds(secs);
        feed.heard(id(1), "OrderPlaced", at(0));
        feed.heard(id(1), "OrderCompleted", at(1));
        feed.heard(id(2), "OrderPlaced", at(30));
        feed.heard(id(2), "PaymentDeclined", at(30));
        feed.heard(id(2), "OrderCancelled", at(31));
        let early = feed.counters(at(40));
        assert_eq!(early.since, start, "a young feed counts from its start");
        assert_eq!((early.placed, early.completed, early.cancelled), (2, 1, 1));
        let later = feed.counters(at(80));
        assert_eq!(later.since, at(20));
        assert_eq!((later.placed, later.completed, later.cancelled), (1, 0, 1));
    }
}

//! Which partitions the consumer takes records from right now. A partition whose record keeps
//! failing is paused for a cool-down (the circuit breaker), then rewound to that record; the
//! cool-down doubles while the same record keeps stalling.
//!
//! Pure bookkeeping on tokio's clock: the runner makes the matching librdkafka calls (pause,
//! seek, resume), so the rules here are tested on paused time without a broker.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A repeated stall doubles the cool-down up to this many times the configured one.
const MAX_COOL_DOWN_FACTOR: u32 = 8;

/// Paused and rewound partitions, and how long each pause lasts.
#[derive(Debug)]
pub struct PartitionGate {
    cool_down: Duration,
    states: HashMap<TopicPartition, State>,
    /// The last stall of each partition: a new stall at the same offset backs off further.
    stalls: HashMap<TopicPartition, Stall>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing is taken from the partition until `until`; then it is rewound to `offset`.
    Paused { offset: i64, until: Instant },
    /// Rewound to `offset`. Records fetched before the rewind (later offsets) are dropped
    /// until `offset` comes back, or until `expires` (should the record be gone for good).
    Rewound { offset: i64, expires: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Stall {
    offset: i64,
    count: u32,
}

impl PartitionGate {
    pub fn new(cool_down: Duration) -> Self {
        Self {
            cool_down,
            states: HashMap::new(),
            stalls: HashMap::new(),
        }
    }

    /// Pauses `partition` with `offset` as the record to retry; returns the cool-down. Each
    /// stall at the offset of the previous one doubles the cool-down, up to a cap.
    pub fn pause(&mut self, partition: TopicPartition, offset: i64) -> Duration {
        let count = match self.stalls.get(&partition) {
            Some(stall) if stall.offset == offset => stall.count + 1,
            _ => 1,
        };
        self.stalls
            .insert(partition.clone(), Stall { offset, count });
        let factor = 2u32.saturating_pow(count - 1).min(MAX_COOL_DOWN_FACTOR);
        let cool_down = self.cool_down * factor;
        let until = Instant::now() + cool_down;
        self.states
            .insert(partition, State::Paused { offset, until });
        cool_down
    }

    /// When the earliest pause ends, if any partition is paused.
    pub fn next_resume(&self) -> Option<Instant> {
        self.states
            .values()
            .filter_map(|state| match state {
                State::Paused { until, .. } => Some(*until),
                State::Rewound { .. } => None,
            })
            .min()
    }

    /// The partitions whose cool-down is over, with the offset to rewind each to. They count
    /// as rewound from now on: the runner seeks and resumes them (or pauses them again).
    pub fn take_due(&mut self) -> Vec<(TopicPartition, i64)> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (partition, state) in &mut self.states {
            if let State::Paused { offset, until } = *state
                && until <= now
            {
                *state = State::Rewound {
                    offset,
                    expires: now + self.cool_down,
                };
                due.push((partition.clone(), offset));
            }
        }
        due.sort();
        due
    }

    /// Whether the record at `offset` of `partition` may be processed now. A paused partition
    /// admits nothing; a rewound one admits the record it was rewound to (then everything
    /// after it) and drops the later records fetched before the rewind.
    pub fn admit(&mut self, partition: &TopicPartition, offset: i64) -> bool {
        match self.states.get(partition) {
            None => true,
            Some(State::Paused { .. }) => false,
            Some(&State::Rewound {
                offset: rewound,
                expires,
            }) => {
                if offset > rewound && Instant::now() < expires {
                    return false;
                }
                self.states.remove(partition);
                true
            }
        }
    }

    /// Ends every pause now: the next [`take_due`](Self::take_due) rewinds them all. For when
    /// what they waited out is over (the database answers again).
    pub fn end_pauses(&mut self) {
        let now = Instant::now();
        for state in self.states.values_mut() {
            if let State::Paused { until, .. } = state {
                *until = now;
            }
        }
    }

    /// Whether `partition` takes no records at all right now.
    pub fn is_paused(&self, partition: &TopicPartition) -> bool {
        matches!(self.states.get(partition), Some(State::Paused { .. }))
    }

    /// Drops everything known about `partition`: it was revoked, or assigned afresh (a new
    /// assignment starts unpaused, whatever this consumer did with it before).
    pub fn forget(&mut self, partition: &TopicPartition) {
        self.states.remove(partition);
        self.stalls.remove(partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(10);

    fn orders(partition: i32) -> TopicPartition {
        TopicPartition::new("orders", partition)
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_partition_admits_nothing_until_its_cool_down_is_over() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        assert_eq!(gate.pause(orders(0), 42), COOL_DOWN);
        assert!(!gate.admit(&orders(0), 42));
        assert!(
            gate.admit(&orders(1), 42),
            "other partitions are not affected"
        );
        assert_eq!(gate.next_resume(), Some(Instant::now() + COOL_DOWN));

        tokio::time::advance(COOL_DOWN - Duration::from_millis(1)).await;
        assert!(gate.take_due().is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(gate.take_due(), vec![(orders(0), 42)]);
        assert_eq!(gate.next_resume(), None);
        assert!(!gate.is_paused(&orders(0)));
    }

    #[tokio::test(start_paused = true)]
    async fn ended_pauses_are_due_at_once_and_rewound_to_their_record() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        gate.pause(orders(0), 42);
        gate.pause(orders(1), 7);
        tokio::time::advance(Duration::from_secs(1)).await;
        gate.end_pauses();
        assert_eq!(gate.next_resume(), Some(Instant::now()));
        assert_eq!(gate.take_due(), vec![(orders(0), 42), (orders(1), 7)]);
        assert!(gate.admit(&orders(0), 42));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rewound_partition_drops_records_fetched_before_the_rewind() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        gate.pause(orders(0), 42);
        tokio::time::advance(COOL_DOWN).await;
        gate.take_due();
        assert!(!gate.admit(&orders(0), 43), "fetched before the rewind");
        assert!(gate.admit(&orders(0), 42), "the rewound record itself");
        assert!(gate.admit(&orders(0), 43), "and everything after it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rewound_record_that_never_comes_back_does_not_block_the_partition_forever() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        gate.pause(orders(0), 42);
        tokio::time::advance(COOL_DOWN).await;
        gate.take_due();
        tokio::time::advance(COOL_DOWN).await;
        assert!(gate.admit(&orders(0), 50), "retention removed offset 42");
    }

    #[tokio::test(start_paused = true)]
    async fn stalling_again_on_the_same_record_doubles_the_cool_down_up_to_a_cap() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        let mut cool_downs = Vec::new();
        for _ in 0..6 {
            cool_downs.push(gate.pause(orders(0), 42).as_secs());
            tokio::time::advance(Duration::from_secs(100)).await;
            gate.take_due();
        }
        assert_eq!(cool_downs, [10, 20, 40, 80, 80, 80]);
        assert_eq!(
            gate.pause(orders(0), 43),
            COOL_DOWN,
            "a new record starts over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reassigned_partition_starts_unpaused() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        gate.pause(orders(0), 42);
        gate.pause(orders(0), 42);
        gate.forget(&orders(0));
        assert!(gate.admit(&orders(0), 7));
        assert_eq!(gate.next_resume(), None);
        assert_eq!(
            gate.pause(orders(0), 42),
            COOL_DOWN,
            "its stall history is gone too"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn due_partitions_come_out_in_a_stable_order() {
        let mut gate = PartitionGate::new(COOL_DOWN);
        gate.pause(orders(2), 1);
        gate.pause(orders(0), 5);
        gate.pause(TopicPartition::new("payments", 1), 3);
        tokio::time::advance(COOL_DOWN).await;
        let due: Vec<String> = gate
            .take_due()
            .into_iter()
            .map(|(p, offset)| format!("{p}@{offset}"))
            .collect();
        assert_eq!(due, ["orders[0]@5", "orders[2]@1", "payments[1]@3"]);
    }
}

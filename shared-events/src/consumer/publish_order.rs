//! A batch in the order its records were published. Kafka orders records within a
//! partition only; a batch holds what several partitions delivered, each partition's run in
//! one piece, in whatever order the fetches came back. A service that hears one order on two
//! topics (shipping reads the order's cancellation on `orders` and its reservation on
//! `inventory`) would then apply a reservation published 170 ms after the cancellation
//! first, only because it came from the other fetch. Merging the partitions' runs by each
//! record's timestamp (when its producer sent it) applies them as they happened, while each
//! partition keeps its own order. Pure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;

/// `records` with the runs of each partition merged by timestamp: among the partitions'
/// next records, the one sent first goes first (ties and records without a timestamp keep
/// their place in arrival order). Each partition's records stay in the order they came.
pub fn in_publish_order<T, P: Eq + Hash>(
    records: Vec<T>,
    partition_and_timestamp: impl Fn(&T) -> (P, Option<i64>),
) -> Vec<T> {
    let total = records.len();
    let mut runs: Vec<VecDeque<(i64, usize, T)>> = Vec::new();
    let mut run_of: HashMap<P, usize> = HashMap::new();
    let mut last_time = i64::MIN;
    for (arrival, record) in records.into_iter().enumerate() {
        let (partition, timestamp) = partition_and_timestamp(&record);
        // Without a timestamp, a record goes with the one that came before it.
        let time = timestamp.unwrap_or(last_time);
        last_time = time;
        let run = *run_of.entry(partition).or_insert_with(|| {
            runs.push(VecDeque::new());
            runs.len() - 1
        });
        runs[run].push_back((time, arrival, record));
    }
    if runs.len() < 2 {
        return runs
            .pop()
            .map(|run| run.into_iter().map(|(_, _, record)| record).collect())
            .unwrap_or_default();
    }
    let mut heads: BinaryHeap<Reverse<(i64, usize, usize)>> = runs
        .iter()
        .enumerate()
        .filter_map(|(run, records)| {
            let (time, arrival, _) = records.front()?;
            Some(Reverse((*time, *arrival, run)))
        })
        .collect();
    let mut merged = Vec::with_capacity(total);
    while let Some(Reverse((_, _, run))) = heads.pop() {
        let (_, _, record) = runs[run].pop_front().expect("a head is in its run");
        merged.push(record);
        if let Some((time, arrival, _)) = runs[run].front() {
            heads.push(Reverse((*time, *arrival, run)));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (partition, timestamp, label)
    type Rec = (&'static str, Option<i64>, &'static str);

    fn order(records: Vec<Rec>) -> Vec<&'static str> {
        in_publish_order(records, |(partition, time, _)| (*partition, *time))
            .into_iter()
            .map(|(_, _, label)| label)
            .collect()
    }

    #[test]
    fn runs_of_partitions_are_merged_by_when_they_were_sent() {
        // As two fetches deliver them: all of inventory's, then all of orders'.
        let records = vec![
            ("inventory-3", Some(174), "StockReserved"),
            ("orders-3", Some(0), "OrderPlaced"),
            ("orders-3", Some(7), "OrderCancellationRequested"),
        ];
        assert_eq!(
            order(records),
            ["OrderPlaced", "OrderCancellationRequested", "StockReserved"]
        );
    }

    #[test]
    fn a_partition_keeps_its_own_order_whatever_its_timestamps() {
        // Two producers with skewed clocks on one partition: its order is the log's.
        let records = vec![
            ("a", Some(50), "a1"),
            ("a", Some(10), "a2"),
            ("b", Some(20), "b1"),
            ("b", Some(60), "b2"),
        ];
        assert_eq!(order(records), ["b1", "a1", "a2", "b2"]);
    }

    #[test]
    fn ties_and_missing_timestamps_keep_arrival_order() {
        let records = vec![
            ("a", Some(5), "a1"),
            ("b", Some(5), "b1"),
            ("a", None, "a2"),
            ("b", Some(5), "b2"),
        ];
        assert_eq!(order(records), ["a1", "b1", "a2", "b2"]);
        assert!(order(vec![]).is_empty());
        assert_eq!(order(vec![("a", None, "only")]), ["only"]);
    }
}

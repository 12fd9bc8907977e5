//! At most N of something per key at once (connections per peer address, live streams per
//! subject): a place is taken with [`PerKeyLimit::take`] and given back when its
//! [`PerKeySlot`] is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct PerKeyLimit<K: Eq + Hash + Clone> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    limit: usize,
}

/// A place taken for a key; given back when dropped.
pub struct PerKeySlot<K: Eq + Hash + Clone> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash + Clone> PerKeyLimit<K> {
    pub fn new(limit: usize) -> Self {
        Self {
            open: Arc::default(),
            limit,
        }
    }

    /// A place for `key`, unless it holds `limit` already.
    pub fn take(&self, key: &K) -> Option<PerKeySlot<K>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PerKeySlot {
            open: self.open.clone(),
            key: key.clone(),
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for PerKeySlot<K> {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_places_back_when_they_are_dropped() {
        let limit = PerKeyLimit::new(2);
        let first = limit.take(&"a").unwrap();
        let _second = limit.take(&"a").unwrap();
        assert!(limit.take(&"a").is_none());
        assert!(limit.take(&"b").is_some(), "another key is not held back");
        drop(first);
        assert!(limit.take(&"a").is_some());
    }
}

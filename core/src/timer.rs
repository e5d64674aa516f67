//! The deadline queue behind every machine's `poll_timeout`.
//!
//! Contract: each key has at most one armed deadline; arming again replaces
//! it; [`TimerQueue::next`] is the earliest deadline in O(log n) (no scan);
//! [`TimerQueue::pop_due`] removes and returns the earliest key whose deadline
//! is at or before `now`, so a fired timer is always disarmed. Ties are broken
//! by key order, which keeps firing order deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Deadlines keyed by `K`, ordered by time then key.
#[derive(Debug, Clone)]
pub struct TimerQueue<K: Ord + Clone> {
    by_deadline: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            by_deadline: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> TimerQueue<K> {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms (or re-arms) `key` to fire at `at`.
    pub fn arm(&mut self, key: K, at: Instant) {
        if let Some(previous) = self.by_key.insert(key.clone(), at) {
            self.by_deadline.remove(&(previous, key.clone()));
        }
        self.by_deadline.insert((at, key));
    }

    /// Disarms `key`; returns the deadline it had, if any.
    pub fn disarm(&mut self, key: &K) -> Option<Instant> {
        let at = self.by_key.remove(key)?;
        self.by_deadline.remove(&(at, key.clone()));
        Some(at)
    }

    /// The deadline armed for `key`.
    #[must_use]
    pub fn deadline_of(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest armed deadline and its key.
    #[must_use]
    pub fn next(&self) -> Option<(Instant, &K)> {
        self.by_deadline.first().map(|(at, key)| (*at, key))
    }

    /// Removes and returns the earliest key due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (at, _) = self.by_deadline.first()?;
        if *at > now {
            return None;
        }
        let (at, key) = self.by_deadline.pop_first()?;
        self.by_key.remove(&key);
        Some((at, key))
    }

    /// How many deadlines are armed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no deadline is armed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rearming_a_key_replaces_its_deadline() {
        let t0 = crate::time::test_start();
        let mut queue = TimerQueue::new();
        queue.arm("a", t0 + Duration::from_secs(5));
        queue.arm("a", t0 + Duration::from_secs(1));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next(), Some((t0 + Duration::from_secs(1), &"a")));
        assert_eq!(
            queue.pop_due(t0 + Duration::from_secs(2)).map(|(_, k)| k),
            Some("a")
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn pop_due_returns_nothing_before_the_deadline_and_fires_once() {
        let t0 = crate::time::test_start();
        let mut queue = TimerQueue::new();
        queue.arm(1u32, t0 + Duration::from_millis(10));
        assert_eq!(queue.pop_due(t0), None);
        assert!(queue.pop_due(t0 + Duration::from_millis(10)).is_some());
        assert_eq!(queue.pop_due(t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn equal_deadlines_fire_in_key_order() {
        let t0 = crate::time::test_start();
        let mut queue = TimerQueue::new();
        for key in [3u32, 1, 2] {
            queue.arm(key, t0);
        }
        let fired: Vec<u32> = std::iter::from_fn(|| queue.pop_due(t0).map(|(_, k)| k)).collect();
        assert_eq!(fired, vec![1, 2, 3]);
    }
}

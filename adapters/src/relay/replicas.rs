//! [`ReplicaViews`]: the gateway's open relay views over mirrored cores, kept
//! in a least-recently-used set of bounded size.
//!
//! Opening a view reads every counted entry of the relay's mirrored logs and
//! verifies each event, so views are kept open while they are used; the least
//! recently used one is closed when the set is full (default 32 open views, the
//! original's `maxReplicas`). A closed view is rebuilt on next use.

use std::collections::BTreeMap;

use hypergate_core::ids::RelayKey;

use super::reader::{BlockSource, CatchUp, RelayReader};

/// The original's default number of open replica views.
pub const DEFAULT_OPEN_VIEWS: usize = 32;

/// A bounded set of open relay views.
#[derive(Debug)]
pub struct ReplicaViews {
    capacity: usize,
    views: BTreeMap<RelayKey, (RelayReader, u64)>,
    clock: u64,
    opened: u64,
    closed: u64,
}

impl ReplicaViews {
    /// An empty set holding at most `capacity` views (at least one).
    pub fn new(capacity: usize) -> ReplicaViews {
        ReplicaViews {
            capacity: capacity.max(1),
            views: BTreeMap::new(),
            clock: 0,
            opened: 0,
            closed: 0,
        }
    }

    /// Brings `relay`'s view up to date with `source`, opening it (and closing the
    /// least recently used view if the set is full) when it is not open. Returns
    /// the view and what changed in this call.
    pub async fn refresh<S: BlockSource>(
        &mut self,
        relay: RelayKey,
        source: &mut S,
    ) -> Result<(&RelayReader, CatchUp), S::Error> {
        self.clock += 1;
        let clock = self.clock;
        if !self.views.contains_key(&relay) {
            if self.views.len() >= self.capacity {
                self.close_least_recently_used();
            }
            self.opened += 1;
        }
        let (reader, last_used) = self
            .views
            .entry(relay)
            .or_insert_with(|| (RelayReader::new(relay), clock));
        *last_used = clock;
        let outcome = reader.catch_up(source).await?;
        Ok((reader, outcome))
    }

    /// The open view of `relay`, if any (does not count as a use).
    pub fn get(&self, relay: &RelayKey) -> Option<&RelayReader> {
        self.views.get(relay).map(|(reader, _)| reader)
    }

    /// Closes `relay`'s view (relay removed, or its mirrors evicted).
    pub fn close(&mut self, relay: &RelayKey) -> bool {
        let closed = self.views.remove(relay).is_some();
        self.closed += u64::from(closed);
        closed
    }

    /// Number of open views.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether no view is open.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Views opened and closed since creation (for metrics).
    pub fn churn(&self) -> (u64, u64) {
        (self.opened, self.closed)
    }

    fn close_least_recently_used(&mut self) {
        let oldest = self
            .views
            .iter()
            .min_by_key(|(_, (_, last_used))| *last_used)
            .map(|(relay, _)| *relay);
        if let Some(relay) = oldest {
            self.close(&relay);
        }
    }
}

impl Default for ReplicaViews {
    fn default() -> ReplicaViews {
        ReplicaViews::new(DEFAULT_OPEN_VIEWS)
    }
}

//! [`IndexedRelay`]: a relay's view kept on disk in a [`RelayIndex`] and pushed
//! to live subscribers as new entries land.
//!
//! Contract: after every [`IndexedRelay::catch_up`] the index holds exactly the
//! reader's visible events (the reader's changes are applied in one index
//! transaction), and every event that became visible was offered once to each
//! live subscriber whose filters match it. The index is a projection of the
//! logs, not a source of truth: [`IndexedRelay::create`] starts from an empty
//! index file and the first catch-up fills it from the logs, so an index can
//! never disagree with the view it mirrors after a restart.

use std::path::Path;

use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::{Event, Filter};
use hypergate_core::relay::ViewChange;

use super::reader::{BlockSource, RelayReader};
use crate::index::{
    IndexChange, IndexError, LiveFeed, LiveReceiver, Published, QueryLimits, QueryResult,
    RelayIndex, SubscriberId,
};

/// Why a catch-up of an indexed relay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexedRelayError<E> {
    /// Reading the logs failed.
    #[error("reading the relay's logs failed: {0}")]
    Source(E),
    /// Writing the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What one catch-up changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use]
pub struct Refreshed {
    /// Events that became visible.
    pub added: usize,
    /// Events that stopped being visible.
    pub removed: usize,
    /// Whether the view was rebuilt (a removal cut below what was read).
    pub rebuilt: bool,
    /// Live subscribers dropped because their queue was full.
    pub dropped_subscribers: Vec<SubscriberId>,
}

/// A relay's view, its on-disk index, and its live subscribers.
pub struct IndexedRelay {
    reader: RelayReader,
    index: RelayIndex,
    feed: LiveFeed,
}

impl std::fmt::Debug for IndexedRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedRelay")
            .field("relay", self.reader.relay())
            .field("live_subscribers", &self.feed.len())
            .finish_non_exhaustive()
    }
}

impl IndexedRelay {
    /// A relay with an empty index at `index_path` (an existing file is
    /// replaced) and live queues of `live_queue` events per subscriber.
    pub fn create(
        relay: RelayKey,
        index_path: &Path,
        live_queue: usize,
    ) -> Result<IndexedRelay, IndexError> {
        match std::fs::remove_file(index_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(IndexError::Corrupt(format!(
                    "cannot replace {}: {e}",
                    index_path.display()
                )));
            }
        }
        Ok(IndexedRelay {
            reader: RelayReader::new(relay),
            // Rebuilt from the logs at every start: its commits need no fsync.
            index: RelayIndex::open_scratch(index_path)?,
            feed: LiveFeed::new(live_queue),
        })
    }

    /// Reads what is new in `source`, applies it to the index, and offers the
    /// newly visible events to live subscribers.
    pub async fn catch_up<S: BlockSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Refreshed, IndexedRelayError<S::Error>> {
        let outcome = self
            .reader
            .catch_up(source)
            .await
            .map_err(IndexedRelayError::Source)?;
        let mut added: Vec<Event> = Vec::new();
        let mut removed = 0;
        let changes: Vec<IndexChange> = outcome
            .changes
            .into_iter()
            .map(|change| match change {
                ViewChange::Added(event) => {
                    added.push(event.clone());
                    IndexChange::Insert(event)
                }
                ViewChange::Removed(id) => {
                    removed += 1;
                    IndexChange::Remove(id)
                }
            })
            .collect();
        if !changes.is_empty() {
            self.index.apply(&changes)?;
        }
        let published = self.feed.publish(&added);
        Ok(Refreshed {
            added: added.len(),
            removed,
            rebuilt: outcome.rebuilt,
            dropped_subscribers: published.dropped,
        })
    }

    /// Answers one REQ's filters, newest first (see [`RelayIndex::query_many`]).
    pub fn query(
        &self,
        filters: &[Filter],
        limits: &QueryLimits,
    ) -> Result<QueryResult, IndexError> {
        self.index.query_many(filters, limits)
    }

    /// Registers a live subscription; new matching events arrive on the receiver.
    pub fn subscribe(&mut self, filters: Vec<Filter>) -> (SubscriberId, LiveReceiver) {
        self.feed.subscribe(filters)
    }

    /// Offers events that are delivered but never stored (ephemeral kinds) to live
    /// subscribers, exactly as a catch-up offers newly visible ones.
    pub fn broadcast(&mut self, events: &[Event]) -> Published {
        self.feed.publish(events)
    }

    /// Ends a live subscription.
    pub fn unsubscribe(&mut self, id: SubscriberId) -> bool {
        self.feed.unsubscribe(id)
    }

    /// The reader (membership, view, counters).
    pub fn reader(&self) -> &RelayReader {
        &self.reader
    }
}

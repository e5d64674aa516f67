//! [`RelayReader`]: from a relay's logs to its view, incrementally.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::{EventId, SignatureVerifier};
use hypergate_core::relay::{Membership, RelayOp, RelayView, ViewChange, WriterKey};

use super::owner_log_key;

/// Where a reader gets blocks: the worker's own logs or the gateway's mirrors.
pub trait BlockSource {
    /// How reading a block can fail (local storage trouble, not a bad block).
    type Error;

    /// Blocks held without a gap from block 0 for the log `key`; `None` when the
    /// log is not known here at all.
    fn held_len(
        &mut self,
        key: &WriterKey,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>>;

    /// Block `index` of the log `key`, `None` if it is not held.
    fn read_block(
        &mut self,
        key: &WriterKey,
        index: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Self::Error>>;
}

/// What one [`RelayReader::catch_up`] did.
#[derive(Debug, Default)]
#[must_use]
pub struct CatchUp {
    /// The changes an index must apply, in order.
    pub changes: Vec<ViewChange>,
    /// Whether a removal below the read position forced a rebuild.
    pub rebuilt: bool,
    /// Log entries read in this call (owner and writers).
    pub entries_read: u64,
}

/// Counters of a reader's life, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReaderStats {
    /// Events that passed verification and reached the view.
    pub events_ingested: u64,
    /// Writer-log entries that were not a valid, correctly signed event.
    pub invalid_entries: u64,
    /// Owner-log entries that were not a valid membership op.
    pub invalid_owner_ops: u64,
    /// Rebuilds forced by a removal below the read position.
    pub rebuilds: u64,
}

/// The view of one relay, kept up to date from its logs.
#[derive(Debug)]
pub struct RelayReader {
    relay: RelayKey,
    membership: Membership,
    view: RelayView,
    /// Entries read so far, per writer log.
    positions: BTreeMap<WriterKey, u64>,
    verifier: SignatureVerifier,
    stats: ReaderStats,
}

impl RelayReader {
    /// A reader that has read nothing of `relay` yet.
    pub fn new(relay: RelayKey) -> RelayReader {
        RelayReader {
            relay,
            membership: Membership::new(),
            view: RelayView::new(),
            positions: BTreeMap::new(),
            verifier: SignatureVerifier::new(),
            stats: ReaderStats::default(),
        }
    }

    /// The relay this reader reads.
    pub fn relay(&self) -> &RelayKey {
        &self.relay
    }

    /// The relay's writers as of the owner-log entries read so far.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The visible events.
    pub fn view(&self) -> &RelayView {
        &self.view
    }

    /// Entries of `writer`'s log read so far.
    pub fn position(&self, writer: &WriterKey) -> u64 {
        self.positions.get(writer).copied().unwrap_or(0)
    }

    /// Counters since this reader was made.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Reads every new counted entry `source` holds and returns the view changes.
    pub async fn catch_up<S: BlockSource>(&mut self, source: &mut S) -> Result<CatchUp, S::Error> {
        let mut outcome = CatchUp::default();
        let cut_below_position = self.read_owner_log(source, &mut outcome).await?;
        if cut_below_position {
            self.rebuild(source, &mut outcome).await?;
            return Ok(outcome);
        }
        self.read_writer_logs(source, &mut outcome).await?;
        Ok(outcome)
    }

    /// Applies new owner-log ops; returns whether a removal cut below a read position.
    async fn read_owner_log<S: BlockSource>(
        &mut self,
        source: &mut S,
        outcome: &mut CatchUp,
    ) -> Result<bool, S::Error> {
        let owner = owner_log_key(&self.relay);
        let held = source.held_len(&owner).await?.unwrap_or(0);
        let mut cut = false;
        while self.membership.applied_len() < held {
            let index = self.membership.applied_len();
            let Some(block) = source.read_block(&owner, index).await? else {
                break;
            };
            outcome.entries_read += 1;
            let op = match RelayOp::decode(&block) {
                Ok(op) => op,
                Err(error) => {
                    // The owner signed an op this build cannot read. Membership must not
                    // skip it (a skipped removal would count too much), so reading the
                    // owner log stops here until a build that understands it.
                    tracing::warn!(relay = %self.relay, index, %error, "unreadable owner-log op; membership stops here");
                    self.stats.invalid_owner_ops += 1;
                    break;
                }
            };
            if let RelayOp::RemoveWriter { key, final_length } = &op
                && self.position(key) > *final_length
                && self.membership.is_member(key)
            {
                cut = true;
            }
            if let Err(error) = self.membership.apply(index, &op) {
                if !error.consumed_index() {
                    break;
                }
                tracing::warn!(relay = %self.relay, index, %error, "owner-log op has no effect");
                self.stats.invalid_owner_ops += 1;
            }
        }
        Ok(cut)
    }

    async fn read_writer_logs<S: BlockSource>(
        &mut self,
        source: &mut S,
        outcome: &mut CatchUp,
    ) -> Result<(), S::Error> {
        let writers: Vec<(WriterKey, Option<u64>)> = self
            .membership
            .writers()
            .map(|key| (key, None))
            .chain(
                self.membership
                    .removed()
                    .map(|(key, final_length)| (key, Some(final_length))),
            )
            .collect();
        for (writer, final_length) in writers {
            let Some(held) = source.held_len(&writer).await? else {
                continue;
            };
            let counted = final_length.map_or(held, |f| held.min(f));
            let mut position = self.position(&writer);
            while position < counted {
                let Some(block) = source.read_block(&writer, position).await? else {
                    break;
                };
                outcome.entries_read += 1;
                position += 1;
                self.ingest_entry(&writer, position - 1, &block, &mut outcome.changes);
            }
            self.positions.insert(writer, position);
        }
        Ok(())
    }

    fn ingest_entry(
        &mut self,
        writer: &WriterKey,
        index: u64,
        block: &[u8],
        changes: &mut Vec<ViewChange>,
    ) {
        let event = match RelayOp::decode(block) {
            Ok(RelayOp::Event(json)) => json.parse(),
            Ok(_) => {
                tracing::warn!(relay = %self.relay, %writer, index, "membership op in a writer log; skipped");
                self.stats.invalid_entries += 1;
                return;
            }
            Err(error) => {
                tracing::warn!(relay = %self.relay, %writer, index, %error, "unreadable writer-log entry; skipped");
                self.stats.invalid_entries += 1;
                return;
            }
        };
        match event.and_then(|event| event.verify(&self.verifier).map(|()| event)) {
            Ok(event) => {
                self.stats.events_ingested += 1;
                changes.extend(self.view.insert(event).changes);
            }
            Err(error) => {
                tracing::warn!(relay = %self.relay, %writer, index, %error, "invalid event in a writer log; skipped");
                self.stats.invalid_entries += 1;
            }
        }
    }

    /// Re-reads every counted entry into a fresh view and reports the difference.
    async fn rebuild<S: BlockSource>(
        &mut self,
        source: &mut S,
        outcome: &mut CatchUp,
    ) -> Result<(), S::Error> {
        let before: BTreeSet<EventId> = self.view.visible_ids().into_iter().collect();
        self.view = RelayView::new();
        self.positions.clear();
        self.stats.rebuilds += 1;
        // The per-insert changes of a rebuild describe a fresh view, not the
        // difference from the old one: read into a scratch outcome and diff below.
        let mut scratch = CatchUp::default();
        self.read_writer_logs(source, &mut scratch).await?;
        outcome.entries_read += scratch.entries_read;
        let after: BTreeSet<EventId> = self.view.visible_ids().into_iter().collect();
        outcome
            .changes
            .extend(before.difference(&after).map(|id| ViewChange::Removed(*id)));
        outcome.changes.extend(
            after
                .difference(&before)
                .filter_map(|id| self.view.get(id).cloned())
                .map(ViewChange::Added),
        );
        outcome.rebuilt = true;
        Ok(())
    }
}

//! Who may write to a relay, replayed from its owner log.
//!
//! Contract:
//! - **Membership is a function of the owner log's prefix.** [`Membership::apply`] takes the
//!   owner log's ops in log order starting at index 0, with no gaps; an index out of order is
//!   refused ([`MembershipError::OutOfOrder`]) and changes nothing. Two replicas that applied the
//!   same prefix agree on every query.
//! - **A writer's entries count while it is a member, and below `final_length` once removed.**
//!   [`Membership::counts`] / [`Membership::counted_length`] decide which entries of a writer log
//!   feed the relay view. A key never added counts nothing.
//! - **Removal is final.** A removed key cannot be re-added ([`MembershipError::ReAddRemoved`]):
//!   rotation always uses a fresh key, so a re-add can only be a mistake or a replayed op, and
//!   allowing it would make an old key's entries past `final_length` count again. A second
//!   removal cannot move `final_length` either ([`MembershipError::AlreadyRemoved`]).
//! - **An op that cannot take effect is an error and is skipped.** Removing a key that was never
//!   added, re-adding a removed key, removing twice, and an `Event` op in the owner log (events
//!   belong in writer logs; the owner writes events through a writer log of its own) return an
//!   error, leave membership unchanged and still consume their index, because the entry exists in
//!   the log. Adding a current member again is harmless and answers
//!   [`MembershipChange::AlreadyMember`] (a worker that crashed after appending may append again).

use std::collections::BTreeMap;

use super::{RelayOp, WriterKey};

/// Why an owner-log op was not applied, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    // The caller fed the owner log out of order. Nothing changed, not even the position.
    /// The op's index is not the next one in the owner log.
    #[error("owner log op {got} applied out of order: expected op {expected}")]
    OutOfOrder {
        /// The index the next op must have ([`Membership::applied_len`]).
        expected: u64,
        /// The index given.
        got: u64,
    },

    // The owner log holds an op that cannot take effect. Its index is consumed; membership is
    // unchanged.
    /// `AddWriter` for a key that was removed earlier.
    #[error("writer {key} was removed and cannot be added again")]
    ReAddRemoved {
        /// The key.
        key: WriterKey,
    },
    /// `RemoveWriter` for a key that was never added.
    #[error("writer {key} was never added")]
    RemoveUnknown {
        /// The key.
        key: WriterKey,
    },
    /// `RemoveWriter` for a key that was already removed.
    #[error("writer {key} was already removed")]
    AlreadyRemoved {
        /// The key.
        key: WriterKey,
    },
    /// An `Event` op in the owner log; it is not counted.
    #[error("event op in the owner log is not counted")]
    EventInOwnerLog,
}

impl MembershipError {
    /// Whether the op was skipped (its index is consumed), as opposed to refused unread.
    #[must_use]
    pub fn consumed_index(&self) -> bool {
        !matches!(self, MembershipError::OutOfOrder { .. })
    }
}

/// What an applied op changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// `key` became a writer: all its entries count.
    Added {
        /// The new writer.
        key: WriterKey,
    },
    /// `key` was already a member; nothing changed.
    AlreadyMember {
        /// The writer.
        key: WriterKey,
    },
    /// `key` stopped being a writer: only its first `final_length` entries count.
    Removed {
        /// The writer.
        key: WriterKey,
        /// How many of its entries count from now on.
        final_length: u64,
    },
}

/// Where a key stands, with the owner-log indexes of the ops that put it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterStatus {
    /// A current writer.
    Member {
        /// Owner-log index of its `AddWriter`.
        added_at: u64,
    },
    /// A former writer.
    Removed {
        /// Owner-log index of its `AddWriter`.
        added_at: u64,
        /// Owner-log index of its `RemoveWriter`.
        removed_at: u64,
        /// How many of its entries count.
        final_length: u64,
    },
}

/// The writers of one relay, as of a prefix of its owner log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    writers: BTreeMap<WriterKey, WriterStatus>,
    applied_len: u64,
}

impl Membership {
    /// No writers, no ops applied.
    #[must_use]
    pub fn new() -> Membership {
        Membership::default()
    }

    /// Applies the owner log's op at `op_index`, which must be [`Membership::applied_len`].
    ///
    /// On success and on every error except [`MembershipError::OutOfOrder`] the index is
    /// consumed: the next op is `op_index + 1`.
    pub fn apply(
        &mut self,
        op_index: u64,
        op: &RelayOp,
    ) -> Result<MembershipChange, MembershipError> {
        if op_index != self.applied_len {
            return Err(MembershipError::OutOfOrder {
                expected: self.applied_len,
                got: op_index,
            });
        }
        self.applied_len = op_index.saturating_add(1);
        match *op {
            RelayOp::Event(_) => Err(MembershipError::EventInOwnerLog),
            RelayOp::AddWriter { key } => match self.writers.get(&key) {
                None => {
                    self.writers
                        .insert(key, WriterStatus::Member { added_at: op_index });
                    Ok(MembershipChange::Added { key })
                }
                Some(WriterStatus::Member { .. }) => Ok(MembershipChange::AlreadyMember { key }),
                Some(WriterStatus::Removed { .. }) => Err(MembershipError::ReAddRemoved { key }),
            },
            RelayOp::RemoveWriter { key, final_length } => match self.writers.get(&key).copied() {
                None => Err(MembershipError::RemoveUnknown { key }),
                Some(WriterStatus::Removed { .. }) => Err(MembershipError::AlreadyRemoved { key }),
                Some(WriterStatus::Member { added_at }) => {
                    let removed = WriterStatus::Removed {
                        added_at,
                        removed_at: op_index,
                        final_length,
                    };
                    self.writers.insert(key, removed);
                    Ok(MembershipChange::Removed { key, final_length })
                }
            },
        }
    }

    /// How many owner-log ops were consumed: the index the next op must have.
    #[must_use]
    pub fn applied_len(&self) -> u64 {
        self.applied_len
    }

    /// Where `key` stands, or `None` for a key never added.
    #[must_use]
    pub fn status(&self, key: &WriterKey) -> Option<WriterStatus> {
        self.writers.get(key).copied()
    }

    /// Whether `key` is a current writer.
    #[must_use]
    pub fn is_member(&self, key: &WriterKey) -> bool {
        matches!(self.writers.get(key), Some(WriterStatus::Member { .. }))
    }

    /// How many of the first `log_length` entries of `key`'s log count: all of them for a
    /// member, at most `final_length` for a removed writer, none for a key never added.
    #[must_use]
    pub fn counted_length(&self, key: &WriterKey, log_length: u64) -> u64 {
        match self.writers.get(key) {
            None => 0,
            Some(WriterStatus::Member { .. }) => log_length,
            Some(WriterStatus::Removed { final_length, .. }) => log_length.min(*final_length),
        }
    }

    /// Whether entry `index` of `key`'s log counts (feeds the relay view).
    #[must_use]
    pub fn counts(&self, key: &WriterKey, index: u64) -> bool {
        index < self.counted_length(key, u64::MAX)
    }

    /// The current writers, in key order.
    pub fn writers(&self) -> impl Iterator<Item = WriterKey> + '_ {
        self.writers
            .iter()
            .filter(|(_, status)| matches!(status, WriterStatus::Member { .. }))
            .map(|(key, _)| *key)
    }

    /// The removed writers with their `final_length`, in key order. Their logs still count up to
    /// that length, so a reader reads them too.
    pub fn removed(&self) -> impl Iterator<Item = (WriterKey, u64)> + '_ {
        self.writers
            .iter()
            .filter_map(|(key, status)| match status {
                WriterStatus::Removed { final_length, .. } => Some((*key, *final_length)),
                WriterStatus::Member { .. } => None,
            })
    }
}

#[cfg(test)]
mod tests;

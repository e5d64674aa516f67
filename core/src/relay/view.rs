//! The relay view: the events a client sees, merged from every counted log entry.
//!
//! ## Contract: the view is a function of the *set* of inserted events
//! Whatever order events arrive in, and however often, the visible set is the same. With `S` the
//! set of inserted events that are not ephemeral:
//!
//! 1. **Ephemeral kinds** (20000–29999) are never stored.
//! 2. **Slots.** A replaceable event competes in the slot `(pubkey, kind)`, an addressable one in
//!    `(pubkey, kind, d-tag)` ([`Event::replacement_key`]). The slot's *best* event is the one no
//!    other event of `S` [supersedes](Event::supersedes): the greatest `created_at`, ties to the
//!    lowest id. Only the best can be visible; every other version is superseded for good.
//! 3. **Deletion** (NIP-09). An event `x` is deleted when a kind-5 event `d` in `S` with
//!    `d.pubkey == x.pubkey` has an `e` tag naming `x.id`, or an `a` tag naming `x`'s slot
//!    (`kind:pubkey:d`) with `x.created_at <= d.created_at`. A request by anyone else has no
//!    effect. A kind-5 event is never deleted, so deletion requests stay visible, and a request
//!    to delete one does nothing.
//! 4. **Visible** = the events of `S` that are deleted by nothing and, if in a slot, are its best.
//!
//! Rule 2 picks the best version among *all* versions, deleted or not: deleting the newest
//! version of a slot by id empties the slot rather than bringing back an older version. That is
//! what a NIP-01 relay does (it discards superseded versions as they arrive), and it is the rule
//! that an incremental view can apply without keeping old versions: whether an older version is
//! visible must not depend on whether it arrived before or after the deletion, and under this
//! rule it is hidden either way.
//!
//! ## How the incremental view keeps it
//! [`RelayView`] keeps the visible events, the best `(created_at, id)` per slot ever seen (even
//! when that event is deleted), and tombstones: event id → authors who asked to delete it, slot →
//! the latest `created_at` of a coordinate deletion. A request that arrives before its target
//! therefore still applies, and a best version that is deleted still hides older versions. State
//! grows with the slots and deletion targets ever seen, not with superseded or deleted events.
//!
//! Preconditions: events are verified by the caller, so an id identifies one event (two
//! different events with the same id would make the result depend on their order). The view
//! checks no signatures.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::deletion::{DELETION, deletion_targets};
use crate::nostr::{Event, EventId, PublicKey, ReplacementKey};

/// One step that brings a copy of the view (an index) up to date.
///
/// Applied in order to a map from id to event, the changes of every insert reproduce the view
/// exactly: an `Added` id is never already visible, a `Removed` id always is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewChange {
    /// The event became visible.
    Added(Event),
    /// The event with this id is no longer visible.
    Removed(EventId),
}

/// What happened to the inserted event itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertOutcome {
    /// The event is now visible.
    Stored,
    /// The event was already visible; nothing changed.
    Duplicate,
    /// Ephemeral kinds are delivered live and never stored; nothing changed.
    Ephemeral,
    /// A better version of its slot is known; nothing changed.
    Superseded,
    /// A deletion request covers it, so it is not visible. It may still hide an older version
    /// of its slot (see [`Insertion::changes`]).
    Deleted,
}

/// The result of [`RelayView::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an index mirroring the view must apply the changes"]
pub struct Insertion {
    /// What happened to the inserted event.
    pub outcome: InsertOutcome,
    /// Every change to the visible set, in the order to apply them.
    pub changes: Vec<ViewChange>,
}

impl Insertion {
    fn unchanged(outcome: InsertOutcome) -> Insertion {
        Insertion {
            outcome,
            changes: Vec::new(),
        }
    }
}

/// The best version ever seen in a slot, by the keys NIP-01 compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Best {
    created_at: u64,
    id: EventId,
}

impl Best {
    fn of(event: &Event) -> Best {
        Best {
            created_at: event.created_at,
            id: event.id,
        }
    }

    /// [`Event::supersedes`] on the compared keys: newer, or as old with the lower id.
    fn beats(self, other: Best) -> bool {
        (self.created_at, other.id) > (other.created_at, self.id)
    }
}

/// The visible events of one relay, maintained incrementally (see the module docs for the rule).
#[derive(Debug, Clone, Default)]
pub struct RelayView {
    visible: BTreeMap<EventId, Event>,
    slots: BTreeMap<ReplacementKey, Best>,
    /// Event id → authors who asked to delete it (only the event's own author counts).
    deleted_ids: BTreeMap<EventId, BTreeSet<PublicKey>>,
    /// Slot → the latest `created_at` of its author's coordinate deletions.
    deleted_slots: BTreeMap<ReplacementKey, u64>,
}

impl RelayView {
    /// An empty view.
    #[must_use]
    pub fn new() -> RelayView {
        RelayView::default()
    }

    /// Adds `event` to the set the view is computed from, and returns what changed.
    pub fn insert(&mut self, event: Event) -> Insertion {
        if event.kind.is_ephemeral() {
            return Insertion::unchanged(InsertOutcome::Ephemeral);
        }
        if self.visible.contains_key(&event.id) {
            return Insertion::unchanged(InsertOutcome::Duplicate);
        }
        if event.kind == DELETION {
            return self.insert_deletion(event);
        }
        match event.replacement_key() {
            Some(slot) => self.insert_versioned(event, slot),
            None => {
                if self.is_deleted(&event, None) {
                    return Insertion::unchanged(InsertOutcome::Deleted);
                }
                self.show(event, Vec::new())
            }
        }
    }

    /// A replaceable or addressable event: it wins its slot or changes nothing.
    fn insert_versioned(&mut self, event: Event, slot: ReplacementKey) -> Insertion {
        let candidate = Best::of(&event);
        let mut changes = Vec::new();
        if let Some(best) = self.slots.get(&slot).copied() {
            if best.id == event.id {
                // The best version again, and not visible (a visible one returned `Duplicate`).
                return Insertion::unchanged(InsertOutcome::Deleted);
            }
            if !candidate.beats(best) {
                return Insertion::unchanged(InsertOutcome::Superseded);
            }
            if self.visible.remove(&best.id).is_some() {
                changes.push(ViewChange::Removed(best.id));
            }
        }
        let deleted = self.is_deleted(&event, Some(&slot));
        self.slots.insert(slot, candidate);
        if deleted {
            return Insertion {
                outcome: InsertOutcome::Deleted,
                changes,
            };
        }
        self.show(event, changes)
    }

    /// A kind-5 request: always visible; records its tombstones and hides what they cover.
    fn insert_deletion(&mut self, request: Event) -> Insertion {
        let author = request.pubkey;
        let targets = deletion_targets(&request);
        let mut changes = Vec::new();
        for id in targets.ids {
            self.deleted_ids.entry(id).or_default().insert(author);
            let covered = self
                .visible
                .get(&id)
                .is_some_and(|target| target.pubkey == author && target.kind != DELETION);
            if covered && self.visible.remove(&id).is_some() {
                changes.push(ViewChange::Removed(id));
            }
        }
        for slot in targets.coordinates {
            let best = self.slots.get(&slot).copied();
            let until = self.deleted_slots.entry(slot).or_insert(request.created_at);
            *until = (*until).max(request.created_at);
            if let Some(best) = best {
                if best.created_at <= request.created_at && self.visible.remove(&best.id).is_some()
                {
                    changes.push(ViewChange::Removed(best.id));
                }
            }
        }
        self.show(request, changes)
    }

    fn show(&mut self, event: Event, mut changes: Vec<ViewChange>) -> Insertion {
        changes.push(ViewChange::Added(event.clone()));
        self.visible.insert(event.id, event);
        Insertion {
            outcome: InsertOutcome::Stored,
            changes,
        }
    }

    /// Whether a tombstone covers `event` (rule 3 of the module docs).
    fn is_deleted(&self, event: &Event, slot: Option<&ReplacementKey>) -> bool {
        if event.kind == DELETION {
            return false;
        }
        let by_id = self
            .deleted_ids
            .get(&event.id)
            .is_some_and(|authors| authors.contains(&event.pubkey));
        let by_coordinate = slot
            .and_then(|slot| self.deleted_slots.get(slot))
            .is_some_and(|&until| event.created_at <= until);
        by_id || by_coordinate
    }

    /// The visible event with this id.
    #[must_use]
    pub fn get(&self, id: &EventId) -> Option<&Event> {
        self.visible.get(id)
    }

    /// How many events are visible.
    #[must_use]
    pub fn len(&self) -> usize {
        self.visible.len()
    }

    /// Whether no event is visible.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.visible.is_empty()
    }

    /// The visible ids, sorted.
    #[must_use]
    pub fn visible_ids(&self) -> Vec<EventId> {
        self.visible.keys().copied().collect()
    }

    /// The visible events, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        self.visible.values()
    }

    /// SHA-256 over the sorted visible ids (32 bytes each, concatenated): equal digests mean
    /// equal visible sets, so two replicas can compare views cheaply.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for id in self.visible.keys() {
            hasher.update(id.as_bytes());
        }
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

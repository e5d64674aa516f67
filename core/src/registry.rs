//! The relay registry: which relays the gateway fronts, which workers serve
//! each one, the relay's public metadata, and its pending gateway writes.
//!
//! Contract (the original replaced whole registrations and dropped them after
//! a 300 s TTL; both broke offline serving):
//! - A registration **merges** into what is known. Identifiers are a union;
//!   metadata fields a worker sends overwrite, fields it omits are kept, and a
//!   registration carrying an older `metadata_updated_at` than the stored one
//!   does not overwrite metadata at all.
//! - Pending-write flags belong to the gateway: no registration ever changes
//!   them. Only [`Registry::mark_pending`] and [`Registry::clear_pending`] do.
//! - A relay stays registered while all of its workers are offline. It leaves
//!   only through [`Registry::remove_relay`], which refuses while writes are
//!   pending unless forced.
//! - [`Registry::snapshot`] / [`Registry::restore`] round-trip the whole state
//!   through postcard so an adapter can persist it.
//!
//! The registry has no timers: it is a plain data machine with an event queue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{PeerId, RelayKey};
use crate::time::UnixTime;
use crate::wire::{MAX_PENDING_REASON_BYTES, PendingType, RelayRegistration};

/// Snapshot format version; bumped when [`RegistrySnapshot`] changes shape.
pub const SNAPSHOT_VERSION: u16 = 1;

/// Errors of the registry, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    // Caller asked about something that is not there.
    /// The relay is not registered.
    #[error("relay {0} is not registered")]
    UnknownRelay(RelayKey),
    // Caller asked for something the contract forbids.
    /// Removing the relay would drop gateway writes that no worker has resynced.
    #[error("relay {0} has pending gateway writes; resync first or force the removal")]
    PendingWritesOutstanding(RelayKey),
    // Persisted bytes are bad.
    /// The snapshot bytes do not decode.
    #[error("registry snapshot is unreadable: {0}")]
    SnapshotMalformed(String),
    /// The snapshot was written by an unknown format version.
    #[error("registry snapshot version {got} is not supported (expected {SNAPSHOT_VERSION})")]
    SnapshotVersion {
        /// The version found in the snapshot.
        got: u16,
    },
}

/// Public metadata of a relay, as last merged from its workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayMetadata {
    /// Display name.
    pub name: Option<String>,
    /// Free-text description.
    pub description: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Whether the relay is listed publicly.
    pub is_public: Option<bool>,
    /// The worker-side time of the last metadata change; orders merges.
    pub metadata_updated_at: Option<UnixTime>,
}

/// What the relay's owner told the gateway about its escrow deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowInfo {
    /// The escrow service's id of the current deposit.
    pub escrow_id: String,
    /// The policy version the deposit was made under.
    pub policy_version: String,
    /// Gateway identities the depositor allows to unlock the writer key.
    pub permitted_gateways: BTreeSet<PeerId>,
    /// When the deposit expires.
    pub expires_at: UnixTime,
}

/// A worker serving a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// First registration of this relay by this worker.
    pub first_registered_at: UnixTime,
    /// Latest registration of this relay by this worker.
    pub last_registered_at: UnixTime,
}

/// Gateway writes not yet resynced by a worker. Serialised with the
/// original's `gateway*` field names, which operators and workers know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWrites {
    /// Whether any gateway write awaits resync.
    #[serde(rename = "gatewayPendingWrites")]
    pub pending: bool,
    /// Why the latest mark was made (normalised, at most 64 bytes).
    #[serde(rename = "gatewayPendingReason")]
    pub reason: Option<String>,
    /// The kinds of data written, sorted and de-duplicated.
    #[serde(rename = "gatewayPendingTypes")]
    pub types: BTreeSet<PendingType>,
    /// The first mark since the last clear.
    #[serde(rename = "gatewayPendingSince")]
    pub since: Option<UnixTime>,
    /// The latest mark; workers dedupe pushes by it.
    #[serde(rename = "gatewayPendingUpdatedAt")]
    pub updated_at: Option<UnixTime>,
    /// Which drive holds gateway-written files.
    #[serde(rename = "gatewayPendingDriveIdentifier")]
    pub drive_identifier: Option<String>,
    /// Version of that drive after the latest write; survives a clear.
    #[serde(rename = "gatewayDriveVersion")]
    pub drive_version: Option<u64>,
    /// Epoch of the lease the latest write was made under.
    #[serde(rename = "gatewayLeaseVersion")]
    pub lease_version: Option<u64>,
    /// Whether that lease is still active.
    #[serde(rename = "gatewayLeaseActive")]
    pub lease_active: bool,
}

/// One gateway write to record in [`Registry::mark_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMark {
    /// What kind of data was written.
    pub kind: PendingType,
    /// Why; defaults to the kind's name. Normalised to `[a-z0-9._-]`.
    pub reason: Option<String>,
    /// The drive written to, for drive writes and HTTP artifacts.
    pub drive_identifier: Option<String>,
    /// The drive's version after the write.
    pub drive_version: Option<u64>,
    /// The lease epoch the write was made under.
    pub lease_version: Option<u64>,
}

/// Everything the gateway knows about one relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// The owner log's public key.
    pub relay_key: RelayKey,
    /// Aliases clients may use in URLs (e.g. `npub…:name`).
    pub identifiers: BTreeSet<String>,
    /// Public metadata.
    pub metadata: RelayMetadata,
    /// Whether clients need a token.
    pub requires_auth: bool,
    /// The owner's escrow deposit, if escrow is enabled.
    pub escrow: Option<EscrowInfo>,
    /// Workers that registered this relay.
    pub workers: BTreeMap<PeerId, WorkerEntry>,
    /// Gateway writes awaiting resync.
    pub pending: PendingWrites,
    /// First registration.
    pub registered_at: UnixTime,
    /// Latest change of any kind.
    pub updated_at: UnixTime,
}

impl RelayRecord {
    /// Whether the owner enabled escrow (the policy's registration flag).
    #[must_use]
    pub fn escrow_enabled(&self) -> bool {
        self.escrow.is_some()
    }
}

/// How [`Registry::remove_relay`] treats pending writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Refuse while gateway writes await resync.
    IfNoPendingWrites,
    /// Remove anyway (the operator accepts the loss).
    Force,
}

/// What changed in the registry; drained with [`Registry::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A relay was registered for the first time.
    RelayAdded {
        /// The relay.
        relay: RelayKey,
    },
    /// A known relay's metadata, identifiers or escrow info changed.
    RelayUpdated {
        /// The relay.
        relay: RelayKey,
    },
    /// A worker started serving a relay.
    WorkerAttached {
        /// The relay.
        relay: RelayKey,
        /// The worker.
        worker: PeerId,
    },
    /// A worker stopped serving a relay.
    WorkerDetached {
        /// The relay.
        relay: RelayKey,
        /// The worker.
        worker: PeerId,
    },
    /// A relay was removed.
    RelayRemoved {
        /// The relay.
        relay: RelayKey,
    },
    /// A gateway write was recorded.
    PendingMarked {
        /// The relay.
        relay: RelayKey,
    },
    /// Pending writes were cleared after a resync.
    PendingCleared {
        /// The relay.
        relay: RelayKey,
    },
    /// An identifier was claimed by a second relay and kept by the first.
    AliasConflict {
        /// The identifier.
        alias: String,
        /// The relay that keeps it.
        owner: RelayKey,
        /// The relay whose claim was ignored.
        claimant: RelayKey,
    },
}

/// The persisted form of a [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    /// Format version ([`SNAPSHOT_VERSION`]).
    pub version: u16,
    /// Every relay record.
    pub relays: Vec<RelayRecord>,
}

impl RegistrySnapshot {
    /// The snapshot as postcard bytes (what [`Registry::restore_bytes`] reads).
    pub fn to_bytes(&self) -> Result<Vec<u8>, RegistryError> {
        postcard::to_allocvec(self)
            .map_err(|error| RegistryError::SnapshotMalformed(error.to_string()))
    }
}

/// The relay registry machine. See the module docs for the contract.
#[derive(Debug, Default)]
pub struct Registry {
    relays: BTreeMap<RelayKey, RelayRecord>,
    aliases: BTreeMap<String, RelayKey>,
    events: VecDeque<RegistryEvent>,
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    // ---- getters ----

    /// The record of `relay`.
    #[must_use]
    pub fn relay(&self, relay: &RelayKey) -> Option<&RelayRecord> {
        self.relays.get(relay)
    }

    /// All relays in key order.
    pub fn relays(&self) -> impl Iterator<Item = &RelayRecord> {
        self.relays.values()
    }

    /// How many relays are registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.relays.len()
    }

    /// Whether no relay is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Resolves a URL name (64-hex relay key or a registered identifier).
    #[must_use]
    pub fn resolve(&self, name: &str) -> Option<RelayKey> {
        if let Ok(key) = name.parse::<RelayKey>()
            && self.relays.contains_key(&key)
        {
            return Some(key);
        }
        self.aliases.get(name).copied()
    }

    /// The workers registered for `relay`, in key order.
    pub fn workers_of(&self, relay: &RelayKey) -> impl Iterator<Item = PeerId> + '_ {
        self.relays
            .get(relay)
            .into_iter()
            .flat_map(|record| record.workers.keys().copied())
    }

    // ---- inputs ----

    /// Merges one relay registration from `worker`.
    pub fn handle_registration(
        &mut self,
        worker: PeerId,
        registration: &RelayRegistration,
        now: UnixTime,
    ) {
        let relay = registration.relay_key;
        self.merge(registration, now);
        let Some(record) = self.relays.get_mut(&relay) else {
            return; // `merge` always leaves the record in place
        };
        match record.workers.get_mut(&worker) {
            Some(entry) => entry.last_registered_at = now,
            None => {
                record.workers.insert(
                    worker,
                    WorkerEntry {
                        first_registered_at: now,
                        last_registered_at: now,
                    },
                );
                self.events
                    .push_back(RegistryEvent::WorkerAttached { relay, worker });
            }
        }
    }

    /// An operator registers a relay, or updates its metadata and aliases
    /// (`POST /api/relays`), with the same merge rules as a worker's registration but
    /// without attaching a worker: the relay is known (and served from its mirror, if any)
    /// before any of its workers link.
    pub fn handle_operator_registration(
        &mut self,
        registration: &RelayRegistration,
        now: UnixTime,
    ) {
        self.merge(registration, now);
    }

    /// Creates or merges the relay's record (metadata, auth flag, escrow, aliases).
    fn merge(&mut self, registration: &RelayRegistration, now: UnixTime) {
        let relay = registration.relay_key;
        let incoming_metadata = metadata_from_wire(registration);
        let record = match self.relays.entry(relay) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                self.events.push_back(RegistryEvent::RelayAdded { relay });
                slot.insert(RelayRecord {
                    relay_key: relay,
                    identifiers: BTreeSet::new(),
                    metadata: RelayMetadata::default(),
                    requires_auth: registration.requires_auth,
                    escrow: None,
                    workers: BTreeMap::new(),
                    pending: PendingWrites::default(),
                    registered_at: now,
                    updated_at: now,
                })
            }
            std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
        };

        let mut changed = false;
        if metadata_is_not_older(&record.metadata, &incoming_metadata) {
            changed |= merge_metadata(&mut record.metadata, incoming_metadata);
            if record.requires_auth != registration.requires_auth {
                record.requires_auth = registration.requires_auth;
                changed = true;
            }
        }
        if let Some(escrow) = &registration.escrow {
            let info = EscrowInfo {
                escrow_id: escrow.escrow_id.as_str().to_owned(),
                policy_version: escrow.policy_version.as_str().to_owned(),
                permitted_gateways: escrow.permitted_gateways.iter().copied().collect(),
                expires_at: escrow.expires_at,
            };
            if record.escrow.as_ref() != Some(&info) {
                record.escrow = Some(info);
                changed = true;
            }
        }

        let mut new_identifiers = Vec::new();
        for alias in registration.identifiers.iter() {
            let alias = alias.as_str();
            if alias.is_empty() || record.identifiers.contains(alias) {
                continue;
            }
            match self.aliases.get(alias) {
                Some(owner) if *owner != relay => {
                    self.events.push_back(RegistryEvent::AliasConflict {
                        alias: alias.to_owned(),
                        owner: *owner,
                        claimant: relay,
                    });
                }
                _ => new_identifiers.push(alias.to_owned()),
            }
        }
        for alias in new_identifiers {
            self.aliases.insert(alias.clone(), relay);
            record.identifiers.insert(alias);
            changed = true;
        }
        record.updated_at = now;
        if changed {
            self.events.push_back(RegistryEvent::RelayUpdated { relay });
        }
    }

    /// `worker` no longer serves `relay` (it unregistered it). The relay stays.
    pub fn detach_worker(&mut self, relay: &RelayKey, worker: &PeerId, now: UnixTime) -> bool {
        let Some(record) = self.relays.get_mut(relay) else {
            return false;
        };
        if record.workers.remove(worker).is_none() {
            return false;
        }
        record.updated_at = now;
        self.events.push_back(RegistryEvent::WorkerDetached {
            relay: *relay,
            worker: *worker,
        });
        true
    }

    /// Removes a relay and its identifiers.
    pub fn remove_relay(&mut self, relay: &RelayKey, mode: Removal) -> Result<(), RegistryError> {
        let record = self
            .relays
            .get(relay)
            .ok_or(RegistryError::UnknownRelay(*relay))?;
        if record.pending.pending && mode == Removal::IfNoPendingWrites {
            return Err(RegistryError::PendingWritesOutstanding(*relay));
        }
        if let Some(record) = self.relays.remove(relay) {
            for alias in &record.identifiers {
                self.aliases.remove(alias);
            }
        }
        self.events
            .push_back(RegistryEvent::RelayRemoved { relay: *relay });
        Ok(())
    }

    /// Records a gateway write for `relay`.
    pub fn mark_pending(
        &mut self,
        relay: &RelayKey,
        mark: PendingMark,
        now: UnixTime,
    ) -> Result<&PendingWrites, RegistryError> {
        let record = self
            .relays
            .get_mut(relay)
            .ok_or(RegistryError::UnknownRelay(*relay))?;
        let pending = &mut record.pending;
        pending.pending = true;
        pending.reason = Some(normalize_reason(
            mark.reason.as_deref().unwrap_or(mark.kind.as_str()),
        ));
        pending.types.insert(mark.kind);
        pending.since.get_or_insert(now);
        // `updated_at` must strictly increase: workers drop a push whose
        // `updated_at` is not newer than the last one they stored.
        let next = match pending.updated_at {
            Some(previous) if previous >= now => UnixTime(previous.0.saturating_add(1)),
            _ => now,
        };
        pending.updated_at = Some(next);
        if mark.drive_identifier.is_some() {
            pending.drive_identifier = mark.drive_identifier;
        }
        if mark.drive_version.is_some() {
            pending.drive_version = mark.drive_version;
        }
        if mark.lease_version.is_some() {
            pending.lease_version = mark.lease_version;
            pending.lease_active = true;
        }
        record.updated_at = now;
        self.events
            .push_back(RegistryEvent::PendingMarked { relay: *relay });
        Ok(&record.pending)
    }

    /// Records that the relay's lease ended, so pushes report `leaseActive: false`.
    pub fn mark_lease_inactive(&mut self, relay: &RelayKey) {
        if let Some(record) = self.relays.get_mut(relay) {
            record.pending.lease_active = false;
        }
    }

    /// Clears pending writes after a worker's resync-complete. The drive
    /// version is kept so the next write continues from it, and `updated_at`
    /// is kept as a floor so the next mark is newer than the cleared notice.
    pub fn clear_pending(&mut self, relay: &RelayKey, now: UnixTime) -> Result<(), RegistryError> {
        let record = self
            .relays
            .get_mut(relay)
            .ok_or(RegistryError::UnknownRelay(*relay))?;
        let drive_version = record.pending.drive_version;
        // `updated_at` stays as a floor above the `cleared` notice's own
        // `updated_at` (now, or one past the last mark): the next mark must
        // look newer to workers, which dedupe pushes by it.
        let floor = match record.pending.updated_at {
            Some(previous) if previous >= now => UnixTime(previous.0.saturating_add(1)),
            _ => now,
        };
        record.pending = PendingWrites {
            drive_version,
            updated_at: Some(floor),
            ..PendingWrites::default()
        };
        record.updated_at = now;
        self.events
            .push_back(RegistryEvent::PendingCleared { relay: *relay });
        Ok(())
    }

    // ---- outputs ----

    /// The next change, in the order they happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RegistryEvent> {
        self.events.pop_front()
    }

    // ---- persistence ----

    /// The whole state, for persisting.
    #[must_use]
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            version: SNAPSHOT_VERSION,
            relays: self.relays.values().cloned().collect(),
        }
    }

    /// The snapshot as postcard bytes.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, RegistryError> {
        self.snapshot().to_bytes()
    }

    /// Rebuilds a registry from a snapshot.
    pub fn restore(snapshot: RegistrySnapshot) -> Result<Self, RegistryError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RegistryError::SnapshotVersion {
                got: snapshot.version,
            });
        }
        let mut registry = Registry::new();
        for record in snapshot.relays {
            for alias in &record.identifiers {
                registry.aliases.insert(alias.clone(), record.relay_key);
            }
            registry.relays.insert(record.relay_key, record);
        }
        Ok(registry)
    }

    /// Rebuilds a registry from [`Registry::snapshot_bytes`] output.
    pub fn restore_bytes(bytes: &[u8]) -> Result<Self, RegistryError> {
        let snapshot: RegistrySnapshot = postcard::from_bytes(bytes)
            .map_err(|error| RegistryError::SnapshotMalformed(error.to_string()))?;
        Self::restore(snapshot)
    }
}

fn metadata_from_wire(registration: &RelayRegistration) -> RelayMetadata {
    let wire = &registration.metadata;
    RelayMetadata {
        name: wire.name.as_ref().map(|s| s.as_str().to_owned()),
        description: wire.description.as_ref().map(|s| s.as_str().to_owned()),
        avatar_url: wire.avatar_url.as_ref().map(|s| s.as_str().to_owned()),
        is_public: wire.is_public,
        metadata_updated_at: wire.metadata_updated_at,
    }
}

/// A registration without a timestamp is treated as current; one with an
/// older timestamp than the stored metadata is a stale worker and ignored.
fn metadata_is_not_older(stored: &RelayMetadata, incoming: &RelayMetadata) -> bool {
    match (stored.metadata_updated_at, incoming.metadata_updated_at) {
        (Some(stored), Some(incoming)) => incoming >= stored,
        _ => true,
    }
}

fn merge_metadata(stored: &mut RelayMetadata, incoming: RelayMetadata) -> bool {
    fn take<T: PartialEq>(slot: &mut Option<T>, value: Option<T>) -> bool {
        match value {
            Some(value) if slot.as_ref() != Some(&value) => {
                *slot = Some(value);
                true
            }
            _ => false,
        }
    }
    let mut changed = false;
    changed |= take(&mut stored.name, incoming.name);
    changed |= take(&mut stored.description, incoming.description);
    changed |= take(&mut stored.avatar_url, incoming.avatar_url);
    changed |= take(&mut stored.is_public, incoming.is_public);
    changed |= take(
        &mut stored.metadata_updated_at,
        incoming.metadata_updated_at,
    );
    changed
}

/// Lowercases and maps characters outside `[a-z0-9._-]` to `-`, as the
/// original did, and bounds the length.
fn normalize_reason(reason: &str) -> String {
    let mut normalized: String = reason
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_PENDING_REASON_BYTES)
        .collect();
    if normalized.is_empty() {
        normalized.push_str("replica-write");
    }
    normalized
}

#[cfg(test)]
mod tests;

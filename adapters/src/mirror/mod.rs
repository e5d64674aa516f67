//! The blind-peer mirror store: the gateway's copies of cores replicated from
//! workers, so it can serve a relay's data while every worker is offline.
//!
//! Contract:
//! - **No unverified block is stored.** [`MirrorStore::store_blocks`] applies
//!   each proof with [`HyperLog::apply_proof`](crate::log::HyperLog::apply_proof),
//!   which checks the block against the core's public key and signed tree
//!   before writing. A tampered block, a bad signature or a proof of another
//!   core is rejected, counted (per core and in total) and leaves nothing
//!   behind; other proofs of the batch and other cores are unaffected.
//! - **Restart is reopen.** Each core lives in `<root>/cores/<hex key>/`; its
//!   metadata lives in the inventory (`<root>/inventory.redb`, a redb file:
//!   one ACID update per change). [`MirrorStore::open`] brings every mirror back with its
//!   metadata and blocks. A core directory that does not reopen is moved to
//!   `<root>/quarantine/`, counted, logged and listed in
//!   [`MirrorStore::quarantined`]; its record stays with its local length reset
//!   to 0, so it is re-mirrored from scratch. One bad core never stops the
//!   store from opening.
//! - **Records merge.** Re-announcing a core updates its owner, role, announce
//!   flag and priority and never loses its lengths, times or counters; a core
//!   never switches relay ([`MirrorError::RelayMismatch`]).
//! - **One unit per field.** `lag_blocks` is blocks, `lag_ms` milliseconds
//!   (see [`CoreRecord`]). The store never reads a clock: every time is the
//!   caller's `now: UnixTime`, passed last.
//! - **GC never evicts a protected core.** [`MirrorStore::collect_garbage`]
//!   evicts unprotected cores (stale first, then lowest priority / least
//!   recently seen) until the bytes used fit `max_bytes`, and reports when
//!   they cannot fit without touching protected ones. The caller protects each
//!   relay's current members (owner log, every writer, the gateway writer):
//!   the original's dedupe kept one core per relay and evicted the other writers.
//! - **Two companions.** [`wire`] packs and unpacks the block ranges the peer link carries
//!   (the worker answering the gateway's pulls, the gateway answering a worker's fetch of the
//!   gateway writer log); [`LeasedWriter`] is the gateway's in-memory signer for a leased
//!   gateway writer, whose durable copy is a core of this store.
//! - **Runtime-neutral.** The async methods drive `HyperLog` (hypercore on
//!   async-std file I/O, which runs under any executor); inventory commits are
//!   short synchronous redb transactions. Methods take `&mut self`: share the
//!   store behind the runtime's mutex.

mod blocks;
mod error;
mod gc;
mod inventory;
mod leased;
mod record;
mod restore;
mod source;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypergate_core::ids::RelayKey;
use hypergate_core::time::UnixTime;

pub use blocks::StoreOutcome;
pub use error::MirrorError;
pub use gc::{BudgetShortfall, Eviction, GcReport};
pub use hypergate_core::wire::CoreRole;
pub use leased::{LeasedWriter, LeasedWriterError};
pub use record::{
    CoreAnnouncement, CoreKey, CoreRecord, EvictionReason, MirrorCounters, RelayFreshness,
};
pub use restore::{QuarantineCause, QuarantinedCore};

use inventory::{Change, Inventory};

/// Tuning of the mirror store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Byte budget that garbage collection enforces (default 25 GiB).
    pub max_bytes: u64,
    /// How long an unannounced core of priority 0 may go unseen before it is
    /// stale (default 7 days).
    pub stale_core_ttl: Duration,
    /// Cores kept open at once; the least recently used is closed beyond this
    /// (default 64). Each open core holds four files.
    pub max_open_cores: usize,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            max_bytes: 25 << 30,
            stale_core_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_open_cores: 64,
        }
    }
}

/// Whether [`MirrorStore::register_core`] created a record or merged into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Registered {
    /// The core was new: an empty replica was created.
    New,
    /// The core was known: its metadata was merged.
    Merged,
}

const INVENTORY_FILE: &str = "inventory.redb";
const CORES_DIR: &str = "cores";
const QUARANTINE_DIR: &str = "quarantine";

/// The mirror store. See the module docs for the contract.
#[derive(Debug)]
pub struct MirrorStore {
    config: MirrorConfig,
    root: PathBuf,
    inventory: Inventory,
    records: BTreeMap<CoreKey, CoreRecord>,
    by_relay: BTreeMap<RelayKey, BTreeSet<CoreKey>>,
    counters: MirrorCounters,
    open_logs: BTreeMap<CoreKey, blocks::OpenLog>,
    /// Use counter for the least-recently-used choice among open logs.
    tick: u64,
    quarantined: Vec<QuarantinedCore>,
}

impl MirrorStore {
    // ---- getters ----

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every mirrored core, in key order.
    pub fn cores(&self) -> impl Iterator<Item = &CoreRecord> + '_ {
        self.records.values()
    }

    /// One core's record.
    #[must_use]
    pub fn core(&self, core: &CoreKey) -> Option<&CoreRecord> {
        self.records.get(core)
    }

    /// Number of mirrored cores.
    #[must_use]
    pub fn core_count(&self) -> usize {
        self.records.len()
    }

    /// The cores mirrored for `relay`, in key order.
    pub fn cores_of_relay(&self, relay: &RelayKey) -> impl Iterator<Item = &CoreRecord> + '_ {
        self.by_relay
            .get(relay)
            .into_iter()
            .flatten()
            .filter_map(|key| self.records.get(key))
    }

    /// The relay's mirror freshness as of `now`, over its cores (a removed
    /// writer counts up to its final length); `None` if none is mirrored.
    #[must_use]
    pub fn relay_freshness(&self, relay: &RelayKey, now: UnixTime) -> Option<RelayFreshness> {
        RelayFreshness::of(*relay, self.cores_of_relay(relay), now)
    }

    /// Bytes the mirrored cores occupy on disk (quarantined directories excluded).
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.records
            .values()
            .map(|r| r.bytes)
            .fold(0, u64::saturating_add)
    }

    /// The store's totals.
    #[must_use]
    pub fn counters(&self) -> MirrorCounters {
        self.counters
    }

    /// Core directories quarantined when this store opened.
    #[must_use]
    pub fn quarantined(&self) -> &[QuarantinedCore] {
        &self.quarantined
    }

    // ---- inputs ----

    /// Registers a core announced by a worker, or merges a re-announcement
    /// into its record. Idempotent. A new core gets an empty replica.
    pub async fn register_core(
        &mut self,
        announcement: CoreAnnouncement,
        now: UnixTime,
    ) -> Result<Registered, MirrorError> {
        let key = announcement.core_key;
        if key.verifying_key().is_none() {
            return Err(MirrorError::InvalidCoreKey(key));
        }
        let outcome = match self.records.get_mut(&key) {
            Some(record) => {
                if record.relay != announcement.relay {
                    return Err(MirrorError::RelayMismatch {
                        core: key,
                        registered: record.relay,
                        announced: announcement.relay,
                    });
                }
                record.owner = announcement.owner;
                record.role = announcement.role;
                record.announce = announcement.announce;
                record.priority = announcement.priority;
                record.touch(now);
                Registered::Merged
            }
            None => {
                let mut record = CoreRecord::new(&announcement, now);
                record.touch(now);
                self.by_relay
                    .entry(record.relay)
                    .or_default()
                    .insert(record.core_key);
                self.records.insert(key, record);
                Registered::New
            }
        };
        // The record is durable before its directory exists, so a crash leaves
        // a record without blocks (re-created on open), never an unknown directory.
        self.persist(&key, outcome == Registered::Merged)?;
        if outcome == Registered::New {
            self.log_mut(key).await?;
            self.refresh_from_log(key)?;
        }
        Ok(outcome)
    }

    /// Records the length the core's owner advertises now. Lengths only grow
    /// (logs are append-only); a shorter advertisement is ignored.
    pub fn advertise(
        &mut self,
        core: &CoreKey,
        remote_length: u64,
        now: UnixTime,
    ) -> Result<(), MirrorError> {
        let record = self
            .records
            .get_mut(core)
            .ok_or(MirrorError::UnknownCore(*core))?;
        // In sync up to now with what was known; then the new length counts.
        record.touch(now);
        record.remote_length = record.remote_length.max(remote_length);
        record.touch(now);
        self.persist(core, true)
    }

    /// Marks a core as having left its relay at `final_length` (a removed
    /// writer): only blocks below it count towards the relay's freshness.
    pub fn retire_core(
        &mut self,
        core: &CoreKey,
        final_length: u64,
        now: UnixTime,
    ) -> Result<(), MirrorError> {
        let record = self
            .records
            .get_mut(core)
            .ok_or(MirrorError::UnknownCore(*core))?;
        record.touch(now);
        record.final_length = Some(final_length);
        record.touch(now);
        self.persist(core, false)
    }

    /// Deletes a core's mirror on request (an operator's delete, a relay's removal).
    pub fn remove_core(&mut self, core: &CoreKey) -> Result<Eviction, MirrorError> {
        let record = self
            .records
            .get(core)
            .ok_or(MirrorError::UnknownCore(*core))?;
        let eviction = Eviction::of(record, EvictionReason::Removed);
        self.evict(std::slice::from_ref(&eviction))?;
        Ok(eviction)
    }

    // ---- internals shared by the submodules ----

    fn core_dir(&self, core: &CoreKey) -> PathBuf {
        self.root.join(CORES_DIR).join(core.to_hex())
    }

    /// Writes one record (and the counters) to the inventory.
    fn persist(&self, core: &CoreKey, soft: bool) -> Result<(), MirrorError> {
        let Some(record) = self.records.get(core) else {
            return Ok(());
        };
        self.inventory.commit(&Change {
            put: vec![record],
            counters: Some(&self.counters),
            soft,
            ..Change::default()
        })
    }

    /// Drops evicted cores from the inventory, then deletes their directories.
    /// A directory that cannot be deleted is left as an orphan, which the next
    /// open quarantines.
    fn evict(&mut self, evictions: &[Eviction]) -> Result<(), MirrorError> {
        let mut counters = self.counters;
        for eviction in evictions {
            counters.count_eviction(eviction.reason);
        }
        self.inventory.commit(&Change {
            remove: evictions.iter().map(|e| e.core_key).collect(),
            counters: Some(&counters),
            ..Change::default()
        })?;
        self.counters = counters;
        for eviction in evictions {
            let key = eviction.core_key;
            self.open_logs.remove(&key);
            if let Some(record) = self.records.remove(&key)
                && let Some(keys) = self.by_relay.get_mut(&record.relay)
            {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_relay.remove(&record.relay);
                }
            }
            let dir = self.core_dir(&key);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    core = %key.short(), dir = %dir.display(), error = %e,
                    "evicted core's directory not deleted; it is quarantined at the next open"
                ),
            }
            tracing::info!(
                core = %key.short(), relay = %eviction.relay.short(),
                reason = eviction.reason.as_str(), bytes = eviction.bytes, "mirror core evicted"
            );
        }
        Ok(())
    }
}

/// Apparent size of the files in `dir` (hypercore keeps its four files flat).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|meta| meta.len())
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests;

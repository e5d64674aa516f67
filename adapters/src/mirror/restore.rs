//! Opening the store: reload the inventory, reopen every core, and move aside
//! what cannot be reopened instead of failing.
//!
//! Cases, each logged and listed in [`MirrorStore::quarantined`]:
//! - a core directory that does not reopen (or holds another key) is moved to
//!   `<root>/quarantine/<hex>.<n>`; the record stays, its local length reset,
//!   and an empty replica takes the directory's place ([`QuarantineCause::Unopenable`]);
//! - a record that claims blocks whose directory is gone is reset the same way
//!   ([`QuarantineCause::Missing`]);
//! - a directory without a record (an eviction interrupted between the
//!   inventory commit and the delete, or a record that no longer decodes) is
//!   moved aside ([`QuarantineCause::Orphan`]).
//!
//! Quarantined directories are kept for the operator to inspect; they do not
//! count towards the byte budget.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::MirrorError;
use super::inventory::{Change, Inventory};
use super::record::CoreKey;
use super::{CORES_DIR, INVENTORY_FILE, MirrorConfig, MirrorStore, QUARANTINE_DIR};
use crate::log::{self, HyperLog};
use hypercore::VerifyingKey;

/// Why a core directory was quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuarantineCause {
    /// The directory did not reopen as the core's log.
    Unopenable(String),
    /// The record claimed blocks but the directory was gone.
    Missing,
    /// The directory had no (readable) record.
    Orphan,
}

/// A core directory set aside when the store opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantinedCore {
    /// The core.
    pub core_key: CoreKey,
    /// Why.
    pub cause: QuarantineCause,
    /// Where the directory was moved (`None` when there was none to move).
    pub moved_to: Option<PathBuf>,
    /// Whether the store still has a record for it, i.e. it is re-mirrored
    /// from block 0 as soon as its owner sends proofs.
    pub remirror: bool,
}

impl MirrorStore {
    /// Opens (or creates) the store in `root`. Every mirror comes back with its
    /// metadata and blocks; cores that cannot be reopened are quarantined and
    /// reported, never fatal. Fails only when the root or the inventory itself
    /// cannot be used.
    pub async fn open(root: &Path, config: MirrorConfig) -> Result<MirrorStore, MirrorError> {
        for dir in [root.join(CORES_DIR), root.join(QUARANTINE_DIR)] {
            std::fs::create_dir_all(&dir).map_err(|e| MirrorError::io(&dir, e))?;
        }
        let inventory = Inventory::open(&root.join(INVENTORY_FILE))?;
        let loaded = inventory.load()?;
        let mut store = MirrorStore {
            config,
            root: root.to_path_buf(),
            inventory,
            records: BTreeMap::new(),
            by_relay: BTreeMap::new(),
            counters: loaded.counters,
            open_logs: BTreeMap::new(),
            tick: 0,
            quarantined: Vec::new(),
        };
        for key in &loaded.undecodable {
            tracing::warn!(core = %key.short(), inventory = %store.inventory.path().display(),
                "mirror inventory record unreadable; dropped");
        }
        let mut dropped = loaded.undecodable;
        for record in loaded.records {
            // Registration refuses keys that are not curve points, so such a
            // record was not written by this store: drop it like an unreadable one.
            if record.core_key.verifying_key().is_none() {
                dropped.push(record.core_key);
                continue;
            }
            store
                .by_relay
                .entry(record.relay)
                .or_default()
                .insert(record.core_key);
            store.records.insert(record.core_key, record);
        }

        store.quarantine_orphans()?;
        let keys: Vec<CoreKey> = store.records.keys().copied().collect();
        for key in keys {
            if let Some(public) = key.verifying_key() {
                store.reopen(key, public).await?;
            }
        }
        let records: Vec<_> = store.records.values().collect();
        store.inventory.commit(&Change {
            put: records,
            remove: dropped,
            counters: Some(&store.counters),
            ..Change::default()
        })?;
        tracing::info!(
            root = %root.display(), cores = store.records.len(), bytes = store.total_bytes(),
            quarantined = store.quarantined.len(), "mirror store opened"
        );
        Ok(store)
    }

    /// Reopens one recorded core, quarantining its directory if it does not.
    async fn reopen(&mut self, key: CoreKey, public: VerifyingKey) -> Result<(), MirrorError> {
        let dir = self.core_dir(&key);
        let cause = if log::exists(&dir) {
            match HyperLog::open_expecting(&dir, &public).await {
                Ok(opened) => {
                    self.cache_log(key, opened);
                    None
                }
                Err(e) => Some(QuarantineCause::Unopenable(e.to_string())),
            }
        } else {
            // No log: fine for a record without blocks (a crash between the
            // record's commit and the directory's creation), lost otherwise.
            let claims_blocks = self.records.get(&key).is_some_and(|r| r.local_length > 0);
            claims_blocks.then_some(QuarantineCause::Missing)
        };
        if let Some(cause) = cause {
            let moved_to = if dir.exists() {
                Some(self.move_aside(&key, &dir)?)
            } else {
                None
            };
            if let Some(record) = self.records.get_mut(&key) {
                record.local_length = 0;
                record.signed_length = 0;
                record.bytes = 0;
            }
            self.report(key, cause, moved_to, true);
        }
        // Opens the cached log, or creates the empty replica to re-mirror into.
        match self.log_mut(key).await {
            Ok(_) => self.refresh_from_log(key),
            Err(e) => {
                // Not fatal: the next use of this core retries and reports.
                tracing::warn!(core = %key.short(), error = %e, "mirror core not reopened");
                Ok(())
            }
        }
    }

    /// Moves aside every hex-named core directory that has no record.
    fn quarantine_orphans(&mut self) -> Result<(), MirrorError> {
        let cores = self.root.join(CORES_DIR);
        let entries = std::fs::read_dir(&cores).map_err(|e| MirrorError::io(&cores, e))?;
        let mut orphans = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| MirrorError::io(&cores, e))?;
            let name = entry.file_name();
            match name.to_str().and_then(|n| n.parse::<CoreKey>().ok()) {
                Some(key) if !self.records.contains_key(&key) => {
                    orphans.insert((key, entry.path()));
                }
                Some(_) => {}
                None => tracing::warn!(path = %entry.path().display(),
                    "unexpected entry in the mirror's cores directory; left alone"),
            }
        }
        for (key, dir) in orphans {
            let moved_to = self.move_aside(&key, &dir)?;
            self.report(key, QuarantineCause::Orphan, Some(moved_to), false);
        }
        Ok(())
    }

    /// Renames `dir` into the quarantine directory under a fresh name.
    fn move_aside(&mut self, key: &CoreKey, dir: &Path) -> Result<PathBuf, MirrorError> {
        let quarantine = self.root.join(QUARANTINE_DIR);
        let mut n = self.counters.quarantined;
        let mut target = quarantine.join(format!("{}.{n}", key.to_hex()));
        while target.exists() {
            n += 1;
            target = quarantine.join(format!("{}.{n}", key.to_hex()));
        }
        std::fs::rename(dir, &target).map_err(|e| MirrorError::io(dir, e))?;
        Ok(target)
    }

    fn report(
        &mut self,
        key: CoreKey,
        cause: QuarantineCause,
        moved_to: Option<PathBuf>,
        remirror: bool,
    ) {
        self.counters.quarantined = self.counters.quarantined.saturating_add(1);
        tracing::warn!(
            core = %key.short(), cause = ?cause, moved_to = ?moved_to, remirror,
            "mirror core quarantined"
        );
        self.quarantined.push(QuarantinedCore {
            core_key: key,
            cause,
            moved_to,
            remirror,
        });
    }
}

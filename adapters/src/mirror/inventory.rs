//! The persisted inventory: one redb file holding a record per mirrored core
//! and the store's counters.
//!
//! Why redb rather than a whole-file snapshot: records change on every stored
//! batch, and redb updates one record in an ACID, checksummed transaction
//! instead of rewriting (and fsyncing) the whole inventory each time. It also
//! takes a file lock, so two stores cannot share a root by accident.
//!
//! Values are postcard with one format-version byte first. A record that does
//! not decode is reported (its directory is then quarantined as an orphan);
//! it never stops the store from opening.

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{MirrorError, inventory};
use super::record::{CoreKey, CoreRecord, MirrorCounters};

/// Core key → versioned postcard [`CoreRecord`].
pub(super) const CORES: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("cores");
/// Name → versioned postcard value; holds [`COUNTERS_KEY`].
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const COUNTERS_KEY: &str = "counters";
/// The value format this build writes and reads.
const FORMAT_VERSION: u8 = 1;

/// What the inventory held when the store opened.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) records: Vec<CoreRecord>,
    /// Keys whose record did not decode.
    pub(super) undecodable: Vec<CoreKey>,
    pub(super) counters: MirrorCounters,
}

/// One batch of changes, committed atomically.
#[derive(Debug, Default)]
pub(super) struct Change<'a> {
    pub(super) put: Vec<&'a CoreRecord>,
    pub(super) remove: Vec<CoreKey>,
    pub(super) counters: Option<&'a MirrorCounters>,
    /// Soft changes (advertised lengths, last-seen times) skip the fsync: a crash
    /// loses at most what the owners will advertise again.
    pub(super) soft: bool,
}

#[derive(Debug)]
pub(super) struct Inventory {
    db: Database,
    path: PathBuf,
}

impl Inventory {
    pub(super) fn open(path: &Path) -> Result<Inventory, MirrorError> {
        let db = Database::builder()
            // A file damaged outside redb is reported, not trusted (a plain open may panic).
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => {
                    MirrorError::InventoryLocked(path.to_path_buf())
                }
                e => inventory(e),
            })?;
        Ok(Inventory {
            db,
            path: path.to_path_buf(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every record and the counters; lists the records that do not
    /// decode (the caller removes them with its first commit).
    pub(super) fn load(&self) -> Result<Loaded, MirrorError> {
        let mut loaded = Loaded::default();
        {
            let txn = self.db.begin_read().map_err(inventory)?;
            match txn.open_table(CORES) {
                Ok(table) => {
                    for entry in table.iter().map_err(inventory)? {
                        let (key, value) = entry.map_err(inventory)?;
                        let key = CoreKey(*key.value());
                        match decode::<CoreRecord>(value.value()) {
                            Some(record) if record.core_key == key => loaded.records.push(record),
                            _ => loaded.undecodable.push(key),
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(inventory(e)),
            }
            match txn.open_table(META) {
                Ok(table) => {
                    if let Some(value) = table.get(COUNTERS_KEY).map_err(inventory)? {
                        // Unreadable counters restart from zero rather than block the store.
                        loaded.counters = decode(value.value()).unwrap_or_default();
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(inventory(e)),
            }
        }
        Ok(loaded)
    }

    /// Commits `change` in one transaction.
    pub(super) fn commit(&self, change: &Change<'_>) -> Result<(), MirrorError> {
        let mut txn = self.db.begin_write().map_err(inventory)?;
        if change.soft {
            txn.set_durability(Durability::None).map_err(inventory)?;
        }
        {
            let mut cores = txn.open_table(CORES).map_err(inventory)?;
            for record in &change.put {
                cores
                    .insert(record.core_key.as_bytes(), encode(*record).as_slice())
                    .map_err(inventory)?;
            }
            for key in &change.remove {
                cores.remove(key.as_bytes()).map_err(inventory)?;
            }
            if let Some(counters) = change.counters {
                let mut meta = txn.open_table(META).map_err(inventory)?;
                meta.insert(COUNTERS_KEY, encode(counters).as_slice())
                    .map_err(inventory)?;
            }
        }
        txn.commit().map_err(inventory)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_VERSION];
    // Records are plain structs of integers, flags and fixed arrays: postcard
    // cannot fail to serialise them into a Vec.
    bytes.extend(postcard::to_allocvec(value).unwrap_or_default());
    bytes
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let (&version, body) = bytes.split_first()?;
    if version != FORMAT_VERSION {
        return None;
    }
    postcard::from_bytes(body).ok()
}

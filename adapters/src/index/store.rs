//! [`RelayIndex`]: the redb file, its tables, and the write path.
//!
//! Every [`RelayIndex::apply`] is one redb write transaction, so a batch of view changes is
//! applied as a whole or not at all. An index opened with [`RelayIndex::open`] commits with
//! redb's immediate (fsync'd) durability. A *scratch* index ([`RelayIndex::open_scratch`]: one
//! rebuilt from the logs at every start, as [`crate::relay::IndexedRelay`] does) skips the
//! fsync on all but every [`SCRATCH_SYNC_EVERY`]th commit, which lets redb reuse freed pages:
//! a crash may lose its last commits, and the next start rebuilds it anyway. Reads open their
//! own read transaction and see the last committed batch.

use std::fmt;
use std::path::Path;

use hypergate_core::nostr::{Event, EventId};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::keys::{EventKeys, Secondary};
use super::{IndexError, codec, storage};

/// The layout version this code reads and writes; bumped on any change to keys or records.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_VERSION_KEY: &str = "format_version";

pub(crate) const META: TableDefinition<'_, &str, u32> = TableDefinition::new("meta");
pub(crate) const EVENTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("events");
pub(crate) const BY_TIME: TableDefinition<'_, &[u8], ()> = TableDefinition::new("by_time");
pub(crate) const BY_AUTHOR: TableDefinition<'_, &[u8], ()> = TableDefinition::new("by_author");
pub(crate) const BY_KIND: TableDefinition<'_, &[u8], ()> = TableDefinition::new("by_kind");
pub(crate) const BY_TAG: TableDefinition<'_, &[u8], ()> = TableDefinition::new("by_tag");

/// One change of the relay view, as the index applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexChange {
    /// The event became visible. Inserting an event already present changes nothing.
    Insert(Event),
    /// The event stopped being visible (replaced or deleted). Removing an absent id changes
    /// nothing.
    Remove(EventId),
}

/// One relay's index: its visible events and the secondary indexes that answer filters.
///
/// `Send + Sync`: queries take `&self` and may run on several threads while one owner applies
/// changes through `&mut self`.
pub struct RelayIndex {
    db: Database,
    /// Commits left before the next durable one; `None` for an index whose every commit is
    /// durable.
    scratch_commits_left: Option<u32>,
}

/// A scratch index fsyncs one commit in this many (see the module docs).
pub const SCRATCH_SYNC_EVERY: u32 = 64;

impl fmt::Debug for RelayIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayIndex").finish_non_exhaustive()
    }
}

impl RelayIndex {
    /// Opens the index file at `path`, creating it (and its tables) if it does not exist.
    ///
    /// Fails with [`IndexError::UnsupportedFormat`] for an index of another format version and
    /// with [`IndexError::Storage`] for a file that is not a redb database or is already open.
    pub fn open(path: impl AsRef<Path>) -> Result<RelayIndex, IndexError> {
        Self::open_with(path.as_ref(), None)
    }

    /// Like [`Self::open`], for an index the caller rebuilds from the logs at every start:
    /// its commits skip the fsync (see the module docs).
    pub fn open_scratch(path: impl AsRef<Path>) -> Result<RelayIndex, IndexError> {
        Self::open_with(path.as_ref(), Some(SCRATCH_SYNC_EVERY - 1))
    }

    fn open_with(path: &Path, scratch_commits_left: Option<u32>) -> Result<RelayIndex, IndexError> {
        let db = Database::create(path).map_err(storage("opening the index file"))?;
        let tx = db
            .begin_write()
            .map_err(storage("starting the open transaction"))?;
        {
            let mut meta = tx.open_table(META).map_err(storage("opening meta"))?;
            let events = tx.open_table(EVENTS).map_err(storage("opening events"))?;
            let found = meta
                .get(FORMAT_VERSION_KEY)
                .map_err(storage("reading the format version"))?
                .map(|guard| guard.value());
            match found {
                Some(FORMAT_VERSION) => {}
                Some(found) => {
                    return Err(IndexError::UnsupportedFormat {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
                None if events.is_empty().map_err(storage("counting events"))? => {
                    meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION)
                        .map_err(storage("writing the format version"))?;
                }
                None => {
                    return Err(IndexError::Corrupt(
                        "events are stored but the format version is missing".to_owned(),
                    ));
                }
            }
            for table in [BY_TIME, BY_AUTHOR, BY_KIND, BY_TAG] {
                tx.open_table(table)
                    .map_err(storage("creating an index table"))?;
            }
        }
        tx.commit()
            .map_err(storage("committing the open transaction"))?;
        Ok(RelayIndex {
            db,
            scratch_commits_left,
        })
    }

    /// Applies `changes` in order, in one durable transaction: all of them or (on error or
    /// crash) none.
    pub fn apply(&mut self, changes: &[IndexChange]) -> Result<(), IndexError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .db
            .begin_write()
            .map_err(storage("starting a write transaction"))?;
        if let Some(left) = &mut self.scratch_commits_left {
            if *left == 0 {
                // This commit is the durable one of the next `SCRATCH_SYNC_EVERY`.
                *left = SCRATCH_SYNC_EVERY - 1;
            } else {
                *left -= 1;
                tx.set_durability(Durability::None)
                    .map_err(storage("skipping the fsync of a scratch commit"))?;
            }
        }
        {
            let mut tables = WriteTables::open(&tx)?;
            for change in changes {
                match change {
                    IndexChange::Insert(event) => tables.insert(event)?,
                    IndexChange::Remove(id) => tables.remove(id)?,
                }
            }
        }
        tx.commit().map_err(storage("committing changes"))
    }

    /// The stored event with this id.
    pub fn get(&self, id: &EventId) -> Result<Option<Event>, IndexError> {
        let tables = self.read_tables()?;
        tables.event(id)
    }

    /// How many events the index holds.
    pub fn len(&self) -> Result<u64, IndexError> {
        let tables = self.read_tables()?;
        tables.events.len().map_err(storage("counting events"))
    }

    /// Whether the index holds no event.
    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// Rewrites the file so that space freed by removals and by copy-on-write is returned to
    /// the file system; `true` if anything was reclaimed. Slow (it walks the whole file): an
    /// operator's maintenance step, not part of the write path.
    pub fn compact(&mut self) -> Result<bool, IndexError> {
        self.db
            .compact()
            .map_err(storage("compacting the index file"))
    }

    /// The tables of a new read transaction: one consistent snapshot.
    pub(crate) fn read_tables(&self) -> Result<ReadTables, IndexError> {
        let tx = self
            .db
            .begin_read()
            .map_err(storage("starting a read transaction"))?;
        let open = |table| {
            tx.open_table(table)
                .map_err(storage("opening an index table"))
        };
        Ok(ReadTables {
            events: tx.open_table(EVENTS).map_err(storage("opening events"))?,
            by_time: open(BY_TIME)?,
            by_author: open(BY_AUTHOR)?,
            by_kind: open(BY_KIND)?,
            by_tag: open(BY_TAG)?,
        })
    }
}

/// A secondary index table as read by queries.
pub(crate) type IndexTable = redb::ReadOnlyTable<&'static [u8], ()>;

/// The tables of one read transaction (each keeps the transaction alive).
pub(crate) struct ReadTables {
    pub(crate) events: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(crate) by_time: IndexTable,
    pub(crate) by_author: IndexTable,
    pub(crate) by_kind: IndexTable,
    pub(crate) by_tag: IndexTable,
}

impl ReadTables {
    /// The table of one secondary index.
    pub(crate) fn table(&self, secondary: Secondary) -> &IndexTable {
        match secondary {
            Secondary::Time => &self.by_time,
            Secondary::Author => &self.by_author,
            Secondary::Kind => &self.by_kind,
            Secondary::Tag => &self.by_tag,
        }
    }

    /// The stored event `id`, decoded.
    pub(crate) fn event(&self, id: &EventId) -> Result<Option<Event>, IndexError> {
        let Some(bytes) = self
            .events
            .get(id.as_bytes().as_slice())
            .map_err(storage("reading an event"))?
        else {
            return Ok(None);
        };
        codec::decode(bytes.value())
            .map(Some)
            .map_err(|error| IndexError::Corrupt(format!("event {id}: {error}")))
    }
}

/// The tables of one write transaction.
struct WriteTables<'tx> {
    events: redb::Table<'tx, &'static [u8], &'static [u8]>,
    by_time: redb::Table<'tx, &'static [u8], ()>,
    by_author: redb::Table<'tx, &'static [u8], ()>,
    by_kind: redb::Table<'tx, &'static [u8], ()>,
    by_tag: redb::Table<'tx, &'static [u8], ()>,
}

impl<'tx> WriteTables<'tx> {
    fn open(tx: &'tx redb::WriteTransaction) -> Result<WriteTables<'tx>, IndexError> {
        let open = |table| {
            tx.open_table(table)
                .map_err(storage("opening an index table"))
        };
        Ok(WriteTables {
            events: tx.open_table(EVENTS).map_err(storage("opening events"))?,
            by_time: open(BY_TIME)?,
            by_author: open(BY_AUTHOR)?,
            by_kind: open(BY_KIND)?,
            by_tag: open(BY_TAG)?,
        })
    }

    fn table(&mut self, secondary: Secondary) -> &mut redb::Table<'tx, &'static [u8], ()> {
        match secondary {
            Secondary::Time => &mut self.by_time,
            Secondary::Author => &mut self.by_author,
            Secondary::Kind => &mut self.by_kind,
            Secondary::Tag => &mut self.by_tag,
        }
    }

    fn insert(&mut self, event: &Event) -> Result<(), IndexError> {
        let id = event.id.as_bytes().as_slice();
        if self
            .events
            .get(id)
            .map_err(storage("looking up an event"))?
            .is_some()
        {
            return Ok(());
        }
        let bytes = codec::encode(event)?;
        self.events
            .insert(id, bytes.as_slice())
            .map_err(storage("storing an event"))?;
        for (secondary, key) in EventKeys::of(event).entries() {
            self.table(secondary)
                .insert(key, ())
                .map_err(storage("indexing an event"))?;
        }
        Ok(())
    }

    fn remove(&mut self, id: &EventId) -> Result<(), IndexError> {
        let Some(bytes) = self
            .events
            .remove(id.as_bytes().as_slice())
            .map_err(storage("removing an event"))?
            .map(|guard| guard.value().to_vec())
        else {
            return Ok(());
        };
        let event = codec::decode(&bytes)
            .map_err(|error| IndexError::Corrupt(format!("event {id}: {error}")))?;
        for (secondary, key) in EventKeys::of(&event).entries() {
            self.table(secondary)
                .remove(key)
                .map_err(storage("unindexing an event"))?;
        }
        Ok(())
    }
}

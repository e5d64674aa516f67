//! The three stores behind one small interface: write a batch of events in one durable
//! transaction, and inside one read snapshot scan an index range in key order and get events.

use std::path::Path;

use crate::layout::{Ev, TABLES, Table, index_keys};

/// What a query needs from a read snapshot.
pub trait Reader {
    /// Calls `visit` with each key in `lo..=hi` of `table`, ascending, until it returns false.
    fn scan(&self, table: Table, lo: &[u8], hi: &[u8], visit: &mut dyn FnMut(&[u8]) -> bool);
    /// The stored value of event `id`, handed to `visit`.
    fn get(&self, id: &[u8; 32], visit: &mut dyn FnMut(&[u8]));
}

pub trait Store {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// Inserts `events` and their index keys in one transaction, committed durably.
    fn insert(&self, events: &[Ev]);
    /// Runs `f` inside one read snapshot.
    fn read<R>(&self, f: impl FnOnce(&dyn Reader) -> R) -> R;
}

#[cfg(feature = "redb")]
pub mod redb_store {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const EVENTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("events");
    const INDEXES: [TableDefinition<'_, &[u8], ()>; 4] = [
        TableDefinition::new("by_time"),
        TableDefinition::new("by_author"),
        TableDefinition::new("by_kind"),
        TableDefinition::new("by_tag"),
    ];

    pub struct RedbStore(redb::Database);

    struct RedbReader {
        events: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
        indexes: Vec<redb::ReadOnlyTable<&'static [u8], ()>>,
    }

    impl Reader for RedbReader {
        fn scan(&self, table: Table, lo: &[u8], hi: &[u8], visit: &mut dyn FnMut(&[u8]) -> bool) {
            let range = self.indexes[table as usize].range(lo..=hi).unwrap();
            for entry in range {
                let (key, _) = entry.unwrap();
                if !visit(key.value()) {
                    break;
                }
            }
        }

        fn get(&self, id: &[u8; 32], visit: &mut dyn FnMut(&[u8])) {
            if let Some(value) = self.events.get(&id[..]).unwrap() {
                visit(value.value());
            }
        }
    }

    impl Store for RedbStore {
        const NAME: &'static str = "redb 4.6";

        fn open(dir: &Path) -> Self {
            let db = redb::Database::create(dir.join("index.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(EVENTS).unwrap();
            for def in INDEXES {
                tx.open_table(def).unwrap();
            }
            tx.commit().unwrap();
            RedbStore(db)
        }

        fn insert(&self, events: &[Ev]) {
            let tx = self.0.begin_write().unwrap();
            {
                let mut table = tx.open_table(EVENTS).unwrap();
                let mut indexes: Vec<_> =
                    INDEXES.iter().map(|d| tx.open_table(*d).unwrap()).collect();
                for ev in events {
                    table.insert(&ev.id[..], &ev.value[..]).unwrap();
                    for (t, key) in index_keys(ev) {
                        indexes[t as usize].insert(&key[..], ()).unwrap();
                    }
                }
            }
            tx.commit().unwrap();
        }

        fn read<R>(&self, f: impl FnOnce(&dyn Reader) -> R) -> R {
            let tx = self.0.begin_read().unwrap();
            let reader = RedbReader {
                events: tx.open_table(EVENTS).unwrap(),
                indexes: INDEXES.iter().map(|d| tx.open_table(*d).unwrap()).collect(),
            };
            f(&reader)
        }
    }
}

#[cfg(feature = "heed")]
pub mod heed_store {
    use heed::types::{Bytes, Unit};
    use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn};

    use super::*;

    pub struct HeedStore {
        // Databases borrow the environment; leak it so the store owns plain `'static` handles.
        env: &'static Env,
        events: Database<'static, Bytes, Bytes>,
        indexes: Vec<Database<'static, Bytes, Unit>>,
    }

    struct HeedReader<'a> {
        store: &'a HeedStore,
        tx: RoTxn<'a, heed::WithTls>,
    }

    impl Reader for HeedReader<'_> {
        fn scan(&self, table: Table, lo: &[u8], hi: &[u8], visit: &mut dyn FnMut(&[u8]) -> bool) {
            let range = (std::ops::Bound::Included(lo), std::ops::Bound::Included(hi));
            let iter = self.store.indexes[table as usize]
                .range(&self.tx, &range)
                .unwrap();
            for entry in iter {
                let (key, _) = entry.unwrap();
                if !visit(key) {
                    break;
                }
            }
        }

        fn get(&self, id: &[u8; 32], visit: &mut dyn FnMut(&[u8])) {
            if let Some(value) = self.store.events.get(&self.tx, &id[..]).unwrap() {
                visit(value);
            }
        }
    }

    impl Store for HeedStore {
        const NAME: &'static str = "heed 0.23 (LMDB)";

        fn open(dir: &Path) -> Self {
            // SAFETY: the directory is fresh and only this process opens it.
            #[allow(unsafe_code)]
            let env = unsafe {
                EnvOpenOptions::new()
                    .map_size(16 << 30)
                    .max_dbs(8)
                    .open(dir)
                    .unwrap()
            };
            let env: &'static Env = Box::leak(Box::new(env));
            let tx = env.write_txn().unwrap();
            let (events, indexes) = env
                .create_databases_and_commit(tx, |opener, tx| -> heed::Result<_> {
                    let events = opener.create_database::<Bytes, Bytes>(tx, Some("events"))?;
                    let mut indexes = [None, None, None, None];
                    for (slot, name) in
                        indexes
                            .iter_mut()
                            .zip(["by_time", "by_author", "by_kind", "by_tag"])
                    {
                        *slot = Some(opener.create_database::<Bytes, Unit>(tx, Some(name))?);
                    }
                    Ok(CommitOrAbort::<_, ()>::Commit((events, indexes)))
                })
                .unwrap()
                .unwrap_commit();
            HeedStore {
                env,
                events,
                indexes: indexes.into_iter().map(Option::unwrap).collect(),
            }
        }

        fn insert(&self, events: &[Ev]) {
            let mut tx = self.env.write_txn().unwrap();
            for ev in events {
                self.events.put(&mut tx, &ev.id[..], &ev.value[..]).unwrap();
                for (t, key) in index_keys(ev) {
                    self.indexes[t as usize]
                        .put(&mut tx, &key[..], &())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }

        fn read<R>(&self, f: impl FnOnce(&dyn Reader) -> R) -> R {
            let reader = HeedReader {
                store: self,
                tx: self.env.read_txn().unwrap(),
            };
            f(&reader)
        }
    }
}

#[cfg(feature = "fjall")]
pub mod fjall_store {
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};

    use super::*;

    pub struct FjallStore {
        db: Database,
        events: Keyspace,
        indexes: Vec<Keyspace>,
    }

    struct FjallReader<'a> {
        store: &'a FjallStore,
        snapshot: Snapshot,
    }

    impl Reader for FjallReader<'_> {
        fn scan(&self, table: Table, lo: &[u8], hi: &[u8], visit: &mut dyn FnMut(&[u8]) -> bool) {
            let iter = self
                .snapshot
                .range(&self.store.indexes[table as usize], lo..=hi);
            for guard in iter {
                let key = guard.key().unwrap();
                if !visit(&key) {
                    break;
                }
            }
        }

        fn get(&self, id: &[u8; 32], visit: &mut dyn FnMut(&[u8])) {
            if let Some(value) = self.snapshot.get(&self.store.events, id).unwrap() {
                visit(&value);
            }
        }
    }

    impl Store for FjallStore {
        const NAME: &'static str = "fjall 3.1";

        fn open(dir: &Path) -> Self {
            let db = Database::builder(dir).open().unwrap();
            let events = db
                .keyspace("events", KeyspaceCreateOptions::default)
                .unwrap();
            let indexes = ["by_time", "by_author", "by_kind", "by_tag"]
                .into_iter()
                .map(|name| db.keyspace(name, KeyspaceCreateOptions::default).unwrap())
                .collect();
            let _ = TABLES;
            FjallStore {
                db,
                events,
                indexes,
            }
        }

        fn insert(&self, events: &[Ev]) {
            let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
            for ev in events {
                batch.insert(&self.events, &ev.id[..], &ev.value[..]);
                for (t, key) in index_keys(ev) {
                    batch.insert(&self.indexes[t as usize], key, &[][..]);
                }
            }
            batch.commit().unwrap();
        }

        fn read<R>(&self, f: impl FnOnce(&dyn Reader) -> R) -> R {
            let reader = FjallReader {
                store: self,
                snapshot: self.db.snapshot(),
            };
            f(&reader)
        }
    }
}

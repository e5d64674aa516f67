//! The disk files under one [`HyperLog`](super::HyperLog), synced as a group.
//!
//! Contract:
//! - Every log is four files (`data`, `tree`, `bitfield`, `oplog`); the oplog is hypercore's
//!   commit record: an append or an applied proof writes its blocks (and, at a flush, its
//!   tree nodes and bitfield) first and then an oplog entry or header that refers to them.
//!   Crash safety needs only that what an oplog write refers to is durable before it, and
//!   that a header rewrite is durable before the entries it replaces are cut off.
//! - So a write stays in the page cache until one of three points syncs it:
//!   1. before an oplog write, the group's other dirty files are synced (`fdatasync`);
//!   2. before an oplog truncation, every dirty file of the group is synced, the oplog's
//!      own new header included;
//!   3. [`SyncGroup::sync`], which the log calls before it reports a change as done.
//!
//!   hypercore's own disk storage (`random-access-disk`) instead syncs every single write,
//!   and performs each seek, write and sync as a separate trip to a thread pool: a batch of
//!   gateway writes cost about 28 `fsync`s and over a hundred thread hand-offs (see
//!   `docs/benchmarks.md`, "Gateway write path").
//! - Reads and writes are positional (`pread`/`pwrite`) and run on the calling thread: they
//!   touch the page cache only. Syncs, which wait for the disk, run on the blocking pool.
//! - A file created here makes the log's directory dirty; the next sync syncs it too, so a
//!   new log's files survive a crash once its creation returned.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use hypercore::{Storage, StorageTraits, Store};
use random_access_storage::{RandomAccess, RandomAccessError};

use crate::rt;

/// The file names of one log (hypercore's own), in [`store_slot`] order.
const FILE_NAMES: [&str; 4] = ["tree", "data", "bitfield", "oplog"];
const OPLOG: usize = 3;

fn store_slot(store: &Store) -> usize {
    match store {
        Store::Tree => 0,
        Store::Data => 1,
        Store::Bitfield => 2,
        Store::Oplog => OPLOG,
    }
}

/// Which of a log's files hold writes that are not durable yet, and the handles to sync them.
#[derive(Debug)]
pub(crate) struct SyncGroup {
    dir: PathBuf,
    files: [OnceLock<Arc<File>>; 4],
    dirty: [AtomicBool; 4],
    /// A file was created in `dir` since its last sync.
    dir_dirty: AtomicBool,
    /// `fdatasync`s issued so far (what the tests count).
    file_syncs: AtomicU64,
}

/// Which files a sync covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every file but the oplog (rule 1).
    AllButOplog,
    /// Every file (rules 2 and 3).
    All,
}

impl SyncGroup {
    fn new(dir: &Path) -> SyncGroup {
        SyncGroup {
            dir: dir.to_path_buf(),
            files: Default::default(),
            dirty: Default::default(),
            dir_dirty: AtomicBool::new(false),
            file_syncs: AtomicU64::new(0),
        }
    }

    /// How many file syncs the group has issued.
    #[cfg(test)]
    pub(crate) fn file_syncs(&self) -> u64 {
        self.file_syncs.load(Ordering::Relaxed)
    }

    /// Makes every write of the group so far durable.
    pub(crate) async fn sync(&self) -> std::io::Result<()> {
        self.sync_scope(Scope::All).await
    }

    async fn sync_scope(&self, scope: Scope) -> std::io::Result<()> {
        let mut slots = Vec::new();
        let mut files = Vec::new();
        for (slot, dirty) in self.dirty.iter().enumerate() {
            if scope == Scope::AllButOplog && slot == OPLOG {
                continue;
            }
            if dirty.swap(false, Ordering::AcqRel)
                && let Some(file) = self.files[slot].get()
            {
                slots.push(slot);
                files.push(Arc::clone(file));
            }
        }
        let dir = self
            .dir_dirty
            .swap(false, Ordering::AcqRel)
            .then(|| self.dir.clone());
        if files.is_empty() && dir.is_none() {
            return Ok(());
        }
        self.file_syncs
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        let synced = rt::unblock(move || {
            for file in &files {
                file.sync_data()?;
            }
            if let Some(dir) = dir {
                File::open(dir)?.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        if synced.is_err() {
            // Nothing is known to be durable: the next sync tries every one of them again.
            for slot in slots {
                self.dirty[slot].store(true, Ordering::Release);
            }
            self.dir_dirty.store(true, Ordering::Release);
        }
        synced
    }
}

impl Drop for SyncGroup {
    fn drop(&mut self) {
        // Every mutating call of the log ends with a sync, so this only runs after a change
        // whose caller stopped waiting for it: keep what it wrote, as the page cache would
        // eventually, but now.
        for (slot, dirty) in self.dirty.iter().enumerate() {
            if dirty.load(Ordering::Acquire)
                && let Some(file) = self.files[slot].get()
            {
                let _ = file.sync_data();
            }
        }
    }
}

/// One file of a log: positional I/O, synced by its [`SyncGroup`].
#[derive(Debug)]
struct GroupedFile {
    slot: usize,
    file: Arc<File>,
    length: u64,
    group: Arc<SyncGroup>,
}

impl GroupedFile {
    fn open(group: &Arc<SyncGroup>, store: &Store) -> std::io::Result<GroupedFile> {
        let slot = store_slot(store);
        let path = group.dir.join(FILE_NAMES[slot]);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        if !existed {
            group.dir_dirty.store(true, Ordering::Release);
        }
        let length = file.metadata()?.len();
        let file = Arc::new(file);
        // One handle per slot: hypercore opens each store once per log.
        let _ = group.files[slot].set(Arc::clone(&file));
        Ok(GroupedFile {
            slot,
            file,
            length,
            group: Arc::clone(group),
        })
    }

    fn mark_dirty(&self) {
        self.group.dirty[self.slot].store(true, Ordering::Release);
    }

    fn out_of_bounds(&self, offset: u64, end: Option<u64>) -> RandomAccessError {
        RandomAccessError::OutOfBounds {
            offset,
            end,
            length: self.length,
        }
    }
}

#[async_trait::async_trait]
impl RandomAccess for GroupedFile {
    async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), RandomAccessError> {
        if self.slot == OPLOG {
            self.group.sync_scope(Scope::AllButOplog).await?;
        }
        self.file.write_all_at(data, offset)?;
        self.mark_dirty();
        self.length = self.length.max(offset.saturating_add(data.len() as u64));
        Ok(())
    }

    async fn read(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, RandomAccessError> {
        let end = offset.saturating_add(length);
        if end > self.length {
            return Err(self.out_of_bounds(offset, Some(end)));
        }
        let size = usize::try_from(length).map_err(|_| self.out_of_bounds(offset, Some(end)))?;
        let mut buffer = vec![0; size];
        // Within the file's length a sparse hole reads as zeros, as hypercore expects.
        self.file.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }

    async fn del(&mut self, offset: u64, length: u64) -> Result<(), RandomAccessError> {
        if offset > self.length {
            return Err(self.out_of_bounds(offset, None));
        }
        if length == 0 {
            return Ok(());
        }
        if offset.saturating_add(length) >= self.length {
            return self.truncate(offset).await;
        }
        // Deleting inside the file: the range reads as zeros afterwards.
        const CHUNK: u64 = 64 * 1024;
        let zeros = vec![0; CHUNK as usize];
        let mut at = offset;
        let end = offset + length;
        while at < end {
            let n = (end - at).min(CHUNK);
            self.write(at, &zeros[..n as usize]).await?;
            at += n;
        }
        Ok(())
    }

    async fn truncate(&mut self, length: u64) -> Result<(), RandomAccessError> {
        if self.slot == OPLOG {
            self.group.sync_scope(Scope::All).await?;
        }
        self.file.set_len(length)?;
        self.mark_dirty();
        self.length = length;
        Ok(())
    }

    async fn len(&mut self) -> Result<u64, RandomAccessError> {
        Ok(self.length)
    }

    async fn is_empty(&mut self) -> Result<bool, RandomAccessError> {
        Ok(self.length == 0)
    }

    async fn sync_all(&mut self) -> Result<(), RandomAccessError> {
        Ok(self.group.sync().await?)
    }
}

/// What [`Storage::open`] asks of its callback: one opened store.
type OpenedFile = std::pin::Pin<
    Box<dyn Future<Output = Result<Box<dyn StorageTraits + Send>, RandomAccessError>> + Send>,
>;

/// hypercore storage for the log in `dir` (created if missing; emptied when `overwrite`),
/// and the group that syncs it.
pub(crate) async fn open_grouped(
    dir: &Path,
    overwrite: bool,
) -> Result<(Storage, Arc<SyncGroup>), hypercore::HypercoreError> {
    std::fs::create_dir_all(dir)?;
    let group = Arc::new(SyncGroup::new(dir));
    let for_storage = Arc::clone(&group);
    let create = move |store: Store| {
        let group = Arc::clone(&for_storage);
        let opened: OpenedFile = Box::pin(async move {
            let file = GroupedFile::open(&group, &store)?;
            Ok(Box::new(file) as Box<dyn StorageTraits + Send>)
        });
        opened
    };
    let storage = Storage::open(create, overwrite).await?;
    Ok((storage, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_file(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn writes_reach_the_files_and_a_sync_leaves_nothing_dirty() {
        let temp = tempfile::tempdir().unwrap();
        futures_lite::future::block_on(async {
            let group = Arc::new(SyncGroup::new(temp.path()));
            let mut data = GroupedFile::open(&group, &Store::Data).unwrap();
            data.write(4, b"abc").await.unwrap();
            assert_eq!(data.len().await.unwrap(), 7);
            assert_eq!(data.read(4, 3).await.unwrap(), b"abc");
            assert_eq!(
                data.read(0, 4).await.unwrap(),
                [0; 4],
                "a hole reads as zeros"
            );
            assert!(group.dirty[1].load(Ordering::Acquire));
            group.sync().await.unwrap();
            assert!(group.dirty.iter().all(|d| !d.load(Ordering::Acquire)));
            assert!(!group.dir_dirty.load(Ordering::Acquire));
            assert_eq!(read_file(temp.path(), "data"), b"\0\0\0\0abc");
        });
    }

    #[test]
    fn an_oplog_write_first_syncs_the_files_it_may_refer_to() {
        let temp = tempfile::tempdir().unwrap();
        futures_lite::future::block_on(async {
            let group = Arc::new(SyncGroup::new(temp.path()));
            let mut data = GroupedFile::open(&group, &Store::Data).unwrap();
            let mut oplog = GroupedFile::open(&group, &Store::Oplog).unwrap();
            data.write(0, b"block").await.unwrap();
            oplog.write(0, b"entry").await.unwrap();
            assert!(
                !group.dirty[1].load(Ordering::Acquire),
                "the block was synced first"
            );
            assert!(
                group.dirty[OPLOG].load(Ordering::Acquire),
                "the entry waits for a sync"
            );
            oplog.write(5, b"more").await.unwrap();
            assert!(group.dirty[OPLOG].load(Ordering::Acquire));
            oplog.truncate(5).await.unwrap();
            assert_eq!(read_file(temp.path(), "oplog"), b"entry");
        });
    }

    #[test]
    fn reads_past_the_end_and_deletes_past_it_are_out_of_bounds() {
        let temp = tempfile::tempdir().unwrap();
        futures_lite::future::block_on(async {
            let group = Arc::new(SyncGroup::new(temp.path()));
            let mut tree = GroupedFile::open(&group, &Store::Tree).unwrap();
            tree.write(0, b"0123456789").await.unwrap();
            assert!(matches!(
                tree.read(8, 4).await,
                Err(RandomAccessError::OutOfBounds { .. })
            ));
            assert!(matches!(
                tree.del(11, 1).await,
                Err(RandomAccessError::OutOfBounds { .. })
            ));
            tree.del(2, 3).await.unwrap();
            assert_eq!(tree.read(0, 10).await.unwrap(), b"01\x00\x00\x0056789");
            tree.del(6, 100).await.unwrap();
            assert_eq!(
                tree.len().await.unwrap(),
                6,
                "a delete to the end truncates"
            );
        });
    }
}

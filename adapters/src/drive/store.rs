//! [`Drive`]: opening, writing, reading, listing and history of one drive.
//! The contract is in the module docs of `drive`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures_lite::io::{AsyncRead, AsyncReadExt};
use hypergate_core::time::UnixTime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DriveError;
use super::discovery::discovery_key;
use super::format::{
    DriveEntry, FileEntry, MAX_FILE_BYTES, MetaBlock, decode_meta_block, encode_meta_block,
};
use super::path::validate_path;
use super::reader::{FileCursor, FileReader};
use crate::log::{self, HyperLog};

/// Bytes per blobs-log block: small enough to stream, large enough that the
/// per-block tree overhead of hypercore stays negligible.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Blocks appended (and synced) together while writing: one round of syncs per
/// MiB of content, and at most one MiB of it buffered.
pub const BATCH_BLOCKS: usize = 16;

const META_DIR: &str = "meta";
const BLOBS_DIR: &str = "blobs";

/// One versioned file store; see the module docs of `drive`.
#[derive(Debug)]
pub struct Drive {
    dir: PathBuf,
    meta: HyperLog,
    blobs: HyperLog,
    files: BTreeMap<String, StoredFile>,
}

#[derive(Debug, Clone)]
struct StoredFile {
    entry: FileEntry,
    version: u64,
}

/// What a write did, with the original gateway's field names in JSON
/// (`{identifier?, key, discoveryKey, version, bytesWritten, path, coreLength,
/// coreContiguousLength, blobLength, blobContiguousLength}`) plus `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WriteReceipt {
    /// The relay identifier, for writes made through [`GatewayDrives`](super::GatewayDrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// The drive's key: the metadata log's public key (hex).
    pub key: String,
    /// hypercore's discovery key of [`WriteReceipt::key`] (hex).
    pub discovery_key: String,
    /// The drive's version after the write.
    pub version: u64,
    /// Content bytes written.
    pub bytes_written: u64,
    /// The canonical drive path written.
    pub path: String,
    /// Length of the metadata log (equals `version`).
    pub core_length: u64,
    /// Contiguous length of the metadata log held here.
    pub core_contiguous_length: u64,
    /// Length of the blobs log.
    pub blob_length: u64,
    /// Contiguous length of the blobs log held here.
    pub blob_contiguous_length: u64,
    /// SHA-256 of the content (hex).
    pub sha256: String,
}

/// A file as the drive currently sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStat {
    /// Where the content lives and how to check it.
    pub entry: FileEntry,
    /// The drive version whose entry wrote it.
    pub version: u64,
}

/// One change of a drive's history: the entry that produced `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriveChange {
    /// The drive version right after this change.
    pub version: u64,
    /// The change.
    pub entry: DriveEntry,
}

impl Drive {
    /// Whether a drive exists in `dir`.
    pub fn exists(dir: &Path) -> bool {
        log::exists(&dir.join(META_DIR))
    }

    /// Opens the drive in `dir`, or creates an empty one (fresh keys) there.
    pub async fn open_or_create(dir: &Path) -> Result<Drive, DriveError> {
        let meta_dir = dir.join(META_DIR);
        if !log::exists(&meta_dir) {
            // Blobs first: a crash before the metadata log exists leaves at most
            // an empty blobs log, which the next attempt adopts.
            let blobs = HyperLog::open_or_create(&dir.join(BLOBS_DIR)).await?;
            let meta = HyperLog::create(&meta_dir, None).await?;
            return Drive::finish_open(dir, meta, Some(blobs)).await;
        }
        Drive::open(dir).await
    }

    /// Opens the existing drive in `dir`.
    pub async fn open(dir: &Path) -> Result<Drive, DriveError> {
        let meta = HyperLog::open(&dir.join(META_DIR)).await?;
        Drive::finish_open(dir, meta, None).await
    }

    async fn finish_open(
        dir: &Path,
        mut meta: HyperLog,
        blobs: Option<HyperLog>,
    ) -> Result<Drive, DriveError> {
        let blobs_dir = dir.join(BLOBS_DIR);
        let blobs = match meta.get(0).await? {
            // No header yet (new, or a crash right after creating the metadata
            // log): adopt the blobs log and name it in the header.
            None => {
                let blobs = match blobs {
                    Some(blobs) => blobs,
                    None => HyperLog::open_or_create(&blobs_dir).await?,
                };
                let header = MetaBlock::Header {
                    blobs_key: blobs.public_key().to_bytes(),
                };
                meta.append(&encode_meta_block(&header)).await?;
                blobs
            }
            Some(block) => {
                let blobs_key = match decode_meta_block(&block) {
                    Ok(MetaBlock::Header { blobs_key }) => blobs_key,
                    Ok(_) => return Err(misplaced(dir, 0, "block 0 must be the header")),
                    Err(source) => return Err(corrupt(dir, 0, source)),
                };
                let blobs = match blobs {
                    Some(blobs) => blobs,
                    None => HyperLog::open(&blobs_dir).await?,
                };
                let found = blobs.public_key().to_bytes();
                if found != blobs_key {
                    return Err(DriveError::WrongBlobs {
                        drive: dir.to_path_buf(),
                        expected: hex::encode(blobs_key),
                        found: hex::encode(found),
                    });
                }
                blobs
            }
        };
        let mut drive = Drive {
            dir: dir.to_path_buf(),
            meta,
            blobs,
            files: BTreeMap::new(),
        };
        for change in drive.entries_since(1).await? {
            drive.apply(change);
        }
        Ok(drive)
    }

    fn apply(&mut self, change: DriveChange) {
        match change.entry {
            DriveEntry::Put(entry) => {
                let stored = StoredFile {
                    entry,
                    version: change.version,
                };
                self.files.insert(stored.entry.path.clone(), stored);
            }
            DriveEntry::Delete { path } => {
                self.files.remove(&path);
            }
        }
    }

    /// The drive's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata log, to replicate it (answer a mirror's proof requests). Writing to it
    /// directly would bypass the drive's format: only [`Drive::write`] and [`Drive::delete`]
    /// append.
    pub fn meta_log_mut(&mut self) -> &mut HyperLog {
        &mut self.meta
    }

    /// The blobs log, to replicate it (see [`Drive::meta_log_mut`]).
    pub fn blobs_log_mut(&mut self) -> &mut HyperLog {
        &mut self.blobs
    }

    /// The drive's key: the metadata log's public key.
    pub fn key(&self) -> [u8; 32] {
        self.meta.public_key().to_bytes()
    }

    /// hypercore's discovery key of [`Drive::key`].
    pub fn discovery_key(&self) -> [u8; 32] {
        discovery_key(&self.key())
    }

    /// The blobs log's public key.
    pub fn blobs_key(&self) -> [u8; 32] {
        self.blobs.public_key().to_bytes()
    }

    /// The drive's version: the metadata log's length.
    pub fn version(&self) -> u64 {
        self.meta.len()
    }

    /// The blobs log's length in blocks.
    pub fn blob_length(&self) -> u64 {
        self.blobs.len()
    }

    /// Stores `content` at `path` (see [`Drive::write_from`]).
    pub async fn write(
        &mut self,
        path: &str,
        content: &[u8],
        now: UnixTime,
    ) -> Result<WriteReceipt, DriveError> {
        self.write_from(path, content, now).await
    }

    /// Stores everything `content` yields at `path`, replacing any earlier file
    /// there: blobs first, then the metadata entry that makes it visible. On any
    /// error the earlier file (if any) stays what readers see.
    pub async fn write_from<R: AsyncRead + Unpin>(
        &mut self,
        path: &str,
        mut content: R,
        now: UnixTime,
    ) -> Result<WriteReceipt, DriveError> {
        validate_path(path)?;
        let blob_start = self.blobs.len();
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH_BLOCKS);
        loop {
            let chunk = read_chunk(&mut content)
                .await
                .map_err(|source| DriveError::Source {
                    path: path.to_owned(),
                    source,
                })?;
            if chunk.is_empty() {
                break;
            }
            size = size.saturating_add(chunk.len() as u64);
            if size > MAX_FILE_BYTES {
                return Err(DriveError::FileTooLarge {
                    path: path.to_owned(),
                });
            }
            hasher.update(&chunk);
            batch.push(chunk);
            if batch.len() == BATCH_BLOCKS {
                self.blobs.append_batch(&batch).await?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            self.blobs.append_batch(&batch).await?;
        }
        let entry = FileEntry {
            path: path.to_owned(),
            blob_start,
            blob_blocks: self.blobs.len() - blob_start,
            size,
            sha256: hasher.finalize().into(),
            written_at: now,
        };
        let sha256 = hex::encode(entry.sha256);
        self.append_change(DriveEntry::Put(entry)).await?;
        Ok(self.receipt(path, size, sha256))
    }

    /// Removes `path`; returns the new version, or `None` (and changes nothing)
    /// when there is no such file.
    pub async fn delete(&mut self, path: &str) -> Result<Option<u64>, DriveError> {
        if !self.files.contains_key(path) {
            return Ok(None);
        }
        self.append_change(DriveEntry::Delete {
            path: path.to_owned(),
        })
        .await
        .map(Some)
    }

    async fn append_change(&mut self, entry: DriveEntry) -> Result<u64, DriveError> {
        let block = encode_meta_block(&MetaBlock::Entry(entry.clone()));
        self.meta.append(&block).await?;
        let version = self.meta.len();
        self.apply(DriveChange { version, entry });
        Ok(version)
    }

    fn receipt(&self, path: &str, size: u64, sha256: String) -> WriteReceipt {
        WriteReceipt {
            identifier: None,
            key: hex::encode(self.key()),
            discovery_key: hex::encode(self.discovery_key()),
            version: self.version(),
            bytes_written: size,
            path: path.to_owned(),
            core_length: self.meta.len(),
            core_contiguous_length: self.meta.contiguous_len(),
            blob_length: self.blobs.len(),
            blob_contiguous_length: self.blobs.contiguous_len(),
            sha256,
        }
    }

    /// The file at `path`, if there is one.
    pub fn stat(&self, path: &str) -> Option<FileStat> {
        self.files.get(path).map(|stored| FileStat {
            entry: stored.entry.clone(),
            version: stored.version,
        })
    }

    /// Files at `prefix` or below it, in path order. `""` or `"/"` lists every
    /// file; a trailing `/` is ignored; `"/a"` matches `/a` and `/a/…`, not `/ab`.
    pub fn list(&self, prefix: &str) -> Result<Vec<FileStat>, DriveError> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            validate_path(prefix)?;
        }
        Ok(self
            .files
            .range(prefix.to_owned()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .filter(|(path, _)| path.len() == prefix.len() || path[prefix.len()..].starts_with('/'))
            .map(|(_, stored)| FileStat {
                entry: stored.entry.clone(),
                version: stored.version,
            })
            .collect())
    }

    /// A cursor over the content of `path`, for [`Drive::read_chunk`].
    pub fn cursor(&self, path: &str) -> Option<FileCursor> {
        self.files
            .get(path)
            .map(|stored| FileCursor::new(stored.entry.clone(), stored.version))
    }

    /// The next verified chunk of `cursor`'s file (see [`FileReader`]).
    pub async fn read_chunk(
        &mut self,
        cursor: &mut FileCursor,
    ) -> Result<Option<Vec<u8>>, DriveError> {
        cursor.next_chunk(&mut self.blobs).await
    }

    /// A streaming reader over the content of `path`, if there is such a file.
    pub fn open_file(&mut self, path: &str) -> Option<FileReader<'_>> {
        let cursor = self.cursor(path)?;
        Some(FileReader::new(&mut self.blobs, cursor))
    }

    /// The whole verified content of `path`, if there is such a file. Meant for
    /// small files; large ones should be streamed with [`Drive::open_file`].
    pub async fn read_to_vec(&mut self, path: &str) -> Result<Option<Vec<u8>>, DriveError> {
        match self.open_file(path) {
            Some(mut reader) => reader.read_to_end().await.map(Some),
            None => Ok(None),
        }
    }

    /// The changes after `version`, in order: the entries that produced
    /// versions `version + 1 ..= self.version()`. Asking from a version ahead
    /// of the drive is an error (the caller is looking at another drive, or one
    /// that was reset).
    pub async fn entries_since(&mut self, version: u64) -> Result<Vec<DriveChange>, DriveError> {
        let current = self.version();
        if version > current {
            return Err(DriveError::UnknownVersion {
                requested: version,
                current,
            });
        }
        let mut changes = Vec::new();
        // Block 0 is the header, not a change.
        for index in version.max(1)..current {
            let Some(block) = self.meta.get(index).await? else {
                return Err(misplaced(&self.dir, index, "metadata block is missing"));
            };
            match decode_meta_block(&block) {
                Ok(MetaBlock::Entry(entry)) => changes.push(DriveChange {
                    version: index + 1,
                    entry,
                }),
                Ok(_) => return Err(misplaced(&self.dir, index, "a header after block 0")),
                Err(source) => return Err(corrupt(&self.dir, index, source)),
            }
        }
        Ok(changes)
    }
}

/// Reads up to [`CHUNK_BYTES`] from `content`; shorter only at the end.
async fn read_chunk<R: AsyncRead + Unpin>(content: &mut R) -> std::io::Result<Vec<u8>> {
    let mut chunk = vec![0; CHUNK_BYTES];
    let mut filled = 0;
    while filled < CHUNK_BYTES {
        match content.read(&mut chunk[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    chunk.truncate(filled);
    Ok(chunk)
}

fn corrupt(dir: &Path, index: u64, source: super::MetaDecodeError) -> DriveError {
    DriveError::CorruptMetadata {
        drive: dir.to_path_buf(),
        index,
        source,
    }
}

fn misplaced(dir: &Path, index: u64, what: &'static str) -> DriveError {
    corrupt(dir, index, super::MetaDecodeError::Inconsistent(what))
}

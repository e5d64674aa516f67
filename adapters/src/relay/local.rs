//! [`RelayLogs`]: a worker's logs of one relay, in one directory.
//!
//! Layout: `<dir>/owner/` is the owner log; `<dir>/writers/<hex key>/` holds one
//! log per writer. Writer logs are opened lazily and kept open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hypercore::{SigningKey, VerifyingKey};
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::Event;
use hypergate_core::relay::{RelayOp, RelayOpError, WriterKey};

use super::owner_log_key;
use super::reader::BlockSource;
use crate::log::{self, HyperLog, LogError, Proof};

/// Why a relay-log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayLogsError {
    // --- API misuse ---
    /// The event cannot be carried by a relay op (too large).
    #[error("event cannot be stored: {0}")]
    Op(#[from] RelayOpError),
    /// The key does not have a log here, or is not a valid ed25519 key.
    #[error("no usable log for writer {0}")]
    UnknownWriter(WriterKey),
    /// The relay's directory holds no owner log.
    #[error("no relay in {0}")]
    NotFound(PathBuf),
    // --- local storage ---
    /// A log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The directory could not be listed.
    #[error("relay directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A worker's logs of one relay.
#[derive(Debug)]
pub struct RelayLogs {
    dir: PathBuf,
    relay: RelayKey,
    owner: HyperLog,
    writers: BTreeMap<WriterKey, HyperLog>,
}

impl RelayLogs {
    /// Creates a new relay in `dir` owned by `owner_key` (the relay key is its public key).
    pub async fn create(dir: &Path, owner_key: SigningKey) -> Result<RelayLogs, RelayLogsError> {
        let relay = RelayKey(owner_key.verifying_key().to_bytes());
        let owner = HyperLog::create(&dir.join("owner"), Some(owner_key)).await?;
        Ok(RelayLogs {
            dir: dir.to_path_buf(),
            relay,
            owner,
            writers: BTreeMap::new(),
        })
    }

    /// Opens the relay in `dir`.
    pub async fn open(dir: &Path) -> Result<RelayLogs, RelayLogsError> {
        let owner_dir = dir.join("owner");
        if !log::exists(&owner_dir) {
            return Err(RelayLogsError::NotFound(dir.to_path_buf()));
        }
        let owner = HyperLog::open(&owner_dir).await?;
        let relay = RelayKey(owner.public_key().to_bytes());
        Ok(RelayLogs {
            dir: dir.to_path_buf(),
            relay,
            owner,
            writers: BTreeMap::new(),
        })
    }

    /// The relay key (the owner log's public key).
    pub fn relay_key(&self) -> RelayKey {
        self.relay
    }

    /// The directory the relay lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a writer log signed by `key` here and records `AddWriter` in the
    /// owner log. Returns the writer key.
    pub async fn add_local_writer(&mut self, key: SigningKey) -> Result<WriterKey, RelayLogsError> {
        let writer = WriterKey(key.verifying_key().to_bytes());
        let dir = self.writer_dir(&writer);
        if !log::exists(&dir) {
            let log = HyperLog::create(&dir, Some(key)).await?;
            self.writers.insert(writer, log);
        }
        self.append_owner_op(&RelayOp::AddWriter { key: writer })
            .await?;
        Ok(writer)
    }

    /// Records `AddWriter` for a writer whose log lives elsewhere (the gateway
    /// writer: its blocks arrive later through [`RelayLogs::import_writer_proofs`]).
    pub async fn add_remote_writer(&mut self, writer: WriterKey) -> Result<u64, RelayLogsError> {
        self.append_owner_op(&RelayOp::AddWriter { key: writer })
            .await
    }

    /// Records `RemoveWriter{writer, final_length}` in the owner log.
    pub async fn remove_writer(
        &mut self,
        writer: WriterKey,
        final_length: u64,
    ) -> Result<u64, RelayLogsError> {
        self.append_owner_op(&RelayOp::RemoveWriter {
            key: writer,
            final_length,
        })
        .await
    }

    /// Appends `ops` to the owner log in one synced batch (rotation writes its
    /// removal and addition together).
    pub async fn append_owner_ops(&mut self, ops: &[RelayOp]) -> Result<u64, RelayLogsError> {
        let blocks: Vec<Vec<u8>> = ops.iter().map(RelayOp::encode).collect();
        Ok(self.owner.append_batch(&blocks).await?.start)
    }

    async fn append_owner_op(&mut self, op: &RelayOp) -> Result<u64, RelayLogsError> {
        Ok(self.owner.append(&op.encode()).await?)
    }

    /// Appends events to `writer`'s log (which must be writable here) in one
    /// synced batch; returns the index of the first.
    pub async fn append_events(
        &mut self,
        writer: &WriterKey,
        events: &[Event],
    ) -> Result<u64, RelayLogsError> {
        let blocks = events
            .iter()
            .map(|event| RelayOp::event(event).map(|op| op.encode()))
            .collect::<Result<Vec<_>, _>>()?;
        let log = self.writer_log(writer).await?;
        Ok(log.append_batch(&blocks).await?.start)
    }

    /// Stores verified blocks of a writer log kept elsewhere (the gateway writer
    /// log), creating the local replica on first use.
    pub async fn import_writer_proofs(
        &mut self,
        writer: &WriterKey,
        proofs: &[Proof],
    ) -> Result<u64, RelayLogsError> {
        if !self.writers.contains_key(writer) && !log::exists(&self.writer_dir(writer)) {
            let key = VerifyingKey::from_bytes(writer.as_bytes())
                .map_err(|_| RelayLogsError::UnknownWriter(*writer))?;
            let replica = HyperLog::create_replica(&self.writer_dir(writer), key).await?;
            self.writers.insert(*writer, replica);
        }
        let log = self.writer_log(writer).await?;
        log.apply_proofs(proofs).await?;
        Ok(log.contiguous_len())
    }

    /// The owner log (for mirroring it).
    pub fn owner_log(&mut self) -> &mut HyperLog {
        &mut self.owner
    }

    /// `writer`'s log, opened on first use.
    pub async fn writer_log(
        &mut self,
        writer: &WriterKey,
    ) -> Result<&mut HyperLog, RelayLogsError> {
        self.open_writer_log(writer)
            .await?
            .ok_or(RelayLogsError::UnknownWriter(*writer))
    }

    /// `writer`'s log, opened on first use; `None` when it has no log here.
    async fn open_writer_log(
        &mut self,
        writer: &WriterKey,
    ) -> Result<Option<&mut HyperLog>, LogError> {
        if !self.writers.contains_key(writer) {
            let dir = self.writer_dir(writer);
            if !log::exists(&dir) {
                return Ok(None);
            }
            let log = HyperLog::open(&dir).await?;
            self.writers.insert(*writer, log);
        }
        Ok(self.writers.get_mut(writer))
    }

    /// Writer logs present on disk, in key order.
    pub fn local_writers(&self) -> Result<Vec<WriterKey>, RelayLogsError> {
        let dir = self.dir.join("writers");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RelayLogsError::Io { path: dir, source }),
        };
        let mut writers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| RelayLogsError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            if let Some(key) = name.to_str().and_then(|n| n.parse::<WriterKey>().ok()) {
                writers.push(key);
            }
        }
        writers.sort();
        Ok(writers)
    }

    fn writer_dir(&self, writer: &WriterKey) -> PathBuf {
        self.dir.join("writers").join(writer.to_hex())
    }
}

impl BlockSource for RelayLogs {
    type Error = LogError;

    async fn held_len(&mut self, key: &WriterKey) -> Result<Option<u64>, LogError> {
        if *key == owner_log_key(&self.relay) {
            return Ok(Some(self.owner.contiguous_len()));
        }
        Ok(self
            .open_writer_log(key)
            .await?
            .map(|log| log.contiguous_len()))
    }

    async fn read_block(
        &mut self,
        key: &WriterKey,
        index: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        if *key == owner_log_key(&self.relay) {
            return self.owner.get(index).await;
        }
        match self.open_writer_log(key).await? {
            Some(log) => log.get(index).await,
            None => Ok(None),
        }
    }
}

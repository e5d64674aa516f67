//! Signed append-only logs on disk: the one wrapper over `hypercore` that every
//! persistent log of hypergate goes through (relay owner logs, writer logs, the
//! gateway writer log, drive logs, mirrored cores, the escrow audit log).
//!
//! Contract:
//! - A [`HyperLog`] is one hypercore in one directory. It is *writable* when it
//!   holds the secret key (it was created here, or opened with a leased key) and
//!   *read-only* when it only knows the public key (a mirror of someone else's
//!   log). Block `i` of a log is the same bytes everywhere: every block is covered
//!   by the Merkle tree that the owner's key signs.
//! - [`HyperLog::append`] and [`HyperLog::append_batch`] return after the blocks,
//!   the tree and the oplog are durable (`fdatasync`), and so do the calls that
//!   store proofs; in between, the log's files are synced only where crash safety
//!   needs it (see the `storage` module). A batch costs one round of syncs, so
//!   batching is how a busy writer amortises durability.
//! - Replication is by proofs: the holder of a log exports [`Proof`]s for a block
//!   range ([`HyperLog::export_range`], a push to a replica that holds everything
//!   its signed tree covers) or answers a replica's own [`RangeRequest`]
//!   ([`HyperLog::answer_request`], which works from any replica state); a replica
//!   applies them with
//!   [`HyperLog::apply_proof`], which verifies each block against the public key
//!   and the signed tree *before* it stores anything. A proof that does not verify
//!   is an error, and the replica is unchanged.
//! - Everything runs on hypercore's `async-std` storage feature, which does not
//!   need a particular executor: the same code runs under tokio, smol and glommio
//!   (see `docs/decisions.md`).

mod proof;
mod storage;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hypercore::{
    Hypercore, HypercoreBuilder, HypercoreError, PartialKeypair, SigningKey, Storage, VerifyingKey,
};
use hypercore_schema::{RequestBlock, RequestUpgrade};

pub use hypercore_schema::Proof;
pub use proof::{MAX_BLOCK_BYTES, MAX_NODES, ProofDecodeError, decode_proof, encode_proof};
use storage::SyncGroup;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    // --- the remote side misbehaved ---
    /// A proof did not verify against the log's key and signed tree; nothing was stored.
    #[error("proof rejected for {log}: {detail}")]
    ProofRejected {
        /// The log's directory.
        log: PathBuf,
        /// What the verifier said.
        detail: String,
    },
    // --- API misuse ---
    /// The log has no secret key, so it cannot append.
    #[error("log {0} is read-only (no secret key)")]
    ReadOnly(PathBuf),
    /// A log already exists where a new one was to be created.
    #[error("a log already exists in {0}")]
    AlreadyExists(PathBuf),
    /// No log exists where one was to be opened.
    #[error("no log in {0}")]
    NotFound(PathBuf),
    /// The log on disk belongs to another key than the caller expected.
    #[error("log {log} has key {found}, expected {expected}")]
    WrongKey {
        /// The log's directory.
        log: PathBuf,
        /// The key the caller expected (hex).
        expected: String,
        /// The key found on disk (hex).
        found: String,
    },
    /// A block range outside the log was requested.
    #[error("range {start}..{end} is outside log {log} of length {length}")]
    OutOfRange {
        /// The log's directory.
        log: PathBuf,
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// The log's length.
        length: u64,
    },
    /// A block is larger than [`MAX_BLOCK_BYTES`].
    #[error("block of {0} bytes exceeds the {MAX_BLOCK_BYTES}-byte limit")]
    BlockTooLarge(usize),
    // --- local storage ---
    /// The disk storage failed or is corrupt.
    #[error("log storage {log}: {source}")]
    Storage {
        /// The log's directory.
        log: PathBuf,
        /// hypercore's error.
        #[source]
        source: HypercoreError,
    },
}

/// One signed append-only log in one directory.
#[derive(Debug)]
pub struct HyperLog {
    core: Hypercore,
    dir: PathBuf,
    /// Syncs the log's files; `None` for a log in memory.
    files: Option<Arc<SyncGroup>>,
}

/// What a replica asks the holder of a log for: blocks, each with the number of
/// tree nodes the replica already holds on that block's path, and an upgrade from
/// the replica's signed length. Built by [`HyperLog::request_range`], answered by
/// [`HyperLog::answer_request`]; it travels on the peer link as plain integers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeRequest {
    /// Blocks the replica's signed tree covers.
    pub signed_length: u64,
    /// `(block index, tree nodes already held on its path)`, in order.
    pub blocks: Vec<(u64, u64)>,
}

/// Most blocks one [`RangeRequest`] may ask for.
pub const MAX_REQUEST_BLOCKS: usize = 1024;

/// Files hypercore keeps in a log directory; the oplog holds the header (keys).
const OPLOG_FILE: &str = "oplog";
/// Size of hypercore 0.16's oplog with both header slots and no pending entries.
const CLEAN_OPLOG_BYTES: u64 = 2 * 4096;
/// Applications of one proof that always bring a replica to a flush point: hypercore
/// flushes its tree and bitfield on every fourth change.
const MAX_CHECKPOINT_REAPPLY: usize = 4;

impl HyperLog {
    /// Creates a new writable log in `dir` with `key` (a fresh key when `None`).
    /// Fails if a log already exists there.
    pub async fn create(dir: &Path, key: Option<SigningKey>) -> Result<HyperLog, LogError> {
        if exists(dir) {
            return Err(LogError::AlreadyExists(dir.to_path_buf()));
        }
        let (storage, files) = disk_storage(dir, true).await?;
        let mut builder = HypercoreBuilder::new(storage);
        if let Some(secret) = key {
            builder = builder.key_pair(PartialKeypair {
                public: secret.verifying_key(),
                secret: Some(secret),
            });
        }
        let core = builder.build().await.map_err(|e| storage_error(dir, e))?;
        restrict_to_owner(dir)?;
        HyperLog::synced(core, dir, files).await
    }

    /// Creates an empty read-only replica of the log whose public key is `key`, to
    /// be filled with [`HyperLog::apply_proof`]. Fails if a log already exists.
    pub async fn create_replica(dir: &Path, key: VerifyingKey) -> Result<HyperLog, LogError> {
        if exists(dir) {
            return Err(LogError::AlreadyExists(dir.to_path_buf()));
        }
        let (storage, files) = disk_storage(dir, true).await?;
        let core = HypercoreBuilder::new(storage)
            .key_pair(PartialKeypair {
                public: key,
                secret: None,
            })
            .build()
            .await
            .map_err(|e| storage_error(dir, e))?;
        HyperLog::synced(core, dir, files).await
    }

    /// Creates a writable log that lives in memory only, holding `key`: the gateway's signer
    /// for a leased writer key, whose secret must never reach the disk. Its blocks reach disk
    /// as proofs applied to a replica (see `crate::leased_writer`). `label` names it in errors.
    pub async fn create_in_memory(label: &str, key: SigningKey) -> Result<HyperLog, LogError> {
        let dir = PathBuf::from(format!("<memory:{label}>"));
        let storage = Storage::new_memory()
            .await
            .map_err(|e| storage_error(&dir, e))?;
        let core = HypercoreBuilder::new(storage)
            .key_pair(PartialKeypair {
                public: key.verifying_key(),
                secret: Some(key),
            })
            .build()
            .await
            .map_err(|e| storage_error(&dir, e))?;
        Ok(HyperLog {
            core,
            dir,
            files: None,
        })
    }

    /// Opens the existing log in `dir` (writable if its secret key is stored there).
    pub async fn open(dir: &Path) -> Result<HyperLog, LogError> {
        if !exists(dir) {
            return Err(LogError::NotFound(dir.to_path_buf()));
        }
        let (storage, files) = disk_storage(dir, false).await?;
        let core = HypercoreBuilder::new(storage)
            .open(true)
            .build()
            .await
            .map_err(|e| storage_error(dir, e))?;
        // Opening may replay oplog entries into the tree and bitfield.
        HyperLog::synced(core, dir, files).await
    }

    /// Opens the log in `dir` and checks it is the log of `key`.
    pub async fn open_expecting(dir: &Path, key: &VerifyingKey) -> Result<HyperLog, LogError> {
        let log = HyperLog::open(dir).await?;
        if log.public_key() != *key {
            return Err(LogError::WrongKey {
                log: dir.to_path_buf(),
                expected: hex::encode(key.as_bytes()),
                found: hex::encode(log.public_key().as_bytes()),
            });
        }
        Ok(log)
    }

    /// Opens the log in `dir`, or creates it (with a fresh key) if there is none.
    pub async fn open_or_create(dir: &Path) -> Result<HyperLog, LogError> {
        if exists(dir) {
            HyperLog::open(dir).await
        } else {
            HyperLog::create(dir, None).await
        }
    }

    /// A log on disk whose creation or opening is made durable first.
    async fn synced(
        core: Hypercore,
        dir: &Path,
        files: Arc<SyncGroup>,
    ) -> Result<HyperLog, LogError> {
        let log = HyperLog {
            core,
            dir: dir.to_path_buf(),
            files: Some(files),
        };
        log.sync().await?;
        Ok(log)
    }

    /// Makes every change so far durable (see the `storage` module). The future holds no
    /// borrow of the log, which is not `Sync`, so callers' futures stay `Send`.
    fn sync(&self) -> impl Future<Output = Result<(), LogError>> + Send + 'static {
        let files = self.files.clone();
        let dir = self.dir.clone();
        async move {
            match files {
                Some(files) => files
                    .sync()
                    .await
                    .map_err(|e| storage_error(&dir, HypercoreError::from(e))),
                None => Ok(()),
            }
        }
    }

    /// File syncs issued for this log since it was opened (0 in memory).
    #[cfg(test)]
    fn file_syncs(&self) -> u64 {
        self.files.as_ref().map_or(0, |files| files.file_syncs())
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's public key (its identity).
    pub fn public_key(&self) -> VerifyingKey {
        self.core.key_pair().public
    }

    /// Whether this log holds its secret key and can append.
    pub fn is_writable(&self) -> bool {
        self.core.info().writeable
    }

    /// Number of blocks the signed tree covers (a replica may not hold them all yet).
    pub fn len(&self) -> u64 {
        self.core.info().length
    }

    /// Whether the signed tree covers no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of blocks held locally without a gap from block 0.
    pub fn contiguous_len(&self) -> u64 {
        self.core.info().contiguous_length
    }

    /// Bytes of block data the signed tree covers.
    pub fn byte_len(&self) -> u64 {
        self.core.info().byte_length
    }

    /// Appends one block; returns its index once it is durable.
    pub async fn append(&mut self, block: &[u8]) -> Result<u64, LogError> {
        let range = self.append_batch(&[block]).await?;
        Ok(range.start)
    }

    /// Appends blocks in one signed, synced step; returns their index range.
    pub async fn append_batch<B: AsRef<[u8]>>(
        &mut self,
        blocks: &[B],
    ) -> Result<Range<u64>, LogError> {
        if !self.is_writable() {
            return Err(LogError::ReadOnly(self.dir.clone()));
        }
        if let Some(big) = blocks.iter().find(|b| b.as_ref().len() > MAX_BLOCK_BYTES) {
            return Err(LogError::BlockTooLarge(big.as_ref().len()));
        }
        let start = self.len();
        let outcome = self
            .core
            .append_batch(blocks)
            .await
            .map_err(|e| storage_error(&self.dir, e))?;
        self.sync().await?;
        Ok(start..outcome.length)
    }

    /// Reads block `index`; `None` when the log does not hold it (yet).
    pub async fn get(&mut self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        if index >= self.len() {
            return Ok(None);
        }
        self.core
            .get(index)
            .await
            .map_err(|e| storage_error(&self.dir, e))
    }

    /// Reads blocks `range`, stopping at the first block not held locally.
    pub async fn read_range(&mut self, range: Range<u64>) -> Result<Vec<Vec<u8>>, LogError> {
        let mut blocks = Vec::new();
        for index in range {
            match self.get(index).await? {
                Some(block) => blocks.push(block),
                None => break,
            }
        }
        Ok(blocks)
    }

    /// Proofs that carry blocks `range` to a replica whose signed tree currently
    /// covers `remote_length` blocks and which holds every block below it (a push).
    /// The first proof also upgrades the replica's tree to this log's length, so the
    /// proofs must be applied in order. A replica whose signed tree runs ahead of
    /// its blocks (an interrupted batch) must ask with [`HyperLog::request_range`].
    pub async fn export_range(
        &mut self,
        remote_length: u64,
        range: Range<u64>,
    ) -> Result<Vec<Proof>, LogError> {
        let length = self.len();
        if range.start > range.end || range.end > length || remote_length > length {
            return Err(LogError::OutOfRange {
                log: self.dir.clone(),
                start: range.start,
                end: range.end,
                length,
            });
        }
        let mut proofs = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        // Every proof carries the same upgrade from the replica's starting length:
        // a block-only proof for a replica that learnt the new tree from an earlier
        // proof of the batch lacks the tree nodes it needs, while a repeated upgrade
        // brings them and is idempotent once applied.
        let upgrade = (remote_length < length).then_some((remote_length, length - remote_length));
        for index in range {
            let upgrade = upgrade.map(|(start, length)| RequestUpgrade { start, length });
            let proof = self
                .core
                .create_proof(Some(RequestBlock { index, nodes: 0 }), None, None, upgrade)
                .await
                .map_err(|e| storage_error(&self.dir, e))?;
            match proof {
                Some(proof) => proofs.push(proof),
                // The block is not held here (a sparse replica): stop at the gap.
                None => break,
            }
        }
        Ok(proofs)
    }

    /// Verifies `proof` against this log's public key and signed tree and, only if
    /// it verifies, stores what it carries; returns once that is durable.
    pub async fn apply_proof(&mut self, proof: &Proof) -> Result<(), LogError> {
        self.apply_proof_unsynced(proof).await?;
        self.sync().await
    }

    async fn apply_proof_unsynced(&mut self, proof: &Proof) -> Result<(), LogError> {
        if let Some(block) = &proof.block
            && block.value.len() > MAX_BLOCK_BYTES
        {
            return Err(LogError::BlockTooLarge(block.value.len()));
        }
        match self.core.verify_and_apply_proof(proof).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(LogError::ProofRejected {
                log: self.dir.clone(),
                detail: "proof does not apply to this log (fork or tree mismatch)".to_owned(),
            }),
            Err(
                e @ (HypercoreError::InvalidSignature { .. }
                | HypercoreError::InvalidChecksum { .. }
                | HypercoreError::BadArgument { .. }
                | HypercoreError::InvalidOperation { .. }),
            ) => Err(LogError::ProofRejected {
                log: self.dir.clone(),
                detail: e.to_string(),
            }),
            Err(e) => Err(storage_error(&self.dir, e)),
        }
    }
}

impl HyperLog {
    /// Builds the request that brings blocks `range` to this replica, whatever
    /// state an earlier interrupted batch left it in (its signed tree may already
    /// cover blocks it does not hold). At most [`MAX_REQUEST_BLOCKS`] blocks.
    pub async fn request_range(&mut self, range: Range<u64>) -> Result<RangeRequest, LogError> {
        let signed_length = self.len();
        let mut blocks = Vec::new();
        for index in range.take(MAX_REQUEST_BLOCKS) {
            let nodes = if index < signed_length {
                self.core
                    .missing_nodes(index)
                    .await
                    .map_err(|e| storage_error(&self.dir, e))?
            } else {
                0
            };
            blocks.push((index, nodes));
        }
        Ok(RangeRequest {
            signed_length,
            blocks,
        })
    }

    /// Answers a replica's [`RangeRequest`] with proofs to apply in order; stops
    /// at the first block this log does not hold. A request for blocks past this
    /// log's length, or from a signed length longer than it, is out of range.
    pub async fn answer_request(&mut self, request: &RangeRequest) -> Result<Vec<Proof>, LogError> {
        let length = self.len();
        let beyond = request.blocks.iter().any(|&(index, _)| index >= length);
        if request.signed_length > length || beyond || request.blocks.len() > MAX_REQUEST_BLOCKS {
            let start = request.blocks.first().map_or(0, |b| b.0);
            let end = request.blocks.last().map_or(0, |b| b.0 + 1);
            return Err(LogError::OutOfRange {
                log: self.dir.clone(),
                start,
                end,
                length,
            });
        }
        let upgrade = (request.signed_length < length)
            .then_some((request.signed_length, length - request.signed_length));
        let mut proofs = Vec::with_capacity(request.blocks.len());
        for &(index, nodes) in &request.blocks {
            let upgrade = upgrade.map(|(start, length)| RequestUpgrade { start, length });
            let proof = self
                .core
                .create_proof(Some(RequestBlock { index, nodes }), None, None, upgrade)
                .await
                .map_err(|e| storage_error(&self.dir, e))?;
            match proof {
                Some(proof) => proofs.push(proof),
                None => break,
            }
        }
        Ok(proofs)
    }

    /// Applies `proofs` in order (see [`HyperLog::apply_proof`]) and then
    /// checkpoints the replica so that it reopens after a crash or restart.
    ///
    /// Why the checkpoint: hypercore 0.16.0 keeps up to three changes as oplog
    /// entries between flushes, and its oplog entry *decoder* tests flag bit 2 for
    /// the tree-upgrade and bitfield fields (the encoder uses bits 4 and 8). Entries
    /// written by appends carry all three fields and decode by luck; entries written
    /// by proofs often do not, and a replica with such entries pending fails to
    /// reopen. Re-applying the last (already verified, idempotent) proof advances
    /// hypercore's flush cycle until the oplog holds no entries. See
    /// `docs/decisions.md`.
    pub async fn apply_proofs(&mut self, proofs: &[Proof]) -> Result<u64, LogError> {
        let Some(last) = proofs.last() else {
            return Ok(0);
        };
        for proof in proofs {
            self.apply_proof_unsynced(proof).await?;
        }
        self.checkpoint(last).await?;
        self.sync().await?;
        Ok(proofs.len() as u64)
    }

    async fn checkpoint(&mut self, last: &Proof) -> Result<(), LogError> {
        for _ in 0..MAX_CHECKPOINT_REAPPLY {
            if self.oplog_is_clean()? {
                return Ok(());
            }
            // `Ok(false)` (nothing to commit) is fine: the loop re-checks the oplog.
            self.core
                .verify_and_apply_proof(last)
                .await
                .map_err(|e| storage_error(&self.dir, e))?;
        }
        if self.oplog_is_clean()? {
            Ok(())
        } else {
            Err(LogError::Storage {
                log: self.dir.clone(),
                source: HypercoreError::InvalidOperation {
                    context: "replica oplog did not reach a flush point".to_owned(),
                },
            })
        }
    }

    fn oplog_is_clean(&self) -> Result<bool, LogError> {
        let len = std::fs::metadata(self.dir.join(OPLOG_FILE))
            .map_err(|e| storage_error(&self.dir, HypercoreError::from(e)))?
            .len();
        Ok(len <= CLEAN_OPLOG_BYTES)
    }
}

/// Makes a log directory 0700 and its files 0600: hypercore keeps a writable log's
/// secret key in its oplog, and creates files with the process umask (often 0644).
fn restrict_to_owner(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| storage_error(dir, HypercoreError::from(e));
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

/// Whether `dir` holds a log (hypercore writes its header to the oplog file).
pub fn exists(dir: &Path) -> bool {
    std::fs::metadata(dir.join(OPLOG_FILE)).is_ok_and(|m| m.len() > 0)
}

async fn disk_storage(dir: &Path, overwrite: bool) -> Result<(Storage, Arc<SyncGroup>), LogError> {
    storage::open_grouped(dir, overwrite)
        .await
        .map_err(|e| storage_error(dir, e))
}

fn storage_error(dir: &Path, source: HypercoreError) -> LogError {
    LogError::Storage {
        log: dir.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;

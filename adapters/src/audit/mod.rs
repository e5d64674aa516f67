//! The escrow's append-only audit log, on a disk hypercore.
//!
//! Contract:
//! - **One JSON entry per block**, the original's event types and fields
//!   plus `timestamp` and `prevDigest` (see [`entry`]). Entries are built
//!   from the core's [`AuditRecord`]s, which hold ids, reasons, evidence and
//!   digests but no key material.
//! - **Durable before it returns.** [`AuditLog::append`] returns only after
//!   the block and its signed tree entry were written and fsynced
//!   (`random-access-disk` syncs every write) and the log's files were found
//!   still in place. Any error means the entry may not be durable: the escrow
//!   must refuse the action it was about to take (fail closed). After an
//!   error the log refuses every further append ([`AuditError::Poisoned`])
//!   until it is reopened, because the in-memory tree may be ahead of disk.
//! - **Verifiable.** [`AuditLog::verify`] re-reads the log from disk into
//!   memory (it never writes to the directory), checks the signed tree
//!   against the log's public key and every block against the tree by
//!   replaying hypercore proofs into a fresh verifier that holds only the
//!   public key, then checks the `prevDigest` chain, and returns the entries.
//!   [`AuditLog::verify_pinned`] also checks the public key is the expected
//!   one.
//! - The signing key pair lives in the hypercore's own storage (its oplog),
//!   created with the log, and in `signing-key.json` beside it (0600), from
//!   which a log damaged by a crash inside an append is rebuilt when it is
//!   next opened (see `repair`; [`AuditLog::repaired`] reports it). The
//!   directory is created 0700 and the files 0600.
//!
//! What verification proves: no block, tree node or signature was changed
//! or lost by accident or by someone without the signing key. Anyone who can
//! read the oplog has the key and could re-sign a rewritten log; pin the
//! public key ([`AuditLog::public_key_hex`]) and the length somewhere else to
//! detect that.
//!
//! Not for concurrent use: one [`AuditLog`] per directory per host.
//! `verify` may run beside a live escrow but can then report a spurious
//! error (a torn read of a block being appended), never a false pass.

pub mod entry;
mod repair;
mod verify;

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use hypercore::{Hypercore, HypercoreBuilder, HypercoreError, Storage};
use hypergate_core::escrow::AuditRecord;

use crate::crypto::{Identity, sha256_hex};
use entry::{AuditBlock, is_sha256_hex};
pub use entry::{AuditEvent, AuditEventKind};
pub use repair::AuditRepair;
pub use verify::{AuditReport, VerifiedEntry};

/// The files of a disk hypercore, in the order `verify` reads them (oplog
/// first: whatever it references was written before it).
const STORAGE_FILES: [&str; 4] = ["oplog", "tree", "bitfield", "data"];

/// Why the audit log could not be opened, appended to or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    // The log on disk is damaged or was tampered with.
    /// A block or the signed tree does not verify against the log's key.
    #[error("audit log fails verification at {}: {detail}", block_name(*.seq))]
    Tampered {
        /// The block, or `None` for the signed tree itself.
        seq: Option<u64>,
        /// What failed.
        detail: String,
    },
    /// A block's `prevDigest` is not the digest of the block before it.
    #[error("audit chain broken at block {seq}: prevDigest {found:?}, expected {expected:?}")]
    ChainBroken {
        /// The block.
        seq: u64,
        /// The digest of the previous block (`None` for block 0).
        expected: Option<String>,
        /// What the block says.
        found: Option<String>,
    },
    /// A block is not an audit entry.
    #[error("audit block {seq} is not an audit entry: {detail}")]
    MalformedEntry {
        /// The block.
        seq: u64,
        /// What is wrong.
        detail: String,
    },
    /// The hypercore's own files cannot be opened or read.
    #[error("audit log in {dir} is corrupt: {detail}")]
    Corrupt {
        /// The log directory.
        dir: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The data file holds bytes past the signed tree: entries were lost (a
    /// damaged oplog makes hypercore drop its later entries) or a crash cut
    /// an append short. [`AuditLog::open`] rebuilds such a log when the bytes
    /// are what a crash leaves (see the `repair` module); otherwise it is
    /// refused with this error, because appending would overwrite the
    /// evidence: run `verify`, then move the directory aside and start a new
    /// log (the old one stays verifiable up to its signed length).
    #[error(
        "audit log in {dir} has {bytes} bytes past its signed length: entries may have been \
         lost; verify it, then move it aside to start a new log"
    )]
    UnsignedTrailingData {
        /// The log directory.
        dir: PathBuf,
        /// How many bytes.
        bytes: u64,
    },
    /// The log is signed by a different key than the one pinned.
    #[error("audit log is signed by {found}, expected {expected}")]
    KeyMismatch {
        /// The pinned key (hex).
        expected: String,
        /// The log's key (hex).
        found: String,
    },
    // Caller errors.
    /// No audit log exists there.
    #[error("no audit log in {dir} (missing {file})")]
    NotFound {
        /// The directory.
        dir: PathBuf,
        /// The first missing file.
        file: &'static str,
    },
    /// `payloadDigest` must be a SHA-256 hex digest, never other data.
    #[error("payloadDigest must be 64 lowercase hex characters")]
    BadPayloadDigest,
    // Local storage failures: the escrow must refuse (fail closed).
    /// The hypercore failed to write or read.
    #[error("audit log storage failed ({context}): {source}")]
    Storage {
        /// What was being done.
        context: &'static str,
        /// The hypercore error.
        #[source]
        source: HypercoreError,
    },
    /// A file or directory operation failed.
    #[error("audit log i/o on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A storage file was removed or replaced while the log was open: what
    /// was appended is not where the log lives.
    #[error("audit log file {path} was removed or replaced while open")]
    StorageMoved {
        /// The file.
        path: PathBuf,
    },
    /// An earlier append failed; reopen the log before appending again.
    #[error("audit log refused: an earlier append failed; reopen it")]
    Poisoned,
    /// The log's signing key file cannot be read or written, or holds
    /// another key than the log's.
    #[error("audit log in {dir}: signing key file: {source}")]
    SigningKeyFile {
        /// The log directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: crate::crypto::IdentityError,
    },
    /// The log's secret key is missing from its storage.
    #[error("audit log in {dir} has no signing key; it cannot be appended to")]
    NotWritable {
        /// The directory.
        dir: PathBuf,
    },
}

fn block_name(seq: Option<u64>) -> String {
    seq.map_or_else(
        || "the signed tree".to_owned(),
        |seq| format!("block {seq}"),
    )
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where an entry landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAppended {
    /// Its block index.
    pub seq: u64,
    /// SHA-256 hex of the block's bytes (the next block's `prevDigest`).
    pub digest: String,
}

/// The open audit log.
pub struct AuditLog {
    dir: PathBuf,
    core: Hypercore,
    last_digest: Option<String>,
    /// (path, device, inode) of each storage file when opened.
    files: Vec<(PathBuf, u64, u64)>,
    poisoned: bool,
    repaired: Option<AuditRepair>,
}

/// Why [`AuditLog::open_existing_or_new`] failed: damage a crash can leave,
/// which [`repair`] may rebuild, or anything else.
enum OpenFailure {
    CrashDamage {
        cause: AuditError,
        /// The signed length, when the tree could be read: a rebuild must keep
        /// at least that many entries.
        signed_length: Option<u64>,
    },
    Refused(AuditError),
}

impl OpenFailure {
    fn into_error(self) -> AuditError {
        match self {
            OpenFailure::CrashDamage { cause, .. } | OpenFailure::Refused(cause) => cause,
        }
    }
}

impl From<AuditError> for OpenFailure {
    fn from(error: AuditError) -> Self {
        OpenFailure::Refused(error)
    }
}

impl AuditLog {
    /// Opens the log in `dir`, creating the directory and a new log (with a
    /// fresh signing key pair) if there is none.
    ///
    /// A log left damaged by a crash inside an append (bytes past the signed
    /// tree, or a tree file behind its oplog) is rebuilt from its data file
    /// and signing key, with the damaged directory kept beside it; see
    /// `repair` for when that is done and when the log is refused instead.
    /// [`Self::repaired`] then says what was done.
    pub async fn open(dir: &Path) -> Result<Self, AuditError> {
        match Self::open_existing_or_new(dir).await {
            Ok(log) => Ok(log),
            Err(OpenFailure::Refused(error)) => Err(error),
            Err(OpenFailure::CrashDamage {
                cause,
                signed_length,
            }) => {
                let repair = repair::rebuild(dir, signed_length, cause).await?;
                let mut log = Self::open_existing_or_new(dir)
                    .await
                    .map_err(OpenFailure::into_error)?;
                log.repaired = Some(repair);
                Ok(log)
            }
        }
    }

    async fn open_existing_or_new(dir: &Path) -> Result<Self, OpenFailure> {
        let dir = dir.to_owned();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error(&dir))?;
        let existing = log_exists(&dir)?;
        let storage =
            Storage::new_disk(&dir, false)
                .await
                .map_err(|source| AuditError::Storage {
                    context: "opening storage files",
                    source,
                })?;
        let builder = HypercoreBuilder::new(storage);
        let core = if existing {
            builder.open(true).build().await.map_err(|error| {
                // The usual cause is a crash between the writes of one append.
                OpenFailure::CrashDamage {
                    cause: AuditError::Corrupt {
                        dir: dir.clone(),
                        detail: error.to_string(),
                    },
                    signed_length: None,
                }
            })?
        } else {
            // The key file first: a crash before the log exists leaves a key
            // the next start reuses, never a log whose key is nowhere else.
            let key_file = dir.join(repair::KEY_FILE);
            let identity = Identity::load_or_create(&key_file).map_err(|source| {
                AuditError::SigningKeyFile {
                    dir: dir.clone(),
                    source,
                }
            })?;
            repair::create_log(builder, &dir, &identity).await?
        };
        let Some(secret) = core.key_pair().secret.clone() else {
            return Err(AuditError::NotWritable { dir }.into());
        };
        if existing {
            // Logs made before the key file existed get one now, so that a later
            // crash can be repaired; a key file holding another key is refused.
            repair::persist_signing_key(&dir, &Identity::from_signing_key(secret))?;
        }
        let data_path = dir.join("data");
        let data_len = fs::metadata(&data_path)
            .map_err(io_error(&data_path))?
            .len();
        let signed_len = core.info().byte_length;
        let length = core.info().length;
        if data_len > signed_len {
            return Err(OpenFailure::CrashDamage {
                cause: AuditError::UnsignedTrailingData {
                    dir,
                    bytes: data_len - signed_len,
                },
                signed_length: Some(length),
            });
        }
        if data_len < signed_len {
            // Signed entries are gone: nothing to rebuild them from.
            return Err(AuditError::Corrupt {
                dir,
                detail: format!(
                    "data file is {data_len} bytes, the signed tree covers {signed_len}"
                ),
            }
            .into());
        }
        let mut core = core;
        let last_digest = match length.checked_sub(1) {
            None => None,
            Some(last) => match core.get(last).await {
                Ok(Some(block)) => Some(sha256_hex(&block)),
                Ok(None) => {
                    return Err(AuditError::Corrupt {
                        dir,
                        detail: format!("block {last} is missing"),
                    }
                    .into());
                }
                Err(error) => {
                    return Err(OpenFailure::CrashDamage {
                        cause: AuditError::Corrupt {
                            dir,
                            detail: format!("block {last}: {error}"),
                        },
                        signed_length: Some(length),
                    });
                }
            },
        };
        // hypercore can open a log whose tree file lacks nodes a crash kept
        // it from flushing (and then never writes them): prove every block
        // now, so that such a log is rebuilt instead of failing later.
        let public_key = hex::encode(core.key_pair().public.as_bytes());
        match verify::verify(&dir, Some(&public_key)).await {
            Ok(_) => {}
            Err(cause @ AuditError::Corrupt { .. }) => {
                return Err(OpenFailure::CrashDamage {
                    cause,
                    signed_length: Some(length),
                });
            }
            Err(error) => return Err(error.into()),
        }
        let files = file_identities(&dir)?;
        Ok(Self {
            dir,
            core,
            last_digest,
            files,
            poisoned: false,
            repaired: None,
        })
    }

    /// What [`Self::open`] repaired, if the log was found damaged by a crash.
    #[must_use]
    pub fn repaired(&self) -> Option<&AuditRepair> {
        self.repaired.as_ref()
    }

    /// Appends the entry for a core audit record; durable when it returns.
    pub async fn append(&mut self, record: &AuditRecord) -> Result<AuditAppended, AuditError> {
        self.append_event(&AuditEvent::from(record)).await
    }

    /// Appends any audit event (including `rotation` and `unlock-aborted`);
    /// durable when it returns.
    pub async fn append_event(&mut self, event: &AuditEvent) -> Result<AuditAppended, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        if event
            .payload_digest
            .as_deref()
            .is_some_and(|digest| !is_sha256_hex(digest))
        {
            return Err(AuditError::BadPayloadDigest);
        }
        let block = AuditBlock {
            event: event.clone(),
            prev_digest: self.last_digest.clone(),
        };
        let bytes = serde_json::to_vec(&block).map_err(|error| AuditError::MalformedEntry {
            seq: self.core.info().length,
            detail: error.to_string(),
        })?;
        // From here on, a failure may leave memory and disk apart.
        self.poisoned = true;
        let outcome = self
            .core
            .append(&bytes)
            .await
            .map_err(|source| AuditError::Storage {
                context: "appending",
                source,
            })?;
        self.check_files_in_place()?;
        self.poisoned = false;
        let digest = sha256_hex(&bytes);
        self.last_digest = Some(digest.clone());
        Ok(AuditAppended {
            seq: outcome.length.saturating_sub(1),
            digest,
        })
    }

    /// How many entries the log holds.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.core.info().length
    }

    /// Whether the log holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log's ed25519 public key in hex: publish or pin it for [`Self::verify_pinned`].
    #[must_use]
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.core.key_pair().public.as_bytes())
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Verifies the log in `dir` (see the module docs) and returns its entries.
    pub async fn verify(dir: &Path) -> Result<AuditReport, AuditError> {
        verify::verify(dir, None).await
    }

    /// Like [`Self::verify`], and the log must be signed by `public_key_hex`.
    pub async fn verify_pinned(
        dir: &Path,
        public_key_hex: &str,
    ) -> Result<AuditReport, AuditError> {
        verify::verify(dir, Some(public_key_hex)).await
    }

    fn check_files_in_place(&self) -> Result<(), AuditError> {
        for (path, device, inode) in &self.files {
            match fs::metadata(path) {
                Ok(metadata) if metadata.dev() == *device && metadata.ino() == *inode => {}
                _ => return Err(AuditError::StorageMoved { path: path.clone() }),
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("len", &self.len())
            .field("public_key", &self.public_key_hex())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Whether `dir` holds a log; an oplog-less directory with other log files is corrupt.
fn log_exists(dir: &Path) -> Result<bool, AuditError> {
    let mut sizes = [0u64; STORAGE_FILES.len()];
    for (size, name) in sizes.iter_mut().zip(STORAGE_FILES) {
        let path = dir.join(name);
        *size = match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(io_error(&path)(error)),
        };
    }
    let [oplog, ..] = sizes;
    if oplog == 0 && sizes.iter().any(|&size| size > 0) {
        return Err(AuditError::Corrupt {
            dir: dir.to_owned(),
            detail: "log files exist but the oplog is empty".into(),
        });
    }
    Ok(oplog > 0)
}

fn file_identities(dir: &Path) -> Result<Vec<(PathBuf, u64, u64)>, AuditError> {
    STORAGE_FILES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let metadata = fs::metadata(&path).map_err(io_error(&path))?;
            Ok((path, metadata.dev(), metadata.ino()))
        })
        .collect()
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

//! Offline verification of an audit log directory.
//!
//! The log's four files are read into memory (oplog first) and opened there,
//! so verification never writes to the directory. The copy is the *prover*:
//! it answers hypercore proof requests. The *verifier* is a fresh in-memory
//! hypercore that knows only the public key: it first accepts the signed
//! tree (an upgrade proof, whose signature must verify), then every block
//! with its Merkle proof against that tree. A changed block, tree node or
//! signature makes a proof fail. Blocks are then parsed and the
//! `prevDigest` chain checked.

use std::fs;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use hypercore::{
    Hypercore, HypercoreBuilder, HypercoreError, PartialKeypair, Storage, StorageTraits, Store,
};
use hypercore_schema::{RequestBlock, RequestUpgrade};
use random_access_memory::RandomAccessMemory;
use random_access_storage::{RandomAccess as _, RandomAccessError};

use super::entry::{AuditBlock, AuditEvent};
use super::{AuditError, STORAGE_FILES};
use crate::crypto::sha256_hex;

/// A verified log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// The key every block is signed under (hex).
    pub public_key: String,
    /// How many blocks the signed tree covers.
    pub length: u64,
    /// Every entry, in order.
    pub entries: Vec<VerifiedEntry>,
    /// Bytes in the data file past the signed tree: zero for a healthy log.
    /// More means entries were lost (a damaged oplog makes hypercore drop
    /// its later entries, so the log *looks* shorter but valid) or an append
    /// was cut short by a crash; [`super::AuditLog::open`] refuses such a log.
    pub unsigned_trailing_bytes: u64,
}

/// One verified block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    /// Its block index.
    pub seq: u64,
    /// SHA-256 hex of its bytes.
    pub digest: String,
    /// The previous block's digest, as the block states (and as checked).
    pub prev_digest: Option<String>,
    /// The entry.
    pub event: AuditEvent,
    /// The block exactly as stored (UTF-8 JSON).
    pub json: String,
}

/// The storage files' bytes, indexed like [`STORAGE_FILES`].
struct FileImages([Vec<u8>; 4]);

impl FileImages {
    fn get(&self, store: &Store) -> &[u8] {
        let index = match store {
            Store::Oplog => 0,
            Store::Tree => 1,
            Store::Bitfield => 2,
            Store::Data => 3,
        };
        &self.0[index]
    }
}

type StorageFuture =
    Pin<Box<dyn Future<Output = Result<Box<dyn StorageTraits + Send>, RandomAccessError>> + Send>>;

fn read_images(dir: &Path) -> Result<FileImages, AuditError> {
    let mut images: [Vec<u8>; 4] = Default::default();
    for (image, name) in images.iter_mut().zip(STORAGE_FILES) {
        let path = dir.join(name);
        *image = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuditError::NotFound {
                    dir: dir.to_owned(),
                    file: name,
                });
            }
            Err(source) => return Err(AuditError::Io { path, source }),
        };
    }
    if images[0].is_empty() {
        return Err(AuditError::NotFound {
            dir: dir.to_owned(),
            file: "oplog",
        });
    }
    Ok(FileImages(images))
}

/// In-memory storage holding `images`. Pages of 64 KiB rather than the
/// default 1 MiB: audit logs are small and verification builds two cores.
async fn memory_storage(images: FileImages) -> Result<Storage, HypercoreError> {
    const PAGE_BYTES: usize = 64 * 1024;
    let images = Arc::new(images);
    let create = move |store: Store| -> StorageFuture {
        let bytes = images.get(&store).to_vec();
        Box::pin(async move {
            let mut memory = RandomAccessMemory::new(PAGE_BYTES);
            if !bytes.is_empty() {
                memory.write(0, &bytes).await?;
            }
            Ok(Box::new(memory) as Box<dyn StorageTraits + Send>)
        })
    };
    Storage::open(create, false).await
}

async fn open_prover(dir: &Path, images: FileImages) -> Result<Hypercore, AuditError> {
    let corrupt = |error: HypercoreError| AuditError::Corrupt {
        dir: dir.to_owned(),
        detail: error.to_string(),
    };
    let storage = memory_storage(images).await.map_err(corrupt)?;
    HypercoreBuilder::new(storage)
        .open(true)
        .build()
        .await
        .map_err(corrupt)
}

fn unreadable(dir: &Path, seq: u64, detail: &str) -> AuditError {
    AuditError::Corrupt {
        dir: dir.to_owned(),
        detail: format!("block {seq} cannot be proven from the log's files: {detail}"),
    }
}

fn tampered(seq: Option<u64>, detail: impl Into<String>) -> AuditError {
    AuditError::Tampered {
        seq,
        detail: detail.into(),
    }
}

pub(super) async fn verify(
    dir: &Path,
    pinned_key: Option<&str>,
) -> Result<AuditReport, AuditError> {
    let images = read_images(dir)?;
    let data_len = u64::try_from(images.get(&Store::Data).len()).unwrap_or(u64::MAX);
    let mut prover = open_prover(dir, images).await?;
    let public = prover.key_pair().public;
    let public_key = hex::encode(public.as_bytes());
    if let Some(expected) =
        pinned_key.filter(|expected| !expected.eq_ignore_ascii_case(&public_key))
    {
        return Err(AuditError::KeyMismatch {
            expected: expected.to_owned(),
            found: public_key,
        });
    }
    let length = prover.info().length;
    let unsigned_trailing_bytes = data_len.saturating_sub(prover.info().byte_length);
    let storage = memory_storage(FileImages(Default::default()))
        .await
        .map_err(|source| AuditError::Storage {
            context: "creating the verifier",
            source,
        })?;
    let mut verifier = HypercoreBuilder::new(storage)
        .key_pair(PartialKeypair {
            public,
            secret: None,
        })
        .build()
        .await
        .map_err(|source| AuditError::Storage {
            context: "creating the verifier",
            source,
        })?;

    let mut entries = Vec::new();
    if length > 0 {
        // The signed tree: its signature must verify under the public key.
        let upgrade = prover
            .create_proof(None, None, None, Some(RequestUpgrade { start: 0, length }))
            .await
            .map_err(|error| AuditError::Corrupt {
                dir: dir.to_owned(),
                detail: format!("the signed tree cannot be proven from the log's files: {error}"),
            })?
            .ok_or_else(|| tampered(None, "no proof of the signed tree"))?;
        match verifier.verify_and_apply_proof(&upgrade).await {
            Ok(true) => {}
            Ok(false) => return Err(tampered(None, "signed tree not accepted")),
            Err(error) => return Err(tampered(None, error.to_string())),
        }
    }
    let mut expected_prev: Option<String> = None;
    for seq in 0..length {
        let block = verified_block(dir, &mut prover, &mut verifier, seq).await?;
        let digest = sha256_hex(&block);
        let json = String::from_utf8(block).map_err(|_| AuditError::MalformedEntry {
            seq,
            detail: "not UTF-8".into(),
        })?;
        let parsed: AuditBlock =
            serde_json::from_str(&json).map_err(|error| AuditError::MalformedEntry {
                seq,
                detail: error.to_string(),
            })?;
        if parsed.prev_digest != expected_prev {
            return Err(AuditError::ChainBroken {
                seq,
                expected: expected_prev,
                found: parsed.prev_digest,
            });
        }
        expected_prev = Some(digest.clone());
        entries.push(VerifiedEntry {
            seq,
            digest,
            prev_digest: parsed.prev_digest,
            event: parsed.event,
            json,
        });
    }
    Ok(AuditReport {
        public_key,
        length,
        entries,
        unsigned_trailing_bytes,
    })
}

/// Block `seq`, as accepted by the verifier against the signed tree.
async fn verified_block(
    dir: &Path,
    prover: &mut Hypercore,
    verifier: &mut Hypercore,
    seq: u64,
) -> Result<Vec<u8>, AuditError> {
    let nodes = verifier
        .missing_nodes(seq)
        .await
        .map_err(|error| tampered(Some(seq), error.to_string()))?;
    // The prover failing to build a proof means its own files lack a node
    // or block (what a crash inside an append can leave), not a bad proof.
    let proof = prover
        .create_proof(Some(RequestBlock { index: seq, nodes }), None, None, None)
        .await
        .map_err(|error| unreadable(dir, seq, &error.to_string()))?
        .ok_or_else(|| unreadable(dir, seq, "block missing from the log"))?;
    match verifier.verify_and_apply_proof(&proof).await {
        Ok(true) => {}
        Ok(false) => return Err(tampered(Some(seq), "block proof not accepted")),
        Err(error) => return Err(tampered(Some(seq), error.to_string())),
    }
    verifier
        .get(seq)
        .await
        .map_err(|error| tampered(Some(seq), error.to_string()))?
        .ok_or_else(|| tampered(Some(seq), "verified block not readable"))
}

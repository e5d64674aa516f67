//! Rebuilding an audit log that a crash left half-appended.
//!
//! Contract:
//! - **When.** [`super::AuditLog::open`] calls [`rebuild`] only for damage a
//!   crash inside one append can leave: bytes in the data file past the signed
//!   tree, or a tree file that lacks nodes its oplog refers to. A data file
//!   *shorter* than the signed tree is refused (signed entries are gone).
//! - **From what.** hypercore writes an append's block to the data file before
//!   its oplog entry, and blocks are compact JSON objects laid end to end, so
//!   the data file alone holds every entry ever appended. [`rebuild`] reads
//!   them in order, keeps each complete block whose `prevDigest` is the digest
//!   of the block before it, and stops at a block cut short by the crash (the
//!   JSON ends early). Anything else — a complete block that breaks the chain,
//!   bytes that are not JSON, fewer entries than the signed tree holds — is
//!   not crash damage: the log is refused with the original error and left as
//!   it is, for an operator. So is a log with no key file whose oplog
//!   hypercore cannot open (whenever it can, the key file is written from it).
//! - **What it writes.** A fresh hypercore in `<dir>.repair`, signed with the
//!   log's own key (kept in `signing-key.json`, mode 0600, beside the hypercore
//!   files since this change; ed25519 signatures are deterministic, so the
//!   entries that were signed before get the very same tree and signature).
//!   Then the damaged directory is renamed to `<dir>.damaged-<unix seconds>`
//!   (kept: `hypergate audit verify` still reads its signed part) and the new
//!   one takes its place; the parent directory is fsynced. A crash during the
//!   rebuild leaves the damaged log in place and a stale `.repair` directory,
//!   which the next attempt replaces.
//! - A kept entry that was never signed is an entry whose append never
//!   returned: the escrow writes the audit entry *before* it acts, so such an
//!   entry records an action that may not have happened, as any audit entry
//!   followed by a crash does. Keeping it loses no evidence.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hypercore::{Hypercore, HypercoreBuilder, PartialKeypair, Storage};

use super::entry::AuditBlock;
use super::{AuditError, STORAGE_FILES, io_error, sync_dir};
use crate::crypto::{Identity, sha256_hex};

/// The log's signing key, beside the hypercore files.
pub(super) const KEY_FILE: &str = "signing-key.json";

/// Blocks appended per hypercore batch while rebuilding.
const REBUILD_BATCH: usize = 512;

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRepair {
    /// Why the log needed it (the error opening it gave).
    pub cause: String,
    /// Where the damaged log was moved.
    pub damaged_dir: PathBuf,
    /// Entries in the rebuilt log.
    pub entries: u64,
    /// How many of them the damaged log's signed tree covered, when it could
    /// be read.
    pub signed_entries: Option<u64>,
    /// Bytes of a block cut short by the crash, dropped.
    pub dropped_bytes: u64,
}

/// Loads the log's signing key, if `dir` has one.
pub(super) fn load_signing_key(dir: &Path) -> Result<Option<Identity>, AuditError> {
    Identity::load(&dir.join(KEY_FILE)).map_err(|source| AuditError::SigningKeyFile {
        dir: dir.to_owned(),
        source,
    })
}

/// Stores the log's signing key (a no-op if that key is already there).
pub(super) fn persist_signing_key(dir: &Path, identity: &Identity) -> Result<(), AuditError> {
    identity
        .persist(&dir.join(KEY_FILE))
        .map_err(|source| AuditError::SigningKeyFile {
            dir: dir.to_owned(),
            source,
        })
}

/// A new, empty log in `dir` (whose storage `builder` holds) signed with `identity`: its
/// files made 0600 and their directory entries synced.
pub(super) async fn create_log(
    builder: HypercoreBuilder,
    dir: &Path,
    identity: &Identity,
) -> Result<Hypercore, AuditError> {
    let core = builder
        .key_pair(PartialKeypair {
            public: identity.signing_key().verifying_key(),
            secret: Some(identity.signing_key().clone()),
        })
        .build()
        .await
        .map_err(|source| AuditError::Storage {
            context: "creating the log",
            source,
        })?;
    for name in STORAGE_FILES {
        let path = dir.join(name);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_error(&path))?;
    }
    // The new files' directory entries must survive a crash too.
    sync_dir(dir)?;
    Ok(core)
}

/// Rebuilds the log in `dir` (see the module docs), or returns `cause` if
/// the damage is not what a crash leaves.
pub(super) async fn rebuild(
    dir: &Path,
    signed_length: Option<u64>,
    cause: AuditError,
) -> Result<AuditRepair, AuditError> {
    let Some(identity) = load_signing_key(dir)? else {
        return Err(cause);
    };
    let data_path = dir.join("data");
    let data = fs::read(&data_path).map_err(io_error(&data_path))?;
    let Some(chain) = complete_chain(&data) else {
        return Err(cause);
    };
    let entries = u64::try_from(chain.blocks.len()).unwrap_or(u64::MAX);
    if signed_length.is_some_and(|signed| entries < signed) {
        return Err(cause);
    }

    let repair_dir = sibling(dir, "repair")?;
    match fs::remove_dir_all(&repair_dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&repair_dir)(error)),
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&repair_dir)
        .map_err(io_error(&repair_dir))?;
    persist_signing_key(&repair_dir, &identity)?;
    {
        let storage = Storage::new_disk(&repair_dir, false)
            .await
            .map_err(|source| AuditError::Storage {
                context: "creating the rebuilt log",
                source,
            })?;
        let mut core = create_log(HypercoreBuilder::new(storage), &repair_dir, &identity).await?;
        for batch in chain.blocks.chunks(REBUILD_BATCH) {
            core.append_batch(batch)
                .await
                .map_err(|source| AuditError::Storage {
                    context: "rebuilding the log",
                    source,
                })?;
        }
    }

    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut damaged_dir = sibling(dir, &format!("damaged-{seconds}"))?;
    let mut attempt = 1;
    while damaged_dir.exists() {
        damaged_dir = sibling(dir, &format!("damaged-{seconds}-{attempt}"))?;
        attempt += 1;
    }
    fs::rename(dir, &damaged_dir).map_err(io_error(dir))?;
    fs::rename(&repair_dir, dir).map_err(io_error(&repair_dir))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(AuditRepair {
        cause: cause.to_string(),
        damaged_dir,
        entries,
        signed_entries: signed_length,
        dropped_bytes: chain.dropped_bytes,
    })
}

/// The entries of a data file that form one `prevDigest` chain from the
/// first block, ending at the end of the file or at a block cut short.
struct Chain<'a> {
    blocks: Vec<&'a [u8]>,
    dropped_bytes: u64,
}

/// The data file's chain, or `None` if it holds anything a crash cannot
/// leave (see the module docs).
fn complete_chain(data: &[u8]) -> Option<Chain<'_>> {
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<AuditBlock>();
    let mut blocks = Vec::new();
    let mut previous: Option<String> = None;
    let mut start = 0;
    loop {
        match stream.next() {
            None => break,
            Some(Ok(block)) => {
                let end = stream.byte_offset();
                let bytes = data.get(start..end)?;
                if block.prev_digest != previous || bytes.first() != Some(&b'{') {
                    return None;
                }
                previous = Some(sha256_hex(bytes));
                blocks.push(bytes);
                start = end;
            }
            // The last block, cut short by the crash.
            Some(Err(error)) if error.is_eof() => break,
            Some(Err(_)) => return None,
        }
    }
    Some(Chain {
        blocks,
        dropped_bytes: u64::try_from(data.len() - start).unwrap_or(u64::MAX),
    })
}

/// `<dir>.<suffix>` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf, AuditError> {
    let name = dir.file_name().ok_or_else(|| AuditError::Corrupt {
        dir: dir.to_owned(),
        detail: "the log directory has no name to repair it beside".into(),
    })?;
    let mut name = name.to_os_string();
    name.push(".");
    name.push(suffix);
    Ok(dir.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(prev: Option<&str>, escrow_id: &str) -> Vec<u8> {
        let prev = prev.map_or("null".to_owned(), |digest| format!("\"{digest}\""));
        format!(
            r#"{{"type":"deposit","escrowId":"{escrow_id}","relayKey":"{}","actor":"w","reasons":[],"timestamp":1,"prevDigest":{prev}}}"#,
            "01".repeat(32)
        )
        .into_bytes()
    }

    #[test]
    fn a_chain_cut_short_keeps_its_complete_blocks() {
        let first = block(None, "a");
        let second = block(Some(&sha256_hex(&first)), "b");
        let mut data = [first.clone(), second.clone()].concat();
        let whole = complete_chain(&data).expect("a whole chain");
        assert_eq!(whole.blocks, vec![&first[..], &second[..]]);
        assert_eq!(whole.dropped_bytes, 0);
        data.extend_from_slice(&block(Some(&sha256_hex(&second)), "c")[..40]);
        let torn = complete_chain(&data).expect("a torn chain");
        assert_eq!(torn.blocks.len(), 2);
        assert_eq!(torn.dropped_bytes, 40);
    }

    #[test]
    fn a_broken_chain_or_garbage_is_not_crash_damage() {
        let first = block(None, "a");
        let unlinked = block(None, "b");
        assert!(complete_chain(&[first.clone(), unlinked].concat()).is_none());
        assert!(complete_chain(&[first.clone(), b"\0\0\0\0".to_vec()].concat()).is_none());
        assert!(complete_chain(&[first, b" {}".to_vec()].concat()).is_none());
    }
}

//! An audit log left half-appended by a crash is rebuilt when it is opened
//! again; damage a crash cannot leave is refused. The crash states are made
//! exactly: the files of a shorter log put back over a longer one's are what
//! a kill between hypercore's writes of one append leaves (the block is
//! written to the data file first, then the oplog entry, then, every few
//! appends, the tree and bitfield).

// A test binary: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hypergate_adapters::audit::{AuditError, AuditEvent, AuditEventKind, AuditLog};
use hypergate_core::escrow::AuditKind;
use hypergate_core::ids::RelayKey;
use hypergate_core::time::UnixTime;

const STORAGE_FILES: [&str; 4] = ["oplog", "tree", "bitfield", "data"];

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        kind: AuditEventKind::Escrow(AuditKind::Deposit),
        escrow_id: format!("escrow_{n}"),
        lease_id: None,
        relay_key: RelayKey([7; 32]),
        actor: "worker".into(),
        reasons: Vec::new(),
        evidence: None,
        reason: None,
        supersedes: None,
        payload_digest: None,
        at: UnixTime(1_700_000_000_000 + n),
    }
}

async fn append(dir: &Path, range: std::ops::Range<u64>) -> String {
    let mut log = AuditLog::open(dir).await.unwrap();
    assert!(log.repaired().is_none());
    for n in range {
        log.append_event(&event(n)).await.unwrap();
    }
    log.public_key_hex()
}

fn snapshot(dir: &Path) -> Vec<Vec<u8>> {
    STORAGE_FILES
        .iter()
        .map(|name| fs::read(dir.join(name)).unwrap())
        .collect()
}

/// Puts back the named files of an earlier snapshot.
fn put_back(dir: &Path, snapshot: &[Vec<u8>], names: &[&str]) {
    for (name, bytes) in STORAGE_FILES.iter().zip(snapshot) {
        if names.contains(name) {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn escrow_ids(entries: &[hypergate_adapters::audit::VerifiedEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| entry.event.escrow_id.clone())
        .collect()
}

fn damaged_dirs(parent: &Path) -> Vec<PathBuf> {
    fs::read_dir(parent)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains(".damaged-"))
        .collect()
}

/// A log with 3 entries whose fourth append was cut after the data write:
/// `cut` bytes of the fourth block are in the data file (all of it if `None`).
async fn crashed_inside_fourth_append(dir: &Path, cut: Option<usize>) -> String {
    let key = append(dir, 0..3).await;
    let before = snapshot(dir);
    append(dir, 3..4).await;
    let full_data = fs::read(dir.join("data")).unwrap();
    put_back(dir, &before, &["oplog", "tree", "bitfield"]);
    let kept = cut.map_or(full_data.len(), |cut| before[3].len() + cut);
    fs::write(dir.join("data"), &full_data[..kept]).unwrap();
    key
}

#[test]
fn a_block_written_without_its_oplog_entry_is_kept_and_signed_on_reopen() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let key = crashed_inside_fourth_append(&dir, None).await;

        let mut log = AuditLog::open(&dir).await.unwrap();
        let repair = log.repaired().cloned().expect("the log was repaired");
        assert_eq!((repair.entries, repair.signed_entries), (4, Some(3)));
        assert_eq!(repair.dropped_bytes, 0);
        assert!(
            repair.cause.contains("past its signed length"),
            "{repair:?}"
        );
        log.append_event(&event(4)).await.unwrap();
        drop(log);

        let report = AuditLog::verify_pinned(&dir, &key).await.unwrap();
        assert_eq!(
            escrow_ids(&report.entries),
            ["escrow_0", "escrow_1", "escrow_2", "escrow_3", "escrow_4"]
        );
        assert_eq!(report.unsigned_trailing_bytes, 0);
        // The damaged log is kept, and still verifies up to its signed length.
        assert_eq!(
            damaged_dirs(parent.path()),
            std::slice::from_ref(&repair.damaged_dir)
        );
        let damaged = AuditLog::verify(&repair.damaged_dir).await.unwrap();
        assert_eq!(damaged.entries[..], report.entries[..3]);
        assert!(damaged.unsigned_trailing_bytes > 0);
        // A clean log opens without a repair.
        assert!(AuditLog::open(&dir).await.unwrap().repaired().is_none());
    });
}

#[test]
fn a_block_cut_short_by_a_crash_is_dropped_and_the_signed_entries_stay_identical() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let key = crashed_inside_fourth_append(&dir, Some(57)).await;
        let signed_before = AuditLog::verify(&dir).await.unwrap();

        let log = AuditLog::open(&dir).await.unwrap();
        let repair = log.repaired().cloned().expect("the log was repaired");
        assert_eq!((repair.entries, repair.dropped_bytes), (3, 57));
        drop(log);
        // Same key, same blocks: the rebuilt log is the signed log, byte for byte.
        let report = AuditLog::verify_pinned(&dir, &key).await.unwrap();
        assert_eq!(report.entries, signed_before.entries);
        assert_eq!(report.length, signed_before.length);
    });
}

#[test]
fn a_tree_file_behind_its_oplog_is_rebuilt_from_the_data_file() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let key = append(&dir, 0..2).await;
        let before = snapshot(&dir);
        // Enough appends for hypercore to flush its tree and fold the oplog.
        append(&dir, 2..9).await;
        put_back(&dir, &before, &["tree"]);
        let opened_as_is = AuditLog::verify(&dir).await;
        println!("tree put back: verify says {opened_as_is:?}");
        assert!(opened_as_is.is_err(), "the crash state was not reproduced");

        let log = AuditLog::open(&dir).await.unwrap();
        let repair = log.repaired().cloned().expect("the log was repaired");
        assert_eq!((repair.entries, repair.signed_entries), (9, None));
        drop(log);
        let report = AuditLog::verify_pinned(&dir, &key).await.unwrap();
        assert_eq!(report.entries.len(), 9);
    });
}

#[test]
fn damage_a_crash_cannot_leave_is_refused_and_left_in_place() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        // Bytes past the signed tree that are not an audit block.
        let garbage = parent.path().join("garbage");
        append(&garbage, 0..3).await;
        let mut data = fs::read(garbage.join("data")).unwrap();
        data.extend_from_slice(b"\0\0\0\0\0\0\0\0");
        fs::write(garbage.join("data"), &data).unwrap();
        assert!(matches!(
            AuditLog::open(&garbage).await,
            Err(AuditError::UnsignedTrailingData { bytes: 8, .. })
        ));
        assert_eq!(fs::read(garbage.join("data")).unwrap(), data);

        // A signed block gone from the data file.
        let short = parent.path().join("short");
        append(&short, 0..3).await;
        let data = fs::read(short.join("data")).unwrap();
        fs::write(short.join("data"), &data[..data.len() - 10]).unwrap();
        assert!(matches!(
            AuditLog::open(&short).await,
            Err(AuditError::Corrupt { .. })
        ));

        // No key file to re-sign with, and an oplog hypercore cannot open.
        let keyless = parent.path().join("keyless");
        append(&keyless, 0..2).await;
        let before = snapshot(&keyless);
        append(&keyless, 2..9).await;
        put_back(&keyless, &before, &["tree"]);
        fs::remove_file(keyless.join("signing-key.json")).unwrap();
        assert!(matches!(
            AuditLog::open(&keyless).await,
            Err(AuditError::Corrupt { .. })
        ));
        assert!(damaged_dirs(parent.path()).is_empty());
    });
}

#[test]
fn a_log_without_a_key_file_is_repaired_with_the_key_from_its_oplog() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let key = crashed_inside_fourth_append(&dir, None).await;
        fs::remove_file(dir.join("signing-key.json")).unwrap();
        let log = AuditLog::open(&dir).await.unwrap();
        assert_eq!(log.repaired().map(|repair| repair.entries), Some(4));
        assert_eq!(log.public_key_hex(), key);
    });
}

#[test]
fn the_signing_key_file_is_private_and_must_hold_the_logs_key() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let key = append(&dir, 0..1).await;
        let key_file = dir.join("signing-key.json");
        assert_eq!(fs::metadata(&key_file).unwrap().mode() & 0o777, 0o600);
        assert!(fs::read_to_string(&key_file).unwrap().contains(&key));

        let other = parent.path().join("other");
        append(&other, 0..1).await;
        fs::copy(other.join("signing-key.json"), &key_file).unwrap();
        assert!(matches!(
            AuditLog::open(&dir).await,
            Err(AuditError::SigningKeyFile { .. })
        ));
    });
}

//! The escrow audit log on a real disk hypercore, driven by the escrow core's
//! own audit records, under `smol::block_on` (the adapter is runtime-neutral).

// A test binary: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use hypercore::{HypercoreBuilder, Storage};
use hypergate_adapters::audit::{AuditError, AuditEvent, AuditEventKind, AuditLog};
use hypergate_adapters::crypto::{PackageMetadata, WriterPackage};
use hypergate_core::escrow::{
    AuditKind, AuditRecord, DepositInput, Escrow, EscrowEvent, Evidence, PolicyConfig,
    UnlockRequest,
};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseConfig;
use hypergate_core::time::UnixTime;
use sha2::{Digest, Sha256};

const RELAY: RelayKey = RelayKey([1; 32]);
const WORKER: PeerId = PeerId([2; 32]);
const GATEWAY: PeerId = PeerId([3; 32]);
const START_UNIX: UnixTime = UnixTime(1_700_000_000_000);

/// Real records from the escrow core: a deposit, a rejected unlock and an issued one.
fn core_records() -> Vec<AuditRecord> {
    let start = Instant::now();
    let policy = PolicyConfig::default();
    let mut escrow = Escrow::new(policy.clone(), LeaseConfig::default(), start, START_UNIX);
    escrow
        .handle_deposit(
            DepositInput {
                escrow_id: "escrow_1".into(),
                relay_key: RELAY,
                owner: WORKER,
                permitted_requesters: BTreeSet::from([GATEWAY]),
                requested_expires_at: None,
                policy_version: policy.version.clone(),
            },
            start,
        )
        .unwrap();
    let mut records = Vec::new();
    while let Some(event) = escrow.poll_event() {
        if let EscrowEvent::Audit(record) = event {
            records.push(record);
        }
    }
    let now = start + Duration::from_secs(60);
    let unix_now = START_UNIX.saturating_add(Duration::from_secs(60));
    let early = UnlockRequest {
        relay_key: RELAY,
        requester: GATEWAY,
        evidence: Some(Evidence {
            escrow_enabled: Some(true),
            healthy_peer_count: Some(1),
            ..Evidence::default()
        }),
    };
    records.push(escrow.plan_unlock(&early, now).unwrap().audit().clone());
    let ready = UnlockRequest {
        relay_key: RELAY,
        requester: GATEWAY,
        evidence: Some(Evidence {
            escrow_enabled: Some(true),
            healthy_peer_count: Some(0),
            last_healthy_at: Some(UnixTime(START_UNIX.0 - 10_000)),
            mirror_lag_blocks: Some(0),
            mirror_lag_ms: Some(0),
            mirror_last_synced_at: Some(UnixTime(unix_now.0 - 1_000)),
        }),
    };
    let plan = escrow.plan_unlock(&ready, now).unwrap();
    records.push(plan.audit().clone());
    let kinds: Vec<_> = records.iter().map(|record| record.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::Deposit,
            AuditKind::UnlockRejected,
            AuditKind::UnlockIssued
        ]
    );
    records
}

fn data_file(dir: &Path) -> std::path::PathBuf {
    dir.join("data")
}

#[test]
fn entries_survive_reopen_and_verify_as_one_chain() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let records = core_records();
        let mut appended = Vec::new();
        let public_key = {
            let mut log = AuditLog::open(dir.path()).await.unwrap();
            assert!(log.is_empty());
            for record in &records {
                appended.push(log.append(record).await.unwrap());
            }
            log.public_key_hex()
        };
        // Reopen: same key, the chain continues from the last block.
        let mut log = AuditLog::open(dir.path()).await.unwrap();
        assert_eq!(log.public_key_hex(), public_key);
        assert_eq!(log.len(), 3);
        let aborted = AuditEvent::unlock_aborted(&records[2], "stale-plan", START_UNIX);
        appended.push(log.append_event(&aborted).await.unwrap());
        let rotation =
            AuditEvent::rotation(RELAY, "escrow_2", "escrow_1", &WORKER.to_hex(), START_UNIX);
        appended.push(log.append_event(&rotation).await.unwrap());
        drop(log);

        let report = AuditLog::verify(dir.path()).await.unwrap();
        assert_eq!(report.public_key, public_key);
        assert_eq!(report.length, 5);
        let seqs: Vec<u64> = report.entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        for (entry, append) in report.entries.iter().zip(&appended) {
            assert_eq!(entry.seq, append.seq);
            assert_eq!(entry.digest, append.digest);
            assert_eq!(
                entry.digest,
                hex::encode(Sha256::digest(entry.json.as_bytes()))
            );
        }
        assert_eq!(report.entries[0].prev_digest, None);
        for pair in report.entries.windows(2) {
            assert_eq!(
                pair[1].prev_digest.as_deref(),
                Some(pair[0].digest.as_str())
            );
        }
        for (entry, record) in report.entries.iter().zip(&records) {
            assert_eq!(entry.event, AuditEvent::from(record));
            // The stored JSON is the core's record JSON plus prevDigest.
            let mut stored: serde_json::Value = serde_json::from_str(&entry.json).unwrap();
            stored.as_object_mut().unwrap().remove("prevDigest");
            assert_eq!(stored, serde_json::to_value(record).unwrap());
        }
        assert_eq!(report.entries[3].event, aborted);
        assert_eq!(report.entries[4].event.kind, AuditEventKind::Rotation);
        let types: Vec<String> = report
            .entries
            .iter()
            .map(|entry| entry.event.kind.to_string())
            .collect();
        assert_eq!(
            types,
            [
                "deposit",
                "unlock-rejected",
                "unlock-issued",
                "unlock-aborted",
                "rotation"
            ]
        );

        AuditLog::verify_pinned(dir.path(), &public_key)
            .await
            .unwrap();
        let other = "00".repeat(32);
        assert!(matches!(
            AuditLog::verify_pinned(dir.path(), &other).await,
            Err(AuditError::KeyMismatch { .. })
        ));
    });
}

#[test]
fn log_directory_and_files_are_private() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let mut log = AuditLog::open(&dir).await.unwrap();
        log.append(&core_records()[0]).await.unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for name in ["oplog", "tree", "bitfield", "data"] {
            let mode = fs::metadata(dir.join(name)).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    });
}

async fn write_log(dir: &Path, count: usize) {
    let records = core_records();
    let mut log = AuditLog::open(dir).await.unwrap();
    for record in records.iter().cycle().take(count) {
        log.append(record).await.unwrap();
    }
}

#[test]
fn a_flipped_byte_anywhere_in_the_data_file_is_detected() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3).await;
        let original = fs::read(data_file(dir.path())).unwrap();
        assert!(!original.is_empty());
        let honest = AuditLog::verify(dir.path()).await.unwrap();
        for offset in 0..original.len() {
            let mut flipped = original.clone();
            flipped[offset] ^= 0x01;
            fs::write(data_file(dir.path()), &flipped).unwrap();
            match AuditLog::verify(dir.path()).await {
                Err(AuditError::Tampered { seq: Some(_), .. }) => {}
                other => panic!("byte {offset} flipped: {other:?}"),
            }
        }
        println!("data flips: all {} detected", original.len());
        fs::write(data_file(dir.path()), &original).unwrap();
        assert_eq!(AuditLog::verify(dir.path()).await.unwrap(), honest);
    });
}

#[test]
fn tampering_with_the_oplog_is_detected_or_its_lost_entries_recovered_on_open() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        write_log(&dir, 3).await;
        let names = ["oplog", "tree", "bitfield", "data"];
        let originals: Vec<Vec<u8>> = names
            .iter()
            .map(|name| fs::read(dir.as_path().join(name)).unwrap())
            .collect();
        let restore = || {
            for (name, bytes) in names.iter().zip(&originals) {
                fs::write(dir.as_path().join(name), bytes).unwrap();
            }
        };
        let honest = AuditLog::verify(dir.as_path()).await.unwrap();
        assert_eq!(honest.unsigned_trailing_bytes, 0);
        let oplog = &originals[0];
        // The oplog is two 4 KiB header slots (mostly padding) and then entries.
        let offsets = (0..256).chain(4096..4352).chain(8192..oplog.len());
        let (mut detected, mut truncated) = (0, 0);
        for offset in offsets {
            let mut flipped = oplog.clone();
            flipped[offset] ^= 0x01;
            fs::write(dir.as_path().join("oplog"), &flipped).unwrap();
            match AuditLog::verify(dir.as_path()).await {
                Err(_) => detected += 1,
                Ok(report) if report.entries == honest.entries => {
                    // A byte that does not bear on what is verified (e.g. the stored secret key).
                    assert_eq!(report.unsigned_trailing_bytes, 0, "byte {offset}");
                }
                Ok(report) => {
                    // hypercore dropped damaged oplog entries: a shorter log,
                    // whose lost tail is still visible in the data file.
                    truncated += 1;
                    assert!(report.entries.len() < honest.entries.len(), "byte {offset}");
                    assert_eq!(report.entries[..], honest.entries[..report.entries.len()]);
                    assert!(report.unsigned_trailing_bytes > 0, "byte {offset}");
                    // Opening rebuilds the log from its data file (the key
                    // is in its key file), lost entries included.
                    let log = AuditLog::open(dir.as_path()).await.unwrap();
                    let repair = log.repaired().cloned();
                    drop(log);
                    assert!(repair.is_some(), "byte {offset}: the log was not repaired");
                    let repaired = AuditLog::verify(dir.as_path()).await.unwrap();
                    assert_eq!(repaired.entries, honest.entries, "byte {offset}");
                    restore();
                }
            }
        }
        restore();
        println!("oplog flips: {detected} rejected, {truncated} flagged as lost entries");
        assert!(detected > 64, "only {detected} flips detected");
        assert!(truncated > 0, "no flip exercised the lost-entries path");
        assert_eq!(AuditLog::verify(dir.as_path()).await.unwrap(), honest);
    });
}

#[test]
fn a_validly_signed_block_that_breaks_the_chain_is_detected() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2).await;
        // Someone with the signing key appends a block whose prevDigest is wrong.
        {
            let storage = Storage::new_disk(&dir.path().to_path_buf(), false)
                .await
                .unwrap();
            let mut core = HypercoreBuilder::new(storage)
                .open(true)
                .build()
                .await
                .unwrap();
            let mut forged = serde_json::to_value(AuditEvent::from(&core_records()[0])).unwrap();
            forged["prevDigest"] = "ab".repeat(32).into();
            core.append(forged.to_string().as_bytes()).await.unwrap();
        }
        match AuditLog::verify(dir.path()).await {
            Err(AuditError::ChainBroken {
                seq: 2,
                expected,
                found,
            }) => {
                assert_eq!(found, Some("ab".repeat(32)));
                assert!(expected.is_some());
            }
            other => panic!("expected a broken chain at block 2: {other:?}"),
        }
    });
}

#[test]
fn a_first_block_with_a_predecessor_or_a_non_entry_block_is_detected() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::new_disk(&dir.path().to_path_buf(), false)
                .await
                .unwrap();
            let mut core = HypercoreBuilder::new(storage).build().await.unwrap();
            let mut first = serde_json::to_value(AuditEvent::from(&core_records()[0])).unwrap();
            first["prevDigest"] = "cd".repeat(32).into();
            core.append(first.to_string().as_bytes()).await.unwrap();
        }
        assert!(matches!(
            AuditLog::verify(dir.path()).await,
            Err(AuditError::ChainBroken {
                seq: 0,
                expected: None,
                ..
            })
        ));

        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::new_disk(&dir.path().to_path_buf(), false)
                .await
                .unwrap();
            let mut core = HypercoreBuilder::new(storage).build().await.unwrap();
            core.append(b"not json").await.unwrap();
        }
        assert!(matches!(
            AuditLog::verify(dir.path()).await,
            Err(AuditError::MalformedEntry { seq: 0, .. })
        ));
    });
}

#[test]
fn append_fails_and_stays_refused_once_the_log_directory_is_removed() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("audit");
        let records = core_records();
        let mut log = AuditLog::open(&dir).await.unwrap();
        log.append(&records[0]).await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            log.append(&records[1]).await,
            Err(AuditError::StorageMoved { .. })
        ));
        // Fail closed: no later append succeeds on this handle.
        fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            log.append(&records[2]).await,
            Err(AuditError::Poisoned)
        ));
        assert!(matches!(
            AuditLog::verify(&dir).await,
            Err(AuditError::NotFound { .. })
        ));
    });
}

#[test]
fn open_and_verify_refuse_what_is_not_a_log() {
    smol::block_on(async {
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("none");
        assert!(matches!(
            AuditLog::verify(&missing).await,
            Err(AuditError::NotFound { file: "oplog", .. })
        ));
        assert!(!missing.exists(), "verify must not create anything");

        let orphaned = parent.path().join("orphaned");
        fs::create_dir(&orphaned).unwrap();
        fs::write(orphaned.join("data"), b"left over").unwrap();
        assert!(matches!(
            AuditLog::open(&orphaned).await,
            Err(AuditError::Corrupt { .. })
        ));

        let garbage = parent.path().join("garbage");
        fs::create_dir(&garbage).unwrap();
        for name in ["oplog", "tree", "bitfield", "data"] {
            fs::write(garbage.join(name), [0xffu8; 100]).unwrap();
        }
        assert!(AuditLog::open(&garbage).await.is_err());
        assert!(AuditLog::verify(&garbage).await.is_err());

        let file = parent.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(AuditLog::open(&file).await.is_err());
    });
}

#[test]
fn entries_carry_digests_never_the_writer_secret() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let writer = SigningKey::from_bytes(&[0x5a; 32]);
        let package = WriterPackage::new(
            RELAY,
            &writer,
            WORKER,
            START_UNIX,
            PackageMetadata {
                identifier: "npub1:relay".into(),
                name: None,
            },
        );
        let issued =
            AuditEvent::from(&core_records()[2]).with_payload_digest(&package.payload_digest());
        let mut log = AuditLog::open(dir.path()).await.unwrap();
        log.append_event(&issued).await.unwrap();
        assert!(matches!(
            log.append_event(&issued.clone().with_payload_digest("not-a-digest"))
                .await,
            Err(AuditError::BadPayloadDigest)
        ));
        drop(log);

        let data = fs::read(data_file(dir.path())).unwrap();
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains(&package.payload_digest()));
        let secret = writer.to_bytes();
        for needle in [hex::encode(secret), BASE64.encode(secret)] {
            assert!(!text.contains(&needle));
        }
        assert!(!data.windows(32).any(|window| window == secret));
        let report = AuditLog::verify(dir.path()).await.unwrap();
        assert_eq!(
            report.entries[0].event.payload_digest.as_deref(),
            Some(package.payload_digest().as_str())
        );
    });
}

/// Throughput figures for docs/benchmarks.md (not a timed test):
/// `cargo test -p hypergate-adapters --test audit_log -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run explicitly"]
fn measure_append_and_verify_rates() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let records = core_records();
        let count = 2_000u64;
        let mut log = AuditLog::open(dir.path()).await.unwrap();
        let started = Instant::now();
        for record in records.iter().cycle().take(count as usize) {
            log.append(record).await.unwrap();
        }
        let append = started.elapsed();
        drop(log);
        let started = Instant::now();
        let report = AuditLog::verify(dir.path()).await.unwrap();
        let verify = started.elapsed();
        assert_eq!(report.length, count);
        let data_bytes = fs::metadata(data_file(dir.path())).unwrap().len();
        println!(
            "{count} appends in {append:?} ({:.0}/s, fsync per write); verify in {verify:?} \
             ({:.0} entries/s); {data_bytes} data bytes",
            count as f64 / append.as_secs_f64(),
            count as f64 / verify.as_secs_f64()
        );
    });
}

use super::*;
use proptest::prelude::*;

fn blocks(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("block {i}").into_bytes()).collect()
}

async fn replica_of(origin: &mut HyperLog, dir: &Path) -> HyperLog {
    let mut replica = HyperLog::create_replica(dir, origin.public_key())
        .await
        .unwrap();
    let proofs = origin.export_range(0, 0..origin.len()).await.unwrap();
    replica.apply_proofs(&proofs).await.unwrap();
    replica
}

#[test]
fn appended_blocks_survive_reopen_and_keep_the_key() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = HyperLog::create(&dir, None).await.unwrap();
        assert!(log.is_writable());
        assert_eq!(log.append(b"first").await.unwrap(), 0);
        assert_eq!(log.append_batch(&blocks(3)).await.unwrap(), 1..4);
        let key = log.public_key();
        drop(log);

        let mut log = HyperLog::open_expecting(&dir, &key).await.unwrap();
        assert_eq!(log.len(), 4);
        assert!(log.is_writable());
        assert_eq!(log.get(0).await.unwrap().unwrap(), b"first");
        assert_eq!(log.get(3).await.unwrap().unwrap(), b"block 2");
        assert_eq!(log.get(4).await.unwrap(), None);
        assert_eq!(log.append(b"after reopen").await.unwrap(), 4);
    });
}

#[test]
fn a_log_written_by_hypercores_own_disk_storage_opens_and_grows_here() {
    // Logs from before the grouped-sync storage (hypercore's `random-access-disk`) are the
    // same files with the same bytes.
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let storage = Storage::new_disk(&dir, false).await.unwrap();
        let mut core = HypercoreBuilder::new(storage).build().await.unwrap();
        for block in blocks(10) {
            core.append(&block).await.unwrap();
        }
        let key = core.key_pair().public;
        drop(core);

        let mut log = HyperLog::open_expecting(&dir, &key).await.unwrap();
        assert_eq!(log.len(), 10);
        assert_eq!(log.get(9).await.unwrap().unwrap(), b"block 9");
        assert_eq!(log.append(b"here").await.unwrap(), 10);
        drop(log);
        let mut log = HyperLog::open(&dir).await.unwrap();
        assert_eq!(
            log.read_range(8..11).await.unwrap(),
            [b"block 8".to_vec(), b"block 9".to_vec(), b"here".to_vec()]
        );
    });
}

#[test]
fn a_batch_costs_a_few_file_syncs_not_one_per_write() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut origin = HyperLog::create(&tmp.path().join("origin"), None)
            .await
            .unwrap();
        let before = origin.file_syncs();
        origin.append_batch(&blocks(64)).await.unwrap();
        // The blocks before the oplog entry that refers to them, the entry, and at most one
        // flush (tree, bitfield, header): a handful, however many blocks.
        let syncs = origin.file_syncs() - before;
        assert!(syncs <= 6, "{syncs} syncs for one append of 64 blocks");

        let mut replica =
            HyperLog::create_replica(&tmp.path().join("replica"), origin.public_key())
                .await
                .unwrap();
        let before = replica.file_syncs();
        let proofs = origin.export_range(0, 0..64).await.unwrap();
        replica.apply_proofs(&proofs).await.unwrap();
        // One sync of the block before each proof's oplog entry, plus the tree, bitfield and
        // header of hypercore's flush on every fourth change (117 here): hypercore's own
        // storage synced every write, about seven per proof.
        let syncs = replica.file_syncs() - before;
        assert!(syncs <= 2 * 64, "{syncs} syncs for 64 proofs");
        assert_eq!(replica.read_range(0..64).await.unwrap(), blocks(64));
    });
}

#[test]
fn a_writable_log_keeps_its_secret_key_in_files_only_the_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut log = HyperLog::create(&dir, None).await.unwrap();
        log.append(b"x").await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    });
}

#[test]
fn create_refuses_an_existing_log_and_open_refuses_a_missing_one() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        assert!(matches!(
            HyperLog::open(&dir).await,
            Err(LogError::NotFound(_))
        ));
        let log = HyperLog::create(&dir, None).await.unwrap();
        drop(log);
        assert!(matches!(
            HyperLog::create(&dir, None).await,
            Err(LogError::AlreadyExists(_))
        ));
        let other = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(matches!(
            HyperLog::open_expecting(&dir, &other).await,
            Err(LogError::WrongKey { .. })
        ));
    });
}

#[test]
fn a_log_created_with_a_given_key_signs_with_it() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let log = HyperLog::create(&tmp.path().join("log"), Some(key.clone()))
            .await
            .unwrap();
        assert_eq!(log.public_key(), key.verifying_key());
    });
}

#[test]
fn a_replica_gets_every_block_through_verified_proofs_and_persists_them() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut origin = HyperLog::create(&tmp.path().join("origin"), None)
            .await
            .unwrap();
        origin.append_batch(&blocks(10)).await.unwrap();
        let replica_dir = tmp.path().join("replica");
        let replica = replica_of(&mut origin, &replica_dir).await;
        assert!(!replica.is_writable());
        assert_eq!(replica.contiguous_len(), 10);
        drop(replica);

        let mut replica = HyperLog::open_expecting(&replica_dir, &origin.public_key())
            .await
            .unwrap();
        assert_eq!(replica.read_range(0..10).await.unwrap(), blocks(10));
        assert!(matches!(
            replica.append(b"x").await,
            Err(LogError::ReadOnly(_))
        ));

        // Incremental catch-up from where the replica stands.
        origin.append_batch(&blocks(5)).await.unwrap();
        let proofs = origin.export_range(replica.len(), 10..15).await.unwrap();
        let decoded: Vec<Proof> = proofs
            .iter()
            .map(|p| decode_proof(&encode_proof(p)).unwrap())
            .collect();
        replica.apply_proofs(&decoded).await.unwrap();
        assert_eq!(replica.contiguous_len(), 15);
        drop(replica);
        let mut replica = HyperLog::open(&replica_dir).await.unwrap();
        assert_eq!(replica.contiguous_len(), 15);
        assert_eq!(replica.get(14).await.unwrap().unwrap(), b"block 4");
    });
}

#[test]
fn a_tampered_block_or_signature_is_rejected_and_nothing_is_stored() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut origin = HyperLog::create(&tmp.path().join("origin"), None)
            .await
            .unwrap();
        origin.append_batch(&blocks(4)).await.unwrap();
        let mut replica = HyperLog::create_replica(&tmp.path().join("r"), origin.public_key())
            .await
            .unwrap();
        let proofs = origin.export_range(0, 0..4).await.unwrap();

        let mut bad_value = proofs[0].clone();
        if let Some(block) = bad_value.block.as_mut() {
            block.value[0] ^= 1;
        }
        assert!(matches!(
            replica.apply_proof(&bad_value).await,
            Err(LogError::ProofRejected { .. })
        ));
        let mut bad_signature = proofs[0].clone();
        if let Some(upgrade) = bad_signature.upgrade.as_mut() {
            upgrade.signature[10] ^= 1;
        }
        assert!(matches!(
            replica.apply_proof(&bad_signature).await,
            Err(LogError::ProofRejected { .. })
        ));
        assert_eq!(replica.len(), 0);
        assert_eq!(replica.contiguous_len(), 0);

        // A proof from another log with the same shape is rejected too.
        let mut stranger = HyperLog::create(&tmp.path().join("s"), None).await.unwrap();
        stranger.append_batch(&blocks(4)).await.unwrap();
        let foreign = stranger.export_range(0, 0..1).await.unwrap();
        assert!(replica.apply_proof(&foreign[0]).await.is_err());
        assert_eq!(replica.contiguous_len(), 0);

        // The honest proofs still apply afterwards.
        for proof in &proofs {
            replica.apply_proof(proof).await.unwrap();
        }
        assert_eq!(replica.contiguous_len(), 4);
    });
}

#[test]
fn export_rejects_a_range_past_the_end() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = HyperLog::create(&tmp.path().join("log"), None)
            .await
            .unwrap();
        log.append_batch(&blocks(2)).await.unwrap();
        assert!(matches!(
            log.export_range(0, 1..3).await,
            Err(LogError::OutOfRange { .. })
        ));
        assert!(log.export_range(0, 2..2).await.unwrap().is_empty());
    });
}

#[test]
fn oversized_blocks_are_refused_before_writing() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = HyperLog::create(&tmp.path().join("log"), None)
            .await
            .unwrap();
        let big = vec![0u8; MAX_BLOCK_BYTES + 1];
        assert!(matches!(
            log.append(&big).await,
            Err(LogError::BlockTooLarge(_))
        ));
        assert_eq!(log.len(), 0);
    });
}

#[test]
fn the_log_runs_under_a_tokio_runtime_too() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = HyperLog::create(&tmp.path().join("log"), None)
            .await
            .unwrap();
        log.append(b"from tokio").await.unwrap();
        assert_eq!(log.get(0).await.unwrap().unwrap(), b"from tokio");
    });
}

#[test]
fn proof_bytes_round_trip() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = HyperLog::create(&tmp.path().join("log"), None)
            .await
            .unwrap();
        log.append_batch(&blocks(7)).await.unwrap();
        for proof in log.export_range(3, 3..7).await.unwrap() {
            assert_eq!(decode_proof(&encode_proof(&proof)).unwrap(), proof);
        }
    });
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_proof(&bytes);
        let mut versioned = vec![1u8];
        versioned.extend(&bytes);
        let _ = decode_proof(&versioned);
    }
}

#[test]
fn a_replica_reopens_after_any_number_of_applied_proofs() {
    smol::block_on(async {
        for n in 1..=9u64 {
            let tmp = tempfile::tempdir().unwrap();
            let mut origin = HyperLog::create(&tmp.path().join("origin"), None)
                .await
                .unwrap();
            origin.append_batch(&blocks(9)).await.unwrap();
            let dir = tmp.path().join("replica");
            let mut replica = HyperLog::create_replica(&dir, origin.public_key())
                .await
                .unwrap();
            let proofs = origin.export_range(0, 0..n).await.unwrap();
            replica.apply_proofs(&proofs).await.unwrap();
            drop(replica);
            let mut reopened = HyperLog::open(&dir).await.unwrap();
            assert_eq!(reopened.contiguous_len(), n, "after {n} proofs");
            assert_eq!(
                reopened.read_range(0..n).await.unwrap(),
                blocks(9)[..n as usize].to_vec()
            );
        }
    });
}

#[test]
fn a_replica_cut_short_mid_batch_catches_up_by_request_after_the_origin_grew() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut origin = HyperLog::create(&tmp.path().join("o"), None).await.unwrap();
        origin.append_batch(&blocks(20)).await.unwrap();
        let mut replica = HyperLog::create_replica(&tmp.path().join("r"), origin.public_key())
            .await
            .unwrap();
        let proofs = origin.export_range(0, 0..20).await.unwrap();
        replica.apply_proofs(&proofs[..10]).await.unwrap();
        assert_eq!((replica.len(), replica.contiguous_len()), (20, 10));
        origin.append_batch(&blocks(10)).await.unwrap();

        // A push from the replica's signed length no longer proves blocks 10..20 ...
        let pushed = origin.export_range(20, 10..30).await.unwrap();
        assert!(replica.apply_proof(&pushed[0]).await.is_err());
        // ... but a request built by the replica does.
        let request = replica.request_range(10..30).await.unwrap();
        let answer = origin.answer_request(&request).await.unwrap();
        assert_eq!(answer.len(), 20);
        replica.apply_proofs(&answer).await.unwrap();
        assert_eq!((replica.len(), replica.contiguous_len()), (30, 30));
        drop(replica);
        let mut reopened = HyperLog::open(&tmp.path().join("r")).await.unwrap();
        assert_eq!(reopened.get(29).await.unwrap().unwrap(), b"block 9");
    });
}

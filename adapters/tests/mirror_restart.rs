//! Restart is reopen: inventory, blocks and counters come back; a core that
//! cannot be reopened is quarantined and re-mirrored, never fatal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use hypergate_adapters::mirror::{
    CoreRole, MirrorConfig, MirrorError, MirrorStore, QuarantineCause,
};
use mirror_support::*;

#[test]
fn restart_keeps_inventory_blocks_and_counters() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut writer = origin(&tmp.path().join("w"), 12).await;
        let mut owner = origin(&tmp.path().join("o"), 3).await;
        let mut store = open_store(&root).await;
        mirror_fully(&mut store, &mut writer, relay(1), CoreRole::Writer, at(10)).await;
        mirror_fully(&mut store, &mut owner, relay(1), CoreRole::Owner, at(20)).await;
        store.advertise(&key_of(&writer), 15, at(30)).unwrap();
        let mut tampered = writer.export_range(12, 0..1).await.unwrap();
        tampered[0].block.as_mut().unwrap().value[0] ^= 1;
        let _ = store
            .store_blocks(&key_of(&writer), &tampered, at(40))
            .await
            .unwrap();
        let before: Vec<_> = store.cores().cloned().collect();
        let counters = store.counters();
        let bytes = store.total_bytes();
        drop(store);

        let mut store = open_store(&root).await;
        assert!(store.quarantined().is_empty());
        let after: Vec<_> = store.cores().cloned().collect();
        assert_eq!(after, before, "every record comes back as it was");
        assert_eq!(store.counters(), counters);
        assert_eq!(counters.verified_blocks, 15);
        assert_eq!(counters.rejected_blocks, 1);
        assert_eq!(store.total_bytes(), bytes);
        let writer_key = key_of(&writer);
        assert_eq!(store.core(&writer_key).unwrap().remote_length, 15);
        for i in 0..12 {
            assert_eq!(
                store.read_block(&writer_key, i).await.unwrap(),
                Some(block(i))
            );
        }
        assert_eq!(
            store.read_block(&key_of(&owner), 2).await.unwrap(),
            Some(block(2))
        );
        assert_eq!(store.cores_of_relay(&relay(1)).count(), 2);
    });
}

#[test]
fn catch_up_resumes_from_where_the_mirror_stands_after_an_interruption() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut writer = origin(&tmp.path().join("w"), 20).await;
        let key = key_of(&writer);
        let mut store = open_store(&root).await;
        let _ = store
            .register_core(announcement(&writer, relay(1), CoreRole::Writer), T0)
            .await
            .unwrap();
        let proofs = writer.export_range(0, 0..20).await.unwrap();
        // Interrupted after half of the batch: the first proof already carried
        // the signed tree of all 20 blocks.
        let outcome = store
            .store_blocks(&key, &proofs[..10], at(1))
            .await
            .unwrap();
        assert_eq!((outcome.local_length, outcome.remote_length), (10, 20));
        let record = store.core(&key).unwrap();
        assert_eq!((record.signed_length, record.lag_blocks()), (20, 10));
        drop(store);

        let mut store = open_store(&root).await;
        let mirror_len = store.len(&key).unwrap();
        assert_eq!(mirror_len, 10);
        let resume = writer
            .export_range(mirror_len, mirror_len..writer.len())
            .await
            .unwrap();
        assert_eq!(resume.len(), 10);
        let outcome = store.store_blocks(&key, &resume, at(2)).await.unwrap();
        assert_eq!(outcome.rejected_blocks, 0, "{:?}", outcome.first_rejection);
        assert_eq!((outcome.local_length, outcome.remote_length), (20, 20));

        // The origin moves on; the mirror follows from where it stands.
        let more: Vec<Vec<u8>> = (20..30).map(block).collect();
        writer.append_batch(&more).await.unwrap();
        let mirror_len = store.len(&key).unwrap();
        let next = writer
            .export_range(mirror_len, mirror_len..writer.len())
            .await
            .unwrap();
        let outcome = store.store_blocks(&key, &next, at(3)).await.unwrap();
        assert_eq!((outcome.stored_blocks, outcome.local_length), (10, 30));
        drop(store);

        let mut store = open_store(&root).await;
        assert_eq!(store.len(&key).unwrap(), 30);
        for i in 0..30 {
            assert_eq!(store.read_block(&key, i).await.unwrap(), Some(block(i)));
        }
        assert_eq!(store.counters().verified_blocks, 30);
    });
}

#[test]
fn a_corrupt_core_is_quarantined_and_the_store_still_opens() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut good = origin(&tmp.path().join("good"), 4).await;
        let mut bad = origin(&tmp.path().join("bad"), 6).await;
        let mut store = open_store(&root).await;
        mirror_fully(&mut store, &mut good, relay(1), CoreRole::Writer, T0).await;
        mirror_fully(&mut store, &mut bad, relay(1), CoreRole::Writer, T0).await;
        drop(store);

        // A crash left the bad core's oplog (its header: keys, lengths) unreadable.
        let bad_dir = root.join("cores").join(key_of(&bad).to_hex());
        std::fs::write(bad_dir.join("oplog"), vec![0xa5; 100]).unwrap();

        let mut store = open_store(&root).await;
        let [quarantined] = store.quarantined() else {
            panic!(
                "expected one quarantined core, got {:?}",
                store.quarantined()
            );
        };
        assert_eq!(quarantined.core_key, key_of(&bad));
        assert!(matches!(quarantined.cause, QuarantineCause::Unopenable(_)));
        assert!(quarantined.remirror);
        let moved = quarantined.moved_to.clone().unwrap();
        assert!(moved.starts_with(root.join("quarantine")));
        assert!(
            moved.join("data").exists(),
            "the bad directory is kept for inspection"
        );
        assert_eq!(store.counters().quarantined, 1);

        // The good core is untouched.
        assert_eq!(store.len(&key_of(&good)).unwrap(), 4);
        assert_eq!(
            store.read_block(&key_of(&good), 3).await.unwrap(),
            Some(block(3))
        );
        // The bad one keeps its metadata, holds nothing, and is re-mirrored from block 0.
        let record = store.core(&key_of(&bad)).unwrap().clone();
        assert_eq!((record.local_length, record.remote_length), (0, 6));
        assert_eq!(record.relay, relay(1));
        assert_eq!(record.lag_blocks(), 6);
        let proofs = missing_proofs(&store, &mut bad).await;
        assert_eq!(proofs.len(), 6);
        let outcome = store
            .store_blocks(&key_of(&bad), &proofs, at(5))
            .await
            .unwrap();
        assert_eq!(outcome.local_length, 6);
        drop(store);

        let store = open_store(&root).await;
        assert!(store.quarantined().is_empty());
        assert_eq!(store.len(&key_of(&bad)).unwrap(), 6);
        assert_eq!(store.counters().quarantined, 1);
    });
}

#[test]
fn a_lost_directory_is_reported_and_re_mirrored() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut writer = origin(&tmp.path().join("w"), 5).await;
        let mut store = open_store(&root).await;
        mirror_fully(&mut store, &mut writer, relay(1), CoreRole::Writer, T0).await;
        drop(store);
        std::fs::remove_dir_all(root.join("cores").join(key_of(&writer).to_hex())).unwrap();

        let mut store = open_store(&root).await;
        let [lost] = store.quarantined() else {
            panic!("expected one report, got {:?}", store.quarantined());
        };
        assert_eq!(lost.cause, QuarantineCause::Missing);
        assert_eq!(lost.moved_to, None);
        assert_eq!(store.len(&key_of(&writer)).unwrap(), 0);
        let proofs = missing_proofs(&store, &mut writer).await;
        let outcome = store
            .store_blocks(&key_of(&writer), &proofs, at(1))
            .await
            .unwrap();
        assert_eq!(outcome.local_length, 5);
    });
}

#[test]
fn a_directory_without_a_record_is_quarantined_not_adopted() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = open_store(&root).await;
        drop(store);
        // Left behind by an eviction interrupted after its inventory commit.
        let stray = origin(&root.join("cores").join("ab".repeat(32)), 2).await;
        drop(stray);
        std::fs::create_dir_all(root.join("cores").join("not-a-core")).unwrap();

        let store = open_store(&root).await;
        let [orphan] = store.quarantined() else {
            panic!("expected one orphan, got {:?}", store.quarantined());
        };
        assert_eq!(orphan.cause, QuarantineCause::Orphan);
        assert!(!orphan.remirror);
        assert_eq!(store.core_count(), 0);
        assert!(!root.join("cores").join("ab".repeat(32)).exists());
        assert!(
            root.join("cores").join("not-a-core").exists(),
            "entries the store did not make are left alone"
        );
    });
}

#[test]
fn a_second_store_on_the_same_root_is_refused() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path()).await;
        assert!(matches!(
            MirrorStore::open(tmp.path(), MirrorConfig::default()).await,
            Err(MirrorError::InventoryLocked(_))
        ));
        drop(store);
        assert!(
            MirrorStore::open(tmp.path(), MirrorConfig::default())
                .await
                .is_ok()
        );
    });
}

#[test]
fn more_cores_than_the_open_cap_all_stay_usable_across_restart() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let config = MirrorConfig {
            max_open_cores: 2,
            ..MirrorConfig::default()
        };
        let mut store = MirrorStore::open(&root, config).await.unwrap();
        let mut origins = Vec::new();
        for n in 0..5u64 {
            let mut log = origin(&tmp.path().join(format!("o{n}")), n + 1).await;
            mirror_fully(&mut store, &mut log, relay(1), CoreRole::Writer, T0).await;
            origins.push(log);
        }
        drop(store);
        let mut store = MirrorStore::open(&root, config).await.unwrap();
        for (n, log) in origins.iter().enumerate().rev() {
            let key = key_of(log);
            assert_eq!(store.len(&key).unwrap(), n as u64 + 1);
            assert_eq!(
                store.read_block(&key, n as u64).await.unwrap(),
                Some(block(n as u64))
            );
        }
    });
}

/// The case a push cannot serve: the mirror's signed tree ran ahead of its blocks
/// (a batch cut short) and the origin grew before the catch-up. The mirror's own
/// request, answered by the origin, brings every block.
#[test]
fn a_mirror_cut_short_mid_batch_catches_up_by_request_after_the_origin_grew() {
    use hypergate_adapters::log::HyperLog;
    use hypergate_adapters::mirror::{
        CoreAnnouncement, CoreKey, CoreRole, MirrorConfig, MirrorStore,
    };
    use hypergate_core::ids::{PeerId, RelayKey};
    use hypergate_core::time::UnixTime;

    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut origin = HyperLog::create(&tmp.path().join("origin"), None)
            .await
            .unwrap();
        let blocks: Vec<Vec<u8>> = (0..30).map(|i| vec![i as u8; 100]).collect();
        origin.append_batch(&blocks[..20]).await.unwrap();
        let core = CoreKey(origin.public_key().to_bytes());
        let mut mirror = MirrorStore::open(&tmp.path().join("mirror"), MirrorConfig::default())
            .await
            .unwrap();
        let now = UnixTime(1_000);
        let _ = mirror
            .register_core(
                CoreAnnouncement::new(core, PeerId([1; 32]), RelayKey([2; 32]), CoreRole::Writer),
                now,
            )
            .await
            .unwrap();
        let proofs = origin.export_range(0, 0..20).await.unwrap();
        let _ = mirror
            .store_blocks(&core, &proofs[..10], now)
            .await
            .unwrap();
        origin.append_batch(&blocks[20..]).await.unwrap();

        let request = mirror.request_range(&core, 10..30).await.unwrap();
        let answer = origin.answer_request(&request).await.unwrap();
        let outcome = mirror.store_blocks(&core, &answer, now).await.unwrap();
        assert_eq!(outcome.rejected_blocks, 0);
        assert_eq!(mirror.len(&core).unwrap(), 30);
        assert_eq!(
            mirror.read_block(&core, 29).await.unwrap().unwrap(),
            blocks[29]
        );
    });
}

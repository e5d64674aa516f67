//! The mirror store keeps only blocks that verify against the core's key and
//! signed tree, and serves them back and onwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use hypergate_adapters::log::{HyperLog, decode_proof, encode_proof};
use hypergate_adapters::mirror::{
    CoreKey, CoreRole, MirrorError, MirrorStore, Registered, StoreOutcome,
};
use mirror_support::*;

/// A store with one registered, empty mirror of a 20-block origin.
async fn setup(tmp: &tempfile::TempDir) -> (MirrorStore, HyperLog, CoreKey) {
    let mut store = open_store(&tmp.path().join("store")).await;
    let origin = origin(&tmp.path().join("origin"), 20).await;
    let registered = store
        .register_core(announcement(&origin, relay(1), CoreRole::Writer), T0)
        .await
        .unwrap();
    assert_eq!(registered, Registered::New);
    let key = key_of(&origin);
    (store, origin, key)
}

/// `n` proofs for `key` were all rejected; the store verified `verified_total` blocks elsewhere.
fn assert_nothing_stored(
    store: &MirrorStore,
    key: &CoreKey,
    outcome: &StoreOutcome,
    n: u64,
    verified_total: u64,
) {
    assert_eq!(outcome.stored_blocks, 0);
    assert_eq!(outcome.rejected_blocks, n);
    assert!(outcome.first_rejection.is_some());
    assert_eq!(outcome.local_length, 0);
    let record = store.core(key).unwrap();
    assert_eq!(record.local_length, 0);
    assert_eq!(
        record.remote_length, 0,
        "a rejected upgrade must not move the tree"
    );
    assert_eq!(record.rejected_blocks, n);
    assert_eq!(record.verified_blocks, 0);
    assert_eq!(store.counters().rejected_blocks, n);
    assert_eq!(store.counters().verified_blocks, verified_total);
}

#[test]
fn blocks_from_a_real_origin_log_are_verified_stored_and_read_back() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, key) = setup(&tmp).await;
        // Over the wire and back, as the peer link carries them.
        let proofs: Vec<_> = origin
            .export_range(0, 0..20)
            .await
            .unwrap()
            .iter()
            .map(|p| decode_proof(&encode_proof(p)).unwrap())
            .collect();
        let outcome = store.store_blocks(&key, &proofs, at(1_000)).await.unwrap();
        assert_eq!(outcome.stored_blocks, 20);
        assert_eq!(outcome.rejected_blocks, 0);
        assert_eq!((outcome.local_length, outcome.remote_length), (20, 20));
        for i in 0..20 {
            assert_eq!(
                store.read_block(&key, i).await.unwrap(),
                Some(block(i)),
                "block {i}"
            );
        }
        assert_eq!(store.read_block(&key, 20).await.unwrap(), None);
        assert_eq!(store.len(&key).unwrap(), 20);
        let record = store.core(&key).unwrap();
        assert_eq!(record.verified_blocks, 20);
        assert!(record.bytes >= 20 * 500, "bytes on disk cover the blocks");
        assert_eq!(store.total_bytes(), record.bytes);
        assert_eq!(store.counters().verified_blocks, 20);
    });
}

#[test]
fn a_flipped_byte_in_a_block_is_rejected_counted_and_nothing_is_stored() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, key) = setup(&tmp).await;
        let mut proofs = origin.export_range(0, 0..20).await.unwrap();
        for proof in &mut proofs {
            proof.block.as_mut().unwrap().value[7] ^= 0x01;
        }
        let bytes_before = store.total_bytes();
        let outcome = store.store_blocks(&key, &proofs, at(1)).await.unwrap();
        assert_nothing_stored(&store, &key, &outcome, 20, 0);
        assert_eq!(store.total_bytes(), bytes_before);
        assert_eq!(store.read_block(&key, 0).await.unwrap(), None);
    });
}

#[test]
fn a_flipped_signature_byte_is_rejected_counted_and_nothing_is_stored() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, key) = setup(&tmp).await;
        let mut proofs = origin.export_range(0, 0..20).await.unwrap();
        for proof in &mut proofs {
            proof.upgrade.as_mut().unwrap().signature[33] ^= 0x80;
        }
        let outcome = store.store_blocks(&key, &proofs, at(1)).await.unwrap();
        assert_nothing_stored(&store, &key, &outcome, 20, 0);
    });
}

#[test]
fn proofs_from_a_different_key_are_rejected_and_other_cores_are_unaffected() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, _origin, key) = setup(&tmp).await;
        // A second, honest core in the same store.
        let mut honest = origin(&tmp.path().join("honest"), 5).await;
        mirror_fully(&mut store, &mut honest, relay(2), CoreRole::Owner, T0).await;
        // Same shape and length as the real origin, signed by another key.
        let mut stranger = origin(&tmp.path().join("stranger"), 20).await;
        let foreign = stranger.export_range(0, 0..20).await.unwrap();

        let outcome = store.store_blocks(&key, &foreign, at(1)).await.unwrap();
        assert_nothing_stored(&store, &key, &outcome, 20, 5);

        let honest_key = key_of(&honest);
        let record = store.core(&honest_key).unwrap();
        assert_eq!((record.local_length, record.rejected_blocks), (5, 0));
        assert_eq!(
            store.read_block(&honest_key, 4).await.unwrap(),
            Some(block(4))
        );
        // The honest core still takes new blocks.
        honest.append(&block(5)).await.unwrap();
        let more = honest.export_range(5, 5..6).await.unwrap();
        let outcome = store.store_blocks(&honest_key, &more, at(2)).await.unwrap();
        assert_eq!((outcome.stored_blocks, outcome.local_length), (1, 6));
    });
}

#[test]
fn a_batch_with_one_bad_proof_stores_the_others_and_counts_the_one() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, key) = setup(&tmp).await;
        let mut proofs = origin.export_range(0, 0..20).await.unwrap();
        proofs[12].block.as_mut().unwrap().value[0] ^= 0xff;
        let outcome = store.store_blocks(&key, &proofs, at(1)).await.unwrap();
        assert_eq!((outcome.stored_blocks, outcome.rejected_blocks), (19, 1));
        assert_eq!(
            outcome.local_length, 12,
            "the gap at block 12 stops the contiguous run"
        );
        assert_eq!(store.read_block(&key, 12).await.unwrap(), None);
        assert_eq!(store.read_block(&key, 13).await.unwrap(), Some(block(13)));
        // The honest block fills the gap.
        let fix = origin.export_range(20, 12..13).await.unwrap();
        let outcome = store.store_blocks(&key, &fix, at(2)).await.unwrap();
        assert_eq!((outcome.stored_blocks, outcome.local_length), (1, 20));
        assert_eq!(store.counters().rejected_blocks, 1);
        assert_eq!(store.counters().verified_blocks, 20);
    });
}

#[test]
fn a_mirror_serves_its_blocks_onwards_to_another_replica() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, key) = setup(&tmp).await;
        let proofs = origin.export_range(0, 0..20).await.unwrap();
        let _ = store.store_blocks(&key, &proofs, at(1)).await.unwrap();

        let mut downstream =
            HyperLog::create_replica(&tmp.path().join("downstream"), origin.public_key())
                .await
                .unwrap();
        let onward = store.export_blocks(&key, 0, 0..20).await.unwrap();
        assert_eq!(onward.len(), 20);
        downstream.apply_proofs(&onward).await.unwrap();
        assert_eq!(downstream.contiguous_len(), 20);
        assert_eq!(downstream.get(19).await.unwrap(), Some(block(19)));

        assert!(matches!(
            store.export_blocks(&key, 0, 0..21).await,
            Err(MirrorError::Range { .. })
        ));
    });
}

#[test]
fn re_registration_merges_metadata_and_a_core_cannot_switch_relay() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, key) = setup(&tmp).await;
        let proofs = origin.export_range(0, 0..20).await.unwrap();
        let _ = store.store_blocks(&key, &proofs, at(1_000)).await.unwrap();

        let mut again = announcement(&origin, relay(1), CoreRole::GatewayWriter);
        again.owner = peer(9);
        again.priority = 5;
        again.announce = true;
        let merged = store.register_core(again, at(2_000)).await.unwrap();
        assert_eq!(merged, Registered::Merged);
        let record = store.core(&key).unwrap();
        assert_eq!(record.owner, peer(9));
        assert_eq!(record.role, CoreRole::GatewayWriter);
        assert_eq!((record.priority, record.announce), (5, true));
        assert_eq!(record.first_seen, T0, "first seen is kept");
        assert_eq!(record.last_seen, at(2_000));
        assert_eq!(record.local_length, 20, "lengths survive a merge");
        assert_eq!(record.verified_blocks, 20);

        let moved = announcement(&origin, relay(7), CoreRole::Writer);
        assert!(matches!(
            store.register_core(moved, at(3_000)).await,
            Err(MirrorError::RelayMismatch { .. })
        ));
        assert_eq!(store.core(&key).unwrap().relay, relay(1));
        assert_eq!(store.cores_of_relay(&relay(7)).count(), 0);
        assert_eq!(store.cores_of_relay(&relay(1)).count(), 1);
    });
}

#[test]
fn bad_keys_and_unknown_cores_are_errors_not_panics() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut origin, _key) = setup(&tmp).await;
        // About half of all 32-byte strings are not curve points.
        let bad_key = (0u8..=255)
            .map(|n| CoreKey([n; 32]))
            .find(|k| k.verifying_key().is_none())
            .expect("some repeated byte is not a curve point");
        let mut bad = announcement(&origin, relay(1), CoreRole::Writer);
        bad.core_key = bad_key;
        assert!(matches!(
            store.register_core(bad, T0).await,
            Err(MirrorError::InvalidCoreKey(_))
        ));
        let unknown = CoreKey([9; 32]);
        let proofs = origin.export_range(0, 0..1).await.unwrap();
        assert!(matches!(
            store.store_blocks(&unknown, &proofs, T0).await,
            Err(MirrorError::UnknownCore(_))
        ));
        assert!(matches!(
            store.advertise(&unknown, 3, T0),
            Err(MirrorError::UnknownCore(_))
        ));
        assert!(matches!(
            store.read_block(&unknown, 0).await,
            Err(MirrorError::UnknownCore(_))
        ));
        assert!(matches!(
            store.len(&unknown),
            Err(MirrorError::UnknownCore(_))
        ));
        assert_eq!(store.core_count(), 1);
    });
}

//! The gateway's leased writer: appends reach the mirror verified and durable, a reopened
//! writer continues the same signed log, a worker-side replica fetches it by proofs, and the
//! leased secret is never written to the gateway's disk.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use hypergate_adapters::log::HyperLog;
use hypergate_adapters::mirror::{CoreKey, LeasedWriter, MirrorConfig, MirrorStore};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;

fn bytes_under(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(bytes_under(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn leased_appends_are_stored_verified_survive_reopen_replicate_and_keep_the_secret_off_disk() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mirror");
        let relay = RelayKey([9; 32]);
        let gateway = PeerId([1; 32]);
        let key = SigningKey::from_bytes(&[0x42; 32]);
        let now = UnixTime(1_700_000_000_000);

        let mut mirror = MirrorStore::open(&root, MirrorConfig::default())
            .await
            .unwrap();
        let mut writer = LeasedWriter::open(&mut mirror, relay, key.clone(), gateway, now)
            .await
            .unwrap();
        assert_eq!(
            writer
                .append(&mut mirror, &[b"one".to_vec()], now)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            writer
                .append(&mut mirror, &[b"two".to_vec(), b"three".to_vec()], now)
                .await
                .unwrap(),
            3
        );
        let core = CoreKey(key.verifying_key().to_bytes());
        assert_eq!(mirror.len(&core).unwrap(), 3);
        drop(writer);

        // A new lease of the same key continues the same log.
        let mut writer = LeasedWriter::open(&mut mirror, relay, key.clone(), gateway, now)
            .await
            .unwrap();
        assert_eq!(writer.len(), 3);
        assert_eq!(
            writer
                .append(&mut mirror, &[b"four".to_vec()], now)
                .await
                .unwrap(),
            4
        );
        assert_eq!(
            mirror.read_block(&core, 3).await.unwrap().unwrap(),
            b"four".to_vec()
        );

        // A worker's replica catches up from the mirror by proofs.
        let replica_dir = dir.path().join("worker-replica");
        let mut replica = HyperLog::create_replica(&replica_dir, key.verifying_key())
            .await
            .unwrap();
        let request = replica.request_range(0..4).await.unwrap();
        let proofs = mirror.answer_request(&core, &request).await.unwrap();
        replica.apply_proofs(&proofs).await.unwrap();
        assert_eq!(replica.len(), 4);
        assert_eq!(replica.get(0).await.unwrap().unwrap(), b"one".to_vec());

        // The secret key is nowhere in the gateway's files.
        drop(writer);
        drop(mirror);
        let disk = bytes_under(&root);
        assert!(!disk.is_empty());
        assert!(
            !contains(&disk, key.as_bytes()),
            "the leased secret reached the disk"
        );
    });
}

#[test]
fn a_writer_out_of_step_with_the_mirror_refuses_then_recovers_from_what_is_durable() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut mirror = MirrorStore::open(&dir.path().join("mirror"), MirrorConfig::default())
            .await
            .unwrap();
        let relay = RelayKey([9; 32]);
        let key = SigningKey::from_bytes(&[0x43; 32]);
        let now = UnixTime(1_700_000_000_000);
        let mut first = LeasedWriter::open(&mut mirror, relay, key.clone(), PeerId([1; 32]), now)
            .await
            .unwrap();
        let mut second = LeasedWriter::open(&mut mirror, relay, key, PeerId([1; 32]), now)
            .await
            .unwrap();
        first
            .append(&mut mirror, &[b"a".to_vec()], now)
            .await
            .unwrap();
        // The second signer does not know block 0: its append must not reach the mirror.
        assert!(
            second
                .append(&mut mirror, &[b"b".to_vec()], now)
                .await
                .is_err()
        );
        let core = CoreKey(*first.writer_key().as_bytes());
        assert_eq!(mirror.len(&core).unwrap(), 1);
        // Its next append starts again from the mirror: block 0 is "a", then "c".
        assert_eq!(
            second
                .append(&mut mirror, &[b"c".to_vec()], now)
                .await
                .unwrap(),
            2
        );
        assert_eq!(mirror.read_block(&core, 0).await.unwrap().unwrap(), b"a");
        assert_eq!(mirror.read_block(&core, 1).await.unwrap().unwrap(), b"c");
    });
}

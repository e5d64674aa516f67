//! Shared fixtures of the mirror store's tests: real origin logs in temp dirs.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use hypergate_adapters::log::{HyperLog, Proof};
use hypergate_adapters::mirror::{CoreAnnouncement, CoreKey, CoreRole, MirrorConfig, MirrorStore};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;

pub const T0: UnixTime = UnixTime(1_700_000_000_000);

pub fn at(ms_after_t0: u64) -> UnixTime {
    UnixTime(T0.0 + ms_after_t0)
}

pub fn relay(n: u8) -> RelayKey {
    RelayKey([n; 32])
}

pub fn peer(n: u8) -> PeerId {
    PeerId([0x50 + n; 32])
}

/// Block `i` of a test log: ~500 bytes that differ per index.
pub fn block(i: u64) -> Vec<u8> {
    let mut bytes = format!("block {i} ").into_bytes();
    bytes.resize(500, (i % 251) as u8);
    bytes
}

/// A writable origin log in `dir` holding `n` blocks.
pub async fn origin(dir: &Path, n: u64) -> HyperLog {
    let mut log = HyperLog::create(dir, None).await.unwrap();
    if n > 0 {
        let blocks: Vec<Vec<u8>> = (0..n).map(block).collect();
        log.append_batch(&blocks).await.unwrap();
    }
    log
}

pub fn key_of(log: &HyperLog) -> CoreKey {
    CoreKey::from(log.public_key())
}

pub fn announcement(log: &HyperLog, relay: RelayKey, role: CoreRole) -> CoreAnnouncement {
    CoreAnnouncement::new(key_of(log), peer(1), relay, role)
}

pub async fn open_store(root: &Path) -> MirrorStore {
    MirrorStore::open(root, MirrorConfig::default())
        .await
        .unwrap()
}

/// Proofs for every block of `origin` the mirror lacks, from where it stands.
pub async fn missing_proofs(store: &MirrorStore, origin: &mut HyperLog) -> Vec<Proof> {
    let held = store.len(&key_of(origin)).unwrap();
    origin.export_range(held, held..origin.len()).await.unwrap()
}

/// Registers `origin` for `relay` and mirrors all of it.
pub async fn mirror_fully(
    store: &mut MirrorStore,
    origin: &mut HyperLog,
    relay: RelayKey,
    role: CoreRole,
    now: UnixTime,
) {
    let _ = store
        .register_core(announcement(origin, relay, role), now)
        .await
        .unwrap();
    let proofs = missing_proofs(store, origin).await;
    let outcome = store
        .store_blocks(&key_of(origin), &proofs, now)
        .await
        .unwrap();
    assert_eq!(outcome.rejected_blocks, 0);
    assert_eq!(outcome.local_length, origin.len());
}

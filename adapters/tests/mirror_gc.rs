//! Freshness in its units, and garbage collection under a byte budget that
//! never touches a relay's protected members.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use hypergate_adapters::log::HyperLog;
use hypergate_adapters::mirror::{CoreKey, CoreRole, EvictionReason, MirrorConfig, MirrorStore};
use hypergate_core::ids::RelayKey;
use mirror_support::*;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[test]
fn lag_blocks_count_blocks_and_lag_ms_counts_milliseconds() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = open_store(&tmp.path().join("store")).await;
        let mut writer = origin(&tmp.path().join("w"), 20).await;
        let key = key_of(&writer);
        let _ = store
            .register_core(announcement(&writer, relay(1), CoreRole::Writer), T0)
            .await
            .unwrap();
        let lag = |store: &MirrorStore, now_ms: u64| {
            let record = store.core(&key).unwrap();
            (record.lag_blocks(), record.lag_ms(at(now_ms)))
        };
        assert_eq!(lag(&store, 500), (0, 0), "nothing advertised yet: in sync");

        store.advertise(&key, 20, at(1_000)).unwrap();
        assert_eq!(
            lag(&store, 5_000),
            (20, 4_000),
            "behind since the advertisement"
        );

        let proofs = writer.export_range(0, 0..20).await.unwrap();
        let _ = store
            .store_blocks(&key, &proofs[..8], at(6_000))
            .await
            .unwrap();
        assert_eq!(lag(&store, 8_000), (12, 7_000));

        let _ = store
            .store_blocks(&key, &proofs[8..], at(9_000))
            .await
            .unwrap();
        assert_eq!(lag(&store, 9_000), (0, 0));
        assert_eq!(
            lag(&store, 60_000),
            (0, 0),
            "in sync stays zero, however long"
        );
        assert_eq!(store.core(&key).unwrap().last_synced_at, Some(at(9_000)));

        // In sync until the owner advertises more.
        store.advertise(&key, 25, at(70_000)).unwrap();
        assert_eq!(lag(&store, 71_000), (5, 1_000));
        // A shorter advertisement does not shrink the target.
        store.advertise(&key, 3, at(72_000)).unwrap();
        assert_eq!(lag(&store, 72_000), (5, 2_000));
    });
}

#[test]
fn relay_freshness_sums_blocks_and_reports_the_worst_core_for_time() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = open_store(&tmp.path().join("store")).await;
        let mut a = origin(&tmp.path().join("a"), 4).await;
        let mut b = origin(&tmp.path().join("b"), 4).await;
        let mut other = origin(&tmp.path().join("c"), 4).await;
        mirror_fully(&mut store, &mut a, relay(1), CoreRole::Owner, T0).await;
        mirror_fully(&mut store, &mut b, relay(1), CoreRole::Writer, T0).await;
        mirror_fully(&mut store, &mut other, relay(2), CoreRole::Owner, T0).await;

        let fresh = store.relay_freshness(&relay(1), at(100)).unwrap();
        assert_eq!((fresh.cores, fresh.lag_blocks, fresh.lag_ms), (2, 0, 0));
        assert_eq!(fresh.last_synced_at, Some(at(100)), "in sync as of now");

        store.advertise(&key_of(&a), 7, at(1_000)).unwrap();
        store.advertise(&key_of(&b), 9, at(3_000)).unwrap();
        let fresh = store.relay_freshness(&relay(1), at(10_000)).unwrap();
        assert_eq!(fresh.lag_blocks, 3 + 5);
        assert_eq!(fresh.max_core_lag_blocks, 5);
        assert_eq!(fresh.lag_ms, 9_000, "the core behind the longest");
        assert_eq!(fresh.last_synced_at, Some(at(1_000)));
        assert_eq!(
            store
                .relay_freshness(&relay(2), at(10_000))
                .unwrap()
                .lag_blocks,
            0,
            "other relays are separate"
        );
        assert!(store.relay_freshness(&relay(3), at(10_000)).is_none());

        // A writer removed at length 4 is complete with the blocks it has.
        store.retire_core(&key_of(&b), 4, at(11_000)).unwrap();
        let fresh = store.relay_freshness(&relay(1), at(12_000)).unwrap();
        assert_eq!((fresh.lag_blocks, fresh.lag_ms), (3, 11_000));
    });
}

/// A relay's current members: owner log, five writers, the gateway writer.
struct Relay {
    key: RelayKey,
    members: Vec<HyperLog>,
}

async fn relay_with_five_writers(
    store: &mut MirrorStore,
    dir: &Path,
    key: RelayKey,
    blocks: u64,
) -> Relay {
    let mut members = Vec::new();
    let roles = [CoreRole::Owner]
        .into_iter()
        .chain([CoreRole::Writer; 5])
        .chain([CoreRole::GatewayWriter]);
    for (i, role) in roles.enumerate() {
        let mut log = origin(&dir.join(format!("{}-{i}", key.short())), blocks).await;
        mirror_fully(store, &mut log, key, role, T0).await;
        members.push(log);
    }
    Relay { key, members }
}

fn keys(logs: &[HyperLog]) -> BTreeSet<CoreKey> {
    logs.iter().map(key_of).collect()
}

/// Reopens the store at `root` with a byte budget.
async fn with_budget(store: MirrorStore, root: &Path, max_bytes: u64) -> MirrorStore {
    drop(store);
    let config = MirrorConfig {
        max_bytes,
        ..MirrorConfig::default()
    };
    MirrorStore::open(root, config).await.unwrap()
}

#[test]
fn gc_never_evicts_protected_members_so_a_relay_with_five_writers_keeps_all_five() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut store = open_store(&root).await;
        let live = relay_with_five_writers(&mut store, tmp.path(), relay(1), 10).await;
        // Cores of a relay the gateway no longer serves, at several priorities.
        let mut gone = Vec::new();
        for (i, priority) in [2u8, 0, 1].into_iter().enumerate() {
            let mut log = origin(&tmp.path().join(format!("gone{i}")), 10).await;
            let mut ann = announcement(&log, relay(9), CoreRole::Writer);
            ann.priority = priority;
            let _ = store.register_core(ann, at(i as u64)).await.unwrap();
            let proofs = log.export_range(0, 0..10).await.unwrap();
            let _ = store
                .store_blocks(&key_of(&log), &proofs, at(i as u64))
                .await
                .unwrap();
            gone.push(log);
        }
        let live_bytes: u64 = store.cores_of_relay(&live.key).map(|r| r.bytes).sum();
        let one_gone = store.core(&key_of(&gone[0])).unwrap().bytes;
        // Room for the live relay and one more core.
        let mut store = with_budget(store, &root, live_bytes + one_gone).await;

        let protected = keys(&live.members);
        assert_eq!(protected.len(), 7);
        let report = store
            .collect_garbage(&|r| protected.contains(&r.core_key), at(DAY_MS))
            .unwrap();
        assert!(report.budget_met());
        // Lowest priority first: priority 0, then 1; priority 2 stays.
        let evicted: Vec<CoreKey> = report.evicted.iter().map(|e| e.core_key).collect();
        assert_eq!(evicted, vec![key_of(&gone[1]), key_of(&gone[2])]);
        assert!(
            report
                .evicted
                .iter()
                .all(|e| e.reason == EvictionReason::Budget)
        );
        assert_eq!(report.bytes_after, live_bytes + one_gone);
        assert_eq!(store.total_bytes(), report.bytes_after);

        let kept: BTreeSet<CoreKey> = store
            .cores_of_relay(&live.key)
            .map(|r| r.core_key)
            .collect();
        assert_eq!(
            kept, protected,
            "owner, all five writers and the gateway writer stay"
        );
        let writers = store
            .cores_of_relay(&live.key)
            .filter(|r| r.role == CoreRole::Writer && r.local_length == 10)
            .count();
        assert_eq!(writers, 5);
        for log in &gone[1..] {
            let dir = root.join("cores").join(key_of(log).to_hex());
            assert!(!dir.exists(), "an evicted core's blocks are deleted");
        }
        assert_eq!(store.counters().evictions(EvictionReason::Budget), 2);
    });
}

#[test]
fn gc_reports_a_shortfall_instead_of_evicting_protected_cores() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut store = open_store(&root).await;
        let live = relay_with_five_writers(&mut store, tmp.path(), relay(1), 6).await;
        let mut spare = origin(&tmp.path().join("spare"), 6).await;
        mirror_fully(&mut store, &mut spare, relay(2), CoreRole::Writer, T0).await;
        let live_bytes: u64 = store.cores_of_relay(&live.key).map(|r| r.bytes).sum();
        let mut store = with_budget(store, &root, live_bytes / 2).await;

        let protected = keys(&live.members);
        let report = store
            .collect_garbage(&|r| protected.contains(&r.core_key), at(1))
            .unwrap();
        assert_eq!(report.evicted.len(), 1, "only the unprotected core goes");
        assert_eq!(report.evicted[0].core_key, key_of(&spare));
        let shortfall = report.shortfall.expect("the budget cannot be met");
        assert_eq!(shortfall.protected_cores, 7);
        assert_eq!(shortfall.protected_bytes, live_bytes);
        assert_eq!(shortfall.over_by, live_bytes - live_bytes / 2);
        assert_eq!(store.cores_of_relay(&live.key).count(), 7);
    });
}

#[test]
fn gc_takes_stale_cores_first_and_nothing_while_within_budget() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut store = open_store(&root).await;
        let mut logs = Vec::new();
        // (priority, announce, last seen): stale, announced-old, recent priority 0.
        let shapes = [(0u8, false, 0u64), (0, true, 0), (0, false, 9 * DAY_MS)];
        for (i, (priority, announce, seen)) in shapes.into_iter().enumerate() {
            let mut log = origin(&tmp.path().join(format!("c{i}")), 4).await;
            let mut ann = announcement(&log, relay(1), CoreRole::DriveBlobs);
            ann.priority = priority;
            ann.announce = announce;
            let _ = store.register_core(ann, at(seen)).await.unwrap();
            let proofs = log.export_range(0, 0..4).await.unwrap();
            let _ = store
                .store_blocks(&key_of(&log), &proofs, at(seen))
                .await
                .unwrap();
            logs.push(log);
        }
        let total = store.total_bytes();
        let now = at(10 * DAY_MS);
        let report = store.collect_garbage(&|_| false, now).unwrap();
        assert!(report.evicted.is_empty(), "within budget nothing goes");

        let mut store = with_budget(store, &root, total - 1).await;
        let report = store.collect_garbage(&|_| false, now).unwrap();
        assert_eq!(report.evicted.len(), 1);
        assert_eq!(report.evicted[0].core_key, key_of(&logs[0]));
        assert_eq!(report.evicted[0].reason, EvictionReason::Stale);
        assert_eq!(store.counters().evictions(EvictionReason::Stale), 1);
        assert_eq!(
            store.config().stale_core_ttl,
            Duration::from_millis(7 * DAY_MS)
        );
    });
}

#[test]
fn evicted_and_removed_cores_stay_gone_after_restart() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let mut store = open_store(&root).await;
        let mut a = origin(&tmp.path().join("a"), 3).await;
        let mut b = origin(&tmp.path().join("b"), 3).await;
        let mut c = origin(&tmp.path().join("c"), 3).await;
        mirror_fully(&mut store, &mut a, relay(1), CoreRole::Writer, T0).await;
        mirror_fully(&mut store, &mut b, relay(1), CoreRole::Writer, at(1)).await;
        mirror_fully(&mut store, &mut c, relay(1), CoreRole::Writer, at(2)).await;

        let removed = store.remove_core(&key_of(&c)).unwrap();
        assert_eq!(removed.reason, EvictionReason::Removed);
        let one = store.core(&key_of(&a)).unwrap().bytes;
        let mut store = with_budget(store, &root, one).await;
        let report = store.collect_garbage(&|_| false, at(3)).unwrap();
        // Same priority: the least recently seen goes.
        assert_eq!(report.evicted.len(), 1);
        assert_eq!(report.evicted[0].core_key, key_of(&a));
        drop(store);

        let mut store = open_store(&root).await;
        assert!(store.quarantined().is_empty(), "no leftovers to quarantine");
        let left: Vec<CoreKey> = store.cores().map(|r| r.core_key).collect();
        assert_eq!(left, vec![key_of(&b)]);
        assert_eq!(store.counters().evictions(EvictionReason::Removed), 1);
        assert_eq!(store.counters().evictions(EvictionReason::Budget), 1);
        assert_eq!(
            store.read_block(&key_of(&b), 2).await.unwrap(),
            Some(block(2))
        );
        // A removed core can be mirrored again from scratch.
        mirror_fully(&mut store, &mut c, relay(1), CoreRole::Writer, at(4)).await;
        assert_eq!(store.len(&key_of(&c)).unwrap(), 3);
    });
}

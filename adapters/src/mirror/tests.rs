//! Unit tests of the pure parts: lag arithmetic and the GC plan.

use std::collections::BTreeSet;
use std::time::Duration;

use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;
use proptest::prelude::*;

use super::gc::plan;
use super::*;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn record(n: u8, priority: u8, announce: bool, last_seen: u64, bytes: u64) -> CoreRecord {
    let mut announcement = CoreAnnouncement::new(
        CoreKey([n; 32]),
        PeerId([1; 32]),
        RelayKey([2; 32]),
        CoreRole::Writer,
    );
    announcement.priority = priority;
    announcement.announce = announce;
    let mut record = CoreRecord::new(&announcement, UnixTime(0));
    record.last_seen = UnixTime(last_seen);
    record.bytes = bytes;
    record
}

fn keys(report: &GcReport) -> Vec<u8> {
    report.evicted.iter().map(|e| e.core_key.0[0]).collect()
}

#[test]
fn lag_blocks_counts_blocks_and_lag_ms_counts_milliseconds_since_last_sync() {
    let mut r = record(1, 1, false, 0, 0);
    r.first_seen = UnixTime(1_000);
    assert_eq!((r.lag_blocks(), r.lag_ms(UnixTime(5_000))), (0, 0));
    r.remote_length = 10;
    // Never synced: behind since first seen.
    assert_eq!(r.lag_blocks(), 10);
    assert_eq!(r.lag_ms(UnixTime(5_000)), 4_000);
    r.last_synced_at = Some(UnixTime(3_000));
    r.local_length = 4;
    assert_eq!(r.lag_blocks(), 6);
    assert_eq!(r.lag_ms(UnixTime(5_000)), 2_000);
    // A clock that went backwards gives zero, not an underflow.
    assert_eq!(r.lag_ms(UnixTime(100)), 0);
    // A retired core only needs the blocks below its final length.
    r.final_length = Some(4);
    assert_eq!((r.lag_blocks(), r.lag_ms(UnixTime(5_000))), (0, 0));
}

#[test]
fn a_core_is_stale_only_unannounced_at_priority_zero_past_the_ttl() {
    let ttl = Duration::from_millis(7 * DAY_MS);
    let now = UnixTime(10 * DAY_MS);
    assert!(record(1, 0, false, 2 * DAY_MS, 1).is_stale(ttl, now));
    assert!(
        !record(1, 0, false, 3 * DAY_MS, 1).is_stale(ttl, now),
        "exactly at the TTL"
    );
    assert!(!record(1, 1, false, 0, 1).is_stale(ttl, now));
    assert!(!record(1, 0, true, 0, 1).is_stale(ttl, now));
}

#[test]
fn gc_plan_takes_stale_first_then_lowest_priority_then_least_recently_seen() {
    let ttl = Duration::from_millis(7 * DAY_MS);
    let now = UnixTime(30 * DAY_MS);
    let records = [
        record(1, 2, false, 29 * DAY_MS, 100), // high priority, recent
        record(2, 0, false, DAY_MS, 100),      // stale, oldest
        record(3, 1, false, 20 * DAY_MS, 100), // priority 1, older
        record(4, 1, false, 28 * DAY_MS, 100), // priority 1, newer
        record(5, 0, false, 2 * DAY_MS, 100),  // stale
        record(6, 0, true, DAY_MS, 100),       // announced: not stale, priority 0
    ];
    let all = plan(&records, &|_| false, 0, ttl, now);
    assert_eq!(keys(&all), vec![2, 5, 6, 3, 4, 1]);
    assert_eq!(all.evicted[0].reason, EvictionReason::Stale);
    assert_eq!(all.evicted[2].reason, EvictionReason::Budget);

    // Only as much as the budget needs.
    let some = plan(&records, &|_| false, 350, ttl, now);
    assert_eq!(keys(&some), vec![2, 5, 6]);
    assert_eq!(some.bytes_after, 300);
    assert!(some.budget_met());

    let none = plan(&records, &|_| false, 600, ttl, now);
    assert!(none.evicted.is_empty() && none.budget_met());
    let roomy = plan(&records, &|_| false, u64::MAX, ttl, now);
    assert!(roomy.evicted.is_empty() && roomy.budget_met());
    assert_eq!(roomy.bytes_after, 600);
}

#[test]
fn gc_plan_reports_a_shortfall_instead_of_evicting_protected_cores() {
    let now = UnixTime(30 * DAY_MS);
    let records = [
        record(1, 0, false, 0, 500),
        record(2, 0, false, 0, 500),
        record(3, 5, false, 0, 100),
    ];
    let protected: BTreeSet<u8> = [1, 2].into();
    let report = plan(
        &records,
        &|r| protected.contains(&r.core_key.0[0]),
        600,
        Duration::from_millis(DAY_MS),
        now,
    );
    assert_eq!(keys(&report), vec![3]);
    assert_eq!(
        report.shortfall,
        Some(BudgetShortfall {
            over_by: 400,
            protected_cores: 2,
            protected_bytes: 1000
        })
    );
}

proptest! {
    #[test]
    fn gc_plan_never_evicts_a_protected_core_and_stops_once_within_budget(
        cores in proptest::collection::vec((0u8..3, any::<bool>(), 0u64..40, 1u64..1000, any::<bool>()), 0..40),
        max_bytes in 0u64..20_000,
    ) {
        let records: Vec<CoreRecord> = cores
            .iter()
            .enumerate()
            .map(|(i, (priority, announce, seen_day, bytes, _))| {
                record(i as u8, *priority, *announce, seen_day * DAY_MS, *bytes)
            })
            .collect();
        let protected: BTreeSet<u8> = cores
            .iter()
            .enumerate()
            .filter(|(_, c)| c.4)
            .map(|(i, _)| i as u8)
            .collect();
        let report = plan(
            &records,
            &|r| protected.contains(&r.core_key.0[0]),
            max_bytes,
            Duration::from_millis(7 * DAY_MS),
            UnixTime(40 * DAY_MS),
        );
        for eviction in &report.evicted {
            prop_assert!(!protected.contains(&eviction.core_key.0[0]));
        }
        let freed: u64 = report.evicted.iter().map(|e| e.bytes).sum();
        prop_assert_eq!(report.bytes_after, report.bytes_before - freed);
        // Every eviction but the last was needed: before it, usage was over budget.
        if let Some(last) = report.evicted.last() {
            prop_assert!(report.bytes_after + last.bytes > max_bytes);
        }
        prop_assert_eq!(report.shortfall.is_some(), report.bytes_after > max_bytes);
        if report.shortfall.is_some() {
            prop_assert_eq!(report.evicted.len(), records.len() - protected.len());
        }
    }
}

#[test]
fn the_store_and_its_futures_can_move_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_type<T: Send>() {}
    assert_send_type::<MirrorStore>();
    assert_send_type::<MirrorError>();
    // Futures of the async methods, never polled: a tokio gateway spawns them.
    let tmp = tempfile::tempdir().unwrap();
    let open = MirrorStore::open(tmp.path(), MirrorConfig::default());
    assert_send(&open);
    let mut store = smol::block_on(open).unwrap();
    let key = CoreKey([3; 32]);
    assert_send(&store.store_blocks(&key, &[], UnixTime(0)));
    assert_send(&store.export_blocks(&key, 0, 0..0));
    assert_send(&store.read_block(&key, 0));
    let announcement =
        CoreAnnouncement::new(key, PeerId([1; 32]), RelayKey([2; 32]), CoreRole::Writer);
    assert_send(&store.register_core(announcement, UnixTime(0)));
}

#[test]
fn an_unreadable_inventory_record_is_dropped_and_its_directory_quarantined() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let public = hypercore::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let key = CoreKey::from(public);
        let mut store = MirrorStore::open(tmp.path(), MirrorConfig::default())
            .await
            .unwrap();
        let announcement =
            CoreAnnouncement::new(key, PeerId([1; 32]), RelayKey([2; 32]), CoreRole::Writer);
        let _ = store
            .register_core(announcement, UnixTime(5))
            .await
            .unwrap();
        drop(store);

        let db = redb::Database::create(tmp.path().join(INVENTORY_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(inventory::CORES)
            .unwrap()
            .insert(key.as_bytes(), [1u8, 0xff, 0xff].as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);

        let store = MirrorStore::open(tmp.path(), MirrorConfig::default())
            .await
            .unwrap();
        assert_eq!(store.core_count(), 0);
        let [orphan] = store.quarantined() else {
            panic!(
                "expected one quarantined directory: {:?}",
                store.quarantined()
            );
        };
        assert_eq!(
            (orphan.core_key, &orphan.cause),
            (key, &QuarantineCause::Orphan)
        );
        drop(store);
        let store = MirrorStore::open(tmp.path(), MirrorConfig::default())
            .await
            .unwrap();
        assert!(
            store.quarantined().is_empty(),
            "the bad record is gone for good"
        );
    });
}

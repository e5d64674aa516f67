//! The relay index's storage contract: batches are atomic (even when the process is killed
//! mid-write), changes are idempotent, limits and the scan cap behave as documented, and files
//! that are not a readable index give errors, not panics.

// Helpers outside `#[test]` functions unwrap too: in a test, a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use hypergate_adapters::index::{FORMAT_VERSION, IndexChange, IndexError, QueryLimits, RelayIndex};
use hypergate_core::nostr::{Event, EventId, Filter, Kind, PublicKey, Signature, Tag};

fn event(n: u32, created_at: u64) -> Event {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&n.to_be_bytes());
    Event {
        id: EventId(id),
        pubkey: PublicKey([(n % 3) as u8; 32]),
        created_at,
        kind: Kind(1),
        tags: vec![Tag::new(["t", "all"])],
        content: format!("event {n}"),
        sig: Signature([7; 64]),
    }
}

fn inserts(events: &[Event]) -> Vec<IndexChange> {
    events.iter().cloned().map(IndexChange::Insert).collect()
}

fn unlimited() -> QueryLimits {
    QueryLimits {
        default_limit: usize::MAX,
        max_limit: usize::MAX,
        scan_cap: usize::MAX,
    }
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|event| event.id).collect()
}

#[test]
fn events_read_back_equal_to_what_was_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = RelayIndex::open(dir.path().join("index.redb")).unwrap();
    assert!(index.is_empty().unwrap());
    let mut stored = event(1, 10);
    stored.tags = vec![
        Tag::new(["e", "x", "wss://r"]),
        Tag::default(),
        Tag::new(["d", ""]),
    ];
    stored.content = "multi\nline ✓ \u{0}".to_owned();
    index
        .apply(&inserts(std::slice::from_ref(&stored)))
        .unwrap();
    assert_eq!(index.get(&stored.id).unwrap(), Some(stored.clone()));
    assert_eq!(index.get(&EventId([0xee; 32])).unwrap(), None);
    assert_eq!(index.len().unwrap(), 1);
}

#[test]
fn re_inserting_a_present_event_and_removing_an_absent_one_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = RelayIndex::open(dir.path().join("index.redb")).unwrap();
    let events = [event(1, 10), event(2, 20)];
    index.apply(&inserts(&events)).unwrap();
    index.apply(&inserts(&events)).unwrap();
    index
        .apply(&[IndexChange::Remove(EventId([0xee; 32]))])
        .unwrap();
    assert_eq!(index.len().unwrap(), 2);
    let all = index.query(&Filter::default(), &unlimited()).unwrap();
    assert_eq!(ids(&all.events), vec![events[1].id, events[0].id]);
}

#[test]
fn changes_of_one_batch_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = RelayIndex::open(dir.path().join("index.redb")).unwrap();
    let (a, b) = (event(1, 10), event(2, 20));
    index
        .apply(&[
            IndexChange::Insert(a.clone()),
            IndexChange::Remove(a.id),
            IndexChange::Remove(b.id),
            IndexChange::Insert(b.clone()),
        ])
        .unwrap();
    assert_eq!(index.get(&a.id).unwrap(), None);
    let by_tag = Filter {
        tags: [('t', BTreeSet::from(["all".to_owned()]))].into(),
        ..Filter::default()
    };
    assert_eq!(
        ids(&index.query(&by_tag, &unlimited()).unwrap().events),
        vec![b.id]
    );
}

#[test]
fn limit_defaults_to_default_limit_and_is_capped_by_max_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = RelayIndex::open(dir.path().join("index.redb")).unwrap();
    let events: Vec<Event> = (0..20).map(|n| event(n, 100 + u64::from(n))).collect();
    index.apply(&inserts(&events)).unwrap();
    let limits = QueryLimits {
        default_limit: 5,
        max_limit: 8,
        scan_cap: 1_000,
    };
    let newest: Vec<EventId> = events.iter().rev().map(|event| event.id).collect();
    let none = index.query(&Filter::default(), &limits).unwrap();
    assert_eq!(ids(&none.events), newest[..5]);
    let big = Filter {
        limit: Some(u64::MAX),
        ..Filter::default()
    };
    assert_eq!(
        ids(&index.query(&big, &limits).unwrap().events),
        newest[..8]
    );
    let zero = Filter {
        limit: Some(0),
        ..Filter::default()
    };
    assert!(index.query(&zero, &limits).unwrap().events.is_empty());
}

#[test]
fn scan_cap_truncation_is_reported_only_when_entries_were_left_unexamined() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = RelayIndex::open(dir.path().join("index.redb")).unwrap();
    // Ten events, of which only the oldest is kind 7.
    let mut events: Vec<Event> = (0..10).map(|n| event(n, 100 + u64::from(n))).collect();
    events[0].kind = Kind(7);
    index.apply(&inserts(&events)).unwrap();
    // Planned on the time index (no author, kind or tag condition that selects it).
    let oldest_kind_7 = Filter {
        kinds: Some(BTreeSet::from([Kind(7)])),
        ..Filter::default()
    };
    let all = Filter::default();
    let cap = |scan_cap| QueryLimits {
        scan_cap,
        ..unlimited()
    };
    let short = index.query(&all, &cap(9)).unwrap();
    assert!(short.truncated_by_scan_cap);
    assert_eq!(short.events.len(), 9);
    let exact = index.query(&all, &cap(10)).unwrap();
    assert!(!exact.truncated_by_scan_cap);
    assert_eq!(exact.events.len(), 10);
    // The kind index holds one kind-7 entry: one examined entry answers it.
    let kind_7 = index.query(&oldest_kind_7, &cap(1)).unwrap();
    assert_eq!(
        (ids(&kind_7.events), kind_7.truncated_by_scan_cap),
        (vec![events[0].id], false)
    );
    // The cap is shared by every filter of one REQ.
    let two = index.query_many(&[all.clone(), all], &cap(15)).unwrap();
    assert!(two.truncated_by_scan_cap);
    assert_eq!(two.events.len(), 10);
}

#[test]
fn compaction_keeps_every_event_and_shrinks_the_file_after_removals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let mut index = RelayIndex::open(&path).unwrap();
    let mut events: Vec<Event> = (0..2_000).map(|n| event(n, u64::from(n))).collect();
    for event in &mut events {
        event.content = "x".repeat(1_000);
    }
    index.apply(&inserts(&events)).unwrap();
    let removals: Vec<IndexChange> = events[..1_500]
        .iter()
        .map(|event| IndexChange::Remove(event.id))
        .collect();
    index.apply(&removals).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let kept = index.query(&Filter::default(), &unlimited()).unwrap();
    assert!(index.compact().unwrap());
    assert!(std::fs::metadata(&path).unwrap().len() < before);
    assert_eq!(index.query(&Filter::default(), &unlimited()).unwrap(), kept);
    assert_eq!(kept.events.len(), 500);
}

#[test]
fn the_index_can_be_shared_by_threads_and_the_feed_moved_between_them() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<RelayIndex>();
    send::<hypergate_adapters::index::LiveFeed>();
    send::<hypergate_adapters::index::LiveReceiver>();
}

#[test]
fn a_file_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    drop(RelayIndex::open(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx
                .open_table(redb::TableDefinition::<&str, u32>::new("meta"))
                .unwrap();
            meta.insert("format_version", FORMAT_VERSION + 1).unwrap();
        }
        tx.commit().unwrap();
    }
    match RelayIndex::open(&path) {
        Err(IndexError::UnsupportedFormat { found, expected }) => {
            assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_an_index_gives_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    assert!(matches!(
        RelayIndex::open(&path),
        Err(IndexError::Storage { .. })
    ));
}

#[test]
fn a_file_already_open_in_this_process_gives_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let _first = RelayIndex::open(&path).unwrap();
    assert!(matches!(
        RelayIndex::open(&path),
        Err(IndexError::Storage { .. })
    ));
}

#[test]
fn an_undecodable_record_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let victim = event(1, 10);
    {
        let mut index = RelayIndex::open(&path).unwrap();
        index
            .apply(&inserts(&[victim.clone(), event(2, 20)]))
            .unwrap();
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut events = tx
                .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("events"))
                .unwrap();
            events
                .insert(victim.id.as_bytes().as_slice(), [1u8, 2, 3].as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let index = RelayIndex::open(&path).unwrap();
    assert!(matches!(index.get(&victim.id), Err(IndexError::Corrupt(_))));
    assert!(matches!(
        index.query(&Filter::default(), &unlimited()),
        Err(IndexError::Corrupt(_))
    ));
}

/// Events per batch in the crash test; every batch carries a new `created_at` so that the
/// surviving batches can be recognised.
const CRASH_BATCH: u32 = 200;

/// Applies batches to `dir`'s index until killed (run by the crash test in a child process).
#[test]
#[ignore = "child process of apply_is_all_or_nothing_when_the_process_is_killed"]
fn crash_child_applies_batches_until_killed() {
    let Some(path) = std::env::var_os("INDEX_CRASH_PATH") else {
        return;
    };
    let mut index = RelayIndex::open(Path::new(&path)).unwrap();
    for batch in 0u32.. {
        let events: Vec<Event> = (0..CRASH_BATCH)
            .map(|n| {
                let mut event = event(batch * CRASH_BATCH + n, u64::from(batch));
                event.content = "x".repeat(2_000);
                event
            })
            .collect();
        index.apply(&inserts(&events)).unwrap();
    }
}

#[test]
fn apply_is_all_or_nothing_when_the_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    for kill_after_ms in [150, 400, 700] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_applies_batches_until_killed",
                "--ignored",
                "--test-threads=1",
            ])
            .env("INDEX_CRASH_PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill().unwrap();
        child.wait().unwrap();

        let index = RelayIndex::open(&path).unwrap();
        let all = index
            .query(&Filter::default(), &unlimited())
            .unwrap()
            .events;
        let count = all.len() as u32;
        assert_eq!(index.len().unwrap(), u64::from(count));
        assert_eq!(
            count % CRASH_BATCH,
            0,
            "a partial batch survived: {count} events"
        );
        // Every surviving batch is whole, and every secondary index agrees with the time index.
        for batch in 0..u64::from(count / CRASH_BATCH) {
            let in_batch = Filter {
                since: Some(batch),
                until: Some(batch),
                tags: [('t', BTreeSet::from(["all".to_owned()]))].into(),
                ..Filter::default()
            };
            let found = index.query(&in_batch, &unlimited()).unwrap().events;
            assert_eq!(found.len() as u32, CRASH_BATCH, "batch {batch}");
        }
        eprintln!("killed after {kill_after_ms} ms: {count} events in whole batches");
    }
}

#[test]
fn a_scratch_index_skipping_fsyncs_serves_every_commit_across_its_durable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = RelayIndex::open_scratch(dir.path().join("scratch.redb")).unwrap();
    let count = hypergate_adapters::index::SCRATCH_SYNC_EVERY * 3 + 5;
    let events: Vec<Event> = (0..count).map(|n| event(n, u64::from(n))).collect();
    for (n, one) in events.iter().enumerate() {
        index.apply(&inserts(std::slice::from_ref(one))).unwrap();
        assert_eq!(index.len().unwrap(), n as u64 + 1);
    }
    index.apply(&[IndexChange::Remove(events[0].id)]).unwrap();
    assert_eq!(index.get(&events[0].id).unwrap(), None);
    assert_eq!(index.get(&events[1].id).unwrap(), Some(events[1].clone()));
    assert_eq!(index.len().unwrap(), u64::from(count) - 1);
}

use std::collections::BTreeMap;

use hypercore::SigningKey;
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::nostr::{Event, EventId};
use hypergate_core::relay::{RelayOp, ViewChange, WriterKey};

use super::*;
use crate::log::HyperLog;

fn signed(secret: u8, created_at: u64, kind: u16, content: &str) -> Event {
    signed_event(secret, created_at, kind, Vec::new(), content)
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

/// Applies changes to a plain map, the way an index would.
fn apply(index: &mut BTreeMap<EventId, Event>, changes: &[ViewChange]) {
    for change in changes {
        match change {
            ViewChange::Added(event) => {
                assert!(index.insert(event.id, event.clone()).is_none());
            }
            ViewChange::Removed(id) => {
                assert!(index.remove(id).is_some());
            }
        }
    }
}

#[test]
fn events_appended_by_a_member_reach_the_view_and_replacements_are_reported() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs = RelayLogs::create(tmp.path(), key(1)).await.unwrap();
        let writer = logs.add_local_writer(key(2)).await.unwrap();
        let note = signed(9, 10, 1, "hello");
        let profile_old = signed(9, 10, 0, "old profile");
        logs.append_events(&writer, &[note.clone(), profile_old.clone()])
            .await
            .unwrap();

        let mut reader = RelayReader::new(logs.relay_key());
        let mut index = BTreeMap::new();
        let first = reader.catch_up(&mut logs).await.unwrap();
        apply(&mut index, &first.changes);
        assert_eq!(index.len(), 2);
        assert_eq!(first.entries_read, 3); // AddWriter + 2 events

        let profile_new = signed(9, 20, 0, "new profile");
        logs.append_events(&writer, std::slice::from_ref(&profile_new))
            .await
            .unwrap();
        let second = reader.catch_up(&mut logs).await.unwrap();
        assert_eq!(second.entries_read, 1);
        apply(&mut index, &second.changes);
        assert!(index.contains_key(&profile_new.id));
        assert!(!index.contains_key(&profile_old.id));
        assert_eq!(
            index.keys().copied().collect::<Vec<_>>(),
            reader.view().visible_ids()
        );
        assert_eq!(reader.stats().events_ingested, 3);
    });
}

#[test]
fn an_entry_that_is_not_a_correctly_signed_event_is_skipped_and_counted() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs = RelayLogs::create(tmp.path(), key(1)).await.unwrap();
        let writer = logs.add_local_writer(key(2)).await.unwrap();
        let mut forged = signed(9, 10, 1, "forged");
        forged.content = "changed after signing".to_owned();
        let good = signed(9, 11, 1, "good");
        let log = logs.writer_log(&writer).await.unwrap();
        log.append(&RelayOp::event(&forged).unwrap().encode())
            .await
            .unwrap();
        log.append(b"not an op").await.unwrap();
        log.append(&RelayOp::event(&good).unwrap().encode())
            .await
            .unwrap();

        let mut reader = RelayReader::new(logs.relay_key());
        let outcome = reader.catch_up(&mut logs).await.unwrap();
        assert_eq!(outcome.changes.len(), 1);
        assert_eq!(reader.view().visible_ids(), vec![good.id]);
        assert_eq!(reader.stats().invalid_entries, 2);
    });
}

#[test]
fn a_removed_writer_counts_only_up_to_its_final_length() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs = RelayLogs::create(tmp.path(), key(1)).await.unwrap();
        let writer = logs.add_local_writer(key(2)).await.unwrap();
        let events: Vec<Event> = (0..5).map(|i| signed(9, 10 + i, 1, "n")).collect();
        logs.append_events(&writer, &events).await.unwrap();
        logs.remove_writer(writer, 3).await.unwrap();

        let mut reader = RelayReader::new(logs.relay_key());
        let outcome = reader.catch_up(&mut logs).await.unwrap();
        assert!(!outcome.rebuilt);
        let expected: Vec<EventId> = {
            let mut ids: Vec<EventId> = events[..3].iter().map(|e| e.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(reader.view().visible_ids(), expected);
    });
}

#[test]
fn a_removal_below_what_was_read_rebuilds_and_reports_the_exact_difference() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs = RelayLogs::create(tmp.path(), key(1)).await.unwrap();
        let kept_writer = logs.add_local_writer(key(2)).await.unwrap();
        let cut_writer = logs.add_local_writer(key(3)).await.unwrap();
        let kept = signed(8, 5, 1, "kept");
        logs.append_events(&kept_writer, std::slice::from_ref(&kept))
            .await
            .unwrap();
        let events: Vec<Event> = (0..4).map(|i| signed(9, 10 + i, 1, "n")).collect();
        logs.append_events(&cut_writer, &events).await.unwrap();

        let mut reader = RelayReader::new(logs.relay_key());
        let mut index = BTreeMap::new();
        apply(
            &mut index,
            &reader.catch_up(&mut logs).await.unwrap().changes,
        );
        assert_eq!(index.len(), 5);

        logs.remove_writer(cut_writer, 1).await.unwrap();
        let outcome = reader.catch_up(&mut logs).await.unwrap();
        assert!(outcome.rebuilt);
        apply(&mut index, &outcome.changes);
        let mut expected = vec![kept.id, events[0].id];
        expected.sort();
        assert_eq!(index.keys().copied().collect::<Vec<_>>(), expected);
        assert_eq!(reader.view().visible_ids(), expected);
        assert_eq!(reader.stats().rebuilds, 1);
    });
}

#[test]
fn gateway_writer_blocks_imported_as_verified_proofs_reach_the_view() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs = RelayLogs::create(&tmp.path().join("relay"), key(1))
            .await
            .unwrap();
        // The gateway writes under a leased key in its own log.
        let gateway_key = key(4);
        let gateway_writer = WriterKey(gateway_key.verifying_key().to_bytes());
        let mut gateway_log = HyperLog::create(&tmp.path().join("gw"), Some(gateway_key))
            .await
            .unwrap();
        let offline_note = signed(9, 30, 1, "written while the worker was away");
        gateway_log
            .append(&RelayOp::event(&offline_note).unwrap().encode())
            .await
            .unwrap();

        logs.add_remote_writer(gateway_writer).await.unwrap();
        let mut reader = RelayReader::new(logs.relay_key());
        assert!(reader.catch_up(&mut logs).await.unwrap().changes.is_empty());

        let proofs = gateway_log.export_range(0, 0..1).await.unwrap();
        let held = logs
            .import_writer_proofs(&gateway_writer, &proofs)
            .await
            .unwrap();
        assert_eq!(held, 1);
        let outcome = reader.catch_up(&mut logs).await.unwrap();
        assert_eq!(outcome.changes.len(), 1);
        assert_eq!(reader.view().visible_ids(), vec![offline_note.id]);
    });
}

#[test]
fn reopened_logs_rebuild_the_same_view() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let relay;
        let digest;
        {
            let mut logs = RelayLogs::create(tmp.path(), key(1)).await.unwrap();
            let writer = logs.add_local_writer(key(2)).await.unwrap();
            let events: Vec<Event> = (0..6).map(|i| signed(9, i, 1, "n")).collect();
            logs.append_events(&writer, &events).await.unwrap();
            relay = logs.relay_key();
            let mut reader = RelayReader::new(relay);
            let _ = reader.catch_up(&mut logs).await.unwrap();
            digest = reader.view().digest();
        }
        let mut logs = RelayLogs::open(tmp.path()).await.unwrap();
        assert_eq!(logs.relay_key(), relay);
        assert_eq!(logs.local_writers().unwrap().len(), 1);
        let mut reader = RelayReader::new(relay);
        let _ = reader.catch_up(&mut logs).await.unwrap();
        assert_eq!(reader.view().digest(), digest);
    });
}

#[test]
fn an_indexed_relay_answers_filters_and_feeds_live_subscribers_as_entries_land() {
    use crate::index::{LiveMessage, QueryLimits};
    use hypergate_core::nostr::Filter;

    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs = RelayLogs::create(&tmp.path().join("relay"), key(1))
            .await
            .unwrap();
        let writer = logs.add_local_writer(key(2)).await.unwrap();
        let old_profile = signed(9, 10, 0, "old");
        let notes: Vec<Event> = (0..3).map(|i| signed(9, 20 + i, 1, "note")).collect();
        logs.append_events(&writer, &notes).await.unwrap();
        logs.append_events(&writer, std::slice::from_ref(&old_profile))
            .await
            .unwrap();

        let mut relay =
            IndexedRelay::create(logs.relay_key(), &tmp.path().join("index.redb"), 16).unwrap();
        let refreshed = relay.catch_up(&mut logs).await.unwrap();
        assert_eq!(refreshed.added, 4);

        let kind1 = Filter::parse_json(r#"{"kinds":[1],"limit":2}"#).unwrap();
        let answer = relay
            .query(std::slice::from_ref(&kind1), &QueryLimits::default())
            .unwrap();
        let ids: Vec<EventId> = answer.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![notes[2].id, notes[1].id], "newest first, limited");

        let (_, live) = relay.subscribe(vec![Filter::parse_json(r#"{"kinds":[0]}"#).unwrap()]);
        let new_profile = signed(9, 30, 0, "new");
        logs.append_events(&writer, std::slice::from_ref(&new_profile))
            .await
            .unwrap();
        let refreshed = relay.catch_up(&mut logs).await.unwrap();
        assert_eq!((refreshed.added, refreshed.removed), (1, 1));
        match live.try_recv() {
            Some(LiveMessage::Event(event)) => assert_eq!(event.id, new_profile.id),
            other => panic!("expected the new profile live, got {other:?}"),
        }
        let profiles = relay
            .query(
                &[Filter::parse_json(r#"{"kinds":[0]}"#).unwrap()],
                &QueryLimits::default(),
            )
            .unwrap();
        assert_eq!(
            profiles.events.len(),
            1,
            "the replaced profile left the index"
        );
        assert_eq!(profiles.events[0].id, new_profile.id);
    });
}

//! A relay written by a worker, mirrored into the gateway's mirror store through
//! verified proofs, reads back as the same view: the gateway's replica reads see
//! exactly what the worker serves.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use hypercore::SigningKey;
use hypergate_adapters::mirror::{CoreAnnouncement, CoreKey, CoreRole, MirrorConfig, MirrorStore};
use hypergate_adapters::relay::{RelayLogs, RelayReader, ReplicaViews, owner_log_key};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::nostr::Event;
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::relay::WriterKey;
use hypergate_core::time::UnixTime;

fn signed(secret: u8, created_at: u64, kind: u16, content: &str) -> Event {
    signed_event(secret, created_at, kind, Vec::new(), content)
}

/// Mirrors every block of `key`'s log from the worker's relay logs into `mirror`.
async fn mirror_log(
    logs: &mut RelayLogs,
    mirror: &mut MirrorStore,
    key: WriterKey,
    role: CoreRole,
) {
    let relay = logs.relay_key();
    let core = CoreKey(*key.as_bytes());
    let now = UnixTime(1_000);
    let _ = mirror
        .register_core(
            CoreAnnouncement::new(core, PeerId([9; 32]), relay, role),
            now,
        )
        .await
        .unwrap();
    let log = if key == owner_log_key(&relay) {
        logs.owner_log()
    } else {
        logs.writer_log(&key).await.unwrap()
    };
    let held = mirror.len(&core).unwrap();
    let proofs = log.export_range(held, held..log.len()).await.unwrap();
    mirror.advertise(&core, log.len(), now).unwrap();
    let outcome = mirror.store_blocks(&core, &proofs, now).await.unwrap();
    assert_eq!(outcome.rejected_blocks, 0);
}

#[test]
fn a_mirrored_relay_reads_back_as_the_workers_view_and_follows_new_blocks() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut logs =
            RelayLogs::create(&tmp.path().join("worker"), SigningKey::from_bytes(&[1; 32]))
                .await
                .unwrap();
        let relay = logs.relay_key();
        let writer = logs
            .add_local_writer(SigningKey::from_bytes(&[2; 32]))
            .await
            .unwrap();
        let events: Vec<Event> = (0..20)
            .map(|i| signed(7, 100 + i, if i % 5 == 0 { 0 } else { 1 }, "note"))
            .collect();
        logs.append_events(&writer, &events).await.unwrap();

        let mut worker_reader = RelayReader::new(relay);
        let _ = worker_reader.catch_up(&mut logs).await.unwrap();

        let mut mirror = MirrorStore::open(&tmp.path().join("mirror"), MirrorConfig::default())
            .await
            .unwrap();
        mirror_log(
            &mut logs,
            &mut mirror,
            owner_log_key(&relay),
            CoreRole::Owner,
        )
        .await;
        mirror_log(&mut logs, &mut mirror, writer, CoreRole::Writer).await;

        let mut views = ReplicaViews::new(2);
        let (view, _) = views.refresh(relay, &mut mirror).await.unwrap();
        assert_eq!(view.view().digest(), worker_reader.view().digest());
        assert_eq!(view.stats().invalid_entries, 0);

        // New blocks on the worker, mirrored: the open view follows incrementally.
        let later = signed(7, 500, 1, "later");
        logs.append_events(&writer, std::slice::from_ref(&later))
            .await
            .unwrap();
        mirror_log(&mut logs, &mut mirror, writer, CoreRole::Writer).await;
        let (view, outcome) = views.refresh(relay, &mut mirror).await.unwrap();
        assert_eq!(outcome.entries_read, 1);
        assert!(view.view().get(&later.id).is_some());
    });
}

#[test]
fn the_least_recently_used_view_is_closed_when_the_set_is_full() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut mirror = MirrorStore::open(&tmp.path().join("mirror"), MirrorConfig::default())
            .await
            .unwrap();
        let mut views = ReplicaViews::new(2);
        let relays: Vec<RelayKey> = (1..=3).map(|b| RelayKey([b; 32])).collect();
        let _ = views.refresh(relays[0], &mut mirror).await.unwrap();
        let _ = views.refresh(relays[1], &mut mirror).await.unwrap();
        let _ = views.refresh(relays[0], &mut mirror).await.unwrap();
        let _ = views.refresh(relays[2], &mut mirror).await.unwrap();
        assert_eq!(views.len(), 2);
        assert!(views.get(&relays[0]).is_some());
        assert!(
            views.get(&relays[1]).is_none(),
            "least recently used is closed"
        );
        assert!(views.get(&relays[2]).is_some());
        assert_eq!(views.churn(), (3, 1));
    });
}

use std::path::Path;
use std::time::Instant;

use hypercore::SigningKey;
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::nostr::{Event, SignatureVerifier};
use hypergate_core::session::{Session, SessionConfig};

use super::*;

fn now() -> Instant {
    Instant::now()
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

fn conn() -> HostedSession {
    HostedSession::new(Session::new(
        SessionConfig::default(),
        SignatureVerifier::new(),
    ))
}

/// A new relay in `dir` with a local writer; the host writes with it when `writable`.
async fn host_in(dir: &Path, writable: bool) -> (RelayHost<RelayLogs>, WriterKey) {
    let mut logs = RelayLogs::create(dir, key(1)).await.unwrap();
    let writer = logs.add_local_writer(key(2)).await.unwrap();
    let indexed = IndexedRelay::create(logs.relay_key(), &dir.join("index.redb"), 64).unwrap();
    let host = RelayHost::open(
        indexed,
        logs,
        writable.then_some(writer),
        HostConfig::default(),
    )
    .await
    .unwrap();
    (host, writer)
}

/// Feeds `text` to the connection, drives the host, and returns the frames to send.
async fn send(
    host: &mut RelayHost<RelayLogs>,
    conn: &mut HostedSession,
    text: &str,
) -> (Vec<String>, Vec<LiveStarted>) {
    conn.session_mut().handle_client_text(text, now());
    let driven = host.drive(conn).await;
    assert!(driven.failures.is_empty(), "{:?}", driven.failures);
    (frames(conn), driven.started)
}

fn frames(conn: &mut HostedSession) -> Vec<String> {
    std::iter::from_fn(|| conn.session_mut().poll_transmit())
        .map(|frame| frame.to_json())
        .collect()
}

fn publish_text(event: &Event) -> String {
    format!(r#"["EVENT",{}]"#, event.to_json())
}

fn ok_true(event: &Event) -> String {
    format!(r#"["OK","{}",true,""]"#, event.id)
}

/// Reads every queued live message into the connection and returns what it would send.
fn deliver_live(conn: &mut HostedSession, live: &LiveStarted) -> Vec<String> {
    while let Some(message) = live.receiver.try_recv() {
        conn.handle_live(&live.subscription, live.subscriber, &message);
    }
    frames(conn)
}

#[test]
fn published_event_is_durable_at_ok_then_served_by_req_and_delivered_live() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, writer) = host_in(tmp.path(), true).await;
        let mut reader = conn();
        let (sent, started) = send(&mut host, &mut reader, r#"["REQ","feed",{"kinds":[1]}]"#).await;
        assert_eq!(sent, vec![r#"["EOSE","feed"]"#.to_owned()]);
        let live = started.into_iter().next().unwrap();

        let mut writer_conn = conn();
        let event = signed_event(9, 100, 1, Vec::new(), "hello");
        let (sent, _) = send(&mut host, &mut writer_conn, &publish_text(&event)).await;
        assert_eq!(sent, vec![ok_true(&event)]);

        assert_eq!(
            deliver_live(&mut reader, &live),
            vec![format!(r#"["EVENT","feed",{}]"#, event.to_json())]
        );
        let mut later = conn();
        let (sent, _) = send(&mut host, &mut later, r#"["REQ","q",{"authors":[]},{}]"#).await;
        assert_eq!(
            sent,
            vec![
                format!(r#"["EVENT","q",{}]"#, event.to_json()),
                r#"["EOSE","q"]"#.to_owned()
            ]
        );

        // Durable: a fresh process reading the logs from disk finds it.
        drop(host);
        let mut logs = RelayLogs::open(tmp.path()).await.unwrap();
        assert_eq!(logs.writer_log(&writer).await.unwrap().len(), 1);
        let mut fresh =
            IndexedRelay::create(logs.relay_key(), &tmp.path().join("i2.redb"), 8).unwrap();
        let _ = fresh.catch_up(&mut logs).await.unwrap();
        assert!(fresh.reader().view().get(&event.id).is_some());
    });
}

#[test]
fn an_event_the_relay_has_is_a_duplicate_and_is_not_appended_again() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, writer) = host_in(tmp.path(), true).await;
        let mut c = conn();
        let event = signed_event(9, 100, 1, Vec::new(), "once");
        let _ = send(&mut host, &mut c, &publish_text(&event)).await;
        let (sent, _) = send(&mut host, &mut c, &publish_text(&event)).await;
        assert_eq!(
            sent,
            vec![format!(
                r#"["OK","{}",true,"duplicate: already have this event"]"#,
                event.id
            )]
        );
        let len = host.store_mut().writer_log(&writer).await.unwrap().len();
        assert_eq!(len, 1);
    });
}

#[test]
fn a_host_without_writer_answers_read_only_with_the_original_notice() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, writer) = host_in(tmp.path(), false).await;
        assert!(!host.is_writable());
        let mut c = conn();
        let event = signed_event(9, 100, 1, Vec::new(), "refused");
        let (sent, _) = send(&mut host, &mut c, &publish_text(&event)).await;
        assert_eq!(
            sent,
            vec![
                r#"["NOTICE","Relay is read-only while workers are offline"]"#.to_owned(),
                format!(
                    r#"["OK","{}",false,"read-only: no writer for this relay is available here"]"#,
                    event.id
                ),
            ]
        );
        let len = host.store_mut().writer_log(&writer).await.unwrap().len();
        assert_eq!(len, 0);
    });
}

#[test]
fn a_replaced_replaceable_event_is_gone_from_a_later_req() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, _) = host_in(tmp.path(), true).await;
        let mut c = conn();
        let old = signed_event(9, 100, 0, Vec::new(), r#"{"name":"old"}"#);
        let new = signed_event(9, 200, 0, Vec::new(), r#"{"name":"new"}"#);
        let (sent, _) = send(&mut host, &mut c, &publish_text(&old)).await;
        assert_eq!(sent, vec![ok_true(&old)]);
        let (sent, _) = send(&mut host, &mut c, &publish_text(&new)).await;
        assert_eq!(sent, vec![ok_true(&new)]);
        let (sent, _) = send(&mut host, &mut c, r#"["REQ","p",{"kinds":[0]}]"#).await;
        assert_eq!(
            sent,
            vec![
                format!(r#"["EVENT","p",{}]"#, new.to_json()),
                r#"["EOSE","p"]"#.to_owned()
            ]
        );
    });
}

#[test]
fn an_ephemeral_event_reaches_live_subscribers_and_is_never_stored() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, writer) = host_in(tmp.path(), true).await;
        let mut listener = conn();
        let (_, started) = send(&mut host, &mut listener, r#"["REQ","t",{"limit":0}]"#).await;
        let live = started.into_iter().next().unwrap();
        let mut c = conn();
        let typing = signed_event(9, 100, 20001, Vec::new(), "typing");
        let (sent, _) = send(&mut host, &mut c, &publish_text(&typing)).await;
        assert_eq!(sent, vec![ok_true(&typing)]);
        assert_eq!(
            deliver_live(&mut listener, &live),
            vec![format!(r#"["EVENT","t",{}]"#, typing.to_json())]
        );
        assert_eq!(host.store_mut().writer_log(&writer).await.unwrap().len(), 0);
        assert!(host.query(&[Filter::default()]).unwrap().events.is_empty());
    });
}

#[test]
fn a_reopened_host_serves_what_was_stored_before() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let event = signed_event(9, 100, 1, Vec::new(), "kept");
        {
            let (mut host, _) = host_in(tmp.path(), true).await;
            let _ = send(&mut host, &mut conn(), &publish_text(&event)).await;
        }
        let logs = RelayLogs::open(tmp.path()).await.unwrap();
        let indexed =
            IndexedRelay::create(logs.relay_key(), &tmp.path().join("index.redb"), 8).unwrap();
        let host = RelayHost::open(indexed, ReadOnlySource(logs), None, HostConfig::default())
            .await
            .unwrap();
        assert_eq!(
            host.query(&[Filter::default()]).unwrap().events,
            vec![event]
        );
    });
}

#[test]
fn ending_a_session_unregisters_its_live_subscriptions() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, _) = host_in(tmp.path(), true).await;
        let mut c = conn();
        let (_, started) = send(&mut host, &mut c, r#"["REQ","x",{"limit":0}]"#).await;
        let (_, replaced) = send(&mut host, &mut c, r#"["REQ","x",{"kinds":[1],"limit":0}]"#).await;
        let (first, second) = (&started[0], &replaced[0]);
        // The replaced registration is closed at once.
        assert_eq!(first.receiver.recv().await, None);
        host.end_session(c);
        assert_eq!(second.receiver.recv().await, None);
        let event = signed_event(9, 100, 1, Vec::new(), "after");
        let _ = send(&mut host, &mut conn(), &publish_text(&event)).await;
        assert!(second.receiver.try_recv().is_none());
    });
}

#[test]
fn live_messages_of_a_replaced_subscription_are_ignored() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, _) = host_in(tmp.path(), true).await;
        let mut c = conn();
        let (_, started) = send(&mut host, &mut c, r#"["REQ","y",{"limit":0}]"#).await;
        let old = started.into_iter().next().unwrap();
        let _ = send(&mut host, &mut c, r#"["REQ","y",{"limit":0}]"#).await;
        let stale = signed_event(9, 1, 1, Vec::new(), "stale");
        c.handle_live(
            &old.subscription,
            old.subscriber,
            &LiveMessage::Event(std::sync::Arc::new(stale)),
        );
        assert!(frames(&mut c).is_empty());
    });
}

#[test]
fn a_batch_from_several_sessions_is_stored_by_one_append_and_each_gets_its_outcome() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, writer) = host_in(tmp.path(), true).await;
        let mut earlier = conn();
        let held = signed_event(9, 100, 1, Vec::new(), "already held");
        let _ = send(&mut host, &mut earlier, &publish_text(&held)).await;
        let log_before = host.store_mut().writer_log(&writer).await.unwrap().len();

        let first = signed_event(9, 101, 1, Vec::new(), "first");
        let second = signed_event(10, 102, 1, Vec::new(), "second");
        let ephemeral = signed_event(9, 103, 20_001, Vec::new(), "passing through");
        let batch = vec![
            first.clone(),
            held.clone(),
            second.clone(),
            first.clone(),
            ephemeral,
        ];
        let (outcomes, failures) = host.store_batch(writer, batch).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            outcomes,
            [
                PublishOutcome::Accepted,
                PublishOutcome::Duplicate,
                PublishOutcome::Accepted,
                PublishOutcome::Duplicate,
                PublishOutcome::Accepted,
            ]
        );
        // Two new events, one append of two blocks; both served at once.
        let log_after = host.store_mut().writer_log(&writer).await.unwrap().len();
        assert_eq!(log_after, log_before + 2);
        let stored = host
            .query(&[Filter::parse_json(r#"{"kinds":[1]}"#).unwrap()])
            .unwrap();
        assert_eq!(stored.events.len(), 3);

        // The gateway's flow: a session's publish is deferred, stored in a batch, answered.
        let third = signed_event(11, 104, 1, Vec::new(), "third");
        let mut client = conn();
        client
            .session_mut()
            .handle_client_text(&publish_text(&third), now());
        let (driven, deferred) = host.drive_deferring_publishes(&mut client).await;
        assert!(driven.failures.is_empty());
        assert_eq!(deferred, vec![third.clone()]);
        let (outcomes, failures) = host.store_batch(writer, deferred).await;
        assert!(failures.is_empty());
        let failures = host.answer_publish_outcome(&mut client, third.id, outcomes[0].clone());
        assert!(failures.is_empty());
        assert_eq!(frames(&mut client), vec![ok_true(&third)]);
    });
}

//! The routing rules of forwarded sessions, over a real link pair (an in-memory duplex stream
//! with the real handshake) and a real relay host on disk. Runs on the current-thread runtime,
//! so a spawned session task does not run before the test yields: queue overflows are exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{AcceptPolicy, Inbound, LinkConfig, accept, connect};
use hypergate_adapters::relay::{HostConfig, IndexedRelay, RelayHost, RelayLogs, RelayStore as _};
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::relay::WriterKey;
use hypergate_core::session::SessionConfig;
use tokio::sync::Mutex;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

use super::*;
use crate::worker::WorkerStore;

const PATIENCE: Duration = Duration::from_secs(10);

fn sleeper(duration: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(duration)
}

/// The worker's end of a link and the gateway's inbound frames.
async fn link_pair() -> (PeerLink, PeerLink, Inbound) {
    let (worker_io, gateway_io) = tokio::io::duplex(1 << 16);
    let gateway = Identity::from_signing_key(SigningKey::from_bytes(&[1; 32]));
    let worker = Identity::from_signing_key(SigningKey::from_bytes(&[2; 32]));
    let config = LinkConfig::default();
    let (worker_side, gateway_side) = tokio::join!(
        connect(
            worker_io.compat(),
            &worker,
            gateway.peer_id(),
            &config,
            sleeper
        ),
        accept(
            gateway_io.compat(),
            &gateway,
            &AcceptPolicy::Open,
            &config,
            sleeper
        ),
    );
    let (worker_side, gateway_side) = (worker_side.unwrap(), gateway_side.unwrap());
    tokio::spawn(worker_side.driver.run());
    tokio::spawn(gateway_side.driver.run());
    (worker_side.link, gateway_side.link, gateway_side.inbound)
}

/// A relay host on its own logs, and its writer.
async fn host(dir: &std::path::Path) -> (RelayKey, WriterKey, SharedHost) {
    let mut logs = RelayLogs::create(&dir.join("relay"), SigningKey::from_bytes(&[3; 32]))
        .await
        .unwrap();
    let writer = logs
        .add_local_writer(SigningKey::from_bytes(&[4; 32]))
        .await
        .unwrap();
    let relay = logs.relay_key();
    let indexed = IndexedRelay::create(relay, &dir.join("index.redb"), 64).unwrap();
    let host = RelayHost::open(
        indexed,
        WorkerStore::Own(Box::new(logs)),
        Some(writer),
        HostConfig::default(),
    )
    .await
    .unwrap();
    (relay, writer, Arc::new(Mutex::new(host)))
}

fn served(
    relay: RelayKey,
    host: &SharedHost,
    max_sessions: usize,
    queues: usize,
) -> ForwardedSessions {
    let mut hosts = BTreeMap::new();
    hosts.insert(relay, Arc::clone(host));
    ForwardedSessions {
        hosts,
        connection: ConnectionConfig {
            session: SessionConfig::default(),
            outbound_queue: queues,
        },
        max_sessions,
        inbound_queue: queues,
    }
}

fn frame(relay: RelayKey, session: u64, text: &str) -> NostrFrame {
    NostrFrame {
        relay_key: relay,
        session,
        frame: BoundedString::new(text).unwrap(),
    }
}

/// The next forwarded frame the gateway receives: (session, text).
async fn received(inbound: &Inbound) -> (u64, String) {
    loop {
        let frame = tokio::time::timeout(PATIENCE, inbound.recv())
            .await
            .expect("no frame from the worker")
            .expect("the link ended");
        if let Message::NostrFrame(nostr) = frame.message {
            return (nostr.session, nostr.frame.into_inner());
        }
    }
}

/// Yields until no session task runs.
async fn all_ended(open: &AtomicUsize) {
    tokio::time::timeout(PATIENCE, async {
        while open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a session task never ended");
}

#[tokio::test]
async fn a_session_is_refused_before_hosts_are_given_and_for_a_relay_not_hosted() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _, host) = host(dir.path()).await;
    let (link, _gateway, _inbound) = link_pair().await;
    let mut sessions = LinkSessions::new(Arc::new(AtomicUsize::new(0)));
    let req = r#"["REQ","a",{}]"#;
    let refused = sessions.route(None, &link, frame(relay, 1, req)).unwrap();
    assert!(refused.frame.is_empty());
    assert_eq!((refused.relay_key, refused.session), (relay, 1));
    let served = served(relay, &host, 8, 8);
    let other = RelayKey([9; 32]);
    let refused = sessions
        .route(Some(&served), &link, frame(other, 1, req))
        .unwrap();
    assert!(refused.frame.is_empty());
    assert_eq!(refused.relay_key, other);
}

#[tokio::test]
async fn a_session_beyond_max_sessions_is_refused_until_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _, host) = host(dir.path()).await;
    let (link, _gateway, inbound) = link_pair().await;
    let open = Arc::new(AtomicUsize::new(0));
    let mut sessions = LinkSessions::new(Arc::clone(&open));
    let served = served(relay, &host, 1, 8);
    let req = r#"["REQ","a",{}]"#;
    assert!(
        sessions
            .route(Some(&served), &link, frame(relay, 1, req))
            .is_none()
    );
    assert_eq!(received(&inbound).await, (1, r#"["EOSE","a"]"#.to_owned()));
    let refused = sessions
        .route(Some(&served), &link, frame(relay, 2, req))
        .unwrap();
    assert!(refused.frame.is_empty());

    assert!(
        sessions
            .route(Some(&served), &link, frame(relay, 1, ""))
            .is_none()
    );
    all_ended(&open).await;
    assert!(
        sessions
            .route(Some(&served), &link, frame(relay, 2, req))
            .is_none()
    );
    assert_eq!(received(&inbound).await, (2, r#"["EOSE","a"]"#.to_owned()));
}

#[tokio::test]
async fn a_session_whose_replies_overflow_its_queue_is_ended_after_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, writer, host) = host(dir.path()).await;
    let events: Vec<_> = (0..3)
        .map(|i| signed_event(5, 1_700_000_000 + i, 1, Vec::new(), "stored"))
        .collect();
    {
        let mut host = host.lock().await;
        host.store_mut()
            .append_events(&writer, &events)
            .await
            .unwrap();
        let _ = host.refresh().await.unwrap();
    }
    let (link, _gateway, inbound) = link_pair().await;
    let open = Arc::new(AtomicUsize::new(0));
    let mut sessions = LinkSessions::new(Arc::clone(&open));
    // Room for one reply: the REQ's answer is four (three events, EOSE).
    let served = served(relay, &host, 8, 1);
    assert!(
        sessions
            .route(Some(&served), &link, frame(relay, 1, r#"["REQ","a",{}]"#))
            .is_none()
    );

    let (session, first) = received(&inbound).await;
    assert_eq!(session, 1);
    assert!(first.contains(&events[2].id.to_hex()), "{first}");
    assert_eq!(received(&inbound).await, (1, String::new()));
    all_ended(&open).await;
    // Frames of the ended session still in flight do not reopen it.
    assert!(
        sessions
            .route(Some(&served), &link, frame(relay, 1, r#"["REQ","b",{}]"#))
            .is_none()
    );
    assert_eq!(open.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_session_the_gateway_floods_is_ended_once_and_its_later_frames_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _, host) = host(dir.path()).await;
    let (link, _gateway, inbound) = link_pair().await;
    let open = Arc::new(AtomicUsize::new(0));
    let mut sessions = LinkSessions::new(Arc::clone(&open));
    let served = served(relay, &host, 8, 1);
    // The session task has not run yet: its one-frame queue holds the first REQ.
    for sub in ["a", "b", "c"] {
        let req = format!(r#"["REQ","{sub}",{{}}]"#);
        assert!(
            sessions
                .route(Some(&served), &link, frame(relay, 1, &req))
                .is_none()
        );
    }
    assert_eq!(received(&inbound).await, (1, r#"["EOSE","a"]"#.to_owned()));
    assert_eq!(received(&inbound).await, (1, String::new()));
    all_ended(&open).await;

    // A later session on the link is served, and nothing else came for session 1.
    assert!(
        sessions
            .route(Some(&served), &link, frame(relay, 2, r#"["REQ","d",{}]"#))
            .is_none()
    );
    assert_eq!(received(&inbound).await, (2, r#"["EOSE","d"]"#.to_owned()));
}

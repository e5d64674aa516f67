//! NIP-01 sessions the gateway forwards over the peer link, served by a real
//! `hypergate worker run --gateway …` process against the in-test gateway: the link and the
//! worker's local WebSocket share each relay's host (stored events and live delivery cross
//! between them), a relay the worker does not host gets the empty "session ended" frame, an
//! empty frame from the gateway ends a session, bad input gets the local server's answers, and
//! a link that ends takes its sessions with it.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod worker_agent_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hypergate_adapters::peer_link::CloseCode;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::nostr::Event;
use hypergate_core::nostr::testing::signed_event;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use worker_agent_support::{ForwardedClient, TestGateway, eventually, identity};

const BIN: &str = env!("CARGO_BIN_EXE_hypergate");

/// Upper bound on waiting for any one thing; a guard against hangs, not a measured duration.
const PATIENCE: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `hypergate worker run` process linked to a test gateway; killed when dropped.
struct Worker {
    child: Child,
    addr: SocketAddr,
    relay: RelayKey,
    peer: PeerId,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    /// `worker init`, then `worker run` on a free loopback port linked to `gateway`; returns
    /// once the worker listens and its link is up.
    async fn start(gateway: &TestGateway) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let report = init(dir.path());
        let relay = report["relayKey"].as_str().unwrap().parse().unwrap();
        let peer = report["peerId"].as_str().unwrap().parse().unwrap();
        let mut child = Command::new(BIN)
            .env("HYPERGATE_WORKER_GATEWAY", gateway.addr.to_string())
            .env("HYPERGATE_WORKER_GATEWAY_KEY", gateway.peer.to_hex())
            .args(["worker", "run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr = listening_address(&mut child);
        let worker = Worker {
            child,
            addr,
            relay,
            peer,
            _dir: dir,
        };
        assert!(
            eventually(PATIENCE, async || gateway.link(peer).await.is_some()).await,
            "the worker never linked to the gateway"
        );
        worker
    }

    /// A client on the worker's local WebSocket.
    async fn local_client(&self) -> Socket {
        let url = format!("ws://{}/relay/{}", self.addr, self.relay);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    /// `forwardedSessions` of the worker's `GET /status`.
    fn forwarded_sessions(&self) -> u64 {
        let output = Command::new(BIN)
            .args(["worker", "status", "--json", "--url"])
            .arg(format!("http://{}", self.addr))
            .output()
            .unwrap();
        assert!(output.status.success(), "worker status failed");
        let status: Value = serde_json::from_slice(&output.stdout).unwrap();
        status["forwardedSessions"].as_u64().unwrap()
    }
}

fn init(dir: &Path) -> Value {
    let output = Command::new(BIN)
        .args(["worker", "init", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Reads the worker's stdout until it says where it listens; keeps draining it afterwards.
fn listening_address(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the caller stopped listening: a closed pipe would make the
        // worker's next println fail.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the worker never said it was listening");
        if let Some((_, addr)) = line.split_once(" listening on ") {
            return addr.trim().parse().unwrap();
        }
    }
}

fn event_frame(event: &Event) -> String {
    format!(r#"["EVENT",{}]"#, event.to_json())
}

/// The worker's next frame for a forwarded session, parsed (`Null`: the session-ended frame).
async fn next_forwarded(client: &mut ForwardedClient) -> Value {
    let text = client
        .next(PATIENCE)
        .await
        .expect("no frame from the worker for the forwarded session");
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap()
}

/// The next text frame on a local socket, parsed.
async fn next_local(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no frame from the worker")
            .expect("the worker closed the connection")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

fn assert_ok(frame: &Value, event: &Event) {
    assert_eq!(frame[0], "OK", "{frame}");
    assert_eq!(frame[1], event.id.to_hex().as_str(), "{frame}");
    assert_eq!(frame[2], true, "{frame}");
}

fn assert_event(frame: &Value, subscription: &str, event: &Event) {
    assert_eq!(frame[0], "EVENT", "{frame}");
    assert_eq!(frame[1], subscription, "{frame}");
    assert_eq!(frame[2]["id"], event.id.to_hex().as_str(), "{frame}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_req_returns_stored_events_newest_first_and_events_cross_between_link_and_local_socket()
 {
    let gateway = TestGateway::start(identity(0x71)).await;
    let worker = Worker::start(&gateway).await;
    let mut local = worker.local_client().await;
    let mut forwarded = gateway.forward_session(worker.peer, worker.relay, 1).await;

    // One event published on each surface, each acknowledged only once stored.
    let older = signed_event(7, 1_700_000_100, 1, Vec::new(), "published locally");
    local
        .send(Message::text(event_frame(&older)))
        .await
        .unwrap();
    assert_ok(&next_local(&mut local).await, &older);
    let newer = signed_event(8, 1_700_000_200, 1, Vec::new(), "published over the link");
    forwarded.send(&event_frame(&newer)).await;
    assert_ok(&next_forwarded(&mut forwarded).await, &newer);

    // Both surfaces answer a REQ with both events, newest first, then EOSE.
    forwarded.send(r#"["REQ","stored",{"kinds":[1]}]"#).await;
    assert_event(&next_forwarded(&mut forwarded).await, "stored", &newer);
    assert_event(&next_forwarded(&mut forwarded).await, "stored", &older);
    assert_eq!(
        next_forwarded(&mut forwarded).await,
        serde_json::json!(["EOSE", "stored"])
    );
    local
        .send(Message::text(r#"["REQ","stored",{"kinds":[1]}]"#))
        .await
        .unwrap();
    assert_event(&next_local(&mut local).await, "stored", &newer);
    assert_event(&next_local(&mut local).await, "stored", &older);
    assert_eq!(
        next_local(&mut local).await,
        serde_json::json!(["EOSE", "stored"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_forwarded_subscription_receives_events_published_later_on_the_local_socket_and_back()
 {
    let gateway = TestGateway::start(identity(0x72)).await;
    let worker = Worker::start(&gateway).await;
    let mut forwarded = gateway.forward_session(worker.peer, worker.relay, 7).await;
    forwarded.send(r#"["REQ","live",{"kinds":[1]}]"#).await;
    assert_eq!(
        next_forwarded(&mut forwarded).await,
        serde_json::json!(["EOSE", "live"])
    );
    let mut local = worker.local_client().await;
    local
        .send(Message::text(r#"["REQ","live",{"kinds":[1]}]"#))
        .await
        .unwrap();
    assert_eq!(
        next_local(&mut local).await,
        serde_json::json!(["EOSE", "live"])
    );

    // Published locally: the forwarded subscription gets it.
    let from_local = signed_event(9, 1_700_000_300, 1, Vec::new(), "local, after EOSE");
    local
        .send(Message::text(event_frame(&from_local)))
        .await
        .unwrap();
    let mut local_frames = [next_local(&mut local).await, next_local(&mut local).await];
    local_frames.sort_by_key(|frame| frame[0].as_str().unwrap().to_owned());
    assert_event(&local_frames[0], "live", &from_local);
    assert_ok(&local_frames[1], &from_local);
    assert_event(&next_forwarded(&mut forwarded).await, "live", &from_local);

    // Published over the link: the local subscription gets it (the session's own OK first).
    let from_link = signed_event(10, 1_700_000_400, 1, Vec::new(), "forwarded, after EOSE");
    forwarded.send(&event_frame(&from_link)).await;
    assert_ok(&next_forwarded(&mut forwarded).await, &from_link);
    assert_event(&next_forwarded(&mut forwarded).await, "live", &from_link);
    assert_event(&next_local(&mut local).await, "live", &from_link);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_for_a_relay_the_worker_does_not_host_gets_the_session_ended_frame() {
    let gateway = TestGateway::start(identity(0x73)).await;
    let worker = Worker::start(&gateway).await;
    let elsewhere = RelayKey([0x5a; 32]);
    let mut forwarded = gateway.forward_session(worker.peer, elsewhere, 3).await;
    forwarded.send(r#"["REQ","x",{"kinds":[1]}]"#).await;
    assert_eq!(next_forwarded(&mut forwarded).await, Value::Null);
    assert_eq!(worker.forwarded_sessions(), 0);

    // The same session id on the hosted relay is a different session, and is served.
    let mut hosted = gateway.forward_session(worker.peer, worker.relay, 3).await;
    hosted.send(r#"["REQ","x",{"kinds":[1]}]"#).await;
    assert_eq!(
        next_forwarded(&mut hosted).await,
        serde_json::json!(["EOSE", "x"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_frame_from_the_gateway_ends_the_session_and_its_live_subscription() {
    let gateway = TestGateway::start(identity(0x74)).await;
    let worker = Worker::start(&gateway).await;
    let mut ended = gateway.forward_session(worker.peer, worker.relay, 1).await;
    let mut staying = gateway.forward_session(worker.peer, worker.relay, 2).await;
    for client in [&mut ended, &mut staying] {
        client.send(r#"["REQ","live",{"kinds":[1]}]"#).await;
        assert_eq!(
            next_forwarded(client).await,
            serde_json::json!(["EOSE", "live"])
        );
    }
    assert_eq!(worker.forwarded_sessions(), 2);

    ended.end().await;
    // The worker counts a session until its live subscriptions are unregistered.
    assert!(
        eventually(PATIENCE, async || worker.forwarded_sessions() == 1).await,
        "the ended session was never let go"
    );
    let mut local = worker.local_client().await;
    let later = signed_event(11, 1_700_000_500, 1, Vec::new(), "after the client left");
    local
        .send(Message::text(event_frame(&later)))
        .await
        .unwrap();
    assert_ok(&next_local(&mut local).await, &later);

    // The staying session gets the event; the ended one got nothing, not even an empty frame.
    assert_event(&next_forwarded(&mut staying).await, "live", &later);
    assert_eq!(ended.try_next(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_gets_ok_false_invalid_and_malformed_json_the_local_servers_notice() {
    let gateway = TestGateway::start(identity(0x75)).await;
    let worker = Worker::start(&gateway).await;
    let mut forwarded = gateway.forward_session(worker.peer, worker.relay, 1).await;
    let mut local = worker.local_client().await;

    let event = signed_event(12, 1_700_000_600, 1, Vec::new(), "tampered");
    let mut json: Value = serde_json::from_str(&event.to_json()).unwrap();
    let sig = json["sig"].as_str().unwrap();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    json["sig"] = Value::String(format!("{flipped}{}", &sig[1..]));
    forwarded.send(&format!(r#"["EVENT",{json}]"#)).await;
    let ok = next_forwarded(&mut forwarded).await;
    assert_eq!(ok[0], "OK", "{ok}");
    assert_eq!(ok[1], event.id.to_hex().as_str(), "{ok}");
    assert_eq!(ok[2], false, "{ok}");
    assert!(ok[3].as_str().unwrap().starts_with("invalid: "), "{ok}");

    for malformed in ["not json", r#"["REQ"]"#, r#"{"EVENT":1}"#] {
        forwarded.send(malformed).await;
        let notice = next_forwarded(&mut forwarded).await;
        assert_eq!(notice[0], "NOTICE", "{malformed}: {notice}");
        local.send(Message::text(malformed)).await.unwrap();
        assert_eq!(notice, next_local(&mut local).await, "{malformed}");
    }

    // The session is still served.
    forwarded.send(r#"["REQ","after",{"kinds":[1]}]"#).await;
    assert_eq!(
        next_forwarded(&mut forwarded).await,
        serde_json::json!(["EOSE", "after"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_link_ends_its_forwarded_sessions_end() {
    let gateway = TestGateway::start(identity(0x76)).await;
    let worker = Worker::start(&gateway).await;
    let mut forwarded = gateway.forward_session(worker.peer, worker.relay, 1).await;
    forwarded.send(r#"["REQ","live",{"kinds":[1]}]"#).await;
    assert_eq!(
        next_forwarded(&mut forwarded).await,
        serde_json::json!(["EOSE", "live"])
    );
    assert_eq!(worker.forwarded_sessions(), 1);

    forwarded
        .link
        .close(CloseCode::NORMAL, "gateway restarting")
        .await
        .unwrap();
    assert!(
        eventually(PATIENCE, async || worker.forwarded_sessions() == 0).await,
        "the sessions of a closed link were never let go"
    );
}

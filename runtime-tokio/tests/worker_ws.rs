//! End to end: `hypergate worker init` and `hypergate worker run` as real processes on a
//! loopback port, spoken to by a real WebSocket client (tokio-tungstenite) with events built and
//! signed by the independent `nostr` crate, and read back and checked with it.
// Test helpers: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nostr_tools_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nostr::prelude::{Event as NostrEvent, Keys, Kind, Tag, Timestamp, UnsignedEvent};
use nostr_tools_support::NostrTools;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound on waiting for any one thing; a guard against hangs, not a measured duration.
const PATIENCE: Duration = Duration::from_secs(30);

const BIN: &str = env!("CARGO_BIN_EXE_hypergate");

/// A `hypergate worker run` process; killed when dropped.
struct Worker {
    child: Child,
    addr: SocketAddr,
    relay: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn url(&self) -> String {
        format!("ws://{}/relay/{}", self.addr, self.relay)
    }
}

/// `hypergate worker init --json` in `dir`; returns its report.
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

/// Starts `hypergate worker run` on a free loopback port and waits until it listens.
fn run(dir: &Path, relay: &str, extra: &[&str]) -> Worker {
    let mut child = Command::new(BIN)
        .args(["worker", "run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the caller stopped listening: a closed pipe would make the
        // worker's next println fail.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let addr = loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the worker never said it was listening");
        if let Some((_, addr)) = line.split_once(" listening on ") {
            break addr.trim().parse().unwrap();
        }
    };
    Worker {
        child,
        addr,
        relay: relay.to_owned(),
    }
}

async fn connect(worker: &Worker) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(worker.url())
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next text frame, parsed.
async fn next(ws: &mut Ws) -> Value {
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

fn keys() -> Keys {
    Keys::parse("6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e").unwrap()
}

/// An event built and signed by the `nostr` crate.
fn signed(keys: &Keys, created_at: u64, kind: u16, content: &str) -> NostrEvent {
    let unsigned = UnsignedEvent::new(
        keys.public_key(),
        Timestamp::from_secs(created_at),
        Kind::from(kind),
        Vec::<Tag>::new(),
        content,
    );
    let id = unsigned.compute_id();
    let secp = secp256k1::Secp256k1::signing_only();
    let sig = keys.sign_schnorr_with_aux_rand(&secp, id.as_bytes(), &[3; 32]);
    unsigned.add_signature(sig).unwrap()
}

fn event_json(event: &NostrEvent) -> Value {
    serde_json::from_str(&event.as_json()).unwrap()
}

/// Parses the event of an `["EVENT", sub, event]` frame with the `nostr` crate and verifies it.
fn received_event(frame: &Value, subscription: &str) -> NostrEvent {
    assert_eq!(frame[0], "EVENT", "{frame}");
    assert_eq!(frame[1], subscription, "{frame}");
    let event = NostrEvent::from_json(frame[2].to_string()).unwrap();
    event.verify().unwrap();
    event
}

fn started_worker() -> (tempfile::TempDir, Worker) {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path());
    let relay = report["relayKey"].as_str().unwrap().to_owned();
    let worker = run(dir.path(), &relay, &[]);
    (dir, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_is_read_back_delivered_live_and_a_tampered_one_is_refused() {
    let (_dir, worker) = started_worker();
    let author = keys();
    let mut listener = connect(&worker).await;
    send(
        &mut listener,
        json!(["REQ", "live", {"kinds": [1], "authors": [author.public_key().to_hex()]}]),
    )
    .await;
    assert_eq!(next(&mut listener).await, json!(["EOSE", "live"]));

    let mut client = connect(&worker).await;
    let event = signed(&author, 1_700_000_000, 1, "hello from the nostr crate");
    send(&mut client, json!(["EVENT", event_json(&event)])).await;
    assert_eq!(
        next(&mut client).await,
        json!(["OK", event.id.to_hex(), true, ""])
    );

    let live = received_event(&next(&mut listener).await, "live");
    assert_eq!(live, event);

    send(
        &mut client,
        json!(["REQ", "back", {"ids": [event.id.to_hex()]}]),
    )
    .await;
    assert_eq!(received_event(&next(&mut client).await, "back"), event);
    assert_eq!(next(&mut client).await, json!(["EOSE", "back"]));

    let mut tampered = event_json(&event);
    tampered["content"] = json!("changed after signing");
    send(&mut client, json!(["EVENT", tampered])).await;
    let reply = next(&mut client).await;
    assert_eq!(reply[0], "OK");
    assert_eq!(reply[1], event.id.to_hex());
    assert_eq!(reply[2], false);
    assert!(
        reply[3].as_str().unwrap().starts_with("invalid:"),
        "{reply}"
    );

    let other = signed(&author, 1_700_000_001, 1, "another");
    let mut forged = event_json(&other);
    forged["sig"] = event_json(&event)["sig"].clone();
    send(&mut client, json!(["EVENT", forged])).await;
    assert_eq!(
        next(&mut client).await,
        json!(["OK", other.id.to_hex(), false, "invalid: bad signature"])
    );

    // The same event again is a duplicate, and `limit: 0` asks for no stored events.
    send(&mut client, json!(["EVENT", event_json(&event)])).await;
    assert_eq!(
        next(&mut client).await,
        json!([
            "OK",
            event.id.to_hex(),
            true,
            "duplicate: already have this event"
        ])
    );
    send(&mut client, json!(["REQ", "none", {"limit": 0}])).await;
    assert_eq!(next(&mut client).await, json!(["EOSE", "none"]));
    send(&mut client, json!(["REQ"])).await;
    assert_eq!(
        next(&mut client).await,
        json!(["NOTICE", "REQ frame missing subscription id"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_survive_a_worker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = init(dir.path())["relayKey"].as_str().unwrap().to_owned();
    let author = keys();
    let old = signed(&author, 100, 0, r#"{"name":"old"}"#);
    let new = signed(&author, 200, 0, r#"{"name":"new"}"#);
    {
        let worker = run(dir.path(), &relay, &[]);
        let mut client = connect(&worker).await;
        for event in [&old, &new] {
            send(&mut client, json!(["EVENT", event_json(event)])).await;
            assert_eq!(next(&mut client).await[2], true);
        }
    }
    let worker = run(dir.path(), &relay, &[]);
    // The root path serves the only relay.
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{}/", worker.addr))
        .await
        .unwrap();
    send(&mut client, json!(["REQ", "p", {"kinds": [0]}])).await;
    assert_eq!(received_event(&next(&mut client).await, "p"), new);
    assert_eq!(next(&mut client).await, json!(["EOSE", "p"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_document_is_served_to_accept_nostr_json() {
    let (_dir, worker) = started_worker();
    let response = tokio::task::spawn_blocking({
        let addr = worker.addr;
        let path = format!("/relay/{}", worker.relay);
        move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/nostr+json\r\n\
                 Connection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        }
    })
    .await
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/nostr+json"),
        "{head}"
    );
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    let document: Value = serde_json::from_str(body).unwrap();
    assert_eq!(document["supported_nips"], json!([1, 9, 11]));
    assert_eq!(document["limitation"]["max_message_length"], 131_072);
    assert_eq!(document["limitation"]["restricted_writes"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_others_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let relay = init(dir.path())["relayKey"].as_str().unwrap().to_owned();
    let worker = run(dir.path(), &relay, &["--outbound-queue", "8"]);
    let author = keys();

    // A client with a tiny receive buffer that subscribes and then never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(worker.addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(worker.url(), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    send(&mut slow, json!(["REQ", "all", {"limit": 0}])).await;
    assert_eq!(next(&mut slow).await, json!(["EOSE", "all"]));

    let mut fast = connect(&worker).await;
    let content = "x".repeat(60_000);
    let published = 300;
    for i in 0..published {
        let event = signed(&author, 1_000 + i, 1, &content);
        send(&mut fast, json!(["EVENT", event_json(&event)])).await;
        assert_eq!(
            next(&mut fast).await,
            json!(["OK", event.id.to_hex(), true, ""])
        );
    }

    // The slow client gets what was buffered for it, then the end of the connection.
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(PATIENCE, slow.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => delivered += 1,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the slow client was never disconnected ({delivered} frames read)"),
        }
    }
    assert!(
        delivered < published,
        "{delivered} of {published} delivered"
    );

    // Others are unaffected.
    send(&mut fast, json!(["REQ", "count", {"limit": 1}])).await;
    assert_eq!(next(&mut fast).await[0], "EVENT");
    assert_eq!(next(&mut fast).await, json!(["EOSE", "count"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_tools_publishes_reads_back_follows_live_and_sees_a_tampered_event_refused() {
    let Some(tools) = NostrTools::install() else {
        return;
    };
    let (_dir, worker) = started_worker();
    let url = worker.url();
    let report = tokio::task::spawn_blocking(move || tools.client(&url))
        .await
        .unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["refusal"].as_str().unwrap().contains("invalid:"));
}

#[test]
fn init_keeps_keys_private_reports_its_keys_and_refuses_a_second_init() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("worker");
    let report = init(&data);
    let relay = report["relayKey"].as_str().unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let relay_dir = data.join("relays").join(relay);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("relays")), 0o700);
    assert_eq!(mode(&data.join("identity.json")), 0o600);
    let keys_path = relay_dir.join("keys").join("relay-keys.json");
    assert_eq!(mode(&keys_path), 0o600);

    let identity: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("identity.json")).unwrap())
            .unwrap();
    assert_eq!(report["peerId"], identity["publicKey"]);
    assert_eq!(
        report["url"],
        format!("ws://127.0.0.1:8480/relay/{relay}").as_str()
    );
    // The one keys file holds the owner key (whose public key is the relay key) and names the
    // worker's own writer log, the one init reported.
    let keys = hypergate_tokio::worker_agent::RelayKeys::load(&relay_dir).unwrap();
    assert_eq!(hex::encode(keys.owner().verifying_key().to_bytes()), relay);
    let writer = hex::encode(keys.local_writer.unwrap());
    assert_eq!(report["writerKey"], writer.as_str());
    assert!(relay_dir.join("writers").join(&writer).is_dir());

    let again = Command::new(BIN)
        .args(["worker", "init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds relay"));
}

#[test]
fn run_without_init_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["worker", "run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("hypergate worker init"));
}

//! `hypergate worker init` + `hypergate worker run --gateway …` as real processes against an
//! in-test gateway on loopback: the relay registers and is mirrored, an event published on the
//! worker's local WebSocket reaches the gateway's mirror, and `hypergate worker status` shows
//! the relay and its cores; gateway writes the agent ingests at resync reach the local server's
//! live subscribers.

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
use hypergate_adapters::log::HyperLog;
use hypergate_adapters::mirror::CoreKey;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::relay::RelayOp;
use hypergate_core::wire::{
    AckStatus, BoundedString, BoundedVec, Message as WireMessage, PendingState, PendingType,
    PendingWritePush,
};
use hypergate_tokio::worker_agent::RelayKeys;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use worker_agent_support::{TestGateway, eventually, identity};

const BIN: &str = env!("CARGO_BIN_EXE_hypergate");

/// Upper bound on waiting for any one thing; a guard against hangs, not a measured duration.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `hypergate worker run` process; killed when dropped.
struct Worker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// `hypergate worker run` on a free loopback port, linked to `gateway`.
fn run(dir: &Path, gateway: &TestGateway) -> Worker {
    let mut command = Command::new(BIN);
    command
        .env("HYPERGATE_WORKER_GATEWAY", gateway.addr.to_string())
        .env("HYPERGATE_WORKER_GATEWAY_KEY", gateway.peer.to_hex());
    spawn(command, dir)
}

/// Starts `command` as `hypergate worker run` on a free loopback port; waits until it listens.
fn spawn(mut command: Command, dir: &Path) -> Worker {
    let mut child = command
        .args(["worker", "run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
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
    Worker { child, addr }
}

/// `hypergate worker status --url http://ADDR [extra]`: (exit success, stdout).
fn status(url: &str, extra: &[&str]) -> (bool, String) {
    let output = Command::new(BIN)
        .args(["worker", "status", "--url", url])
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The event of block `index` of the gateway's mirror of `core`, as JSON.
async fn mirrored_event(gateway: &TestGateway, core: [u8; 32], index: u64) -> Option<Value> {
    let block = {
        let mut state = gateway.state.lock().await;
        state
            .mirror
            .read_block(&CoreKey(core), index)
            .await
            .ok()??
    };
    match RelayOp::decode(&block).unwrap() {
        RelayOp::Event(json) => {
            Some(serde_json::from_str(&json.parse().unwrap().to_json()).unwrap())
        }
        other => panic!("block {index} of the worker's writer log is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_run_with_a_gateway_registers_mirrors_local_publishes_and_reports_its_status() {
    let gateway = TestGateway::start(identity(0x61)).await;
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path());
    let relay: RelayKey = report["relayKey"].as_str().unwrap().parse().unwrap();
    let peer: PeerId = report["peerId"].as_str().unwrap().parse().unwrap();
    let mut writer = [0u8; 32];
    hex::decode_to_slice(report["writerKey"].as_str().unwrap(), &mut writer).unwrap();
    let worker = run(dir.path(), &gateway);

    assert!(
        eventually(PATIENCE, async || {
            let state = gateway.state.lock().await;
            state.core.registry().workers_of(&relay).any(|p| p == peer)
        })
        .await,
        "the worker never registered its relay"
    );

    // Publish over the worker's local WebSocket.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/relay/{relay}", worker.addr))
            .await
            .unwrap();
    let event = signed_event(5, 1_700_000_000, 1, Vec::new(), "published locally");
    let frame = format!(r#"["EVENT",{}]"#, event.to_json());
    ws.send(Message::text(frame)).await.unwrap();
    let ok = next_frame(&mut ws).await;
    assert_eq!(ok[0], "OK", "{ok}");
    assert_eq!(ok[2], true, "{ok}");

    // The mirror pulls the worker's writer log, which now holds exactly that event.
    let id = event.id.to_hex();
    assert!(
        eventually(PATIENCE, async || {
            mirrored_event(&gateway, writer, 0)
                .await
                .is_some_and(|mirrored| mirrored["id"] == id.as_str())
        })
        .await,
        "the locally published event never reached the gateway's mirror"
    );

    // `worker status --json` shows the link, the relay and its cores at their local lengths,
    // and the writer core fully mirrored (the mirror already holds its block 0).
    let url = format!("http://{}", worker.addr);
    let writer_hex = hex::encode(writer);
    let mut last = Value::Null;
    let shown =
        eventually(PATIENCE, async || {
            let (ok, stdout) = status(&url, &["--json"]);
            assert!(ok, "worker status failed");
            last = serde_json::from_str(stdout.trim()).unwrap();
            let relays = last["relays"].as_array().unwrap();
            last["gatewayConnected"] == true
                && relays.len() == 1
                && relays[0]["relayKey"] == relay.to_hex().as_str()
                && relays[0]["cores"].as_array().unwrap().iter().any(|core| {
                    core["coreKey"] == writer_hex.as_str()
                        && core["role"] == "writer"
                        && core["length"] == 1
                        && core["lagBlocks"] == 0
                })
                && relays[0]["cores"].as_array().unwrap().iter().any(|core| {
                    core["role"] == "owner" && core["coreKey"] == relay.to_hex().as_str()
                })
        })
        .await;
    assert!(shown, "status never showed the mirrored relay: {last}");
    assert_eq!(last["worker"], peer.to_hex().as_str());

    // Without --json: a table naming the relay and the link state.
    let (ok, table) = status(&url, &[]);
    assert!(ok);
    assert!(table.contains(&format!("relay {relay}")), "{table}");
    assert!(table.contains("gateway           connected"), "{table}");
}

#[test]
fn worker_run_without_a_gateway_reports_its_relays_and_no_link() {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path());
    let worker = spawn(Command::new(BIN), dir.path());
    let (ok, stdout) = status(&format!("http://{}/", worker.addr), &["--json"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(shown["gatewayConnected"], false);
    assert_eq!(shown["worker"], report["peerId"]);
    assert_eq!(shown["relays"][0]["relayKey"], report["relayKey"]);
    assert_eq!(shown["relays"].as_array().unwrap().len(), 1);
}

#[test]
fn worker_status_of_an_unreachable_worker_exits_1() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(BIN)
        .args([
            "worker",
            "status",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unreachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_writes_ingested_by_the_agent_reach_local_live_subscribers() {
    let gateway = TestGateway::start(identity(0x62)).await;
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path());
    let relay: RelayKey = report["relayKey"].as_str().unwrap().parse().unwrap();
    let peer: PeerId = report["peerId"].as_str().unwrap().parse().unwrap();
    // The gateway writes under the relay's current gateway writer key, as a lease would give
    // it (read here from the keys file; the escrow is not part of this test).
    let keys = RelayKeys::load(&dir.path().join("relays").join(relay.to_hex())).unwrap();
    let secret = keys.writer(&keys.current).unwrap().clone();
    let worker = run(dir.path(), &gateway);

    // A local client subscribes live before anything is written.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/relay/{relay}", worker.addr))
            .await
            .unwrap();
    ws.send(Message::text(r#"["REQ","live",{"kinds":[1]}]"#))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await[0], "EOSE");

    let mut writer_log = HyperLog::create(&gateway.dir.path().join("gateway-writer"), Some(secret))
        .await
        .unwrap();
    let event = signed_event(6, 1_700_000_200, 1, Vec::new(), "written by the gateway");
    writer_log
        .append(&RelayOp::event(&event).unwrap().encode())
        .await
        .unwrap();
    let writer_key = writer_log.public_key().to_bytes();
    gateway
        .state
        .lock()
        .await
        .writers
        .insert(writer_key, writer_log);

    assert!(
        eventually(PATIENCE, async || gateway.link(peer).await.is_some()).await,
        "the worker never linked to the gateway"
    );
    let link = gateway.link(peer).await.unwrap();
    let now = worker_agent_support::unix_now();
    let push = PendingWritePush {
        push_id: 1,
        relay_key: relay,
        state: PendingState::Pending,
        reason: BoundedString::truncating("replica-write"),
        types: BoundedVec::new(vec![PendingType::Event]).unwrap(),
        drive_identifier: None,
        drive_version: None,
        pending_since: now,
        updated_at: now,
        lease_version: Some(1),
        lease_active: true,
        cleared_at: None,
    };
    let answer = link
        .request(WireMessage::PendingWritePush(push))
        .await
        .unwrap();
    let WireMessage::PushAck(ack) = answer else {
        panic!("push answered with {}", answer.kind());
    };
    assert_eq!(ack.status, AckStatus::Accepted);

    // The agent copies the gateway's log in; the local server's view catches up and the live
    // subscriber gets the event.
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame[0], "EVENT", "{frame}");
    assert_eq!(frame[1], "live", "{frame}");
    assert_eq!(frame[2]["id"], event.id.to_hex().as_str(), "{frame}");
}

/// The next text frame from the worker, parsed.
async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
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

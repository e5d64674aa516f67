//! Drill: the gateway process is killed (SIGKILL) right after accepting writes under a lease,
//! while the relay's worker is away. On restart it resumes from its registry snapshot: the
//! pending notice is pushed again when the worker returns, the worker resyncs, and every write
//! that got `OK true` is served by the worker itself. Real processes: `hypergate gateway` and
//! `hypergate worker run`, a real escrow over mTLS.
//!
//! The gateway restarts on the other runtime, so with another number of core partitions
//! (tokio one, glommio one per shard), and the relay is one that lives in partition 1 of 2:
//! the snapshot one partitioning wrote restores under the other, and under glommio the
//! relay's state is in another partition than the one that answers the worker's heartbeats.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod gateway_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use escrow_support::{Backend, Harness, Options, SHARED_SECRET};
use gateway_support::{
    BIN, GATEWAY_SEED, PATIENCE, WorkerProcess, connect, eventually, get_json, identity,
    init_worker, publish, query,
};
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::partition::Partitioning;
use serde_json::Value;

/// A `hypergate gateway` process; SIGKILLed when dropped.
struct GatewayProcess {
    child: Child,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `hypergate gateway --runtime tokio`: one core partition.
const TOKIO: &[&str] = &["--runtime", "tokio"];

/// `hypergate gateway --runtime glommio --shards 2`: two core partitions.
const GLOMMIO_TWO_SHARDS: &[&str] = &["--runtime", "glommio", "--shards", "2"];

/// Starts `hypergate gateway <runtime>` on fixed ports with the escrow harness's `gateway`
/// credentials.
fn start_gateway(
    runtime: &[&str],
    data: &Path,
    http: SocketAddr,
    peer: SocketAddr,
    harness: &Harness,
) -> GatewayProcess {
    let pki = harness.pki.dir.path();
    let secret = data.join("escrow-secret");
    if !secret.exists() {
        std::fs::write(&secret, SHARED_SECRET).unwrap();
    }
    let mut child = Command::new(BIN)
        .arg("gateway")
        .args(runtime)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--listen",
            &http.to_string(),
            "--peer-listen",
            &peer.to_string(),
        ])
        .args([
            "--escrow-url",
            &harness.base_url(),
            "--escrow-client-id",
            "gateway",
        ])
        .arg("--escrow-secret-file")
        .arg(&secret)
        .arg("--escrow-ca")
        .arg(pki.join("ca.pem"))
        .arg("--escrow-client-cert")
        .arg(pki.join("gateway.pem"))
        .arg("--escrow-client-key")
        .arg(pki.join("gateway-key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the gateway never said it was listening");
        if line.starts_with("gateway key:") {
            break;
        }
    }
    GatewayProcess { child }
}

/// `hypergate worker run` linked to the gateway at `peer` (key of seed GATEWAY_SEED).
fn run_worker(dir: &Path, peer: SocketAddr, harness: &Harness) -> WorkerProcess {
    let handle_like = gateway_support::GatewayAddress {
        peer_addr: peer,
        peer_id: identity(GATEWAY_SEED).peer_id(),
    };
    gateway_support::run_worker_at(dir, &handle_like, Some(harness))
}

/// A worker initialised in `dir` whose relay lives in partition `wanted` of `partitioning`
/// (relay keys are random: initialise again until one does).
fn init_worker_in_partition(dir: &Path, partitioning: Partitioning, wanted: usize) -> Value {
    for _ in 0..64 {
        let report = init_worker(dir);
        let relay: RelayKey = report["relayKey"].as_str().unwrap().parse().unwrap();
        if partitioning.of_relay(&relay) == wanted {
            return report;
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
    panic!("64 relay keys and none in partition {wanted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_gateway_killed_after_leased_writes_resumes_their_push_restarted_on_glommio() {
    killed_and_restarted(TOKIO, GLOMMIO_TWO_SHARDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glommio_gateway_killed_after_leased_writes_resumes_their_push_restarted_on_tokio() {
    killed_and_restarted(GLOMMIO_TWO_SHARDS, TOKIO).await;
}

async fn killed_and_restarted(first: &[&str], then: &[&str]) {
    let options = Options {
        policy: PolicyConfig {
            peer_liveness_timeout: Duration::from_secs(1),
            ..PolicyConfig::default()
        },
        ..Options::default()
    };
    let harness = Harness::start(Backend::Embedded, options).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let gateway_dir = data.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    // The escrow binds the client id `gateway` to this identity.
    gateway_support::write_identity(&gateway_dir.join("identity.json"), GATEWAY_SEED);
    let (http, peer) = (free_port(), free_port());
    let mut gateway = start_gateway(first, &gateway_dir, http, peer, &harness);

    let worker_dir = data.path().join("worker");
    let report = init_worker_in_partition(&worker_dir, Partitioning::new(2).unwrap(), 1);
    let relay = report["relayKey"].as_str().unwrap().to_owned();
    let mut worker = run_worker(&worker_dir, peer, &harness);
    let ready = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        status["gatewayConnected"] == true && status["relays"][0]["escrowId"].is_string()
    })
    .await;
    assert!(ready, "the worker never linked and deposited");
    let mirrored = eventually(PATIENCE, async || {
        let replicas = get_json(http, "/api/blind-peer/replicas").await;
        replicas["replicas"][0]["cores"]
            .as_array()
            .is_some_and(|cores| {
                cores
                    .iter()
                    .any(|c| c["type"] == "owner" && c["lagBlocks"] == 0)
            })
    })
    .await;
    assert!(mirrored, "the owner log was never mirrored");

    // The worker goes away; writes are accepted under a lease.
    worker.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let url = format!("ws://{http}/relay/{relay}");
    let mut client = connect(&url).await;
    let mut accepted = Vec::new();
    for i in 0..3u64 {
        let event = signed_event(9, 1_700_000_300 + i, 1, Vec::new(), &format!("offline {i}"));
        let mut ok = publish(&mut client, &event.to_json()).await;
        for _ in 0..40 {
            if ok[2] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            ok = publish(&mut client, &event.to_json()).await;
        }
        assert_eq!(ok[2], true, "{ok}");
        accepted.push(event.id.to_hex());
    }

    let leases = get_json(http, "/api/escrow/leases").await;
    let lease_before = leases["leases"][0]["leaseId"].clone();
    assert!(lease_before.is_string(), "no lease listed: {leases}");

    // SIGKILL the gateway at once, then start it again on the same data.
    drop(client);
    gateway.child.kill().unwrap();
    let _ = gateway.child.wait();
    let restarted = Instant::now();
    let _gateway = start_gateway(then, &gateway_dir, http, peer, &harness);
    let relays = get_json(http, "/api/relays").await;
    assert_eq!(
        relays["relays"][0]["pending"]["gatewayPendingWrites"], true,
        "the restarted gateway forgot the pending writes: {relays}"
    );

    // The leased key died with the process (it is never on disk). The lease itself is still
    // valid at the escrow: the next write re-fetches it (same lease id), never a new key.
    let mut client = connect(&url).await;
    let after = signed_event(9, 1_700_000_400, 1, Vec::new(), "after the restart");
    let mut ok = publish(&mut client, &after.to_json()).await;
    for _ in 0..40 {
        if ok[2] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        ok = publish(&mut client, &after.to_json()).await;
    }
    assert_eq!(ok[2], true, "no write after the restart: {ok}");
    accepted.push(after.id.to_hex());
    let leases = get_json(http, "/api/escrow/leases").await;
    assert_eq!(
        leases["leases"][0]["leaseId"], lease_before,
        "the restarted gateway holds another lease than the one it had: {leases}"
    );
    println!(
        "restarted gateway: lease {lease_before} re-fetched, first write accepted {:?} after the restart",
        restarted.elapsed()
    );

    // The worker returns: push → resync → the accepted writes are the worker's own.
    let worker = run_worker(&worker_dir, peer, &harness);
    let returned = Instant::now();
    let cleared = eventually(PATIENCE * 2, async || {
        let relays = get_json(http, "/api/relays").await;
        relays["relays"][0]["pending"]["gatewayPendingWrites"] == false
    })
    .await;
    assert!(
        cleared,
        "the pending writes were never resynced after the restart"
    );
    println!(
        "worker back: pending writes pushed, resynced and cleared in {:?}",
        returned.elapsed()
    );
    let mut local = connect(&format!("ws://{}/relay/{relay}", worker.addr)).await;
    let ids: Vec<String> = query(&mut local, "mine", r#"{"kinds":[1]}"#)
        .await
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &accepted {
        assert!(
            ids.contains(id),
            "accepted write {id} is not on the worker: {ids:?}"
        );
    }
}

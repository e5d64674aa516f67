//! Join requests and auth callbacks through the real gateway, end to end: a real escrow over
//! mTLS, the real gateway and `hypergate worker run` as a real process.
//!
//! Worker online → `POST /post/join` is forwarded and the worker publishes the join event;
//! worker away → joins and callbacks are stored under a lease as artifacts (202 queued); the
//! worker returns → push → the artifacts are fetched and replayed: a valid join is published,
//! one of the wrong kind is refused, the callback is recorded; the pending flag clears.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod gateway_support;

use std::time::Duration;

use escrow_support::{Backend, Harness, Options};
use gateway_support::{
    PATIENCE, connect, eventually, get_json, http_request, init_worker, query, run_worker,
    start_gateway_on,
};
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::nostr::testing::signed_event;
use hypergate_tokio::gateway::GatewayRuntime;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_reach_the_worker_online_and_are_replayed_from_artifacts_after_an_outage() {
    scenario(GatewayRuntime::Tokio).await;
}

/// The same join scenario against the glommio gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glommio_gateway_records_and_replays_joins_the_same_way() {
    let _slot = gateway_support::GLOMMIO_SLOT.lock().await;
    scenario(gateway_support::GLOMMIO).await;
}

async fn scenario(runtime: GatewayRuntime) {
    let options = Options {
        policy: PolicyConfig {
            peer_liveness_timeout: Duration::from_secs(1),
            ..PolicyConfig::default()
        },
        ..Options::default()
    };
    let harness = Harness::start(Backend::Embedded, options).await.unwrap();
    let gateway_data = tempfile::tempdir().unwrap();
    let gateway = start_gateway_on(
        runtime,
        gateway_data.path(),
        Some(gateway_support::escrow_config(&harness, "gateway")),
    )
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let report = init_worker(worker_dir.path());
    let relay = report["relayKey"].as_str().unwrap().to_owned();
    let mut worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let ready = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        status["gatewayConnected"] == true
            && status["relays"][0]["escrowId"].is_string()
            && replicas["replicas"][0]["cores"]
                .as_array()
                .is_some_and(|cores| {
                    cores
                        .iter()
                        .any(|c| c["type"] == "owner" && c["lagBlocks"] == 0)
                })
    })
    .await;
    assert!(ready, "the worker never linked, deposited and got mirrored");

    let issued = http_request(
        gateway.http_addr,
        "POST",
        "/api/relay-tokens/issue",
        json!({ "relayKey": relay }).to_string().as_bytes(),
    )
    .await
    .json();
    let token = issued["token"].as_str().unwrap().to_owned();
    let join_path = format!("/post/join/{relay}?token={token}");

    // Without a token: 401; online: forwarded, and the worker publishes the join.
    let refused = http_request(
        gateway.http_addr,
        "POST",
        &format!("/post/join/{relay}"),
        b"{}",
    )
    .await;
    assert_eq!(refused.status, 401);
    let online = signed_event(11, 1_700_000_500, 9021, Vec::new(), "let me in");
    let body =
        json!({ "event": serde_json::from_str::<serde_json::Value>(&online.to_json()).unwrap() });
    let answer = http_request(
        gateway.http_addr,
        "POST",
        &join_path,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["status"], "pending");
    let wrong = signed_event(11, 1_700_000_501, 1, Vec::new(), "not a join");
    let bad =
        json!({ "event": serde_json::from_str::<serde_json::Value>(&wrong.to_json()).unwrap() });
    let answer = http_request(
        gateway.http_addr,
        "POST",
        &join_path,
        bad.to_string().as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"], "Invalid event kind");

    // The worker goes away: joins and callbacks are kept as artifacts under a lease.
    worker.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let offline = signed_event(12, 1_700_000_600, 9021, Vec::new(), "joining while away");
    let body =
        json!({ "event": serde_json::from_str::<serde_json::Value>(&offline.to_json()).unwrap() });
    let mut queued = None;
    for _ in 0..40 {
        let answer = http_request(
            gateway.http_addr,
            "POST",
            &join_path,
            body.to_string().as_bytes(),
        )
        .await;
        if answer.status == 202 {
            queued = Some(answer.json());
            break;
        }
        assert_eq!(answer.status, 425, "{:?}", answer.json());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let queued = queued.expect("the join was never stored under a lease");
    assert_eq!(queued["status"], "queued");
    assert!(queued["artifactPath"].as_str().unwrap().contains("/join-"));
    let answer = http_request(
        gateway.http_addr,
        "POST",
        &join_path,
        bad.to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        answer.status, 202,
        "the gateway stores what it cannot judge"
    );
    let callback = http_request(
        gateway.http_addr,
        "POST",
        &format!("/callback/finalize-auth/{relay}?token={token}"),
        json!({ "pubkey": "ab" }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(callback.status, 202, "{:?}", callback.json());

    // The worker returns: the artifacts are replayed and the pending flag clears.
    let worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let cleared = eventually(PATIENCE * 2, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        replicas["replicas"][0]["gatewayPendingWrites"] == false
    })
    .await;
    assert!(cleared, "the artifacts were never resynced");
    let mut local = connect(&format!("ws://{}/relay/{relay}", worker.addr)).await;
    let joins: Vec<String> = query(&mut local, "joins", r#"{"kinds":[9021]}"#)
        .await
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(joins.contains(&online.id.to_hex()), "{joins:?}");
    assert!(joins.contains(&offline.id.to_hex()), "{joins:?}");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            worker_dir
                .path()
                .join("relays")
                .join(&relay)
                .join("artifacts-replayed.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let outcomes: Vec<&str> = record
        .as_object()
        .unwrap()
        .values()
        .map(|handled| handled["outcome"].as_str().unwrap())
        .collect();
    let count = |outcome: &str| outcomes.iter().filter(|o| **o == outcome).count();
    assert_eq!(
        (count("joined"), count("refused"), count("received")),
        (1, 1, 1),
        "{record}"
    );
}

//! The full lifecycle through the real gateway, end to end on loopback: a real escrow over
//! mTLS, `hypergate worker run` as a real process, and NIP-01 clients on the gateway.
//!
//! Worker online → mirrored; worker SIGKILLed → the gateway serves the same REQ from the
//! mirror and an open subscription stays live; an EVENT is read-only while the escrow's
//! liveness timeout has not passed, then accepted under an automatically requested lease;
//! the worker restarts → push → resync → resync-complete → rotation, and the event the
//! gateway accepted is served by the worker itself. The scenario runs on the tokio gateway
//! and on the glommio gateway.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod gateway_support;
mod nostr_tools_support;

use std::time::Duration;

use escrow_support::{Backend, Harness, Options};
use gateway_support::{
    GLOMMIO, PATIENCE, connect, eventually, get_json, init_worker, next, publish, query,
    run_worker, start_gateway_on,
};
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::nostr::testing::signed_event;
use hypergate_tokio::gateway::GatewayRuntime;
use nostr_tools_support::NostrTools;

/// The escrow's liveness timeout in this test: long enough to see a refusal first.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

async fn lifecycle(backend: Backend, runtime: GatewayRuntime) {
    let options = Options {
        policy: PolicyConfig {
            peer_liveness_timeout: LIVENESS_TIMEOUT,
            ..PolicyConfig::default()
        },
        ..Options::default()
    };
    let Some(harness) = Harness::start(backend, options).await else {
        return; // PostgreSQL unavailable and CI unset: skipped by the harness
    };
    let nostr_tools = NostrTools::install();
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

    // Three events published on the worker reach the gateway's mirror.
    let mut local = connect(&format!("ws://{}/relay/{relay}", worker.addr)).await;
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let event = signed_event(7, 1_700_000_000 + i, 1, Vec::new(), &format!("note {i}"));
        let ok = publish(&mut local, &event.to_json()).await;
        assert_eq!(ok[2], true, "{ok}");
        ids.push(event.id.to_hex());
    }
    let mirrored = eventually(PATIENCE, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        replicas["replicas"].as_array().is_some_and(|relays| {
            relays.iter().any(|entry| {
                entry["relayKey"] == relay.as_str()
                    && entry["cores"].as_array().is_some_and(|cores| {
                        cores
                            .iter()
                            .any(|core| core["type"] == "writer" && core["localLength"] == 3)
                    })
            })
        })
    })
    .await;
    assert!(mirrored, "the worker's events never reached the mirror");
    // The worker deposited its gateway writer key (the escrow lists nothing active yet).
    let deposited = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        status["relays"][0]["escrowId"].is_string()
    })
    .await;
    assert!(deposited, "the worker never deposited its gateway writer");
    let before = get_json(worker.addr, "/status").await;
    let old_writer = before["relays"][0]["gatewayWriter"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_deposit = before["relays"][0]["escrowId"].as_str().unwrap().to_owned();

    // A client on the gateway, forwarded to the worker: it reads and publishes through it, and
    // keeps a subscription open across the worker's death.
    let url = format!("ws://{}/relay/{relay}", gateway.http_addr);
    let mut follower = connect(&url).await;
    let before = query(&mut follower, "follow", r#"{"kinds":[1]}"#).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let forwarded = signed_event(7, 1_700_000_050, 1, Vec::new(), "through the gateway");
    let ok = publish(&mut follower, &forwarded.to_json()).await;
    assert_eq!(ok[2], true, "{ok}");
    ids.push(forwarded.id.to_hex());
    // It reached the worker itself (its local socket serves it).
    let local_copy = query(
        &mut local,
        "direct",
        &format!(r#"{{"ids":["{}"]}}"#, forwarded.id.to_hex()),
    )
    .await;
    assert_eq!(local_copy.len(), 1);
    // … and its own live copy arrives on the open subscription once.
    let echoed = loop {
        let frame = next(&mut follower).await;
        if frame[0] == "EVENT" {
            break frame;
        }
    };
    assert_eq!(echoed[2]["id"], forwarded.id.to_hex().as_str());
    let mirrored_all = eventually(PATIENCE, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        replicas["replicas"][0]["cores"]
            .as_array()
            .is_some_and(|cores| {
                cores
                    .iter()
                    .any(|core| core["type"] == "writer" && core["localLength"] == 4)
            })
    })
    .await;
    assert!(mirrored_all, "the forwarded event never reached the mirror");

    // The same through a real Nostr client library: publish and query via the gateway.
    let client_secret = "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e";
    if let Some(tools) = &nostr_tools {
        let published = tools
            .step(
                &url,
                &["publish", client_secret, "nostr-tools through the gateway"],
            )
            .await;
        assert_eq!(published["accepted"], true, "{published}");
        let found = tools.step(&url, &["query", r#"{"kinds":[1]}"#]).await;
        assert!(
            found["ids"].as_array().unwrap().contains(&published["id"]),
            "{found}"
        );
        ids.insert(0, published["id"].as_str().unwrap().to_owned());
        let mirrored_all = eventually(PATIENCE, async || {
            let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
            replicas["replicas"][0]["cores"]
                .as_array()
                .is_some_and(|cores| {
                    cores
                        .iter()
                        .any(|core| core["type"] == "writer" && core["localLength"] == 5)
                })
        })
        .await;
        assert!(
            mirrored_all,
            "the nostr-tools event never reached the mirror"
        );
    }

    worker.kill();
    drop(local);

    // The same REQ on a new connection is served from the mirror, newest first.
    let mut reader = connect(&url).await;
    let answered = query(&mut reader, "again", r#"{"kinds":[1]}"#).await;
    let got: Vec<&str> = answered.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // `ids` is oldest first, except that a nostr-tools event (created now) went in front.
    let mut newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    if nostr_tools.is_some() {
        let now_event = newest_first.pop().unwrap();
        newest_first.insert(0, now_event);
    }
    assert_eq!(got, newest_first);

    // A write before the escrow's liveness timeout passed: read-only, with the reason.
    let mut writer = connect(&url).await;
    let early = signed_event(8, 1_700_000_100, 1, Vec::new(), "too early");
    let refused = publish(&mut writer, &early.to_json()).await;
    assert_eq!(refused[2], false, "{refused}");
    assert!(
        refused[3].as_str().unwrap().starts_with("read-only:"),
        "{refused}"
    );
    if let Some(tools) = &nostr_tools {
        let early = tools
            .step(&url, &["publish", client_secret, "still too early"])
            .await;
        assert_eq!(early["accepted"], false, "{early}");
        assert!(
            early["message"].as_str().unwrap().contains("read-only:"),
            "{early}"
        );
        let found = tools.step(&url, &["query", r#"{"kinds":[1]}"#]).await;
        assert_eq!(found["ids"], serde_json::json!(newest_first), "{found}");
    }

    // After the timeout, a write is accepted under a lease the gateway requested by itself.
    tokio::time::sleep(LIVENESS_TIMEOUT).await;
    let offline = signed_event(8, 1_700_000_200, 1, Vec::new(), "written while offline");
    let mut accepted = None;
    for _ in 0..20 {
        let ok = publish(&mut writer, &offline.to_json()).await;
        if ok[2] == true {
            accepted = Some(ok);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let accepted = accepted.expect("the gateway never accepted a write under a lease");
    assert_eq!(accepted[1], offline.id.to_hex().as_str());

    // The subscription opened before the worker died receives it live (after the events
    // published through the worker earlier, if the nostr-tools steps ran).
    let offline_id = offline.id.to_hex();
    let live = loop {
        let frame = next(&mut follower).await;
        if frame[0] == "EVENT" && frame[2]["id"] == offline_id.as_str() {
            break frame;
        }
    };
    assert_eq!(live[1], "follow");

    // The worker returns: push → resync → resync-complete → rotation; the event the gateway
    // accepted is now served by the worker itself.
    let worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let rotated = eventually(PATIENCE * 2, async || {
        let status = get_json(worker.addr, "/status").await;
        status["rotations"]
            .as_array()
            .is_some_and(|rotations| !rotations.is_empty())
    })
    .await;
    assert!(rotated, "the worker never rotated its gateway writer");
    // The rotation retired the key the gateway wrote with: a new writer, a new deposit, and
    // the old deposit revoked at the escrow (revoking it again revokes nothing).
    let completed = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        status["rotations"][0]["status"] == "completed"
            && status["relays"][0]["escrowId"].is_string()
            && status["relays"][0]["escrowId"] != old_deposit.as_str()
    })
    .await;
    assert!(completed, "the rotation never completed with a new deposit");
    let after = get_json(worker.addr, "/status").await;
    assert_eq!(after["rotations"][0]["previousWriter"], old_writer.as_str());
    assert_ne!(after["relays"][0]["gatewayWriter"], old_writer.as_str());
    let again = harness
        .client("worker")
        .revoke(
            &hypergate_tokio::escrow::client::RevokeBy::EscrowId(old_deposit.clone()),
            None,
            "check",
        )
        .await
        .unwrap();
    assert_eq!(
        again["revoked"].as_array().map(Vec::len),
        Some(0),
        "the old deposit was still active: {again}"
    );
    let mut local = connect(&format!("ws://{}/relay/{relay}", worker.addr)).await;
    let served = query(
        &mut local,
        "resynced",
        &format!(r#"{{"ids":["{}"]}}"#, offline.id.to_hex()),
    )
    .await;
    assert_eq!(
        served.len(),
        1,
        "the worker does not serve the gateway's write"
    );
    // The gateway's pending flag is cleared by the worker's resync-complete.
    let cleared = eventually(PATIENCE, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        replicas["replicas"][0]["gatewayPendingWrites"] == false
    })
    .await;
    assert!(
        cleared,
        "the gateway still has pending writes after the resync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_survives_its_worker_dying_and_returning_with_writes_made_under_a_lease() {
    lifecycle(Backend::Embedded, GatewayRuntime::Tokio).await;
}

/// The same scenario against the glommio gateway: forwarding, fallback reads, escrow-gated
/// writes and the resync, on two shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_holds_on_the_glommio_gateway() {
    let _slot = gateway_support::GLOMMIO_SLOT.lock().await;
    lifecycle(Backend::Embedded, GLOMMIO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_holds_with_the_escrow_store_on_postgresql() {
    lifecycle(Backend::Postgres, GatewayRuntime::Tokio).await;
}

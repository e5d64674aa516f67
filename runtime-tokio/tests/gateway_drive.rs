//! Drive writes made through the real gateway while the relay's worker is away reach the worker
//! at resync, end to end on loopback: a real escrow over mTLS, the real gateway, and
//! `hypergate worker run` as a real process.
//!
//! Worker online → registered and deposited; a PUT is refused without a token (401), with a
//! bad token (403), with an empty body (400); worker SIGKILLed → past the escrow's liveness
//! timeout a PUT with a client token is stored under a lease (202), one whose pending mark
//! cannot be written is refused (503), and the gateway serves the file from its own drive; the worker returns → push → the drive files are fetched and checked
//! → resync-complete clears the pending flag, and the worker serves the file itself, locally
//! and through the gateway's peer-first read (told apart by the worker's `content-type`).

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod gateway_support;

use std::time::Duration;

use escrow_support::{Backend, Harness, Options};
use gateway_support::{
    PATIENCE, eventually, get_json, http_request, init_worker, run_worker, start_gateway_on,
};
use hypergate_core::escrow::PolicyConfig;
use hypergate_tokio::gateway::GatewayRuntime;

/// The escrow's liveness timeout in this test.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes that are not text, so a lossy conversion anywhere would show.
fn photo() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_upload_made_while_the_worker_was_away_is_served_by_the_worker_after_resync() {
    scenario(GatewayRuntime::Tokio).await;
}

/// The same drive scenario against the glommio gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glommio_gateway_serves_and_resyncs_drive_uploads_the_same_way() {
    let _slot = gateway_support::GLOMMIO_SLOT.lock().await;
    scenario(gateway_support::GLOMMIO).await;
}

async fn scenario(runtime: GatewayRuntime) {
    let options = Options {
        policy: PolicyConfig {
            peer_liveness_timeout: LIVENESS_TIMEOUT,
            ..PolicyConfig::default()
        },
        ..Options::default()
    };
    let harness = Harness::start(Backend::Embedded, options)
        .await
        .expect("the embedded escrow always starts");
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

    // Registered, deposited, and the mirror caught up (a lease needs a fresh mirror).
    let ready = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        status["relays"][0]["escrowId"].is_string()
            && replicas["replicas"].as_array().is_some_and(|relays| {
                relays.iter().any(|entry| {
                    entry["relayKey"] == relay.as_str()
                        && entry["cores"].as_array().is_some_and(|cores| {
                            cores
                                .iter()
                                .any(|core| core["type"] == "owner" && core["localLength"] != 0)
                                && cores.iter().all(|core| core["lagBlocks"] == 0)
                        })
                })
            })
    })
    .await;
    assert!(ready, "the worker never registered, deposited and mirrored");

    let drive_path = format!("/drive/{relay}/photo.png");
    let token = http_request(
        gateway.http_addr,
        "POST",
        "/api/relay-tokens/issue",
        format!(r#"{{"relayKey":"{relay}"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(token.status, 200, "{:?}", token.json());
    let token = token.json()["token"].as_str().unwrap().to_owned();

    // Refusals that need no lease.
    let bare = http_request(gateway.http_addr, "PUT", &drive_path, b"x").await;
    assert_eq!(bare.status, 401);
    assert_eq!(bare.json()["error"], "token-required");
    let forged = format!("{drive_path}?token=not-a-token");
    let forged = http_request(gateway.http_addr, "PUT", &forged, b"x").await;
    assert_eq!(forged.status, 403);
    assert_eq!(forged.json()["error"], "invalid-token");
    let with_token = format!("{drive_path}?token={token}");
    let empty = http_request(gateway.http_addr, "PUT", &with_token, b"").await;
    assert_eq!(empty.status, 400, "{:?}", empty.json());

    worker.kill();
    tokio::time::sleep(LIVENESS_TIMEOUT).await;

    // Stored under a lease the gateway requests by itself (425 until the escrow agrees).
    let photo = photo();
    let mut stored = None;
    for _ in 0..40 {
        let answer = http_request(gateway.http_addr, "PUT", &with_token, &photo).await;
        if answer.status != 425 {
            stored = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stored = stored.expect("the gateway never got a lease for the drive write");
    assert_eq!(stored.status, 202, "{:?}", stored.json());
    assert_eq!(stored.json()["status"], "stored");
    assert_eq!(stored.json()["mode"], "gateway-drive");
    let pending = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
    assert_eq!(pending["replicas"][0]["gatewayPendingWrites"], true);

    // A write whose pending mark cannot reach the registry snapshot is not acknowledged: a
    // directory where the snapshot goes makes its replacement fail, even for root.
    let snapshot = gateway_data.path().join("registry.snapshot");
    std::fs::remove_file(&snapshot).unwrap();
    std::fs::create_dir(&snapshot).unwrap();
    std::fs::write(snapshot.join("in-the-way"), b"").unwrap();
    let elsewhere = format!("/drive/{relay}/unrecorded.txt?token={token}");
    let unrecorded = http_request(gateway.http_addr, "PUT", &elsewhere, b"second").await;
    assert_eq!(unrecorded.status, 503, "{:?}", unrecorded.json());
    assert_eq!(
        unrecorded.json()["error"],
        "gateway-pending-write-not-recorded"
    );
    std::fs::remove_dir_all(&snapshot).unwrap();

    // With no worker, the gateway serves it from its own drive.
    let from_gateway = http_request(gateway.http_addr, "GET", &drive_path, b"").await;
    assert_eq!(from_gateway.status, 200);
    assert_eq!(from_gateway.body, photo);
    assert_eq!(
        from_gateway.header("content-type"),
        Some("application/octet-stream")
    );

    // The worker returns: push → drive import → resync-complete clears the flag.
    let worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let cleared = eventually(PATIENCE * 2, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        replicas["replicas"][0]["gatewayPendingWrites"] == false
    })
    .await;
    assert!(
        cleared,
        "the gateway still has pending writes after the resync"
    );

    // The worker serves the file itself, locally …
    let local = http_request(worker.addr, "GET", &drive_path, b"").await;
    assert_eq!(local.status, 200, "{:?}", local.json());
    assert_eq!(local.body, photo);
    assert_eq!(local.header("content-type"), Some("image/png"));
    let absent = http_request(worker.addr, "GET", &format!("/drive/{relay}/none.png"), b"").await;
    assert_eq!(absent.status, 404);
    assert_eq!(absent.json()["error"], "File not found");

    // … and to the gateway's peer-first read (the worker's content-type shows who answered).
    let through_worker = eventually(PATIENCE, async || {
        let answer = http_request(gateway.http_addr, "GET", &drive_path, b"").await;
        answer.status == 200
            && answer.body == photo
            && answer.header("content-type") == Some("image/png")
    })
    .await;
    assert!(
        through_worker,
        "the gateway never read the file from the worker"
    );

    // The import was recorded after the files: a restart has nothing left to fetch. It reached
    // the drive's last version, the upload whose mark failed (stored all the same, one after
    // the acknowledged one).
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            worker_dir
                .path()
                .join("relays")
                .join(&relay)
                .join("drive-import.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["drives"][relay.as_str()]["version"],
        stored.json()["driveVersion"].as_u64().unwrap() + 1
    );

    // The worker's drive is mirrored into the gateway like its relay logs (both of its logs,
    // fully), so the blind peer keeps the files too.
    let drive_mirrored = eventually(PATIENCE, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        let cores = replicas["replicas"][0]["cores"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ["drive-meta", "drive-blobs"].iter().all(|role| {
            cores.iter().any(|core| {
                core["type"] == *role
                    && core["localLength"].as_u64().unwrap_or(0) > 0
                    && core["lagBlocks"] == 0
            })
        })
    })
    .await;
    assert!(
        drive_mirrored,
        "the worker's drive logs were never mirrored"
    );
}

//! The gateway's operator surface as an operator uses it: `hypergate ctl` (a real process)
//! against a real gateway with an admin token, a real escrow over mTLS and a real worker
//! process: relays and replicas listed, a manual lease refused while the worker is healthy and
//! granted once it is gone, the lease listed, then revoked at the escrow and ended at the
//! gateway; the API refuses callers without the token.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod gateway_support;

use std::process::Command;
use std::time::Duration;

use escrow_support::{Backend, Harness, Options};
use gateway_support::{
    BIN, GATEWAY_SEED, PATIENCE, escrow_config, eventually, http_get, identity, init_worker,
    run_worker,
};
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig};
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::gateway::GatewayConfig;
use hypergate_core::session::SessionConfig;
use hypergate_tokio::gateway::GatewayOptions;
use hypergate_tokio::gateway::GatewayRuntime;
use serde_json::Value;

const TOKEN: &str = "operator-token-for-tests";

/// `hypergate ctl --json …`: (success, parsed stdout or stderr text).
fn ctl(gateway: &str, token_file: &std::path::Path, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(BIN)
        .args(["ctl", "--json", "--gateway", gateway, "--token-file"])
        .arg(token_file)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    (
        output.status.success(),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_requests_and_revokes_leases_with_ctl_and_needs_the_token() {
    scenario(GatewayRuntime::Tokio).await;
}

/// The same operator scenario against the glommio gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glommio_gateway_serves_the_operator_api_the_same_way() {
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
    let data = tempfile::tempdir().unwrap();
    let gateway = hypergate_tokio::gateway::start_on(
        runtime,
        GatewayOptions {
            data_dir: data.path().join("gateway"),
            identity: identity(GATEWAY_SEED),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            peer_listen: "127.0.0.1:0".parse().unwrap(),
            accept: AcceptPolicy::Open,
            link: LinkConfig::default(),
            core: GatewayConfig::default(),
            session: SessionConfig::default(),
            outbound_queue: 1024,
            limits: hypergate_tokio::gateway::ClientLimits::default(),
            escrow: Some(escrow_config(&harness, "gateway")),
            escrow_operator: Some(escrow_config(&harness, "operator")),
            admin_token: Some(TOKEN.into()),
            token_secret: zeroize::Zeroizing::new(b"test token secret".to_vec()),
        },
    )
    .await
    .unwrap();
    let token_file = data.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let url = format!("http://{}", gateway.http_addr);

    let worker_dir = data.path().join("worker");
    let report = init_worker(&worker_dir);
    let relay = report["relayKey"].as_str().unwrap().to_owned();
    let mut worker = run_worker(&worker_dir, &gateway, Some(&harness));

    // Without the token: 401 with a JSON error.
    let refused = http_get(gateway.http_addr, "/api/relays").await;
    assert!(refused.contains("admin token required"), "{refused}");

    let listed = eventually(PATIENCE, async || {
        let (ok, relays, _) = ctl(&url, &token_file, &["relays"]);
        ok && relays["relays"][0]["relayKey"] == relay.as_str()
            && relays["relays"][0]["escrowEnabled"] == true
            && relays["relays"][0]["workers"][0]["linked"] == true
    })
    .await;
    assert!(listed, "ctl relays never showed the worker's relay");
    // An operator gives the relay an alias; clients reach it by the original's `/:a/:b` form.
    let registered = register(gateway.http_addr, Some(TOKEN), &format!(
        r#"{{"relayKey":"{relay}","identifiers":["npub1ops:club"],"metadata":{{"name":"Club"}}}}"#
    ))
    .await;
    assert_eq!(registered.status, 200, "{:?}", registered.json());
    assert_eq!(registered.json()["identifiers"][0], "npub1ops:club");
    assert_eq!(
        register(gateway.http_addr, Some(TOKEN), r#"{"identifiers":[]}"#)
            .await
            .status,
        400
    );
    assert_eq!(register(gateway.http_addr, None, "{}").await.status, 401);
    let mut aliased =
        gateway_support::connect(&format!("ws://{}/npub1ops/club", gateway.http_addr)).await;
    let stored = gateway_support::query(&mut aliased, "alias", r#"{"limit":1}"#).await;
    assert!(stored.len() <= 1);
    let (ok, replicas, _) = ctl(&url, &token_file, &["replicas"]);
    assert!(ok);
    assert_eq!(replicas["replicas"][0]["relayKey"], relay.as_str());

    // A lease is refused while the worker is healthy (exit 1, the reason on stderr).
    let (ok, _, stderr) = ctl(&url, &token_file, &["request-lease", &relay]);
    assert!(!ok);
    assert!(stderr.contains("409"), "{stderr}");

    // The worker dies; after the escrow's liveness timeout the manual request is granted.
    worker.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let granted = eventually(PATIENCE, async || {
        let (ok, _, _) = ctl(&url, &token_file, &["request-lease", &relay]);
        let (_, leases, _) = ctl(&url, &token_file, &["leases"]);
        ok && leases["leases"][0]["relayKey"] == relay.as_str()
    })
    .await;
    assert!(granted, "the manual lease request was never granted");
    // The replicas API speaks the original's field names, the lease included.
    let (_, replicas, _) = ctl(&url, &token_file, &["replicas"]);
    let item = &replicas["replicas"][0];
    assert_eq!(item["identifier"], "npub1ops:club", "{item}");
    assert_eq!(item["gatewayLeaseActive"], true, "{item}");
    assert!(
        item["gatewayLeaseId"]
            .as_str()
            .unwrap()
            .starts_with("lease-")
    );
    for field in [
        "ownerPeerKey",
        "totalCores",
        "announcedCount",
        "lagMs",
        "lagBlocks",
        "healthy",
        "gatewayPendingWrites",
    ] {
        assert!(!item[field].is_null(), "{field} missing: {item}");
    }

    // Revoked at the escrow, ended at the gateway.
    let (ok, revoked, stderr) = ctl(&url, &token_file, &["revoke", &relay, "--reason", "drill"]);
    assert!(ok, "{stderr}");
    assert!(
        revoked["endedLease"]
            .as_str()
            .unwrap()
            .starts_with("lease-")
    );
    assert!(
        !revoked["escrow"]["revoked"].as_array().unwrap().is_empty(),
        "{revoked}"
    );
    let (_, leases, _) = ctl(&url, &token_file, &["leases"]);
    assert_eq!(leases["leases"], Value::Array(Vec::new()));

    // A wrong token is refused by ctl with exit 1.
    let wrong = data.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let (ok, _, stderr) = ctl(&url, &wrong, &["leases"]);
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");
}

/// `POST /api/relays` with `body`, authenticated with `token` when given.
async fn register(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    body: &str,
) -> gateway_support::HttpAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let head = format!(
        "POST /api/relays HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    gateway_support::HttpAnswer {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

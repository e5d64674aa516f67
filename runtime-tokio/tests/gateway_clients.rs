//! What a client that misbehaves, or asks for what cannot be served, gets from the real
//! gateway — with a worker that speaks the real peer link (Noise XX, postcard frames) and
//! registers relays, so every case is reachable:
//! - an unknown relay: close 4404; a relay that requires auth: 4403 with a bad token, served
//!   with a valid one, and without one only after a valid NIP-42 answer to its challenge;
//! - a relay with no worker and no replica: close 1013 "No peers available";
//! - more connections from one address than allowed: close 1008, others unaffected;
//! - a flood of frames: `rate-limited:` answers, and the connection is served again once it
//!   slows down.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod gateway_support;

use std::time::Duration;

use futures_util::StreamExt;
use gateway_support::{GATEWAY_SEED, connect, identity, send};
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig, PeerLink, connect as link_connect};
use hypergate_core::gateway::GatewayConfig;
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::Tag;
use hypergate_core::session::SessionConfig;
use hypergate_core::wire::{BoundedString, BoundedVec, Message, RegisterRelays, RelayRegistration};
use hypergate_tokio::gateway::{ClientLimits, GatewayHandle, GatewayOptions, GatewayRuntime};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

async fn gateway(
    runtime: GatewayRuntime,
    limits: ClientLimits,
) -> (tempfile::TempDir, GatewayHandle) {
    let data = tempfile::tempdir().unwrap();
    let options = GatewayOptions {
        data_dir: data.path().to_path_buf(),
        identity: identity(GATEWAY_SEED),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        accept: AcceptPolicy::Open,
        link: LinkConfig::default(),
        core: GatewayConfig::default(),
        session: SessionConfig::default(),
        outbound_queue: 1024,
        limits,
        escrow: None,
        escrow_operator: None,
        admin_token: None,
        token_secret: zeroize::Zeroizing::new(b"test token secret".to_vec()),
    };
    let handle = hypergate_tokio::gateway::start_on(runtime, options)
        .await
        .unwrap();
    (data, handle)
}

/// A worker over the real peer link that registers `relay` (requiring auth or not).
async fn fake_worker(
    gateway: &GatewayHandle,
    seed: u8,
    relay: RelayKey,
    requires_auth: bool,
) -> PeerLink {
    let stream = tokio::net::TcpStream::connect(gateway.peer_addr)
        .await
        .unwrap();
    let established = link_connect(
        stream.compat(),
        &identity(seed),
        gateway.peer_id,
        &LinkConfig::default(),
        tokio::time::sleep,
    )
    .await
    .unwrap();
    tokio::spawn(established.driver.run());
    // Nothing is read from the inbound queue: this worker serves no frames.
    std::mem::forget(established.inbound);
    let registration = RelayRegistration {
        relay_key: relay,
        identifiers: BoundedVec::new(vec![BoundedString::new("npub1test:demo").unwrap()]).unwrap(),
        metadata: Default::default(),
        requires_auth,
        escrow: None,
    };
    let ack = established
        .link
        .request(Message::RegisterRelays(RegisterRelays {
            relays: BoundedVec::new(vec![registration]).unwrap(),
        }))
        .await
        .unwrap();
    assert!(matches!(ack, Message::RegisterAck(_)), "{ack:?}");
    established.link
}

/// The close code and reason the gateway ends `ws` with.
async fn close_of(ws: &mut gateway_support::Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the gateway never closed the connection")
        {
            Some(Ok(Ws::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_relays_unauthorised_clients_and_unservable_relays_get_the_originals_close_codes() {
    close_codes(GatewayRuntime::Tokio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glommio_gateway_answers_with_the_same_close_codes() {
    let _slot = gateway_support::GLOMMIO_SLOT.lock().await;
    close_codes(gateway_support::GLOMMIO).await;
}

async fn close_codes(runtime: GatewayRuntime) {
    let (_data, gateway) = gateway(runtime, ClientLimits::default()).await;
    let base = format!("ws://{}", gateway.http_addr);

    let mut unknown = connect(&format!("{base}/relay/{}", RelayKey([9; 32]))).await;
    assert_eq!(
        close_of(&mut unknown).await,
        (4404, "Relay not registered".into())
    );

    let open = RelayKey([1; 32]);
    let guarded = RelayKey([2; 32]);
    let worker = fake_worker(&gateway, 0x70, open, false).await;
    let other = fake_worker(&gateway, 0x71, guarded, true).await;

    // Without a token: NIP-42. Nothing is served before a valid answer to the challenge.
    let guarded_url = format!("{base}/relay/{guarded}");
    let mut no_token = connect(&guarded_url).await;
    let challenge = gateway_support::next(&mut no_token).await;
    assert_eq!(challenge[0], "AUTH", "{challenge}");
    let challenge = challenge[1].as_str().unwrap().to_owned();
    send(&mut no_token, r#"["REQ","early",{}]"#).await;
    let closed = gateway_support::next(&mut no_token).await;
    assert_eq!(closed[0], "CLOSED");
    assert!(
        closed[2].as_str().unwrap().starts_with("auth-required:"),
        "{closed}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let answer = |challenge: &str| {
        hypergate_core::nostr::testing::signed_event(
            21,
            now,
            22242,
            vec![
                Tag::new(["relay", guarded_url.as_str()]),
                Tag::new(["challenge", challenge]),
            ],
            "",
        )
    };
    send(
        &mut no_token,
        &format!(r#"["AUTH",{}]"#, answer("not-it").to_json()),
    )
    .await;
    let refused = gateway_support::next(&mut no_token).await;
    assert_eq!(
        (refused[0].as_str(), refused[2].as_bool()),
        (Some("OK"), Some(false))
    );
    let good = answer(&challenge);
    send(&mut no_token, &format!(r#"["AUTH",{}]"#, good.to_json())).await;
    let accepted = gateway_support::next(&mut no_token).await;
    assert_eq!(
        accepted,
        serde_json::json!(["OK", good.id.to_hex(), true, ""])
    );
    // Authenticated: the REQ now goes to the worker (which never answers here).
    send(&mut no_token, r#"["REQ","later",{}]"#).await;
    let silent = tokio::time::timeout(Duration::from_millis(300), no_token.next()).await;
    assert!(
        silent.is_err(),
        "the authenticated REQ was refused: {silent:?}"
    );
    let mut bad_token = connect(&format!("{base}/relay/{guarded}?token=abc.def")).await;
    assert_eq!(
        close_of(&mut bad_token).await,
        (4403, "Invalid token".into())
    );

    // A valid token for that relay is let through.
    let issued = gateway_support::http_request(
        gateway.http_addr,
        "POST",
        "/api/relay-tokens/issue",
        format!(r#"{{"relayKey":"{guarded}"}}"#).as_bytes(),
    )
    .await;
    let token = issued.json();
    let token = token["token"].as_str().unwrap();
    let mut admitted = connect(&format!("{base}/relay/{guarded}?token={token}")).await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), admitted.next()).await;
    assert!(quiet.is_err(), "a valid token was refused: {quiet:?}");

    // A relay whose only worker left, with no replica: nothing can serve it.
    let code = hypergate_adapters::peer_link::CloseCode::NORMAL;
    worker.close(code, "test over").await.unwrap();
    other.close(code, "test over").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut unservable = connect(&format!("{base}/relay/{open}")).await;
    send(&mut unservable, r#"["REQ","s",{}]"#).await;
    assert_eq!(
        close_of(&mut unservable).await,
        (1013, "No peers available".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_are_closed_and_floods_are_rate_limited() {
    caps_and_rates(GatewayRuntime::Tokio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glommio_gateway_caps_connections_per_address_and_rate_limits_floods() {
    let _slot = gateway_support::GLOMMIO_SLOT.lock().await;
    caps_and_rates(gateway_support::GLOMMIO).await;
}

async fn caps_and_rates(runtime: GatewayRuntime) {
    let (_data, gateway) = gateway(
        runtime,
        ClientLimits {
            connections_per_ip: 2,
            frames_per_second: 5,
            frame_burst: 5,
        },
    )
    .await;
    let relay = RelayKey([1; 32]);
    let _worker = fake_worker(&gateway, 0x72, relay, false).await;
    let url = format!("ws://{}/relay/{relay}", gateway.http_addr);

    let mut flooder = connect(&url).await;
    let _calm = connect(&url).await;
    let mut third = connect(&url).await;
    assert_eq!(
        close_of(&mut third).await,
        (1008, "Too many connections from this address".into())
    );

    // Past the burst, frames are answered `rate-limited:` and not executed.
    for i in 0..20 {
        send(&mut flooder, &format!(r#"["CLOSE","s{i}"]"#)).await;
    }
    let mut limited = 0;
    while let Ok(Some(Ok(Ws::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(500), flooder.next()).await
    {
        if text.contains("rate-limited:") {
            limited += 1;
        }
    }
    assert!(limited >= 10, "only {limited} frames were rate-limited");
    // The flooder is still connected: after a pause its frames pass again (the fake worker
    // never answers, so a NOTICE-free silence is the pass).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send(&mut flooder, r#"["CLOSE","later"]"#).await;
    let after = tokio::time::timeout(Duration::from_millis(300), flooder.next()).await;
    assert!(
        after.is_err(),
        "a frame within the rate was refused: {after:?}"
    );

    // The refusals are counted where Prometheus scrapes them.
    let metrics = gateway_support::http_get(gateway.http_addr, "/metrics").await;
    let refused: f64 = metrics
        .lines()
        .find(|line| line.starts_with("gateway_client_frames_refused_total{reason=\"rate-limit\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no rate-limit refusal counter in /metrics:\n{metrics}"));
    assert!(refused >= 10.0, "{refused} refusals counted");
}

//! Drill: a flood of client connections and bad frames.
//!
//! Injected: against `hypergate gateway` as a process, with `hypergate worker run` linked,
//! 500 WebSocket connections are opened and held (spread over ten loopback source addresses,
//! so the per-address cap lets them in), and each sends a burst of malformed frames — not JSON,
//! wrong shapes, unknown verbs, a binary frame — and every tenth an oversized one (over the
//! relay's frame limit; every fiftieth over twice it, which the WebSocket layer itself
//! refuses).
//!
//! Promised: a well-behaved client connected before the flood gets every publish accepted and
//! every query answered throughout, and a new client is served after it; the gateway's memory
//! stays bounded (VmRSS before, at the peak and after is printed; asserted only under a
//! generous bound). The frames the gateway refused `rate-limited:`, by reason, are printed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use futures_util::future::join_all;
use hypergate_core::nostr::testing::signed_event;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::gateway_support::{
    PATIENCE, connect, eventually, get_json, init_worker, publish, query, run_worker_at, send,
};
use crate::support::{GatewayProcess, drill_scale, metric, vm_rss_kib};

const FLOOD_CONNECTIONS: usize = 500;
const SOURCE_ADDRESSES: usize = 10;
/// Over `Limits::max_frame_bytes` (128 KiB) but within the WebSocket cap (twice it).
const OVERSIZED: usize = 200_000;
/// Over the WebSocket cap.
const HUGE: usize = 300_000;
/// The bound memory must stay under: far above anything seen, far below trouble.
const RSS_BOUND_KIB: u64 = 1024 * 1024;

type Flooder = WebSocketStream<tokio::net::TcpStream>;

/// A connection from loopback source address `127.0.0.<2 + n % SOURCE_ADDRESSES>`.
async fn flooder(http: SocketAddr, url: &str, n: usize) -> Option<Flooder> {
    let last = u8::try_from(2 + n % SOURCE_ADDRESSES).unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
    socket.bind(source).unwrap();
    let stream = socket.connect(http).await.ok()?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.ok()?;
    Some(ws)
}

/// The bad frames connection `n` sends: the first `kinds` of the malformed ones, plus the
/// oversized ones for every tenth and fiftieth connection.
fn bad_frames(n: usize, kinds: usize) -> Vec<WsMessage> {
    let mut frames = vec![
        WsMessage::text("not json at all"),
        WsMessage::text(r#"["EVENT",{"id":"zz","sig":1}]"#),
        WsMessage::text(r#"["NOPE",1,2,3]"#),
        WsMessage::binary(vec![0xff; 64]),
        WsMessage::text("{}"),
        WsMessage::text("[]"),
        WsMessage::text(r#"["EVENT"]"#),
        WsMessage::text(r#"["REQ"]"#),
    ];
    frames.truncate(kinds);
    if n % 10 == 0 {
        frames.push(WsMessage::text(format!(
            r#"["REQ","big",{{"search":"{}"}}]"#,
            "x".repeat(OVERSIZED)
        )));
    }
    if n % 50 == 0 {
        frames.push(WsMessage::text("y".repeat(HUGE)));
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_and_bad_frames_leaves_well_behaved_clients_served() {
    // About 2 600 frames: under the worker link's shared room (4096) even if it never drained.
    flood(5, 1).await;
}

/// Five times the frames: every client stays under its own rate limit, but together they
/// forward more frames to the worker than the gateway's peer-link queue holds. Each session
/// has its own flow on the link (F4): the flooders are refused, the calm client is not.
/// `HYPERGATE_DRILL_SCALE=N` floods N times as long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_flood_of_forwarded_frames_leaves_the_worker_link_and_calm_clients_served() {
    let passes = usize::try_from(5 * drill_scale()).unwrap_or(usize::MAX);
    flood(8, passes).await;
}

/// The drill, with every flood connection sending `kinds` kinds of bad frames `passes` times.
async fn flood(kinds: usize, passes: usize) {
    let data = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::spawn(&data.path().join("gateway"));
    let worker_dir = data.path().join("worker");
    let relay = init_worker(&worker_dir)["relayKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let _worker = run_worker_at(&worker_dir, &gateway.peer, None);
    let registered = eventually(PATIENCE, async || {
        let relays = get_json(gateway.http, "/api/relays").await;
        relays["relays"][0]["relayKey"] == relay.as_str()
    })
    .await;
    assert!(registered, "the worker never registered its relay");
    let url = format!("ws://{}/relay/{relay}", gateway.http);
    let mut calm = connect(&url).await;
    let warm = signed_event(13, 1_700_000_900, 1, Vec::new(), "before the flood");
    assert_eq!(publish(&mut calm, &warm.to_json()).await[2], true);
    let rss_before = vm_rss_kib(gateway.pid()).unwrap();

    // The flood, while the calm client publishes and queries.
    let flood = {
        let url = url.clone();
        let http = gateway.http;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut open = Vec::with_capacity(FLOOD_CONNECTIONS);
            for batch in (0..FLOOD_CONNECTIONS).collect::<Vec<_>>().chunks(50) {
                let connected = join_all(batch.iter().map(|&n| flooder(http, &url, n))).await;
                open.extend(batch.iter().copied().zip(connected));
            }
            let opened = open.iter().filter(|(_, ws)| ws.is_some()).count();
            let mut sent = 0usize;
            for _ in 0..passes {
                for (n, ws) in &mut open {
                    let Some(connection) = ws else { continue };
                    for frame in bad_frames(*n, kinds) {
                        // A connection the gateway closed (the huge frame) takes no more.
                        if connection.send(frame).await.is_err() {
                            *ws = None;
                            break;
                        }
                        sent += 1;
                    }
                }
            }
            (open, opened, sent, started.elapsed())
        })
    };
    let mut latencies = Vec::new();
    let mut rss_peak = rss_before;
    for round in 0..30u64 {
        let event = signed_event(13, 1_700_001_000 + round, 1, Vec::new(), "during the flood");
        let asked = Instant::now();
        let ok = publish(&mut calm, &event.to_json()).await;
        assert_eq!(ok[2], true, "round {round}: {ok}");
        let found = query(
            &mut calm,
            &format!("r{round}"),
            &format!(r#"{{"ids":["{}"]}}"#, event.id.to_hex()),
        )
        .await;
        assert_eq!(found.len(), 1, "round {round}: the event is not served");
        send(&mut calm, &format!(r#"["CLOSE","r{round}"]"#)).await;
        latencies.push(asked.elapsed());
        rss_peak = rss_peak.max(vm_rss_kib(gateway.pid()).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (open, opened, sent, flood_time) = flood.await.unwrap();
    rss_peak = rss_peak.max(vm_rss_kib(gateway.pid()).unwrap());
    let sessions = metric(gateway.http, "gateway_active_sessions", &[]).await;
    println!(
        "flood: {opened}/{FLOOD_CONNECTIONS} connections opened, {sent} bad frames sent in \
         {flood_time:?}; gateway_active_sessions at the end of it: {sessions}"
    );
    let mut refused = Vec::new();
    for reason in ["rate-limit", "flow-full", "link-busy"] {
        let label = format!(r#"reason="{reason}""#);
        let count = metric(
            gateway.http,
            "gateway_client_frames_refused_total",
            &[&label],
        )
        .await;
        refused.push(format!("{reason} {count}"));
    }
    println!("frames refused rate-limited: {}", refused.join(", "));

    // The flood ends; a new client is served.
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = vm_rss_kib(gateway.pid()).unwrap();
    let mut fresh = connect(&url).await;
    let late = signed_event(13, 1_700_001_100, 1, Vec::new(), "after the flood");
    assert_eq!(publish(&mut fresh, &late.to_json()).await[2], true);

    latencies.sort();
    println!(
        "calm client round trips (publish + query) during the flood: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    println!("gateway VmRSS: before {rss_before} KiB, peak {rss_peak} KiB, after {rss_after} KiB");
    assert_eq!(
        opened, FLOOD_CONNECTIONS,
        "the gateway refused flood connections"
    );
    assert!(
        rss_peak < RSS_BOUND_KIB,
        "gateway memory grew to {rss_peak} KiB"
    );
}

//! Benchmarks of the core's hot paths (not tests; figures go to docs/benchmarks.md).
//!
//! `cargo bench -p hypergate-core` — divan prints median and mean per operation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use divan::Bencher;
use hypergate_core::health::PeerHealth;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::nostr::{ClientMessage, Event, Filter, Limits, SignatureVerifier};
use hypergate_core::registry::Registry;
use hypergate_core::router::{Router, RouterConfig, RouterEvent, SessionKind};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    self, BoundedString, BoundedVec, Frame, Heartbeat, Message, RelayMetadata, RelayRegistration,
};

fn main() {
    divan::main();
}

const RELAYS: u32 = 10_000;
const PEERS_PER_RELAY: u32 = 5;

fn key(n: u32, salt: u8) -> [u8; 32] {
    let mut bytes = [salt; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes
}

/// One routing decision end to end on a router holding 10k relays × 5 peers:
/// open a session (sweep starts, attempt chosen round-robin), report the
/// attempt's success (routed), close it.
#[divan::bench]
fn router_decision_10k_relays_5_peers(bencher: Bencher<'_, '_>) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    for relay in 0..RELAYS {
        let peers: Vec<PeerId> = (0..PEERS_PER_RELAY)
            .map(|p| PeerId(key(relay * PEERS_PER_RELAY + p, 1)))
            .collect();
        router.handle_relay_peers(RelayKey(key(relay, 2)), peers.iter().copied(), now);
        for peer in peers {
            router.handle_peer_health(peer, PeerHealth::Healthy, now);
        }
    }
    let mut next = 0u32;
    bencher.bench_local(|| {
        let relay = RelayKey(key(next % RELAYS, 2));
        next = next.wrapping_add(7919);
        let session = router
            .open_session(relay, SessionKind::Request, now)
            .unwrap();
        let mut attempt = None;
        while let Some(event) = router.poll_event() {
            if let RouterEvent::Attempt { attempt: id, .. } = event {
                attempt = Some(id);
            }
        }
        let later = now + Duration::from_millis(1);
        router
            .handle_attempt_outcome(session, attempt.unwrap(), true, "", later)
            .unwrap();
        router.close_session(session, later).unwrap();
        while router.poll_event().is_some() {}
    });
}

fn registration(relay: u32, name: &str) -> RelayRegistration {
    RelayRegistration {
        relay_key: RelayKey(key(relay, 2)),
        identifiers: BoundedVec::new(vec![
            BoundedString::new(format!("npub{relay}:room")).unwrap(),
        ])
        .unwrap(),
        metadata: RelayMetadata {
            name: Some(BoundedString::new(name).unwrap()),
            ..RelayMetadata::default()
        },
        requires_auth: false,
        escrow: None,
    }
}

/// Merging a worker's re-registration into a registry of 10k relays.
#[divan::bench]
fn registry_merge_into_10k_relays(bencher: Bencher<'_, '_>) {
    let mut registry = Registry::new();
    for relay in 0..RELAYS {
        registry.handle_registration(
            PeerId(key(relay, 1)),
            &registration(relay, "a"),
            UnixTime(1),
        );
    }
    while registry.poll_event().is_some() {}
    let updates: Vec<RelayRegistration> = (0..RELAYS)
        .map(|relay| registration(relay, if relay % 2 == 0 { "b" } else { "c" }))
        .collect();
    let mut next = 0usize;
    bencher.bench_local(|| {
        let update = &updates[next % updates.len()];
        next = next.wrapping_add(7919);
        registry.handle_registration(PeerId(key(next as u32 % RELAYS, 1)), update, UnixTime(2));
        while registry.poll_event().is_some() {}
    });
}

fn signed_event() -> Event {
    let secp = secp256k1::Secp256k1::new();
    let keypair = secp256k1::Keypair::from_seckey_slice(&secp, &[7u8; 32]).unwrap();
    let (xonly, _) = keypair.x_only_public_key();
    let unsigned = serde_json::json!({
        "id": "00".repeat(32),
        "pubkey": hex::encode(xonly.serialize()),
        "created_at": 1_700_000_000u64,
        "kind": 1,
        "tags": [["e", "ab".repeat(32)], ["p", "cd".repeat(32)], ["t", "nostr"]],
        "content": "benchmark note with some text in it, about the size of a typical post",
        "sig": "00".repeat(64),
    });
    let mut event = Event::parse_json(&unsigned.to_string()).unwrap();
    event.id = event.compute_id();
    let signature = secp.sign_schnorr_no_aux_rand(event.id.as_bytes(), &keypair);
    event.sig = hypergate_core::nostr::Signature(*signature.as_ref());
    event.verify(&SignatureVerifier::new()).unwrap();
    event
}

/// BIP-340 verification of one event, id recomputation included.
#[divan::bench]
fn verify_event_id_and_signature(bencher: Bencher<'_, '_>) {
    let event = signed_event();
    let verifier = SignatureVerifier::new();
    bencher.bench_local(|| divan::black_box(&event).verify(&verifier).unwrap());
}

/// Matching one event against a filter with ids-free NIP-01 conditions.
#[divan::bench]
fn filter_matches_one_event(bencher: Bencher<'_, '_>) {
    let event = signed_event();
    let authors: Vec<String> = (0..10u8)
        .map(|n| hex::encode([n; 32]))
        .chain(std::iter::once(event.pubkey.to_hex()))
        .collect();
    let filter = Filter::parse_json(
        &serde_json::json!({
            "authors": authors,
            "kinds": [1, 6, 7],
            "#e": ["ab".repeat(32), "ef".repeat(32)],
            "since": 1_600_000_000u64,
            "until": 1_800_000_000u64,
        })
        .to_string(),
    )
    .unwrap();
    assert!(filter.matches(&event));
    bencher.bench_local(|| divan::black_box(&filter).matches(divan::black_box(&event)));
}

/// Parsing one client EVENT frame (no verification).
#[divan::bench]
fn parse_client_event_frame(bencher: Bencher<'_, '_>) {
    let frame = format!("[\"EVENT\",{}]", signed_event().to_json());
    let limits = Limits::default();
    bencher.bench_local(|| ClientMessage::parse(divan::black_box(&frame), &limits).unwrap());
}

/// Decoding one peer-link heartbeat frame.
#[divan::bench]
fn wire_decode_heartbeat(bencher: Bencher<'_, '_>) {
    let bytes = wire::encode(&Frame {
        request_id: 7,
        message: Message::Heartbeat(Heartbeat {
            seq: 7,
            sent_at: UnixTime(1_700_000_000_000),
        }),
    })
    .unwrap();
    bencher.bench_local(|| wire::decode(divan::black_box(&bytes)).unwrap());
}

/// The pending-write push scheduler holding 1,000,000 notices (half of the
/// relays reachable): one updated notice (pushed at once, its backoff
/// re-armed), a timeout pass as the clock moves 20 µs (firing the rounds that
/// fell due, about one), and a full drain of pushes and events.
#[divan::bench]
fn push_scheduler_1m_relays(bencher: Bencher<'_, '_>) {
    use hypergate_core::push::{PendingNotice, PushConfig, PushScheduler};

    const NOTICES: u32 = 1_000_000;
    let notice = |relay: u32, updated_at: u64| {
        PendingNotice::new(
            RelayKey(key(relay, 3)),
            "replica-write",
            UnixTime(updated_at),
        )
    };
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut scheduler = PushScheduler::new(PushConfig::default(), 1);
    for relay in 0..NOTICES {
        let _ = scheduler.notify_pending(notice(relay, 1), relay % 2 == 0, now);
    }
    while scheduler.poll_push().is_some() {}
    while scheduler.poll_event().is_some() {}
    assert_eq!(scheduler.pending_count(), NOTICES as usize);
    let mut next = 0u32;
    let mut updated_at = 1u64;
    bencher.bench_local(|| {
        let relay = next % NOTICES;
        next = next.wrapping_add(7919);
        updated_at += 1;
        now += Duration::from_micros(20);
        let _ = scheduler.notify_pending(notice(relay, updated_at), true, now);
        scheduler.handle_timeout(now);
        while let Some(push) = scheduler.poll_push() {
            divan::black_box(push);
        }
        while scheduler.poll_event().is_some() {}
    });
}

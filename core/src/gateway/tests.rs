use std::time::Duration;

use super::*;
use crate::health::PeerHealth;
use crate::router::Target;
use crate::time::test_start;
use crate::wire::{BoundedString, BoundedVec, RelayRegistration};

const WORKER: PeerId = PeerId([1; 32]);
const RELAY: RelayKey = RelayKey([7; 32]);

fn register_frame() -> Frame {
    Frame {
        request_id: 1,
        message: Message::RegisterRelays(RegisterRelays {
            relays: BoundedVec::new(vec![RelayRegistration {
                relay_key: RELAY,
                identifiers: BoundedVec::new(vec![
                    BoundedString::new("npub1x:demo".to_owned()).unwrap(),
                ])
                .unwrap(),
                metadata: Default::default(),
                requires_auth: false,
                escrow: None,
            }])
            .unwrap(),
        }),
    }
}

fn drain(gateway: &mut Gateway) -> (Vec<Transmit>, Vec<GatewayEvent>) {
    let transmits = std::iter::from_fn(|| gateway.poll_transmit()).collect();
    let events = std::iter::from_fn(|| gateway.poll_event()).collect();
    (transmits, events)
}

fn attempt_of(events: &[GatewayEvent]) -> Option<(SessionId, AttemptId, PeerId)> {
    events.iter().find_map(|event| match event {
        GatewayEvent::Router(RouterEvent::Attempt {
            session,
            attempt,
            peer,
            ..
        }) => Some((*session, *attempt, *peer)),
        _ => None,
    })
}

#[test]
fn registration_is_acked_and_makes_the_relay_routable_by_alias() {
    let t0 = test_start();
    let mut gateway = Gateway::new(GatewayConfig::default(), t0, UnixTime(1_000));
    gateway.handle_link_up(WORKER, t0);
    gateway.handle_frame(WORKER, register_frame(), t0 + Duration::from_millis(5));
    let (transmits, _) = drain(&mut gateway);
    assert!(matches!(
        &transmits[..],
        [Transmit { peer, frame: Frame { request_id: 1, message: Message::RegisterAck(ack) } }]
            if *peer == WORKER && ack.accepted.iter().any(|relay| *relay == RELAY)
    ));
    let record = gateway.registry().relay(&RELAY).unwrap();
    assert_eq!(
        record.registered_at,
        UnixTime(1_005),
        "wall clock derived from the anchor"
    );
    let session = gateway
        .open_session("npub1x:demo", SessionKind::Client, t0)
        .unwrap();
    let (_, events) = drain(&mut gateway);
    assert_eq!(
        attempt_of(&events).map(|(s, _, p)| (s, p)),
        Some((session, WORKER))
    );
}

#[test]
fn unknown_relay_name_is_a_clear_error() {
    let t0 = test_start();
    let mut gateway = Gateway::new(GatewayConfig::default(), t0, UnixTime(0));
    assert_eq!(
        gateway.open_session("nope", SessionKind::Client, t0),
        Err(GatewayError::RelayNotRegistered("nope".into()))
    );
}

#[test]
fn heartbeats_are_answered_with_the_same_request_id() {
    let t0 = test_start();
    let mut gateway = Gateway::new(GatewayConfig::default(), t0, UnixTime(0));
    gateway.handle_link_up(WORKER, t0);
    let beat = Frame {
        request_id: 42,
        message: Message::Heartbeat(Heartbeat {
            seq: 3,
            sent_at: UnixTime(0),
        }),
    };
    gateway.handle_frame(WORKER, beat, t0);
    let (transmits, _) = drain(&mut gateway);
    assert!(matches!(
        &transmits[..],
        [Transmit {
            frame: Frame {
                request_id: 42,
                message: Message::HeartbeatAck(Heartbeat { seq: 3, .. })
            },
            ..
        }]
    ));
}

#[test]
fn worker_loss_falls_back_to_the_replica_and_recovery_returns_the_session() {
    let t0 = test_start();
    let mut gateway = Gateway::new(GatewayConfig::default(), t0, UnixTime(0));
    gateway.handle_link_up(WORKER, t0);
    gateway.handle_frame(WORKER, register_frame(), t0);
    gateway.handle_mirror_stored(RELAY, [3; 32], 10, t0);
    let session = gateway
        .open_session(&RELAY.to_hex(), SessionKind::Client, t0)
        .unwrap();
    let (_, events) = drain(&mut gateway);
    let (_, attempt, peer) = attempt_of(&events).unwrap();
    gateway
        .handle_attempt_outcome(session, attempt, peer, true, "", t0)
        .unwrap();
    assert_eq!(gateway.router().target(session), Ok(Target::Peer(WORKER)));

    // The worker stops heartbeating: suspect, then down, then replica mode.
    let mut now = t0;
    while gateway.health().health_of(&WORKER) != PeerHealth::Down {
        let (deadline, _) = gateway.poll_timeout().unwrap();
        now = deadline;
        gateway.handle_timeout(now);
    }
    assert_eq!(gateway.router().target(session), Ok(Target::Replica));
    assert!(
        gateway.registry().relay(&RELAY).is_some(),
        "the relay stays registered"
    );

    gateway.handle_link_up(WORKER, now + Duration::from_secs(30));
    assert_eq!(gateway.router().target(session), Ok(Target::Peer(WORKER)));
    let (_, events) = drain(&mut gateway);
    assert!(events.iter().any(|event| matches!(
        event,
        GatewayEvent::Router(RouterEvent::FallbackEnded { duration, .. }) if *duration >= Duration::from_secs(30)
    )));
}

#[test]
fn a_restored_registry_makes_relays_routable_before_workers_return() {
    let t0 = test_start();
    let mut first = Gateway::new(GatewayConfig::default(), t0, UnixTime(0));
    first.handle_link_up(WORKER, t0);
    first.handle_frame(WORKER, register_frame(), t0);
    let bytes = first.registry().snapshot_bytes().unwrap();

    let registry = Registry::restore_bytes(&bytes).unwrap();
    let mut restarted = Gateway::with_registry(GatewayConfig::default(), registry, t0, UnixTime(0));
    restarted.handle_mirror_stored(RELAY, [3; 32], 4, t0);
    let session = restarted
        .open_session("npub1x:demo", SessionKind::Client, t0)
        .unwrap();
    assert_eq!(restarted.router().target(session), Ok(Target::Replica));
}

/// The core machines must be `Send` so a multi-threaded runtime can own them.
#[test]
fn core_machines_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Gateway>();
    assert_send::<Registry>();
    assert_send::<Health>();
    assert_send::<Router>();
}

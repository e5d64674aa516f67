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

/// A gateway that registered the worker's relay, then restarted from its registry snapshot
/// with no worker linked.
fn restarted_after_registration(t0: Instant) -> Gateway {
    let mut first = Gateway::new(GatewayConfig::default(), t0, UnixTime(0));
    first.handle_link_up(WORKER, t0);
    first.handle_frame(WORKER, register_frame(), t0);
    let bytes = first.registry().snapshot_bytes().unwrap();
    let registry = Registry::restore_bytes(&bytes).unwrap();
    Gateway::with_registry(GatewayConfig::default(), registry, t0, UnixTime(0))
}

#[test]
fn a_restored_registry_makes_relays_routable_before_workers_return() {
    let t0 = test_start();
    let mut restarted = restarted_after_registration(t0);
    restarted.handle_mirror_stored(RELAY, [3; 32], 4, t0);
    let session = restarted
        .open_session("npub1x:demo", SessionKind::Client, t0)
        .unwrap();
    assert_eq!(restarted.router().target(session), Ok(Target::Replica));
}

#[test]
fn a_mirror_found_at_start_serves_sessions_of_a_restored_relay_without_a_worker() {
    let t0 = test_start();
    let mut restarted = restarted_after_registration(t0);
    let before = restarted
        .open_session("npub1x:demo", SessionKind::Client, t0)
        .unwrap();
    assert_eq!(restarted.router().target(before), Ok(Target::Unavailable));
    // A mirror of a relay the registry does not know changes nothing.
    restarted.handle_mirror_found_at_start(RelayKey([9; 32]), [3; 32], 4, 4, t0);
    assert!(
        restarted
            .health()
            .mirror_freshness(&RelayKey([9; 32]), t0)
            .is_none()
    );
    restarted.handle_mirror_found_at_start(RELAY, [3; 32], 4, 6, t0);
    let after = restarted
        .open_session("npub1x:demo", SessionKind::Client, t0)
        .unwrap();
    assert_eq!(restarted.router().target(after), Ok(Target::Replica));
    assert_eq!(restarted.router().target(before), Ok(Target::Replica));
    // Its freshness is what the lengths say: two blocks behind what the owner advertised.
    let freshness = restarted.health().mirror_freshness(&RELAY, t0).unwrap();
    assert_eq!(freshness.lag_blocks, 2);
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

mod write_path {
    use super::*;
    use crate::health::PeerHealth;
    use crate::lease::{EndReason, LeaseEvent, LeaseGrant, LeaseId};
    use crate::registry::{PendingMark, Removal};
    use crate::wire::{
        EscrowRegistration, PendingState, PendingType, PushAck, ResyncComplete, ResyncStatus,
    };

    const GATEWAY: PeerId = PeerId([0xee; 32]);

    fn register_with_escrow(escrow: bool) -> Frame {
        let mut frame = register_frame();
        if let Message::RegisterRelays(register) = &mut frame.message {
            let mut relays = register.relays.clone().into_inner();
            relays[0].escrow = escrow.then(|| EscrowRegistration {
                escrow_id: BoundedString::new("escrow-1").unwrap(),
                policy_version: BoundedString::new("v1").unwrap(),
                permitted_gateways: BoundedVec::new(vec![GATEWAY]).unwrap(),
                expires_at: UnixTime(u64::MAX / 2),
            });
            register.relays = BoundedVec::new(relays).unwrap();
        }
        frame
    }

    /// A gateway whose one worker registered (with escrow or not) and then
    /// went away, with a mirror of the relay and a client session in replica mode.
    fn offline_relay(escrow: bool) -> (Gateway, SessionId, Instant) {
        let t0 = test_start();
        let mut gateway = Gateway::new(GatewayConfig::default(), t0, UnixTime(1_000_000));
        gateway.handle_link_up(WORKER, t0);
        gateway.handle_frame(WORKER, register_with_escrow(escrow), t0);
        gateway.handle_mirror_stored(RELAY, [3; 32], 10, t0);
        gateway.handle_link_down(WORKER, t0);
        let session = gateway
            .open_session(&RELAY.to_hex(), SessionKind::Client, t0)
            .unwrap();
        assert_eq!(gateway.router().target(session), Ok(Target::Replica));
        drain(&mut gateway);
        (gateway, session, t0)
    }

    fn grant(epoch: u64, now: Instant) -> LeaseGrant {
        LeaseGrant {
            id: LeaseId {
                relay: RELAY,
                epoch,
            },
            escrow_id: "escrow-1".into(),
            holder: GATEWAY,
            expires_at: now + Duration::from_secs(600),
        }
    }

    fn event_mark() -> PendingMark {
        PendingMark {
            kind: PendingType::Event,
            reason: None,
            drive_identifier: None,
            drive_version: None,
            lease_version: None,
        }
    }

    #[test]
    fn a_write_without_a_lease_requests_one_automatically_once_and_waits() {
        let (mut gateway, session, t0) = offline_relay(true);
        let first = gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        let second = gateway
            .handle_client_write(session, WriteId(2), t0)
            .unwrap();
        assert_eq!((first, second), (WriteVerdict::Wait, WriteVerdict::Wait));
        let (_, events) = drain(&mut gateway);
        let requests: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                GatewayEvent::LeaseRequestNeeded {
                    relay,
                    renewing,
                    evidence,
                } => Some((*relay, *renewing, evidence.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(requests.len(), 1, "one request for concurrent writes");
        let (relay, renewing, evidence) = &requests[0];
        assert_eq!((*relay, *renewing), (RELAY, None));
        assert_eq!(evidence.escrow_enabled, Some(true));
        assert_eq!(evidence.healthy_peer_count, Some(0));
        assert_eq!(evidence.mirror_lag_blocks, Some(0));
        assert!(
            evidence.last_healthy_at.is_some(),
            "built from the gateway's own health"
        );
    }

    #[test]
    fn an_operator_lease_request_asks_the_escrow_once_and_is_refused_beside_a_healthy_worker() {
        let (mut gateway, _session, t0) = offline_relay(true);
        let first = gateway.handle_operator_lease_request(RELAY, t0).unwrap();
        let second = gateway.handle_operator_lease_request(RELAY, t0).unwrap();
        assert_eq!(first, crate::lease::RequestOutcome::Started);
        assert_eq!(second, crate::lease::RequestOutcome::InFlight);
        let (_, events) = drain(&mut gateway);
        let requests = events
            .iter()
            .filter(|event| matches!(event, GatewayEvent::LeaseRequestNeeded { .. }))
            .count();
        assert_eq!(requests, 1);

        let (mut no_escrow, _, t0) = offline_relay(false);
        assert!(matches!(
            no_escrow.handle_operator_lease_request(RELAY, t0),
            Err(GatewayError::LeaseRefused(_))
        ));
        assert!(matches!(
            no_escrow.handle_operator_lease_request(RelayKey([0x55; 32]), t0),
            Err(GatewayError::RelayNotRegistered(_))
        ));

        let (mut back, _, t0) = offline_relay(true);
        back.handle_link_up(WORKER, t0);
        back.handle_frame(WORKER, register_with_escrow(true), t0);
        assert!(matches!(
            back.handle_operator_lease_request(RELAY, t0),
            Err(GatewayError::LeaseRefused(_))
        ));
    }

    #[test]
    fn a_restarted_gateway_resumes_the_push_and_tells_a_returning_worker_its_lease_epoch() {
        let (mut gateway, session, t0) = offline_relay(true);
        let verdict = gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        assert_eq!(verdict, WriteVerdict::Wait);
        gateway.handle_lease_granted(grant(3, t0), t0).unwrap();
        drain(&mut gateway);
        gateway
            .handle_write_appended(RELAY, 3, event_mark(), t0)
            .unwrap();
        let bytes = gateway.registry().snapshot_bytes().unwrap();

        // The process dies; a new one starts from the persisted registry.
        let registry = Registry::restore_bytes(&bytes).unwrap();
        let t1 = t0 + Duration::from_secs(60);
        let mut restarted =
            Gateway::with_registry(GatewayConfig::default(), registry, t1, UnixTime(2_000_000));
        assert!(restarted.registry().relay(&RELAY).unwrap().pending.pending);
        restarted.handle_link_up(WORKER, t1);
        restarted.handle_frame(WORKER, register_with_escrow(true), t1);
        let (transmits, _) = drain(&mut restarted);
        let ack_epochs: Vec<u64> = transmits
            .iter()
            .filter_map(|transmit| match &transmit.frame.message {
                Message::RegisterAck(ack) => {
                    Some(ack.lease_epochs.iter().map(|e| e.epoch).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(ack_epochs, vec![3], "the returning worker learns the epoch");
        let pushed = transmits
            .iter()
            .any(|transmit| matches!(transmit.frame.message, Message::PendingWritePush(_)));
        assert!(
            pushed,
            "the pending notice is pushed again after the restart"
        );
    }

    #[test]
    fn a_granted_lease_releases_the_waiting_writes_under_its_epoch() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway
            .handle_client_write(session, WriteId(2), t0)
            .unwrap();
        drain(&mut gateway);
        gateway.handle_lease_granted(grant(4, t0), t0).unwrap();
        let (_, events) = drain(&mut gateway);
        let released: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                GatewayEvent::WriteReleased { write, epoch, .. } => Some((*write, *epoch)),
                _ => None,
            })
            .collect();
        assert_eq!(released, vec![(WriteId(1), 4), (WriteId(2), 4)]);
        assert_eq!(
            gateway
                .handle_client_write(session, WriteId(3), t0)
                .unwrap(),
            WriteVerdict::Append { epoch: 4 }
        );
    }

    #[test]
    fn a_refused_lease_refuses_the_waiting_writes_read_only() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        drain(&mut gateway);
        gateway.handle_lease_refused(RELAY, "peer-timeout-not-reached", t0);
        let (_, events) = drain(&mut gateway);
        assert!(events.contains(&GatewayEvent::WriteRefused {
            write: WriteId(1),
            relay: RELAY,
            reason: "peer-timeout-not-reached".into(),
        }));
    }

    #[test]
    fn a_relay_without_escrow_is_read_only_and_asks_nobody() {
        let (mut gateway, session, t0) = offline_relay(false);
        let verdict = gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        assert!(matches!(verdict, WriteVerdict::ReadOnly { .. }));
        let (_, events) = drain(&mut gateway);
        assert!(
            !events
                .iter()
                .any(|event| matches!(event, GatewayEvent::LeaseRequestNeeded { .. }))
        );
    }

    #[test]
    fn a_worker_registering_after_a_lease_was_issued_learns_its_epoch_from_the_ack() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(4, t0), t0).unwrap();
        drain(&mut gateway);
        // The worker comes back and registers again: no push needed to learn of the lease.
        let later = t0 + Duration::from_secs(1);
        gateway.handle_link_up(WORKER, later);
        gateway.handle_frame(WORKER, register_with_escrow(true), later);
        let (transmits, _) = drain(&mut gateway);
        let acks: Vec<&RegisterAck> = transmits
            .iter()
            .filter_map(|transmit| match &transmit.frame.message {
                Message::RegisterAck(ack) => Some(ack),
                _ => None,
            })
            .collect();
        assert_eq!(acks.len(), 1);
        assert_eq!(
            acks[0].lease_epochs.as_slice(),
            [crate::wire::RelayLeaseEpoch {
                relay_key: RELAY,
                epoch: 4
            }]
        );
    }

    #[test]
    fn a_registration_ack_lists_no_epoch_for_a_relay_never_leased() {
        let t0 = test_start();
        let mut gateway = Gateway::new(GatewayConfig::default(), t0, UnixTime(1_000));
        gateway.handle_link_up(WORKER, t0);
        gateway.handle_frame(WORKER, register_frame(), t0);
        let (transmits, _) = drain(&mut gateway);
        let Some(Message::RegisterAck(ack)) = transmits.first().map(|t| &t.frame.message) else {
            panic!("no registration ack");
        };
        assert!(ack.lease_epochs.is_empty());
    }

    #[test]
    fn a_write_beside_a_healthy_worker_goes_to_the_worker_never_under_a_lease() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        drain(&mut gateway);
        // The worker returns: the lease ends, the session follows the worker.
        gateway.handle_link_up(WORKER, t0 + Duration::from_secs(1));
        let (_, events) = drain(&mut gateway);
        assert!(events.iter().any(|event| matches!(
            event,
            GatewayEvent::Lease(LeaseEvent::Ended {
                reason: EndReason::PeerHealthy,
                ..
            })
        )));
        let verdict = gateway
            .handle_client_write(session, WriteId(2), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(verdict, WriteVerdict::Forward(WORKER));
        assert!(gateway.leases().active(&RELAY, t0).is_none());
    }

    /// Found by the simulation (seed 1382): a worker with a new identity is
    /// healthy (link up) before its registration attaches it to the relay.
    #[test]
    fn a_new_worker_registering_while_healthy_ends_the_lease() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        drain(&mut gateway);
        let newcomer = PeerId([0x42; 32]);
        gateway.handle_link_up(newcomer, t0);
        assert!(
            gateway.leases().active(&RELAY, t0).is_some(),
            "not a worker of the relay yet"
        );
        gateway.handle_frame(newcomer, register_with_escrow(true), t0);
        assert!(gateway.leases().active(&RELAY, t0).is_none());
        let (_, events) = drain(&mut gateway);
        assert!(events.iter().any(|event| matches!(
            event,
            GatewayEvent::Lease(LeaseEvent::Ended {
                reason: EndReason::PeerHealthy,
                ..
            })
        )));
    }

    #[test]
    fn a_grant_arriving_after_the_worker_returned_is_ended_at_once() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_link_up(WORKER, t0);
        drain(&mut gateway);
        let _ = gateway.handle_lease_granted(grant(1, t0), t0);
        assert!(gateway.leases().active(&RELAY, t0).is_none());
        let (_, events) = drain(&mut gateway);
        assert!(
            !events
                .iter()
                .any(|event| matches!(event, GatewayEvent::WriteReleased { .. }))
        );
    }

    #[test]
    fn an_appended_write_is_pending_and_pushed_and_resync_complete_clears_it() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        drain(&mut gateway);
        gateway
            .handle_write_appended(RELAY, 1, event_mark(), t0)
            .unwrap();
        let pending = gateway.registry().relay(&RELAY).unwrap().pending.clone();
        assert!(pending.pending);
        assert_eq!(pending.lease_version, Some(1));
        assert_eq!(gateway.push().pending_count(), 1);

        // The worker comes back: it receives the push and acknowledges it.
        let back = t0 + Duration::from_secs(60);
        gateway.handle_link_up(WORKER, back);
        let (transmits, _) = drain(&mut gateway);
        let push = transmits
            .iter()
            .find_map(|t| match &t.frame.message {
                Message::PendingWritePush(push) if t.peer == WORKER => Some(push.clone()),
                _ => None,
            })
            .expect("the pending notice is pushed to the returning worker");
        assert_eq!(push.state, PendingState::Pending);
        let ack = Frame {
            request_id: 9,
            message: Message::PushAck(PushAck {
                push_id: push.push_id,
                relay_key: RELAY,
                updated_at: push.updated_at,
                status: crate::wire::AckStatus::Accepted,
            }),
        };
        gateway.handle_frame(WORKER, ack, back);
        let done = Frame {
            request_id: 10,
            message: Message::ResyncComplete(ResyncComplete {
                relay_key: RELAY,
                resynced_through: push.updated_at,
                gateway_writer_length: 1,
            }),
        };
        gateway.handle_frame(WORKER, done, back);
        let (transmits, _) = drain(&mut gateway);
        assert!(transmits.iter().any(|t| matches!(
            &t.frame,
            Frame { request_id: 10, message: Message::ResyncAck(ack) } if ack.status == ResyncStatus::Cleared
        )));
        assert!(transmits.iter().any(|t| matches!(
            &t.frame.message,
            Message::PendingWritePush(push) if push.state == PendingState::Cleared
        )));
        assert!(!gateway.registry().relay(&RELAY).unwrap().pending.pending);
    }

    #[test]
    fn resync_complete_from_a_peer_that_does_not_serve_the_relay_is_refused() {
        let (mut gateway, _, t0) = offline_relay(true);
        let stranger = PeerId([0x99; 32]);
        let done = Frame {
            request_id: 3,
            message: Message::ResyncComplete(ResyncComplete {
                relay_key: RELAY,
                resynced_through: UnixTime(u64::MAX),
                gateway_writer_length: 0,
            }),
        };
        gateway.handle_frame(stranger, done, t0);
        let (transmits, _) = drain(&mut gateway);
        assert!(transmits.iter().any(|t| matches!(
            &t.frame.message,
            Message::ResyncAck(ack) if ack.status == ResyncStatus::Refused
        )));
    }

    /// Review finding: a resync-complete handled while an allowed append was
    /// still in flight cleared the flags, and the worker's rotation then cut
    /// that write off.
    #[test]
    fn resync_complete_during_an_append_in_flight_is_still_pending() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        gateway
            .handle_write_appended(RELAY, 1, event_mark(), t0)
            .unwrap();
        let through = gateway
            .registry()
            .relay(&RELAY)
            .unwrap()
            .pending
            .updated_at
            .unwrap();
        // A second write is allowed; its append has not finished yet.
        assert_eq!(
            gateway
                .handle_client_write(session, WriteId(2), t0)
                .unwrap(),
            WriteVerdict::Append { epoch: 1 }
        );
        drain(&mut gateway);
        let done = |request_id| Frame {
            request_id,
            message: Message::ResyncComplete(ResyncComplete {
                relay_key: RELAY,
                resynced_through: through,
                gateway_writer_length: 1,
            }),
        };
        gateway.handle_frame(WORKER, done(20), t0);
        let (transmits, _) = drain(&mut gateway);
        assert!(transmits.iter().any(|t| matches!(
            &t.frame.message,
            Message::ResyncAck(ack) if ack.status == ResyncStatus::StillPending
        )));
        assert!(gateway.registry().relay(&RELAY).unwrap().pending.pending);
        // The append lands; it is marked, so the same report is still not enough.
        gateway
            .handle_write_appended(RELAY, 1, event_mark(), t0)
            .unwrap();
        gateway.handle_frame(WORKER, done(21), t0);
        let (transmits, _) = drain(&mut gateway);
        assert!(transmits.iter().any(|t| matches!(
            &t.frame.message,
            Message::ResyncAck(ack) if ack.status == ResyncStatus::StillPending
        )));
    }

    /// Review finding: a late revoke of an older epoch ended the current lease.
    #[test]
    fn a_late_revoke_of_an_older_epoch_leaves_the_current_lease_alone() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(2, t0), t0).unwrap();
        let stale = LeaseId {
            relay: RELAY,
            epoch: 1,
        };
        assert!(gateway.handle_lease_revoked(stale, "owner", t0).is_err());
        assert!(gateway.leases().active(&RELAY, t0).is_some());
        let current = LeaseId {
            relay: RELAY,
            epoch: 2,
        };
        gateway.handle_lease_revoked(current, "owner", t0).unwrap();
        assert!(gateway.leases().active(&RELAY, t0).is_none());
    }

    /// Review finding: after a restart, workers not seen since had no
    /// `last_healthy_at`, which the policy reads as missing evidence forever.
    #[test]
    fn evidence_after_a_restart_reports_the_start_as_the_latest_proof_of_life() {
        let (gateway, _, t0) = offline_relay(true);
        let bytes = gateway.registry().snapshot_bytes().unwrap();
        let restarted_at = t0 + Duration::from_secs(300);
        let restarted = Gateway::with_registry(
            GatewayConfig::default(),
            Registry::restore_bytes(&bytes).unwrap(),
            restarted_at,
            UnixTime(2_000_000),
        );
        let evidence = restarted.evidence(&RELAY, restarted_at + Duration::from_secs(60));
        assert_eq!(evidence.last_healthy_at, Some(UnixTime(2_000_000)));
        assert_eq!(evidence.healthy_peer_count, Some(0));
    }

    /// Review finding: a force-removed relay kept its push notice (retried
    /// forever) and its lease.
    #[test]
    fn forced_removal_gives_up_the_relays_notice_and_lease() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        gateway
            .handle_write_appended(RELAY, 1, event_mark(), t0)
            .unwrap();
        assert!(matches!(
            gateway.handle_relay_removal(RELAY, Removal::IfNoPendingWrites, t0),
            Err(GatewayError::Registry(_))
        ));
        gateway
            .handle_relay_removal(RELAY, Removal::Force, t0)
            .unwrap();
        assert!(gateway.push().notice(&RELAY).is_none());
        assert!(gateway.leases().active(&RELAY, t0).is_none());
        let (_, events) = drain(&mut gateway);
        assert!(events.iter().any(|event| matches!(
            event,
            GatewayEvent::Push(crate::push::PushEvent::ClearedAbandoned { .. })
        )));
        assert!(events.iter().any(|event| matches!(
            event,
            GatewayEvent::Lease(LeaseEvent::Ended {
                reason: EndReason::Manual { .. },
                ..
            })
        )));
    }

    #[test]
    fn the_lease_is_renewed_at_its_expiry_warning_while_workers_stay_away() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        drain(&mut gateway);
        let warning = t0 + Duration::from_secs(480);
        gateway.handle_timeout(warning);
        let (_, events) = drain(&mut gateway);
        assert!(events.iter().any(|event| matches!(
            event,
            GatewayEvent::LeaseRequestNeeded { renewing: Some(id), .. } if id.epoch == 1
        )));
        assert_eq!(gateway.health().health_of(&WORKER), PeerHealth::Down);
    }

    #[test]
    fn shutdown_ends_every_lease_so_the_vault_is_wiped() {
        let (mut gateway, session, t0) = offline_relay(true);
        gateway
            .handle_client_write(session, WriteId(1), t0)
            .unwrap();
        gateway.handle_lease_granted(grant(1, t0), t0).unwrap();
        drain(&mut gateway);
        gateway.handle_shutdown(t0);
        let (_, events) = drain(&mut gateway);
        assert!(events.iter().any(|event| matches!(
            event,
            GatewayEvent::Lease(LeaseEvent::Ended {
                reason: EndReason::Shutdown,
                ..
            })
        )));
    }
}

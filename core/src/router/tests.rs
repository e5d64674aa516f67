use proptest::prelude::*;

use super::*;
use crate::time::test_start;

fn peer(n: u8) -> PeerId {
    PeerId([n; 32])
}

const RELAY: RelayKey = RelayKey([9; 32]);

fn drain(router: &mut Router) -> Vec<RouterEvent> {
    std::iter::from_fn(|| router.poll_event()).collect()
}

fn attempts(events: &[RouterEvent]) -> Vec<(AttemptId, PeerId)> {
    events
        .iter()
        .filter_map(|event| match event {
            RouterEvent::Attempt { attempt, peer, .. } => Some((*attempt, *peer)),
            _ => None,
        })
        .collect()
}

/// A router for RELAY with `n` healthy peers and a replica.
fn router_with_peers(n: u8, now: Instant) -> Router {
    let mut router = Router::new(RouterConfig::default());
    router.handle_relay_peers(RELAY, (1..=n).map(peer), now);
    for p in 1..=n {
        router.handle_peer_health(peer(p), PeerHealth::Healthy, now);
    }
    router.handle_replica_available(RELAY, true, now);
    router
}

#[test]
fn first_successful_attempt_routes_the_session() {
    let t0 = test_start();
    let mut router = router_with_peers(2, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    assert_eq!(router.target(session), Ok(Target::Pending));
    let events = drain(&mut router);
    let (attempt, tried) = attempts(&events)[0];
    router
        .handle_attempt_outcome(session, attempt, true, "", t0 + Duration::from_millis(3))
        .unwrap();
    assert_eq!(router.target(session), Ok(Target::Peer(tried)));
    let events = drain(&mut router);
    assert!(events.iter().any(|event| matches!(
        event,
        RouterEvent::AttemptFinished { record, .. }
            if record.outcome == AttemptOutcome::Succeeded && record.latency == Duration::from_millis(3)
    )));
}

#[test]
fn sessions_are_spread_round_robin_across_healthy_peers() {
    let t0 = test_start();
    let mut router = router_with_peers(3, t0);
    let mut first_choices = Vec::new();
    for _ in 0..3 {
        router.open_session(RELAY, SessionKind::Client, t0).unwrap();
        first_choices.push(attempts(&drain(&mut router))[0].1);
    }
    first_choices.sort();
    assert_eq!(first_choices, vec![peer(1), peer(2), peer(3)]);
}

#[test]
fn all_peers_failing_enters_replica_mode_once() {
    let t0 = test_start();
    let mut router = router_with_peers(2, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    let mut now = t0;
    for _ in 0..2 {
        let (attempt, _) = attempts(&drain(&mut router))[0];
        now += Duration::from_millis(10);
        router
            .handle_attempt_outcome(session, attempt, false, "refused", now)
            .unwrap();
    }
    let events = drain(&mut router);
    let started = events
        .iter()
        .filter(|event| matches!(event, RouterEvent::FallbackStarted { .. }))
        .count();
    assert_eq!(started, 1);
    assert_eq!(router.target(session), Ok(Target::Replica));
    assert_eq!(router.counters(&RELAY).unwrap().replica_sessions, 1);
    assert_eq!(
        router
            .counters(&RELAY)
            .unwrap()
            .sweep_attempts
            .get(&AttemptOutcome::Failed),
        Some(&2)
    );
}

#[test]
fn an_attempt_times_out_at_the_per_attempt_deadline() {
    let t0 = test_start();
    let mut router = router_with_peers(1, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    drain(&mut router);
    let (deadline, reason) = router.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + RouterConfig::default().attempt_timeout);
    assert_eq!(reason, "peer attempt timeout");
    router.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(router.target(session), Ok(Target::Pending));
    router.handle_timeout(deadline);
    assert_eq!(router.target(session), Ok(Target::Replica));
    // The peer still counts as healthy, so the session will retry it.
    assert_eq!(router.poll_timeout().map(|(_, r)| r), Some("replica retry"));
}

#[test]
fn without_a_replica_a_failed_sweep_reports_no_peers_available() {
    let t0 = test_start();
    let mut router = Router::new(RouterConfig::default());
    router.handle_relay_peers(RELAY, [peer(1)], t0);
    let session = router
        .open_session(RELAY, SessionKind::Request, t0)
        .unwrap();
    assert_eq!(router.target(session), Ok(Target::Unavailable));
    assert!(drain(&mut router).contains(&RouterEvent::NoPeersAvailable {
        session,
        relay: RELAY
    }));
}

#[test]
fn unknown_relay_and_stale_attempts_are_errors_not_panics() {
    let t0 = test_start();
    let mut router = router_with_peers(2, t0);
    assert_eq!(
        router.open_session(RelayKey([1; 32]), SessionKind::Client, t0),
        Err(RouterError::UnknownRelay(RelayKey([1; 32])))
    );
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    let (attempt, _) = attempts(&drain(&mut router))[0];
    router
        .handle_attempt_outcome(session, attempt, false, "x", t0)
        .unwrap();
    assert_eq!(
        router.handle_attempt_outcome(session, attempt, true, "", t0),
        Err(RouterError::StaleAttempt { session, attempt })
    );
    assert_eq!(
        router.target(SessionId(999)),
        Err(RouterError::UnknownSession(SessionId(999)))
    );
}

#[test]
fn replica_session_returns_to_a_recovered_peer_with_its_subscriptions() {
    let t0 = test_start();
    let mut router = router_with_peers(1, t0);
    router.handle_peer_health(peer(1), PeerHealth::Down, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    assert_eq!(router.target(session), Ok(Target::Replica));
    router.handle_subscription_opened(session, "feed").unwrap();
    assert_eq!(router.route_read(session), Ok(Target::Replica));
    drain(&mut router);

    let later = t0 + Duration::from_secs(7);
    router.handle_peer_health(peer(1), PeerHealth::Healthy, later);
    assert_eq!(router.target(session), Ok(Target::Peer(peer(1))));
    let events = drain(&mut router);
    assert_eq!(
        events,
        vec![
            RouterEvent::FallbackEnded {
                session,
                relay: RELAY,
                peer: peer(1),
                duration: Duration::from_secs(7),
                subscriptions: vec!["feed".to_owned()],
            },
            RouterEvent::Routed {
                session,
                relay: RELAY,
                peer: peer(1)
            },
        ]
    );
    let counters = router.counters(&RELAY).unwrap();
    assert_eq!(counters.replica_sessions, 0);
    assert_eq!(counters.fallback_reads, 1);
    assert_eq!(counters.fallback_duration.count(), 1);
}

#[test]
fn a_peer_going_down_moves_its_sessions_to_another_peer() {
    let t0 = test_start();
    let mut router = router_with_peers(2, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    let (attempt, first) = attempts(&drain(&mut router))[0];
    router
        .handle_attempt_outcome(session, attempt, true, "", t0)
        .unwrap();
    router.handle_peer_health(first, PeerHealth::Down, t0);
    let events = drain(&mut router);
    let retried = attempts(&events);
    assert_eq!(retried.len(), 1);
    assert_ne!(
        retried[0].1, first,
        "the failed peer is not retried in the same sweep"
    );
}

#[test]
fn closing_a_replica_session_observes_its_fallback_duration() {
    let t0 = test_start();
    let mut router = router_with_peers(0, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    router
        .record_fallback_write(session, FallbackWriteResult::Readonly)
        .unwrap();
    router
        .close_session(session, t0 + Duration::from_secs(2))
        .unwrap();
    let events = drain(&mut router);
    assert!(events.contains(&RouterEvent::SessionClosed {
        session,
        relay: RELAY,
        replica_duration: Some(Duration::from_secs(2)),
    }));
    let counters = router.counters(&RELAY).unwrap();
    assert_eq!(
        counters.fallback_writes.get(&FallbackWriteResult::Readonly),
        Some(&1)
    );
    assert_eq!(counters.replica_sessions, 0);
    assert_eq!(router.session_count(), 0);
}

#[test]
fn suspect_peers_are_tried_after_healthy_ones() {
    let t0 = test_start();
    let mut router = router_with_peers(3, t0);
    router.handle_peer_health(peer(1), PeerHealth::Suspect, t0);
    router.handle_peer_health(peer(2), PeerHealth::Suspect, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    let (attempt, first) = attempts(&drain(&mut router))[0];
    assert_eq!(first, peer(3));
    router
        .handle_attempt_outcome(session, attempt, false, "x", t0)
        .unwrap();
    let (_, second) = attempts(&drain(&mut router))[0];
    assert!(second == peer(1) || second == peer(2));
}

#[derive(Debug, Clone)]
struct SweepCase {
    healths: Vec<PeerHealth>,
    outcomes: Vec<u8>,
    replica: bool,
}

fn sweep_case() -> impl Strategy<Value = SweepCase> {
    let health = prop_oneof![
        Just(PeerHealth::Healthy),
        Just(PeerHealth::Suspect),
        Just(PeerHealth::Down)
    ];
    (
        proptest::collection::vec(health, 0..8),
        proptest::collection::vec(0u8..3, 0..16),
        any::<bool>(),
    )
        .prop_map(|(healths, outcomes, replica)| SweepCase {
            healths,
            outcomes,
            replica,
        })
}

proptest! {
    /// A sweep never tries a peer twice, never tries a down peer, and always
    /// ends (routed, replica or unavailable) within one attempt per usable peer.
    #[test]
    fn sweep_never_tries_a_peer_twice_and_always_ends(case in sweep_case()) {
        let t0 = test_start();
        let mut router = Router::new(RouterConfig::default());
        let peers: Vec<PeerId> = (0..case.healths.len()).map(|i| peer(i as u8 + 1)).collect();
        router.handle_relay_peers(RELAY, peers.iter().copied(), t0);
        for (p, health) in peers.iter().zip(&case.healths) {
            router.handle_peer_health(*p, *health, t0);
        }
        router.handle_replica_available(RELAY, case.replica, t0);
        let usable = case.healths.iter().filter(|h| **h != PeerHealth::Down).count();
        let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
        let mut tried = BTreeSet::new();
        let mut now = t0;
        let mut outcomes = case.outcomes.iter().copied();
        for _ in 0..=usable {
            let events = drain(&mut router);
            let Some((attempt, p)) = attempts(&events).first().copied() else { break };
            prop_assert!(tried.insert(p), "peer tried twice");
            prop_assert!(case.healths[usize::from(p.0[0] - 1)] != PeerHealth::Down);
            now += Duration::from_millis(5);
            match outcomes.next().unwrap_or(1) {
                0 => router.handle_attempt_outcome(session, attempt, true, "", now).unwrap(),
                1 => router.handle_attempt_outcome(session, attempt, false, "x", now).unwrap(),
                _ => {
                    now += RouterConfig::default().attempt_timeout;
                    router.handle_timeout(now);
                }
            }
        }
        prop_assert!(tried.len() <= usable);
        let target = router.target(session).unwrap();
        prop_assert_ne!(target, Target::Pending, "the sweep ended");
        if target == Target::Replica { prop_assert!(case.replica); }
        if target == Target::Unavailable { prop_assert!(!case.replica); }
    }

    /// A session in replica mode is routed to a peer right after one of the
    /// relay's peers is reported healthy: one health transition suffices.
    #[test]
    fn replica_mode_is_left_within_one_health_transition_of_a_peer_recovering(
        peer_count in 1u8..6,
        recovering in 0u8..6,
        sessions in 1usize..5,
    ) {
        let t0 = test_start();
        let mut router = Router::new(RouterConfig::default());
        router.handle_relay_peers(RELAY, (1..=peer_count).map(peer), t0);
        router.handle_replica_available(RELAY, true, t0);
        let ids: Vec<SessionId> = (0..sessions)
            .map(|_| router.open_session(RELAY, SessionKind::Client, t0).unwrap())
            .collect();
        for id in &ids {
            prop_assert_eq!(router.target(*id).unwrap(), Target::Replica);
        }
        let back = peer(recovering % peer_count + 1);
        router.handle_peer_health(back, PeerHealth::Healthy, t0 + Duration::from_secs(1));
        for id in &ids {
            prop_assert_eq!(router.target(*id).unwrap(), Target::Peer(back));
        }
        let ended = drain(&mut router)
            .into_iter()
            .filter(|event| matches!(event, RouterEvent::FallbackEnded { .. }))
            .count();
        prop_assert_eq!(ended, sessions);
    }

    /// After `handle_timeout(t)` and a full drain, `poll_timeout` is `None` or later than `t`.
    #[test]
    fn router_poll_timeout_after_handle_timeout_is_later_than_now(
        steps in proptest::collection::vec((0u16..800, any::<bool>()), 1..40)
    ) {
        let t0 = test_start();
        let mut router = router_with_peers(4, t0);
        let mut now = t0;
        for (advance, open) in steps {
            if open {
                router.open_session(RELAY, SessionKind::Client, now).unwrap();
            }
            now += Duration::from_millis(u64::from(advance));
            router.handle_timeout(now);
            drain(&mut router);
            if let Some((next, _)) = router.poll_timeout() {
                prop_assert!(next > now);
            }
        }
    }
}

#[test]
fn a_session_that_fell_back_beside_a_healthy_peer_retries_it_after_one_heartbeat() {
    let t0 = test_start();
    let mut router = router_with_peers(1, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    let (attempt, _) = attempts(&drain(&mut router))[0];
    // The attempt fails although health still counts the peer as healthy.
    router
        .handle_attempt_outcome(session, attempt, false, "refused", t0)
        .unwrap();
    assert_eq!(router.target(session), Ok(Target::Replica));
    let (retry_at, reason) = router.poll_timeout().unwrap();
    assert_eq!(reason, "replica retry");
    assert_eq!(retry_at, t0 + RouterConfig::default().replica_retry);
    router.handle_timeout(retry_at);
    assert_eq!(router.target(session), Ok(Target::Peer(peer(1))));
    assert!(
        drain(&mut router)
            .iter()
            .any(|event| matches!(event, RouterEvent::FallbackEnded { .. }))
    );
    assert_eq!(router.poll_timeout(), None);
}

#[test]
fn return_now_routes_a_replica_session_to_a_healthy_peer_on_demand() {
    let t0 = test_start();
    let mut router = router_with_peers(2, t0);
    router.handle_peer_health(peer(1), PeerHealth::Down, t0);
    router.handle_peer_health(peer(2), PeerHealth::Down, t0);
    let session = router.open_session(RELAY, SessionKind::Client, t0).unwrap();
    assert_eq!(router.return_now(session, t0), None, "no healthy peer yet");
    // A peer turning healthy returns the session by itself; return_now is
    // for sessions that missed it, e.g. a write arriving first.
    router.handle_peer_health(peer(2), PeerHealth::Healthy, t0);
    assert_eq!(router.target(session), Ok(Target::Peer(peer(2))));
    assert_eq!(router.return_now(session, t0), None, "already on a peer");
}

use super::*;
use crate::time::test_start;

fn peer(n: u8) -> PeerId {
    PeerId([n; 32])
}

fn drain(health: &mut Health) -> Vec<HealthEvent> {
    std::iter::from_fn(|| health.poll_event()).collect()
}

fn config() -> HealthConfig {
    HealthConfig {
        heartbeat_interval: Duration::from_secs(1),
        miss_limit: 3,
        failure_limit: 2,
    }
}

#[test]
fn missed_heartbeats_make_a_peer_suspect_then_down() {
    let t0 = test_start();
    let mut health = Health::new(config());
    health.handle_link_up(peer(1), t0);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Healthy);
    let (suspect_at, _) = health.poll_timeout().unwrap();
    assert_eq!(suspect_at, t0 + Duration::from_millis(1500));
    health.handle_timeout(suspect_at);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Suspect);
    let (down_at, reason) = health.poll_timeout().unwrap();
    assert_eq!(reason, "peer miss limit");
    assert_eq!(down_at, t0 + Duration::from_millis(3500));
    health.handle_timeout(down_at);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Down);
    assert_eq!(health.poll_timeout(), None, "a down peer has no timer");
    assert_eq!(health.peer(&peer(1)).unwrap().last_healthy_at, Some(t0));
}

#[test]
fn heartbeat_restores_a_suspect_peer_and_pushes_the_deadline() {
    let t0 = test_start();
    let mut health = Health::new(config());
    health.handle_link_up(peer(1), t0);
    health.handle_timeout(t0 + Duration::from_millis(1500));
    health.handle_heartbeat(peer(1), t0 + Duration::from_millis(1600));
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Healthy);
    assert_eq!(
        health.poll_timeout().map(|(at, _)| at),
        Some(t0 + Duration::from_millis(3100))
    );
    let events = drain(&mut health);
    assert_eq!(
        events.len(),
        3,
        "healthy, suspect, healthy again: {events:?}"
    );
}

#[test]
fn link_down_makes_a_peer_down_at_once_and_late_heartbeats_are_ignored() {
    let t0 = test_start();
    let mut health = Health::new(config());
    health.handle_link_up(peer(1), t0);
    health.handle_link_down(peer(1), t0);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Down);
    health.handle_heartbeat(peer(1), t0 + Duration::from_millis(1));
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Down);
    health.handle_link_up(peer(1), t0 + Duration::from_millis(2));
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Healthy);
}

#[test]
fn failed_requests_make_a_peer_suspect_then_down_and_success_heals() {
    let t0 = test_start();
    let mut health = Health::new(config());
    health.handle_link_up(peer(1), t0);
    health.handle_request_outcome(peer(1), false, t0);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Suspect);
    health.handle_request_outcome(peer(1), false, t0);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Down);
    health.handle_request_outcome(peer(1), true, t0);
    assert_eq!(health.health_of(&peer(1)), PeerHealth::Healthy);
    assert_eq!(health.peer(&peer(1)).unwrap().consecutive_failures, 0);
}

#[test]
fn every_transition_is_reported_once_with_its_cause() {
    let t0 = test_start();
    let mut health = Health::new(config());
    health.handle_link_up(peer(1), t0);
    health.handle_heartbeat(peer(1), t0);
    health.handle_link_down(peer(1), t0);
    let events = drain(&mut health);
    assert_eq!(
        events,
        vec![
            HealthEvent::PeerChanged {
                peer: peer(1),
                from: None,
                to: PeerHealth::Healthy,
                cause: HealthCause::LinkUp
            },
            HealthEvent::PeerChanged {
                peer: peer(1),
                from: Some(PeerHealth::Healthy),
                to: PeerHealth::Down,
                cause: HealthCause::LinkDown
            },
        ]
    );
}

#[test]
fn mirror_lag_has_blocks_and_milliseconds_as_separate_fields() {
    let t0 = test_start();
    let relay = RelayKey([7; 32]);
    let mut health = Health::new(config());
    health.handle_mirror_stored(relay, [1; 32], 10, t0);
    let fresh = health.mirror_freshness(&relay, t0).unwrap();
    assert_eq!(
        (fresh.lag_blocks, fresh.lag_ms, fresh.last_synced_at),
        (0, 0, Some(t0))
    );

    health.handle_mirror_advertised(relay, [1; 32], 15, t0 + Duration::from_secs(1));
    health.handle_mirror_advertised(relay, [2; 32], 3, t0 + Duration::from_secs(1));
    let behind = health
        .mirror_freshness(&relay, t0 + Duration::from_secs(4))
        .unwrap();
    assert_eq!(behind.lag_blocks, 8);
    assert_eq!(behind.lag_ms, 4_000);
    assert_eq!(behind.last_synced_at, Some(t0));

    health.handle_mirror_stored(relay, [1; 32], 15, t0 + Duration::from_secs(5));
    health.handle_mirror_stored(relay, [2; 32], 3, t0 + Duration::from_secs(6));
    let caught_up = health
        .mirror_freshness(&relay, t0 + Duration::from_secs(9))
        .unwrap();
    assert_eq!((caught_up.lag_blocks, caught_up.lag_ms), (0, 0));
    assert_eq!(
        caught_up.last_synced_at,
        Some(t0 + Duration::from_secs(9)),
        "a complete mirror is in sync as of now"
    );
    let changes: Vec<_> = drain(&mut health)
        .into_iter()
        .filter(|event| matches!(event, HealthEvent::MirrorSyncChanged { .. }))
        .collect();
    assert_eq!(
        changes.len(),
        3,
        "in sync, behind, in sync again: {changes:?}"
    );
}

#[test]
fn advertised_length_never_shrinks() {
    let t0 = test_start();
    let relay = RelayKey([7; 32]);
    let mut health = Health::new(config());
    health.handle_mirror_advertised(relay, [1; 32], 10, t0);
    health.handle_mirror_advertised(relay, [1; 32], 4, t0);
    assert_eq!(health.mirror_freshness(&relay, t0).unwrap().lag_blocks, 10);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Input {
        LinkUp(u8),
        LinkDown(u8),
        Heartbeat(u8),
        Outcome(u8, bool),
        Advance(u16),
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            1 => (0u8..4).prop_map(Input::LinkUp),
            1 => (0u8..4).prop_map(Input::LinkDown),
            3 => (0u8..4).prop_map(Input::Heartbeat),
            1 => (0u8..4, any::<bool>()).prop_map(|(p, ok)| Input::Outcome(p, ok)),
            3 => (0u16..5000).prop_map(Input::Advance),
        ]
    }

    proptest! {
        /// After `handle_timeout(t)` and a full drain, the next deadline is
        /// `None` or later than `t`; and no peer with a closed link is healthy.
        #[test]
        fn poll_timeout_after_handle_timeout_is_later_than_now(inputs in proptest::collection::vec(input(), 1..80)) {
            let mut now = test_start();
            let mut health = Health::new(config());
            for input in inputs {
                match input {
                    Input::LinkUp(p) => health.handle_link_up(peer(p), now),
                    Input::LinkDown(p) => health.handle_link_down(peer(p), now),
                    Input::Heartbeat(p) => health.handle_heartbeat(peer(p), now),
                    Input::Outcome(p, ok) => health.handle_request_outcome(peer(p), ok, now),
                    Input::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        health.handle_timeout(now);
                        while health.poll_event().is_some() {}
                        if let Some((next, _)) = health.poll_timeout() {
                            prop_assert!(next > now);
                        }
                    }
                }
                for (_, status) in health.peers() {
                    prop_assert!(status.link_up || status.health == PeerHealth::Down);
                }
            }
        }
    }
}

use proptest::prelude::*;

use super::*;
use crate::time::test_start;

const RELAY: RelayKey = RelayKey([3; 32]);
const GATEWAY: PeerId = PeerId([9; 32]);

fn config() -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_secs(600),
        warning_before: Duration::from_secs(120),
        request_timeout: Duration::from_secs(10),
    }
}

fn drain(table: &mut LeaseTable) -> Vec<LeaseEvent> {
    std::iter::from_fn(|| table.poll_event()).collect()
}

#[test]
fn issued_lease_expires_at_ttl_even_before_the_timer_runs() {
    let t0 = test_start();
    let mut table = LeaseTable::new(config());
    let grant = table.issue(RELAY, GATEWAY, "escrow-1", t0).unwrap();
    assert_eq!(grant.id.epoch, 1);
    let expiry = t0 + Duration::from_secs(600);
    assert!(
        table
            .active(&RELAY, expiry - Duration::from_millis(1))
            .is_some()
    );
    assert!(
        table.active(&RELAY, expiry).is_none(),
        "unusable at expiry without handle_timeout"
    );
    assert!(matches!(
        table.check_write(&RELAY, 1, expiry),
        Err(LeaseError::NotActive(_))
    ));
    table.handle_timeout(expiry);
    let events = drain(&mut table);
    assert!(events.contains(&LeaseEvent::Ended {
        id: grant.id,
        reason: EndReason::Expired
    }));
    assert_eq!(table.current(&RELAY).unwrap().state, LeaseState::Expired);
}

#[test]
fn expiry_warning_fires_once_at_the_configured_lead() {
    let t0 = test_start();
    let mut table = LeaseTable::new(config());
    let grant = table.issue(RELAY, GATEWAY, "e", t0).unwrap();
    drain(&mut table);
    let (warn_at, reason) = table.poll_timeout().unwrap();
    assert_eq!(reason, "lease expiry warning");
    assert_eq!(warn_at, t0 + Duration::from_secs(480));
    table.handle_timeout(warn_at);
    assert_eq!(
        drain(&mut table),
        vec![LeaseEvent::ExpiryWarning {
            id: grant.id,
            remaining: Duration::from_secs(120)
        }]
    );
    assert_eq!(table.poll_timeout().map(|(_, r)| r), Some("lease expiry"));
}

#[test]
fn one_lease_per_relay_and_epochs_only_grow() {
    let t0 = test_start();
    let mut table = LeaseTable::new(config());
    let first = table.issue(RELAY, GATEWAY, "e", t0).unwrap();
    assert_eq!(
        table.issue(RELAY, GATEWAY, "e", t0),
        Err(LeaseError::AlreadyActive(first.id))
    );
    table.end(first.id, EndReason::PeerHealthy, t0).unwrap();
    let second = table.issue(RELAY, GATEWAY, "e", t0).unwrap();
    assert_eq!(second.id.epoch, 2);
    assert!(matches!(
        table.check_write(&RELAY, 1, t0),
        Err(LeaseError::StaleEpoch { current: 2, .. })
    ));
    assert_eq!(table.check_write(&RELAY, 2, t0), Ok(second.id));
    assert!(matches!(
        table.end(first.id, EndReason::Shutdown, t0),
        Err(LeaseError::StaleEpoch { .. })
    ));
}

#[test]
fn gateway_request_is_single_flight_and_times_out() {
    let t0 = test_start();
    let mut table = LeaseTable::new(config());
    assert_eq!(table.request(RELAY, t0), RequestOutcome::Started);
    assert_eq!(table.request(RELAY, t0), RequestOutcome::InFlight);
    assert_eq!(
        drain(&mut table),
        vec![LeaseEvent::RequestNeeded {
            relay: RELAY,
            renewing: None
        }]
    );
    table.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        drain(&mut table),
        vec![LeaseEvent::RequestFailed {
            relay: RELAY,
            reason: "escrow-timeout".into()
        }]
    );
    assert_eq!(
        table.request(RELAY, t0 + Duration::from_secs(11)),
        RequestOutcome::Started
    );
}

#[test]
fn gateway_installs_grant_and_renews_the_same_lease() {
    let t0 = test_start();
    let mut gateway = LeaseTable::new(config());
    let mut escrow = LeaseTable::new(config());
    gateway.request(RELAY, t0);
    let grant = escrow.issue(RELAY, GATEWAY, "e", t0).unwrap();
    gateway.handle_grant(grant.clone(), t0).unwrap();
    assert_eq!(gateway.check_write(&RELAY, 1, t0), Ok(grant.id));
    assert_eq!(gateway.request(RELAY, t0), RequestOutcome::Active(grant.id));

    let later = t0 + Duration::from_secs(500);
    assert_eq!(
        gateway.request_renewal(RELAY, later),
        RequestOutcome::Started
    );
    let extended = later + Duration::from_secs(600);
    escrow.renew(grant.id, extended, later).unwrap();
    gateway
        .handle_grant(
            LeaseGrant {
                expires_at: extended,
                ..grant.clone()
            },
            later,
        )
        .unwrap();
    assert!(
        gateway
            .active(&RELAY, t0 + Duration::from_secs(700))
            .is_some()
    );
    assert_eq!(
        gateway.renew(grant.id, extended, later),
        Err(LeaseError::NotExtended(grant.id))
    );
}

#[test]
fn unrequested_or_stale_grants_are_refused() {
    let t0 = test_start();
    let mut gateway = LeaseTable::new(config());
    let mut escrow = LeaseTable::new(config());
    let grant = escrow.issue(RELAY, GATEWAY, "e", t0).unwrap();
    assert_eq!(
        gateway.handle_grant(grant.clone(), t0),
        Err(LeaseError::NotRequested(RELAY))
    );
    gateway.restore_epoch(RELAY, 5);
    gateway.request(RELAY, t0);
    assert!(matches!(
        gateway.handle_grant(grant, t0),
        Err(LeaseError::StaleEpoch { current: 5, .. })
    ));
}

#[test]
fn ending_reports_reason_and_past_expiry_counts_as_expired() {
    let t0 = test_start();
    let mut table = LeaseTable::new(config());
    let grant = table.issue(RELAY, GATEWAY, "e", t0).unwrap();
    table
        .end(
            grant.id,
            EndReason::Revoked {
                reason: "owner".into(),
            },
            t0,
        )
        .unwrap();
    assert_eq!(table.current(&RELAY).unwrap().state, LeaseState::Revoked);
    assert_eq!(table.history().count(), 1);
    let second = table.issue(RELAY, GATEWAY, "e", t0).unwrap();
    let late = t0 + Duration::from_secs(601);
    table.end(second.id, EndReason::PeerHealthy, late).unwrap();
    assert_eq!(
        table.current(&RELAY).unwrap().end_reason,
        Some(EndReason::Expired)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Issue,
    End,
    Renew(u16),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Issue),
        Just(Op::End),
        (1u16..900).prop_map(Op::Renew),
        (0u16..400).prop_map(Op::Advance),
    ]
}

proptest! {
    /// No lease is ever usable at or after its expiry, at most one lease of a
    /// relay is usable at a time, epochs never decrease, and after
    /// `handle_timeout(t)` the next deadline is later than `t`.
    #[test]
    fn no_lease_outlives_its_ttl_and_epochs_only_grow(ops in proptest::collection::vec(op(), 1..60)) {
        let mut now = test_start();
        let mut table = LeaseTable::new(config());
        let mut last_epoch = 0;
        for op in ops {
            match op {
                Op::Issue => { let _ = table.issue(RELAY, GATEWAY, "e", now); }
                Op::End => { table.end_relay(&RELAY, EndReason::PeerHealthy, now); }
                Op::Renew(secs) => {
                    if let Some(id) = table.active(&RELAY, now).map(|l| l.id) {
                        let _ = table.renew(id, now + Duration::from_secs(u64::from(secs)), now);
                    }
                }
                Op::Advance(secs) => {
                    now += Duration::from_secs(u64::from(secs));
                    table.handle_timeout(now);
                    while table.poll_event().is_some() {}
                    if let Some((next, _)) = table.poll_timeout() {
                        prop_assert!(next > now);
                    }
                }
            }
            if let Some(lease) = table.active(&RELAY, now) {
                prop_assert!(now < lease.expires_at);
                prop_assert_eq!(lease.id.epoch, table.current_epoch(&RELAY));
            }
            prop_assert!(table.current_epoch(&RELAY) >= last_epoch);
            last_epoch = table.current_epoch(&RELAY);
            prop_assert!(table.active_leases(now).count() <= 1);
        }
    }
}

/// Review finding: a lease past expiry whose timer had not run yet was
/// replaced by a new grant without its `Ended` event (no vault wipe).
#[test]
fn an_expired_lease_is_reported_ended_before_a_new_one_replaces_it() {
    let t0 = test_start();
    let mut gateway = LeaseTable::new(config());
    let mut escrow = LeaseTable::new(config());
    gateway.request(RELAY, t0);
    let first = escrow.issue(RELAY, GATEWAY, "e", t0).unwrap();
    gateway.handle_grant(first.clone(), t0).unwrap();
    drain(&mut gateway);
    let expiry = first.expires_at;
    assert_eq!(gateway.request(RELAY, expiry), RequestOutcome::Started);
    let events = drain(&mut gateway);
    assert!(events.contains(&LeaseEvent::Ended {
        id: first.id,
        reason: EndReason::Expired
    }));
    let second = escrow.issue(RELAY, GATEWAY, "e", expiry).unwrap();
    gateway.handle_grant(second.clone(), expiry).unwrap();
    assert_eq!(gateway.history().last().map(|l| l.id), Some(first.id));
    assert_eq!(gateway.check_write(&RELAY, 2, expiry), Ok(second.id));
}

/// Review finding: a renewal in flight for a lease that then ended made new
/// writes wait on a request that could only fail.
#[test]
fn a_renewal_in_flight_for_an_ended_lease_does_not_block_a_new_request() {
    let t0 = test_start();
    let mut gateway = LeaseTable::new(config());
    let mut escrow = LeaseTable::new(config());
    gateway.request(RELAY, t0);
    let grant = escrow.issue(RELAY, GATEWAY, "e", t0).unwrap();
    gateway.handle_grant(grant.clone(), t0).unwrap();
    assert_eq!(gateway.request_renewal(RELAY, t0), RequestOutcome::Started);
    gateway.end(grant.id, EndReason::PeerHealthy, t0).unwrap();
    assert!(!gateway.is_requested(&RELAY));
    assert_eq!(gateway.request(RELAY, t0), RequestOutcome::Started);
}

#[test]
fn an_exhausted_epoch_counter_is_an_error_not_a_wrap() {
    let t0 = test_start();
    let mut table = LeaseTable::new(config());
    table.restore_epoch(RELAY, u64::MAX);
    assert_eq!(
        table.issue(RELAY, GATEWAY, "e", t0),
        Err(LeaseError::EpochExhausted(RELAY))
    );
    assert_eq!(table.current_epoch(&RELAY), u64::MAX);
}

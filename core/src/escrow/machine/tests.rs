use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::escrow::{Evidence, evaluate};
use crate::time::test_start;

const RELAY: RelayKey = RelayKey([1; 32]);
const OWNER: PeerId = PeerId([2; 32]);
const GATEWAY: PeerId = PeerId([3; 32]);
const OTHER_GATEWAY: PeerId = PeerId([4; 32]);
const UNIX0: UnixTime = UnixTime(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(600);

struct Fixture {
    escrow: Escrow,
    t0: Instant,
}

impl Fixture {
    fn new() -> Self {
        Self::with_policy(PolicyConfig::default())
    }

    fn with_policy(policy: PolicyConfig) -> Self {
        let t0 = test_start();
        Self {
            escrow: Escrow::new(policy, LeaseConfig::default(), t0, UNIX0),
            t0,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn deposit(&mut self, escrow_id: &str, relay: RelayKey, now: Instant) -> DepositRecord {
        self.escrow
            .handle_deposit(
                deposit_input(escrow_id, relay, OWNER, [GATEWAY, OTHER_GATEWAY]),
                now,
            )
            .unwrap()
    }

    /// Plan, "append" the plan's audit record, commit.
    fn unlock(
        &mut self,
        requester: PeerId,
        relay: RelayKey,
        now: Instant,
    ) -> (AuditRecord, Result<UnlockOutcome, EscrowError>) {
        let request = request(&self.escrow, requester, relay, now);
        let plan = self.escrow.plan_unlock(&request, now).unwrap();
        let audit = plan.audit().clone();
        (audit, self.escrow.commit_unlock(plan, now))
    }

    fn issue(&mut self, requester: PeerId, relay: RelayKey, now: Instant) -> LeaseGrant {
        match self.unlock(requester, relay, now).1 {
            Ok(UnlockOutcome::Issued(grant)) => grant,
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    fn drain(&mut self) -> Vec<EscrowEvent> {
        std::iter::from_fn(|| self.escrow.poll_event()).collect()
    }

    fn drain_audit(&mut self) -> Vec<AuditRecord> {
        self.drain()
            .into_iter()
            .filter_map(|event| match event {
                EscrowEvent::Audit(record) => Some(record),
                EscrowEvent::LeaseEnded { .. } => None,
            })
            .collect()
    }
}

fn deposit_input<const N: usize>(
    escrow_id: &str,
    relay: RelayKey,
    owner: PeerId,
    permitted: [PeerId; N],
) -> DepositInput {
    DepositInput {
        escrow_id: escrow_id.into(),
        relay_key: relay,
        owner,
        permitted_requesters: BTreeSet::from(permitted),
        requested_expires_at: None,
        policy_version: crate::escrow::DEFAULT_POLICY_VERSION.into(),
    }
}

/// Evidence that passes at `now`: nobody healthy for a minute, mirror in sync.
fn fresh(escrow: &Escrow, now: Instant) -> Evidence {
    let unix = escrow.unix_time(now);
    Evidence {
        escrow_enabled: Some(true),
        healthy_peer_count: Some(0),
        last_healthy_at: Some(UnixTime(unix.0 - 60_000)),
        mirror_lag_blocks: Some(0),
        mirror_lag_ms: Some(0),
        mirror_last_synced_at: Some(unix),
    }
}

fn request(escrow: &Escrow, requester: PeerId, relay: RelayKey, now: Instant) -> UnlockRequest {
    UnlockRequest {
        relay_key: relay,
        requester,
        evidence: Some(fresh(escrow, now)),
    }
}

fn kinds(records: &[AuditRecord]) -> Vec<AuditKind> {
    records.iter().map(|record| record.kind).collect()
}

#[test]
fn deposit_is_audited_and_its_expiry_capped_at_max_deposit_ttl() {
    let mut f = Fixture::new();
    let day = Duration::from_millis(86_400_000);
    let mut input = deposit_input("escrow_1", RELAY, OWNER, [GATEWAY]);
    input.requested_expires_at = Some(UnixTime(u64::MAX));
    let record = f.escrow.handle_deposit(input, f.t0).unwrap();
    assert_eq!(record.expires_at, UNIX0.saturating_add(day));
    assert_eq!(record.created_at, UNIX0);
    let audit = f.drain_audit();
    assert_eq!(kinds(&audit), [AuditKind::Deposit]);
    assert_eq!(audit[0].actor, OWNER.to_hex());

    let mut shorter = deposit_input("escrow_2", RELAY, OWNER, [GATEWAY]);
    shorter.requested_expires_at = Some(UnixTime(UNIX0.0 + 5_000));
    let record = f.escrow.handle_deposit(shorter, f.t0).unwrap();
    assert_eq!(record.expires_at, UnixTime(UNIX0.0 + 5_000));

    let mut past = deposit_input("escrow_3", RELAY, OWNER, [GATEWAY]);
    past.requested_expires_at = Some(UNIX0);
    assert_eq!(
        f.escrow.handle_deposit(past, f.t0),
        Err(EscrowError::DepositAlreadyExpired)
    );
}

#[test]
fn deposit_refuses_duplicate_ids_empty_permitted_sets_and_other_policy_versions() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    f.drain();
    let duplicate = deposit_input("escrow_1", RelayKey([7; 32]), OWNER, [GATEWAY]);
    assert_eq!(
        f.escrow.handle_deposit(duplicate, f.t0),
        Err(EscrowError::DuplicateEscrowId("escrow_1".into()))
    );
    let nobody = deposit_input("escrow_2", RELAY, OWNER, []);
    assert_eq!(
        f.escrow.handle_deposit(nobody, f.t0),
        Err(EscrowError::NoPermittedRequesters)
    );
    let mut old = deposit_input("escrow_3", RELAY, OWNER, [GATEWAY]);
    old.policy_version = "2023-old".into();
    assert!(matches!(
        f.escrow.handle_deposit(old, f.t0),
        Err(EscrowError::PolicyVersionMismatch { .. })
    ));
    let empty = deposit_input("", RELAY, OWNER, [GATEWAY]);
    assert_eq!(
        f.escrow.handle_deposit(empty, f.t0),
        Err(EscrowError::InvalidEscrowId)
    );
    assert!(f.drain().is_empty(), "refused deposits change nothing");
    assert_eq!(
        f.escrow.current_deposit(&RELAY).unwrap().escrow_id,
        "escrow_1"
    );
}

#[test]
fn unlock_of_a_relay_without_deposit_is_record_not_found() {
    let f = Fixture::new();
    let request = request(&f.escrow, GATEWAY, RELAY, f.t0);
    let error = f.escrow.plan_unlock(&request, f.t0).unwrap_err();
    assert_eq!(error, EscrowError::RecordNotFound(RELAY));
    assert_eq!(error.code(), "escrow-record-not-found");
}

#[test]
fn unlock_issues_a_lease_and_counts_it_against_the_budget() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    f.drain();
    let now = f.at(60);
    let (audit, outcome) = f.unlock(GATEWAY, RELAY, now);
    let Ok(UnlockOutcome::Issued(grant)) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        grant.id,
        LeaseId {
            relay: RELAY,
            epoch: 1
        }
    );
    assert_eq!(grant.expires_at, now + TTL);
    assert_eq!(grant.holder, GATEWAY);
    assert_eq!(audit.kind, AuditKind::UnlockIssued);
    assert_eq!(audit.lease_id, Some(grant.id));
    assert_eq!(audit.actor, GATEWAY.to_hex());
    assert!(audit.evidence.is_some());
    assert_eq!(f.escrow.deposit("escrow_1").unwrap().unlocks_used, 1);
    assert_eq!(f.escrow.active_leases(now).count(), 1);
    assert!(
        f.drain_audit().is_empty(),
        "the plan carried the only record"
    );
}

#[test]
fn budget_is_exhausted_after_max_unlocks_per_lease() {
    let policy = PolicyConfig {
        max_unlocks_per_lease: 2,
        ..PolicyConfig::default()
    };
    let mut f = Fixture::with_policy(policy);
    f.deposit("escrow_1", RELAY, f.t0);
    for round in 0..2 {
        let now = f.at(60 + round * 10);
        let grant = f.issue(GATEWAY, RELAY, now);
        f.escrow
            .handle_release(grant.id, GATEWAY, EndReason::PeerHealthy, now)
            .unwrap();
    }
    let (audit, outcome) = f.unlock(GATEWAY, RELAY, f.at(100));
    assert_eq!(
        outcome,
        Ok(UnlockOutcome::Rejected(vec![
            RejectReason::UnlockBudgetExhausted
        ]))
    );
    assert_eq!(audit.kind, AuditKind::UnlockRejected);
    assert_eq!(audit.reasons, vec![RejectReason::UnlockBudgetExhausted]);
}

#[test]
fn refetch_by_the_holder_returns_the_same_lease_without_using_budget() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    let (audit, outcome) = f.unlock(GATEWAY, RELAY, f.at(120));
    assert_eq!(outcome, Ok(UnlockOutcome::Refetched(grant.clone())));
    assert_eq!(audit.kind, AuditKind::UnlockRefetched);
    assert_eq!(audit.lease_id, Some(grant.id));
    assert_eq!(f.escrow.deposit("escrow_1").unwrap().unlocks_used, 1);
    // A refetch re-checks the policy: a worker back online stops it.
    let mut request = request(&f.escrow, GATEWAY, RELAY, f.at(130));
    request.evidence.as_mut().unwrap().healthy_peer_count = Some(1);
    let plan = f.escrow.plan_unlock(&request, f.at(130)).unwrap();
    assert_eq!(
        plan.action(),
        &UnlockAction::Reject(vec![RejectReason::PeersStillHealthy])
    );
}

#[test]
fn another_requester_is_rejected_while_a_lease_is_held() {
    let policy = PolicyConfig {
        max_unlocks_per_lease: 5,
        ..PolicyConfig::default()
    };
    let mut f = Fixture::with_policy(policy);
    f.deposit("escrow_1", RELAY, f.t0);
    f.issue(GATEWAY, RELAY, f.at(60));
    let (_, outcome) = f.unlock(OTHER_GATEWAY, RELAY, f.at(61));
    assert_eq!(
        outcome,
        Ok(UnlockOutcome::Rejected(vec![
            RejectReason::LeaseHeldByAnother
        ]))
    );
    assert_eq!(f.escrow.active_leases(f.at(61)).count(), 1);
}

#[test]
fn requester_outside_the_permitted_set_is_rejected() {
    let mut f = Fixture::new();
    f.escrow
        .handle_deposit(deposit_input("escrow_1", RELAY, OWNER, [GATEWAY]), f.t0)
        .unwrap();
    let (_, outcome) = f.unlock(OTHER_GATEWAY, RELAY, f.at(60));
    assert_eq!(
        outcome,
        Ok(UnlockOutcome::Rejected(vec![
            RejectReason::RequesterNotPermitted
        ]))
    );
}

#[test]
fn rotation_supersedes_the_old_deposit_and_unlocks_the_new_one() {
    let mut f = Fixture::new();
    let old = f.deposit("escrow_1", RELAY, f.t0);
    f.drain();
    f.deposit("escrow_2", RELAY, f.at(1));
    let audit = f.drain_audit();
    assert_eq!(audit[0].supersedes.as_deref(), Some("escrow_1"));
    let old_now = f.escrow.deposit("escrow_1").unwrap();
    assert_eq!(old_now.superseded_by.as_deref(), Some("escrow_2"));
    assert_eq!(
        f.escrow.current_deposit(&RELAY).unwrap().escrow_id,
        "escrow_2"
    );
    // The superseded deposit can no longer be unlocked...
    let now = f.at(60);
    let request = request(&f.escrow, GATEWAY, RELAY, now);
    let decision = evaluate(
        f.escrow.policy(),
        old_now,
        &request,
        f.escrow.unix_time(now),
    );
    assert_eq!(decision.reasons(), [RejectReason::RecordSuperseded]);
    assert!(
        old.superseded_by.is_none(),
        "the returned record is the one stored then"
    );
    // ...and unlocking the relay releases the new one.
    let grant = f.issue(GATEWAY, RELAY, now);
    assert_eq!(grant.escrow_id, "escrow_2");
}

#[test]
fn revoked_deposit_cannot_be_unlocked() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    assert_eq!(
        f.escrow
            .handle_revoke(RevokeTarget::Relay(RELAY), "worker", "rotated", f.at(1)),
        vec!["escrow_1".to_owned()]
    );
    let (_, outcome) = f.unlock(GATEWAY, RELAY, f.at(60));
    assert_eq!(
        outcome,
        Ok(UnlockOutcome::Rejected(vec![RejectReason::RecordRevoked]))
    );
    // A new deposit after a revoke is current and unlockable; the revoked one is not superseded.
    f.deposit("escrow_2", RELAY, f.at(61));
    assert!(
        f.escrow
            .deposit("escrow_1")
            .unwrap()
            .superseded_by
            .is_none()
    );
    f.issue(GATEWAY, RELAY, f.at(62));
}

#[test]
fn expired_deposit_cannot_be_unlocked() {
    let mut f = Fixture::new();
    let mut input = deposit_input("escrow_1", RELAY, OWNER, [GATEWAY]);
    input.requested_expires_at = Some(UnixTime(UNIX0.0 + 120_000));
    f.escrow.handle_deposit(input, f.t0).unwrap();
    let (_, outcome) = f.unlock(GATEWAY, RELAY, f.at(120));
    assert_eq!(
        outcome,
        Ok(UnlockOutcome::Rejected(vec![RejectReason::RecordExpired]))
    );
}

#[test]
fn commit_of_a_stale_plan_fails() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let now = f.at(60);
    let request = request(&f.escrow, GATEWAY, RELAY, now);
    let plan = f.escrow.plan_unlock(&request, now).unwrap();
    assert!(matches!(plan.action(), UnlockAction::Issue { .. }));
    // A rotation lands between plan and commit.
    f.deposit("escrow_2", RELAY, now);
    assert_eq!(
        f.escrow.commit_unlock(plan.clone(), now),
        Err(EscrowError::StalePlan)
    );
    assert_eq!(f.escrow.active_leases(now).count(), 0);
    // Committing the same issue plan twice cannot issue twice either.
    let plan = f.escrow.plan_unlock(&request, now).unwrap();
    f.escrow.commit_unlock(plan.clone(), now).unwrap();
    assert_eq!(
        f.escrow.commit_unlock(plan, now),
        Err(EscrowError::StalePlan)
    );
    // A re-fetch planned just before the lease ran out is stale after it.
    let grant = f.escrow.active_lease(&RELAY, now).unwrap().clone();
    let late = grant.expires_at - Duration::from_millis(1);
    let late_request = super::tests::request(&f.escrow, GATEWAY, RELAY, late);
    let refetch = f.escrow.plan_unlock(&late_request, late).unwrap();
    assert!(matches!(refetch.action(), UnlockAction::Refetch(_)));
    assert_eq!(
        f.escrow.commit_unlock(refetch, grant.expires_at),
        Err(EscrowError::StalePlan)
    );
}

#[test]
fn any_change_to_the_relay_between_plan_and_commit_makes_the_plan_stale() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    f.deposit("escrow_2", RELAY, f.t0);
    let now = f.at(60);
    let request = request(&f.escrow, GATEWAY, RELAY, now);
    let plan = f.escrow.plan_unlock(&request, now).unwrap();
    // Revoking the superseded deposit would not change the decision, but the
    // audit record was written against the relay's earlier state.
    f.escrow.handle_revoke(
        RevokeTarget::EscrowId("escrow_1".into()),
        "worker",
        "retired",
        now,
    );
    assert_eq!(
        f.escrow.commit_unlock(plan, now),
        Err(EscrowError::StalePlan)
    );
    let plan = f.escrow.plan_unlock(&request, now).unwrap();
    assert!(matches!(
        f.escrow.commit_unlock(plan, now),
        Ok(UnlockOutcome::Issued(_))
    ));
}

#[test]
fn a_rejection_commits_even_when_stale_because_it_changes_nothing() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let mut request = request(&f.escrow, GATEWAY, RELAY, f.t0);
    request.evidence = None;
    let plan = f.escrow.plan_unlock(&request, f.t0).unwrap();
    f.deposit("escrow_2", RELAY, f.t0);
    assert!(matches!(
        f.escrow.commit_unlock(plan, f.t0),
        Ok(UnlockOutcome::Rejected(reasons)) if reasons.contains(&RejectReason::EvidenceMissing)
    ));
}

#[test]
fn every_state_change_emits_its_audit_record() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let (plan_audit, _) = f.unlock(GATEWAY, RELAY, f.at(60));
    let grant = f.escrow.active_lease(&RELAY, f.at(60)).unwrap().id;
    let renewal = request(&f.escrow, GATEWAY, RELAY, f.at(70));
    f.escrow.handle_renew(grant, renewal, f.at(70)).unwrap();
    f.escrow
        .handle_release(grant, GATEWAY, EndReason::WorkerResync, f.at(80))
        .unwrap();
    f.escrow.handle_revoke(
        RevokeTarget::EscrowId("escrow_1".into()),
        "op",
        "rotated",
        f.at(90),
    );
    let mut audit = vec![plan_audit];
    audit.extend(f.drain_audit());
    let mut kinds = kinds(&audit);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            AuditKind::Deposit,
            AuditKind::UnlockIssued,
            AuditKind::DepositRevoked,
            AuditKind::LeaseReleased,
            AuditKind::LeaseRenewed,
        ]
    );
    let released = audit
        .iter()
        .find(|r| r.kind == AuditKind::LeaseReleased)
        .unwrap();
    assert_eq!(released.lease_id, Some(grant));
    assert_eq!(released.actor, GATEWAY.to_hex());
    assert_eq!(released.reason.as_deref(), Some("worker-resync"));
    let revoked = audit
        .iter()
        .find(|r| r.kind == AuditKind::DepositRevoked)
        .unwrap();
    assert_eq!(
        (revoked.actor.as_str(), revoked.reason.as_deref()),
        ("op", Some("rotated"))
    );
    assert_eq!(
        revoked.lease_id, None,
        "the lease had been released already"
    );
}

#[test]
fn leases_expire_at_ttl_with_lease_ended_and_a_lease_expired_record() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    f.drain();
    let before = grant.expires_at - Duration::from_millis(1);
    f.escrow.handle_timeout(before);
    assert!(f.drain().is_empty());
    assert!(f.escrow.active_lease(&RELAY, before).is_some());
    let (deadline, reason) = f.escrow.poll_timeout().unwrap();
    assert_eq!((deadline, reason), (grant.expires_at, "lease expiry"));
    f.escrow.handle_timeout(deadline);
    let events = f.drain();
    assert!(events.contains(&EscrowEvent::LeaseEnded {
        id: grant.id,
        reason: EndReason::Expired
    }));
    let expired: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            EscrowEvent::Audit(record) => Some(record),
            EscrowEvent::LeaseEnded { .. } => None,
        })
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].kind, AuditKind::LeaseExpired);
    assert_eq!(expired[0].at, f.escrow.unix_time(grant.expires_at));
    assert_eq!(f.escrow.active_leases(deadline).count(), 0);
    assert!(
        f.escrow
            .poll_timeout()
            .is_none_or(|(next, _)| next > deadline)
    );
    assert_eq!(f.escrow.lease_history().count(), 1);
}

#[test]
fn renew_extends_by_the_ttl_from_now_on_fresh_evidence() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    let now = f.at(500);
    let renewed = f
        .escrow
        .handle_renew(grant.id, request(&f.escrow, GATEWAY, RELAY, now), now)
        .unwrap();
    assert_eq!(renewed.id, grant.id);
    assert_eq!(renewed.expires_at, now + TTL);
    assert_eq!(
        f.escrow.active_lease(&RELAY, now).unwrap().expires_at,
        now + TTL
    );
    assert_eq!(
        f.escrow.deposit("escrow_1").unwrap().unlocks_used,
        1,
        "no budget used"
    );
}

#[test]
fn renew_refused_on_stale_evidence_is_audited_and_keeps_the_expiry() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    f.drain();
    let now = f.at(300);
    let mut back = request(&f.escrow, GATEWAY, RELAY, now);
    back.evidence.as_mut().unwrap().healthy_peer_count = Some(1);
    let error = f.escrow.handle_renew(grant.id, back, now).unwrap_err();
    assert_eq!(
        error,
        EscrowError::Rejected(vec![RejectReason::PeersStillHealthy])
    );
    assert_eq!(error.to_string(), "unlock-rejected:peers-still-healthy");
    let audit = f.drain_audit();
    assert_eq!(kinds(&audit), [AuditKind::UnlockRejected]);
    assert_eq!(audit[0].lease_id, Some(grant.id));
    assert_eq!(
        f.escrow.active_lease(&RELAY, now).unwrap().expires_at,
        grant.expires_at
    );
}

#[test]
fn renew_and_release_refuse_stale_ids_and_other_requesters() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    let now = f.at(61);
    let stale = LeaseId {
        relay: RELAY,
        epoch: 7,
    };
    assert!(matches!(
        f.escrow
            .handle_renew(stale, request(&f.escrow, GATEWAY, RELAY, now), now),
        Err(EscrowError::Lease(LeaseError::StaleEpoch { .. }))
    ));
    assert_eq!(
        f.escrow
            .handle_renew(grant.id, request(&f.escrow, OTHER_GATEWAY, RELAY, now), now),
        Err(EscrowError::NotLeaseHolder { lease: grant.id })
    );
    assert!(matches!(
        f.escrow.handle_renew(
            grant.id,
            request(&f.escrow, GATEWAY, RelayKey([8; 32]), now),
            now
        ),
        Err(EscrowError::RelayMismatch { .. })
    ));
    assert_eq!(
        f.escrow
            .handle_release(grant.id, OTHER_GATEWAY, EndReason::Shutdown, now),
        Err(EscrowError::NotLeaseHolder { lease: grant.id })
    );
    f.drain();
    f.escrow
        .handle_release(grant.id, GATEWAY, EndReason::Shutdown, now)
        .unwrap();
    assert!(f.drain().contains(&EscrowEvent::LeaseEnded {
        id: grant.id,
        reason: EndReason::Shutdown
    }));
    assert!(matches!(
        f.escrow
            .handle_release(grant.id, GATEWAY, EndReason::Shutdown, now),
        Err(EscrowError::Lease(LeaseError::NotActive(_)))
    ));
}

#[test]
fn revoke_by_relay_escrow_id_or_owner_ends_the_leases_it_covers() {
    let relays = [RelayKey([10; 32]), RelayKey([11; 32]), RelayKey([12; 32])];
    let other_owner = PeerId([5; 32]);
    let mut f = Fixture::new();
    for (i, relay) in relays.iter().enumerate() {
        let owner = if i == 2 { other_owner } else { OWNER };
        let input = deposit_input(&format!("escrow_{i}"), *relay, owner, [GATEWAY]);
        f.escrow.handle_deposit(input, f.t0).unwrap();
    }
    let now = f.at(60);
    let grants: Vec<LeaseGrant> = relays
        .iter()
        .map(|relay| f.issue(GATEWAY, *relay, now))
        .collect();
    f.drain();
    let targets = [
        RevokeTarget::Relay(relays[0]),
        RevokeTarget::EscrowId("escrow_1".into()),
        RevokeTarget::Owner(other_owner),
    ];
    for (target, grant) in targets.into_iter().zip(&grants) {
        let revoked = f
            .escrow
            .handle_revoke(target.clone(), "operator", "compromised", now);
        assert_eq!(revoked, vec![grant.escrow_id.clone()], "{target:?}");
        let events = f.drain();
        assert!(events.contains(&EscrowEvent::LeaseEnded {
            id: grant.id,
            reason: EndReason::Revoked {
                reason: "compromised".into()
            }
        }));
        let audit: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                EscrowEvent::Audit(r) => Some(r),
                EscrowEvent::LeaseEnded { .. } => None,
            })
            .collect();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].kind, AuditKind::DepositRevoked);
        assert_eq!(audit[0].lease_id, Some(grant.id));
        // Revoking again is a no-op.
        assert!(
            f.escrow
                .handle_revoke(target, "operator", "again", now)
                .is_empty()
        );
        assert!(f.drain().is_empty());
    }
    assert_eq!(f.escrow.active_leases(now).count(), 0);
    let record = f.escrow.deposit("escrow_0").unwrap();
    assert_eq!(record.revoked_by.as_deref(), Some("operator"));
    assert_eq!(record.revoked_reason.as_deref(), Some("compromised"));
}

#[test]
fn snapshot_and_restore_keep_lease_epochs_monotonic() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let first = f.issue(GATEWAY, RELAY, f.at(60));
    f.escrow
        .handle_release(first.id, GATEWAY, EndReason::PeerHealthy, f.at(70))
        .unwrap();
    let json = serde_json::to_string(&f.escrow.snapshot()).unwrap();
    assert!(json.contains(&RELAY.to_hex()), "keys are hex in snapshots");

    let t1 = f.at(1000);
    let snapshot: EscrowSnapshot = serde_json::from_str(&json).unwrap();
    let mut restored = Escrow::restore(
        PolicyConfig::default(),
        LeaseConfig::default(),
        snapshot,
        t1,
        f.escrow.unix_time(t1),
    )
    .unwrap();
    assert_eq!(restored.snapshot().deposits, f.escrow.snapshot().deposits);
    // The budget survived the restart; a rotation unlocks at the next epoch.
    restored
        .handle_deposit(deposit_input("escrow_2", RELAY, OWNER, [GATEWAY]), t1)
        .unwrap();
    let request = request(&restored, GATEWAY, RELAY, t1);
    let plan = restored.plan_unlock(&request, t1).unwrap();
    let Ok(UnlockOutcome::Issued(second)) = restored.commit_unlock(plan, t1) else {
        panic!()
    };
    assert_eq!(second.id.epoch, first.id.epoch + 1);
}

#[test]
fn restore_reinstalls_a_live_lease_with_its_wall_clock_expiry() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    let snapshot = f.escrow.snapshot();
    // The escrow restarts 100 s later on a new monotonic clock.
    let t1 = test_start() + Duration::from_secs(5);
    let unix1 = f.escrow.unix_time(f.at(160));
    let mut restored = Escrow::restore(
        PolicyConfig::default(),
        LeaseConfig::default(),
        snapshot,
        t1,
        unix1,
    )
    .unwrap();
    assert!(restored.poll_event().is_none());
    let lease = restored.active_lease(&RELAY, t1).unwrap().clone();
    assert_eq!(lease.id, grant.id);
    assert_eq!(lease.expires_at, t1 + Duration::from_secs(500));
    // Still one lease per relay: the holder re-fetches it, nobody else gets one.
    let refetch = restored
        .plan_unlock(&request(&restored, GATEWAY, RELAY, t1), t1)
        .unwrap();
    assert!(matches!(refetch.action(), UnlockAction::Refetch(g) if g.id == grant.id));
    let other = restored
        .plan_unlock(&request(&restored, OTHER_GATEWAY, RELAY, t1), t1)
        .unwrap();
    assert!(
        matches!(other.action(), UnlockAction::Reject(r) if r.contains(&RejectReason::LeaseHeldByAnother))
    );
}

#[test]
fn restore_ends_a_lease_that_expired_while_the_escrow_was_down() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let grant = f.issue(GATEWAY, RELAY, f.at(60));
    let snapshot = f.escrow.snapshot();
    let t1 = f.at(5000);
    let mut restored = Escrow::restore(
        PolicyConfig::default(),
        LeaseConfig::default(),
        snapshot,
        t1,
        f.escrow.unix_time(t1),
    )
    .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| restored.poll_event()).collect();
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0], EscrowEvent::Audit(r) if r.kind == AuditKind::LeaseExpired));
    assert_eq!(
        events[1],
        EscrowEvent::LeaseEnded {
            id: grant.id,
            reason: EndReason::Expired
        }
    );
    assert_eq!(restored.active_leases(t1).count(), 0);
}

#[test]
fn restore_refuses_inconsistent_snapshots() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let restore = |snapshot| {
        Escrow::restore(
            PolicyConfig::default(),
            LeaseConfig::default(),
            snapshot,
            f.t0,
            UNIX0,
        )
    };
    let good = f.escrow.snapshot();
    assert!(restore(good.clone()).is_ok());
    let mut wrong_version = good.clone();
    wrong_version.version = 99;
    assert_eq!(
        restore(wrong_version).unwrap_err(),
        EscrowError::SnapshotVersion { got: 99 }
    );
    let mut dangling = good.clone();
    dangling.relays[0].current_escrow_id = Some("escrow_404".into());
    assert!(matches!(
        restore(dangling),
        Err(EscrowError::SnapshotInconsistent(_))
    ));
    let mut orphan = good.clone();
    orphan.relays.clear();
    assert!(matches!(
        restore(orphan),
        Err(EscrowError::SnapshotInconsistent(_))
    ));
    let mut twice = good;
    twice.deposits.push(twice.deposits[0].clone());
    assert!(matches!(
        restore(twice),
        Err(EscrowError::SnapshotInconsistent(_))
    ));
}

#[test]
fn audit_records_serialise_with_the_originals_type_names() {
    let mut f = Fixture::new();
    f.deposit("escrow_1", RELAY, f.t0);
    let (audit, _) = f.unlock(GATEWAY, RELAY, f.at(60));
    let json = serde_json::to_value(&audit).unwrap();
    assert_eq!(json["type"], "unlock-issued");
    assert_eq!(json["escrowId"], "escrow_1");
    assert_eq!(json["relayKey"], RELAY.to_hex());
    assert_eq!(json["leaseId"], format!("lease-{}-1", RELAY.to_hex()));
    assert_eq!(json["timestamp"], UNIX0.0 + 60_000);
    assert_eq!(json["evidence"]["peerHealth"]["healthyCount"], 0);
    let back: AuditRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, audit);
}

// ---- property: arbitrary interleavings ----

#[derive(Debug, Clone)]
enum Op {
    Deposit {
        relay: usize,
        owner: usize,
        permit_both: bool,
    },
    Unlock {
        relay: usize,
        requester: usize,
        fresh: bool,
    },
    Renew {
        relay: usize,
        requester: usize,
        fresh: bool,
    },
    Release {
        relay: usize,
        requester: usize,
    },
    Revoke {
        kind: usize,
        index: usize,
    },
    Advance {
        millis: u64,
    },
    Timeout,
}

const RELAYS: [RelayKey; 2] = [RelayKey([20; 32]), RelayKey([21; 32])];
const REQUESTERS: [PeerId; 2] = [GATEWAY, OTHER_GATEWAY];
const OWNERS: [PeerId; 2] = [OWNER, PeerId([6; 32])];

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..2usize, 0..2usize, any::<bool>())
            .prop_map(|(relay, owner, permit_both)| Op::Deposit { relay, owner, permit_both }),
        3 => (0..2usize, 0..2usize, prop::bool::weighted(0.8))
            .prop_map(|(relay, requester, fresh)| Op::Unlock { relay, requester, fresh }),
        1 => (0..2usize, 0..2usize, prop::bool::weighted(0.8))
            .prop_map(|(relay, requester, fresh)| Op::Renew { relay, requester, fresh }),
        1 => (0..2usize, 0..2usize).prop_map(|(relay, requester)| Op::Release { relay, requester }),
        1 => (0..3usize, 0..4usize).prop_map(|(kind, index)| Op::Revoke { kind, index }),
        2 => (0u64..400_000).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Timeout),
    ]
}

fn evidence_for(escrow: &Escrow, now: Instant, fresh_enough: bool) -> Evidence {
    let mut evidence = fresh(escrow, now);
    if !fresh_enough {
        evidence.healthy_peer_count = Some(1);
    }
    evidence
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_interleaving_keeps_one_unexpired_lease_per_relay_and_audits_every_change(
        ops in proptest::collection::vec(arb_op(), 1..60),
        budget in 1u32..3,
    ) {
        let policy = PolicyConfig { max_unlocks_per_lease: budget, ..PolicyConfig::default() };
        let mut f = Fixture::with_policy(policy);
        let mut now = f.t0;
        let mut expected_records = 0usize;
        let mut written: Vec<AuditRecord> = Vec::new();
        let mut ended_expired = 0usize;
        let mut next_id = 0usize;
        for op in ops {
            let was_timeout = matches!(op, Op::Timeout);
            match op {
                Op::Deposit { relay, owner, permit_both } => {
                    next_id += 1;
                    let permitted: BTreeSet<PeerId> = if permit_both {
                        REQUESTERS.into()
                    } else {
                        [GATEWAY].into()
                    };
                    let input = DepositInput {
                        permitted_requesters: permitted,
                        ..deposit_input(&format!("escrow_{next_id}"), RELAYS[relay], OWNERS[owner], [GATEWAY])
                    };
                    if f.escrow.handle_deposit(input, now).is_ok() {
                        expected_records += 1;
                    }
                }
                Op::Unlock { relay, requester, fresh } => {
                    let request = UnlockRequest {
                        relay_key: RELAYS[relay],
                        requester: REQUESTERS[requester],
                        evidence: Some(evidence_for(&f.escrow, now, fresh)),
                    };
                    if let Ok(plan) = f.escrow.plan_unlock(&request, now) {
                        let record = plan.audit().clone();
                        let outcome = f.escrow.commit_unlock(plan, now);
                        prop_assert!(outcome.is_ok(), "a fresh plan commits: {:?}", outcome);
                        // The adapter appended the plan's record before committing.
                        written.push(record);
                        expected_records += 1;
                    }
                }
                Op::Renew { relay, requester, fresh } => {
                    if let Some(lease) = f.escrow.active_lease(&RELAYS[relay], now).map(|l| l.id) {
                        let request = UnlockRequest {
                            relay_key: RELAYS[relay],
                            requester: REQUESTERS[requester],
                            evidence: Some(evidence_for(&f.escrow, now, fresh)),
                        };
                        match f.escrow.handle_renew(lease, request, now) {
                            Ok(grant) => {
                                prop_assert_eq!(grant.expires_at, now + TTL);
                                expected_records += 1;
                            }
                            Err(EscrowError::Rejected(_)) => expected_records += 1,
                            Err(_) => {}
                        }
                    }
                }
                Op::Release { relay, requester } => {
                    if let Some(lease) = f.escrow.active_lease(&RELAYS[relay], now).map(|l| l.id) {
                        let result = f.escrow.handle_release(
                            lease, REQUESTERS[requester], EndReason::PeerHealthy, now);
                        if result.is_ok() {
                            expected_records += 1;
                        }
                    }
                }
                Op::Revoke { kind, index } => {
                    let target = match kind {
                        0 => RevokeTarget::Relay(RELAYS[index % 2]),
                        1 => RevokeTarget::EscrowId(format!("escrow_{index}")),
                        _ => RevokeTarget::Owner(OWNERS[index % 2]),
                    };
                    let revoked = f.escrow.handle_revoke(target, "op", "test", now);
                    expected_records += revoked.len();
                    for escrow_id in &revoked {
                        let deposit = f.escrow.deposit(escrow_id).unwrap();
                        prop_assert!(deposit.revoked_at.is_some());
                        let live = f.escrow.active_lease(&deposit.relay_key, now);
                        prop_assert!(live.is_none_or(|lease| lease.escrow_id != *escrow_id));
                    }
                }
                Op::Advance { millis } => now += Duration::from_millis(millis),
                Op::Timeout => {
                    if let Some((deadline, _)) = f.escrow.poll_timeout() {
                        now = now.max(deadline);
                    }
                    f.escrow.handle_timeout(now);
                }
            }
            for event in f.drain() {
                match event {
                    EscrowEvent::Audit(record) => written.push(record),
                    EscrowEvent::LeaseEnded { reason: EndReason::Expired, .. } => {
                        ended_expired += 1;
                        expected_records += 1;
                    }
                    EscrowEvent::LeaseEnded { .. } => {}
                }
            }
            // Invariants after every step.
            prop_assert_eq!(written.len(), expected_records, "one audit record per change");
            let expired_records = written.iter().filter(|r| r.kind == AuditKind::LeaseExpired).count();
            prop_assert_eq!(expired_records, ended_expired);
            let active: Vec<&Lease> = f.escrow.active_leases(now).collect();
            let relays: BTreeSet<RelayKey> = active.iter().map(|lease| lease.id.relay).collect();
            prop_assert_eq!(relays.len(), active.len(), "at most one lease per relay");
            for lease in &active {
                prop_assert!(lease.expires_at > now);
                let deposit = f.escrow.deposit(&lease.escrow_id).unwrap();
                prop_assert!(deposit.revoked_at.is_none(), "no lease of a revoked deposit");
                prop_assert!(deposit.unlocks_used >= 1 && deposit.unlocks_used <= budget);
            }
            if was_timeout {
                prop_assert!(f.escrow.poll_timeout().is_none_or(|(deadline, _)| deadline > now));
                for relay in RELAYS {
                    // After the timers ran, nothing is still marked active past its expiry.
                    let stuck = f.escrow.leases.current(&relay).is_some_and(|lease| {
                        lease.state == LeaseState::Active && lease.expires_at <= now
                    });
                    prop_assert!(!stuck);
                }
            }
        }
    }
}

/// Review finding: a new lease issued after the old one ran out, but before
/// its timer fired, audited the old lease's expiry with an empty escrow id.
#[test]
fn an_expired_lease_is_audited_with_its_own_deposit_before_the_next_unlock() {
    let policy = PolicyConfig {
        max_unlocks_per_lease: 2,
        ..PolicyConfig::default()
    };
    let mut f = Fixture::with_policy(policy);
    f.deposit("escrow_1", RELAY, f.t0);
    let first = f.issue(GATEWAY, RELAY, f.at(60));
    // The owner rotates meanwhile: the next lease comes from another deposit.
    f.deposit("escrow_2", RELAY, f.at(61));
    f.drain();
    // No handle_timeout: the next unlock comes right at the expiry.
    let second = f.issue(GATEWAY, RELAY, f.at(60) + TTL);
    assert_eq!(second.id.epoch, first.id.epoch + 1);
    let audit = f.drain_audit();
    let expired = audit
        .iter()
        .position(|record| record.kind == AuditKind::LeaseExpired)
        .expect("the old lease's expiry is audited");
    assert_eq!(audit[expired].escrow_id, "escrow_1");
    assert_eq!(audit[expired].lease_id, Some(first.id));
}

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;

const RELAY: RelayKey = RelayKey([1; 32]);
const OWNER: PeerId = PeerId([2; 32]);
const GATEWAY: PeerId = PeerId([3; 32]);
const STRANGER: PeerId = PeerId([4; 32]);
const NOW: UnixTime = UnixTime(1_700_000_000_000);

fn ago(ms: u64) -> UnixTime {
    UnixTime(NOW.0 - ms)
}

fn deposit() -> DepositRecord {
    DepositRecord {
        escrow_id: "escrow_1".into(),
        relay_key: RELAY,
        owner: OWNER,
        permitted_requesters: BTreeSet::from([GATEWAY]),
        policy_version: DEFAULT_POLICY_VERSION.into(),
        created_at: ago(1000),
        expires_at: UnixTime(NOW.0 + 3_600_000),
        revoked_at: None,
        revoked_by: None,
        revoked_reason: None,
        superseded_by: None,
        unlocks_used: 0,
    }
}

/// Evidence that passes every check at `NOW` under the default policy.
fn fresh() -> Evidence {
    Evidence {
        escrow_enabled: Some(true),
        healthy_peer_count: Some(0),
        last_healthy_at: Some(ago(60_000)),
        mirror_lag_blocks: Some(0),
        mirror_lag_ms: Some(0),
        mirror_last_synced_at: Some(ago(1_000)),
    }
}

fn request(evidence: Option<Evidence>) -> UnlockRequest {
    UnlockRequest {
        relay_key: RELAY,
        requester: GATEWAY,
        evidence,
    }
}

fn reasons_for(deposit: &DepositRecord, request: &UnlockRequest) -> Vec<RejectReason> {
    reject_reasons(&PolicyConfig::default(), deposit, request, NOW)
}

#[test]
fn fresh_evidence_from_a_permitted_requester_is_allowed() {
    let decision = evaluate(
        &PolicyConfig::default(),
        &deposit(),
        &request(Some(fresh())),
        NOW,
    );
    assert_eq!(decision, Decision::Allow);
}

#[test]
fn each_reason_fires_alone() {
    use RejectReason as R;
    type Tweak = fn(&mut DepositRecord, &mut UnlockRequest);
    let cases: [(R, Tweak); 11] = [
        (R::RecordRevoked, |d, _| d.revoked_at = Some(ago(1))),
        // At its expiry instant a deposit is expired.
        (R::RecordExpired, |d, _| d.expires_at = NOW),
        (R::RegistrationFlagMissing, |_, r| {
            r.evidence.as_mut().unwrap().escrow_enabled = Some(false);
        }),
        (R::PeersStillHealthy, |_, r| {
            r.evidence.as_mut().unwrap().healthy_peer_count = Some(1);
        }),
        (R::PeerTimeoutNotReached, |_, r| {
            r.evidence.as_mut().unwrap().last_healthy_at = Some(ago(44_999));
        }),
        (R::MirrorTooStale, |_, r| {
            r.evidence.as_mut().unwrap().mirror_lag_ms = Some(15_001);
        }),
        (R::MirrorWindowExpired, |_, r| {
            r.evidence.as_mut().unwrap().mirror_last_synced_at = Some(ago(60_001));
        }),
        (R::RequesterNotPermitted, |_, r| r.requester = STRANGER),
        (R::UnlockBudgetExhausted, |d, _| d.unlocks_used = 1),
        (R::RecordSuperseded, |d, _| {
            d.superseded_by = Some("escrow_2".into())
        }),
        (R::RelayMismatch, |_, r| r.relay_key = RelayKey([9; 32])),
    ];
    for (reason, tweak) in cases {
        let (mut deposit, mut request) = (deposit(), request(Some(fresh())));
        tweak(&mut deposit, &mut request);
        assert_eq!(reasons_for(&deposit, &request), vec![reason], "{reason}");
    }
}

#[test]
fn thresholds_match_the_original_comparisons() {
    let mut evidence = fresh();
    evidence.last_healthy_at = Some(ago(45_000)); // now - last == timeout: reached
    evidence.mirror_lag_ms = Some(15_000); // == max: not too stale
    evidence.mirror_last_synced_at = Some(ago(60_000)); // == window: not expired
    assert_eq!(reasons_for(&deposit(), &request(Some(evidence))), vec![]);
}

#[test]
fn reasons_are_reported_in_the_original_order_when_several_apply() {
    let mut deposit = deposit();
    deposit.revoked_at = Some(ago(1));
    deposit.expires_at = ago(1);
    deposit.unlocks_used = 5;
    deposit.superseded_by = Some("escrow_2".into());
    let evidence = Evidence {
        escrow_enabled: Some(false),
        healthy_peer_count: Some(2),
        last_healthy_at: Some(ago(1)),
        mirror_lag_blocks: Some(7),
        mirror_lag_ms: Some(20_000),
        mirror_last_synced_at: Some(ago(120_000)),
    };
    let request = UnlockRequest {
        relay_key: RelayKey([9; 32]),
        requester: STRANGER,
        evidence: Some(evidence),
    };
    let reasons: Vec<&str> = reasons_for(&deposit, &request)
        .into_iter()
        .map(RejectReason::as_str)
        .collect();
    assert_eq!(
        reasons,
        [
            "record-revoked",
            "record-expired",
            "registration-flag-missing",
            "peers-still-healthy",
            "peer-timeout-not-reached",
            "mirror-too-stale",
            "mirror-window-expired",
            "requester-not-permitted",
            "unlock-budget-exhausted",
            "record-superseded",
            "relay-mismatch",
        ]
    );
}

#[test]
fn no_evidence_at_all_rejects_with_evidence_missing_once() {
    let reasons = reasons_for(&deposit(), &request(None));
    assert_eq!(
        reasons,
        vec![
            RejectReason::RegistrationFlagMissing,
            RejectReason::PeersStillHealthy,
            RejectReason::PeerTimeoutNotReached,
            RejectReason::MirrorTooStale,
            RejectReason::MirrorWindowExpired,
            RejectReason::EvidenceMissing,
        ]
    );
}

#[test]
fn each_missing_evidence_field_fails_its_check_and_adds_evidence_missing() {
    use RejectReason as R;
    type Remove = fn(&mut Evidence);
    let cases: [(R, Remove); 4] = [
        (R::PeersStillHealthy, |e| e.healthy_peer_count = None),
        // None is missing evidence, not "never healthy" (see the module docs).
        (R::PeerTimeoutNotReached, |e| e.last_healthy_at = None),
        (R::MirrorTooStale, |e| e.mirror_lag_ms = None),
        (R::MirrorWindowExpired, |e| e.mirror_last_synced_at = None),
    ];
    for (reason, remove) in cases {
        let mut evidence = fresh();
        remove(&mut evidence);
        let decision = evaluate(
            &PolicyConfig::default(),
            &deposit(),
            &request(Some(evidence)),
            NOW,
        );
        assert_eq!(
            decision,
            Decision::Reject(vec![reason, R::EvidenceMissing]),
            "{reason}"
        );
    }
    // The registration flag has its own reason; the lag in blocks is informational.
    let mut evidence = fresh();
    evidence.escrow_enabled = None;
    evidence.mirror_lag_blocks = None;
    assert_eq!(
        reasons_for(&deposit(), &request(Some(evidence))),
        vec![R::RegistrationFlagMissing]
    );
}

#[test]
fn the_originals_minimal_evidence_no_longer_unlocks() {
    let evidence: Evidence =
        serde_json::from_value(json!({"registration": {"escrowEnabled": true}})).unwrap();
    let decision = evaluate(
        &PolicyConfig::default(),
        &deposit(),
        &request(Some(evidence)),
        NOW,
    );
    assert!(
        decision.reasons().contains(&RejectReason::EvidenceMissing),
        "{decision:?}"
    );
}

#[test]
fn malformed_evidence_fields_are_judged_missing() {
    let evidence: Evidence = serde_json::from_value(json!({
        "registration": {"escrowEnabled": "true"},
        "peerHealth": {"healthyCount": -1, "lastHealthyAt": "yesterday"},
        "mirror": {"lagMs": 1.5, "lagBlocks": null, "lastSyncedAt": 1e300},
    }))
    .unwrap();
    assert_eq!(evidence, Evidence::default());
    let not_an_object: Evidence = serde_json::from_value(json!("evidence")).unwrap();
    assert_eq!(not_an_object, Evidence::default());
    let reasons = reasons_for(&deposit(), &request(Some(evidence)));
    assert_eq!(reasons.last(), Some(&RejectReason::EvidenceMissing));
}

#[test]
fn evidence_json_round_trips_in_the_original_nested_shape() {
    let json = serde_json::to_value(fresh()).unwrap();
    assert_eq!(
        json,
        json!({
            "registration": {"escrowEnabled": true},
            "peerHealth": {"healthyCount": 0, "lastHealthyAt": ago(60_000).0},
            "mirror": {"lagMs": 0, "lagBlocks": 0, "lastSyncedAt": ago(1_000).0},
        })
    );
    assert_eq!(serde_json::from_value::<Evidence>(json).unwrap(), fresh());
    assert_eq!(
        serde_json::to_value(Evidence::default()).unwrap(),
        json!({})
    );
    // JavaScript may send whole numbers as floats.
    let float: Evidence = serde_json::from_value(json!({"mirror": {"lagMs": 1000.0}})).unwrap();
    assert_eq!(float.mirror_lag_ms, Some(1000));
}

#[test]
fn future_evidence_timestamps_are_clamped_to_the_escrows_now() {
    // A peer "healthy in the future" was healthy just now: the timeout is not reached.
    let mut evidence = fresh();
    evidence.last_healthy_at = Some(UnixTime(u64::MAX));
    assert_eq!(
        reasons_for(&deposit(), &request(Some(evidence))),
        vec![RejectReason::PeerTimeoutNotReached]
    );
    // A mirror "synced in the future" counts as synced now, never fresher.
    let mut evidence = fresh();
    evidence.mirror_last_synced_at = Some(UnixTime(NOW.0 + 3_600_000));
    assert_eq!(reasons_for(&deposit(), &request(Some(evidence))), vec![]);
}

#[test]
fn renewal_checks_everything_but_the_budget() {
    let mut deposit = deposit();
    deposit.unlocks_used = 1;
    let policy = PolicyConfig::default();
    assert_eq!(
        renewal_reasons(&policy, &deposit, &request(Some(fresh())), NOW),
        vec![]
    );
    let mut stale = fresh();
    stale.healthy_peer_count = Some(1);
    assert_eq!(
        renewal_reasons(&policy, &deposit, &request(Some(stale)), NOW),
        vec![RejectReason::PeersStillHealthy]
    );
}

#[test]
fn policy_json_uses_the_originals_field_names_in_milliseconds() {
    let json = serde_json::to_value(PolicyConfig::default()).unwrap();
    assert_eq!(
        json,
        json!({
            "version": "2024-09-autobase-escrow-v1",
            "leaseTtlMs": 600_000,
            "maxDepositTtlMs": 86_400_000,
            "peerLivenessTimeoutMs": 45_000,
            "mirrorFreshnessMaxLagMs": 15_000,
            "mirrorFreshnessWindowMs": 60_000,
            "requireRegistrationFlag": true,
            "maxUnlocksPerLease": 1,
        })
    );
    let partial: PolicyConfig = serde_json::from_value(json!({"leaseTtlMs": 1000})).unwrap();
    assert_eq!(partial.lease_ttl, Duration::from_secs(1));
    assert_eq!(partial.max_unlocks_per_lease, 1);
}

#[test]
fn reject_reason_wire_strings_match_serde() {
    use RejectReason as R;
    let all = [
        R::RecordRevoked,
        R::RecordExpired,
        R::RegistrationFlagMissing,
        R::PeersStillHealthy,
        R::PeerTimeoutNotReached,
        R::MirrorTooStale,
        R::MirrorWindowExpired,
        R::RequesterNotPermitted,
        R::UnlockBudgetExhausted,
        R::EvidenceMissing,
        R::RecordSuperseded,
        R::RelayMismatch,
        R::LeaseHeldByAnother,
    ];
    for reason in all {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
        let back: RejectReason = serde_json::from_value(json!(reason.as_str())).unwrap();
        assert_eq!(back, reason);
    }
}

// ---- properties ----

fn offset_time() -> impl Strategy<Value = UnixTime> {
    // Around the thresholds, a little into the future too.
    (-200_000i64..=30_000).prop_map(|offset| UnixTime(NOW.0.saturating_add_signed(offset)))
}

fn arb_evidence() -> impl Strategy<Value = Evidence> {
    (
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u32..3),
        proptest::option::of(offset_time()),
        proptest::option::of(0u64..100),
        proptest::option::of(0u64..30_000),
        proptest::option::of(offset_time()),
    )
        .prop_map(|(enabled, count, healthy, blocks, lag, synced)| Evidence {
            escrow_enabled: enabled,
            healthy_peer_count: count,
            last_healthy_at: healthy,
            mirror_lag_blocks: blocks,
            mirror_lag_ms: lag,
            mirror_last_synced_at: synced,
        })
}

fn arb_case() -> impl Strategy<Value = (PolicyConfig, DepositRecord, UnlockRequest)> {
    (
        any::<bool>(),
        0u32..3,
        proptest::option::of(offset_time()),
        offset_time(),
        0u32..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(arb_evidence()),
    )
        .prop_map(
            |(
                flag,
                budget,
                revoked,
                expires,
                used,
                superseded,
                permitted,
                same_relay,
                evidence,
            )| {
                let policy = PolicyConfig {
                    require_registration_flag: flag,
                    max_unlocks_per_lease: budget,
                    ..PolicyConfig::default()
                };
                let mut deposit = deposit();
                deposit.revoked_at = revoked;
                deposit.expires_at = expires;
                deposit.unlocks_used = used;
                deposit.superseded_by = superseded.then(|| "escrow_2".to_owned());
                let request = UnlockRequest {
                    relay_key: if same_relay { RELAY } else { RelayKey([9; 32]) },
                    requester: if permitted { GATEWAY } else { STRANGER },
                    evidence,
                };
                (policy, deposit, request)
            },
        )
}

/// The policy stated independently: every condition that must hold.
fn reference_allows(
    policy: &PolicyConfig,
    deposit: &DepositRecord,
    request: &UnlockRequest,
) -> bool {
    let Some(evidence) = &request.evidence else {
        return false;
    };
    let (Some(count), Some(healthy), Some(lag), Some(synced)) = (
        evidence.healthy_peer_count,
        evidence.last_healthy_at,
        evidence.mirror_lag_ms,
        evidence.mirror_last_synced_at,
    ) else {
        return false;
    };
    let since = |at: UnixTime| NOW.0.saturating_sub(at.0.min(NOW.0));
    deposit.revoked_at.is_none()
        && deposit.expires_at > NOW
        && deposit.superseded_by.is_none()
        && deposit.relay_key == request.relay_key
        && (!policy.require_registration_flag || evidence.escrow_enabled == Some(true))
        && count == 0
        && since(healthy) >= 45_000
        && lag <= 15_000
        && since(synced) <= 60_000
        && deposit.permitted_requesters.contains(&request.requester)
        && deposit.unlocks_used < policy.max_unlocks_per_lease
}

fn without_field(evidence: &Evidence, field: usize) -> Evidence {
    let mut evidence = evidence.clone();
    match field {
        0 => evidence.escrow_enabled = None,
        1 => evidence.healthy_peer_count = None,
        2 => evidence.last_healthy_at = None,
        3 => evidence.mirror_lag_blocks = None,
        4 => evidence.mirror_lag_ms = None,
        _ => evidence.mirror_last_synced_at = None,
    }
    evidence
}

proptest! {
    #[test]
    fn evaluate_allows_iff_no_reason_is_collected_and_agrees_with_a_reference_model(
        (policy, deposit, request) in arb_case()
    ) {
        let reasons = reject_reasons(&policy, &deposit, &request, NOW);
        let decision = evaluate(&policy, &deposit, &request, NOW);
        prop_assert_eq!(decision == Decision::Allow, reasons.is_empty());
        prop_assert_eq!(decision.reasons(), reasons.as_slice());
        prop_assert!(reasons.windows(2).all(|pair| pair[0] < pair[1]), "sorted, no duplicates");
        prop_assert_eq!(reasons.is_empty(), reference_allows(&policy, &deposit, &request));
    }

    #[test]
    fn removing_any_evidence_field_only_adds_reasons(
        (policy, deposit, request) in arb_case(),
        field in 0usize..7,
    ) {
        let before = reject_reasons(&policy, &deposit, &request, NOW);
        let evidence = request.evidence.clone().unwrap_or_default();
        // Field 6 removes the evidence object altogether.
        let removed = (field < 6).then(|| without_field(&evidence, field));
        let weaker = UnlockRequest { evidence: removed, ..request.clone() };
        let after = reject_reasons(&policy, &deposit, &weaker, NOW);
        let after_set: BTreeSet<_> = after.iter().collect();
        prop_assert!(
            before.iter().all(|reason| after_set.contains(reason)),
            "before {:?}, after {:?}", before, after
        );
    }
}

#[test]
fn every_reject_reason_is_listed_once_in_report_order() {
    // An exhaustive match: a new reason does not compile until it has a place here.
    let position = |reason: RejectReason| match reason {
        RejectReason::RecordRevoked => 0,
        RejectReason::RecordExpired => 1,
        RejectReason::RegistrationFlagMissing => 2,
        RejectReason::PeersStillHealthy => 3,
        RejectReason::PeerTimeoutNotReached => 4,
        RejectReason::MirrorTooStale => 5,
        RejectReason::MirrorWindowExpired => 6,
        RejectReason::RequesterNotPermitted => 7,
        RejectReason::UnlockBudgetExhausted => 8,
        RejectReason::EvidenceMissing => 9,
        RejectReason::RecordSuperseded => 10,
        RejectReason::RelayMismatch => 11,
        RejectReason::LeaseHeldByAnother => 12,
    };
    for (index, reason) in RejectReason::ALL.iter().enumerate() {
        assert_eq!(position(*reason), index, "{}", reason.as_str());
    }
    let mut sorted = RejectReason::ALL;
    sorted.sort();
    assert_eq!(
        sorted,
        RejectReason::ALL,
        "declaration order is report order"
    );
}

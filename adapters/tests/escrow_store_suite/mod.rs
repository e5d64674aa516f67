//! The behaviour every [`EscrowStore`] must have, run against each backend by
//! `escrow_store_embedded.rs` and `escrow_store_postgres.rs` through
//! [`escrow_store_suite!`]. A backend hands out stores over one storage that
//! outlives them ([`Backend::open`]), so "restart" is drop-and-reopen.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hypergate_adapters::escrow_store::{
    AuditIndexEntry, EscrowStore, EscrowStoreError, LeaseRecord, Revocation, StoredDeposit,
    WriteOutcome, lease_id_text, parse_lease_id,
};
use hypergate_core::escrow::{
    AuditKind, AuditRecord, DEFAULT_POLICY_VERSION, DepositInput, DepositRecord, Escrow,
    EscrowEvent, Evidence, PolicyConfig, RejectReason, RevokeTarget, UnlockOutcome, UnlockRequest,
};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::{EndReason, LeaseConfig, LeaseId};
use hypergate_core::time::UnixTime;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Storage that outlives the stores opened on it.
pub(crate) trait Backend {
    /// A store over this backend's storage (the previous one must be dropped first).
    fn open(&self) -> Box<dyn EscrowStore>;
}

/// Generates one `#[test]` per suite function for the backend `$make`
/// returns (`None`: the backend is unavailable and the test is skipped).
#[macro_export]
macro_rules! escrow_store_suite {
    ($make:path) => {
        $crate::escrow_store_suite!(@tests $make;
            deposit_becomes_the_relays_current_deposit,
            rotation_keeps_history_and_exactly_one_current_deposit,
            revoking_a_deposit_records_who_and_why_and_ends_its_open_lease,
            revoking_an_owner_revokes_every_unrevoked_deposit_of_that_owner_only,
            lease_issue_counts_an_unlock_and_lease_end_records_the_reason,
            active_leases_are_the_open_ones_that_have_not_expired,
            lease_epochs_only_grow_and_a_relay_has_one_open_lease,
            leases_only_release_the_relays_current_unrevoked_deposit,
            audit_index_lists_entries_in_sequence_order_within_the_range,
            reopening_the_store_keeps_every_row,
            unknown_ids_are_errors_and_write_nothing,
            malformed_input_is_refused_before_anything_is_written,
            repeating_a_write_with_its_audit_entry_applies_it_once,
            a_used_audit_seq_with_other_content_is_refused,
            the_snapshot_equals_the_core_escrow_it_mirrors_and_restores_it,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            if let Some(backend) = $make() {
                escrow_store_suite::$name(&backend);
            }
        }
    )*};
}

// ---- fixtures ----

pub(crate) const T0: u64 = 1_700_000_000_000;
pub(crate) const GATEWAY: u8 = 0x70;

pub(crate) fn at(offset_ms: u64) -> UnixTime {
    UnixTime(T0 + offset_ms)
}

pub(crate) fn relay(n: u8) -> RelayKey {
    RelayKey([n; 32])
}

pub(crate) fn peer(n: u8) -> PeerId {
    PeerId([n; 32])
}

pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(crate) fn new_deposit(
    escrow_id: &str,
    relay: RelayKey,
    owner: PeerId,
    created: UnixTime,
) -> StoredDeposit {
    StoredDeposit {
        record: DepositRecord {
            escrow_id: escrow_id.to_owned(),
            relay_key: relay,
            owner,
            permitted_requesters: BTreeSet::from([peer(GATEWAY), peer(GATEWAY + 1)]),
            policy_version: DEFAULT_POLICY_VERSION.to_owned(),
            created_at: created,
            expires_at: UnixTime(created.0 + 86_400_000),
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            superseded_by: None,
            unlocks_used: 0,
        },
        sealed_package: json!({
            "cipherText": format!("c2VhbGVk-{escrow_id}"),
            "nonce": "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25j",
            "publicKey": "ZXBoZW1lcmFsLXNlbmRlci1rZXktMzItYnl0ZXM=",
        }),
        metadata: json!({
            "identifier": format!("relay-{}", relay.short()),
            "name": "Ünïcödé relay ✓",
            "unlockConditions": {"peerLivenessTimeoutMs": 45000, "mirrorFreshnessMaxLagMs": 15000.5},
            "big": u64::MAX,
        }),
        writer_hash: digest(escrow_id.as_bytes()),
    }
}

pub(crate) fn entry(
    seq: u64,
    kind: AuditKind,
    escrow_id: &str,
    relay: RelayKey,
    lease_id: Option<LeaseId>,
    time: UnixTime,
) -> AuditIndexEntry {
    AuditIndexEntry {
        seq,
        kind,
        escrow_id: escrow_id.to_owned(),
        lease_id,
        relay,
        actor: format!("actor-{seq}"),
        at: time,
        block_digest: digest(&seq.to_be_bytes()),
    }
}

pub(crate) fn deposit_audit(seq: u64, deposit: &StoredDeposit) -> AuditIndexEntry {
    let record = &deposit.record;
    entry(
        seq,
        AuditKind::Deposit,
        &record.escrow_id,
        record.relay_key,
        None,
        record.created_at,
    )
}

pub(crate) fn revoke_audit(seq: u64, deposit: &StoredDeposit, time: UnixTime) -> AuditIndexEntry {
    let record = &deposit.record;
    entry(
        seq,
        AuditKind::DepositRevoked,
        &record.escrow_id,
        record.relay_key,
        None,
        time,
    )
}

pub(crate) fn revocation(time: UnixTime) -> Revocation {
    Revocation {
        at: time,
        actor: "operator".into(),
        reason: "worker retired".into(),
    }
}

pub(crate) fn new_lease(
    deposit: &StoredDeposit,
    epoch: u64,
    issued: UnixTime,
    ttl_ms: u64,
) -> LeaseRecord {
    LeaseRecord {
        id: LeaseId {
            relay: deposit.record.relay_key,
            epoch,
        },
        escrow_id: deposit.record.escrow_id.clone(),
        requester: peer(GATEWAY),
        issued_at: issued,
        expires_at: UnixTime(issued.0 + ttl_ms),
        evidence: json!({"registration": {"escrowEnabled": true}, "peerHealth": {"healthyCount": 0}}),
        reasons: Vec::new(),
        payload_digest: digest(format!("payload-{epoch}").as_bytes()),
        released_at: None,
        release_reason: None,
    }
}

pub(crate) fn lease_audit(
    seq: u64,
    kind: AuditKind,
    lease: &LeaseRecord,
    time: UnixTime,
) -> AuditIndexEntry {
    entry(
        seq,
        kind,
        &lease.escrow_id,
        lease.relay(),
        Some(lease.id),
        time,
    )
}

/// Asserts a write was committed now.
#[track_caller]
pub(crate) fn applied(result: Result<WriteOutcome, EscrowStoreError>) {
    assert_eq!(result.unwrap(), WriteOutcome::Applied);
}

/// Stores `deposit` with audit seq `seq`, expecting success.
pub(crate) fn put(store: &dyn EscrowStore, seq: u64, deposit: &StoredDeposit) {
    applied(store.put_deposit(deposit, &deposit_audit(seq, deposit)));
}

pub(crate) fn issue(store: &dyn EscrowStore, seq: u64, lease: &LeaseRecord) {
    let audit = lease_audit(seq, AuditKind::UnlockIssued, lease, lease.issued_at);
    applied(store.record_lease_issued(lease, &audit));
}

pub(crate) fn end(
    store: &dyn EscrowStore,
    seq: u64,
    lease: &LeaseRecord,
    time: UnixTime,
    reason: &str,
) {
    let audit = lease_audit(seq, AuditKind::LeaseReleased, lease, time);
    applied(store.record_lease_ended(lease.id, time, reason, &audit));
}

fn superseded(mut deposit: StoredDeposit, by: &str) -> StoredDeposit {
    deposit.record.superseded_by = Some(by.to_owned());
    deposit
}

fn revoked(mut deposit: StoredDeposit, time: UnixTime) -> StoredDeposit {
    let revocation = revocation(time);
    deposit.record.revoked_at = Some(revocation.at);
    deposit.record.revoked_by = Some(revocation.actor);
    deposit.record.revoked_reason = Some(revocation.reason);
    deposit
}

fn ended(mut lease: LeaseRecord, time: UnixTime, reason: &str) -> LeaseRecord {
    lease.released_at = Some(time);
    lease.release_reason = Some(reason.to_owned());
    lease
}

fn unlocked(mut deposit: StoredDeposit, times: u32) -> StoredDeposit {
    deposit.record.unlocks_used = times;
    deposit
}

/// Everything the store can be asked, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Everything {
    current: Vec<StoredDeposit>,
    histories: Vec<Vec<StoredDeposit>>,
    leases: Vec<Vec<LeaseRecord>>,
    epochs: Vec<u64>,
    active: Vec<LeaseRecord>,
    audit: Vec<AuditIndexEntry>,
    last_seq: Option<u64>,
    snapshot: hypergate_core::escrow::EscrowSnapshot,
}

fn everything(store: &dyn EscrowStore, relays: &[RelayKey]) -> Everything {
    Everything {
        current: store.current_deposits().unwrap(),
        histories: relays
            .iter()
            .map(|r| store.deposit_history(r).unwrap())
            .collect(),
        leases: relays
            .iter()
            .map(|r| store.lease_history(r).unwrap())
            .collect(),
        epochs: relays
            .iter()
            .map(|r| store.max_lease_epoch(r).unwrap())
            .collect(),
        active: store.active_leases(at(0)).unwrap(),
        audit: store.audit_index(0..u64::MAX).unwrap(),
        last_seq: store.last_audit_seq().unwrap(),
        snapshot: store.escrow_snapshot().unwrap(),
    }
}

// ---- the suite ----

pub(crate) fn deposit_becomes_the_relays_current_deposit(backend: &dyn Backend) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    put(&*store, 1, &d1);
    assert_eq!(store.current_deposit(&relay(1)).unwrap(), Some(d1.clone()));
    assert_eq!(store.deposit("escrow_d1").unwrap(), Some(d1.clone()));
    assert_eq!(store.deposit_history(&relay(1)).unwrap(), vec![d1.clone()]);
    assert_eq!(store.current_deposits().unwrap(), vec![d1.clone()]);
    assert_eq!(store.current_deposit(&relay(2)).unwrap(), None);
    assert_eq!(
        store.audit_index(0..10).unwrap(),
        vec![deposit_audit(1, &d1)]
    );
    assert_eq!(store.last_audit_seq().unwrap(), Some(1));
}

pub(crate) fn rotation_keeps_history_and_exactly_one_current_deposit(backend: &dyn Backend) {
    let store = backend.open();
    let other = new_deposit("escrow_other", relay(9), peer(2), at(0));
    put(&*store, 1, &other);
    let d1 = new_deposit("escrow_d1", relay(3), peer(1), at(10));
    let d2 = new_deposit("escrow_d2", relay(3), peer(1), at(20));
    let d3 = new_deposit("escrow_d3", relay(3), peer(1), at(30));
    put(&*store, 2, &d1);
    put(&*store, 3, &d2);
    put(&*store, 4, &d3);
    let history = vec![
        superseded(d1.clone(), "escrow_d2"),
        superseded(d2.clone(), "escrow_d3"),
        d3.clone(),
    ];
    assert_eq!(store.deposit_history(&relay(3)).unwrap(), history);
    assert_eq!(store.current_deposit(&relay(3)).unwrap(), Some(d3.clone()));
    // One current deposit per relay, in relay order.
    assert_eq!(
        store.current_deposits().unwrap(),
        vec![d3.clone(), other.clone()]
    );
    assert_eq!(store.deposit_history(&relay(9)).unwrap(), vec![other]);

    // A revoked deposit stays revoked when a rotation replaces it, and is not marked superseded.
    let audit = revoke_audit(5, &d3, at(40));
    applied(store.revoke_deposit("escrow_d3", &revocation(at(40)), &audit));
    let d4 = new_deposit("escrow_d4", relay(3), peer(1), at(50));
    put(&*store, 6, &d4);
    assert_eq!(
        store.deposit("escrow_d3").unwrap(),
        Some(revoked(d3, at(40)))
    );
    assert_eq!(store.current_deposit(&relay(3)).unwrap(), Some(d4));
    assert_eq!(store.deposit_history(&relay(3)).unwrap().len(), 4);
    let snapshot = store.escrow_snapshot().unwrap();
    assert_eq!(snapshot.relays.len(), 2);
    assert_eq!(
        snapshot.relays[0].current_escrow_id.as_deref(),
        Some("escrow_d4")
    );
}

pub(crate) fn revoking_a_deposit_records_who_and_why_and_ends_its_open_lease(
    backend: &dyn Backend,
) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    put(&*store, 1, &d1);
    let lease = new_lease(&d1, 1, at(100), 600_000);
    issue(&*store, 2, &lease);
    applied(store.revoke_deposit(
        "escrow_d1",
        &revocation(at(200)),
        &revoke_audit(3, &d1, at(200)),
    ));
    assert_eq!(
        store.deposit("escrow_d1").unwrap(),
        Some(unlocked(revoked(d1.clone(), at(200)), 1))
    );
    assert_eq!(
        store.lease_history(&relay(1)).unwrap(),
        vec![ended(lease, at(200), "revoked:worker retired")]
    );
    assert!(store.active_leases(at(150)).unwrap().is_empty());
    // Revoked is revoked: a second revoke is refused and writes nothing.
    let again = store.revoke_deposit(
        "escrow_d1",
        &revocation(at(300)),
        &revoke_audit(4, &d1, at(300)),
    );
    assert!(matches!(again, Err(EscrowStoreError::AlreadyRevoked(id)) if id == "escrow_d1"));
    assert_eq!(store.last_audit_seq().unwrap(), Some(3));
}

pub(crate) fn revoking_an_owner_revokes_every_unrevoked_deposit_of_that_owner_only(
    backend: &dyn Backend,
) {
    let store = backend.open();
    let (w1, w2) = (peer(1), peer(2));
    let a1 = new_deposit("escrow_a1", relay(1), w1, at(0));
    let a2 = new_deposit("escrow_a2", relay(1), w1, at(10));
    let b1 = new_deposit("escrow_b1", relay(2), w1, at(20));
    let c1 = new_deposit("escrow_c1", relay(3), w2, at(30));
    for (seq, deposit) in [&a1, &a2, &b1, &c1].into_iter().enumerate() {
        put(&*store, seq as u64 + 1, deposit);
    }
    let lease = new_lease(&b1, 1, at(40), 600_000);
    issue(&*store, 5, &lease);
    let time = at(100);
    let audits = vec![
        revoke_audit(6, &a1, time),
        revoke_audit(7, &a2, time),
        revoke_audit(8, &b1, time),
    ];

    // Audit entries that do not cover every deposit revoked: nothing is written.
    let partial = store.revoke_owner(&w1, &revocation(time), &audits[1..]);
    assert!(
        matches!(partial, Err(EscrowStoreError::AuditMismatch(_))),
        "{partial:?}"
    );
    assert_eq!(
        store
            .deposit("escrow_a2")
            .unwrap()
            .unwrap()
            .record
            .revoked_at,
        None
    );
    assert_eq!(store.last_audit_seq().unwrap(), Some(5));

    applied(store.revoke_owner(&w1, &revocation(time), &audits));
    assert_eq!(
        store.deposit_history(&relay(1)).unwrap(),
        vec![
            revoked(superseded(a1, "escrow_a2"), time),
            revoked(a2, time)
        ]
    );
    assert_eq!(
        store.deposit("escrow_b1").unwrap(),
        Some(unlocked(revoked(b1, time), 1))
    );
    assert_eq!(store.deposit("escrow_c1").unwrap(), Some(c1));
    assert_eq!(
        store.lease_history(&relay(2)).unwrap(),
        vec![ended(lease, time, "revoked:worker retired")]
    );
    // Nothing left to revoke: audit entries for it are a mismatch.
    let again = store.revoke_owner(
        &w1,
        &revocation(at(200)),
        &[entry(
            9,
            AuditKind::DepositRevoked,
            "escrow_a1",
            relay(1),
            None,
            at(200),
        )],
    );
    assert!(
        matches!(again, Err(EscrowStoreError::AuditMismatch(_))),
        "{again:?}"
    );
}

pub(crate) fn lease_issue_counts_an_unlock_and_lease_end_records_the_reason(backend: &dyn Backend) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    put(&*store, 1, &d1);
    let first = new_lease(&d1, 1, at(100), 600_000);
    issue(&*store, 2, &first);
    assert_eq!(
        store.deposit("escrow_d1").unwrap(),
        Some(unlocked(d1.clone(), 1))
    );
    assert_eq!(store.lease_history(&relay(1)).unwrap(), vec![first.clone()]);
    assert_eq!(store.active_leases(at(200)).unwrap(), vec![first.clone()]);

    end(&*store, 3, &first, at(5_000), "peer-healthy");
    let first_ended = ended(first.clone(), at(5_000), "peer-healthy");
    assert_eq!(
        store.lease_history(&relay(1)).unwrap(),
        vec![first_ended.clone()]
    );
    assert!(store.active_leases(at(200)).unwrap().is_empty());
    let audit = lease_audit(4, AuditKind::LeaseExpired, &first, at(6_000));
    let twice = store.record_lease_ended(first.id, at(6_000), "expired", &audit);
    assert!(matches!(twice, Err(EscrowStoreError::LeaseEnded(id)) if id == first.id));

    let second = new_lease(&d1, 2, at(10_000), 600_000);
    issue(&*store, 5, &second);
    assert_eq!(store.deposit("escrow_d1").unwrap(), Some(unlocked(d1, 2)));
    assert_eq!(
        store.lease_history(&relay(1)).unwrap(),
        vec![first_ended, second]
    );
}

pub(crate) fn active_leases_are_the_open_ones_that_have_not_expired(backend: &dyn Backend) {
    let store = backend.open();
    let long = new_deposit("escrow_long", relay(1), peer(1), at(0));
    let short = new_deposit("escrow_short", relay(2), peer(1), at(0));
    let gone = new_deposit("escrow_gone", relay(3), peer(1), at(0));
    put(&*store, 1, &long);
    put(&*store, 2, &short);
    put(&*store, 3, &gone);
    let long_lease = new_lease(&long, 1, at(0), 600_000);
    let short_lease = new_lease(&short, 1, at(0), 60_000);
    let gone_lease = new_lease(&gone, 1, at(0), 600_000);
    issue(&*store, 4, &short_lease);
    issue(&*store, 5, &long_lease);
    issue(&*store, 6, &gone_lease);
    end(&*store, 7, &gone_lease, at(1_000), "worker-resync");

    assert_eq!(
        store.active_leases(at(30_000)).unwrap(),
        vec![long_lease.clone(), short_lease.clone()]
    );
    // Expiry is exclusive: at `expires_at` the lease is over.
    assert_eq!(
        store.active_leases(at(60_000)).unwrap(),
        vec![long_lease.clone()]
    );
    assert!(store.active_leases(at(600_001)).unwrap().is_empty());

    // A renewal moves the expiry; it cannot move it back.
    let audit = lease_audit(8, AuditKind::LeaseRenewed, &short_lease, at(50_000));
    applied(store.record_lease_renewed(short_lease.id, at(700_000), &audit));
    let mut short_renewed = short_lease.clone();
    short_renewed.expires_at = at(700_000);
    assert_eq!(
        store.active_leases(at(650_000)).unwrap(),
        vec![short_renewed]
    );
    let audit = lease_audit(9, AuditKind::LeaseRenewed, &short_lease, at(60_000));
    let back = store.record_lease_renewed(short_lease.id, at(100_000), &audit);
    assert!(
        matches!(back, Err(EscrowStoreError::InvalidInput(_))),
        "{back:?}"
    );
}

pub(crate) fn lease_epochs_only_grow_and_a_relay_has_one_open_lease(backend: &dyn Backend) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    put(&*store, 1, &d1);
    assert_eq!(store.max_lease_epoch(&relay(1)).unwrap(), 0);
    let third = new_lease(&d1, 3, at(0), 600_000);
    issue(&*store, 2, &third);
    assert_eq!(store.max_lease_epoch(&relay(1)).unwrap(), 3);

    let fourth = new_lease(&d1, 4, at(10), 600_000);
    let audit = lease_audit(3, AuditKind::UnlockIssued, &fourth, at(10));
    let while_open = store.record_lease_issued(&fourth, &audit);
    assert!(matches!(while_open, Err(EscrowStoreError::LeaseStillOpen(id)) if id == third.id));

    end(&*store, 3, &third, at(20), "peer-healthy");
    for stale in [2, 3] {
        let lease = new_lease(&d1, stale, at(30), 600_000);
        let audit = lease_audit(4, AuditKind::UnlockIssued, &lease, at(30));
        let refused = store.record_lease_issued(&lease, &audit);
        assert!(
            matches!(
                refused,
                Err(EscrowStoreError::StaleEpoch { highest: 3, .. })
            ),
            "{refused:?}"
        );
    }
    issue(&*store, 4, &fourth);
    assert_eq!(store.max_lease_epoch(&relay(1)).unwrap(), 4);
    assert_eq!(store.max_lease_epoch(&relay(2)).unwrap(), 0);
    assert_eq!(
        store
            .deposit("escrow_d1")
            .unwrap()
            .unwrap()
            .record
            .unlocks_used,
        2
    );
}

pub(crate) fn leases_only_release_the_relays_current_unrevoked_deposit(backend: &dyn Backend) {
    let store = backend.open();
    let old = new_deposit("escrow_old", relay(1), peer(1), at(0));
    let new = new_deposit("escrow_new", relay(1), peer(1), at(10));
    let elsewhere = new_deposit("escrow_else", relay(2), peer(1), at(10));
    put(&*store, 1, &old);
    put(&*store, 2, &new);
    put(&*store, 3, &elsewhere);
    let refused = |lease: LeaseRecord| {
        let audit = lease_audit(9, AuditKind::UnlockIssued, &lease, at(20));
        store.record_lease_issued(&lease, &audit)
    };
    let superseded_lease = refused(new_lease(&old, 1, at(20), 1_000));
    assert!(matches!(
        superseded_lease,
        Err(EscrowStoreError::NotUnlockable { .. })
    ));
    // A lease of relay 1 that names relay 2's deposit.
    let mut crossed = new_lease(&new, 1, at(20), 1_000);
    crossed.escrow_id = "escrow_else".into();
    assert!(matches!(
        refused(crossed),
        Err(EscrowStoreError::NotUnlockable { .. })
    ));
    applied(store.revoke_deposit(
        "escrow_new",
        &revocation(at(15)),
        &revoke_audit(4, &new, at(15)),
    ));
    let revoked_lease = refused(new_lease(&new, 1, at(20), 1_000));
    assert!(matches!(
        revoked_lease,
        Err(EscrowStoreError::NotUnlockable { .. })
    ));
    assert!(store.lease_history(&relay(1)).unwrap().is_empty());
    assert_eq!(store.last_audit_seq().unwrap(), Some(4));
}

pub(crate) fn audit_index_lists_entries_in_sequence_order_within_the_range(backend: &dyn Backend) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    let rejected = |seq| {
        entry(
            seq,
            AuditKind::UnlockRejected,
            "escrow_d1",
            relay(1),
            None,
            at(seq),
        )
    };
    let refetched = |seq| {
        let lease = LeaseId {
            relay: relay(1),
            epoch: 1,
        };
        entry(
            seq,
            AuditKind::UnlockRefetched,
            "escrow_d1",
            relay(1),
            Some(lease),
            at(seq),
        )
    };
    // Written out of order, as concurrent requests may commit.
    put(&*store, 5, &d1);
    applied(store.append_audit_index(&rejected(9)));
    assert_eq!(
        store.append_audit_index(&refetched(2)).unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        store.append_audit_index(&rejected(3)).unwrap(),
        WriteOutcome::Applied
    );

    let seqs = |range| -> Vec<u64> {
        store
            .audit_index(range)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(0..u64::MAX), vec![2, 3, 5, 9]);
    assert_eq!(seqs(3..9), vec![3, 5]);
    assert_eq!(seqs(10..20), Vec::<u64>::new());
    assert_eq!(seqs(5..5), Vec::<u64>::new());
    assert_eq!(store.audit_index(2..3).unwrap(), vec![refetched(2)]);
    assert_eq!(store.last_audit_seq().unwrap(), Some(9));

    // Kinds that change rows are indexed only by their own write.
    let deposit_kind = deposit_audit(10, &d1);
    let refused = store.append_audit_index(&deposit_kind);
    assert!(
        matches!(refused, Err(EscrowStoreError::AuditMismatch(_))),
        "{refused:?}"
    );
    assert_eq!(store.last_audit_seq().unwrap(), Some(9));
}

pub(crate) fn reopening_the_store_keeps_every_row(backend: &dyn Backend) {
    let relays = [relay(1), relay(2), relay(3)];
    let before = {
        let store = backend.open();
        let a1 = new_deposit("escrow_a1", relay(1), peer(1), at(0));
        let a2 = new_deposit("escrow_a2", relay(1), peer(1), at(10));
        let b1 = new_deposit("escrow_b1", relay(2), peer(2), at(20));
        let c1 = new_deposit("escrow_c1", relay(3), peer(3), at(30));
        put(&*store, 1, &a1);
        put(&*store, 2, &a2);
        put(&*store, 3, &b1);
        put(&*store, 4, &c1);
        let a_lease = new_lease(&a2, 1, at(100), 600_000);
        issue(&*store, 5, &a_lease);
        end(&*store, 6, &a_lease, at(200), "manual:operator");
        issue(&*store, 7, &new_lease(&a2, 2, at(300), 600_000));
        issue(&*store, 8, &new_lease(&c1, 1, at(300), 600_000));
        applied(store.revoke_deposit(
            "escrow_b1",
            &revocation(at(400)),
            &revoke_audit(9, &b1, at(400)),
        ));
        let rejected = entry(
            10,
            AuditKind::UnlockRejected,
            "escrow_b1",
            relay(2),
            None,
            at(500),
        );
        applied(store.append_audit_index(&rejected));
        everything(&*store, &relays)
    };
    assert_eq!(before.active.len(), 2);
    assert_eq!(before.audit.len(), 10);
    let store = backend.open();
    assert_eq!(everything(&*store, &relays), before);
    // And it keeps working after the restart.
    put(
        &*store,
        11,
        &new_deposit("escrow_a3", relay(1), peer(1), at(600)),
    );
    assert_eq!(store.deposit_history(&relay(1)).unwrap().len(), 3);
}

pub(crate) fn unknown_ids_are_errors_and_write_nothing(backend: &dyn Backend) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    put(&*store, 1, &d1);
    let ghost = new_deposit("escrow_ghost", relay(1), peer(1), at(0));

    let revoke = store.revoke_deposit(
        "escrow_ghost",
        &revocation(at(1)),
        &revoke_audit(2, &ghost, at(1)),
    );
    assert!(matches!(&revoke, Err(EscrowStoreError::UnknownDeposit(id)) if id == "escrow_ghost"));

    let lease = new_lease(&ghost, 1, at(1), 1_000);
    let audit = lease_audit(2, AuditKind::UnlockIssued, &lease, at(1));
    let issue_unknown = store.record_lease_issued(&lease, &audit);
    assert!(matches!(
        issue_unknown,
        Err(EscrowStoreError::UnknownDeposit(_))
    ));

    let unknown_lease = new_lease(&d1, 7, at(1), 1_000);
    let audit = lease_audit(2, AuditKind::LeaseReleased, &unknown_lease, at(1));
    let end_unknown = store.record_lease_ended(unknown_lease.id, at(1), "peer-healthy", &audit);
    assert!(
        matches!(end_unknown, Err(EscrowStoreError::UnknownLease(id)) if id == unknown_lease.id)
    );
    let audit = lease_audit(2, AuditKind::LeaseRenewed, &unknown_lease, at(1));
    let renew_unknown = store.record_lease_renewed(unknown_lease.id, at(5_000), &audit);
    assert!(matches!(
        renew_unknown,
        Err(EscrowStoreError::UnknownLease(_))
    ));

    assert_eq!(store.deposit("escrow_ghost").unwrap(), None);
    assert!(matches!(
        store.deposit(""),
        Err(EscrowStoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.deposit(&"x".repeat(129)),
        Err(EscrowStoreError::InvalidInput(_))
    ));
    assert_eq!(store.current_deposit(&relay(7)).unwrap(), None);
    assert!(store.lease_history(&relay(7)).unwrap().is_empty());
    assert_eq!(store.last_audit_seq().unwrap(), Some(1));
    assert!(revoke.unwrap_err().is_caller_error());

    // Lease ids as text: one spelling, anything else refused.
    let id = LeaseId {
        relay: relay(1),
        epoch: 42,
    };
    assert_eq!(parse_lease_id(&lease_id_text(id)).unwrap(), id);
    let text = lease_id_text(id);
    for bad in [
        "",
        "lease-",
        "lease-00-1",
        &text.replace("-42", "-+42"),
        &text.replace("-42", "-042"),
        &text.to_uppercase(),
        &format!("{text}-1"),
    ] {
        assert!(parse_lease_id(bad).is_err(), "{bad:?} parsed");
    }
}

pub(crate) fn malformed_input_is_refused_before_anything_is_written(backend: &dyn Backend) {
    let store = backend.open();
    let good = new_deposit("escrow_good", relay(1), peer(1), at(0));
    let invalid = |result: Result<WriteOutcome, EscrowStoreError>| {
        assert!(
            matches!(
                result,
                Err(EscrowStoreError::InvalidInput(_) | EscrowStoreError::AuditMismatch(_))
            ),
            "{result:?}"
        );
    };
    let put_variant = |change: &dyn Fn(&mut StoredDeposit, &mut AuditIndexEntry)| {
        let mut deposit = good.clone();
        let mut audit = deposit_audit(1, &deposit);
        change(&mut deposit, &mut audit);
        store.put_deposit(&deposit, &audit)
    };
    invalid(put_variant(&|d, a| {
        d.record.escrow_id = String::new();
        a.escrow_id = String::new();
    }));
    invalid(put_variant(&|d, a| {
        d.record.escrow_id = "e".repeat(129);
        a.escrow_id = d.record.escrow_id.clone();
    }));
    invalid(put_variant(&|d, _| {
        d.metadata = json!({"name": "nul\u{0}byte"})
    }));
    invalid(put_variant(&|d, _| d.sealed_package = json!({"k\u{0}": 1})));
    invalid(put_variant(&|d, _| {
        d.record.expires_at = UnixTime(u64::MAX)
    }));
    invalid(put_variant(&|d, _| d.record.revoked_at = Some(at(1))));
    invalid(put_variant(&|d, _| d.record.unlocks_used = 3));
    invalid(put_variant(&|d, _| {
        d.record.policy_version = "p".repeat(2_000)
    }));
    invalid(put_variant(&|_, a| a.actor = "act\u{0}or".into()));
    invalid(put_variant(&|_, a| a.seq = u64::MAX));
    invalid(put_variant(&|_, a| a.kind = AuditKind::UnlockIssued));
    invalid(put_variant(&|_, a| a.escrow_id = "escrow_other".into()));
    invalid(put_variant(&|_, a| a.relay = relay(2)));
    invalid(put_variant(&|_, a| {
        a.lease_id = Some(LeaseId {
            relay: relay(1),
            epoch: 1,
        })
    }));
    invalid(put_variant(&|d, _| {
        d.metadata = json!({"blob": "x".repeat(300_000)})
    }));

    put(&*store, 1, &good);
    let lease = new_lease(&good, 1, at(1), 1_000);
    let lease_variant = |change: &dyn Fn(&mut LeaseRecord)| {
        let mut lease = lease.clone();
        change(&mut lease);
        let audit = lease_audit(2, AuditKind::UnlockIssued, &lease, at(1));
        store.record_lease_issued(&lease, &audit)
    };
    invalid(lease_variant(&|l| l.id.epoch = 0));
    invalid(lease_variant(&|l| l.id.epoch = u64::MAX));
    invalid(lease_variant(&|l| l.released_at = Some(at(2))));
    invalid(lease_variant(&|l| l.evidence = json!(["\u{0}"])));
    let empty_reason = {
        issue(&*store, 2, &lease);
        let audit = lease_audit(3, AuditKind::LeaseReleased, &lease, at(2));
        store.record_lease_ended(lease.id, at(2), "", &audit)
    };
    invalid(empty_reason);
    let wrong_kind = {
        let audit = lease_audit(3, AuditKind::UnlockRejected, &lease, at(2));
        store.record_lease_ended(lease.id, at(2), "expired", &audit)
    };
    invalid(wrong_kind);
    let bad_revocation = Revocation {
        at: at(3),
        actor: "a".repeat(2_000),
        reason: "r".into(),
    };
    invalid(store.revoke_deposit(
        "escrow_good",
        &bad_revocation,
        &revoke_audit(3, &good, at(3)),
    ));
    assert_eq!(store.last_audit_seq().unwrap(), Some(2));
    assert_eq!(
        store.deposit_history(&relay(1)).unwrap(),
        vec![unlocked(good, 1)]
    );
    assert_eq!(store.active_leases(at(1)).unwrap(), vec![lease]);
}

pub(crate) fn repeating_a_write_with_its_audit_entry_applies_it_once(backend: &dyn Backend) {
    let store = backend.open();
    let relays = [relay(1), relay(2)];
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    let e1 = new_deposit("escrow_e1", relay(2), peer(1), at(0));
    let lease = new_lease(&d1, 1, at(10), 600_000);
    let time = at(50);
    let writes: Vec<Box<dyn Fn() -> Result<WriteOutcome, EscrowStoreError> + '_>> = vec![
        Box::new(|| store.put_deposit(&d1, &deposit_audit(1, &d1))),
        Box::new(|| store.put_deposit(&e1, &deposit_audit(2, &e1))),
        Box::new(|| {
            store.record_lease_issued(
                &lease,
                &lease_audit(3, AuditKind::UnlockIssued, &lease, at(10)),
            )
        }),
        Box::new(|| {
            let audit = lease_audit(4, AuditKind::LeaseRenewed, &lease, at(20));
            store.record_lease_renewed(lease.id, at(900_000), &audit)
        }),
        Box::new(|| {
            let audit = lease_audit(5, AuditKind::LeaseReleased, &lease, at(30));
            store.record_lease_ended(lease.id, at(30), "peer-healthy", &audit)
        }),
        Box::new(|| {
            let entry = entry(
                6,
                AuditKind::UnlockRejected,
                "escrow_d1",
                relay(1),
                None,
                at(40),
            );
            store.append_audit_index(&entry)
        }),
        Box::new(|| {
            store.revoke_deposit("escrow_d1", &revocation(time), &revoke_audit(7, &d1, time))
        }),
        Box::new(|| store.revoke_owner(&peer(1), &revocation(time), &[revoke_audit(8, &e1, time)])),
    ];
    for write in &writes {
        assert_eq!(write().unwrap(), WriteOutcome::Applied);
        let after_first = everything(&*store, &relays);
        assert_eq!(write().unwrap(), WriteOutcome::AlreadyApplied);
        assert_eq!(everything(&*store, &relays), after_first);
    }
    assert_eq!(
        store
            .deposit("escrow_d1")
            .unwrap()
            .unwrap()
            .record
            .unlocks_used,
        1
    );
    assert_eq!(store.audit_index(0..100).unwrap().len(), 8);
}

pub(crate) fn a_used_audit_seq_with_other_content_is_refused(backend: &dyn Backend) {
    let store = backend.open();
    let d1 = new_deposit("escrow_d1", relay(1), peer(1), at(0));
    let d2 = new_deposit("escrow_d2", relay(1), peer(1), at(10));
    put(&*store, 1, &d1);
    let refused = store.put_deposit(&d2, &deposit_audit(1, &d2));
    assert!(
        matches!(refused, Err(EscrowStoreError::DuplicateAuditSeq(1))),
        "{refused:?}"
    );
    assert_eq!(store.deposit("escrow_d2").unwrap(), None);
    assert_eq!(store.current_deposit(&relay(1)).unwrap(), Some(d1.clone()));
    // The same deposit id under a fresh seq is a duplicate deposit, not a replay.
    let duplicate = store.put_deposit(&d1, &deposit_audit(2, &d1));
    assert!(
        matches!(duplicate, Err(EscrowStoreError::DuplicateEscrowId(_))),
        "{duplicate:?}"
    );
    assert_eq!(store.last_audit_seq().unwrap(), Some(1));
}

// ---- the core escrow, mirrored into the store as the escrow service will ----

/// Drives a core [`Escrow`] and writes each of its audit records to the store.
struct Mirror<'s> {
    escrow: Escrow,
    store: &'s dyn EscrowStore,
    start: Instant,
    next_seq: u64,
}

impl<'s> Mirror<'s> {
    fn new(store: &'s dyn EscrowStore) -> Self {
        let start = Instant::now();
        let escrow = Escrow::new(
            PolicyConfig::default(),
            LeaseConfig::default(),
            start,
            UnixTime(T0),
        );
        Self {
            escrow,
            store,
            start,
            next_seq: 0,
        }
    }

    fn now(&self, secs: u64) -> Instant {
        self.start + Duration::from_secs(secs)
    }

    fn index(&mut self, record: &AuditRecord) -> AuditIndexEntry {
        let seq = self.next_seq;
        self.next_seq += 1;
        let block = serde_json::to_vec(record).unwrap();
        AuditIndexEntry::from_record(seq, record, digest(&block))
    }

    /// Writes the audit records of the last input (revokes of an owner together).
    fn drain(&mut self, owner_revoke: Option<PeerId>) {
        let mut revoked = Vec::new();
        let mut revocation = None;
        while let Some(event) = self.escrow.poll_event() {
            let EscrowEvent::Audit(record) = event else {
                continue;
            };
            let entry = self.index(&record);
            match record.kind {
                AuditKind::DepositRevoked => {
                    let this = Revocation {
                        at: record.at,
                        actor: record.actor.clone(),
                        reason: record.reason.clone().unwrap(),
                    };
                    if owner_revoke.is_some() {
                        revoked.push(entry);
                        revocation = Some(this);
                    } else {
                        applied(self.store.revoke_deposit(&record.escrow_id, &this, &entry));
                    }
                }
                AuditKind::LeaseExpired | AuditKind::LeaseReleased => {
                    let reason = record.reason.clone().unwrap();
                    let lease = record.lease_id.unwrap();
                    applied(
                        self.store
                            .record_lease_ended(lease, record.at, &reason, &entry),
                    );
                }
                AuditKind::UnlockRejected | AuditKind::UnlockRefetched => {
                    applied(self.store.append_audit_index(&entry));
                }
                other => panic!("{other:?} is written by its own input"),
            }
        }
        if let (Some(owner), Some(revocation)) = (owner_revoke, revocation) {
            applied(self.store.revoke_owner(&owner, &revocation, &revoked));
        }
    }

    fn deposit(&mut self, escrow_id: &str, relay: RelayKey, owner: PeerId, secs: u64) {
        let input = DepositInput {
            escrow_id: escrow_id.into(),
            relay_key: relay,
            owner,
            permitted_requesters: BTreeSet::from([peer(GATEWAY)]),
            requested_expires_at: None,
            policy_version: DEFAULT_POLICY_VERSION.into(),
        };
        let record = self.escrow.handle_deposit(input, self.now(secs)).unwrap();
        let Some(EscrowEvent::Audit(audit)) = self.escrow.poll_event() else {
            panic!("a deposit is audited")
        };
        let entry = self.index(&audit);
        let mut stored = new_deposit(escrow_id, relay, owner, record.created_at);
        stored.record = record;
        applied(self.store.put_deposit(&stored, &entry));
        self.drain(None);
    }

    fn evidence(&self, secs: u64) -> Evidence {
        let unix = self.escrow.unix_time(self.now(secs));
        Evidence {
            escrow_enabled: Some(true),
            healthy_peer_count: Some(0),
            last_healthy_at: Some(UnixTime(unix.0 - 120_000)),
            mirror_lag_blocks: Some(0),
            mirror_lag_ms: Some(0),
            mirror_last_synced_at: Some(UnixTime(unix.0 - 1_000)),
        }
    }

    fn unlock(&mut self, relay: RelayKey, secs: u64) -> UnlockOutcome {
        let now = self.now(secs);
        let request = UnlockRequest {
            relay_key: relay,
            requester: peer(GATEWAY),
            evidence: Some(self.evidence(secs)),
        };
        let plan = self.escrow.plan_unlock(&request, now).unwrap();
        let entry = self.index(plan.audit());
        let outcome = self.escrow.commit_unlock(plan, now).unwrap();
        // A lease the issue ended (expired, timer not yet fired) is recorded first.
        self.drain(None);
        match &outcome {
            UnlockOutcome::Issued(grant) => {
                let lease = LeaseRecord {
                    id: grant.id,
                    escrow_id: grant.escrow_id.clone(),
                    requester: grant.holder,
                    issued_at: self.escrow.unix_time(now),
                    expires_at: self.escrow.unix_time(grant.expires_at),
                    evidence: serde_json::to_value(&request.evidence).unwrap(),
                    reasons: Vec::new(),
                    payload_digest: digest(grant.escrow_id.as_bytes()),
                    released_at: None,
                    release_reason: None,
                };
                applied(self.store.record_lease_issued(&lease, &entry));
            }
            UnlockOutcome::Refetched(_) | UnlockOutcome::Rejected(_) => {
                applied(self.store.append_audit_index(&entry));
            }
        }
        outcome
    }

    fn renew(&mut self, lease: LeaseId, secs: u64) {
        let now = self.now(secs);
        let request = UnlockRequest {
            relay_key: lease.relay,
            requester: peer(GATEWAY),
            evidence: Some(self.evidence(secs)),
        };
        let grant = self.escrow.handle_renew(lease, request, now).unwrap();
        let Some(EscrowEvent::Audit(audit)) = self.escrow.poll_event() else {
            panic!("a renewal is audited")
        };
        let entry = self.index(&audit);
        let expires_at = self.escrow.unix_time(grant.expires_at);
        applied(self.store.record_lease_renewed(lease, expires_at, &entry));
        self.drain(None);
    }

    fn assert_in_step(&self) {
        assert_eq!(
            self.store.escrow_snapshot().unwrap(),
            self.escrow.snapshot()
        );
        assert_eq!(
            self.store.last_audit_seq().unwrap(),
            self.next_seq.checked_sub(1)
        );
    }
}

pub(crate) fn the_snapshot_equals_the_core_escrow_it_mirrors_and_restores_it(
    backend: &dyn Backend,
) {
    let store = backend.open();
    let mut mirror = Mirror::new(&*store);
    let (w1, w2) = (peer(1), peer(2));
    mirror.deposit("escrow_a1", relay(1), w1, 0);
    mirror.deposit("escrow_a2", relay(1), w1, 10);
    mirror.deposit("escrow_b1", relay(2), w1, 20);
    mirror.deposit("escrow_c1", relay(3), w2, 30);
    mirror.assert_in_step();

    let UnlockOutcome::Issued(first) = mirror.unlock(relay(1), 100) else {
        panic!("issued")
    };
    assert!(matches!(
        mirror.unlock(relay(1), 110),
        UnlockOutcome::Refetched(_)
    ));
    mirror.renew(first.id, 200);
    mirror.assert_in_step();
    mirror
        .escrow
        .handle_release(
            first.id,
            peer(GATEWAY),
            EndReason::PeerHealthy,
            mirror.now(300),
        )
        .unwrap();
    mirror.drain(None);
    // The deposit's one unlock is used up.
    let UnlockOutcome::Rejected(reasons) = mirror.unlock(relay(1), 310) else {
        panic!("rejected")
    };
    assert!(reasons.contains(&RejectReason::UnlockBudgetExhausted));
    mirror.assert_in_step();

    // A lease that runs out is expired by the core's timer.
    let UnlockOutcome::Issued(second) = mirror.unlock(relay(3), 400) else {
        panic!("issued")
    };
    mirror.escrow.handle_timeout(mirror.now(400 + 600));
    mirror.drain(None);
    assert_eq!(
        store.lease_history(&relay(3)).unwrap()[0]
            .release_reason
            .as_deref(),
        Some("expired")
    );
    assert_eq!(second.id.epoch, 1);

    // A rotation, an open lease, then the owner is revoked everywhere.
    mirror.deposit("escrow_b2", relay(2), w1, 1_100);
    let UnlockOutcome::Issued(_) = mirror.unlock(relay(2), 1_200) else {
        panic!("issued")
    };
    mirror.deposit("escrow_c2", relay(3), w2, 1_250);
    let UnlockOutcome::Issued(open) = mirror.unlock(relay(3), 1_260) else {
        panic!("issued")
    };
    mirror.assert_in_step();
    let revoked = mirror.escrow.handle_revoke(
        RevokeTarget::Owner(w1),
        "operator",
        "compromised",
        mirror.now(1_300),
    );
    assert_eq!(revoked.len(), 4);
    mirror.drain(Some(w1));
    mirror.assert_in_step();
    assert!(matches!(
        mirror.unlock(relay(2), 1_310),
        UnlockOutcome::Rejected(_)
    ));
    mirror.assert_in_step();

    // What the store holds is enough to rebuild the escrow after a restart.
    let restart = mirror.now(1_400);
    let restored = Escrow::restore(
        PolicyConfig::default(),
        LeaseConfig::default(),
        store.escrow_snapshot().unwrap(),
        restart,
        mirror.escrow.unix_time(restart),
    )
    .unwrap();
    assert_eq!(restored.snapshot(), mirror.escrow.snapshot());
    assert_eq!(
        restored
            .active_lease(&relay(3), restart)
            .map(|lease| lease.id),
        Some(open.id)
    );
    assert_eq!(restored.lease_epoch(&relay(1)), 1);
}

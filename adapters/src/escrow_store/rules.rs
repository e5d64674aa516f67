//! The store's rules, written once over a transaction's primitive reads and
//! writes ([`WriteTx`]) so both backends check and change exactly the same
//! things in the same order. A backend runs one of these functions inside a
//! transaction and commits only if it returns `Ok`.
//!
//! Each write first claims its audit sequence number: if the number is
//! already indexed with the same entry, the write was committed before and
//! nothing more happens ([`WriteOutcome::AlreadyApplied`]).

use std::collections::{BTreeMap, BTreeSet};

use hypergate_core::escrow::{
    AuditKind, DepositRecord, EscrowSnapshot, LeaseSnapshot, RelaySnapshot, SNAPSHOT_VERSION,
};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;

use super::rows::{
    AuditIndexEntry, LeaseRecord, Revocation, StoredDeposit, check_audit, check_deposit,
    check_new_lease, check_revocation, check_text, check_time, corrupt,
};
use super::{EscrowStoreError, WriteOutcome};

/// The primitive reads and writes of one open write transaction.
pub(super) trait WriteTx {
    /// Indexes `entry` unless its sequence number is taken; returns the entry
    /// holding the number if it was.
    fn claim_audit(
        &mut self,
        entry: &AuditIndexEntry,
    ) -> Result<Option<AuditIndexEntry>, EscrowStoreError>;
    /// A deposit's core record.
    fn deposit(&mut self, escrow_id: &str) -> Result<Option<DepositRecord>, EscrowStoreError>;
    /// The relay's current deposit's escrow id.
    fn current_escrow_id(&mut self, relay: &RelayKey) -> Result<Option<String>, EscrowStoreError>;
    /// Inserts a deposit as the relay's current one (the previous current
    /// one, if any, stops being current).
    fn insert_current_deposit(&mut self, deposit: &StoredDeposit) -> Result<(), EscrowStoreError>;
    /// Writes a stored deposit's mutable fields (revocation, supersession, unlock count).
    fn update_deposit(&mut self, record: &DepositRecord) -> Result<(), EscrowStoreError>;
    /// Every unrevoked deposit of the owner, in escrow id order.
    fn unrevoked_deposits_of(
        &mut self,
        owner: &PeerId,
    ) -> Result<Vec<DepositRecord>, EscrowStoreError>;
    /// A lease.
    fn lease(&mut self, id: LeaseId) -> Result<Option<LeaseRecord>, EscrowStoreError>;
    /// The relay's lease that has not ended.
    fn open_lease(&mut self, relay: &RelayKey) -> Result<Option<LeaseRecord>, EscrowStoreError>;
    /// The relay's highest lease epoch (0: none).
    fn max_lease_epoch(&mut self, relay: &RelayKey) -> Result<u64, EscrowStoreError>;
    /// Inserts a new lease.
    fn insert_lease(&mut self, lease: &LeaseRecord) -> Result<(), EscrowStoreError>;
    /// Writes a stored lease's mutable fields (expiry, release).
    fn update_lease(&mut self, lease: &LeaseRecord) -> Result<(), EscrowStoreError>;
}

fn mismatch(what: impl Into<String>) -> EscrowStoreError {
    EscrowStoreError::AuditMismatch(what.into())
}

/// Checks that `entry` is a `kind` record of `escrow_id`.
fn expect_audit(
    entry: &AuditIndexEntry,
    kinds: &[AuditKind],
    escrow_id: &str,
) -> Result<(), EscrowStoreError> {
    check_audit(entry)?;
    if !kinds.contains(&entry.kind) {
        return Err(mismatch(format!(
            "audit seq {} is a {} record",
            entry.seq,
            entry.kind.as_str()
        )));
    }
    if entry.escrow_id != escrow_id {
        return Err(mismatch(format!(
            "audit seq {} names deposit {:?}, the change {escrow_id:?}",
            entry.seq, entry.escrow_id
        )));
    }
    Ok(())
}

fn expect_lease_audit(
    entry: &AuditIndexEntry,
    lease: &LeaseRecord,
) -> Result<(), EscrowStoreError> {
    if entry.lease_id != Some(lease.id) || entry.relay != lease.relay() {
        return Err(mismatch(format!(
            "audit seq {} does not name lease {}",
            entry.seq, lease.id
        )));
    }
    Ok(())
}

/// Claims the entry's sequence number; `Some(outcome)` ends the write early.
fn claim(
    tx: &mut dyn WriteTx,
    entry: &AuditIndexEntry,
) -> Result<Option<WriteOutcome>, EscrowStoreError> {
    match tx.claim_audit(entry)? {
        None => Ok(None),
        Some(existing) if existing == *entry => Ok(Some(WriteOutcome::AlreadyApplied)),
        Some(_) => Err(EscrowStoreError::DuplicateAuditSeq(entry.seq)),
    }
}

pub(super) fn put_deposit(
    tx: &mut dyn WriteTx,
    deposit: &StoredDeposit,
    audit: &AuditIndexEntry,
) -> Result<WriteOutcome, EscrowStoreError> {
    check_deposit(deposit)?;
    let record = &deposit.record;
    expect_audit(audit, &[AuditKind::Deposit], &record.escrow_id)?;
    if audit.relay != record.relay_key || audit.lease_id.is_some() {
        return Err(mismatch(
            "a deposit record names the deposit's relay and no lease",
        ));
    }
    if let Some(done) = claim(tx, audit)? {
        return Ok(done);
    }
    if tx.deposit(&record.escrow_id)?.is_some() {
        return Err(EscrowStoreError::DuplicateEscrowId(
            record.escrow_id.clone(),
        ));
    }
    if let Some(previous) = tx.current_escrow_id(&record.relay_key)? {
        let mut previous = tx
            .deposit(&previous)?
            .ok_or_else(|| corrupt(format!("current deposit {previous:?} is missing")))?;
        // As in the core: a revoked deposit stays revoked; only a live one is superseded.
        if previous.revoked_at.is_none() {
            previous.superseded_by = Some(record.escrow_id.clone());
            tx.update_deposit(&previous)?;
        }
    }
    tx.insert_current_deposit(deposit)?;
    Ok(WriteOutcome::Applied)
}

/// Revokes one unrevoked deposit and ends its open lease.
fn revoke(
    tx: &mut dyn WriteTx,
    mut deposit: DepositRecord,
    revocation: &Revocation,
) -> Result<(), EscrowStoreError> {
    deposit.revoked_at = Some(revocation.at);
    deposit.revoked_by = Some(revocation.actor.clone());
    deposit.revoked_reason = Some(revocation.reason.clone());
    tx.update_deposit(&deposit)?;
    if let Some(mut lease) = tx.open_lease(&deposit.relay_key)? {
        if lease.escrow_id == deposit.escrow_id {
            lease.released_at = Some(revocation.at);
            lease.release_reason = Some(format!("revoked:{}", revocation.reason));
            tx.update_lease(&lease)?;
        }
    }
    Ok(())
}

pub(super) fn revoke_deposit(
    tx: &mut dyn WriteTx,
    escrow_id: &str,
    revocation: &Revocation,
    audit: &AuditIndexEntry,
) -> Result<WriteOutcome, EscrowStoreError> {
    check_revocation(revocation)?;
    expect_audit(audit, &[AuditKind::DepositRevoked], escrow_id)?;
    if let Some(done) = claim(tx, audit)? {
        return Ok(done);
    }
    let deposit = tx
        .deposit(escrow_id)?
        .ok_or_else(|| EscrowStoreError::UnknownDeposit(escrow_id.to_owned()))?;
    if deposit.relay_key != audit.relay {
        return Err(mismatch(format!(
            "audit seq {} names another relay than deposit {escrow_id:?}",
            audit.seq
        )));
    }
    if deposit.revoked_at.is_some() {
        return Err(EscrowStoreError::AlreadyRevoked(escrow_id.to_owned()));
    }
    revoke(tx, deposit, revocation)?;
    Ok(WriteOutcome::Applied)
}

pub(super) fn revoke_owner(
    tx: &mut dyn WriteTx,
    owner: &PeerId,
    revocation: &Revocation,
    audit: &[AuditIndexEntry],
) -> Result<WriteOutcome, EscrowStoreError> {
    check_revocation(revocation)?;
    let mut by_escrow_id = BTreeMap::new();
    let mut seqs = BTreeSet::new();
    for entry in audit {
        expect_audit(entry, &[AuditKind::DepositRevoked], &entry.escrow_id)?;
        if !seqs.insert(entry.seq) {
            return Err(mismatch(format!("audit seq {} given twice", entry.seq)));
        }
        if by_escrow_id
            .insert(entry.escrow_id.as_str(), entry)
            .is_some()
        {
            return Err(mismatch(format!(
                "deposit {:?} revoked twice",
                entry.escrow_id
            )));
        }
    }
    let mut claimed = 0;
    for entry in audit {
        if claim(tx, entry)?.is_none() {
            claimed += 1;
        }
    }
    if !audit.is_empty() && claimed == 0 {
        return Ok(WriteOutcome::AlreadyApplied);
    }
    if claimed != audit.len() {
        return Err(mismatch(
            "some of the audit entries were indexed before, some not",
        ));
    }
    let deposits = tx.unrevoked_deposits_of(owner)?;
    let revoking: BTreeSet<&str> = deposits.iter().map(|d| d.escrow_id.as_str()).collect();
    let audited: BTreeSet<&str> = by_escrow_id.keys().copied().collect();
    if revoking != audited {
        return Err(mismatch(format!(
            "the owner's unrevoked deposits are {revoking:?}, the audit entries name {audited:?}"
        )));
    }
    for deposit in deposits {
        let relay_matches = by_escrow_id
            .get(deposit.escrow_id.as_str())
            .is_some_and(|entry| entry.relay == deposit.relay_key);
        if !relay_matches {
            return Err(mismatch(format!(
                "the audit entry of {:?} names another relay",
                deposit.escrow_id
            )));
        }
        revoke(tx, deposit, revocation)?;
    }
    Ok(WriteOutcome::Applied)
}

pub(super) fn record_lease_issued(
    tx: &mut dyn WriteTx,
    lease: &LeaseRecord,
    audit: &AuditIndexEntry,
) -> Result<WriteOutcome, EscrowStoreError> {
    check_new_lease(lease)?;
    expect_audit(audit, &[AuditKind::UnlockIssued], &lease.escrow_id)?;
    expect_lease_audit(audit, lease)?;
    if let Some(done) = claim(tx, audit)? {
        return Ok(done);
    }
    let not_unlockable = |why| EscrowStoreError::NotUnlockable {
        escrow_id: lease.escrow_id.clone(),
        lease: lease.id,
        why,
    };
    let mut deposit = tx
        .deposit(&lease.escrow_id)?
        .ok_or_else(|| EscrowStoreError::UnknownDeposit(lease.escrow_id.clone()))?;
    if deposit.relay_key != lease.relay() {
        return Err(not_unlockable("it holds another relay's key"));
    }
    if tx.current_escrow_id(&deposit.relay_key)?.as_deref() != Some(deposit.escrow_id.as_str()) {
        return Err(not_unlockable("a newer deposit superseded it"));
    }
    if deposit.revoked_at.is_some() {
        return Err(not_unlockable("it is revoked"));
    }
    if let Some(open) = tx.open_lease(&lease.relay())? {
        return Err(EscrowStoreError::LeaseStillOpen(open.id));
    }
    let highest = tx.max_lease_epoch(&lease.relay())?;
    if lease.id.epoch <= highest {
        return Err(EscrowStoreError::StaleEpoch {
            lease: lease.id,
            highest,
        });
    }
    deposit.unlocks_used = deposit
        .unlocks_used
        .checked_add(1)
        .ok_or_else(|| not_unlockable("its unlock count is at its maximum"))?;
    tx.update_deposit(&deposit)?;
    tx.insert_lease(lease)?;
    Ok(WriteOutcome::Applied)
}

/// The open lease `id`, after claiming the audit entry; `Err(Ok(outcome))` ends early.
fn open_lease_for(
    tx: &mut dyn WriteTx,
    id: LeaseId,
    kinds: &[AuditKind],
    audit: &AuditIndexEntry,
) -> Result<Result<LeaseRecord, WriteOutcome>, EscrowStoreError> {
    check_audit(audit)?;
    if !kinds.contains(&audit.kind) || audit.lease_id != Some(id) || audit.relay != id.relay {
        return Err(mismatch(format!(
            "audit seq {} is not a {} record of lease {id}",
            audit.seq,
            kinds.first().map_or("", |kind| kind.as_str())
        )));
    }
    if let Some(done) = claim(tx, audit)? {
        return Ok(Err(done));
    }
    let lease = tx.lease(id)?.ok_or(EscrowStoreError::UnknownLease(id))?;
    expect_audit(audit, kinds, &lease.escrow_id)?;
    if lease.released_at.is_some() {
        return Err(EscrowStoreError::LeaseEnded(id));
    }
    Ok(Ok(lease))
}

pub(super) fn record_lease_renewed(
    tx: &mut dyn WriteTx,
    id: LeaseId,
    expires_at: UnixTime,
    audit: &AuditIndexEntry,
) -> Result<WriteOutcome, EscrowStoreError> {
    check_time("expires_at", expires_at)?;
    let mut lease = match open_lease_for(tx, id, &[AuditKind::LeaseRenewed], audit)? {
        Ok(lease) => lease,
        Err(done) => return Ok(done),
    };
    if expires_at < lease.expires_at {
        return Err(EscrowStoreError::InvalidInput(format!(
            "a renewal cannot move lease {id} to an earlier expiry"
        )));
    }
    lease.expires_at = expires_at;
    tx.update_lease(&lease)?;
    Ok(WriteOutcome::Applied)
}

pub(super) fn record_lease_ended(
    tx: &mut dyn WriteTx,
    id: LeaseId,
    at: UnixTime,
    reason: &str,
    audit: &AuditIndexEntry,
) -> Result<WriteOutcome, EscrowStoreError> {
    check_time("released_at", at)?;
    check_text("release reason", reason)?;
    if reason.is_empty() {
        return Err(EscrowStoreError::InvalidInput(
            "a release reason is required".into(),
        ));
    }
    let kinds = [AuditKind::LeaseReleased, AuditKind::LeaseExpired];
    let mut lease = match open_lease_for(tx, id, &kinds, audit)? {
        Ok(lease) => lease,
        Err(done) => return Ok(done),
    };
    lease.released_at = Some(at);
    lease.release_reason = Some(reason.to_owned());
    tx.update_lease(&lease)?;
    Ok(WriteOutcome::Applied)
}

/// The kinds whose records change rows and so are indexed by their own write.
const KINDS_WITH_A_WRITE: [AuditKind; 6] = [
    AuditKind::Deposit,
    AuditKind::UnlockIssued,
    AuditKind::DepositRevoked,
    AuditKind::LeaseReleased,
    AuditKind::LeaseExpired,
    AuditKind::LeaseRenewed,
];

pub(super) fn append_audit_index(
    tx: &mut dyn WriteTx,
    entry: &AuditIndexEntry,
) -> Result<WriteOutcome, EscrowStoreError> {
    check_audit(entry)?;
    if KINDS_WITH_A_WRITE.contains(&entry.kind) {
        return Err(mismatch(format!(
            "a {} record is indexed by the write that records its change",
            entry.kind.as_str()
        )));
    }
    Ok(claim(tx, entry)?.unwrap_or(WriteOutcome::Applied))
}

/// Assembles the core's snapshot from consistent reads: every deposit, the
/// relays' current deposits, highest epochs and open leases.
pub(super) fn snapshot(
    mut deposits: Vec<DepositRecord>,
    current: BTreeMap<RelayKey, String>,
    epochs: BTreeMap<RelayKey, u64>,
    open_leases: Vec<LeaseRecord>,
) -> Result<EscrowSnapshot, EscrowStoreError> {
    deposits.sort_by(|a, b| a.escrow_id.cmp(&b.escrow_id));
    let mut relays: BTreeMap<RelayKey, RelaySnapshot> = BTreeMap::new();
    for deposit in &deposits {
        relays
            .entry(deposit.relay_key)
            .or_insert_with(|| RelaySnapshot {
                relay_key: deposit.relay_key,
                current_escrow_id: current.get(&deposit.relay_key).cloned(),
                lease_epoch: epochs.get(&deposit.relay_key).copied().unwrap_or(0),
                live_lease: None,
            });
    }
    for lease in open_leases {
        let relay = relays
            .get_mut(&lease.relay())
            .ok_or_else(|| corrupt(format!("lease {} has no deposit", lease.id)))?;
        if relay.live_lease.is_some() {
            return Err(corrupt(format!(
                "relay {} has two open leases",
                lease.relay()
            )));
        }
        relay.live_lease = Some(LeaseSnapshot {
            epoch: lease.id.epoch,
            escrow_id: lease.escrow_id,
            holder: lease.requester,
            expires_at: lease.expires_at,
        });
    }
    Ok(EscrowSnapshot {
        version: SNAPSHOT_VERSION,
        deposits,
        relays: relays.into_values().collect(),
    })
}

//! The rows an [`EscrowStore`](super::EscrowStore) keeps, and the checks every
//! backend applies to them before writing, so that both backends accept and
//! refuse exactly the same input (PostgreSQL would refuse a NUL byte in TEXT
//! or a timestamp past year 294276; the embedded store must refuse them too).

use hypergate_core::escrow::{
    AuditKind, AuditRecord, DepositRecord, MAX_ESCROW_ID_LEN, RejectReason,
};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;
use serde_json::Value;

use super::EscrowStoreError;

/// The latest storable time: 9999-12-31T23:59:59.999Z, within every
/// backend's timestamp range.
pub const MAX_STORED_TIME: UnixTime = UnixTime(253_402_300_799_999);

/// The longest free-text field (actor, reason, policy version), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// The largest JSON field (sealed package, metadata, evidence), serialised, in bytes.
pub const MAX_JSON_BYTES: usize = 256 * 1024;

/// A deposit as stored: the core's record plus what only the adapter keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeposit {
    /// The core's view: ids, expiry, revocation, supersession, unlock count.
    pub record: DepositRecord,
    /// The sealed gateway writer package, opaque (`{cipherText, nonce, publicKey}`).
    pub sealed_package: Value,
    /// The depositor's metadata (`{identifier, name, unlockConditions, …}`).
    pub metadata: Value,
    /// SHA-256 of the writer key, as the worker reported it (`writerHash`).
    pub writer_hash: [u8; 32],
}

/// Who revoked, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When, by the escrow's clock.
    pub at: UnixTime,
    /// Who (the original's `actor`, default `unknown`).
    pub actor: String,
    /// Why (the original's `reason`, default `unspecified`).
    pub reason: String,
}

/// One lease in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease (its relay and epoch); stored as [`lease_id_text`].
    pub id: LeaseId,
    /// The deposit whose key it releases.
    pub escrow_id: String,
    /// Who holds it.
    pub requester: PeerId,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When it expires (moved by renewals).
    pub expires_at: UnixTime,
    /// The evidence it was issued on, as the requester sent it.
    pub evidence: Value,
    /// The policy's reasons at issue time (empty for an issued lease).
    pub reasons: Vec<RejectReason>,
    /// SHA-256 over the released payload.
    pub payload_digest: [u8; 32],
    /// When it ended, if it has.
    pub released_at: Option<UnixTime>,
    /// Why it ended (the core's end reason text), if it has.
    pub release_reason: Option<String>,
}

impl LeaseRecord {
    /// The relay it leases.
    #[must_use]
    pub fn relay(&self) -> RelayKey {
        self.id.relay
    }

    /// Whether it has not ended and expires after `now`.
    #[must_use]
    pub fn is_active(&self, now: UnixTime) -> bool {
        self.released_at.is_none() && self.expires_at > now
    }
}

/// Where an audit record sits in the audit log, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditIndexEntry {
    /// The record's sequence number in the audit log (its block index).
    pub seq: u64,
    /// What happened.
    pub kind: AuditKind,
    /// The deposit concerned.
    pub escrow_id: String,
    /// The lease concerned, if any.
    pub lease_id: Option<LeaseId>,
    /// The relay.
    pub relay: RelayKey,
    /// Who caused it.
    pub actor: String,
    /// When, by the escrow's clock.
    pub at: UnixTime,
    /// A digest of the audit-log block (e.g. SHA-256 of its bytes), so the
    /// index can be checked against the log.
    pub block_digest: [u8; 32],
}

impl AuditIndexEntry {
    /// The entry for `record`, appended to the audit log at `seq` as a block with `block_digest`.
    #[must_use]
    pub fn from_record(seq: u64, record: &AuditRecord, block_digest: [u8; 32]) -> Self {
        Self {
            seq,
            kind: record.kind,
            escrow_id: record.escrow_id.clone(),
            lease_id: record.lease_id,
            relay: record.relay_key,
            actor: record.actor.clone(),
            at: record.at,
            block_digest,
        }
    }
}

/// A lease id as stored and shown: `lease-<relay hex>-<epoch>` (the core's `Display`).
#[must_use]
pub fn lease_id_text(id: LeaseId) -> String {
    id.to_string()
}

/// Parses [`lease_id_text`]; anything but that exact form is an error.
pub fn parse_lease_id(text: &str) -> Result<LeaseId, EscrowStoreError> {
    LeaseId::parse_canonical(text)
        .map_err(|_| EscrowStoreError::InvalidInput(format!("{text:?} is not a lease id")))
}

// ---- checks shared by both backends ----

fn invalid(what: impl Into<String>) -> EscrowStoreError {
    EscrowStoreError::InvalidInput(what.into())
}

pub(super) fn check_escrow_id(escrow_id: &str) -> Result<(), EscrowStoreError> {
    if escrow_id.is_empty() || escrow_id.len() > MAX_ESCROW_ID_LEN {
        return Err(invalid(format!(
            "escrow id must be 1..={MAX_ESCROW_ID_LEN} bytes"
        )));
    }
    check_text("escrow id", escrow_id)
}

pub(super) fn check_text(field: &str, text: &str) -> Result<(), EscrowStoreError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!(
            "{field} is longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    if text.contains('\0') {
        return Err(invalid(format!("{field} contains a NUL character")));
    }
    Ok(())
}

pub(super) fn check_time(field: &str, time: UnixTime) -> Result<(), EscrowStoreError> {
    if time > MAX_STORED_TIME {
        return Err(invalid(format!("{field} is past year 9999")));
    }
    Ok(())
}

/// Sequence numbers and epochs are BIGINT in PostgreSQL.
pub(super) fn check_u63(field: &str, value: u64) -> Result<(), EscrowStoreError> {
    if i64::try_from(value).is_err() {
        return Err(invalid(format!("{field} is above 2^63-1")));
    }
    Ok(())
}

fn check_json(field: &str, value: &Value) -> Result<(), EscrowStoreError> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map
                .iter()
                .any(|(key, item)| key.contains('\0') || has_nul(item)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    // JSONB cannot hold U+0000.
    if has_nul(value) {
        return Err(invalid(format!("{field} contains a NUL character")));
    }
    let size = serde_json::to_vec(value)
        .map_err(|error| invalid(format!("{field}: {error}")))?
        .len();
    if size > MAX_JSON_BYTES {
        return Err(invalid(format!(
            "{field} is larger than {MAX_JSON_BYTES} bytes"
        )));
    }
    Ok(())
}

pub(super) fn check_deposit(deposit: &StoredDeposit) -> Result<(), EscrowStoreError> {
    let record = &deposit.record;
    check_escrow_id(&record.escrow_id)?;
    check_text("policy version", &record.policy_version)?;
    check_time("created_at", record.created_at)?;
    check_time("expires_at", record.expires_at)?;
    if record.revoked_at.is_some()
        || record.revoked_by.is_some()
        || record.revoked_reason.is_some()
        || record.superseded_by.is_some()
        || record.unlocks_used != 0
    {
        return Err(invalid(
            "a new deposit is not revoked, superseded or unlocked yet",
        ));
    }
    check_json("sealed package", &deposit.sealed_package)?;
    check_json("metadata", &deposit.metadata)
}

pub(super) fn check_revocation(revocation: &Revocation) -> Result<(), EscrowStoreError> {
    check_time("revoked_at", revocation.at)?;
    check_text("revoke actor", &revocation.actor)?;
    check_text("revoke reason", &revocation.reason)
}

pub(super) fn check_new_lease(lease: &LeaseRecord) -> Result<(), EscrowStoreError> {
    check_escrow_id(&lease.escrow_id)?;
    check_u63("lease epoch", lease.id.epoch)?;
    if lease.id.epoch == 0 {
        return Err(invalid("lease epochs start at 1"));
    }
    check_time("issued_at", lease.issued_at)?;
    check_time("expires_at", lease.expires_at)?;
    check_json("evidence", &lease.evidence)?;
    if lease.released_at.is_some() || lease.release_reason.is_some() {
        return Err(invalid("a lease is recorded when issued, before it ends"));
    }
    Ok(())
}

pub(super) fn check_audit(entry: &AuditIndexEntry) -> Result<(), EscrowStoreError> {
    check_u63("audit seq", entry.seq)?;
    check_escrow_id(&entry.escrow_id)?;
    check_text("audit actor", &entry.actor)?;
    check_time("audit time", entry.at)?;
    if let Some(lease) = entry.lease_id {
        check_u63("audit lease epoch", lease.epoch)?;
    }
    Ok(())
}

// ---- text forms shared by both backends ----

pub(super) fn corrupt(what: impl Into<String>) -> EscrowStoreError {
    EscrowStoreError::Corrupt(what.into())
}

pub(super) fn parse_key<K: std::str::FromStr>(
    field: &str,
    text: &str,
) -> Result<K, EscrowStoreError> {
    text.parse()
        .map_err(|_| corrupt(format!("{field} {text:?} is not a key")))
}

pub(super) fn parse_digest(field: &str, text: &str) -> Result<[u8; 32], EscrowStoreError> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest)
        .map_err(|_| corrupt(format!("{field} {text:?} is not a 32-byte hex digest")))?;
    Ok(digest)
}

pub(super) fn parse_stored_lease_id(text: &str) -> Result<LeaseId, EscrowStoreError> {
    parse_lease_id(text).map_err(|_| corrupt(format!("stored lease id {text:?} is malformed")))
}

/// An audit kind's stored text is its wire `type` string.
pub(super) fn parse_audit_kind(text: &str) -> Result<AuditKind, EscrowStoreError> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|_| corrupt(format!("unknown audit kind {text:?}")))
}

pub(super) fn parse_reasons(value: Value) -> Result<Vec<RejectReason>, EscrowStoreError> {
    serde_json::from_value(value).map_err(|error| corrupt(format!("lease reasons: {error}")))
}

pub(super) fn reasons_json(reasons: &[RejectReason]) -> Value {
    Value::Array(
        reasons
            .iter()
            .map(|reason| Value::String(reason.as_str().to_owned()))
            .collect(),
    )
}

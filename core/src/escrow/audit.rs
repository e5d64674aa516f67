//! Audit records: one per deposit, unlock decision, revoke, release, renewal
//! and expiry, appended by the adapter before it answers.
//!
//! JSON shape: the original's event `type` names (§2.8) and camelCase fields,
//! `{type, escrowId, leaseId, relayKey, actor, reasons, evidence, reason,
//! supersedes, timestamp}`; keys are hex, the lease id is
//! `lease-<relay hex>-<epoch>`, times are milliseconds since the epoch, and
//! absent optional fields are omitted. `actor` is the requester's or owner's
//! peer id in hex, the operator's actor string for revokes, and `lease-vault`
//! for expiries (the original's actor for escrow-side lease endings).

use serde::{Deserialize, Serialize};

use crate::escrow::text;
use crate::escrow::{Evidence, RejectReason};
use crate::ids::RelayKey;
use crate::lease::LeaseId;
use crate::time::UnixTime;

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A deposit was stored (and may have superseded an older one).
    Deposit,
    /// A key was released under a new lease.
    UnlockIssued,
    /// The holder of an active lease fetched its key again.
    UnlockRefetched,
    /// An unlock, re-fetch or renewal was refused; `reasons` says why.
    UnlockRejected,
    /// A deposit was revoked (ending its lease, named in `lease_id`, if any).
    DepositRevoked,
    /// The holder gave a lease back.
    LeaseReleased,
    /// A lease reached its TTL.
    LeaseExpired,
    /// A lease was extended by the policy's TTL.
    LeaseRenewed,
}

impl AuditKind {
    /// The event `type` string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Deposit => "deposit",
            AuditKind::UnlockIssued => "unlock-issued",
            AuditKind::UnlockRefetched => "unlock-refetched",
            AuditKind::UnlockRejected => "unlock-rejected",
            AuditKind::DepositRevoked => "deposit-revoked",
            AuditKind::LeaseReleased => "lease-released",
            AuditKind::LeaseExpired => "lease-expired",
            AuditKind::LeaseRenewed => "lease-renewed",
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: AuditKind,
    /// The deposit concerned.
    pub escrow_id: String,
    /// The lease concerned, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text::lease_id"
    )]
    pub lease_id: Option<LeaseId>,
    /// The relay.
    #[serde(with = "text")]
    pub relay_key: RelayKey,
    /// Who caused it.
    pub actor: String,
    /// Why an unlock was refused (empty otherwise).
    #[serde(default)]
    pub reasons: Vec<RejectReason>,
    /// The evidence an unlock decision was made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Free-text reason: the revoke's reason, or the release's end reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a deposit: the escrow id of the deposit it superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// When, by the escrow's clock.
    #[serde(rename = "timestamp")]
    pub at: UnixTime,
}

impl AuditRecord {
    /// A record with no lease, reasons, evidence or free text.
    pub(super) fn new(
        kind: AuditKind,
        escrow_id: &str,
        relay_key: RelayKey,
        actor: String,
        at: UnixTime,
    ) -> Self {
        Self {
            kind,
            escrow_id: escrow_id.to_owned(),
            lease_id: None,
            relay_key,
            actor,
            reasons: Vec::new(),
            evidence: None,
            reason: None,
            supersedes: None,
            at,
        }
    }
}

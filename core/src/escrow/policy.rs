//! The automated unlock policy: a pure function of the policy, one deposit,
//! one request (with its evidence) and the escrow's wall-clock time.
//!
//! Contract:
//! - [`evaluate`] is [`Decision::Allow`] exactly when [`reject_reasons`] is
//!   empty. Every failing check contributes its [`RejectReason`], in the
//!   original's order (`record-revoked`, `record-expired`,
//!   `registration-flag-missing`, `peers-still-healthy`,
//!   `peer-timeout-not-reached`, `mirror-too-stale`, `mirror-window-expired`)
//!   followed by the checks the original lacked. The list is sorted and free
//!   of duplicates (the enum's order is the report order).
//! - **Missing evidence never passes.** The original skipped a check whose
//!   evidence field was absent, so `{registration:{escrowEnabled:true}}` alone
//!   unlocked. Here a check whose field is absent (or was malformed on the
//!   wire) *fails* with its own reason, and `evidence-missing` is added once.
//!   Failing rather than only reporting `evidence-missing` keeps the policy
//!   monotonic: removing any evidence field can only add reasons.
//! - `last_healthy_at: None` is missing evidence, not "never healthy": if it
//!   passed, omitting a recent `last_healthy_at` would turn a rejection into
//!   an unlock. A gateway that never saw a worker of the relay healthy reports
//!   the moment it began observing the relay instead (a true lower bound).
//! - Evidence timestamps are untrusted: a time in the escrow's future is
//!   clamped to the escrow's `now` ([`UnixTime::clamp_untrusted`], zero skew),
//!   so a wrong clock can make a peer look *more* recently healthy (which
//!   rejects) but never make the mirror look fresher than "now".
//! - The requester must be in the deposit's permitted set, and a fresh unlock
//!   must fit the deposit's budget (`unlocks_used < max_unlocks_per_lease`).
//!   Renewals ([`renewal_reasons`]) skip the budget: no key is re-released.
//!
//! The JSON views ([`PolicyConfig`] for `GET /policy`, [`Evidence`] in the
//! original's nested shape) use the original's camelCase field names, one unit
//! (milliseconds) per field.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::escrow::DepositRecord;
use crate::ids::{PeerId, RelayKey};
use crate::time::{UnixTime, duration_millis};

/// The original's policy version string.
pub const DEFAULT_POLICY_VERSION: &str = "2024-09-autobase-escrow-v1";

/// The escrow's one global policy (the original had no per-relay overrides).
///
/// Serialises as the original's `GET /policy` object:
/// `{version, leaseTtlMs, maxDepositTtlMs, peerLivenessTimeoutMs,
/// mirrorFreshnessMaxLagMs, mirrorFreshnessWindowMs, requireRegistrationFlag,
/// maxUnlocksPerLease}`; absent fields deserialise to the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "PolicyJson", from = "PolicyJson")]
pub struct PolicyConfig {
    /// Version string a deposit must name to be accepted.
    pub version: String,
    /// Lifetime of a lease, and the extension a renewal grants.
    pub lease_ttl: Duration,
    /// Longest a deposit may stay unlockable.
    pub max_deposit_ttl: Duration,
    /// How long no worker may have been healthy before an unlock.
    pub peer_liveness_timeout: Duration,
    /// Largest mirror lag (time behind the workers) an unlock accepts.
    pub mirror_freshness_max_lag: Duration,
    /// Longest time since the mirror was last fully synced that an unlock accepts.
    pub mirror_freshness_window: Duration,
    /// Whether the relay's registration must carry the escrow flag.
    pub require_registration_flag: bool,
    /// How many times one deposit's key may be released (enforced here; the original did not).
    pub max_unlocks_per_lease: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            version: DEFAULT_POLICY_VERSION.to_owned(),
            lease_ttl: Duration::from_millis(600_000),
            max_deposit_ttl: Duration::from_millis(86_400_000),
            peer_liveness_timeout: Duration::from_millis(45_000),
            mirror_freshness_max_lag: Duration::from_millis(15_000),
            mirror_freshness_window: Duration::from_millis(60_000),
            require_registration_flag: true,
            max_unlocks_per_lease: 1,
        }
    }
}

/// The wire form of [`PolicyConfig`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PolicyJson {
    version: String,
    lease_ttl_ms: u64,
    max_deposit_ttl_ms: u64,
    peer_liveness_timeout_ms: u64,
    mirror_freshness_max_lag_ms: u64,
    mirror_freshness_window_ms: u64,
    require_registration_flag: bool,
    max_unlocks_per_lease: u32,
}

impl Default for PolicyJson {
    fn default() -> Self {
        PolicyConfig::default().into()
    }
}

impl From<PolicyConfig> for PolicyJson {
    fn from(policy: PolicyConfig) -> Self {
        Self {
            version: policy.version,
            lease_ttl_ms: duration_millis(policy.lease_ttl),
            max_deposit_ttl_ms: duration_millis(policy.max_deposit_ttl),
            peer_liveness_timeout_ms: duration_millis(policy.peer_liveness_timeout),
            mirror_freshness_max_lag_ms: duration_millis(policy.mirror_freshness_max_lag),
            mirror_freshness_window_ms: duration_millis(policy.mirror_freshness_window),
            require_registration_flag: policy.require_registration_flag,
            max_unlocks_per_lease: policy.max_unlocks_per_lease,
        }
    }
}

impl From<PolicyJson> for PolicyConfig {
    fn from(json: PolicyJson) -> Self {
        Self {
            version: json.version,
            lease_ttl: Duration::from_millis(json.lease_ttl_ms),
            max_deposit_ttl: Duration::from_millis(json.max_deposit_ttl_ms),
            peer_liveness_timeout: Duration::from_millis(json.peer_liveness_timeout_ms),
            mirror_freshness_max_lag: Duration::from_millis(json.mirror_freshness_max_lag_ms),
            mirror_freshness_window: Duration::from_millis(json.mirror_freshness_window_ms),
            require_registration_flag: json.require_registration_flag,
            max_unlocks_per_lease: json.max_unlocks_per_lease,
        }
    }
}

/// What the gateway knows about a relay when it asks for its key. Built by
/// the gateway core from its own health and mirror state, never typed in by
/// an operator. `None` means the field is absent (or was malformed on the
/// wire): see the module docs for how that is judged.
///
/// JSON: `{registration:{escrowEnabled}, peerHealth:{healthyCount,
/// lastHealthyAt}, mirror:{lagMs, lagBlocks, lastSyncedAt}}`. Deserialising
/// is lenient per field: a field of the wrong type, negative, fractional or
/// out of range becomes `None` instead of failing the whole request, so it
/// is judged as missing evidence. Absent fields are omitted when serialising.
/// Deserialising needs a self-describing format (JSON), which is what the
/// escrow API and the audit log use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The relay's registration carries the escrow flag.
    pub escrow_enabled: Option<bool>,
    /// How many workers of the relay are healthy now.
    pub healthy_peer_count: Option<u32>,
    /// When a worker of the relay was last healthy (or when the gateway began observing).
    pub last_healthy_at: Option<UnixTime>,
    /// How many blocks the mirror is behind (informational: no check uses it).
    pub mirror_lag_blocks: Option<u64>,
    /// How long the mirror has been behind the workers, in milliseconds.
    pub mirror_lag_ms: Option<u64>,
    /// When every mirrored core of the relay was last caught up.
    pub mirror_last_synced_at: Option<UnixTime>,
}

impl Evidence {
    /// Reads evidence from a JSON value in the original's nested shape,
    /// turning every absent or malformed field into `None`.
    #[must_use]
    pub fn from_json(value: &Value) -> Self {
        let field = |group: &str, name: &str| value.get(group).and_then(|g| g.get(name));
        Self {
            escrow_enabled: field("registration", "escrowEnabled").and_then(Value::as_bool),
            healthy_peer_count: field("peerHealth", "healthyCount")
                .and_then(exact_u64)
                .and_then(|n| u32::try_from(n).ok()),
            last_healthy_at: field("peerHealth", "lastHealthyAt")
                .and_then(exact_u64)
                .map(UnixTime),
            mirror_lag_blocks: field("mirror", "lagBlocks").and_then(exact_u64),
            mirror_lag_ms: field("mirror", "lagMs").and_then(exact_u64),
            mirror_last_synced_at: field("mirror", "lastSyncedAt")
                .and_then(exact_u64)
                .map(UnixTime),
        }
    }
}

/// A non-negative whole number; JavaScript senders may write `1000.0`.
fn exact_u64(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    // 2^53: the largest range where every f64 integer is exact.
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    let float = value.as_f64()?;
    let whole = (0.0..=MAX_EXACT).contains(&float) && float.fract() == 0.0;
    // The cast is exact: `float` is a whole number within 0..=2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    whole.then_some(float as u64)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EvidenceJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    registration: Option<RegistrationJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_health: Option<PeerHealthJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror: Option<MirrorJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationJson {
    escrow_enabled: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PeerHealthJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_healthy_at: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MirrorJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_blocks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_synced_at: Option<u64>,
}

impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let registration = self.escrow_enabled.is_some().then_some(RegistrationJson {
            escrow_enabled: self.escrow_enabled,
        });
        let peer_health = (self.healthy_peer_count.is_some() || self.last_healthy_at.is_some())
            .then(|| PeerHealthJson {
                healthy_count: self.healthy_peer_count,
                last_healthy_at: self.last_healthy_at.map(UnixTime::as_millis),
            });
        let mirror = (self.mirror_lag_ms.is_some()
            || self.mirror_lag_blocks.is_some()
            || self.mirror_last_synced_at.is_some())
        .then(|| MirrorJson {
            lag_ms: self.mirror_lag_ms,
            lag_blocks: self.mirror_lag_blocks,
            last_synced_at: self.mirror_last_synced_at.map(UnixTime::as_millis),
        });
        EvidenceJson {
            registration,
            peer_health,
            mirror,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Evidence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any JSON value is accepted; what is not evidence is judged as missing.
        let value = Value::deserialize(deserializer)?;
        Ok(Self::from_json(&value))
    }
}

/// A request to release (or re-fetch, or renew) a relay's gateway writer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockRequest {
    /// The relay whose key is asked for.
    pub relay_key: RelayKey,
    /// The authenticated identity asking (the gateway).
    pub requester: PeerId,
    /// The gateway's evidence; `None` is judged as every field missing.
    pub evidence: Option<Evidence>,
}

/// Why an unlock was refused. The declaration order is the report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RejectReason {
    // The original's checks, in its order.
    /// The deposit was revoked.
    RecordRevoked,
    /// The deposit is past its expiry.
    RecordExpired,
    /// The relay's registration lacks the escrow flag (or did not say).
    RegistrationFlagMissing,
    /// A worker of the relay is healthy (or the count is missing).
    PeersStillHealthy,
    /// A worker was healthy too recently (or the time is missing).
    PeerTimeoutNotReached,
    /// The mirror lags too far behind (or the lag is missing).
    MirrorTooStale,
    /// The mirror was last synced too long ago (or the time is missing).
    MirrorWindowExpired,
    // The checks the original lacked.
    /// The requester is not in the deposit's permitted set.
    RequesterNotPermitted,
    /// The deposit's key was already released `max_unlocks_per_lease` times.
    UnlockBudgetExhausted,
    /// A field a check needs was absent or malformed.
    EvidenceMissing,
    /// A newer deposit of the relay replaced this one (key rotation).
    RecordSuperseded,
    /// The request names a different relay than the deposit.
    RelayMismatch,
    /// The relay's key is leased and this request cannot re-fetch that lease
    /// (another requester holds it, or it releases an older deposit).
    LeaseHeldByAnother,
}

impl RejectReason {
    /// Every reason, in report order (dashboards export each one from the start).
    pub const ALL: [RejectReason; 13] = [
        RejectReason::RecordRevoked,
        RejectReason::RecordExpired,
        RejectReason::RegistrationFlagMissing,
        RejectReason::PeersStillHealthy,
        RejectReason::PeerTimeoutNotReached,
        RejectReason::MirrorTooStale,
        RejectReason::MirrorWindowExpired,
        RejectReason::RequesterNotPermitted,
        RejectReason::UnlockBudgetExhausted,
        RejectReason::EvidenceMissing,
        RejectReason::RecordSuperseded,
        RejectReason::RelayMismatch,
        RejectReason::LeaseHeldByAnother,
    ];

    /// The wire string (the original's where it had one).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::RecordRevoked => "record-revoked",
            RejectReason::RecordExpired => "record-expired",
            RejectReason::RegistrationFlagMissing => "registration-flag-missing",
            RejectReason::PeersStillHealthy => "peers-still-healthy",
            RejectReason::PeerTimeoutNotReached => "peer-timeout-not-reached",
            RejectReason::MirrorTooStale => "mirror-too-stale",
            RejectReason::MirrorWindowExpired => "mirror-window-expired",
            RejectReason::RequesterNotPermitted => "requester-not-permitted",
            RejectReason::UnlockBudgetExhausted => "unlock-budget-exhausted",
            RejectReason::EvidenceMissing => "evidence-missing",
            RejectReason::RecordSuperseded => "record-superseded",
            RejectReason::RelayMismatch => "relay-mismatch",
            RejectReason::LeaseHeldByAnother => "lease-held-by-another",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every check passed.
    Allow,
    /// At least one check failed; the reasons in report order.
    Reject(Vec<RejectReason>),
}

impl Decision {
    /// `Allow` for an empty list, else `Reject` with it.
    #[must_use]
    pub fn from_reasons(reasons: Vec<RejectReason>) -> Self {
        if reasons.is_empty() {
            Decision::Allow
        } else {
            Decision::Reject(reasons)
        }
    }

    /// The reasons (empty for `Allow`).
    #[must_use]
    pub fn reasons(&self) -> &[RejectReason] {
        match self {
            Decision::Allow => &[],
            Decision::Reject(reasons) => reasons,
        }
    }
}

/// Whether a fresh release counts against the deposit's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Enforce,
    Skip,
}

/// Judges a fresh unlock of `deposit` at the escrow's wall-clock `now`.
#[must_use]
pub fn evaluate(
    policy: &PolicyConfig,
    deposit: &DepositRecord,
    request: &UnlockRequest,
    now: UnixTime,
) -> Decision {
    Decision::from_reasons(reject_reasons(policy, deposit, request, now))
}

/// Every reason a fresh unlock fails, in report order (empty: allowed).
#[must_use]
pub fn reject_reasons(
    policy: &PolicyConfig,
    deposit: &DepositRecord,
    request: &UnlockRequest,
    now: UnixTime,
) -> Vec<RejectReason> {
    collect(policy, deposit, request, Budget::Enforce, now)
}

/// Every reason a renewal or re-fetch of an already released key fails: the
/// same checks as [`reject_reasons`] without the budget, since no key is
/// released again.
#[must_use]
pub fn renewal_reasons(
    policy: &PolicyConfig,
    deposit: &DepositRecord,
    request: &UnlockRequest,
    now: UnixTime,
) -> Vec<RejectReason> {
    collect(policy, deposit, request, Budget::Skip, now)
}

fn collect(
    policy: &PolicyConfig,
    deposit: &DepositRecord,
    request: &UnlockRequest,
    budget: Budget,
    now: UnixTime,
) -> Vec<RejectReason> {
    const NO_EVIDENCE: Evidence = Evidence {
        escrow_enabled: None,
        healthy_peer_count: None,
        last_healthy_at: None,
        mirror_lag_blocks: None,
        mirror_lag_ms: None,
        mirror_last_synced_at: None,
    };
    let evidence = request.evidence.as_ref().unwrap_or(&NO_EVIDENCE);
    // A peer's clock may run ahead of ours: never trust a time past our `now`.
    let trusted = |at: UnixTime| at.clamp_untrusted(now, Duration::ZERO);
    let mut reasons = Vec::new();
    let mut check = |failed: bool, reason: RejectReason| {
        if failed {
            reasons.push(reason);
        }
    };

    check(deposit.revoked_at.is_some(), RejectReason::RecordRevoked);
    // At its expiry instant the deposit is expired (fail closed at the boundary).
    check(deposit.expires_at <= now, RejectReason::RecordExpired);
    check(
        policy.require_registration_flag && evidence.escrow_enabled != Some(true),
        RejectReason::RegistrationFlagMissing,
    );
    // Each evidence check below fails when its field is absent: see the module docs.
    check(
        evidence.healthy_peer_count.is_none_or(|count| count > 0),
        RejectReason::PeersStillHealthy,
    );
    check(
        evidence
            .last_healthy_at
            .is_none_or(|at| now.saturating_since(trusted(at)) < policy.peer_liveness_timeout),
        RejectReason::PeerTimeoutNotReached,
    );
    check(
        evidence
            .mirror_lag_ms
            .is_none_or(|lag| Duration::from_millis(lag) > policy.mirror_freshness_max_lag),
        RejectReason::MirrorTooStale,
    );
    check(
        evidence
            .mirror_last_synced_at
            .is_none_or(|at| now.saturating_since(trusted(at)) > policy.mirror_freshness_window),
        RejectReason::MirrorWindowExpired,
    );
    check(
        !deposit.permitted_requesters.contains(&request.requester),
        RejectReason::RequesterNotPermitted,
    );
    check(
        budget == Budget::Enforce && deposit.unlocks_used >= policy.max_unlocks_per_lease,
        RejectReason::UnlockBudgetExhausted,
    );
    let missing = evidence.healthy_peer_count.is_none()
        || evidence.last_healthy_at.is_none()
        || evidence.mirror_lag_ms.is_none()
        || evidence.mirror_last_synced_at.is_none();
    check(missing, RejectReason::EvidenceMissing);
    check(
        deposit.superseded_by.is_some(),
        RejectReason::RecordSuperseded,
    );
    check(
        deposit.relay_key != request.relay_key,
        RejectReason::RelayMismatch,
    );
    reasons
}

#[cfg(test)]
mod tests;

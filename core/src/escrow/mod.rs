//! The escrow service's core: deposits of sealed gateway writer keys, the
//! automated unlock policy, and the leases through which a key is released.
//!
//! Contract:
//! - **A relay's newest deposit is its current one.** Depositing again (key
//!   rotation) marks the previous unrevoked deposit `superseded_by`; only the
//!   current deposit can be unlocked. (The original's `UNIQUE relay_key` made
//!   every rotation fail.)
//! - **Unlocks are decided by a pure policy** ([`evaluate`]): missing evidence
//!   rejects, the requester must be permitted by the deposit, and a deposit's
//!   key is released at most `max_unlocks_per_lease` times. Re-fetching the
//!   lease one already holds and renewing it re-check the policy but not the
//!   budget.
//! - **Audit before answer, fail closed.** An unlock is two-phase:
//!   [`Escrow::plan_unlock`] decides without changing anything and hands the
//!   adapter the [`AuditRecord`] to append; only once that append succeeded
//!   does the adapter call [`Escrow::commit_unlock`], which applies the plan
//!   if nothing changed since (else [`EscrowError::StalePlan`]). Every other
//!   state change (deposit, revoke, release, renewal, expiry) emits its audit
//!   record as [`EscrowEvent::Audit`] from the input that caused it.
//! - **One lease per relay**, from [`crate::lease::LeaseTable`]: generational
//!   ids, expiry at TTL enforced by the table's timer, revoke ends leases.
//!   [`EscrowEvent::LeaseEnded`] tells the adapter to drop anything it keeps
//!   for the lease.
//! - The core never sees key material: the adapter decrypts and validates the
//!   sealed package before [`Escrow::handle_deposit`] and seals the key to the
//!   gateway's session key after a successful commit.
//!
//! The drive loop (the single-mutation rule: after every input drain
//! [`Escrow::poll_event`], then re-arm the timer from [`Escrow::poll_timeout`]):
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::time::{Duration, Instant};
//! use hypergate_core::escrow::{
//!     DepositInput, Escrow, EscrowEvent, Evidence, PolicyConfig, UnlockOutcome, UnlockRequest,
//! };
//! use hypergate_core::ids::{PeerId, RelayKey};
//! use hypergate_core::lease::LeaseConfig;
//! use hypergate_core::time::UnixTime;
//!
//! // The adapter reads its clock and passes `start` in; the core never reads one.
//! // Run with a real clock in `tests/tests/drive_loops.rs`.
//! fn drive(start: Instant) -> Result<(), Box<dyn std::error::Error>> {
//!     let unix = UnixTime(1_700_000_000_000);
//!     let policy = PolicyConfig::default();
//!     let mut escrow = Escrow::new(policy.clone(), LeaseConfig::default(), start, unix);
//!     let (relay, worker, gateway) = (RelayKey([1; 32]), PeerId([2; 32]), PeerId([3; 32]));
//!
//!     // POST /escrow, after the adapter checked the sealed package.
//!     escrow.handle_deposit(DepositInput {
//!         escrow_id: "escrow_1".into(),
//!         relay_key: relay,
//!         owner: worker,
//!         permitted_requesters: BTreeSet::from([gateway]),
//!         requested_expires_at: None,
//!         policy_version: policy.version.clone(),
//!     }, start)?;
//!     let mut audit_log = Vec::new();
//!     while let Some(event) = escrow.poll_event() {
//!         if let EscrowEvent::Audit(record) = event {
//!             audit_log.push(serde_json::to_string(&record)?); // append before answering
//!         }
//!     }
//!
//!     // POST /escrow/unlock: plan, append the audit record, then commit.
//!     let now = start + Duration::from_secs(60);
//!     let evidence = Evidence {
//!         escrow_enabled: Some(true),
//!         healthy_peer_count: Some(0),
//!         last_healthy_at: Some(UnixTime(unix.0 - 10_000)),
//!         mirror_lag_blocks: Some(0),
//!         mirror_lag_ms: Some(0),
//!         mirror_last_synced_at: Some(UnixTime(unix.0 + 59_000)),
//!     };
//!     let request = UnlockRequest { relay_key: relay, requester: gateway, evidence: Some(evidence) };
//!     let plan = escrow.plan_unlock(&request, now)?;
//!     audit_log.push(serde_json::to_string(plan.audit())?); // if this fails: refuse, do not commit
//!     let UnlockOutcome::Issued(grant) = escrow.commit_unlock(plan, now)? else { unreachable!() };
//!     assert_eq!(grant.expires_at, now + policy.lease_ttl);
//!
//!     // Sleep until the one deadline, then feed it back.
//!     while let Some((deadline, _reason)) = escrow.poll_timeout() {
//!         escrow.handle_timeout(deadline);
//!         while let Some(event) = escrow.poll_event() {
//!             if let EscrowEvent::Audit(record) = event {
//!                 audit_log.push(serde_json::to_string(&record)?);
//!             }
//!         }
//!     }
//!     assert!(audit_log.last().unwrap().contains("\"type\":\"lease-expired\""));
//!     Ok(())
//! }
//! ```

use std::fmt::Display;
use std::str::FromStr;

use crate::ids::RelayKey;
use crate::lease::{LeaseError, LeaseId};

mod audit;
mod machine;
mod policy;

pub use audit::{AuditKind, AuditRecord};
pub use machine::{
    DepositInput, DepositRecord, Escrow, EscrowEvent, EscrowSnapshot, LeaseSnapshot, RelaySnapshot,
    RevokeTarget, SNAPSHOT_VERSION, UnlockAction, UnlockOutcome, UnlockPlan,
};
pub use policy::{
    DEFAULT_POLICY_VERSION, Decision, Evidence, PolicyConfig, RejectReason, UnlockRequest,
    evaluate, reject_reasons, renewal_reasons,
};

/// The longest escrow id accepted (the adapter's ids are `escrow_<uuid>`).
pub const MAX_ESCROW_ID_LEN: usize = 128;

/// Errors of the escrow core, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EscrowError {
    // The request or deposit is wrong (the caller's fault).
    /// The relay has no deposit (the original's `escrow-record-not-found`).
    #[error("escrow-record-not-found: relay {0} has no deposit")]
    RecordNotFound(RelayKey),
    /// A deposit with this escrow id exists already.
    #[error("duplicate escrow id {0:?}")]
    DuplicateEscrowId(String),
    /// The escrow id is empty or longer than [`MAX_ESCROW_ID_LEN`].
    #[error("escrow id must be 1..={MAX_ESCROW_ID_LEN} bytes")]
    InvalidEscrowId,
    /// A deposit nobody may unlock is refused rather than stored.
    #[error("a deposit needs at least one permitted requester")]
    NoPermittedRequesters,
    /// The depositor agreed to a different policy than the one this escrow runs.
    #[error("deposit names policy {got:?}, this escrow runs {expected:?}")]
    PolicyVersionMismatch {
        /// The escrow's policy version.
        expected: String,
        /// The deposit's.
        got: String,
    },
    /// The requested expiry is not in the future.
    #[error("the requested deposit expiry is not in the future")]
    DepositAlreadyExpired,
    /// The request names a different relay than the lease.
    #[error("relay-mismatch: the request is for relay {request}, the lease for {lease}")]
    RelayMismatch {
        /// The relay the request names.
        request: RelayKey,
        /// The lease.
        lease: LeaseId,
    },
    /// Only the lease's holder may renew or release it.
    #[error("{lease} is not held by the requester")]
    NotLeaseHolder {
        /// The lease.
        lease: LeaseId,
    },
    // The policy refused.
    /// The renewal was refused by the policy (the adapter answers 412 with the reasons).
    #[error("unlock-rejected:{}", join_reasons(.0))]
    Rejected(Vec<RejectReason>),
    // Stale or unknown input (a lease id from before, a plan overtaken by events).
    /// The state changed between plan and commit: plan again.
    #[error("the unlock plan is stale: plan again")]
    StalePlan,
    /// A stale or unknown lease id.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    // Persistence.
    /// A snapshot of another format version.
    #[error("escrow snapshot version {got} is not supported")]
    SnapshotVersion {
        /// The snapshot's version.
        got: u32,
    },
    /// A snapshot that contradicts itself.
    #[error("inconsistent escrow snapshot: {0}")]
    SnapshotInconsistent(String),
}

impl EscrowError {
    /// The short `{error}` code for HTTP answers.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            EscrowError::RecordNotFound(_) => "escrow-record-not-found",
            EscrowError::DuplicateEscrowId(_) => "duplicate-escrow-id",
            EscrowError::InvalidEscrowId => "invalid-escrow-id",
            EscrowError::NoPermittedRequesters => "no-permitted-requesters",
            EscrowError::PolicyVersionMismatch { .. } => "policy-version-mismatch",
            EscrowError::DepositAlreadyExpired => "deposit-already-expired",
            EscrowError::RelayMismatch { .. } => "relay-mismatch",
            EscrowError::NotLeaseHolder { .. } => "not-lease-holder",
            EscrowError::Rejected(_) => "unlock-rejected",
            EscrowError::StalePlan => "stale-plan",
            EscrowError::Lease(_) => "lease-not-active",
            EscrowError::SnapshotVersion { .. } | EscrowError::SnapshotInconsistent(_) => {
                "snapshot-invalid"
            }
        }
    }
}

fn join_reasons(reasons: &[RejectReason]) -> String {
    reasons
        .iter()
        .map(|reason| reason.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Keys and lease ids travel as text (hex, `lease-<hex>-<epoch>`), the form
/// operators see, in JSON and postcard alike.
mod text {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// A set of keys as a list of hex strings.
    pub(super) mod set {
        use std::collections::BTreeSet;

        use super::*;
        use serde::ser::SerializeSeq;

        pub(in crate::escrow) fn serialize<T: Display, S: Serializer>(
            values: &BTreeSet<T>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(values.len()))?;
            for value in values {
                seq.serialize_element(&value.to_string())?;
            }
            seq.end()
        }

        pub(in crate::escrow) fn deserialize<'de, T, D>(
            deserializer: D,
        ) -> Result<BTreeSet<T>, D::Error>
        where
            T: FromStr + Ord,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            Vec::<String>::deserialize(deserializer)?
                .iter()
                .map(|text| text.parse().map_err(serde::de::Error::custom))
                .collect()
        }
    }

    /// An optional lease id as `lease-<relay hex>-<epoch>` (the original's `leaseId` was a string).
    pub(super) mod lease_id {
        use super::*;

        pub(in crate::escrow) fn serialize<S: Serializer>(
            id: &Option<LeaseId>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => serializer.collect_str(id),
                None => serializer.serialize_none(),
            }
        }

        pub(in crate::escrow) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<LeaseId>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| parse_lease_id(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    pub(in crate::escrow) fn parse_lease_id(text: &str) -> Result<LeaseId, String> {
        text.parse::<LeaseId>().map_err(|error| error.to_string())
    }
}

// Compile-time check: runtimes move machines across threads, so the escrow is `Send`.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Escrow>();
};

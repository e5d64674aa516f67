//! [`Escrow`]: deposits, two-phase unlocks, renewals, releases, revokes and
//! lease expiry, with an audit record for each. See the module docs of
//! [`crate::escrow`] for the contract and the drive loop.
//!
//! Method groups: getters; inputs (`handle_*`, plus the `plan_unlock` /
//! `commit_unlock` pair); outputs (`poll_event`, `poll_timeout`); persistence
//! (`snapshot`, `restore`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::escrow::audit::{AuditKind, AuditRecord};
use crate::escrow::policy::{PolicyConfig, RejectReason, UnlockRequest};
use crate::escrow::{EscrowError, MAX_ESCROW_ID_LEN, reject_reasons, renewal_reasons, text};
use crate::ids::{PeerId, RelayKey};
use crate::lease::{
    EndReason, Lease, LeaseConfig, LeaseError, LeaseEvent, LeaseGrant, LeaseId, LeaseState,
    LeaseTable,
};
use crate::time::{UnixTime, duration_millis};

/// The snapshot format version [`Escrow::restore`] reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Leases are capped at this TTL so that `now + ttl` can never overflow an
/// `Instant`, whatever the operator configured.
const MAX_LEASE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The audit actor of escrow-side lease endings (the original's).
const EXPIRY_ACTOR: &str = "lease-vault";

/// A stored deposit of a relay's sealed gateway writer key (the sealed bytes
/// stay with the adapter, keyed by `escrow_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRecord {
    /// The deposit's id (the adapter's `escrow_<uuid>`).
    pub escrow_id: String,
    /// The relay whose key it holds.
    #[serde(with = "text")]
    pub relay_key: RelayKey,
    /// The depositing worker.
    #[serde(with = "text")]
    pub owner: PeerId,
    /// Who may unlock it (the gateway identities the owner trusts).
    #[serde(with = "text::set")]
    pub permitted_requesters: BTreeSet<PeerId>,
    /// The policy version the depositor agreed to.
    pub policy_version: String,
    /// When it was stored.
    pub created_at: UnixTime,
    /// When it stops being unlockable.
    pub expires_at: UnixTime,
    /// When it was revoked.
    pub revoked_at: Option<UnixTime>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// The newer deposit of the same relay that replaced it.
    pub superseded_by: Option<String>,
    /// How many times its key was released under a new lease.
    pub unlocks_used: u32,
}

/// A deposit, after the adapter validated the sealed package (it decrypts,
/// the key pair is consistent, the owner's signature holds, the relay matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositInput {
    /// The deposit's id; unique.
    pub escrow_id: String,
    /// The relay.
    pub relay_key: RelayKey,
    /// The depositing worker.
    pub owner: PeerId,
    /// Who may unlock it; must not be empty.
    pub permitted_requesters: BTreeSet<PeerId>,
    /// The expiry asked for; capped at `now + max_deposit_ttl`, which is also the default.
    pub requested_expires_at: Option<UnixTime>,
    /// Must equal the escrow's policy version.
    pub policy_version: String,
}

/// What [`Escrow::handle_revoke`] revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// Every unrevoked deposit of the relay.
    Relay(RelayKey),
    /// One deposit.
    EscrowId(String),
    /// Every unrevoked deposit of this owner (a compromised or retired worker).
    Owner(PeerId),
}

/// What a committed plan will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockAction {
    /// Release the key under a new lease with this id.
    Issue {
        /// The id the lease will get.
        lease: LeaseId,
    },
    /// The requester already holds this active lease of the deposit: hand it
    /// the same lease again (a restarted gateway re-fetching its key).
    Refetch(LeaseGrant),
    /// Refuse, for these reasons.
    Reject(Vec<RejectReason>),
}

/// A decided but not yet applied unlock. Only [`Escrow::plan_unlock`] makes
/// one; append [`UnlockPlan::audit`] to the audit log, then
/// [`Escrow::commit_unlock`] it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockPlan {
    request: UnlockRequest,
    escrow_id: String,
    action: UnlockAction,
    audit: AuditRecord,
    generation: u64,
}

impl UnlockPlan {
    /// The request it answers.
    #[must_use]
    pub fn request(&self) -> &UnlockRequest {
        &self.request
    }

    /// The deposit it concerns.
    #[must_use]
    pub fn escrow_id(&self) -> &str {
        &self.escrow_id
    }

    /// What committing it does.
    #[must_use]
    pub fn action(&self) -> &UnlockAction {
        &self.action
    }

    /// The record to append to the audit log before committing.
    #[must_use]
    pub fn audit(&self) -> &AuditRecord {
        &self.audit
    }

    /// The relay's state generation it was made at.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What a committed unlock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockOutcome {
    /// A new lease: seal the key to the requester's session key.
    Issued(LeaseGrant),
    /// The requester's existing lease, same id and expiry: seal the key again.
    Refetched(LeaseGrant),
    /// Refused: answer 412 with the reasons.
    Rejected(Vec<RejectReason>),
}

/// What the escrow reports; drained with [`Escrow::poll_event`].
// Events are few and drained at once: boxing the audit record would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscrowEvent {
    /// Append to the audit log before answering the input that caused it.
    Audit(AuditRecord),
    /// A lease ended: drop anything kept for it.
    LeaseEnded {
        /// The lease.
        id: LeaseId,
        /// Why.
        reason: EndReason,
    },
}

/// The persisted state: deposits, each relay's current deposit, its lease
/// epoch floor and its live lease (wall-clock expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowSnapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// Every deposit, in escrow id order.
    pub deposits: Vec<DepositRecord>,
    /// Every relay with a deposit, in relay order.
    pub relays: Vec<RelaySnapshot>,
}

/// One relay in an [`EscrowSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaySnapshot {
    /// The relay.
    #[serde(with = "text")]
    pub relay_key: RelayKey,
    /// Its current (newest) deposit.
    pub current_escrow_id: Option<String>,
    /// The highest lease epoch issued for it: restored as a floor so epochs never go back.
    pub lease_epoch: u64,
    /// Its lease that was still active when the snapshot was taken.
    pub live_lease: Option<LeaseSnapshot>,
}

/// A live lease in a [`RelaySnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSnapshot {
    /// Its epoch.
    pub epoch: u64,
    /// The deposit it releases.
    pub escrow_id: String,
    /// Who holds it.
    #[serde(with = "text")]
    pub holder: PeerId,
    /// When it expires, by the escrow's clock.
    pub expires_at: UnixTime,
}

#[derive(Debug, Clone, Default)]
struct RelayState {
    /// The newest deposit.
    current: Option<String>,
    /// Bumped by every change to the relay's deposits or lease: a plan made
    /// at another generation is stale.
    generation: u64,
}

/// The escrow service's core. See [`crate::escrow`] for the contract.
#[derive(Debug)]
pub struct Escrow {
    policy: PolicyConfig,
    anchor: (Instant, UnixTime),
    deposits: BTreeMap<String, DepositRecord>,
    relays: BTreeMap<RelayKey, RelayState>,
    leases: LeaseTable,
    events: VecDeque<EscrowEvent>,
}

impl Escrow {
    /// An escrow with no deposits. The policy's `lease_ttl` (capped at a
    /// year) overrides `lease_config.ttl`, and expiry warnings are turned off
    /// (`warning_before` zero): warning operators is the gateway's job, and
    /// the escrow should not wake up for nothing. `unix_now` is the
    /// wall-clock time at `now`; later wall-clock values are derived from
    /// this anchor.
    #[must_use]
    pub fn new(
        mut policy: PolicyConfig,
        lease_config: LeaseConfig,
        now: Instant,
        unix_now: UnixTime,
    ) -> Self {
        policy.lease_ttl = policy.lease_ttl.min(MAX_LEASE_TTL);
        let leases = LeaseTable::new(LeaseConfig {
            ttl: policy.lease_ttl,
            warning_before: Duration::ZERO,
            ..lease_config
        });
        Self {
            policy,
            anchor: (now, unix_now),
            deposits: BTreeMap::new(),
            relays: BTreeMap::new(),
            leases,
            events: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// The policy in force (for `GET /policy`).
    #[must_use]
    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }

    /// Wall-clock time at `now`, from the construction anchor.
    #[must_use]
    pub fn unix_time(&self, now: Instant) -> UnixTime {
        let (anchor_instant, anchor_unix) = self.anchor;
        UnixTime(anchor_unix.0.saturating_add(duration_millis(
            now.saturating_duration_since(anchor_instant),
        )))
    }

    /// A deposit by id.
    #[must_use]
    pub fn deposit(&self, escrow_id: &str) -> Option<&DepositRecord> {
        self.deposits.get(escrow_id)
    }

    /// The relay's current (newest) deposit.
    #[must_use]
    pub fn current_deposit(&self, relay: &RelayKey) -> Option<&DepositRecord> {
        self.relays
            .get(relay)
            .and_then(|state| state.current.as_ref())
            .and_then(|escrow_id| self.deposits.get(escrow_id))
    }

    /// Every deposit, in escrow id order.
    pub fn deposits(&self) -> impl Iterator<Item = &DepositRecord> {
        self.deposits.values()
    }

    /// Every usable lease at `now`, in relay order (for `GET /leases`).
    pub fn active_leases(&self, now: Instant) -> impl Iterator<Item = &Lease> {
        self.leases.active_leases(now)
    }

    /// The relay's usable lease at `now`.
    #[must_use]
    pub fn active_lease(&self, relay: &RelayKey, now: Instant) -> Option<&Lease> {
        self.leases.active(relay, now)
    }

    /// The relay's highest lease epoch so far (0: never leased). A worker
    /// that reconnects compares it with the epoch of its last rotation.
    #[must_use]
    pub fn lease_epoch(&self, relay: &RelayKey) -> u64 {
        self.leases.current_epoch(relay)
    }

    /// Recently ended leases, oldest first (bounded, see [`crate::lease::LEASE_HISTORY_LEN`]).
    pub fn lease_history(&self) -> impl Iterator<Item = &Lease> {
        self.leases.history()
    }

    // ---- inputs ----

    /// Stores a deposit; it becomes the relay's current one and supersedes
    /// the previous unrevoked one. Its expiry is the requested one capped at
    /// `now + max_deposit_ttl`.
    pub fn handle_deposit(
        &mut self,
        input: DepositInput,
        now: Instant,
    ) -> Result<DepositRecord, EscrowError> {
        let unix_now = self.unix_time(now);
        if input.escrow_id.is_empty() || input.escrow_id.len() > MAX_ESCROW_ID_LEN {
            return Err(EscrowError::InvalidEscrowId);
        }
        if self.deposits.contains_key(&input.escrow_id) {
            return Err(EscrowError::DuplicateEscrowId(input.escrow_id));
        }
        if input.permitted_requesters.is_empty() {
            return Err(EscrowError::NoPermittedRequesters);
        }
        if input.policy_version != self.policy.version {
            return Err(EscrowError::PolicyVersionMismatch {
                expected: self.policy.version.clone(),
                got: input.policy_version,
            });
        }
        let latest = unix_now.saturating_add(self.policy.max_deposit_ttl);
        let expires_at = input
            .requested_expires_at
            .map_or(latest, |asked| asked.min(latest));
        if expires_at <= unix_now {
            return Err(EscrowError::DepositAlreadyExpired);
        }

        let relay = input.relay_key;
        let previous = self
            .relays
            .get(&relay)
            .and_then(|state| state.current.clone());
        let mut supersedes = None;
        if let Some(old) = previous.and_then(|old| self.deposits.get_mut(&old)) {
            // A revoked deposit stays revoked; only a live one is superseded.
            if old.revoked_at.is_none() {
                old.superseded_by = Some(input.escrow_id.clone());
                supersedes = Some(old.escrow_id.clone());
            }
        }
        let record = DepositRecord {
            escrow_id: input.escrow_id.clone(),
            relay_key: relay,
            owner: input.owner,
            permitted_requesters: input.permitted_requesters,
            policy_version: input.policy_version,
            created_at: unix_now,
            expires_at,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            superseded_by: None,
            unlocks_used: 0,
        };
        self.deposits
            .insert(input.escrow_id.clone(), record.clone());
        let state = self.relays.entry(relay).or_default();
        state.current = Some(input.escrow_id);
        state.generation = state.generation.wrapping_add(1);

        let mut audit = AuditRecord::new(
            AuditKind::Deposit,
            &record.escrow_id,
            relay,
            record.owner.to_hex(),
            unix_now,
        );
        audit.supersedes = supersedes;
        self.events.push_back(EscrowEvent::Audit(audit));
        Ok(record)
    }

    /// Decides an unlock of the relay's current deposit without changing
    /// anything. A usable lease of that deposit held by the requester is a
    /// re-fetch (policy re-checked, budget not); any other usable lease of the
    /// relay rejects with `lease-held-by-another`.
    pub fn plan_unlock(
        &self,
        request: &UnlockRequest,
        now: Instant,
    ) -> Result<UnlockPlan, EscrowError> {
        let unix_now = self.unix_time(now);
        let relay = request.relay_key;
        let state = self
            .relays
            .get(&relay)
            .ok_or(EscrowError::RecordNotFound(relay))?;
        let deposit = state
            .current
            .as_ref()
            .and_then(|escrow_id| self.deposits.get(escrow_id))
            .ok_or(EscrowError::RecordNotFound(relay))?;

        let (action, lease_id) = match self.leases.active(&relay, now) {
            Some(lease)
                if lease.holder == request.requester && lease.escrow_id == deposit.escrow_id =>
            {
                let reasons = renewal_reasons(&self.policy, deposit, request, unix_now);
                let action = if reasons.is_empty() {
                    UnlockAction::Refetch(LeaseGrant {
                        id: lease.id,
                        escrow_id: lease.escrow_id.clone(),
                        holder: lease.holder,
                        expires_at: lease.expires_at,
                    })
                } else {
                    UnlockAction::Reject(reasons)
                };
                (action, Some(lease.id))
            }
            Some(_) => {
                let mut reasons = reject_reasons(&self.policy, deposit, request, unix_now);
                reasons.push(RejectReason::LeaseHeldByAnother);
                (UnlockAction::Reject(reasons), None)
            }
            None => {
                let reasons = reject_reasons(&self.policy, deposit, request, unix_now);
                if reasons.is_empty() {
                    let lease = LeaseId {
                        relay,
                        epoch: self.leases.current_epoch(&relay).saturating_add(1),
                    };
                    (UnlockAction::Issue { lease }, Some(lease))
                } else {
                    (UnlockAction::Reject(reasons), None)
                }
            }
        };

        let kind = match &action {
            UnlockAction::Issue { .. } => AuditKind::UnlockIssued,
            UnlockAction::Refetch(_) => AuditKind::UnlockRefetched,
            UnlockAction::Reject(_) => AuditKind::UnlockRejected,
        };
        let mut audit = AuditRecord::new(
            kind,
            &deposit.escrow_id,
            relay,
            request.requester.to_hex(),
            unix_now,
        );
        audit.lease_id = lease_id;
        audit.evidence = request.evidence.clone();
        if let UnlockAction::Reject(reasons) = &action {
            audit.reasons = reasons.clone();
        }
        Ok(UnlockPlan {
            request: request.clone(),
            escrow_id: deposit.escrow_id.clone(),
            action,
            audit,
            generation: state.generation,
        })
    }

    /// Applies a plan whose audit record was appended. A rejection changes
    /// nothing, so it is never stale: its answer matches the record already
    /// written. An issue or re-fetch is re-decided at `now` and applied only if
    /// the relay's state did not change and the decision is the same; else
    /// [`EscrowError::StalePlan`] (plan again).
    pub fn commit_unlock(
        &mut self,
        plan: UnlockPlan,
        now: Instant,
    ) -> Result<UnlockOutcome, EscrowError> {
        if let UnlockAction::Reject(reasons) = plan.action {
            return Ok(UnlockOutcome::Rejected(reasons));
        }
        let relay = plan.request.relay_key;
        let generation = self.relays.get(&relay).map(|state| state.generation);
        if generation != Some(plan.generation) {
            return Err(EscrowError::StalePlan);
        }
        // Time moved on since the plan: a lease may have run out, the deposit expired.
        let fresh = self
            .plan_unlock(&plan.request, now)
            .map_err(|_| EscrowError::StalePlan)?;
        if fresh.action != plan.action || fresh.escrow_id != plan.escrow_id {
            return Err(EscrowError::StalePlan);
        }
        match plan.action {
            UnlockAction::Issue { .. } => {
                // A lease that ran out but whose timer has not fired yet ends
                // (and is audited with its own deposit and time) before the
                // new one replaces it.
                self.leases.handle_timeout(now);
                self.drain_leases(None);
                let grant =
                    self.leases
                        .issue(relay, plan.request.requester, &plan.escrow_id, now)?;
                if let Some(deposit) = self.deposits.get_mut(&plan.escrow_id) {
                    deposit.unlocks_used = deposit.unlocks_used.saturating_add(1);
                }
                self.touch(relay);
                self.drain_leases(None);
                Ok(UnlockOutcome::Issued(grant))
            }
            UnlockAction::Refetch(grant) => Ok(UnlockOutcome::Refetched(grant)),
            UnlockAction::Reject(reasons) => Ok(UnlockOutcome::Rejected(reasons)),
        }
    }

    /// Extends the holder's active lease to `now + lease_ttl` if the policy
    /// still allows it on fresh evidence (budget not checked: no key is
    /// released again). A refusal is audited (`unlock-rejected` with the lease
    /// id) and returned as [`EscrowError::Rejected`]; the lease then runs out
    /// at its current expiry.
    pub fn handle_renew(
        &mut self,
        lease: LeaseId,
        request: UnlockRequest,
        now: Instant,
    ) -> Result<LeaseGrant, EscrowError> {
        let unix_now = self.unix_time(now);
        if request.relay_key != lease.relay {
            return Err(EscrowError::RelayMismatch {
                request: request.relay_key,
                lease,
            });
        }
        let (holder, escrow_id) = self.usable_lease(lease, now)?;
        if holder != request.requester {
            return Err(EscrowError::NotLeaseHolder { lease });
        }
        let deposit = self
            .deposits
            .get(&escrow_id)
            .ok_or(EscrowError::Lease(LeaseError::UnknownLease(lease)))?;
        let reasons = renewal_reasons(&self.policy, deposit, &request, unix_now);
        let mut audit = AuditRecord::new(
            AuditKind::LeaseRenewed,
            &escrow_id,
            lease.relay,
            request.requester.to_hex(),
            unix_now,
        );
        audit.lease_id = Some(lease);
        audit.evidence = request.evidence;
        if !reasons.is_empty() {
            audit.kind = AuditKind::UnlockRejected;
            audit.reasons = reasons.clone();
            self.events.push_back(EscrowEvent::Audit(audit));
            return Err(EscrowError::Rejected(reasons));
        }
        let expires_at = now + self.policy.lease_ttl;
        match self.leases.renew(lease, expires_at, now) {
            // Renewed twice at the same instant: already at the longest expiry.
            Ok(()) | Err(LeaseError::NotExtended(_)) => {}
            Err(error) => return Err(error.into()),
        }
        self.drain_leases(None);
        self.touch(lease.relay);
        self.events.push_back(EscrowEvent::Audit(audit));
        Ok(LeaseGrant {
            id: lease,
            escrow_id,
            holder,
            expires_at,
        })
    }

    /// The holder gave its lease back (peer healthy, resync complete, shutdown).
    pub fn handle_release(
        &mut self,
        lease: LeaseId,
        requester: PeerId,
        reason: EndReason,
        now: Instant,
    ) -> Result<(), EscrowError> {
        let (holder, _) = self.usable_lease(lease, now)?;
        if holder != requester {
            return Err(EscrowError::NotLeaseHolder { lease });
        }
        self.leases.end(lease, reason, now)?;
        self.drain_leases(Some(&requester.to_hex()));
        Ok(())
    }

    /// Revokes the target's unrevoked deposits and ends the active leases
    /// that release them ([`EndReason::Revoked`]); returns the escrow ids
    /// revoked now (already revoked deposits are left alone). Each revoked
    /// deposit gets one `deposit-revoked` record naming the lease it ended.
    pub fn handle_revoke(
        &mut self,
        target: RevokeTarget,
        actor: &str,
        reason: &str,
        now: Instant,
    ) -> Vec<String> {
        let unix_now = self.unix_time(now);
        let revoked: Vec<String> = self
            .deposits
            .values()
            .filter(|deposit| deposit.revoked_at.is_none())
            .filter(|deposit| match &target {
                RevokeTarget::Relay(relay) => deposit.relay_key == *relay,
                RevokeTarget::EscrowId(escrow_id) => deposit.escrow_id == *escrow_id,
                RevokeTarget::Owner(owner) => deposit.owner == *owner,
            })
            .map(|deposit| deposit.escrow_id.clone())
            .collect();
        for escrow_id in &revoked {
            let Some(deposit) = self.deposits.get_mut(escrow_id) else {
                continue; // collected from the map just above
            };
            deposit.revoked_at = Some(unix_now);
            deposit.revoked_by = Some(actor.to_owned());
            deposit.revoked_reason = Some(reason.to_owned());
            let relay = deposit.relay_key;
            let live = self
                .leases
                .current(&relay)
                .filter(|lease| lease.state == LeaseState::Active && lease.escrow_id == *escrow_id)
                .map(|lease| lease.id);
            let mut ended = None;
            if let Some(lease) = live {
                let end = EndReason::Revoked {
                    reason: reason.to_owned(),
                };
                // Cannot fail: the lease is the relay's current, active one.
                let _ = self.leases.end(lease, end, now);
                // A lease already past its expiry ends as expired, and is audited so.
                ended = self
                    .drain_leases(None)
                    .into_iter()
                    .find(|(_, why)| matches!(why, EndReason::Revoked { .. }))
                    .map(|(id, _)| id);
            }
            self.touch(relay);
            let mut audit = AuditRecord::new(
                AuditKind::DepositRevoked,
                escrow_id,
                relay,
                actor.to_owned(),
                unix_now,
            );
            audit.lease_id = ended;
            audit.reason = Some(reason.to_owned());
            self.events.push_back(EscrowEvent::Audit(audit));
        }
        revoked
    }

    /// Ends the leases whose TTL passed (deposit expiry needs no timer: it is
    /// checked whenever the policy is evaluated).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.leases.handle_timeout(now);
        self.drain_leases(None);
    }

    // ---- outputs ----

    /// The next event, in the order they happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EscrowEvent> {
        self.events.pop_front()
    }

    /// The next deadline and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        self.leases.poll_timeout()
    }

    // ---- persistence ----

    /// The state to persist after every change: deposits, each relay's
    /// current deposit, lease epoch and live lease. Persisting the epoch is
    /// what keeps lease ids from being reused after an escrow restart.
    #[must_use]
    pub fn snapshot(&self) -> EscrowSnapshot {
        let relays = self
            .relays
            .iter()
            .map(|(relay, state)| RelaySnapshot {
                relay_key: *relay,
                current_escrow_id: state.current.clone(),
                lease_epoch: self.leases.current_epoch(relay),
                live_lease: self
                    .leases
                    .current(relay)
                    .filter(|lease| lease.state == LeaseState::Active)
                    .map(|lease| LeaseSnapshot {
                        epoch: lease.id.epoch,
                        escrow_id: lease.escrow_id.clone(),
                        holder: lease.holder,
                        expires_at: self.unix_time(lease.expires_at),
                    }),
            })
            .collect();
        EscrowSnapshot {
            version: SNAPSHOT_VERSION,
            deposits: self.deposits.values().cloned().collect(),
            relays,
        }
    }

    /// Rebuilds an escrow from a snapshot. Epochs continue from the persisted
    /// floor; a live lease that has not yet expired by `unix_now` is active
    /// again with its wall-clock expiry (capped at one `lease_ttl` from now),
    /// so the relay still has one lease and its holder can re-fetch, renew or
    /// release it. One that expired while the escrow was down is ended now
    /// with its `lease-expired` record.
    pub fn restore(
        policy: PolicyConfig,
        lease_config: LeaseConfig,
        snapshot: EscrowSnapshot,
        now: Instant,
        unix_now: UnixTime,
    ) -> Result<Self, EscrowError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(EscrowError::SnapshotVersion {
                got: snapshot.version,
            });
        }
        let inconsistent = |what: String| EscrowError::SnapshotInconsistent(what);
        let mut escrow = Self::new(policy, lease_config, now, unix_now);
        for deposit in snapshot.deposits {
            if escrow.deposits.contains_key(&deposit.escrow_id) {
                return Err(inconsistent(format!("deposit {} twice", deposit.escrow_id)));
            }
            escrow.deposits.insert(deposit.escrow_id.clone(), deposit);
        }
        let deposit_of = |escrow: &Escrow, escrow_id: &str, relay: RelayKey| {
            escrow
                .deposits
                .get(escrow_id)
                .filter(|deposit| deposit.relay_key == relay)
                .is_some()
        };
        for relay in snapshot.relays {
            let key = relay.relay_key;
            if escrow.relays.contains_key(&key) {
                return Err(inconsistent(format!("relay {key} twice")));
            }
            if let Some(current) = &relay.current_escrow_id {
                if !deposit_of(&escrow, current, key) {
                    return Err(inconsistent(format!("relay {key}: no deposit {current}")));
                }
            }
            escrow.leases.restore_epoch(key, relay.lease_epoch);
            if let Some(lease) = relay.live_lease {
                if lease.epoch != relay.lease_epoch || !deposit_of(&escrow, &lease.escrow_id, key) {
                    return Err(inconsistent(format!("relay {key}: bad live lease")));
                }
                escrow.restore_lease(key, lease, now, unix_now)?;
            }
            escrow.relays.insert(
                key,
                RelayState {
                    current: relay.current_escrow_id,
                    generation: 0,
                },
            );
        }
        if let Some(orphan) = escrow
            .deposits
            .values()
            .find(|deposit| !escrow.relays.contains_key(&deposit.relay_key))
        {
            return Err(inconsistent(format!(
                "deposit {} has no relay entry",
                orphan.escrow_id
            )));
        }
        Ok(escrow)
    }

    // ---- internals ----

    fn restore_lease(
        &mut self,
        relay: RelayKey,
        lease: LeaseSnapshot,
        now: Instant,
        unix_now: UnixTime,
    ) -> Result<(), EscrowError> {
        let id = LeaseId {
            relay,
            epoch: lease.epoch,
        };
        if lease.expires_at <= unix_now {
            let mut audit = AuditRecord::new(
                AuditKind::LeaseExpired,
                &lease.escrow_id,
                relay,
                EXPIRY_ACTOR.into(),
                lease.expires_at,
            );
            audit.lease_id = Some(id);
            audit.reason = Some(EndReason::Expired.as_str().to_owned());
            self.events.push_back(EscrowEvent::Audit(audit));
            self.events.push_back(EscrowEvent::LeaseEnded {
                id,
                reason: EndReason::Expired,
            });
            return Ok(());
        }
        let remaining = lease
            .expires_at
            .saturating_since(unix_now)
            .min(self.policy.lease_ttl);
        // The table installs a lease with a given id and expiry only as the
        // answer to a request: that is exactly a re-installation.
        let _ = self.leases.request(relay, now);
        self.leases
            .handle_grant(
                LeaseGrant {
                    id,
                    escrow_id: lease.escrow_id,
                    holder: lease.holder,
                    expires_at: now + remaining,
                },
                now,
            )
            .map_err(|error| EscrowError::SnapshotInconsistent(error.to_string()))?;
        // The request/activation events are the gateway side's business.
        while self.leases.poll_event().is_some() {}
        Ok(())
    }

    /// The holder and deposit of `lease` if it is the relay's usable lease.
    fn usable_lease(&self, lease: LeaseId, now: Instant) -> Result<(PeerId, String), EscrowError> {
        self.leases.check_write(&lease.relay, lease.epoch, now)?;
        self.leases
            .current(&lease.relay)
            .map(|current| (current.holder, current.escrow_id.clone()))
            .ok_or(EscrowError::Lease(LeaseError::UnknownLease(lease)))
    }

    fn touch(&mut self, relay: RelayKey) {
        let state = self.relays.entry(relay).or_default();
        state.generation = state.generation.wrapping_add(1);
    }

    /// Turns the table's endings into events and audit records; returns them.
    /// `releaser` is the actor of a release; expiries are the vault's, and
    /// revocations are audited by the revoke itself.
    fn drain_leases(&mut self, releaser: Option<&str>) -> Vec<(LeaseId, EndReason)> {
        let mut ended = Vec::new();
        while let Some(event) = self.leases.poll_event() {
            let LeaseEvent::Ended { id, reason } = event else {
                continue; // activation, renewal and warnings concern the gateway side
            };
            let escrow_id = self
                .leases
                .current(&id.relay)
                .filter(|lease| lease.id == id)
                .map(|lease| lease.escrow_id.clone())
                .unwrap_or_default();
            let at = self
                .leases
                .current(&id.relay)
                .and_then(|lease| lease.ended_at);
            let at = at.map_or(self.anchor.1, |at| self.unix_time(at));
            let audit = match &reason {
                EndReason::Revoked { .. } => None,
                EndReason::Expired => Some((AuditKind::LeaseExpired, EXPIRY_ACTOR)),
                _ => Some((AuditKind::LeaseReleased, releaser.unwrap_or(EXPIRY_ACTOR))),
            };
            if let Some((kind, actor)) = audit {
                let mut record = AuditRecord::new(kind, &escrow_id, id.relay, actor.to_owned(), at);
                record.lease_id = Some(id);
                record.reason = Some(end_reason_text(&reason));
                self.events.push_back(EscrowEvent::Audit(record));
            }
            self.touch(id.relay);
            self.events.push_back(EscrowEvent::LeaseEnded {
                id,
                reason: reason.clone(),
            });
            ended.push((id, reason));
        }
        ended
    }
}

fn end_reason_text(reason: &EndReason) -> String {
    match reason {
        EndReason::Revoked { reason: why } | EndReason::Manual { reason: why } => {
            format!("{}:{why}", reason.as_str())
        }
        _ => reason.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests;

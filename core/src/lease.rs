//! Leases of a relay's gateway writer key, as both the escrow and the gateway
//! track them.
//!
//! Contract:
//! - **One lease per relay at a time.** A lease is named by a generational
//!   [`LeaseId`] `{relay, epoch}`; the epoch increases with every lease of a
//!   relay and is the write **fence**: a write carries the epoch it was made
//!   under and [`LeaseTable::check_write`] refuses any other epoch, any ended
//!   lease and any lease past its expiry.
//! - States: requested → active → released | expired | revoked, each end with
//!   an [`EndReason`]. Ended leases are kept in a bounded history.
//! - **Expiry is the table's own job.** A lease is unusable from its
//!   `expires_at` on, whether or not [`LeaseTable::handle_timeout`] has run
//!   yet, and the timeout ends it with [`EndReason::Expired`]. The original
//!   gateway kept using expired leases; this table cannot.
//! - An [`LeaseEvent::ExpiryWarning`] fires `warning_before` ahead of expiry
//!   (once per expiry time; a renewal re-arms it).
//! - The escrow side issues leases ([`LeaseTable::issue`]); the gateway side
//!   asks for one ([`LeaseTable::request`], at most one request in flight per
//!   relay, bounded by `request_timeout`) and installs what the escrow granted
//!   ([`LeaseTable::handle_grant`]).
//! - The table never holds key material. [`LeaseEvent::Ended`] is the
//!   adapter's signal to wipe the secret from its vault.
//! - Stale or unknown ids are errors ([`LeaseError`]), never panics.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::ids::{PeerId, RelayKey};
use crate::timer::TimerQueue;

/// How many ended leases the table remembers (for APIs and audits).
pub const LEASE_HISTORY_LEN: usize = 256;

/// A lease: the relay and its epoch. Epochs start at 1 and only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId {
    /// The relay whose gateway writer key is leased.
    pub relay: RelayKey,
    /// The lease's epoch (its fence number).
    pub epoch: u64,
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease-{}-{}", self.relay.to_hex(), self.epoch)
    }
}

/// Text that is not a lease id (`lease-<relay hex>-<epoch>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease id {0:?} is not lease-<relay hex>-<epoch>")]
pub struct LeaseIdParseError(pub String);

impl std::str::FromStr for LeaseId {
    type Err = LeaseIdParseError;

    /// Parses `lease-<relay hex>-<epoch>` as [`LeaseId`]'s `Display` writes it; other
    /// spellings of the same numbers (upper-case hex, `+5`, `05`) are accepted too — see
    /// [`LeaseId::parse_canonical`] for the strict form.
    fn from_str(text: &str) -> Result<LeaseId, LeaseIdParseError> {
        let malformed = || LeaseIdParseError(text.to_owned());
        let (relay, epoch) = text
            .strip_prefix("lease-")
            .and_then(|rest| rest.split_once('-'))
            .ok_or_else(malformed)?;
        Ok(LeaseId {
            relay: relay.parse().map_err(|_| malformed())?,
            epoch: epoch.parse().map_err(|_| malformed())?,
        })
    }
}

impl LeaseId {
    /// Parses only the one spelling `Display` writes, so each lease has exactly one
    /// id string (what stores and request bodies require).
    pub fn parse_canonical(text: &str) -> Result<LeaseId, LeaseIdParseError> {
        let id: LeaseId = text.parse()?;
        if id.to_string() == text {
            Ok(id)
        } else {
            Err(LeaseIdParseError(text.to_owned()))
        }
    }
}

/// Lease tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Lifetime of a lease issued by [`LeaseTable::issue`] (the escrow's `leaseTtlMs`).
    pub ttl: Duration,
    /// How long before expiry the warning fires.
    pub warning_before: Duration,
    /// How long a gateway request may stay unanswered before it counts as failed.
    pub request_timeout: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            warning_before: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseState {
    /// The gateway asked the escrow; no answer yet.
    Requested,
    /// Usable until `expires_at`.
    Active,
    /// Given back (peer healthy, resync complete, shutdown, operator).
    Released,
    /// Reached its TTL.
    Expired,
    /// Withdrawn by the depositor or an operator.
    Revoked,
}

impl LeaseState {
    /// The API/metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Requested => "requested",
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Revoked => "revoked",
        }
    }
}

/// Why a lease ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndReason {
    /// A worker of the relay is healthy again.
    PeerHealthy,
    /// A worker resynced the gateway's writes.
    WorkerResync,
    /// The TTL passed.
    Expired,
    /// The deposit was revoked.
    Revoked {
        /// Who or why, free text.
        reason: String,
    },
    /// The process is shutting down.
    Shutdown,
    /// An operator released it.
    Manual {
        /// Why, free text.
        reason: String,
    },
}

impl EndReason {
    /// The metrics/audit label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::PeerHealthy => "peer-healthy",
            EndReason::WorkerResync => "worker-resync",
            EndReason::Expired => "expired",
            EndReason::Revoked { .. } => "revoked",
            EndReason::Shutdown => "shutdown",
            EndReason::Manual { .. } => "manual",
        }
    }

    fn final_state(&self) -> LeaseState {
        match self {
            EndReason::Expired => LeaseState::Expired,
            EndReason::Revoked { .. } => LeaseState::Revoked,
            _ => LeaseState::Released,
        }
    }
}

/// A lease as the table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The escrow deposit it releases.
    pub escrow_id: String,
    /// The gateway identity holding it.
    pub holder: PeerId,
    /// When it became active.
    pub issued_at: Instant,
    /// When it stops being usable.
    pub expires_at: Instant,
    /// Current state.
    pub state: LeaseState,
    /// Why it ended, once it has.
    pub end_reason: Option<EndReason>,
    /// When it ended, once it has.
    pub ended_at: Option<Instant>,
}

impl Lease {
    /// Whether writes may use it at `now`.
    #[must_use]
    pub fn is_usable(&self, now: Instant) -> bool {
        self.state == LeaseState::Active && now < self.expires_at
    }
}

/// What the escrow hands out and the gateway installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease.
    pub id: LeaseId,
    /// The deposit it releases.
    pub escrow_id: String,
    /// Who holds it.
    pub holder: PeerId,
    /// When it expires.
    pub expires_at: Instant,
}

/// Result of a gateway's [`LeaseTable::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A request was started: ask the escrow ([`LeaseEvent::RequestNeeded`] was queued).
    Started,
    /// A request is already in flight: wait for it.
    InFlight,
    /// A usable lease exists already.
    Active(LeaseId),
}

/// What the table reports; drained with [`LeaseTable::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Gateway side: ask the escrow for a lease of `relay` (`renewing` an active one, if set).
    RequestNeeded {
        /// The relay.
        relay: RelayKey,
        /// The active lease to renew, if this is a renewal.
        renewing: Option<LeaseId>,
    },
    /// The request timed out or the escrow refused.
    RequestFailed {
        /// The relay.
        relay: RelayKey,
        /// Why.
        reason: String,
    },
    /// A lease became active.
    Activated {
        /// The lease.
        id: LeaseId,
        /// Its expiry.
        expires_at: Instant,
    },
    /// An active lease got a later expiry.
    Renewed {
        /// The lease.
        id: LeaseId,
        /// The new expiry.
        expires_at: Instant,
    },
    /// The lease expires in `remaining`.
    ExpiryWarning {
        /// The lease.
        id: LeaseId,
        /// Time left.
        remaining: Duration,
    },
    /// The lease ended: wipe its key material now.
    Ended {
        /// The lease.
        id: LeaseId,
        /// Why.
        reason: EndReason,
    },
}

/// Misuse and stale input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    // Stale or unknown input (a late answer, an old epoch).
    /// No lease of that id is known.
    #[error("{0} is not known")]
    UnknownLease(LeaseId),
    /// The id's epoch is not the relay's current one.
    #[error("{id} is stale: the relay's current epoch is {current}")]
    StaleEpoch {
        /// The stale id.
        id: LeaseId,
        /// The relay's current epoch.
        current: u64,
    },
    /// The lease ended or expired.
    #[error("{0} is no longer active")]
    NotActive(LeaseId),
    /// The relay has no usable lease.
    #[error("relay {0} has no active lease")]
    NoActiveLease(RelayKey),
    // Contract violations.
    /// The relay already has a usable lease (one per relay).
    #[error("relay already holds {0}")]
    AlreadyActive(LeaseId),
    /// A grant arrived for a relay that has no request in flight and no lease to renew.
    #[error("no lease request is in flight for relay {0}")]
    NotRequested(RelayKey),
    /// A renewal would shorten the lease.
    #[error("renewal of {0} does not extend it")]
    NotExtended(LeaseId),
    // Local limit.
    /// The relay's epoch counter is exhausted (only after restoring a corrupt epoch).
    #[error("relay {0} has used every lease epoch")]
    EpochExhausted(RelayKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LeaseTimer {
    RequestTimeout(RelayKey),
    Warn(RelayKey),
    Expire(RelayKey),
}

#[derive(Debug, Clone, Default)]
struct RelayLeases {
    /// The highest epoch ever issued or seen for the relay.
    epoch: u64,
    /// The current lease (active or just ended).
    current: Option<Lease>,
    /// A gateway request in flight, since when.
    requested_at: Option<Instant>,
    /// The lease the in-flight request renews, if it is a renewal.
    renewing: Option<LeaseId>,
}

/// The lease table. See the module docs for the contract.
#[derive(Debug)]
pub struct LeaseTable {
    config: LeaseConfig,
    relays: BTreeMap<RelayKey, RelayLeases>,
    history: VecDeque<Lease>,
    timers: TimerQueue<LeaseTimer>,
    events: VecDeque<LeaseEvent>,
    /// Fault injection for the simulation's negative tests: behave like the
    /// original gateway, which never expired its leases.
    #[cfg(feature = "fault-injection")]
    ignore_expiry: bool,
}

impl LeaseTable {
    /// An empty table.
    #[must_use]
    pub fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            relays: BTreeMap::new(),
            history: VecDeque::new(),
            timers: TimerQueue::new(),
            events: VecDeque::new(),
            #[cfg(feature = "fault-injection")]
            ignore_expiry: false,
        }
    }

    /// Breaks the table on purpose (tests only): leases never expire.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault_ignore_expiry(&mut self) {
        self.ignore_expiry = true;
    }

    fn usable(&self, lease: &Lease, now: Instant) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.ignore_expiry {
            return lease.state == LeaseState::Active;
        }
        lease.is_usable(now)
    }

    // ---- getters ----

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The relay's usable lease at `now`.
    #[must_use]
    pub fn active(&self, relay: &RelayKey, now: Instant) -> Option<&Lease> {
        self.relays
            .get(relay)
            .and_then(|leases| leases.current.as_ref())
            .filter(|lease| self.usable(lease, now))
    }

    /// The relay's current lease, usable or not (the latest one).
    #[must_use]
    pub fn current(&self, relay: &RelayKey) -> Option<&Lease> {
        self.relays
            .get(relay)
            .and_then(|leases| leases.current.as_ref())
    }

    /// The relay's highest epoch so far (0: never leased).
    #[must_use]
    pub fn current_epoch(&self, relay: &RelayKey) -> u64 {
        self.relays.get(relay).map_or(0, |leases| leases.epoch)
    }

    /// Whether a gateway request for `relay` is in flight.
    #[must_use]
    pub fn is_requested(&self, relay: &RelayKey) -> bool {
        self.relays
            .get(relay)
            .is_some_and(|leases| leases.requested_at.is_some())
    }

    /// Every usable lease at `now`, in relay order.
    pub fn active_leases(&self, now: Instant) -> impl Iterator<Item = &Lease> {
        self.relays
            .values()
            .filter_map(|leases| leases.current.as_ref())
            .filter(move |lease| self.usable(lease, now))
    }

    /// Recently ended leases, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Lease> {
        self.history.iter()
    }

    /// The fence: may a write made under `epoch` be accepted for `relay` at `now`?
    pub fn check_write(
        &self,
        relay: &RelayKey,
        epoch: u64,
        now: Instant,
    ) -> Result<LeaseId, LeaseError> {
        let id = LeaseId {
            relay: *relay,
            epoch,
        };
        let leases = self
            .relays
            .get(relay)
            .ok_or(LeaseError::NoActiveLease(*relay))?;
        if epoch != leases.epoch {
            return Err(LeaseError::StaleEpoch {
                id,
                current: leases.epoch,
            });
        }
        match &leases.current {
            Some(lease) if lease.id == id && self.usable(lease, now) => Ok(id),
            Some(lease) if lease.id == id => Err(LeaseError::NotActive(id)),
            _ => Err(LeaseError::NoActiveLease(*relay)),
        }
    }

    // ---- inputs: escrow side ----

    /// Issues a new lease of `relay` to `holder` with the configured TTL.
    pub fn issue(
        &mut self,
        relay: RelayKey,
        holder: PeerId,
        escrow_id: &str,
        now: Instant,
    ) -> Result<LeaseGrant, LeaseError> {
        if let Some(active) = self.active(&relay, now) {
            return Err(LeaseError::AlreadyActive(active.id));
        }
        // A current lease past its expiry whose timer has not fired yet ends now.
        self.expire_if_due(relay, now);
        let leases = self.relays.entry(relay).or_default();
        leases.epoch = leases
            .epoch
            .checked_add(1)
            .ok_or(LeaseError::EpochExhausted(relay))?;
        let grant = LeaseGrant {
            id: LeaseId {
                relay,
                epoch: leases.epoch,
            },
            escrow_id: escrow_id.to_owned(),
            holder,
            expires_at: now + self.config.ttl,
        };
        self.install(grant.clone(), now);
        Ok(grant)
    }

    /// Raises the relay's epoch floor, so epochs continue after a restart.
    pub fn restore_epoch(&mut self, relay: RelayKey, epoch: u64) {
        let leases = self.relays.entry(relay).or_default();
        leases.epoch = leases.epoch.max(epoch);
    }

    // ---- inputs: gateway side ----

    /// Asks for a lease of `relay` (at most one request in flight).
    pub fn request(&mut self, relay: RelayKey, now: Instant) -> RequestOutcome {
        // An expired lease whose timer has not run yet ends (and is reported) first.
        self.expire_if_due(relay, now);
        if let Some(active) = self.active(&relay, now) {
            return RequestOutcome::Active(active.id);
        }
        let leases = self.relays.entry(relay).or_default();
        if leases.requested_at.is_some() {
            return RequestOutcome::InFlight;
        }
        leases.requested_at = Some(now);
        leases.renewing = None;
        self.arm_request_timeout(relay, now);
        self.events.push_back(LeaseEvent::RequestNeeded {
            relay,
            renewing: None,
        });
        RequestOutcome::Started
    }

    /// Asks the escrow to extend the relay's active lease (at most one request in flight).
    pub fn request_renewal(&mut self, relay: RelayKey, now: Instant) -> RequestOutcome {
        self.expire_if_due(relay, now);
        let Some(active) = self.active(&relay, now).map(|lease| lease.id) else {
            return self.request(relay, now);
        };
        let leases = self.relays.entry(relay).or_default();
        if leases.requested_at.is_some() {
            return RequestOutcome::InFlight;
        }
        leases.requested_at = Some(now);
        leases.renewing = Some(active);
        self.arm_request_timeout(relay, now);
        self.events.push_back(LeaseEvent::RequestNeeded {
            relay,
            renewing: Some(active),
        });
        RequestOutcome::Started
    }

    /// Installs what the escrow granted for an in-flight request: a new lease
    /// (newer epoch) or a renewal of the active one (same id, later expiry).
    pub fn handle_grant(&mut self, grant: LeaseGrant, now: Instant) -> Result<(), LeaseError> {
        let relay = grant.id.relay;
        self.expire_if_due(relay, now);
        let leases = self
            .relays
            .get(&relay)
            .ok_or(LeaseError::NotRequested(relay))?;
        if leases.requested_at.is_none() {
            return Err(LeaseError::NotRequested(relay));
        }
        if grant.id.epoch < leases.epoch {
            return Err(LeaseError::StaleEpoch {
                id: grant.id,
                current: leases.epoch,
            });
        }
        let same_lease = leases
            .current
            .as_ref()
            .is_some_and(|lease| lease.id == grant.id && lease.is_usable(now));
        if grant.id.epoch == leases.epoch && !same_lease && leases.current.is_some() {
            // The current epoch's lease already ended here: a late grant cannot revive it.
            return Err(LeaseError::NotActive(grant.id));
        }
        self.clear_request(relay);
        if same_lease {
            return self.renew(grant.id, grant.expires_at, now);
        }
        if grant.expires_at <= now {
            return Err(LeaseError::NotActive(grant.id));
        }
        // A newer epoch supersedes whatever the gateway still held.
        if let Some(old) = self.active(&relay, now).map(|lease| lease.id) {
            self.end(
                old,
                EndReason::Revoked {
                    reason: "superseded".into(),
                },
                now,
            )?;
        }
        self.relays.entry(relay).or_default().epoch = grant.id.epoch;
        self.install(grant, now);
        Ok(())
    }

    /// The in-flight request failed (the escrow refused or was unreachable).
    pub fn handle_request_failed(&mut self, relay: RelayKey, reason: &str, _now: Instant) {
        if self
            .relays
            .get(&relay)
            .is_some_and(|l| l.requested_at.is_some())
        {
            self.clear_request(relay);
            self.events.push_back(LeaseEvent::RequestFailed {
                relay,
                reason: reason.to_owned(),
            });
        }
    }

    // ---- inputs: both sides ----

    /// Moves an active lease's expiry later.
    pub fn renew(
        &mut self,
        id: LeaseId,
        expires_at: Instant,
        now: Instant,
    ) -> Result<(), LeaseError> {
        let lease = self.current_lease_mut(id)?;
        if !lease.is_usable(now) {
            return Err(LeaseError::NotActive(id));
        }
        if expires_at <= lease.expires_at {
            return Err(LeaseError::NotExtended(id));
        }
        lease.expires_at = expires_at;
        self.arm_lease_timers(id.relay, expires_at, now);
        self.events
            .push_back(LeaseEvent::Renewed { id, expires_at });
        Ok(())
    }

    /// Ends a lease with `reason`.
    pub fn end(&mut self, id: LeaseId, reason: EndReason, now: Instant) -> Result<(), LeaseError> {
        let lease = self.current_lease_mut(id)?;
        if lease.state != LeaseState::Active {
            return Err(LeaseError::NotActive(id));
        }
        // Past its expiry the lease has expired, whatever the caller says.
        let reason = if now >= lease.expires_at {
            EndReason::Expired
        } else {
            reason
        };
        lease.state = reason.final_state();
        lease.end_reason = Some(reason.clone());
        lease.ended_at = Some(now);
        let ended = lease.clone();
        self.timers.disarm(&LeaseTimer::Warn(id.relay));
        self.timers.disarm(&LeaseTimer::Expire(id.relay));
        // A renewal of this lease can no longer succeed: stop waiting for it,
        // so the next write starts a fresh request instead of joining it.
        if self
            .relays
            .get(&id.relay)
            .is_some_and(|leases| leases.renewing == Some(id))
        {
            self.clear_request(id.relay);
        }
        self.history.push_back(ended);
        while self.history.len() > LEASE_HISTORY_LEN {
            self.history.pop_front();
        }
        self.events.push_back(LeaseEvent::Ended { id, reason });
        Ok(())
    }

    /// Ends the relay's active lease, if any; returns its id.
    pub fn end_relay(
        &mut self,
        relay: &RelayKey,
        reason: EndReason,
        now: Instant,
    ) -> Option<LeaseId> {
        let id = self
            .current(relay)
            .filter(|lease| lease.state == LeaseState::Active)
            .map(|lease| lease.id)?;
        self.end(id, reason, now).ok().map(|()| id)
    }

    /// Ends every active lease (shutdown).
    pub fn end_all(&mut self, reason: &EndReason, now: Instant) {
        let relays: Vec<RelayKey> = self.relays.keys().copied().collect();
        for relay in relays {
            self.end_relay(&relay, reason.clone(), now);
            self.clear_request(relay);
        }
    }

    /// Fires expiries, warnings and request timeouts due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                LeaseTimer::RequestTimeout(relay) => {
                    self.handle_request_failed(relay, "escrow-timeout", now);
                }
                LeaseTimer::Warn(relay) => {
                    if let Some(lease) = self.active(&relay, now) {
                        let remaining = lease.expires_at.saturating_duration_since(now);
                        let id = lease.id;
                        self.events
                            .push_back(LeaseEvent::ExpiryWarning { id, remaining });
                    }
                }
                LeaseTimer::Expire(relay) => self.expire_if_due(relay, now),
            }
        }
    }

    // ---- outputs ----

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LeaseEvent> {
        self.events.pop_front()
    }

    /// The next deadline and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        self.timers.next().map(|(at, timer)| {
            let reason = match timer {
                LeaseTimer::RequestTimeout(_) => "lease request timeout",
                LeaseTimer::Warn(_) => "lease expiry warning",
                LeaseTimer::Expire(_) => "lease expiry",
            };
            (at, reason)
        })
    }

    // ---- internals ----

    fn install(&mut self, grant: LeaseGrant, now: Instant) {
        let relay = grant.id.relay;
        let lease = Lease {
            id: grant.id,
            escrow_id: grant.escrow_id,
            holder: grant.holder,
            issued_at: now,
            expires_at: grant.expires_at,
            state: LeaseState::Active,
            end_reason: None,
            ended_at: None,
        };
        self.relays.entry(relay).or_default().current = Some(lease);
        self.arm_lease_timers(relay, grant.expires_at, now);
        self.events.push_back(LeaseEvent::Activated {
            id: grant.id,
            expires_at: grant.expires_at,
        });
    }

    fn arm_lease_timers(&mut self, relay: RelayKey, expires_at: Instant, now: Instant) {
        self.timers.arm(LeaseTimer::Expire(relay), expires_at);
        let warn_at = expires_at
            .checked_sub(self.config.warning_before)
            .unwrap_or(now)
            .max(now);
        if warn_at < expires_at {
            self.timers.arm(LeaseTimer::Warn(relay), warn_at);
        } else {
            self.timers.disarm(&LeaseTimer::Warn(relay));
        }
    }

    fn expire_if_due(&mut self, relay: RelayKey, now: Instant) {
        #[cfg(feature = "fault-injection")]
        if self.ignore_expiry {
            return;
        }
        let due = self
            .current(&relay)
            .filter(|lease| lease.state == LeaseState::Active && now >= lease.expires_at)
            .map(|lease| lease.id);
        if let Some(id) = due {
            // Cannot fail: the lease is current and active (checked just above).
            let _ = self.end(id, EndReason::Expired, now);
        }
    }

    fn clear_request(&mut self, relay: RelayKey) {
        if let Some(leases) = self.relays.get_mut(&relay) {
            leases.requested_at = None;
            leases.renewing = None;
        }
        self.timers.disarm(&LeaseTimer::RequestTimeout(relay));
    }

    fn arm_request_timeout(&mut self, relay: RelayKey, now: Instant) {
        // At least 1 ms, so the timeout never fires at the `now` that armed it.
        let timeout = self.config.request_timeout.max(Duration::from_millis(1));
        self.timers
            .arm(LeaseTimer::RequestTimeout(relay), now + timeout);
    }

    fn current_lease_mut(&mut self, id: LeaseId) -> Result<&mut Lease, LeaseError> {
        let leases = self
            .relays
            .get_mut(&id.relay)
            .ok_or(LeaseError::UnknownLease(id))?;
        if id.epoch != leases.epoch {
            return Err(LeaseError::StaleEpoch {
                id,
                current: leases.epoch,
            });
        }
        leases
            .current
            .as_mut()
            .filter(|lease| lease.id == id)
            .ok_or(LeaseError::UnknownLease(id))
    }
}

#[cfg(test)]
mod tests;

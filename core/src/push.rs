//! The gateway side of the pending-write push: when to tell a relay's workers
//! that the gateway holds writes they have not resynced, until one of them
//! acknowledges, and then the `cleared` notice after their resync.
//!
//! Contract:
//! - **One notice per relay.** [`PushScheduler::notify_pending`] stores what
//!   the gateway knows ([`PendingNotice`]); a notice with a newer `updated_at`
//!   replaces the stored one and restarts its retries, an equal or older one
//!   is ignored.
//! - **The first push is immediate** when a worker of the relay is reachable.
//!   Then a *send round* runs whenever the relay's timer fires, with the
//!   original's rule (reference §4.3): if a worker is reachable the push goes
//!   out, `attempts` grows by one and the next round is
//!   `jitter(min(max_retry, base_retry · 2^attempts))` later (nominally 30 s,
//!   60 s, 120 s, 240 s, 300 s, 300 s, …); if none is reachable nothing is
//!   sent, `attempts` stays, and the next round is `jitter(base_retry)` later
//!   (a 15 s loop). A relay that becomes reachable while it waits on that loop
//!   is pushed at once. Jitter is a factor drawn uniformly from
//!   `[1 − jitter, 1 + jitter]` with the seeded RNG, so a seed replays.
//! - **Acks stop the retries** (the original had no ack path). An ack whose
//!   `updated_at` is at least the notice's moves it to
//!   [`NoticeState::Acked`] and arms the resync deadline; an older ack is
//!   stale and changes nothing. A notice still acked when the deadline passes
//!   goes back to pending and is pushed again ([`PushEvent::ResyncOverdue`]).
//! - **Resync-complete** covering the notice's `updated_at` turns it into a
//!   `cleared` notice ([`NoticeState::Clearing`]), sent at once and retried
//!   with the same backoff until acked (the entry ends with
//!   [`PushEvent::Cleared`]) or until `cleared_max_attempts` sends went
//!   unacknowledged (it ends with [`PushEvent::ClearedAbandoned`]). One that
//!   does not cover it (a write landed during the resync) leaves the notice
//!   pending and pushes it again at once.
//! - **Nothing is dropped silently**: an entry leaves the scheduler only with
//!   one of those two events.
//! - Every operation is O(log n) in the number of relays: entries live in a
//!   `BTreeMap` and each relay has at most one deadline in a [`TimerQueue`].
//!   A fired timer is disarmed and every re-arm is at least 1 ms later, so
//!   after [`PushScheduler::handle_timeout`]`(t)` the next deadline is later
//!   than `t`.
//!
//! Drive order after any input: drain [`PushScheduler::poll_push`] (send each
//! message to every reachable worker of its relay), then
//! [`PushScheduler::poll_event`], then re-arm the timer from
//! [`PushScheduler::poll_timeout`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hypergate_core::ids::RelayKey;
//! use hypergate_core::push::{PendingNotice, PushConfig, PushScheduler};
//! use hypergate_core::time::UnixTime;
//!
//! // The adapter reads its clock and passes `start` in; the core never reads one.
//! // Run with a real clock in `tests/tests/drive_loops.rs`.
//! fn drive(start: Instant) {
//!     let mut pushes = PushScheduler::new(PushConfig::default(), 7);
//!     let relay = RelayKey([1; 32]);
//!     let notice = PendingNotice::new(relay, "replica-write", UnixTime(1_700_000_000_000));
//!     let _ = pushes.notify_pending(notice, true, start);
//!
//!     let mut now = start;
//!     let mut sent = 0;
//!     for _ in 0..3 {
//!         while let Some(push) = pushes.poll_push() {
//!             let _ = (push.relay, push.message); // send to every reachable worker
//!             sent += 1;
//!         }
//!         while let Some(event) = pushes.poll_event() {
//!             let _ = event; // metrics, logs
//!         }
//!         let Some((deadline, _reason)) = pushes.poll_timeout() else { break };
//!         now = deadline; // a real adapter sleeps until `deadline`
//!         pushes.handle_timeout(now);
//!     }
//!     assert_eq!(sent, 3, "the first push and two unacknowledged retries");
//!     assert!(now >= start + Duration::from_secs(24), "first retry after 30 s ± 20 %");
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::ids::RelayKey;
use crate::registry::PendingWrites;
use crate::time::UnixTime;
use crate::timer::TimerQueue;
use crate::wire::{
    BoundedString, BoundedVec, MAX_PENDING_TYPES, PendingState, PendingType, PendingWritePush,
};

/// The shortest delay between two rounds of one relay. Keeps a zero (or
/// fully jittered-away) delay from re-arming a timer at the instant it fired.
const MIN_DELAY: Duration = Duration::from_millis(1);

/// The reason a notice carries when the gateway recorded none (the original's default).
const DEFAULT_REASON: &str = "replica-write";

/// Push cadence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushConfig {
    /// The retry cadence while no worker is reachable, and the base of the
    /// backoff (the first retry after a send is twice this).
    pub base_retry: Duration,
    /// The backoff cap. A `base_retry` above it is capped to it as well.
    pub max_retry: Duration,
    /// Relative jitter of every delay: `0.2` draws a factor in `[0.8, 1.2]`.
    /// Clamped to `[0, 1]`; not a number counts as `0`.
    pub jitter: f64,
    /// How long an acknowledged notice waits for resync-complete before it is pushed again.
    pub resync_deadline: Duration,
    /// Most sends of a `cleared` notice before it is given up.
    pub cleared_max_attempts: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            base_retry: Duration::from_secs(15),
            max_retry: Duration::from_secs(300),
            jitter: 0.2,
            resync_deadline: Duration::from_secs(600),
            cleared_max_attempts: 5,
        }
    }
}

impl PushConfig {
    fn spread(&self) -> f64 {
        if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        }
    }

    fn base(&self) -> Duration {
        self.base_retry.min(self.max_retry)
    }

    /// `min(max_retry, base_retry · 2^attempts)`, without overflow for any count.
    fn backoff(&self, attempts: u32) -> Duration {
        2u32.checked_pow(attempts)
            .and_then(|factor| self.base().checked_mul(factor))
            .map_or(self.max_retry, |delay| delay.min(self.max_retry))
    }
}

/// What the gateway knows about a relay's pending writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotice {
    /// The relay.
    pub relay_key: RelayKey,
    /// Why the writes were made (a short slug; cut to the wire bound when sent).
    pub reason: String,
    /// What kinds of data wait.
    pub types: BTreeSet<PendingType>,
    /// The drive written, for drive writes. Sent only if it fits the wire bound:
    /// a cut identifier would name another drive.
    pub drive_identifier: Option<String>,
    /// The drive's version after the gateway's writes.
    pub drive_version: Option<u64>,
    /// The first still-pending write (gateway clock).
    pub pending_since: UnixTime,
    /// The latest change; orders notices and acks.
    pub updated_at: UnixTime,
    /// The lease epoch the writes were made under.
    pub lease_version: Option<u64>,
    /// Whether that lease is still active.
    pub lease_active: bool,
}

impl PendingNotice {
    /// A notice with no types, drive or lease, pending since `updated_at`.
    #[must_use]
    pub fn new(relay_key: RelayKey, reason: &str, updated_at: UnixTime) -> Self {
        Self {
            relay_key,
            reason: reason.to_owned(),
            types: BTreeSet::new(),
            drive_identifier: None,
            drive_version: None,
            pending_since: updated_at,
            updated_at,
            lease_version: None,
            lease_active: false,
        }
    }

    /// The notice for the registry's flags of `relay_key`; `None` when nothing
    /// is pending (or the flags carry no `updated_at`). A missing reason is the
    /// original's `replica-write`; a missing `since` is `updated_at`.
    #[must_use]
    pub fn from_pending_writes(relay_key: RelayKey, pending: &PendingWrites) -> Option<Self> {
        if !pending.pending {
            return None;
        }
        let updated_at = pending.updated_at?;
        Some(Self {
            relay_key,
            reason: pending
                .reason
                .clone()
                .unwrap_or_else(|| DEFAULT_REASON.to_owned()),
            types: pending.types.clone(),
            drive_identifier: pending.drive_identifier.clone(),
            drive_version: pending.drive_version,
            pending_since: pending.since.unwrap_or(updated_at),
            updated_at,
            lease_version: pending.lease_version,
            lease_active: pending.lease_active,
        })
    }
}

/// Where a relay's notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoticeState {
    /// Pushed with retries until a worker acknowledges it.
    Pending,
    /// Acknowledged; waiting for resync-complete until the resync deadline.
    Acked,
    /// Resynced; the `cleared` notice is pushed until acknowledged or given up.
    Clearing,
}

impl NoticeState {
    /// The lowercase label used in metrics and APIs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeState::Pending => "pending",
            NoticeState::Acked => "acked",
            NoticeState::Clearing => "clearing",
        }
    }
}

/// A relay's notice as the scheduler holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeStatus<'a> {
    /// Where the notice is.
    pub state: NoticeState,
    /// Sends in the current round (pending: since the notice was stored, re-pushed
    /// or found overdue; clearing: sends of the `cleared` notice).
    pub attempts: u32,
    /// Whether a worker of the relay is reachable, as last reported.
    pub reachable: bool,
    /// The relay's next deadline (a send round, or the resync deadline when acked).
    pub next_deadline: Option<Instant>,
    /// When the relay was cleared, while clearing.
    pub cleared_at: Option<UnixTime>,
    /// The notice.
    pub notice: &'a PendingNotice,
}

/// A push to send to every reachable worker of `relay`; drained with [`PushScheduler::poll_push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPush {
    /// The relay whose workers receive it.
    pub relay: RelayKey,
    /// The wire message (a fresh `push_id` per send).
    pub message: PendingWritePush,
}

/// What [`PushScheduler::notify_pending`] did with a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The relay had no notice; this one is stored.
    Created,
    /// It replaced an older notice and restarted the retries.
    Updated,
    /// It was not newer than the stored notice (only its reachability was taken).
    Ignored,
}

/// What [`PushScheduler::handle_ack`] did with an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The pending notice is acknowledged; retries stop.
    Acked {
        /// From the first push of this round to the ack
        /// (`gateway_pending_write_push_wait_seconds`).
        wait: Duration,
    },
    /// The notice was acknowledged already (another worker, or a retry's ack).
    AlreadyAcked,
    /// The ack is for an older state than the one being pushed; retries continue.
    Stale {
        /// The `updated_at` being pushed.
        current: UnixTime,
    },
    /// The `cleared` notice is acknowledged; the relay's entry ended.
    Cleared,
}

/// What [`PushScheduler::handle_resync_complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncOutcome {
    /// The resync covers the notice: the `cleared` notice is being pushed.
    Clearing,
    /// The `cleared` notice was being pushed already.
    AlreadyClearing,
    /// A write landed after what the worker resynced: the notice is pushed again.
    StillPending {
        /// The notice's `updated_at`, newer than the resync.
        updated_at: UnixTime,
    },
}

/// What the scheduler reports; drained with [`PushScheduler::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// A push went out (`gateway_pending_write_push_total`).
    Sent {
        /// The relay.
        relay: RelayKey,
        /// The push's id.
        push_id: u64,
        /// Its number in the current round, from 1.
        attempt: u32,
        /// Pending or cleared.
        state: PendingState,
    },
    /// A worker acknowledged the pending notice.
    Acked {
        /// The relay.
        relay: RelayKey,
        /// From the first push of the round to the ack.
        wait: Duration,
    },
    /// No resync-complete arrived within the resync deadline: pushing again.
    ResyncOverdue {
        /// The relay.
        relay: RelayKey,
    },
    /// The `cleared` notice was acknowledged; the relay's entry ended.
    Cleared {
        /// The relay.
        relay: RelayKey,
    },
    /// The `cleared` notice went unacknowledged `cleared_max_attempts` times; the entry ended.
    ClearedAbandoned {
        /// The relay.
        relay: RelayKey,
    },
}

/// Stale or unknown input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    // A peer's late or misdirected message.
    /// The relay has no notice (never notified, or its entry ended).
    #[error("relay {0} has no pending-write notice")]
    UnknownRelay(RelayKey),
}

/// The `cleared` notice of a relay.
#[derive(Debug, Clone, Copy)]
struct Cleared {
    /// When the gateway cleared the flags.
    at: UnixTime,
    /// The push's `updated_at`: later than the pending notice's, so a worker
    /// that dedupes by `updated_at` takes it as new.
    updated_at: UnixTime,
}

#[derive(Debug, Clone)]
struct Entry {
    notice: PendingNotice,
    state: NoticeState,
    attempts: u32,
    reachable: bool,
    /// The last round found no reachable worker: becoming reachable pushes at once.
    waiting_on_base: bool,
    /// The first push of the current round, for the ack's wait.
    first_push_at: Option<Instant>,
    /// Set while clearing.
    cleared: Option<Cleared>,
}

/// The pending-write push scheduler. See the module docs for the contract.
#[derive(Debug)]
pub struct PushScheduler {
    config: PushConfig,
    rng: ChaCha8Rng,
    entries: BTreeMap<RelayKey, Entry>,
    /// Entries in [`NoticeState::Clearing`], so `pending_count` is O(1).
    clearing: usize,
    /// At most one deadline per relay: a send round, or the resync deadline when acked.
    timers: TimerQueue<RelayKey>,
    pushes: VecDeque<OutboundPush>,
    events: VecDeque<PushEvent>,
}

impl PushScheduler {
    /// An empty scheduler whose jitter and push ids come from `seed`.
    #[must_use]
    pub fn new(config: PushConfig, seed: u64) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            entries: BTreeMap::new(),
            clearing: 0,
            timers: TimerQueue::new(),
            pushes: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    /// The relay's notice, if it has one.
    #[must_use]
    pub fn notice(&self, relay: &RelayKey) -> Option<NoticeStatus<'_>> {
        let entry = self.entries.get(relay)?;
        Some(NoticeStatus {
            state: entry.state,
            attempts: entry.attempts,
            reachable: entry.reachable,
            next_deadline: self.timers.deadline_of(relay),
            cleared_at: entry.cleared.map(|cleared| cleared.at),
            notice: &entry.notice,
        })
    }

    /// Relays whose writes are not resynced yet (pending or acked): the
    /// `gateway_pending_writes` gauge.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.entries.len().saturating_sub(self.clearing)
    }

    /// Relays with an entry of any state.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no relay has an entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    // ---- inputs ----

    /// A new or updated notice for its relay; `reachable`: whether any worker
    /// of the relay is reachable now. A stored notice is pushed at once if a
    /// worker is reachable, else on the base cadence.
    pub fn notify_pending(
        &mut self,
        notice: PendingNotice,
        reachable: bool,
        now: Instant,
    ) -> NotifyOutcome {
        let relay = notice.relay_key;
        let outcome = match self.entries.get_mut(&relay) {
            Some(entry) if notice.updated_at <= entry.notice.updated_at => {
                // Older news about the writes, but current news about the workers.
                self.handle_reachability(relay, reachable, now);
                return NotifyOutcome::Ignored;
            }
            Some(entry) => {
                if entry.state == NoticeState::Clearing {
                    self.clearing = self.clearing.saturating_sub(1);
                }
                *entry = Entry::new(notice, reachable);
                NotifyOutcome::Updated
            }
            None => {
                self.entries.insert(relay, Entry::new(notice, reachable));
                NotifyOutcome::Created
            }
        };
        self.send_round(relay, now);
        outcome
    }

    /// Drops the relay's notice, whatever its state, because the relay itself
    /// was removed (an operator forced it despite pending writes). Reported as
    /// [`PushEvent::ClearedAbandoned`] so nothing ends without an event.
    pub fn forget(&mut self, relay: RelayKey) -> bool {
        if !self.entries.contains_key(&relay) {
            return false;
        }
        self.remove(relay);
        self.events.push_back(PushEvent::ClearedAbandoned { relay });
        true
    }

    /// Whether any worker of `relay` is reachable. Only relays with a notice
    /// are tracked (a new notice brings its own reachability); one that
    /// becomes reachable while waiting on the base cadence is pushed at once.
    pub fn handle_reachability(&mut self, relay: RelayKey, reachable: bool, now: Instant) {
        let Some(entry) = self.entries.get_mut(&relay) else {
            return;
        };
        entry.reachable = reachable;
        if reachable && entry.waiting_on_base && entry.state != NoticeState::Acked {
            self.send_round(relay, now);
        }
    }

    /// A worker acknowledged push `push_id` of `relay`, echoing its
    /// `updated_at`. Every push of one `updated_at` carries the same state, so
    /// the ack is judged by `updated_at`; `push_id` is for the adapter's logs.
    pub fn handle_ack(
        &mut self,
        relay: RelayKey,
        push_id: u64,
        updated_at: UnixTime,
        now: Instant,
    ) -> Result<AckOutcome, PushError> {
        let _ = push_id;
        let entry = self
            .entries
            .get_mut(&relay)
            .ok_or(PushError::UnknownRelay(relay))?;
        match (entry.state, entry.cleared) {
            (NoticeState::Clearing, Some(cleared)) => {
                if updated_at < cleared.updated_at {
                    return Ok(AckOutcome::Stale {
                        current: cleared.updated_at,
                    });
                }
                self.remove(relay);
                self.events.push_back(PushEvent::Cleared { relay });
                Ok(AckOutcome::Cleared)
            }
            _ if updated_at < entry.notice.updated_at => Ok(AckOutcome::Stale {
                current: entry.notice.updated_at,
            }),
            (NoticeState::Acked, _) => Ok(AckOutcome::AlreadyAcked),
            _ => {
                let wait = entry
                    .first_push_at
                    .map_or(Duration::ZERO, |first| now.saturating_duration_since(first));
                entry.state = NoticeState::Acked;
                entry.waiting_on_base = false;
                self.timers.arm(
                    relay,
                    deadline_after(now, self.config.resync_deadline.max(MIN_DELAY)),
                );
                self.events.push_back(PushEvent::Acked { relay, wait });
                Ok(AckOutcome::Acked { wait })
            }
        }
    }

    /// A worker of `relay` resynced the gateway's writes up to
    /// `resynced_through`; the gateway cleared its flags at `cleared_at`.
    pub fn handle_resync_complete(
        &mut self,
        relay: RelayKey,
        resynced_through: UnixTime,
        cleared_at: UnixTime,
        now: Instant,
    ) -> Result<ResyncOutcome, PushError> {
        let entry = self
            .entries
            .get_mut(&relay)
            .ok_or(PushError::UnknownRelay(relay))?;
        if entry.state == NoticeState::Clearing {
            return Ok(ResyncOutcome::AlreadyClearing);
        }
        if resynced_through < entry.notice.updated_at {
            // A write landed during the resync: push the newer state again, as a new round.
            if entry.state == NoticeState::Acked {
                entry.first_push_at = None;
            }
            entry.state = NoticeState::Pending;
            entry.attempts = 0;
            let updated_at = entry.notice.updated_at;
            self.send_round(relay, now);
            return Ok(ResyncOutcome::StillPending { updated_at });
        }
        entry.state = NoticeState::Clearing;
        entry.attempts = 0;
        entry.cleared = Some(Cleared {
            at: cleared_at,
            updated_at: cleared_at.max(UnixTime(entry.notice.updated_at.0.saturating_add(1))),
        });
        self.clearing += 1;
        self.send_round(relay, now);
        Ok(ResyncOutcome::Clearing)
    }

    /// Runs the send rounds and resync deadlines due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, relay)) = self.timers.pop_due(now) {
            let Some(entry) = self.entries.get_mut(&relay) else {
                continue;
            };
            if entry.state == NoticeState::Acked {
                entry.state = NoticeState::Pending;
                entry.attempts = 0;
                entry.first_push_at = None;
                self.events.push_back(PushEvent::ResyncOverdue { relay });
            }
            self.send_round(relay, now);
        }
    }

    // ---- outputs ----

    /// The next push to send to every reachable worker of its relay.
    #[must_use]
    pub fn poll_push(&mut self) -> Option<OutboundPush> {
        self.pushes.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PushEvent> {
        self.events.pop_front()
    }

    /// The next deadline and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let (at, relay) = self.timers.next()?;
        let reason = match self.entries.get(relay).map(|entry| entry.state) {
            Some(NoticeState::Acked) => "pending-write resync deadline",
            Some(NoticeState::Clearing) => "pending-write cleared push",
            _ => "pending-write push",
        };
        Some((at, reason))
    }

    // ---- internals ----

    /// One send round of a pending or clearing entry: push if a worker is
    /// reachable, then arm the next round (reference §4.3).
    fn send_round(&mut self, relay: RelayKey, now: Instant) {
        let Some(entry) = self.entries.get_mut(&relay) else {
            return;
        };
        if entry.state == NoticeState::Clearing
            && entry.attempts >= self.config.cleared_max_attempts
        {
            // The last send had a full backoff interval to be acknowledged.
            self.remove(relay);
            self.events.push_back(PushEvent::ClearedAbandoned { relay });
            return;
        }
        if !entry.reachable {
            entry.waiting_on_base = true;
            let delay = jittered(&mut self.rng, &self.config, self.config.base());
            self.timers.arm(relay, deadline_after(now, delay));
            return;
        }
        let push_id = self.rng.next_u64();
        let message = entry.wire_message(push_id);
        entry.attempts = entry.attempts.saturating_add(1);
        entry.waiting_on_base = false;
        entry.first_push_at.get_or_insert(now);
        self.events.push_back(PushEvent::Sent {
            relay,
            push_id,
            attempt: entry.attempts,
            state: message.state,
        });
        self.pushes.push_back(OutboundPush { relay, message });
        let delay = jittered(
            &mut self.rng,
            &self.config,
            self.config.backoff(entry.attempts),
        );
        self.timers.arm(relay, deadline_after(now, delay));
    }

    fn remove(&mut self, relay: RelayKey) {
        let was_clearing = self
            .entries
            .remove(&relay)
            .is_some_and(|entry| entry.state == NoticeState::Clearing);
        if was_clearing {
            self.clearing = self.clearing.saturating_sub(1);
        }
        self.timers.disarm(&relay);
    }
}

impl Entry {
    fn new(notice: PendingNotice, reachable: bool) -> Self {
        Self {
            notice,
            state: NoticeState::Pending,
            attempts: 0,
            reachable,
            waiting_on_base: false,
            first_push_at: None,
            cleared: None,
        }
    }

    /// The wire message, built with the checked constructors: a long reason is
    /// cut, an identifier too long to send is left out.
    fn wire_message(&self, push_id: u64) -> PendingWritePush {
        let notice = &self.notice;
        let types: Vec<PendingType> = notice
            .types
            .iter()
            .copied()
            .take(MAX_PENDING_TYPES)
            .collect();
        let (state, updated_at, cleared_at) = match self.cleared {
            Some(cleared) => (PendingState::Cleared, cleared.updated_at, Some(cleared.at)),
            None => (PendingState::Pending, notice.updated_at, None),
        };
        PendingWritePush {
            push_id,
            relay_key: notice.relay_key,
            state,
            reason: BoundedString::truncating(&notice.reason),
            types: BoundedVec::new(types).unwrap_or_default(),
            drive_identifier: notice
                .drive_identifier
                .as_deref()
                .and_then(|identifier| BoundedString::new(identifier).ok()),
            drive_version: notice.drive_version,
            pending_since: notice.pending_since,
            updated_at,
            lease_version: notice.lease_version,
            lease_active: notice.lease_active,
            cleared_at,
        }
    }
}

/// `nominal` times a factor uniform in `[1 − jitter, 1 + jitter]`, at least [`MIN_DELAY`].
fn jittered(rng: &mut ChaCha8Rng, config: &PushConfig, nominal: Duration) -> Duration {
    let spread = config.spread();
    // 53 random bits: a uniform float in [0, 1).
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    // Clamped: rounding must not push the factor past its documented bound.
    let factor = (1.0 - spread + 2.0 * spread * unit).min(1.0 + spread);
    Duration::try_from_secs_f64(nominal.as_secs_f64() * factor)
        .unwrap_or(nominal)
        .max(MIN_DELAY)
}

/// `now + delay`, halving a delay too far in the future for the platform's `Instant`.
fn deadline_after(now: Instant, mut delay: Duration) -> Instant {
    loop {
        if let Some(at) = now.checked_add(delay) {
            return at;
        }
        // Terminates: the delay reaches zero, and `now + 0` always exists.
        delay /= 2;
    }
}

#[cfg(test)]
mod tests;

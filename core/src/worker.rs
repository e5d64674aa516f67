//! The worker side of pending-write resync and gateway-writer rotation.
//!
//! Contract:
//! - **Pushes are deduplicated by `updated_at`.** [`WorkerCore::handle_push`] answers every push
//!   with a [`PushAck`] echoing its id, relay and `updated_at`: [`AckStatus::Accepted`] when it is
//!   newer than the relay's stored notice (it is then stored), [`AckStatus::Noop`] otherwise. A
//!   push for a relay this worker does not own is answered `Noop`, creates no state and emits
//!   [`WorkerEvent::PushIgnored`]: a gateway cannot crash a worker or make it track relays.
//! - **One job per relay.** A `pending` notice queues one job unless one is queued or running.
//!   A notice that arrives while a job runs is not lost: when the job completes, a relay whose
//!   stored notice is still pending and newer than what was resynced runs again. A `cleared`
//!   notice drops pending-write work that has not started; key rotation already under way is
//!   never abandoned (it holds a generated key and owner ops).
//! - **A job resyncs before it acknowledges.** Its steps run one at a time, each an [`Effect`] the
//!   adapter performs and answers with [`WorkerCore::handle_effect_result`]: ingest the gateway's
//!   events (type `event`), fetch the drive (type `drive`), replay HTTP artifacts (type
//!   `http-artifact`), then [`EffectKind::SendResyncComplete`] through the notice's `updated_at`.
//!   Resync-complete is handed out only after every earlier step succeeded (the original
//!   acknowledged resyncs it never performed).
//! - **Then it rotates** — only if the gateway answered the resync-complete with `cleared`
//!   ([`EffectOutput::ResyncAnswered`]); "still pending" means a gateway write landed after the
//!   notice, and the job for the newer notice rotates instead. A new writer key
//!   ([`EffectKind::GenerateWriterKey`]); the old deposit is revoked, so no new lease can
//!   write to the old writer; the old writer is ingested once more; the owner log removes it at
//!   the length that re-ingest found and adds the new one; the new key is deposited. That order
//!   means the old writer's final length never cuts off a gateway write (the simulation found
//!   the lost write when the removal came before the revoke). Only then are
//!   [`WorkerCore::current_writer`] and [`WorkerCore::current_escrow_id`] the new ones (the
//!   original re-deposited the same key). The last `rotation_history` rotations are kept as
//!   [`RotationRecord`]s.
//! - **Leases issued while away are answered by a rotation.** Every lease epoch the worker
//!   observes (a push's `lease_version`, or the escrow's lease list) raises the relay's observed
//!   epoch; a rotation completes *for* the epoch observed when it started. On
//!   [`WorkerCore::handle_gateway_connected`], a relay whose observed epoch is newer than its last
//!   rotation's runs a `worker-reconnect` rotation (after any job already running), so one lease
//!   never causes two rotations. That rotation ingests the gateway writer log first, so its
//!   `RemoveWriter` carries the length the gateway really wrote, but sends no resync-complete
//!   (no notice is pending; if one is, the normal job covers the lease).
//! - **Failures back off, then stop.** A failed step is retried after `step_retry_base · 2^n`
//!   (±20 % jitter from the seeded RNG, capped at `step_retry_max`); after `max_step_attempts`
//!   the job is in state [`JobState::Error`] until the next push (newer, or a re-send of the
//!   stored notice) or reconnect resumes it: from the newest notice if it had not reached its
//!   rotation, else at the failed step (a generated key is never thrown away).
//! - [`JobState::Queued`] means a job waits for the adapter to take its next step; it becomes
//!   [`JobState::InProgress`] when [`WorkerCore::poll_effect`] hands one out.
//! - At most one effect per relay is outstanding. [`EffectId`]s are never reused, so a late or
//!   duplicate result is [`WorkerError::StaleEffect`], never applied twice, never a panic.
//!
//! The machine never holds key material: the adapter generates and keeps the writer secrets; the
//! core sees public keys and escrow ids only.
//!
//! ```
//! use std::time::Instant;
//! use hypergate_core::ids::{PeerId, RelayKey};
//! use hypergate_core::time::UnixTime;
//! use hypergate_core::wire::{
//!     AckStatus, BoundedString, BoundedVec, PendingState, PendingType, PendingWritePush,
//! };
//! use hypergate_core::worker::{EffectKind, EffectOutput, WorkerConfig, WorkerCore};
//!
//! // The adapter reads its clock and passes `now` in; the core never reads one.
//! // Run with a real clock in `tests/tests/drive_loops.rs`.
//! fn drive(now: Instant) {
//!     let relay = RelayKey([7; 32]);
//!     let gateway = PeerId([1; 32]);
//!     let mut worker = WorkerCore::new(WorkerConfig::default(), PeerId([2; 32]), 42);
//!     worker.register_relay(relay, [3; 32], Some("escrow-1".into()));
//!
//!     let push = PendingWritePush {
//!         push_id: 1,
//!         relay_key: relay,
//!         state: PendingState::Pending,
//!         reason: BoundedString::truncating("replica-write"),
//!         types: BoundedVec::new(vec![PendingType::Event]).unwrap(),
//!         drive_identifier: None,
//!         drive_version: None,
//!         pending_since: UnixTime(1_000),
//!         updated_at: UnixTime(1_000),
//!         lease_version: Some(1),
//!         lease_active: false,
//!         cleared_at: None,
//!     };
//!     let ack = worker.handle_push(gateway, &push, now);
//!     assert_eq!(ack.status, AckStatus::Accepted); // send the ack back to the gateway
//!
//!     // The drive loop: perform each effect, report its result, drain events, arm the timer.
//!     while let Some(effect) = worker.poll_effect() {
//!         let output = match &effect.kind {
//!             EffectKind::IngestGatewayEvents { .. } => {
//!                 EffectOutput::Ingested { gateway_writer_length: 12 }
//!             }
//!             EffectKind::GenerateWriterKey => EffectOutput::WriterKey { public: [4; 32] },
//!             EffectKind::DepositWriterKey { .. } => {
//!                 EffectOutput::Deposited { escrow_id: "escrow-2".into() }
//!             }
//!             _ => EffectOutput::Done, // resync-complete sent, owner ops appended, deposit revoked
//!         };
//!         worker.handle_effect_result(effect.id, Ok(output), now).unwrap();
//!         while let Some(event) = worker.poll_event() {
//!             let _ = event; // log, export metrics, persist rotation records
//!         }
//!     }
//!     assert_eq!(worker.current_writer(&relay), Some([4; 32]));
//!     assert_eq!(worker.current_escrow_id(&relay), Some("escrow-2"));
//!     assert!(worker.poll_timeout().is_none());
//! }
//! ```

mod effect;
mod job;

pub use self::effect::{Effect, EffectId, EffectKind, EffectOutput, OwnerOp};

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use self::job::{Job, Phase, Step};
use crate::ids::{PeerId, RelayKey};
use crate::time::UnixTime;
use crate::timer::TimerQueue;
use crate::wire::{AckStatus, PendingState, PendingWritePush, PushAck};

/// Jitter applied to every step retry delay, in permille either side of the nominal delay.
const RETRY_JITTER_PERMILLE: u32 = 200;

/// Tuning of the worker's resync jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Delay before the first retry of a failed step; doubles with every further failure.
    pub step_retry_base: Duration,
    /// Longest delay between retries of a step.
    pub step_retry_max: Duration,
    /// Attempts of one step before the job is in state [`JobState::Error`].
    pub max_step_attempts: u32,
    /// How many rotation records are kept (the original kept 50).
    pub rotation_history: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            step_retry_base: Duration::from_secs(2),
            step_retry_max: Duration::from_secs(300),
            max_step_attempts: 8,
            rotation_history: 50,
        }
    }
}

/// A relay's resync job, in the original's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Nothing has happened yet.
    Idle,
    /// A job waits for the adapter to take its next step.
    Queued,
    /// A job is running (a step is out, or waiting to be retried).
    InProgress,
    /// The last job finished: resynced and rotated.
    Completed,
    /// The last job ran out of attempts; the next push or reconnect resumes it.
    Error,
    /// The gateway cleared the relay's pending writes.
    Cleared,
}

impl JobState {
    /// The API/metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Idle => "idle",
            JobState::Queued => "queued",
            JobState::InProgress => "in-progress",
            JobState::Completed => "completed",
            JobState::Error => "error",
            JobState::Cleared => "cleared",
        }
    }
}

/// Why a rotation happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RotationReason {
    /// After resyncing a pending-write notice.
    PendingWriteResync,
    /// A lease was issued while the worker was away.
    WorkerReconnect,
}

impl RotationReason {
    /// The audit label (the original's reason strings).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RotationReason::PendingWriteResync => "pending-write-resync",
            RotationReason::WorkerReconnect => "worker-reconnect",
        }
    }
}

/// Where a rotation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RotationStatus {
    /// Running.
    Pending,
    /// The new key is deposited and current.
    Completed,
    /// A step ran out of attempts; the next push or reconnect resumes it.
    Failed,
}

impl RotationStatus {
    /// The API/metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RotationStatus::Pending => "pending",
            RotationStatus::Completed => "completed",
            RotationStatus::Failed => "failed",
        }
    }
}

/// One rotation of a relay's gateway writer key, for APIs, audits and persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    /// Increases with every rotation of this worker (from 1).
    pub rotation_id: u64,
    /// The relay.
    pub relay: RelayKey,
    /// Why.
    pub reason: RotationReason,
    /// Where it is.
    pub status: RotationStatus,
    /// How many times it was run: 1, plus one per resume after a failure.
    pub attempts: u32,
    /// The lease epoch this rotation answers: the highest observed when it started.
    pub lease_epoch: u64,
    /// The gateway writer being replaced.
    pub previous_writer: [u8; 32],
    /// The new gateway writer, once generated.
    pub new_writer: Option<[u8; 32]>,
    /// The deposit being revoked, if there was one.
    pub previous_escrow_id: Option<String>,
    /// The new deposit, once made.
    pub new_escrow_id: Option<String>,
    /// When it started.
    pub started_at: Instant,
    /// When it completed.
    pub completed_at: Option<Instant>,
    /// The last failure, while failed.
    pub error: Option<String>,
}

/// The last accepted push of a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotice {
    /// The gateway that sent it.
    pub from: PeerId,
    /// The push.
    pub push: PendingWritePush,
    /// When it arrived.
    pub received_at: Instant,
}

/// Why a push changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushIgnoredReason {
    /// This worker does not own the relay.
    UnknownRelay,
    /// The push is not newer than the stored notice (a retry or a reordered push).
    NotNewer {
        /// The stored notice's `updated_at`.
        stored: UnixTime,
    },
}

impl PushIgnoredReason {
    /// The log/metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PushIgnoredReason::UnknownRelay => "unknown-relay",
            PushIgnoredReason::NotNewer { .. } => "not-newer",
        }
    }
}

/// What the worker reports; drained with [`WorkerCore::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A relay's job state changed.
    JobStateChanged {
        /// The relay.
        relay: RelayKey,
        /// Its new state.
        state: JobState,
    },
    /// A step failed.
    StepFailed {
        /// The relay.
        relay: RelayKey,
        /// The effect's name ([`EffectKind::name`]).
        step: &'static str,
        /// Failed attempts of this step so far.
        attempt: u32,
        /// What the adapter reported.
        error: String,
        /// When it is retried; `None`: out of attempts, the job is in state error.
        retry_at: Option<Instant>,
    },
    /// A rotation started (or resumed after a failure).
    RotationStarted {
        /// The rotation.
        record: RotationRecord,
    },
    /// A rotation completed: the new key is current.
    RotationCompleted {
        /// The rotation.
        record: RotationRecord,
    },
    /// A rotation ran out of attempts.
    RotationFailed {
        /// The rotation.
        record: RotationRecord,
    },
    /// A push changed nothing.
    PushIgnored {
        /// The relay it named.
        relay: RelayKey,
        /// Why.
        reason: PushIgnoredReason,
    },
}

/// Stale input and adapter misuse; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    // Stale input (a late, duplicate or unknown result): drop it.
    /// No effect with this id is outstanding.
    #[error("{0} is not outstanding (late, duplicate or unknown result)")]
    StaleEffect(EffectId),
    // Adapter misuse: the result was counted as a failed attempt of the step.
    /// The output does not answer the effect it was reported for.
    #[error("{id} ({effect}) was answered with output {output}")]
    UnexpectedOutput {
        /// The effect.
        id: EffectId,
        /// Its name.
        effect: &'static str,
        /// The output's name.
        output: &'static str,
    },
    /// The "new" writer key is the current one: that is no rotation.
    #[error("{id}: the generated writer key is the current gateway writer")]
    KeyNotRotated {
        /// The effect.
        id: EffectId,
    },
    /// The relay was never registered with [`WorkerCore::register_relay`].
    #[error("relay {0} is not owned by this worker")]
    UnknownRelay(RelayKey),
}

#[derive(Debug, Clone)]
struct RelayEntry {
    writer: [u8; 32],
    escrow_id: Option<String>,
    /// Length of the current gateway writer log resynced so far (0 for a fresh writer).
    writer_length: u64,
    notice: Option<StoredNotice>,
    /// The newest notice `updated_at` a sent resync-complete covered.
    resynced_through: Option<UnixTime>,
    state: JobState,
    job: Option<Job>,
    observed_epoch: u64,
    rotated_epoch: u64,
    /// A reconnect arrived while a job existed: re-check the lease epoch when it completes.
    recheck_on_finish: bool,
    /// Whether the relay is in the ready list (so it is listed at most once).
    listed: bool,
}

impl RelayEntry {
    /// Whether the stored notice is pending and newer than what was resynced.
    fn needs_resync(&self) -> bool {
        self.notice.as_ref().is_some_and(|notice| {
            notice.push.state == PendingState::Pending
                && self
                    .resynced_through
                    .is_none_or(|done| notice.push.updated_at > done)
        })
    }

    fn needs_rotation(&self) -> bool {
        self.observed_epoch > self.rotated_epoch
    }
}

/// The worker's resync and rotation machine. See the module docs for the contract.
#[derive(Debug)]
pub struct WorkerCore {
    config: WorkerConfig,
    identity: PeerId,
    rng: ChaCha8Rng,
    relays: BTreeMap<RelayKey, RelayEntry>,
    /// Relays whose current step waits for `poll_effect`, in the order they became ready.
    ready: VecDeque<RelayKey>,
    outstanding: BTreeMap<EffectId, RelayKey>,
    /// One retry deadline per relay (a relay runs one step at a time).
    retry_timers: TimerQueue<RelayKey>,
    events: VecDeque<WorkerEvent>,
    history: VecDeque<RotationRecord>,
    next_effect: u64,
    next_rotation: u64,
}

impl WorkerCore {
    /// A worker with no relays. `seed` drives retry jitter and the effect id sequence.
    #[must_use]
    pub fn new(config: WorkerConfig, identity: PeerId, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Ids start at a seeded point so results meant for another instance (a previous run of
        // the same worker) are unlikely to match an outstanding effect of this one.
        let next_effect = rng.next_u64() >> 1;
        Self {
            config,
            identity,
            rng,
            relays: BTreeMap::new(),
            ready: VecDeque::new(),
            outstanding: BTreeMap::new(),
            retry_timers: TimerQueue::new(),
            events: VecDeque::new(),
            history: VecDeque::new(),
            next_effect,
            next_rotation: 1,
        }
    }

    // ---- getters ----

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// This worker's peer id.
    #[must_use]
    pub fn identity(&self) -> PeerId {
        self.identity
    }

    /// The relay's job state (`None`: not owned by this worker).
    #[must_use]
    pub fn job_state(&self, relay: &RelayKey) -> Option<JobState> {
        self.relays.get(relay).map(|entry| entry.state)
    }

    /// The public key of the relay's current gateway writer.
    #[must_use]
    pub fn current_writer(&self, relay: &RelayKey) -> Option<[u8; 32]> {
        self.relays.get(relay).map(|entry| entry.writer)
    }

    /// The relay's current escrow deposit id.
    #[must_use]
    pub fn current_escrow_id(&self, relay: &RelayKey) -> Option<&str> {
        self.relays
            .get(relay)
            .and_then(|entry| entry.escrow_id.as_deref())
    }

    /// The relay's last accepted push.
    #[must_use]
    pub fn stored_notice(&self, relay: &RelayKey) -> Option<&StoredNotice> {
        self.relays
            .get(relay)
            .and_then(|entry| entry.notice.as_ref())
    }

    /// The lease epoch the relay's last completed rotation answered (persist it; see
    /// [`WorkerCore::restore_rotated_epoch`]).
    #[must_use]
    pub fn rotated_epoch(&self, relay: &RelayKey) -> Option<u64> {
        self.relays.get(relay).map(|entry| entry.rotated_epoch)
    }

    /// Recent rotations, oldest first (at most `rotation_history`).
    pub fn rotations(&self) -> impl Iterator<Item = &RotationRecord> {
        self.history.iter()
    }

    // ---- inputs ----

    /// Declares a relay this worker owns, with its current gateway writer and escrow deposit.
    /// Registering it again replaces both (a changed writer starts at length 0); its notice,
    /// job and lease epochs are kept.
    pub fn register_relay(
        &mut self,
        relay: RelayKey,
        gateway_writer: [u8; 32],
        escrow_id: Option<String>,
    ) {
        match self.relays.get_mut(&relay) {
            Some(entry) => {
                if entry.writer != gateway_writer {
                    entry.writer = gateway_writer;
                    entry.writer_length = 0;
                }
                entry.escrow_id = escrow_id;
            }
            None => {
                self.relays.insert(
                    relay,
                    RelayEntry {
                        writer: gateway_writer,
                        escrow_id,
                        writer_length: 0,
                        notice: None,
                        resynced_through: None,
                        state: JobState::Idle,
                        job: None,
                        observed_epoch: 0,
                        rotated_epoch: 0,
                        recheck_on_finish: false,
                        listed: false,
                    },
                );
            }
        }
    }

    /// Raises the epoch the relay's last rotation answered, so a restarted worker does not
    /// rotate again for leases it already rotated for.
    pub fn restore_rotated_epoch(
        &mut self,
        relay: RelayKey,
        epoch: u64,
    ) -> Result<(), WorkerError> {
        let entry = self
            .relays
            .get_mut(&relay)
            .ok_or(WorkerError::UnknownRelay(relay))?;
        entry.rotated_epoch = entry.rotated_epoch.max(epoch);
        entry.observed_epoch = entry.observed_epoch.max(epoch);
        Ok(())
    }

    /// A gateway's pending-write push. See the module docs for the rules.
    #[must_use]
    pub fn handle_push(&mut self, from: PeerId, push: &PendingWritePush, now: Instant) -> PushAck {
        let relay = push.relay_key;
        let ack = |status| PushAck {
            push_id: push.push_id,
            relay_key: relay,
            updated_at: push.updated_at,
            status,
        };
        let Some(entry) = self.relays.get_mut(&relay) else {
            self.events.push_back(WorkerEvent::PushIgnored {
                relay,
                reason: PushIgnoredReason::UnknownRelay,
            });
            // Echo no `updated_at`: a worker that does not own the relay must not
            // count as having received the notice (the gateway would stop retrying).
            return PushAck {
                updated_at: UnixTime(0),
                ..ack(AckStatus::Noop)
            };
        };
        if let Some(epoch) = push.lease_version {
            // Even a stale push names a lease that was issued; taking the max makes it harmless.
            entry.observed_epoch = entry.observed_epoch.max(epoch);
        }
        let stored = entry.notice.as_ref().map(|n| n.push.updated_at);
        if let Some(stored) = stored.filter(|stored| push.updated_at <= *stored) {
            // A re-send of the stored notice is the gateway asking again: a failed job resumes.
            let failed = entry.job.as_ref().is_some_and(|j| j.phase == Phase::Failed);
            if push.updated_at == stored && failed {
                self.revive_failed(relay);
            }
            self.events.push_back(WorkerEvent::PushIgnored {
                relay,
                reason: PushIgnoredReason::NotNewer { stored },
            });
            return ack(AckStatus::Noop);
        }
        entry.notice = Some(StoredNotice {
            from,
            push: push.clone(),
            received_at: now,
        });
        match push.state {
            PendingState::Pending => self.on_pending(relay),
            PendingState::Cleared => self.on_cleared(relay),
        }
        ack(AckStatus::Accepted)
    }

    /// A lease of `relay` with this epoch exists or existed (from a push or the escrow's lease
    /// list). It is acted on at the next reconnect ([`WorkerCore::handle_gateway_connected`]).
    pub fn handle_lease_observed(
        &mut self,
        relay: RelayKey,
        epoch: u64,
        _now: Instant,
    ) -> Result<(), WorkerError> {
        let entry = self
            .relays
            .get_mut(&relay)
            .ok_or(WorkerError::UnknownRelay(relay))?;
        entry.observed_epoch = entry.observed_epoch.max(epoch);
        Ok(())
    }

    /// The link to the gateway came (back) up: failed jobs resume, pending notices get a job,
    /// and relays leased while the worker was away rotate (`worker-reconnect`).
    pub fn handle_gateway_connected(&mut self, _now: Instant) {
        let relays: Vec<RelayKey> = self.relays.keys().copied().collect();
        for relay in relays {
            let Some(entry) = self.relays.get_mut(&relay) else {
                continue;
            };
            match entry.job.as_ref().map(|job| job.phase) {
                Some(phase) => {
                    // The job's rotation may predate the newest lease: look again when it ends.
                    entry.recheck_on_finish = true;
                    if phase == Phase::Failed {
                        self.revive_failed(relay);
                    }
                }
                None if entry.needs_resync() => self.start_resync_job(relay),
                None if entry.needs_rotation() => self.start_job(relay, Job::reconnect_rotation()),
                None => {}
            }
        }
    }

    /// The result of an effect: its output, or why it failed. A failed step is retried with
    /// backoff. Errors: the id is not outstanding (nothing changes), or the output does not fit
    /// the effect (counted as a failed attempt).
    pub fn handle_effect_result(
        &mut self,
        id: EffectId,
        result: Result<EffectOutput, String>,
        now: Instant,
    ) -> Result<(), WorkerError> {
        let relay = *self
            .outstanding
            .get(&id)
            .ok_or(WorkerError::StaleEffect(id))?;
        let is_current = self
            .relays
            .get(&relay)
            .and_then(|entry| entry.job.as_ref())
            .is_some_and(|job| job.phase == Phase::Outstanding(id));
        self.outstanding.remove(&id);
        if !is_current {
            // Unreachable by construction (a job with an outstanding effect is never replaced),
            // but a stale id must never touch a job it does not belong to.
            return Err(WorkerError::StaleEffect(id));
        }
        match result {
            Err(message) => {
                self.step_failed(relay, message, now);
                Ok(())
            }
            Ok(output) => match self.apply_output(relay, id, output) {
                Ok(()) => {
                    self.advance(relay, now);
                    Ok(())
                }
                Err(error) => {
                    self.step_failed(relay, error.to_string(), now);
                    Err(error)
                }
            },
        }
    }

    /// Makes steps whose retry delay has passed ready again.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, relay)) = self.retry_timers.pop_due(now) {
            let Some(entry) = self.relays.get_mut(&relay) else {
                continue;
            };
            let backing_off = entry.job.as_mut().filter(|job| job.phase == Phase::Backoff);
            if let Some(job) = backing_off {
                job.phase = Phase::Ready;
                list(&mut self.ready, relay, entry);
            }
        }
    }

    // ---- outputs ----

    /// The next step to perform.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        while let Some(relay) = self.ready.pop_front() {
            let Some(entry) = self.relays.get_mut(&relay) else {
                continue;
            };
            entry.listed = false;
            let Some(job) = entry.job.as_mut() else {
                continue; // dropped since it was listed
            };
            if job.phase != Phase::Ready {
                continue;
            }
            let Some(step) = job.steps.front() else {
                continue; // a ready job always has a step; skip rather than trust that
            };
            let kind = step.effect_kind(entry.writer, entry.writer_length);
            let id = EffectId(self.next_effect);
            self.next_effect = self.next_effect.wrapping_add(1);
            job.phase = Phase::Outstanding(id);
            job.running = true;
            self.outstanding.insert(id, relay);
            set_state(&mut self.events, relay, entry, JobState::InProgress);
            return Some(Effect { id, relay, kind });
        }
        None
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<WorkerEvent> {
        self.events.pop_front()
    }

    /// The next step retry deadline and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        self.retry_timers
            .next()
            .map(|(at, _)| (at, "resync step retry"))
    }

    // ---- internals ----

    fn on_pending(&mut self, relay: RelayKey) {
        enum Action {
            Rebuild,
            Revive,
            Nothing,
        }
        let Some(entry) = self.relays.get(&relay) else {
            return;
        };
        let action = match &entry.job {
            None => Action::Rebuild,
            // A running job is never disturbed; it runs again for this notice when it completes.
            Some(job) if job.running => Action::Nothing,
            // Nothing irreversible done yet: restart from the newest notice.
            Some(job) if job.rotation.is_none() => Action::Rebuild,
            Some(job) if job.phase == Phase::Failed => Action::Revive,
            Some(_) => Action::Nothing,
        };
        match action {
            Action::Rebuild => self.start_resync_job(relay),
            Action::Revive => self.revive_failed(relay),
            Action::Nothing => {}
        }
    }

    fn on_cleared(&mut self, relay: RelayKey) {
        let Some(entry) = self.relays.get_mut(&relay) else {
            return;
        };
        let droppable = entry
            .job
            .as_ref()
            .is_none_or(|job| !job.running && job.rotation.is_none() && job.notice.is_some());
        if droppable {
            entry.job = None;
            set_state(&mut self.events, relay, entry, JobState::Cleared);
        }
    }

    fn start_resync_job(&mut self, relay: RelayKey) {
        let job = self
            .relays
            .get(&relay)
            .and_then(|entry| entry.notice.as_ref())
            .map(|notice| Job::resync(&notice.push));
        if let Some(job) = job {
            self.start_job(relay, job);
        }
    }

    fn start_job(&mut self, relay: RelayKey, job: Job) {
        let Some(entry) = self.relays.get_mut(&relay) else {
            return;
        };
        entry.job = Some(job);
        list(&mut self.ready, relay, entry);
        set_state(&mut self.events, relay, entry, JobState::Queued);
    }

    /// Resumes a failed job: restarted from the newest notice if it had not reached its
    /// rotation, otherwise at the step that failed, with a fresh attempt budget.
    fn revive_failed(&mut self, relay: RelayKey) {
        let Some(entry) = self.relays.get_mut(&relay) else {
            return;
        };
        let needs_resync = entry.needs_resync();
        let Some(job) = entry.job.as_mut().filter(|job| job.phase == Phase::Failed) else {
            return;
        };
        if job.rotation.is_none() && needs_resync {
            self.start_resync_job(relay);
            return;
        }
        job.phase = Phase::Ready;
        job.failures = 0;
        if let Some(record) = job.rotation.as_mut() {
            record.status = RotationStatus::Pending;
            record.attempts = record.attempts.saturating_add(1);
            record.error = None;
            let record = record.clone();
            update_history(&mut self.history, &record);
            self.events
                .push_back(WorkerEvent::RotationStarted { record });
        }
        list(&mut self.ready, relay, entry);
        set_state(&mut self.events, relay, entry, JobState::Queued);
    }

    /// Applies a successful output to the current step; an output that does not fit is an error.
    fn apply_output(
        &mut self,
        relay: RelayKey,
        id: EffectId,
        output: EffectOutput,
    ) -> Result<(), WorkerError> {
        let Some(entry) = self.relays.get_mut(&relay) else {
            return Err(WorkerError::StaleEffect(id));
        };
        let Some(job) = entry.job.as_mut() else {
            return Err(WorkerError::StaleEffect(id));
        };
        let Some(step) = job.steps.front() else {
            return Err(WorkerError::StaleEffect(id));
        };
        let unexpected = |output: &EffectOutput| WorkerError::UnexpectedOutput {
            id,
            effect: step.name(),
            output: output.name(),
        };
        match (step, &output) {
            (
                Step::Ingest,
                EffectOutput::Ingested {
                    gateway_writer_length,
                },
            ) => {
                // The log only grows: an earlier job may have resynced further already.
                entry.writer_length = entry.writer_length.max(*gateway_writer_length);
            }
            (
                Step::ResyncComplete { through },
                EffectOutput::Done | EffectOutput::ResyncAnswered { .. },
            ) => {
                entry.resynced_through =
                    Some(entry.resynced_through.map_or(*through, |t| t.max(*through)));
                if matches!(output, EffectOutput::ResyncAnswered { cleared: false }) {
                    // Writes newer than this job's notice exist: the old writer
                    // is not final, so no rotation now; the newer notice (its
                    // push follows) runs the job again.
                    job.rotation_deferred = true;
                }
            }
            (
                Step::FetchDrive { .. }
                | Step::ReplayHttp { .. }
                | Step::AppendOwnerOps { .. }
                | Step::Revoke { .. },
                EffectOutput::Done,
            ) => {}
            (Step::GenerateKey, EffectOutput::WriterKey { public }) => {
                let Some(record) = job.rotation.as_mut() else {
                    return Err(WorkerError::StaleEffect(id));
                };
                if *public == record.previous_writer {
                    return Err(WorkerError::KeyNotRotated { id });
                }
                record.new_writer = Some(*public);
                let record = record.clone();
                // Replace the GenerateKey step (popped by `advance`) with the rest of the
                // rotation, now that the new key is known. Order matters: the old
                // deposit is revoked first, so no new lease can write to the old
                // writer; then the old writer is ingested once more, so its final
                // length covers every gateway write made under a lease; only then
                // is it removed from the owner log and the new key deposited.
                job.steps.truncate(1);
                if let Some(escrow_id) = record.previous_escrow_id.clone() {
                    job.steps.push_back(Step::Revoke {
                        escrow_id,
                        reason: record.reason,
                    });
                }
                job.steps.push_back(Step::Ingest);
                job.steps.push_back(Step::AppendOwnerOps {
                    old: record.previous_writer,
                    new: *public,
                });
                job.steps.push_back(Step::Deposit { new: *public });
                update_history(&mut self.history, &record);
            }
            (Step::Deposit { new }, EffectOutput::Deposited { escrow_id }) => {
                entry.writer = *new;
                entry.writer_length = 0;
                entry.escrow_id = Some(escrow_id.clone());
                if let Some(record) = job.rotation.as_mut() {
                    record.new_escrow_id = Some(escrow_id.clone());
                }
            }
            (_, output) => return Err(unexpected(output)),
        }
        Ok(())
    }

    /// The current step succeeded: move to the next one, the rotation, or the end of the job.
    fn advance(&mut self, relay: RelayKey, now: Instant) {
        let Some(entry) = self.relays.get_mut(&relay) else {
            return;
        };
        let Some(job) = entry.job.as_mut() else {
            return;
        };
        job.steps.pop_front();
        job.failures = 0;
        job.phase = Phase::Ready;
        if !job.steps.is_empty() {
            list(&mut self.ready, relay, entry);
            return;
        }
        // Every lease this worker knows of was already answered by a rotation
        // (e.g. a reconnect rotation just ran for it): the current key was
        // never leased, so rotating again would only churn deposits.
        let already_rotated =
            entry.observed_epoch > 0 && entry.observed_epoch <= entry.rotated_epoch;
        if job.rotation.is_none() && !job.rotation_deferred && !already_rotated {
            let record = RotationRecord {
                rotation_id: self.next_rotation,
                relay,
                reason: job.reason,
                status: RotationStatus::Pending,
                attempts: 1,
                lease_epoch: entry.observed_epoch,
                previous_writer: entry.writer,
                new_writer: None,
                previous_escrow_id: entry.escrow_id.clone(),
                new_escrow_id: None,
                started_at: now,
                completed_at: None,
                error: None,
            };
            self.next_rotation = self.next_rotation.saturating_add(1);
            job.rotation = Some(record.clone());
            job.steps.push_back(Step::GenerateKey);
            list(&mut self.ready, relay, entry);
            if self.config.rotation_history > 0 {
                self.history.push_back(record.clone());
                while self.history.len() > self.config.rotation_history {
                    self.history.pop_front();
                }
            }
            self.events
                .push_back(WorkerEvent::RotationStarted { record });
            return;
        }
        self.finish_job(relay, now);
    }

    fn finish_job(&mut self, relay: RelayKey, now: Instant) {
        let Some(entry) = self.relays.get_mut(&relay) else {
            return;
        };
        let Some(job) = entry.job.take() else {
            return;
        };
        if let Some(mut record) = job.rotation {
            record.status = RotationStatus::Completed;
            record.completed_at = Some(now);
            entry.rotated_epoch = entry.rotated_epoch.max(record.lease_epoch);
            update_history(&mut self.history, &record);
            self.events
                .push_back(WorkerEvent::RotationCompleted { record });
        }
        set_state(&mut self.events, relay, entry, JobState::Completed);
        if entry.needs_resync() {
            // A newer notice arrived while the job ran: the writes behind it are not resynced.
            self.start_resync_job(relay);
        } else if entry.recheck_on_finish {
            entry.recheck_on_finish = false;
            if entry.needs_rotation() {
                self.start_job(relay, Job::reconnect_rotation());
            }
        }
    }

    fn step_failed(&mut self, relay: RelayKey, error: String, now: Instant) {
        // One draw per failure, before the relay is borrowed.
        let jitter = self.jitter_permille();
        let Some(entry) = self.relays.get_mut(&relay) else {
            return;
        };
        let Some(job) = entry.job.as_mut() else {
            return;
        };
        job.failures = job.failures.saturating_add(1);
        let step = job.steps.front().map_or("none", Step::name);
        let attempt = job.failures;
        if attempt >= self.config.max_step_attempts.max(1) {
            job.phase = Phase::Failed;
            job.running = false;
            self.events.push_back(WorkerEvent::StepFailed {
                relay,
                step,
                attempt,
                error: error.clone(),
                retry_at: None,
            });
            if let Some(record) = job.rotation.as_mut() {
                record.status = RotationStatus::Failed;
                record.error = Some(error);
                let record = record.clone();
                update_history(&mut self.history, &record);
                self.events
                    .push_back(WorkerEvent::RotationFailed { record });
            }
            set_state(&mut self.events, relay, entry, JobState::Error);
            return;
        }
        let delay = retry_delay(&self.config, attempt, jitter);
        let retry_at = now + delay;
        if delay.is_zero() {
            job.phase = Phase::Ready;
            list(&mut self.ready, relay, entry);
        } else {
            job.phase = Phase::Backoff;
            self.retry_timers.arm(relay, retry_at);
        }
        self.events.push_back(WorkerEvent::StepFailed {
            relay,
            step,
            attempt,
            error,
            retry_at: Some(retry_at),
        });
    }

    /// A jitter factor in permille, uniform in `1000 ± RETRY_JITTER_PERMILLE`.
    fn jitter_permille(&mut self) -> u32 {
        let spread = 2 * RETRY_JITTER_PERMILLE + 1;
        let draw = self.rng.next_u64() % u64::from(spread);
        // `draw < spread`, a u32: the fallback is never taken.
        1000 - RETRY_JITTER_PERMILLE + u32::try_from(draw).unwrap_or(RETRY_JITTER_PERMILLE)
    }
}

/// The delay after the `failures`th failure of a step: `base · 2^(failures-1)`, scaled by the
/// jitter (permille), capped at `step_retry_max` (the cap applies after the jitter, so it holds).
fn retry_delay(config: &WorkerConfig, failures: u32, jitter_permille: u32) -> Duration {
    let max = config.step_retry_max;
    let nominal = 2u32
        .checked_pow(failures.saturating_sub(1))
        .and_then(|factor| config.step_retry_base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max));
    nominal
        .checked_mul(jitter_permille)
        .map_or(max, |scaled| scaled / 1000)
        .min(max)
}

/// Puts the relay on the ready list unless it is there already.
fn list(ready: &mut VecDeque<RelayKey>, relay: RelayKey, entry: &mut RelayEntry) {
    if !entry.listed {
        entry.listed = true;
        ready.push_back(relay);
    }
}

fn set_state(
    events: &mut VecDeque<WorkerEvent>,
    relay: RelayKey,
    entry: &mut RelayEntry,
    state: JobState,
) {
    if entry.state != state {
        entry.state = state;
        events.push_back(WorkerEvent::JobStateChanged { relay, state });
    }
}

/// Replaces the history's copy of `record`, if it is still kept.
fn update_history(history: &mut VecDeque<RotationRecord>, record: &RotationRecord) {
    if let Some(kept) = history
        .iter_mut()
        .rev()
        .find(|kept| kept.rotation_id == record.rotation_id)
    {
        *kept = record.clone();
    }
}

#[cfg(test)]
mod tests;

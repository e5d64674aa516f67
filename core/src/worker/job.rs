//! One relay's resync job: the plan of steps still to run and where the current step is.
//!
//! A job is a queue of [`Step`]s run strictly one at a time. Steps that depend on an earlier
//! step's output (the new writer key) are pushed only once that output is in, so every step
//! carries all the data its effect needs and nothing is read from an `Option` that "must" be set.

use std::collections::VecDeque;

use super::{EffectId, EffectKind, OwnerOp, RotationReason, RotationRecord};
use crate::time::UnixTime;
use crate::wire::{PendingType, PendingWritePush};

/// One unit of work, turned into an [`EffectKind`] when the adapter takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Ingest,
    FetchDrive {
        drive_identifier: Option<String>,
        drive_version: Option<u64>,
    },
    ReplayHttp {
        drive_identifier: Option<String>,
    },
    ResyncComplete {
        through: UnixTime,
    },
    GenerateKey,
    /// Remove the old gateway writer at the length the latest ingest reached
    /// (read at hand-out, after the revoke and the re-ingest), add the new one.
    AppendOwnerOps {
        old: [u8; 32],
        new: [u8; 32],
    },
    Revoke {
        escrow_id: String,
        reason: RotationReason,
    },
    Deposit {
        new: [u8; 32],
    },
}

impl Step {
    /// The effect for this step. The writer log and its length are read at hand-out time, so a
    /// resync-complete reports what the ingest steps before it actually reached.
    pub(super) fn effect_kind(&self, gateway_writer: [u8; 32], writer_length: u64) -> EffectKind {
        match self {
            Step::Ingest => EffectKind::IngestGatewayEvents { gateway_writer },
            Step::FetchDrive {
                drive_identifier,
                drive_version,
            } => EffectKind::FetchDriveFiles {
                drive_identifier: drive_identifier.clone(),
                drive_version: *drive_version,
            },
            Step::ReplayHttp { drive_identifier } => EffectKind::ReplayHttpArtifacts {
                drive_identifier: drive_identifier.clone(),
            },
            Step::ResyncComplete { through } => EffectKind::SendResyncComplete {
                resynced_through: *through,
                gateway_writer_length: writer_length,
            },
            Step::GenerateKey => EffectKind::GenerateWriterKey,
            Step::AppendOwnerOps { old, new } => EffectKind::AppendOwnerOps {
                ops: vec![
                    OwnerOp::RemoveWriter {
                        key: *old,
                        final_length: writer_length,
                    },
                    OwnerOp::AddWriter { key: *new },
                ],
            },
            Step::Revoke { escrow_id, reason } => EffectKind::RevokeDeposit {
                escrow_id: escrow_id.clone(),
                reason: *reason,
            },
            Step::Deposit { new } => EffectKind::DepositWriterKey {
                writer_public: *new,
            },
        }
    }

    /// The name of the effect this step becomes (same as [`EffectKind::name`]).
    pub(super) fn name(&self) -> &'static str {
        match self {
            Step::Ingest => "ingest-gateway-events",
            Step::FetchDrive { .. } => "fetch-drive-files",
            Step::ReplayHttp { .. } => "replay-http-artifacts",
            Step::ResyncComplete { .. } => "send-resync-complete",
            Step::GenerateKey => "generate-writer-key",
            Step::AppendOwnerOps { .. } => "append-owner-ops",
            Step::Revoke { .. } => "revoke-deposit",
            Step::Deposit { .. } => "deposit-writer-key",
        }
    }
}

/// Where the job's current (front) step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the adapter to take it with `poll_effect`.
    Ready,
    /// Handed out; the result for this id is awaited.
    Outstanding(EffectId),
    /// Failed; a retry timer is armed.
    Backoff,
    /// Out of attempts: the job is in state `error` until the next push or reconnect.
    Failed,
}

#[derive(Debug, Clone)]
pub(super) struct Job {
    /// The notice's `updated_at` this job resyncs through; `None` for a reconnect rotation.
    pub(super) notice: Option<UnixTime>,
    /// Why the rotation at the end of this job happens.
    pub(super) reason: RotationReason,
    /// Steps still to run; the front one is the current step.
    pub(super) steps: VecDeque<Step>,
    pub(super) phase: Phase,
    /// Failed attempts of the current step.
    pub(super) failures: u32,
    /// Whether an effect of this job is handed out, or waiting to be retried. A job that is
    /// not running (never started, or failed) may be rebuilt or dropped; a running one never is.
    pub(super) running: bool,
    /// The rotation, once the job reached it. From then on the job holds irreversible progress
    /// (a generated key, owner ops) and is resumed, never rebuilt.
    pub(super) rotation: Option<RotationRecord>,
    /// The gateway answered the resync-complete with "still pending": a write
    /// landed after this job's notice, so the old writer is not final yet and
    /// the rotation waits for the job that covers the newer notice.
    pub(super) rotation_deferred: bool,
}

impl Job {
    /// The full job for a pending notice: its resync steps, then resync-complete; the rotation
    /// is added when those succeeded.
    pub(super) fn resync(push: &PendingWritePush) -> Job {
        let has = |wanted: PendingType| push.types.iter().any(|t| *t == wanted);
        let mut steps = VecDeque::new();
        if has(PendingType::Event) {
            steps.push_back(Step::Ingest);
        }
        if has(PendingType::Drive) {
            steps.push_back(Step::FetchDrive {
                drive_identifier: push
                    .drive_identifier
                    .as_ref()
                    .map(|id| id.as_str().to_owned()),
                drive_version: push.drive_version,
            });
        }
        if has(PendingType::HttpArtifact) {
            steps.push_back(Step::ReplayHttp {
                drive_identifier: push
                    .drive_identifier
                    .as_ref()
                    .map(|id| id.as_str().to_owned()),
            });
        }
        steps.push_back(Step::ResyncComplete {
            through: push.updated_at,
        });
        Job::with_steps(
            Some(push.updated_at),
            RotationReason::PendingWriteResync,
            steps,
        )
    }

    /// A rotation for a lease issued while the worker was away. It still ingests first: the
    /// `RemoveWriter` must carry the length the gateway really wrote to, or entries written
    /// under that lease whose push has not arrived yet would stop counting.
    pub(super) fn reconnect_rotation() -> Job {
        Job::with_steps(
            None,
            RotationReason::WorkerReconnect,
            VecDeque::from([Step::Ingest]),
        )
    }

    fn with_steps(notice: Option<UnixTime>, reason: RotationReason, steps: VecDeque<Step>) -> Job {
        Job {
            notice,
            reason,
            steps,
            phase: Phase::Ready,
            failures: 0,
            running: false,
            rotation_deferred: false,
            rotation: None,
        }
    }
}

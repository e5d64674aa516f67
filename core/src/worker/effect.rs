//! What the worker asks its adapter to do, and what the adapter answers.
//!
//! Contract: every [`Effect`] names one step of one relay's job; the adapter performs it and
//! reports exactly one result for its [`EffectId`]. Each [`EffectKind`] documents the
//! [`EffectOutput`] that answers it; any other output counts as a failed attempt.

use std::fmt;

use super::RotationReason;
use crate::ids::RelayKey;
use crate::time::UnixTime;
use crate::wire::ResyncComplete;

/// Names one handed-out effect. Never reused by a [`WorkerCore`](super::WorkerCore), so a late
/// or duplicate result cannot be mistaken for the answer to a later effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EffectId(pub(super) u64);

impl EffectId {
    /// The raw number, for logs and correlation.
    #[must_use]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EffectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "effect-{}", self.0)
    }
}

/// A membership op the adapter appends to the relay's owner log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerOp {
    /// The writer's entries count only up to `final_length` from now on.
    RemoveWriter {
        /// The writer log's public key.
        key: [u8; 32],
        /// How many of its entries still count.
        final_length: u64,
    },
    /// The writer becomes a member.
    AddWriter {
        /// The writer log's public key.
        key: [u8; 32],
    },
}

/// What the adapter must do; answer with
/// [`WorkerCore::handle_effect_result`](super::WorkerCore::handle_effect_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectKind {
    /// Copy the gateway's events from its writer log into the worker's own log, as far as the
    /// log is available. Answer [`EffectOutput::Ingested`] with the length resynced up to.
    IngestGatewayEvents {
        /// The gateway writer log to read.
        gateway_writer: [u8; 32],
    },
    /// Fetch the files the gateway wrote to the relay's drive. Answer [`EffectOutput::Done`].
    FetchDriveFiles {
        /// The drive, as the gateway named it (absent: the relay's own drive).
        drive_identifier: Option<String>,
        /// The drive version the gateway reached.
        drive_version: Option<u64>,
    },
    /// Replay the HTTP artifacts (joins, auth callbacks) the gateway stored in the relay's
    /// drive. Answer [`EffectOutput::Done`].
    ReplayHttpArtifacts {
        /// The drive the artifacts are in, as the gateway named it (absent: the relay's own).
        drive_identifier: Option<String>,
    },
    /// Send [`ResyncComplete`] to the gateway (see [`Effect::resync_complete`]). Answer
    /// [`EffectOutput::Done`] once it was sent.
    SendResyncComplete {
        /// The notice's `updated_at` this job started from.
        resynced_through: UnixTime,
        /// Length of the gateway writer log resynced.
        gateway_writer_length: u64,
    },
    /// Generate a new writer key pair and keep the secret. Answer [`EffectOutput::WriterKey`].
    GenerateWriterKey,
    /// Append these ops, in order, to the relay's owner log. Answer [`EffectOutput::Done`].
    AppendOwnerOps {
        /// Remove the old gateway writer, add the new one.
        ops: Vec<OwnerOp>,
    },
    /// Revoke the old deposit at the escrow. Answer [`EffectOutput::Done`], also when the escrow
    /// no longer knows the deposit (`escrow-record-not-found`): it is gone either way.
    RevokeDeposit {
        /// The deposit.
        escrow_id: String,
        /// Why, for the escrow's audit log.
        reason: RotationReason,
    },
    /// Deposit the secret of this (new) writer with the escrow. Answer
    /// [`EffectOutput::Deposited`].
    DepositWriterKey {
        /// The writer whose secret the adapter deposits.
        writer_public: [u8; 32],
    },
}

impl EffectKind {
    /// A stable name, for logs and metrics labels.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            EffectKind::IngestGatewayEvents { .. } => "ingest-gateway-events",
            EffectKind::FetchDriveFiles { .. } => "fetch-drive-files",
            EffectKind::ReplayHttpArtifacts { .. } => "replay-http-artifacts",
            EffectKind::SendResyncComplete { .. } => "send-resync-complete",
            EffectKind::GenerateWriterKey => "generate-writer-key",
            EffectKind::AppendOwnerOps { .. } => "append-owner-ops",
            EffectKind::RevokeDeposit { .. } => "revoke-deposit",
            EffectKind::DepositWriterKey { .. } => "deposit-writer-key",
        }
    }
}

/// A step for the adapter to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// Echo it in [`WorkerCore::handle_effect_result`](super::WorkerCore::handle_effect_result).
    pub id: EffectId,
    /// The relay.
    pub relay: RelayKey,
    /// What to do.
    pub kind: EffectKind,
}

impl Effect {
    /// The peer-link message a [`EffectKind::SendResyncComplete`] effect sends.
    #[must_use]
    pub fn resync_complete(&self) -> Option<ResyncComplete> {
        match self.kind {
            EffectKind::SendResyncComplete {
                resynced_through,
                gateway_writer_length,
            } => Some(ResyncComplete {
                relay_key: self.relay,
                resynced_through,
                gateway_writer_length,
            }),
            _ => None,
        }
    }
}

/// What a successful effect produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectOutput {
    /// The step is done and has nothing to report.
    Done,
    /// [`EffectKind::IngestGatewayEvents`]: the gateway writer log was resynced up to here.
    Ingested {
        /// Length of the gateway writer log resynced.
        gateway_writer_length: u64,
    },
    /// [`EffectKind::GenerateWriterKey`]: the new key's public half.
    WriterKey {
        /// The public key; the adapter keeps the secret.
        public: [u8; 32],
    },
    /// [`EffectKind::DepositWriterKey`]: the escrow's id of the new deposit.
    Deposited {
        /// The deposit id.
        escrow_id: String,
    },
    /// [`EffectKind::SendResyncComplete`]: the gateway's answer (`ResyncAck`).
    /// `cleared: true` (like [`EffectOutput::Done`]) lets the rotation run;
    /// `cleared: false` means a gateway write landed after `resynced_through`,
    /// so the rotation waits for the job covering the newer notice.
    ResyncAnswered {
        /// Whether the gateway cleared the relay's pending writes.
        cleared: bool,
    },
}

impl EffectOutput {
    /// A stable name, for errors and logs.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            EffectOutput::Done => "done",
            EffectOutput::Ingested { .. } => "ingested",
            EffectOutput::WriterKey { .. } => "writer-key",
            EffectOutput::Deposited { .. } => "deposited",
            EffectOutput::ResyncAnswered { .. } => "resync-answered",
        }
    }
}

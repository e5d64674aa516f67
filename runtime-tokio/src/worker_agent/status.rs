//! `WorkerStatus`: what `hypergate worker status` shows — relays, per-core mirror lag, pending
//! jobs and rotation history. Updated by the run task after every step; read by the handle.

use std::collections::BTreeMap;

use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::wire::CoreRole;
use hypergate_core::worker::RotationRecord;
use serde::Serialize;

/// One core of a relay, as the gateway's mirror sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreStatus {
    /// The core key (hex).
    pub core_key: String,
    /// owner / writer / gateway-writer.
    pub role: String,
    /// Blocks here.
    pub length: u64,
    /// Blocks the gateway's mirror holds, as its last request showed (0: not asked yet).
    pub mirrored: u64,
    /// `length - mirrored`, in blocks.
    pub lag_blocks: u64,
}

/// One relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayStatus {
    /// The relay key (hex).
    pub relay_key: String,
    /// The resync job state (`idle`, `queued`, `in-progress`, `completed`, `error`, `cleared`).
    pub job_state: String,
    /// The current gateway writer (hex).
    pub gateway_writer: String,
    /// Its escrow deposit.
    pub escrow_id: Option<String>,
    /// Its cores.
    pub cores: Vec<CoreStatus>,
}

/// One rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationEntry {
    /// Increasing id.
    pub rotation_id: u64,
    /// The relay (hex).
    pub relay_key: String,
    /// `pending-write-resync` or `worker-reconnect`.
    pub reason: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// The replaced writer (hex).
    pub previous_writer: String,
    /// The new writer (hex), once generated.
    pub new_writer: Option<String>,
    /// The revoked deposit.
    pub previous_escrow_id: Option<String>,
    /// The new deposit.
    pub new_escrow_id: Option<String>,
    /// The last failure.
    pub error: Option<String>,
}

/// The agent's state for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// This worker (hex).
    pub worker: String,
    /// Whether the gateway link is up.
    pub gateway_connected: bool,
    /// Successful connects so far.
    pub connects: u64,
    /// Relays, by key.
    pub relays: Vec<RelayStatus>,
    /// Jobs queued or running.
    pub pending_jobs: usize,
    /// Recent rotations, oldest first.
    pub rotations: Vec<RotationEntry>,
    /// Pushes refused because they did not come from the pinned gateway.
    pub refused_pushes: u64,
    /// NIP-01 sessions the gateway forwards that are being served right now (a session
    /// counts until its live subscriptions are unregistered).
    pub forwarded_sessions: usize,
}

/// The mutable status the run task maintains.
#[derive(Debug)]
pub(crate) struct StatusState {
    pub(crate) worker: PeerId,
    pub(crate) connected: bool,
    pub(crate) connects: u64,
    pub(crate) relays: BTreeMap<RelayKey, RelayStatus>,
    /// Per core: (relay, role, local length, mirrored length).
    pub(crate) cores: BTreeMap<[u8; 32], (RelayKey, CoreRole, u64, u64)>,
    pub(crate) pending_jobs: usize,
    pub(crate) rotations: Vec<RotationRecord>,
    pub(crate) refused_pushes: u64,
}

impl StatusState {
    pub(crate) fn new(worker: PeerId) -> Self {
        Self {
            worker,
            connected: false,
            connects: 0,
            relays: BTreeMap::new(),
            cores: BTreeMap::new(),
            pending_jobs: 0,
            rotations: Vec::new(),
            refused_pushes: 0,
        }
    }

    pub(crate) fn snapshot(&self) -> WorkerStatus {
        let mut relays = self.relays.clone();
        for (key, (relay, role, length, mirrored)) in &self.cores {
            if let Some(status) = relays.get_mut(relay) {
                status.cores.push(CoreStatus {
                    core_key: hex::encode(key),
                    role: role.as_str().to_owned(),
                    length: *length,
                    mirrored: *mirrored,
                    lag_blocks: length.saturating_sub(*mirrored),
                });
            }
        }
        WorkerStatus {
            worker: self.worker.to_hex(),
            gateway_connected: self.connected,
            connects: self.connects,
            relays: relays.into_values().collect(),
            pending_jobs: self.pending_jobs,
            rotations: self.rotations.iter().map(entry).collect(),
            refused_pushes: self.refused_pushes,
            forwarded_sessions: 0,
        }
    }
}

fn entry(record: &RotationRecord) -> RotationEntry {
    RotationEntry {
        rotation_id: record.rotation_id,
        relay_key: record.relay.to_hex(),
        reason: record.reason.as_str().to_owned(),
        status: record.status.as_str().to_owned(),
        previous_writer: hex::encode(record.previous_writer),
        new_writer: record.new_writer.map(hex::encode),
        previous_escrow_id: record.previous_escrow_id.clone(),
        new_escrow_id: record.new_escrow_id.clone(),
        error: record.error.clone(),
    }
}

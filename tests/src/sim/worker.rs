//! A simulated worker: the production [`WorkerCore`] plus the adapter around
//! it — heartbeats, the relay's registration, and the effects the core asks
//! for, performed against an in-memory model of the logs.
//!
//! The store holds the ids of gateway-written events the worker ingested.
//! Effects that need the network (resync-complete, escrow calls) are sent and
//! answered through the simulated network; an answer that does not come
//! within [`EFFECT_TIMEOUT`] is reported to the core as a failure, which it
//! retries with backoff. A process restart fails every effect in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hypergate_core::escrow::{DepositInput, PolicyConfig};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    BoundedString, BoundedVec, EscrowRegistration, Frame, Heartbeat, Message, RegisterRelays,
    RelayMetadata, RelayRegistration, ResyncComplete, ResyncStatus,
};
use hypergate_core::worker::{
    EffectId, EffectKind, EffectOutput, OwnerOp, WorkerConfig, WorkerCore,
};

use super::{EscrowAnswer, EscrowRequest, GATEWAY_ID, SimConfig};

/// How long the adapter waits for an answer before failing the effect.
pub(crate) const EFFECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the adapter sends as a result of effects.
pub(crate) enum Output {
    Frame(Frame),
    EscrowCall(u64, EscrowRequest),
}

#[derive(Debug, Clone, Copy)]
enum Waiting {
    ResyncAck { request_id: u64 },
    Escrow { call: u64 },
}

pub(crate) struct SimWorker {
    pub(crate) index: usize,
    pub(crate) peer: PeerId,
    pub(crate) relay: RelayKey,
    pub(crate) alive: bool,
    core: WorkerCore,
    seed: u64,
    heartbeat: Duration,
    next_heartbeat: Instant,
    seq: u64,
    /// Gateway-written events this worker holds.
    pub(crate) store: BTreeSet<u64>,
    /// Events clients wrote through the worker itself (forwarded writes).
    pub(crate) own_events: u64,
    /// Gateway writers removed from the relay, with the length they count up to.
    pub(crate) final_lengths: BTreeMap<[u8; 32], u64>,
    pub(crate) current_writer: [u8; 32],
    pub(crate) escrow_id: Option<String>,
    waiting: BTreeMap<EffectId, (Waiting, Instant)>,
    results: Vec<(EffectId, Result<EffectOutput, String>)>,
    keys_generated: u64,
    /// Print effects to stderr (`SIM_TRACE=1`).
    trace: bool,
    deposits_made: u64,
    next_request: u64,
}

impl SimWorker {
    pub(crate) fn new(index: usize, seed: u64, config: &SimConfig) -> Self {
        let tag = u8::try_from(index % 200).unwrap_or(0);
        let peer = PeerId([tag.wrapping_add(1); 32]);
        let relay = RelayKey([tag.wrapping_add(100); 32]);
        let mut writer = [tag; 32];
        writer[31] = 0xff;
        Self {
            index,
            peer,
            relay,
            alive: false,
            core: WorkerCore::new(WorkerConfig::default(), peer, seed ^ index as u64),
            seed,
            heartbeat: config.heartbeat,
            next_heartbeat: Instant::now(),
            seq: 0,
            store: BTreeSet::new(),
            own_events: 0,
            final_lengths: BTreeMap::new(),
            current_writer: writer,
            escrow_id: None,
            waiting: BTreeMap::new(),
            results: Vec::new(),
            keys_generated: 0,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            deposits_made: 0,
            next_request: 1,
        }
    }

    /// The key of the relay's owner log (what the gateway mirrors).
    pub(crate) fn owner_core(&self) -> [u8; 32] {
        let mut core = self.relay.0;
        core[0] ^= 0x55;
        core
    }

    pub(crate) fn register_with_core(&mut self, writer: [u8; 32], escrow_id: Option<String>) {
        self.current_writer = writer;
        self.escrow_id.clone_from(&escrow_id);
        self.core.register_relay(self.relay, writer, escrow_id);
    }

    pub(crate) fn restart(&mut self, now: Instant) {
        self.alive = true;
        self.next_heartbeat = now + self.heartbeat;
        // The process died: nothing it was waiting for will be answered.
        let in_flight: Vec<EffectId> = self.waiting.keys().copied().collect();
        self.waiting.clear();
        for id in in_flight {
            self.results.push((id, Err("worker restarted".into())));
        }
    }

    pub(crate) fn restart_with_identity(&mut self, peer: PeerId, now: Instant) {
        // What the worker persists about its relay survives the new identity:
        // the current gateway writer, its deposit, and the last rotated epoch.
        // A job in flight does not: the gateway pushes its notice again.
        let writer = self
            .core
            .current_writer(&self.relay)
            .unwrap_or(self.current_writer);
        let escrow_id = self
            .core
            .current_escrow_id(&self.relay)
            .map(str::to_owned)
            .or_else(|| self.escrow_id.clone());
        let rotated = self.core.rotated_epoch(&self.relay).unwrap_or(0);
        self.peer = peer;
        self.core = WorkerCore::new(WorkerConfig::default(), peer, self.seed ^ peer.0[0] as u64);
        self.register_with_core(writer, escrow_id);
        let _ = self.core.restore_rotated_epoch(self.relay, rotated);
        self.waiting.clear();
        self.results.clear();
        self.restart(now);
    }

    pub(crate) fn registration_frame(&mut self) -> Frame {
        let escrow = self.escrow_id.as_ref().map(|escrow_id| EscrowRegistration {
            escrow_id: BoundedString::truncating(escrow_id),
            policy_version: BoundedString::truncating(&PolicyConfig::default().version),
            permitted_gateways: BoundedVec::new(vec![GATEWAY_ID])
                .unwrap_or_else(|_| BoundedVec::empty()),
            expires_at: UnixTime(u64::MAX / 2),
        });
        let registration = RelayRegistration {
            relay_key: self.relay,
            identifiers: BoundedVec::empty(),
            metadata: RelayMetadata::default(),
            requires_auth: false,
            escrow,
        };
        Frame {
            request_id: self.request_id(),
            message: Message::RegisterRelays(RegisterRelays {
                relays: BoundedVec::new(vec![registration]).unwrap_or_else(|_| BoundedVec::empty()),
            }),
        }
    }

    pub(crate) fn on_gateway_connected(&mut self, escrow_epoch: u64, now: Instant) {
        if escrow_epoch > 0 {
            // Only fails for a relay this worker does not own, which cannot happen here.
            let _ = self
                .core
                .handle_lease_observed(self.relay, escrow_epoch, now);
        }
        self.core.handle_gateway_connected(now);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if !self.alive {
            return None;
        }
        [
            Some(self.next_heartbeat),
            self.core.poll_timeout().map(|(at, _)| at),
            self.waiting.values().map(|(_, at)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Heartbeats, the core's timers and effect timeouts due at `now`.
    pub(crate) fn on_time(&mut self, now: Instant) -> Vec<Frame> {
        if !self.alive {
            return Vec::new();
        }
        let mut frames = Vec::new();
        if self.next_heartbeat <= now {
            self.seq += 1;
            self.next_heartbeat = now + self.heartbeat;
            frames.push(Frame {
                request_id: self.request_id(),
                message: Message::Heartbeat(Heartbeat {
                    seq: self.seq,
                    sent_at: UnixTime(0),
                }),
            });
        }
        self.core.handle_timeout(now);
        let expired: Vec<EffectId> = self
            .waiting
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.waiting.remove(&id);
            self.results.push((id, Err("no answer".into())));
        }
        frames
    }

    /// A frame from the gateway; returns the replies.
    pub(crate) fn on_frame(&mut self, frame: Frame, now: Instant) -> Vec<Frame> {
        if !self.alive {
            return Vec::new();
        }
        match frame.message {
            Message::PendingWritePush(push) => {
                let ack = self.core.handle_push(GATEWAY_ID, &push, now);
                vec![Frame {
                    request_id: frame.request_id,
                    message: Message::PushAck(ack),
                }]
            }
            Message::NostrFrame(_) => {
                self.own_events += 1;
                Vec::new()
            }
            Message::ResyncAck(answer) => {
                let answered = self
                    .waiting
                    .iter()
                    .find_map(|(id, (waiting, _))| match waiting {
                        Waiting::ResyncAck { request_id } if *request_id == frame.request_id => {
                            Some(*id)
                        }
                        _ => None,
                    });
                if let Some(id) = answered {
                    self.waiting.remove(&id);
                    let result = match answer.status {
                        ResyncStatus::Cleared => Ok(EffectOutput::ResyncAnswered { cleared: true }),
                        ResyncStatus::StillPending => {
                            Ok(EffectOutput::ResyncAnswered { cleared: false })
                        }
                        ResyncStatus::Refused => Err("resync-complete refused".to_owned()),
                    };
                    self.results.push((id, result));
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn on_escrow_answer(&mut self, call: u64, answer: EscrowAnswer, _now: Instant) {
        if !self.alive {
            return;
        }
        let answered = self
            .waiting
            .iter()
            .find_map(|(id, (waiting, _))| match waiting {
                Waiting::Escrow { call: waiting_call } if *waiting_call == call => Some(*id),
                _ => None,
            });
        let Some(id) = answered else {
            return;
        };
        self.waiting.remove(&id);
        let result = match answer {
            EscrowAnswer::Deposited { escrow_id } => {
                self.escrow_id = Some(escrow_id.clone());
                Ok(EffectOutput::Deposited { escrow_id })
            }
            EscrowAnswer::Revoked => Ok(EffectOutput::Done),
            EscrowAnswer::Failed(reason) | EscrowAnswer::Refused { reason, .. } => Err(reason),
            EscrowAnswer::Granted(_) => Err("unexpected grant".into()),
        };
        self.results.push((id, result));
    }

    /// Feeds results to the core and performs the effects it asks for.
    pub(crate) fn run_effects(
        &mut self,
        gateway_logs: &BTreeMap<[u8; 32], Vec<u64>>,
        gateway_reachable: bool,
        skip_ingest: bool,
        next_call: &mut u64,
        now: Instant,
    ) -> Vec<Output> {
        let mut outputs = Vec::new();
        if !self.alive {
            return outputs;
        }
        for _ in 0..32 {
            let mut progressed = false;
            for (id, result) in std::mem::take(&mut self.results) {
                progressed = true;
                // A stale id (e.g. after a restart) is the core's to refuse.
                let _ = self.core.handle_effect_result(id, result, now);
            }
            while let Some(effect) = self.core.poll_effect() {
                progressed = true;
                if self.trace {
                    eprintln!("          worker {} effect {:?}", self.index, effect.kind);
                }
                match effect.kind {
                    EffectKind::IngestGatewayEvents { gateway_writer } => {
                        let result = if gateway_reachable {
                            let log = gateway_logs
                                .get(&gateway_writer)
                                .cloned()
                                .unwrap_or_default();
                            if !skip_ingest {
                                self.store.extend(log.iter().copied());
                            }
                            Ok(EffectOutput::Ingested {
                                gateway_writer_length: log.len() as u64,
                            })
                        } else {
                            Err("gateway unreachable".into())
                        };
                        self.results.push((effect.id, result));
                    }
                    EffectKind::FetchDriveFiles { .. } | EffectKind::ReplayHttpArtifacts { .. } => {
                        self.results.push((effect.id, Ok(EffectOutput::Done)));
                    }
                    EffectKind::SendResyncComplete {
                        resynced_through,
                        gateway_writer_length,
                    } => {
                        let request_id = self.request_id();
                        self.waiting.insert(
                            effect.id,
                            (Waiting::ResyncAck { request_id }, now + EFFECT_TIMEOUT),
                        );
                        outputs.push(Output::Frame(Frame {
                            request_id,
                            message: Message::ResyncComplete(ResyncComplete {
                                relay_key: effect.relay,
                                resynced_through,
                                gateway_writer_length,
                            }),
                        }));
                    }
                    EffectKind::GenerateWriterKey => {
                        self.keys_generated += 1;
                        let mut public = [0u8; 32];
                        public[..8].copy_from_slice(&self.keys_generated.to_be_bytes());
                        public[8] = u8::try_from(self.index % 256).unwrap_or(0);
                        public[31] = 0x77;
                        self.current_writer = public;
                        self.results
                            .push((effect.id, Ok(EffectOutput::WriterKey { public })));
                    }
                    EffectKind::AppendOwnerOps { ops } => {
                        for op in ops {
                            if let OwnerOp::RemoveWriter { key, final_length } = op {
                                self.final_lengths.insert(key, final_length);
                            }
                        }
                        self.results.push((effect.id, Ok(EffectOutput::Done)));
                    }
                    EffectKind::RevokeDeposit { escrow_id, .. } => {
                        let call = *next_call;
                        *next_call += 1;
                        self.waiting
                            .insert(effect.id, (Waiting::Escrow { call }, now + EFFECT_TIMEOUT));
                        outputs.push(Output::EscrowCall(
                            call,
                            EscrowRequest::Revoke { escrow_id },
                        ));
                    }
                    EffectKind::DepositWriterKey { writer_public } => {
                        self.deposits_made += 1;
                        let call = *next_call;
                        *next_call += 1;
                        let input = DepositInput {
                            escrow_id: format!(
                                "escrow-{}-{}-{}",
                                self.index,
                                self.peer.short(),
                                self.deposits_made
                            ),
                            relay_key: effect.relay,
                            owner: self.peer,
                            permitted_requesters: BTreeSet::from([GATEWAY_ID]),
                            requested_expires_at: None,
                            policy_version: PolicyConfig::default().version,
                        };
                        self.waiting
                            .insert(effect.id, (Waiting::Escrow { call }, now + EFFECT_TIMEOUT));
                        outputs.push(Output::EscrowCall(
                            call,
                            EscrowRequest::Deposit {
                                input,
                                writer: writer_public,
                            },
                        ));
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        outputs
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        (self.index as u64) << 40 | self.next_request
    }
}

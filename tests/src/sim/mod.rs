//! The whole core under churn: one gateway, one escrow, N workers and M
//! clients as core instances on a virtual clock and a seeded lossy network.
//!
//! Every party is a production core machine ([`Gateway`], [`Escrow`],
//! [`WorkerCore`](hypergate_core::worker::WorkerCore)); this module is only their adapter: it carries frames and
//! escrow calls over [`net::Net`], performs the workers' effects against an
//! in-memory model of the logs (the gateway writer log, each worker's store),
//! and draws one transition per step — worker join/leave/crash/restart (also
//! with a new identity), partitions and heals between any two parties, escrow
//! down/up (restarting from its snapshot), gateway restart (from its persisted
//! registry), client writes and reads, and the passage of time.
//!
//! After every step it checks the invariants (`checks`); a violation
//! carries the seed (`SIM_SEED=<seed>` replays it). A reference model (plain
//! maps, no timers) predicts which client writes the gateway must accept. At
//! the end every fault is healed, every worker brought back, and time runs
//! until the system is quiet: then no accepted write may be missing from its
//! relay's worker and no pending notice may remain. The trace hash covers
//! every event at its virtual time, for the run-twice determinism check.

mod checks;
pub mod net;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use hypergate_core::escrow::{
    DepositInput, Escrow, EscrowEvent, PolicyConfig, RevokeTarget, UnlockOutcome, UnlockRequest,
};
use hypergate_core::gateway::{Gateway, GatewayConfig, GatewayEvent, WriteId, WriteVerdict};
use hypergate_core::health::HealthConfig;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::{EndReason, LeaseConfig, LeaseEvent, LeaseGrant, LeaseId};
use hypergate_core::registry::{PendingMark, Registry};
use hypergate_core::router::{RouterConfig, RouterEvent, SessionId, SessionKind, Target};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{Frame, Message, PendingType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::net::{Net, NetConfig, Node};
use self::worker::SimWorker;

/// The gateway's identity (the escrow's permitted requester).
pub const GATEWAY_ID: PeerId = PeerId([0xee; 32]);

/// Deliberately broken variants, to prove the checks catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The gateway ignores lease expiry (the original's defect).
    pub gateway_ignores_lease_expiry: bool,
    /// Workers acknowledge resyncs without ingesting (the original's defect).
    pub workers_skip_ingest: bool,
}

/// Shape of one run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Workers (each owns one relay).
    pub workers: usize,
    /// Client sessions.
    pub clients: usize,
    /// Steps before the final heal.
    pub steps: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// The network.
    pub net: NetConfig,
    /// Lease lifetime at the escrow (short, so leases expire and renew often).
    pub lease_ttl: Duration,
    /// Broken variants.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            clients: 6,
            steps: 250,
            heartbeat: Duration::from_secs(5),
            net: NetConfig::default(),
            lease_ttl: Duration::from_secs(120),
            faults: Faults::default(),
        }
    }
}

/// A broken invariant and how to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The seed.
    pub seed: u64,
    /// The step (`usize::MAX` during the final quiescence).
    pub step: usize,
    /// What broke.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = if self.step == usize::MAX {
            "the final quiescence".to_owned()
        } else {
            format!("step {}", self.step)
        };
        write!(
            f,
            "simulation invariant broken at {step} of seed {}: {} (replay: SIM_SEED={} cargo test -p hypergate-tests --test simulation)",
            self.seed, self.message, self.seed
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// FNV-1a over the event trace.
    pub trace_hash: u64,
    /// Counts of notable happenings.
    pub counts: BTreeMap<&'static str, u64>,
}

/// Payloads on the simulated network.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// A peer-link frame (gateway ⇄ worker).
    Frame(Frame),
    /// A call to the escrow service.
    EscrowCall { call: u64, request: EscrowRequest },
    /// The escrow's answer to a call.
    EscrowAnswer { call: u64, answer: EscrowAnswer },
    /// The escrow telling the gateway a lease ended on its side (revoke, expiry).
    LeaseEndedAtEscrow { id: LeaseId, reason: EndReason },
}

#[derive(Debug, Clone)]
pub(crate) enum EscrowRequest {
    Unlock {
        request: UnlockRequest,
        renewing: Option<LeaseId>,
    },
    Release {
        lease: LeaseId,
        reason: EndReason,
    },
    Revoke {
        escrow_id: String,
    },
    Deposit {
        input: DepositInput,
        /// The public half of the deposited writer key (inside the sealed
        /// package in the real protocol).
        writer: [u8; 32],
    },
}

#[derive(Debug, Clone)]
pub(crate) enum EscrowAnswer {
    Granted(LeaseGrant),
    Refused { reason: String },
    Revoked,
    Deposited { escrow_id: String },
    Failed(String),
}

/// A write the gateway accepted (OK true), to find later in a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AcceptedWrite {
    pub(crate) relay: RelayKey,
    pub(crate) id: u64,
    /// The gateway writer log it was appended to, and its index there.
    pub(crate) writer: [u8; 32],
    pub(crate) index: u64,
}

/// The reference model: plain maps, no timers.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// The lease the gateway holds, as the model tracks it from grants and ends.
    pub(crate) leases: BTreeMap<RelayKey, (LeaseId, Instant)>,
}

pub(crate) struct Sim {
    pub(crate) config: SimConfig,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) net: Net<Payload>,
    pub(crate) gateway: Gateway,
    gateway_config: GatewayConfig,
    pub(crate) escrow: Escrow,
    pub(crate) workers: Vec<SimWorker>,
    /// The gateway writer logs, by writer key: the ids of events appended under a lease.
    pub(crate) gateway_logs: BTreeMap<[u8; 32], Vec<u64>>,
    /// The writer key each escrow deposit holds.
    pub(crate) writer_of_deposit: BTreeMap<String, [u8; 32]>,
    /// Which escrow deposit (and so which writer key) each appended write used.
    pub(crate) accepted: BTreeSet<AcceptedWrite>,
    pub(crate) sessions: BTreeMap<SessionId, RelayKey>,
    /// Writes waiting for a lease answer: write id → session's relay.
    waiting: BTreeMap<WriteId, RelayKey>,
    next_write: u64,
    next_call: u64,
    /// Escrow calls in flight from the gateway: call id → what to do with the answer.
    gateway_calls: BTreeMap<u64, RelayKey>,
    pending_attempts: BTreeSet<(
        Instant,
        SessionId,
        hypergate_core::router::AttemptId,
        PeerId,
    )>,
    pub(crate) model: Model,
    pub(crate) hash: u64,
    pub(crate) counts: BTreeMap<&'static str, u64>,
    pub(crate) healthy_since: BTreeMap<PeerId, Instant>,
    pub(crate) replica_since: BTreeMap<SessionId, Instant>,
    escrow_snapshot: Option<hypergate_core::escrow::EscrowSnapshot>,
    /// Print the trace to stderr (`SIM_TRACE=1`), for replaying a failure.
    trace: bool,
}

/// Runs one seed of the simulation.
pub fn run(seed: u64, config: &SimConfig, start: Instant) -> Result<Report, Violation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let steps: Vec<u8> = (0..config.steps).map(|_| rng.random()).collect();
    run_with_steps(seed, config, start, &steps)
}

/// Runs the simulation with transitions chosen by `choices` (one byte per
/// step) and everything else from `seed`: the fuzz target's entry point.
pub fn run_with_steps(
    seed: u64,
    config: &SimConfig,
    start: Instant,
    choices: &[u8],
) -> Result<Report, Violation> {
    let mut sim = Sim::new(seed, config.clone(), start);
    for (step, choice) in choices.iter().enumerate() {
        sim.step(*choice).map_err(|message| Violation {
            seed,
            step,
            message,
        })?;
        sim.check_step().map_err(|message| Violation {
            seed,
            step,
            message,
        })?;
    }
    sim.quiesce().map_err(|message| Violation {
        seed,
        step: usize::MAX,
        message,
    })?;
    Ok(Report {
        seed,
        trace_hash: sim.hash,
        counts: sim.counts,
    })
}

/// The escrow policy of the simulation: the defaults with the sim's lease TTL.
fn sim_policy(config: &SimConfig) -> PolicyConfig {
    PolicyConfig {
        lease_ttl: config.lease_ttl,
        ..PolicyConfig::default()
    }
}

impl Sim {
    fn new(seed: u64, config: SimConfig, start: Instant) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let lease_ttl = config.lease_ttl;
        let gateway_config = GatewayConfig {
            health: HealthConfig {
                heartbeat_interval: config.heartbeat,
                miss_limit: 3,
                failure_limit: 3,
            },
            router: RouterConfig {
                attempt_timeout: Duration::from_millis(500),
                replica_retry: config.heartbeat,
            },
            lease: LeaseConfig {
                ttl: lease_ttl,
                warning_before: lease_ttl / 4,
                request_timeout: Duration::from_secs(10),
            },
            seed,
            ..GatewayConfig::default()
        };
        let unix = UnixTime(1_700_000_000_000);
        let mut gateway = Gateway::new(gateway_config, start, unix);
        if config.faults.gateway_ignores_lease_expiry {
            gateway.inject_fault_ignore_lease_expiry();
        }
        let policy = sim_policy(&config);
        let escrow = Escrow::new(
            policy,
            LeaseConfig {
                ttl: lease_ttl,
                ..LeaseConfig::default()
            },
            start,
            unix,
        );
        let workers = (0..config.workers.max(1))
            .map(|index| SimWorker::new(index, seed, &config))
            .collect();
        let mut sim = Self {
            net: Net::new(config.net),
            config,
            rng,
            start,
            now: start,
            gateway,
            gateway_config,
            escrow,
            workers,
            gateway_logs: BTreeMap::new(),
            writer_of_deposit: BTreeMap::new(),
            accepted: BTreeSet::new(),
            sessions: BTreeMap::new(),
            waiting: BTreeMap::new(),
            next_write: 1,
            next_call: 1,
            gateway_calls: BTreeMap::new(),
            pending_attempts: BTreeSet::new(),
            model: Model::default(),
            hash: 0xcbf2_9ce4_8422_2325,
            counts: BTreeMap::new(),
            healthy_since: BTreeMap::new(),
            replica_since: BTreeMap::new(),
            escrow_snapshot: None,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        };
        // Every worker starts, deposits its relay's first writer key, and connects.
        for index in 0..sim.workers.len() {
            sim.initial_deposit(index);
            sim.worker_start(index, false);
        }
        sim
    }

    fn initial_deposit(&mut self, index: usize) {
        let worker = &self.workers[index];
        let escrow_id = format!("escrow-{}-0", worker.index);
        let input = DepositInput {
            escrow_id: escrow_id.clone(),
            relay_key: worker.relay,
            owner: worker.peer,
            permitted_requesters: BTreeSet::from([GATEWAY_ID]),
            requested_expires_at: None,
            policy_version: PolicyConfig::default().version,
        };
        if self.escrow.handle_deposit(input, self.now).is_ok() {
            let writer = worker.current_writer;
            self.writer_of_deposit.insert(escrow_id.clone(), writer);
            self.workers[index].register_with_core(writer, Some(escrow_id));
        }
        self.drain_escrow();
    }

    // ---- the step ----

    fn step(&mut self, choice: u8) -> Result<(), String> {
        let worker = usize::from(self.rng.random::<u8>()) % self.workers.len();
        self.observe(&format!("step choice={} worker={worker}", choice % 32));
        match choice % 32 {
            0 => self.worker_crash(worker),
            1 => self.worker_leave(worker),
            2 | 3 => {
                if !self.workers[worker].alive {
                    let new_identity = self.rng.random_bool(0.3);
                    self.worker_start(worker, new_identity);
                }
            }
            4 => {
                self.net.partition(Node::Gateway, Node::Worker(worker));
                self.count("partition");
            }
            5 | 6 => self.net.heal(Node::Gateway, Node::Worker(worker)),
            7 => {
                let (a, b) = if self.rng.random_bool(0.5) {
                    (Node::Gateway, Node::Escrow)
                } else {
                    (Node::Worker(worker), Node::Escrow)
                };
                self.net.partition(a, b);
            }
            8 => {
                self.net.heal(Node::Gateway, Node::Escrow);
                self.net.heal(Node::Worker(worker), Node::Escrow);
            }
            9 => self.escrow_down(),
            10 => self.escrow_up(),
            11 => self.gateway_restart(),
            12..=17 => self.client_write()?,
            18 | 19 => self.client_read(),
            20 | 21 => self.open_session(),
            _ => {
                let by = Duration::from_millis(self.rng.random_range(1..20_000));
                self.advance(by)?;
            }
        }
        self.settle()
    }

    // ---- transitions ----

    fn worker_crash(&mut self, index: usize) {
        if self.workers[index].alive {
            self.workers[index].alive = false;
            self.net.set_down(Node::Worker(index), true);
            self.count("worker-crash");
        }
    }

    fn worker_leave(&mut self, index: usize) {
        if self.workers[index].alive {
            self.workers[index].alive = false;
            self.net.set_down(Node::Worker(index), true);
            let peer = self.workers[index].peer;
            self.gateway.handle_link_down(peer, self.now);
            self.count("worker-leave");
        }
    }

    fn worker_start(&mut self, index: usize, new_identity: bool) {
        self.net.set_down(Node::Worker(index), false);
        let now = self.now;
        if new_identity {
            let fresh = self.rng.random::<[u8; 32]>();
            self.workers[index].restart_with_identity(PeerId(fresh), now);
            self.count("worker-new-identity");
        } else {
            self.workers[index].restart(now);
        }
        self.count("worker-start");
        self.connect_worker(index);
    }

    /// The worker's link to the gateway comes up: register, learn leases.
    fn connect_worker(&mut self, index: usize) {
        if !self.net.connected(Node::Gateway, Node::Worker(index)) {
            return;
        }
        let peer = self.workers[index].peer;
        self.gateway.handle_link_up(peer, self.now);
        let frame = self.workers[index].registration_frame();
        self.gateway.handle_frame(peer, frame, self.now);
        self.mirror_worker(index);
        // On reconnect the worker asks the escrow which leases were issued
        // while it was away (a direct read of the escrow's records here).
        let relay = self.workers[index].relay;
        let epoch = self.escrow_epoch(&relay);
        let now = self.now;
        self.workers[index].on_gateway_connected(epoch, now);
    }

    /// Replication of the worker's own log into the gateway's mirror store,
    /// modelled as complete whenever the two can talk: the worker advertises
    /// its length and the mirror stores every (verified) block of it.
    fn mirror_worker(&mut self, index: usize) {
        let worker = &self.workers[index];
        let relay = worker.relay;
        let core = worker.owner_core();
        let length = worker.own_events + 1;
        let peer = worker.peer;
        let advert = Frame {
            request_id: 0,
            message: Message::MirrorAdvertise(hypergate_core::wire::MirrorAdvertise {
                cores: hypergate_core::wire::BoundedVec::new(vec![
                    hypergate_core::wire::CoreAdvert {
                        core_key: core,
                        relay_key: relay,
                        role: hypergate_core::wire::CoreRole::Owner,
                        length,
                        announce: true,
                        priority: 1,
                    },
                ])
                .unwrap_or_else(|_| hypergate_core::wire::BoundedVec::empty()),
            }),
        };
        self.gateway.handle_frame(peer, advert, self.now);
        self.gateway
            .handle_mirror_stored(relay, core, length, self.now);
    }

    fn escrow_epoch(&self, relay: &RelayKey) -> u64 {
        self.escrow.lease_epoch(relay)
    }

    fn escrow_down(&mut self) {
        if !self.net.is_down(Node::Escrow) {
            self.escrow_snapshot = Some(self.escrow.snapshot());
            self.net.set_down(Node::Escrow, true);
            self.count("escrow-down");
        }
    }

    fn escrow_up(&mut self) {
        if self.net.is_down(Node::Escrow) {
            self.net.set_down(Node::Escrow, false);
            if let Some(snapshot) = self.escrow_snapshot.take() {
                let unix = self.gateway.unix_time(self.now);
                // A restarted escrow resumes from its store; leases it had
                // issued end with the process (the gateway learns at renewal).
                if let Ok(restored) = Escrow::restore(
                    sim_policy(&self.config),
                    LeaseConfig {
                        ttl: self.config.lease_ttl,
                        ..LeaseConfig::default()
                    },
                    snapshot,
                    self.now,
                    unix,
                ) {
                    self.escrow = restored;
                }
            }
            self.count("escrow-up");
        }
    }

    fn gateway_restart(&mut self) {
        let Ok(bytes) = self.gateway.registry().snapshot_bytes() else {
            return;
        };
        let Ok(registry) = Registry::restore_bytes(&bytes) else {
            return;
        };
        let unix = self.gateway.unix_time(self.now);
        // The vault is memory: leases die with the process.
        self.gateway = Gateway::with_registry(self.gateway_config, registry, self.now, unix);
        if self.config.faults.gateway_ignores_lease_expiry {
            self.gateway.inject_fault_ignore_lease_expiry();
        }
        self.model.leases.clear();
        self.sessions.clear();
        self.waiting.clear();
        self.gateway_calls.clear();
        self.pending_attempts.clear();
        self.replica_since.clear();
        self.healthy_since.clear();
        self.count("gateway-restart");
        // Workers notice the dropped connection and reconnect.
        for index in 0..self.workers.len() {
            if self.workers[index].alive {
                self.connect_worker(index);
            }
        }
    }

    fn open_session(&mut self) {
        if self.sessions.len() >= self.config.clients {
            return;
        }
        let worker = usize::from(self.rng.random::<u8>()) % self.workers.len();
        let relay = self.workers[worker].relay;
        if let Ok(session) =
            self.gateway
                .open_session(&relay.to_hex(), SessionKind::Client, self.now)
        {
            self.sessions.insert(session, relay);
        }
    }

    fn pick_session(&mut self) -> Option<(SessionId, RelayKey)> {
        if self.sessions.is_empty() {
            self.open_session();
        }
        let index = self.rng.random_range(0..self.sessions.len().max(1));
        self.sessions.iter().nth(index).map(|(s, r)| (*s, *r))
    }

    fn client_read(&mut self) {
        if let Some((session, _)) = self.pick_session() {
            let _ = self.gateway.router_mut().route_read(session);
        }
    }

    fn client_write(&mut self) -> Result<(), String> {
        let Some((session, relay)) = self.pick_session() else {
            return Ok(());
        };
        let write = WriteId(self.next_write);
        self.next_write += 1;
        let in_replica = self.gateway.router().target(session) == Ok(Target::Replica);
        let model_accepts = in_replica && self.model_accepts(&relay);
        let verdict = self
            .gateway
            .handle_client_write(session, write, self.now)
            .map_err(|error| format!("write on an open session failed: {error}"))?;
        self.count("client-write");
        match verdict {
            WriteVerdict::Forward(peer) => {
                if let Some(index) = self.workers.iter().position(|w| w.peer == peer) {
                    let frame = Frame {
                        request_id: write.0,
                        message: Message::NostrFrame(hypergate_core::wire::NostrFrame {
                            relay_key: relay,
                            session: session.0,
                            frame: hypergate_core::wire::BoundedString::truncating(&format!(
                                "[\"EVENT\",{{\"write\":{}}}]",
                                write.0
                            )),
                        }),
                    };
                    let mut rng = self.rng.clone();
                    self.net.send(
                        &mut rng,
                        Node::Gateway,
                        Node::Worker(index),
                        Payload::Frame(frame),
                        self.now,
                    );
                    self.rng = rng;
                }
            }
            WriteVerdict::Append { epoch } => {
                if !model_accepts {
                    return Err(format!(
                        "model: the gateway accepted write {} for relay {} the reference model refuses",
                        write.0,
                        relay.short()
                    ));
                }
                self.accept_write(relay, write, epoch)?;
            }
            WriteVerdict::Wait => {
                self.waiting.insert(write, relay);
            }
            WriteVerdict::Hold | WriteVerdict::ReadOnly { .. } => {
                if in_replica && model_accepts && matches!(verdict, WriteVerdict::ReadOnly { .. }) {
                    return Err(format!(
                        "model: the gateway refused write {} the reference model accepts ({verdict:?})",
                        write.0
                    ));
                }
                self.count("write-refused");
            }
        }
        self.drain_gateway()
    }

    /// The model's prediction for a write on a replica session of `relay`.
    fn model_accepts(&self, relay: &RelayKey) -> bool {
        let worker_healthy = self.gateway.registry().workers_of(relay).any(|peer| {
            self.gateway.health().health_of(&peer) == hypergate_core::health::PeerHealth::Healthy
        });
        !worker_healthy
            && self
                .model
                .leases
                .get(relay)
                .is_some_and(|(_, expires_at)| self.now < *expires_at)
    }

    /// A write passed the fence: check it, append it, mark it pending.
    fn accept_write(&mut self, relay: RelayKey, write: WriteId, epoch: u64) -> Result<(), String> {
        self.check_write_acceptance(&relay, epoch)?;
        // The write goes to the log of the writer key the lease unlocked.
        let writer = self
            .gateway
            .leases()
            .current(&relay)
            .and_then(|lease| self.writer_of_deposit.get(&lease.escrow_id))
            .copied()
            .ok_or_else(|| {
                format!(
                    "no writer key known for the lease of relay {}",
                    relay.short()
                )
            })?;
        let log = self.gateway_logs.entry(writer).or_default();
        let index = log.len() as u64;
        log.push(write.0);
        self.accepted.insert(AcceptedWrite {
            relay,
            id: write.0,
            writer,
            index,
        });
        self.count("write-accepted");
        let mark = PendingMark {
            kind: PendingType::Event,
            reason: None,
            drive_identifier: None,
            drive_version: None,
            lease_version: Some(epoch),
        };
        self.gateway
            .handle_write_appended(relay, epoch, mark, self.now)
            .map_err(|error| format!("append bookkeeping failed: {error}"))
    }

    // ---- time ----

    /// Moves time forward, processing every deadline and delivery in order.
    fn advance(&mut self, by: Duration) -> Result<(), String> {
        let until = self.now + by;
        loop {
            let candidates = [
                self.gateway.poll_timeout().map(|(at, _)| at),
                self.escrow.poll_timeout().map(|(at, _)| at),
                self.net.next_due(),
                self.pending_attempts.first().map(|(at, ..)| *at),
                self.workers.iter().filter_map(|w| w.next_deadline()).min(),
            ];
            let Some(next) = candidates
                .into_iter()
                .flatten()
                .min()
                .filter(|at| *at <= until)
            else {
                break;
            };
            self.now = self.now.max(next);
            self.fire_due()?;
        }
        self.now = until;
        self.fire_due()
    }

    fn fire_due(&mut self) -> Result<(), String> {
        let now = self.now;
        self.gateway.handle_timeout(now);
        self.escrow.handle_timeout(now);
        let indices: Vec<usize> = (0..self.workers.len()).collect();
        for index in indices {
            let frames = self.workers[index].on_time(now);
            for frame in frames {
                self.worker_send_frame(index, frame);
            }
        }
        while let Some(&(at, session, attempt, peer)) = self.pending_attempts.first() {
            if at > now {
                break;
            }
            self.pending_attempts.pop_first();
            let _ = self
                .gateway
                .handle_attempt_outcome(session, attempt, peer, true, "", now);
        }
        while let Some(envelope) = self.net.pop_due(now) {
            self.deliver(envelope)?;
        }
        self.settle()
    }

    /// Drains every machine until nothing more happens at this instant.
    fn settle(&mut self) -> Result<(), String> {
        for _ in 0..64 {
            let mut moved = self.drain_gateway_counting()?;
            moved |= self.drain_escrow();
            moved |= self.run_worker_effects()?;
            if !moved {
                return Ok(());
            }
        }
        Err("the machines did not settle within 64 rounds at one instant".into())
    }

    fn drain_gateway(&mut self) -> Result<(), String> {
        self.drain_gateway_counting().map(|_| ())
    }

    fn drain_gateway_counting(&mut self) -> Result<bool, String> {
        let mut moved = false;
        while let Some(transmit) = self.gateway.poll_transmit() {
            moved = true;
            if let Some(index) = self.workers.iter().position(|w| w.peer == transmit.peer) {
                let mut rng = self.rng.clone();
                self.net.send(
                    &mut rng,
                    Node::Gateway,
                    Node::Worker(index),
                    Payload::Frame(transmit.frame),
                    self.now,
                );
                self.rng = rng;
            }
        }
        while let Some(event) = self.gateway.poll_event() {
            moved = true;
            self.observe(&format!("{event:?}"));
            self.on_gateway_event(event)?;
        }
        Ok(moved)
    }

    fn on_gateway_event(&mut self, event: GatewayEvent) -> Result<(), String> {
        match event {
            GatewayEvent::Router(RouterEvent::Attempt {
                session,
                attempt,
                peer,
                ..
            }) => {
                let answers = self.workers.iter().enumerate().any(|(index, w)| {
                    w.peer == peer
                        && w.alive
                        && self.net.connected(Node::Gateway, Node::Worker(index))
                });
                if answers {
                    let latency = Duration::from_millis(self.rng.random_range(1..700));
                    self.pending_attempts
                        .insert((self.now + latency, session, attempt, peer));
                }
            }
            GatewayEvent::Router(RouterEvent::FallbackStarted { session, .. }) => {
                self.replica_since.insert(session, self.now);
                self.count("fallback-started");
            }
            GatewayEvent::Router(
                RouterEvent::FallbackEnded { session, .. }
                | RouterEvent::NoPeersAvailable { session, .. }
                | RouterEvent::SessionClosed { session, .. },
            ) => {
                self.replica_since.remove(&session);
            }
            GatewayEvent::Health(hypergate_core::health::HealthEvent::PeerChanged {
                peer,
                to,
                ..
            }) => {
                if to == hypergate_core::health::PeerHealth::Healthy {
                    self.healthy_since.entry(peer).or_insert(self.now);
                    // The model: a healthy worker ends the relay's lease.
                    for relay in self.relays_of_peer(&peer) {
                        self.model.leases.remove(&relay);
                    }
                } else {
                    self.healthy_since.remove(&peer);
                }
            }
            GatewayEvent::LeaseRequestNeeded {
                relay,
                renewing,
                evidence,
            } => {
                let call = self.next_call;
                self.next_call += 1;
                self.gateway_calls.insert(call, relay);
                let request = EscrowRequest::Unlock {
                    request: UnlockRequest {
                        relay_key: relay,
                        requester: GATEWAY_ID,
                        evidence: Some(evidence),
                    },
                    renewing,
                };
                self.send_to_escrow(Node::Gateway, call, request);
                self.count("lease-request");
            }
            GatewayEvent::Lease(LeaseEvent::Ended { id, reason }) => {
                self.model.leases.remove(&id.relay);
                if !matches!(reason, EndReason::Expired | EndReason::Revoked { .. }) {
                    let call = self.next_call;
                    self.next_call += 1;
                    self.send_to_escrow(
                        Node::Gateway,
                        call,
                        EscrowRequest::Release { lease: id, reason },
                    );
                }
            }
            GatewayEvent::Lease(LeaseEvent::Activated { id, expires_at })
            | GatewayEvent::Lease(LeaseEvent::Renewed { id, expires_at }) => {
                self.model.leases.insert(id.relay, (id, expires_at));
                self.count("lease-active");
            }
            GatewayEvent::WriteReleased {
                write,
                relay,
                epoch,
            } if self.waiting.remove(&write).is_some() => {
                if !self.model_accepts(&relay) {
                    return Err(format!(
                        "model: write {} released for relay {} the reference model refuses",
                        write.0,
                        relay.short()
                    ));
                }
                self.accept_write(relay, write, epoch)?;
            }
            GatewayEvent::WriteRefused { write, .. } => {
                self.waiting.remove(&write);
                self.count("write-refused");
            }
            _ => {}
        }
        Ok(())
    }

    fn relays_of_peer(&self, peer: &PeerId) -> Vec<RelayKey> {
        self.gateway
            .registry()
            .relays()
            .filter(|record| record.workers.contains_key(peer))
            .map(|record| record.relay_key)
            .collect()
    }

    pub(crate) fn send_to_escrow(&mut self, from: Node, call: u64, request: EscrowRequest) {
        let mut rng = self.rng.clone();
        self.net.send(
            &mut rng,
            from,
            Node::Escrow,
            Payload::EscrowCall { call, request },
            self.now,
        );
        self.rng = rng;
    }

    fn worker_send_frame(&mut self, index: usize, frame: Frame) {
        let mut rng = self.rng.clone();
        self.net.send(
            &mut rng,
            Node::Worker(index),
            Node::Gateway,
            Payload::Frame(frame),
            self.now,
        );
        self.rng = rng;
    }

    fn deliver(&mut self, envelope: net::Envelope<Payload>) -> Result<(), String> {
        let now = self.now;
        match (envelope.to, envelope.payload) {
            (Node::Gateway, Payload::Frame(frame)) => {
                let Node::Worker(index) = envelope.from else {
                    return Ok(());
                };
                let peer = self.workers[index].peer;
                let heartbeat = matches!(frame.message, Message::Heartbeat(_));
                self.gateway.handle_frame(peer, frame, now);
                if heartbeat {
                    self.mirror_worker(index);
                }
            }
            (Node::Worker(index), Payload::Frame(frame)) => {
                let replies = self.workers[index].on_frame(frame, now);
                for reply in replies {
                    self.worker_send_frame(index, reply);
                }
            }
            (Node::Escrow, Payload::EscrowCall { call, request }) => {
                let answer = self.escrow_answer(request);
                if let Some(answer) = answer {
                    let mut rng = self.rng.clone();
                    self.net.send(
                        &mut rng,
                        Node::Escrow,
                        envelope.from,
                        Payload::EscrowAnswer { call, answer },
                        now,
                    );
                    self.rng = rng;
                }
            }
            (Node::Gateway, Payload::EscrowAnswer { call, answer }) => {
                let Some(relay) = self.gateway_calls.remove(&call) else {
                    return Ok(());
                };
                match answer {
                    EscrowAnswer::Granted(grant) => {
                        let _ = self.gateway.handle_lease_granted(grant, now);
                    }
                    EscrowAnswer::Refused { reason, .. } | EscrowAnswer::Failed(reason) => {
                        self.gateway.handle_lease_refused(relay, &reason, now);
                        self.count("lease-refused");
                    }
                    _ => {}
                }
            }
            (Node::Gateway, Payload::LeaseEndedAtEscrow { id, reason })
                if self
                    .gateway
                    .leases()
                    .current(&id.relay)
                    .is_some_and(|lease| lease.id == id) =>
            {
                let _ = self.gateway.handle_lease_revoked(id, reason.as_str(), now);
            }
            (Node::Worker(index), Payload::EscrowAnswer { call, answer }) => {
                self.workers[index].on_escrow_answer(call, answer, now);
            }
            _ => {}
        }
        Ok(())
    }

    /// The escrow service's request handling (the adapter of the escrow core).
    fn escrow_answer(&mut self, request: EscrowRequest) -> Option<EscrowAnswer> {
        let now = self.now;
        let answer = match request {
            EscrowRequest::Unlock { request, renewing } => {
                if let Some(lease) = renewing {
                    match self.escrow.handle_renew(lease, request, now) {
                        Ok(grant) => EscrowAnswer::Granted(grant),
                        Err(error) => EscrowAnswer::Refused {
                            reason: error.to_string(),
                        },
                    }
                } else {
                    match self
                        .escrow
                        .plan_unlock(&request, now)
                        .and_then(|plan| self.escrow.commit_unlock(plan, now))
                    {
                        Ok(UnlockOutcome::Issued(grant) | UnlockOutcome::Refetched(grant)) => {
                            EscrowAnswer::Granted(grant)
                        }
                        Ok(UnlockOutcome::Rejected(reasons)) => EscrowAnswer::Refused {
                            reason: reasons
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                        },
                        Err(error) => EscrowAnswer::Failed(error.to_string()),
                    }
                }
            }
            EscrowRequest::Release { lease, reason } => {
                // A release of a lease the escrow already ended is expected.
                let _ = self.escrow.handle_release(lease, GATEWAY_ID, reason, now);
                return None;
            }
            EscrowRequest::Revoke { escrow_id } => {
                self.escrow.handle_revoke(
                    RevokeTarget::EscrowId(escrow_id),
                    "worker",
                    "rotation",
                    now,
                );
                EscrowAnswer::Revoked
            }
            EscrowRequest::Deposit { input, writer } => {
                match self.escrow.handle_deposit(input, now) {
                    Ok(record) => {
                        self.writer_of_deposit
                            .insert(record.escrow_id.clone(), writer);
                        EscrowAnswer::Deposited {
                            escrow_id: record.escrow_id,
                        }
                    }
                    Err(error) => EscrowAnswer::Failed(error.to_string()),
                }
            }
        };
        self.drain_escrow();
        Some(answer)
    }

    fn drain_escrow(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.escrow.poll_event() {
            moved = true;
            self.observe(&format!("escrow {event:?}"));
            if let EscrowEvent::LeaseEnded { id, reason } = event
                && matches!(reason, EndReason::Revoked { .. } | EndReason::Expired)
            {
                let mut rng = self.rng.clone();
                self.net.send(
                    &mut rng,
                    Node::Escrow,
                    Node::Gateway,
                    Payload::LeaseEndedAtEscrow { id, reason },
                    self.now,
                );
                self.rng = rng;
            }
        }
        moved
    }

    fn run_worker_effects(&mut self) -> Result<bool, String> {
        let mut moved = false;
        for index in 0..self.workers.len() {
            let connected = self.net.connected(Node::Gateway, Node::Worker(index));
            let skip_ingest = self.config.faults.workers_skip_ingest;
            let outputs = self.workers[index].run_effects(
                &self.gateway_logs,
                connected,
                skip_ingest,
                &mut self.next_call,
                self.now,
            );
            for output in outputs {
                moved = true;
                match output {
                    worker::Output::Frame(frame) => self.worker_send_frame(index, frame),
                    worker::Output::EscrowCall(call, request) => {
                        self.send_to_escrow(Node::Worker(index), call, request);
                    }
                }
            }
        }
        Ok(moved)
    }

    // ---- the end ----

    /// Heals everything, brings every worker back and lets time pass until
    /// the system is quiet; then checks nothing accepted was lost.
    fn quiesce(&mut self) -> Result<(), String> {
        self.net.heal_all();
        self.escrow_up();
        for index in 0..self.workers.len() {
            if !self.workers[index].alive {
                self.worker_start(index, false);
            } else {
                self.connect_worker(index);
            }
        }
        self.settle()?;
        // Long enough for retries (300 s cap), the resync deadline (10 min)
        // and the cleared notice's retries, in heartbeat-sized steps.
        let horizon = self.now + Duration::from_secs(60 * 60);
        while self.now < horizon {
            self.advance(self.config.heartbeat)?;
            self.check_step()?;
        }
        self.check_final()
    }

    pub(crate) fn observe(&mut self, text: &str) {
        let offset = self.now.duration_since(self.start).as_millis();
        if self.trace {
            eprintln!("{offset:>9} {text}");
        }
        for byte in format!("{offset}:{text}\n").bytes() {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn count(&mut self, label: &'static str) {
        *self.counts.entry(label).or_default() += 1;
    }
}

//! The gateway core under seeded worker churn, on a virtual clock.
//!
//! One [`Gateway`] core, `workers` simulated workers serving `relays` relays,
//! and client sessions. Every step is drawn from a ChaCha RNG seeded by the
//! run's seed: a worker crashes silently, drops its link, restarts and
//! re-registers, time advances (heartbeats flow, attempts are answered after
//! a random latency, deadlines fire in time order), sessions open and close,
//! mirrors store blocks. After every step the invariants below are checked;
//! a violation reports the seed, and `SIM_SEED=<seed>` replays it. The trace
//! hash covers every event with its virtual time, so two runs of one seed
//! must agree exactly (the determinism check).
//!
//! Invariants:
//! 1. a session routed to a peer is routed to a registered worker of its
//!    relay that is not down;
//! 2. when a peer becomes healthy and stays healthy to the end of the step, no
//!    client session of its relays is left in replica mode; and no session
//!    stays in replica mode longer than one heartbeat interval beside a peer
//!    of its relay that is healthy all that time;
//! 3. after `handle_timeout(t)` and a full drain, the next deadline is later
//!    than `t`;
//! 4. a session waiting on a sweep has an armed attempt deadline;
//! 5. no relay is ever dropped from the registry by churn.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use hypergate_core::gateway::{Gateway, GatewayConfig, GatewayEvent};
use hypergate_core::health::{HealthConfig, HealthEvent, PeerHealth};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::router::{
    AttemptId, RouterConfig, RouterEvent, SessionId, SessionKind, Target,
};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    BoundedVec, Frame, Heartbeat, Message, RegisterRelays, RelayMetadata, RelayRegistration,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of one churn run.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// Simulated workers.
    pub workers: u8,
    /// Relays, each served by one to three workers.
    pub relays: u8,
    /// Steps per run.
    pub steps: usize,
    /// Worker heartbeat interval (and the health machine's).
    pub heartbeat: Duration,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        Self {
            workers: 6,
            relays: 4,
            steps: 300,
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnReport {
    /// The seed.
    pub seed: u64,
    /// FNV-1a over every event and its virtual time.
    pub trace_hash: u64,
    /// Counts of notable events (`fallback-started`, `fallback-ended`, …).
    pub counts: BTreeMap<&'static str, u64>,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The seed of the failing run.
    pub seed: u64,
    /// The step at which the invariant broke.
    pub step: usize,
    /// Which invariant and how.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "churn invariant broken at step {} of seed {}: {} (replay: SIM_SEED={} cargo test -p hypergate-tests --test churn)",
            self.step, self.seed, self.message, self.seed
        )
    }
}

#[derive(Debug, Clone)]
struct SimWorker {
    peer: PeerId,
    relays: Vec<RelayKey>,
    alive: bool,
    linked: bool,
    next_heartbeat: Instant,
    seq: u64,
}

/// An attempt answer in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PendingAnswer {
    at: Instant,
    session: SessionId,
    attempt: AttemptId,
    peer: PeerId,
}

struct Sim {
    rng: ChaCha8Rng,
    start: Instant,
    now: Instant,
    gateway: Gateway,
    workers: Vec<SimWorker>,
    relays: Vec<RelayKey>,
    sessions: BTreeMap<SessionId, RelayKey>,
    answers: BTreeSet<PendingAnswer>,
    heartbeat: Duration,
    attempt_timeout: Duration,
    hash: u64,
    counts: BTreeMap<&'static str, u64>,
    /// Peers that turned healthy during the current step.
    recovered: BTreeSet<PeerId>,
    /// Since when each currently healthy peer has been healthy.
    healthy_since: BTreeMap<PeerId, Instant>,
    /// Since when each session has been in replica mode.
    replica_since: BTreeMap<SessionId, Instant>,
}

/// Runs one seed; `Err` on the first broken invariant.
pub fn run(seed: u64, config: &ChurnConfig, start: Instant) -> Result<ChurnReport, Violation> {
    let mut sim = Sim::new(seed, config, start);
    for step in 0..config.steps {
        sim.recovered.clear();
        sim.step().map_err(|message| Violation {
            seed,
            step,
            message,
        })?;
        sim.check_invariants().map_err(|message| Violation {
            seed,
            step,
            message,
        })?;
    }
    Ok(ChurnReport {
        seed,
        trace_hash: sim.hash,
        counts: sim.counts,
    })
}

impl Sim {
    fn new(seed: u64, config: &ChurnConfig, start: Instant) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let attempt_timeout = Duration::from_millis(500);
        let gateway_config = GatewayConfig {
            health: HealthConfig {
                heartbeat_interval: config.heartbeat,
                miss_limit: 3,
                failure_limit: 3,
            },
            router: RouterConfig {
                attempt_timeout,
                replica_retry: config.heartbeat,
            },
            ..GatewayConfig::default()
        };
        let gateway = Gateway::new(gateway_config, start, UnixTime(1_700_000_000_000));
        let relays: Vec<RelayKey> = (0..config.relays.max(1))
            .map(|index| RelayKey([index.wrapping_add(100); 32]))
            .collect();
        let mut workers: Vec<SimWorker> = (0..config.workers.max(1))
            .map(|index| SimWorker {
                peer: PeerId([index.wrapping_add(1); 32]),
                relays: Vec::new(),
                alive: false,
                linked: false,
                next_heartbeat: start,
                seq: 0,
            })
            .collect();
        for relay in &relays {
            let serving = rng.random_range(1..=3usize.min(workers.len()));
            let first = rng.random_range(0..workers.len());
            for offset in 0..serving {
                let index = (first + offset) % workers.len();
                workers[index].relays.push(*relay);
            }
        }
        let mut sim = Self {
            rng,
            start,
            now: start,
            gateway,
            workers,
            relays,
            sessions: BTreeMap::new(),
            answers: BTreeSet::new(),
            heartbeat: config.heartbeat,
            attempt_timeout,
            hash: 0xcbf2_9ce4_8422_2325,
            counts: BTreeMap::new(),
            recovered: BTreeSet::new(),
            healthy_since: BTreeMap::new(),
            replica_since: BTreeMap::new(),
        };
        for index in 0..sim.workers.len() {
            sim.restart_worker(index);
        }
        sim
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.random_range(0..100u32);
        let worker = self.rng.random_range(0..self.workers.len());
        match roll {
            0..=5 => {
                // Silent crash: the link looks up, nothing arrives.
                self.workers[worker].alive = false;
                self.count("worker-crash");
            }
            6..=9 => {
                if self.workers[worker].linked {
                    self.workers[worker].alive = false;
                    self.workers[worker].linked = false;
                    let peer = self.workers[worker].peer;
                    self.gateway.handle_link_down(peer, self.now);
                    self.count("worker-disconnect");
                }
            }
            10..=17 => {
                if !self.workers[worker].alive {
                    self.restart_worker(worker);
                    self.count("worker-restart");
                }
            }
            18..=29 => {
                let relay = self.relays[self.rng.random_range(0..self.relays.len())];
                let length = self.rng.random_range(1..1000u64);
                self.gateway
                    .handle_mirror_stored(relay, [relay.0[0]; 32], length, self.now);
            }
            30..=44 => {
                let relay = self.relays[self.rng.random_range(0..self.relays.len())];
                let session = self
                    .gateway
                    .open_session(&relay.to_hex(), SessionKind::Client, self.now)
                    .map_err(|error| format!("open_session failed: {error}"))?;
                self.sessions.insert(session, relay);
            }
            45..=52 => {
                if !self.sessions.is_empty() {
                    let index = self.rng.random_range(0..self.sessions.len());
                    if let Some(session) = self.sessions.keys().nth(index).copied() {
                        self.sessions.remove(&session);
                        self.gateway
                            .close_session(session, self.now)
                            .map_err(|error| format!("close_session failed: {error}"))?;
                    }
                }
            }
            _ => {
                let advance = Duration::from_millis(self.rng.random_range(1..4_000u64));
                self.advance(advance)?;
            }
        }
        self.drain()
    }

    fn restart_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.alive = true;
        worker.linked = true;
        worker.next_heartbeat = self.now + self.heartbeat;
        let peer = worker.peer;
        let registrations: Vec<RelayRegistration> = worker
            .relays
            .iter()
            .map(|relay| RelayRegistration {
                relay_key: *relay,
                identifiers: BoundedVec::empty(),
                metadata: RelayMetadata::default(),
                requires_auth: false,
                escrow: None,
            })
            .collect();
        self.gateway.handle_link_up(peer, self.now);
        if let Ok(relays) = BoundedVec::new(registrations) {
            let frame = Frame {
                request_id: 0,
                message: Message::RegisterRelays(RegisterRelays { relays }),
            };
            self.gateway.handle_frame(peer, frame, self.now);
        }
    }

    /// Moves virtual time forward, firing heartbeats, answers and core
    /// deadlines in time order.
    fn advance(&mut self, by: Duration) -> Result<(), String> {
        let until = self.now + by;
        loop {
            let heartbeat = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, worker)| worker.alive && worker.linked)
                .map(|(index, worker)| (worker.next_heartbeat, index))
                .min();
            let answer = self.answers.first().copied();
            let deadline = self.gateway.poll_timeout().map(|(at, _)| at);
            let next = [heartbeat.map(|(at, _)| at), answer.map(|a| a.at), deadline]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|at| *at <= until) else {
                break;
            };
            self.now = self.now.max(next);
            if deadline == Some(next) {
                self.gateway.handle_timeout(self.now);
                self.drain()?;
                if let Some((after, _)) = self.gateway.poll_timeout()
                    && after <= self.now
                {
                    return Err(
                        "invariant 3: a deadline at or before now survived handle_timeout".into(),
                    );
                }
            } else if let Some(pending) = answer.filter(|a| a.at == next) {
                self.answers.remove(&pending);
                // A late answer after the core timed the attempt out is stale: fine.
                let _ = self.gateway.handle_attempt_outcome(
                    pending.session,
                    pending.attempt,
                    pending.peer,
                    true,
                    "",
                    self.now,
                );
                self.drain()?;
            } else if let Some((_, index)) = heartbeat {
                let worker = &mut self.workers[index];
                worker.seq += 1;
                worker.next_heartbeat = self.now + self.heartbeat;
                let frame = Frame {
                    request_id: worker.seq,
                    message: Message::Heartbeat(Heartbeat {
                        seq: worker.seq,
                        sent_at: UnixTime(0),
                    }),
                };
                let peer = worker.peer;
                self.gateway.handle_frame(peer, frame, self.now);
                self.drain()?;
            }
        }
        self.now = until;
        self.gateway.handle_timeout(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Result<(), String> {
        while self.gateway.poll_transmit().is_some() {}
        while let Some(event) = self.gateway.poll_event() {
            self.observe(&event);
            match event {
                GatewayEvent::Router(RouterEvent::Attempt {
                    session,
                    attempt,
                    peer,
                    ..
                }) => {
                    let answers = self
                        .workers
                        .iter()
                        .any(|worker| worker.peer == peer && worker.alive && worker.linked);
                    if answers {
                        // Sometimes slower than the attempt timeout: exercises stale answers.
                        let max = self.attempt_timeout.as_millis() as u64 + 200;
                        let latency = Duration::from_millis(self.rng.random_range(1..max));
                        self.answers.insert(PendingAnswer {
                            at: self.now + latency,
                            session,
                            attempt,
                            peer,
                        });
                    }
                }
                GatewayEvent::Health(HealthEvent::PeerChanged { peer, to, .. }) => {
                    if to == PeerHealth::Healthy {
                        self.recovered.insert(peer);
                        self.healthy_since.insert(peer, self.now);
                    } else {
                        self.healthy_since.remove(&peer);
                    }
                }
                GatewayEvent::Router(RouterEvent::FallbackStarted { session, .. }) => {
                    self.replica_since.insert(session, self.now);
                }
                GatewayEvent::Router(
                    RouterEvent::FallbackEnded { session, .. }
                    | RouterEvent::SessionClosed { session, .. }
                    | RouterEvent::NoPeersAvailable { session, .. },
                ) => {
                    self.replica_since.remove(&session);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn observe(&mut self, event: &GatewayEvent) {
        let label = match event {
            GatewayEvent::Router(RouterEvent::FallbackStarted { .. }) => Some("fallback-started"),
            GatewayEvent::Router(RouterEvent::FallbackEnded { .. }) => Some("fallback-ended"),
            GatewayEvent::Router(RouterEvent::Attempt { .. }) => Some("attempt"),
            GatewayEvent::Router(RouterEvent::NoPeersAvailable { .. }) => Some("no-peers"),
            GatewayEvent::Health(HealthEvent::PeerChanged {
                to: PeerHealth::Down,
                ..
            }) => Some("peer-down"),
            _ => None,
        };
        if let Some(label) = label {
            self.count(label);
        }
        let offset = self.now.duration_since(self.start).as_millis();
        // Absolute `Instant`s differ between runs; hash them relative to the start.
        let text = match event {
            GatewayEvent::Router(RouterEvent::Attempt {
                session,
                relay,
                attempt,
                peer,
                deadline,
            }) => format!(
                "attempt {session:?} {relay:?} {attempt:?} {peer:?} +{}ms",
                deadline.duration_since(self.start).as_millis()
            ),
            other => format!("{other:?}"),
        };
        for byte in format!("{offset}:{text}\n").bytes() {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn count(&mut self, label: &'static str) {
        *self.counts.entry(label).or_default() += 1;
    }

    fn check_invariants(&self) -> Result<(), String> {
        let registry = self.gateway.registry();
        let router = self.gateway.router();
        let health = self.gateway.health();
        if registry.len() != self.relays.len() {
            return Err(format!(
                "invariant 5: {} relays registered, {} expected",
                registry.len(),
                self.relays.len()
            ));
        }
        for (session, relay) in &self.sessions {
            let target = router
                .target(*session)
                .map_err(|error| format!("open session unknown to the router: {error}"))?;
            match target {
                Target::Peer(peer) => {
                    if !registry.workers_of(relay).any(|worker| worker == peer) {
                        return Err(format!(
                            "invariant 1: session {session:?} routed to a non-worker"
                        ));
                    }
                    if health.health_of(&peer) == PeerHealth::Down {
                        return Err(format!(
                            "invariant 1: session {session:?} routed to a down peer"
                        ));
                    }
                }
                Target::Replica => {
                    let since = self.replica_since.get(session).copied().unwrap_or(self.now);
                    for worker in registry.workers_of(relay) {
                        let Some(healthy) = self.healthy_since.get(&worker) else {
                            continue;
                        };
                        if self.now > since.max(*healthy) + self.heartbeat {
                            return Err(format!(
                                "invariant 2: session {session:?} in replica mode for over a heartbeat beside healthy peer {}",
                                worker.short()
                            ));
                        }
                    }
                    for peer in &self.recovered {
                        let serves = registry.workers_of(relay).any(|worker| worker == *peer);
                        if serves && health.health_of(peer) == PeerHealth::Healthy {
                            return Err(format!(
                                "invariant 2: session {session:?} stayed in replica mode after peer {} recovered",
                                peer.short()
                            ));
                        }
                    }
                }
                Target::Pending => {
                    if router.poll_timeout().is_none() {
                        return Err(format!(
                            "invariant 4: session {session:?} waits on a sweep with no deadline"
                        ));
                    }
                }
                Target::Unavailable => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_message_names_the_seed_to_replay() {
        let violation = Violation {
            seed: 77,
            step: 3,
            message: "x".into(),
        };
        assert!(violation.to_string().contains("SIM_SEED=77"));
    }
}

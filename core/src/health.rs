//! Liveness of peers and freshness of the gateway's mirrors.
//!
//! Contract:
//! - A peer is [`PeerHealth::Healthy`] while proofs of life arrive: the link
//!   coming up, a heartbeat, or a successful request. One missed heartbeat
//!   interval (plus half an interval of slack) makes it
//!   [`PeerHealth::Suspect`]; `miss_limit` missed intervals, its link going
//!   down, or `failure_limit` failed requests in a row make it
//!   [`PeerHealth::Down`]. Any proof of life on an open link makes it healthy
//!   again. `last_healthy_at` is the latest proof of life.
//! - Mirror freshness is tracked per relay and per mirrored core from two
//!   lengths: what the mirror has stored and what the core's owner last
//!   advertised. `lag_blocks` counts blocks behind; `lag_ms` is how long the
//!   relay has been behind (zero while in sync); `last_synced_at` is the last
//!   moment every core was caught up (now, while in sync). One unit per field.
//! - Every transition is an event ([`HealthEvent`]); deadlines come from a
//!   [`TimerQueue`], so `poll_timeout` is O(log n) and exact.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::{PeerId, RelayKey};
use crate::time::duration_millis;
use crate::timer::TimerQueue;

/// Tuning of the liveness detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often peers send heartbeats.
    pub heartbeat_interval: Duration,
    /// Missed intervals after which a peer is down.
    pub miss_limit: u32,
    /// Failed requests in a row after which a peer is down.
    pub failure_limit: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            miss_limit: 3,
            failure_limit: 3,
        }
    }
}

impl HealthConfig {
    fn slack(&self) -> Duration {
        self.heartbeat_interval / 2
    }

    fn suspect_after(&self) -> Duration {
        self.heartbeat_interval + self.slack()
    }

    fn down_after(&self) -> Duration {
        self.heartbeat_interval * self.miss_limit.max(1) + self.slack()
    }
}

/// A peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerHealth {
    /// Proofs of life arrive on schedule.
    Healthy,
    /// A heartbeat is late or a request failed; still usable, tried last.
    Suspect,
    /// Gone: link down, heartbeats missed, or requests failing.
    Down,
}

impl PeerHealth {
    /// The lowercase label used in metrics and APIs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PeerHealth::Healthy => "healthy",
            PeerHealth::Suspect => "suspect",
            PeerHealth::Down => "down",
        }
    }
}

/// Why a peer changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCause {
    /// The peer link came up.
    LinkUp,
    /// The peer link went down.
    LinkDown,
    /// A heartbeat arrived.
    Heartbeat,
    /// A request to the peer succeeded.
    RequestSucceeded,
    /// A request to the peer failed.
    RequestFailed,
    /// Heartbeats stopped arriving.
    HeartbeatMissed,
}

/// What [`Health`] reports; drained with [`Health::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// A peer changed state (`from` is `None` the first time it is seen).
    PeerChanged {
        /// The peer.
        peer: PeerId,
        /// Its previous state.
        from: Option<PeerHealth>,
        /// Its new state.
        to: PeerHealth,
        /// What caused the change.
        cause: HealthCause,
    },
    /// A relay's mirror fell behind (`in_sync: false`) or caught up.
    MirrorSyncChanged {
        /// The relay.
        relay: RelayKey,
        /// Whether every mirrored core of the relay is caught up.
        in_sync: bool,
    },
}

/// A snapshot of a peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// Current state.
    pub health: PeerHealth,
    /// Whether the link is open.
    pub link_up: bool,
    /// Latest proof of life.
    pub last_healthy_at: Option<Instant>,
    /// Failed requests since the last success.
    pub consecutive_failures: u32,
}

/// A relay's mirror freshness. One unit per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorFreshness {
    /// Blocks the mirror is behind the owners' advertised lengths, summed over cores.
    pub lag_blocks: u64,
    /// Milliseconds since the mirror was last fully caught up; 0 while in sync.
    pub lag_ms: u64,
    /// The last moment every core was caught up (`None`: never).
    pub last_synced_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PeerTimer {
    Suspect(PeerId),
    Down(PeerId),
}

impl PeerTimer {
    fn peer(self) -> PeerId {
        match self {
            PeerTimer::Suspect(peer) | PeerTimer::Down(peer) => peer,
        }
    }
}

#[derive(Debug, Clone)]
struct PeerEntry {
    status: PeerStatus,
}

#[derive(Debug, Clone, Copy, Default)]
struct CoreLengths {
    stored: u64,
    advertised: u64,
}

#[derive(Debug, Clone, Default)]
struct RelayMirror {
    cores: BTreeMap<[u8; 32], CoreLengths>,
    last_synced_at: Option<Instant>,
    /// When the relay was first seen (counts as "behind since" if never synced).
    first_seen: Option<Instant>,
    in_sync: bool,
}

impl RelayMirror {
    fn lag_blocks(&self) -> u64 {
        self.cores
            .values()
            .map(|core| core.advertised.saturating_sub(core.stored))
            .fold(0u64, u64::saturating_add)
    }
}

/// The liveness and freshness machine. See the module docs for the contract.
#[derive(Debug)]
pub struct Health {
    config: HealthConfig,
    peers: BTreeMap<PeerId, PeerEntry>,
    /// At most one timer per peer; keyed by the kind of transition it fires.
    timers: TimerQueue<PeerTimer>,
    mirrors: BTreeMap<RelayKey, RelayMirror>,
    events: VecDeque<HealthEvent>,
}

impl Health {
    /// A machine with no known peers.
    #[must_use]
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            timers: TimerQueue::new(),
            mirrors: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// A peer's status; `None` for a peer never seen.
    #[must_use]
    pub fn peer(&self, peer: &PeerId) -> Option<PeerStatus> {
        self.peers.get(peer).map(|entry| entry.status)
    }

    /// A peer's state; unknown peers are down.
    #[must_use]
    pub fn health_of(&self, peer: &PeerId) -> PeerHealth {
        self.peer(peer)
            .map_or(PeerHealth::Down, |status| status.health)
    }

    /// Every known peer and its status, in key order.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, PeerStatus)> + '_ {
        self.peers.iter().map(|(peer, entry)| (*peer, entry.status))
    }

    /// A relay's mirror freshness as of `now`; `None` if nothing is mirrored.
    #[must_use]
    pub fn mirror_freshness(&self, relay: &RelayKey, now: Instant) -> Option<MirrorFreshness> {
        let mirror = self.mirrors.get(relay)?;
        let lag_blocks = mirror.lag_blocks();
        let lag_ms = if lag_blocks == 0 {
            0
        } else {
            mirror
                .last_synced_at
                .or(mirror.first_seen)
                .map_or(0, |since| {
                    duration_millis(now.saturating_duration_since(since))
                })
        };
        // A mirror holding everything its owners advertised is in sync as of
        // now, not as of the last block that arrived: an owner that went
        // offline advertises nothing newer, so its mirror stays complete.
        let last_synced_at = if lag_blocks == 0 {
            Some(now)
        } else {
            mirror.last_synced_at
        };
        Some(MirrorFreshness {
            lag_blocks,
            lag_ms,
            last_synced_at,
        })
    }

    // ---- inputs ----

    /// The peer link to `peer` completed its handshake.
    pub fn handle_link_up(&mut self, peer: PeerId, now: Instant) {
        let entry = self.entry(peer);
        entry.status.link_up = true;
        self.proof_of_life(peer, HealthCause::LinkUp, now);
    }

    /// The peer link to `peer` closed.
    pub fn handle_link_down(&mut self, peer: PeerId, _now: Instant) {
        let entry = self.entry(peer);
        entry.status.link_up = false;
        self.disarm(peer);
        self.transition(peer, PeerHealth::Down, HealthCause::LinkDown);
    }

    /// A heartbeat from `peer` arrived.
    pub fn handle_heartbeat(&mut self, peer: PeerId, now: Instant) {
        self.proof_of_life(peer, HealthCause::Heartbeat, now);
    }

    /// A request to `peer` finished.
    pub fn handle_request_outcome(&mut self, peer: PeerId, succeeded: bool, now: Instant) {
        if succeeded {
            self.proof_of_life(peer, HealthCause::RequestSucceeded, now);
            return;
        }
        let limit = self.config.failure_limit.max(1);
        let entry = self.entry(peer);
        entry.status.consecutive_failures = entry.status.consecutive_failures.saturating_add(1);
        let failures = entry.status.consecutive_failures;
        if failures >= limit {
            self.transition(peer, PeerHealth::Down, HealthCause::RequestFailed);
        } else if self.health_of(&peer) == PeerHealth::Healthy {
            self.transition(peer, PeerHealth::Suspect, HealthCause::RequestFailed);
        }
    }

    /// Forgets a peer entirely (e.g. an identity that will never return).
    pub fn forget_peer(&mut self, peer: &PeerId) {
        self.disarm(*peer);
        self.peers.remove(peer);
    }

    /// The mirror stored `length` blocks of `core` of `relay`.
    pub fn handle_mirror_stored(
        &mut self,
        relay: RelayKey,
        core: [u8; 32],
        length: u64,
        now: Instant,
    ) {
        let mirror = self.mirror(relay, now);
        let lengths = mirror.cores.entry(core).or_default();
        lengths.stored = lengths.stored.max(length);
        lengths.advertised = lengths.advertised.max(length);
        self.refresh_sync(relay, now);
    }

    /// The owner of `core` of `relay` advertised that it has `length` blocks.
    pub fn handle_mirror_advertised(
        &mut self,
        relay: RelayKey,
        core: [u8; 32],
        length: u64,
        now: Instant,
    ) {
        let mirror = self.mirror(relay, now);
        let lengths = mirror.cores.entry(core).or_default();
        // Logs are append-only: an advertised length never shrinks.
        lengths.advertised = lengths.advertised.max(length);
        self.refresh_sync(relay, now);
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            let peer = timer.peer();
            match timer {
                PeerTimer::Suspect(_) => {
                    self.transition(peer, PeerHealth::Suspect, HealthCause::HeartbeatMissed);
                    let last = self
                        .peer(&peer)
                        .and_then(|status| status.last_healthy_at)
                        .unwrap_or(now);
                    let down_at = (last + self.config.down_after()).max(now);
                    self.timers.arm(PeerTimer::Down(peer), down_at);
                }
                PeerTimer::Down(_) => {
                    self.transition(peer, PeerHealth::Down, HealthCause::HeartbeatMissed);
                }
            }
        }
    }

    // ---- outputs ----

    /// The next transition, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    /// The next deadline and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        self.timers.next().map(|(at, timer)| {
            let reason = match timer {
                PeerTimer::Suspect(_) => "peer heartbeat due",
                PeerTimer::Down(_) => "peer miss limit",
            };
            (at, reason)
        })
    }

    // ---- internals ----

    fn entry(&mut self, peer: PeerId) -> &mut PeerEntry {
        self.peers.entry(peer).or_insert_with(|| PeerEntry {
            status: PeerStatus {
                health: PeerHealth::Down,
                link_up: false,
                last_healthy_at: None,
                consecutive_failures: 0,
            },
        })
    }

    fn proof_of_life(&mut self, peer: PeerId, cause: HealthCause, now: Instant) {
        let suspect_after = self.config.suspect_after();
        let entry = self.entry(peer);
        if !entry.status.link_up && cause != HealthCause::LinkUp {
            // A late message from a closed link proves nothing about the peer now.
            return;
        }
        let first_time = entry.status.last_healthy_at.is_none();
        entry.status.last_healthy_at = Some(now);
        entry.status.consecutive_failures = 0;
        self.disarm(peer);
        self.timers
            .arm(PeerTimer::Suspect(peer), now + suspect_after);
        if first_time || self.health_of(&peer) != PeerHealth::Healthy {
            self.transition_with_first(peer, PeerHealth::Healthy, cause, first_time);
        }
    }

    fn disarm(&mut self, peer: PeerId) {
        self.timers.disarm(&PeerTimer::Suspect(peer));
        self.timers.disarm(&PeerTimer::Down(peer));
    }

    fn transition(&mut self, peer: PeerId, to: PeerHealth, cause: HealthCause) {
        self.transition_with_first(peer, to, cause, false);
    }

    fn transition_with_first(
        &mut self,
        peer: PeerId,
        to: PeerHealth,
        cause: HealthCause,
        first_time: bool,
    ) {
        let entry = self.entry(peer);
        let from = entry.status.health;
        if from == to && !first_time {
            return;
        }
        entry.status.health = to;
        self.events.push_back(HealthEvent::PeerChanged {
            peer,
            from: (!first_time).then_some(from),
            to,
            cause,
        });
    }

    fn mirror(&mut self, relay: RelayKey, now: Instant) -> &mut RelayMirror {
        let mirror = self.mirrors.entry(relay).or_default();
        mirror.first_seen.get_or_insert(now);
        mirror
    }

    fn refresh_sync(&mut self, relay: RelayKey, now: Instant) {
        let Some(mirror) = self.mirrors.get_mut(&relay) else {
            return;
        };
        let in_sync = mirror.lag_blocks() == 0;
        if in_sync {
            mirror.last_synced_at = Some(now);
        }
        if in_sync != mirror.in_sync {
            mirror.in_sync = in_sync;
            self.events
                .push_back(HealthEvent::MirrorSyncChanged { relay, in_sync });
        }
    }
}

#[cfg(test)]
mod tests;

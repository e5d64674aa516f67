//! Peer-first routing of client sessions and one-shot HTTP requests.
//!
//! Contract:
//! - A **sweep** tries the relay's usable peers (healthy first, then suspect;
//!   down peers are skipped) in round-robin order, **each at most once**, one
//!   attempt at a time, each bounded by `attempt_timeout` (default 500 ms).
//!   Every attempt ends in an [`AttemptRecord`] `{peer, outcome, reason,
//!   latency}`. The first success routes the session to that peer.
//! - When every peer failed or none is usable, the session enters **replica
//!   mode** if the relay has a replica (one [`RouterEvent::FallbackStarted`]),
//!   else it is unavailable ([`RouterEvent::NoPeersAvailable`]).
//! - A client session in replica mode (or unavailable) **returns** to a peer
//!   as soon as one of the relay's peers is reported healthy
//!   ([`RouterEvent::FallbackEnded`] with the time spent in replica mode and
//!   the session's open subscriptions, which the adapter re-opens on the peer,
//!   followed by [`RouterEvent::Routed`]). A session that fell back while a
//!   peer still counted as healthy retries it after `replica_retry` (one
//!   heartbeat interval), so no session stays in replica mode beside a
//!   healthy peer; [`Router::return_now`] does the same on demand (a write).
//! - A session routed to a peer that fails (the adapter reports it, or the
//!   peer goes down) starts a new sweep that skips that peer first.
//!
//! The router only decides; the adapter performs attempts and forwards
//! frames. Per-relay counters back the metrics the original named.
//!
//! Drive order after any input: drain [`Router::poll_event`], then re-arm the
//! timer from [`Router::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::health::PeerHealth;
use crate::histogram::{FALLBACK_DURATION_BUCKETS, Histogram};
use crate::ids::{PeerId, RelayKey};
use crate::timer::TimerQueue;

/// Router tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterConfig {
    /// How long one attempt on one peer may take before the sweep moves on.
    pub attempt_timeout: Duration,
    /// A session that fell back while a relay peer still counted as healthy
    /// (its attempt failed, its heartbeats did not) retries that peer after
    /// this long; set it to the heartbeat interval.
    pub replica_retry: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(500),
            replica_retry: Duration::from_secs(5),
        }
    }
}

/// A routed session: a client WebSocket or one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// One attempt of one sweep; a reply carrying an older id is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub u64);

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A long-lived client connection: returns from replica mode to a peer.
    Client,
    /// A one-shot HTTP request: routed once, then closed by the adapter.
    Request,
}

/// Where a session's frames go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Forward to this peer.
    Peer(PeerId),
    /// Serve from the gateway's mirror of the relay.
    Replica,
    /// A sweep is in progress: hold the frame until it ends.
    Pending,
    /// No peer and no replica.
    Unavailable,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttemptOutcome {
    /// The peer answered.
    Succeeded,
    /// The peer answered with an error or the link failed.
    Failed,
    /// No answer within `attempt_timeout`.
    TimedOut,
}

impl AttemptOutcome {
    /// The metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "success",
            AttemptOutcome::Failed => "failure",
            AttemptOutcome::TimedOut => "timeout",
        }
    }
}

/// One attempt's telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The peer tried.
    pub peer: PeerId,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// A short machine-readable reason (`ok`, `timeout`, or the adapter's).
    pub reason: String,
    /// Time from the attempt's start to its end.
    pub latency: Duration,
}

/// Result of a write served in replica mode, for `gateway_relay_fallback_writes_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FallbackWriteResult {
    /// Refused: no lease.
    Readonly,
    /// Appended under a lease.
    Accepted,
    /// Refused: invalid event.
    Rejected,
    /// Failed on the gateway's side.
    Error,
}

impl FallbackWriteResult {
    /// The metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackWriteResult::Readonly => "readonly",
            FallbackWriteResult::Accepted => "accepted",
            FallbackWriteResult::Rejected => "rejected",
            FallbackWriteResult::Error => "error",
        }
    }
}

/// Per-relay routing counters behind the original's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayCounters {
    /// `gateway_relay_fallback_reads_total`.
    pub fallback_reads: u64,
    /// `gateway_relay_fallback_writes_total{result}`.
    pub fallback_writes: BTreeMap<FallbackWriteResult, u64>,
    /// `gateway_relay_replica_sessions` (a gauge).
    pub replica_sessions: u64,
    /// `gateway_replica_fallback_total{mode="session"}`: sessions that entered replica mode.
    pub fallbacks_started: u64,
    /// `gateway_relay_fallback_duration_seconds`.
    pub fallback_duration: Histogram,
    /// `gateway_relay_peer_sweep_attempts_total{outcome}`.
    pub sweep_attempts: BTreeMap<AttemptOutcome, u64>,
}

impl Default for RelayCounters {
    fn default() -> Self {
        Self {
            fallback_reads: 0,
            fallback_writes: BTreeMap::new(),
            replica_sessions: 0,
            fallbacks_started: 0,
            fallback_duration: Histogram::new(FALLBACK_DURATION_BUCKETS),
            sweep_attempts: BTreeMap::new(),
        }
    }
}

/// What the router decided; drained with [`Router::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterEvent {
    /// Try `peer` for `session` and report with [`Router::handle_attempt_outcome`]
    /// before `deadline` (after it the router counts a timeout).
    Attempt {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
        /// Identifies this attempt in the outcome report.
        attempt: AttemptId,
        /// The peer to try.
        peer: PeerId,
        /// When the router gives up on it.
        deadline: Instant,
    },
    /// An attempt ended (telemetry).
    AttemptFinished {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
        /// What happened.
        record: AttemptRecord,
    },
    /// The session's frames now go to `peer`.
    Routed {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
        /// The peer.
        peer: PeerId,
    },
    /// The session entered replica mode.
    FallbackStarted {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
    },
    /// The session left replica mode for `peer`; re-open `subscriptions` there.
    FallbackEnded {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
        /// The peer it returns to.
        peer: PeerId,
        /// Time spent in replica mode.
        duration: Duration,
        /// The session's open subscription ids.
        subscriptions: Vec<String>,
    },
    /// No usable peer and no replica.
    NoPeersAvailable {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
    },
    /// The session closed.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// The relay.
        relay: RelayKey,
        /// Time spent in replica mode if it closed there.
        replica_duration: Option<Duration>,
    },
}

/// Misuse or stale input; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// The relay was never announced to the router.
    #[error("relay {0} is not routable")]
    UnknownRelay(RelayKey),
    /// The session is closed or never existed.
    #[error("session {0:?} does not exist")]
    UnknownSession(SessionId),
    /// The outcome refers to an attempt that already ended.
    #[error("attempt {attempt:?} of session {session:?} is no longer in flight")]
    StaleAttempt {
        /// The session.
        session: SessionId,
        /// The stale attempt.
        attempt: AttemptId,
    },
}

#[derive(Debug, Clone)]
struct Sweep {
    attempt: AttemptId,
    peer: PeerId,
    started: Instant,
    tried: BTreeSet<PeerId>,
    remaining: VecDeque<PeerId>,
}

#[derive(Debug, Clone)]
enum Route {
    Sweeping(Sweep),
    Peer(PeerId),
    Replica { since: Instant },
    Unavailable,
}

#[derive(Debug, Clone)]
struct Session {
    relay: RelayKey,
    kind: SessionKind,
    route: Route,
    subscriptions: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
struct RelayRoutes {
    peers: BTreeSet<PeerId>,
    cursor: usize,
    replica: bool,
    sessions: BTreeSet<SessionId>,
    counters: RelayCounters,
}

/// The routing machine. See the module docs for the contract.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    relays: BTreeMap<RelayKey, RelayRoutes>,
    peer_health: BTreeMap<PeerId, PeerHealth>,
    peer_relays: BTreeMap<PeerId, BTreeSet<RelayKey>>,
    sessions: BTreeMap<SessionId, Session>,
    /// One deadline per session: the attempt timeout while sweeping, the
    /// replica retry while in replica mode (a session is never both).
    session_timers: TimerQueue<SessionId>,
    next_session: u64,
    /// Step between this router's session ids (see [`Router::with_session_ids`]).
    session_stride: u64,
    next_attempt: u64,
    events: VecDeque<RouterEvent>,
}

impl Router {
    /// An empty router.
    #[must_use]
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            relays: BTreeMap::new(),
            peer_health: BTreeMap::new(),
            peer_relays: BTreeMap::new(),
            sessions: BTreeMap::new(),
            session_timers: TimerQueue::new(),
            next_session: 1,
            session_stride: 1,
            next_attempt: 1,
            events: VecDeque::new(),
        }
    }

    /// An empty router whose session ids are `first`, `first + stride`, …: routers of
    /// different core partitions hand out disjoint ids (`crate::partition`).
    #[must_use]
    pub fn with_session_ids(config: RouterConfig, first: u64, stride: u64) -> Self {
        Self {
            next_session: first.max(1),
            session_stride: stride.max(1),
            ..Self::new(config)
        }
    }

    // ---- getters ----

    /// Where `session`'s frames go now.
    pub fn target(&self, session: SessionId) -> Result<Target, RouterError> {
        let session = self
            .sessions
            .get(&session)
            .ok_or(RouterError::UnknownSession(session))?;
        Ok(match session.route {
            Route::Sweeping(_) => Target::Pending,
            Route::Peer(peer) => Target::Peer(peer),
            Route::Replica { .. } => Target::Replica,
            Route::Unavailable => Target::Unavailable,
        })
    }

    /// The relay a session belongs to.
    pub fn relay_of(&self, session: SessionId) -> Result<RelayKey, RouterError> {
        self.sessions
            .get(&session)
            .map(|session| session.relay)
            .ok_or(RouterError::UnknownSession(session))
    }

    /// A relay's counters.
    #[must_use]
    pub fn counters(&self, relay: &RelayKey) -> Option<&RelayCounters> {
        self.relays.get(relay).map(|routes| &routes.counters)
    }

    /// Every relay's counters, in key order.
    pub fn all_counters(&self) -> impl Iterator<Item = (RelayKey, &RelayCounters)> {
        self.relays
            .iter()
            .map(|(relay, routes)| (*relay, &routes.counters))
    }

    /// Open sessions.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    // ---- inputs: topology ----

    /// Sets the peers serving `relay` (from the registry).
    pub fn handle_relay_peers(
        &mut self,
        relay: RelayKey,
        peers: impl IntoIterator<Item = PeerId>,
        now: Instant,
    ) {
        let peers: BTreeSet<PeerId> = peers.into_iter().collect();
        let routes = self.relays.entry(relay).or_default();
        let removed: Vec<PeerId> = routes.peers.difference(&peers).copied().collect();
        let added: Vec<PeerId> = peers.difference(&routes.peers).copied().collect();
        routes.peers = peers;
        for peer in &removed {
            if let Some(relays) = self.peer_relays.get_mut(peer) {
                relays.remove(&relay);
            }
        }
        for peer in &added {
            self.peer_relays.entry(*peer).or_default().insert(relay);
        }
        for peer in removed {
            self.reroute_away_from(relay, peer, "peer-removed", now);
        }
        if added
            .iter()
            .any(|peer| self.health(peer) == PeerHealth::Healthy)
        {
            self.return_to_peers(relay, now);
        }
    }

    /// Says whether the gateway holds a usable replica of `relay`.
    pub fn handle_replica_available(&mut self, relay: RelayKey, available: bool, now: Instant) {
        let routes = self.relays.entry(relay).or_default();
        if routes.replica == available {
            return;
        }
        routes.replica = available;
        let sessions: Vec<SessionId> = routes.sessions.iter().copied().collect();
        for id in sessions {
            let Some(session) = self.sessions.get(&id) else {
                continue;
            };
            match (&session.route, available) {
                (Route::Unavailable, true) => self.enter_replica(id, now),
                (Route::Replica { since }, false) => {
                    let since = *since;
                    self.leave_replica_counters(relay, since, now);
                    self.set_route(id, Route::Unavailable);
                    self.events
                        .push_back(RouterEvent::NoPeersAvailable { session: id, relay });
                }
                _ => {}
            }
        }
    }

    /// A peer's liveness changed (from the health machine).
    pub fn handle_peer_health(&mut self, peer: PeerId, health: PeerHealth, now: Instant) {
        let previous = self.peer_health.insert(peer, health);
        if previous == Some(health) {
            return;
        }
        let relays: Vec<RelayKey> = self
            .peer_relays
            .get(&peer)
            .map(|relays| relays.iter().copied().collect())
            .unwrap_or_default();
        for relay in relays {
            match health {
                PeerHealth::Healthy => self.return_to_peers(relay, now),
                PeerHealth::Down => self.reroute_away_from(relay, peer, "peer-down", now),
                PeerHealth::Suspect => {}
            }
        }
    }

    // ---- inputs: sessions ----

    /// Opens a session for `relay` and starts its first sweep.
    pub fn open_session(
        &mut self,
        relay: RelayKey,
        kind: SessionKind,
        now: Instant,
    ) -> Result<SessionId, RouterError> {
        let routes = self
            .relays
            .get_mut(&relay)
            .ok_or(RouterError::UnknownRelay(relay))?;
        let id = SessionId(self.next_session);
        self.next_session += self.session_stride;
        routes.sessions.insert(id);
        self.sessions.insert(
            id,
            Session {
                relay,
                kind,
                route: Route::Unavailable,
                subscriptions: BTreeSet::new(),
            },
        );
        self.start_sweep(id, None, now);
        Ok(id)
    }

    /// The adapter's report on an attempt the router asked for.
    pub fn handle_attempt_outcome(
        &mut self,
        session: SessionId,
        attempt: AttemptId,
        succeeded: bool,
        reason: &str,
        now: Instant,
    ) -> Result<(), RouterError> {
        let current = self
            .sessions
            .get(&session)
            .ok_or(RouterError::UnknownSession(session))?;
        match &current.route {
            Route::Sweeping(sweep) if sweep.attempt == attempt => {}
            _ => return Err(RouterError::StaleAttempt { session, attempt }),
        }
        self.session_timers.disarm(&session);
        let outcome = if succeeded {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Failed
        };
        self.finish_attempt(session, outcome, reason, now);
        Ok(())
    }

    /// The peer a session was routed to failed mid-session: sweep again.
    pub fn handle_forward_failure(
        &mut self,
        session: SessionId,
        reason: &str,
        now: Instant,
    ) -> Result<(), RouterError> {
        let current = self
            .sessions
            .get(&session)
            .ok_or(RouterError::UnknownSession(session))?;
        if let Route::Peer(peer) = current.route {
            let relay = current.relay;
            self.events.push_back(RouterEvent::AttemptFinished {
                session,
                relay,
                record: AttemptRecord {
                    peer,
                    outcome: AttemptOutcome::Failed,
                    reason: reason.to_owned(),
                    latency: Duration::ZERO,
                },
            });
            self.start_sweep(session, Some(peer), now);
        }
        Ok(())
    }

    /// A subscription opened on the session (carried across a return).
    pub fn handle_subscription_opened(
        &mut self,
        session: SessionId,
        subscription: &str,
    ) -> Result<(), RouterError> {
        let session = self
            .sessions
            .get_mut(&session)
            .ok_or(RouterError::UnknownSession(session))?;
        session.subscriptions.insert(subscription.to_owned());
        Ok(())
    }

    /// A subscription closed on the session.
    pub fn handle_subscription_closed(
        &mut self,
        session: SessionId,
        subscription: &str,
    ) -> Result<(), RouterError> {
        let session = self
            .sessions
            .get_mut(&session)
            .ok_or(RouterError::UnknownSession(session))?;
        session.subscriptions.remove(subscription);
        Ok(())
    }

    /// A read frame (REQ) is about to be served: returns its target and
    /// counts replica reads.
    pub fn route_read(&mut self, session: SessionId) -> Result<Target, RouterError> {
        let target = self.target(session)?;
        if target == Target::Replica {
            let relay = self.relay_of(session)?;
            if let Some(routes) = self.relays.get_mut(&relay) {
                routes.counters.fallback_reads += 1;
            }
        }
        Ok(target)
    }

    /// Counts a write served in replica mode with its result.
    pub fn record_fallback_write(
        &mut self,
        session: SessionId,
        result: FallbackWriteResult,
    ) -> Result<(), RouterError> {
        let relay = self.relay_of(session)?;
        if let Some(routes) = self.relays.get_mut(&relay) {
            *routes.counters.fallback_writes.entry(result).or_default() += 1;
        }
        Ok(())
    }

    /// Closes a session.
    pub fn close_session(&mut self, session: SessionId, now: Instant) -> Result<(), RouterError> {
        let closed = self
            .sessions
            .remove(&session)
            .ok_or(RouterError::UnknownSession(session))?;
        self.session_timers.disarm(&session);
        let relay = closed.relay;
        let replica_duration = match closed.route {
            Route::Replica { since } => {
                self.leave_replica_counters(relay, since, now);
                Some(now.saturating_duration_since(since))
            }
            _ => None,
        };
        if let Some(routes) = self.relays.get_mut(&relay) {
            routes.sessions.remove(&session);
        }
        self.events.push_back(RouterEvent::SessionClosed {
            session,
            relay,
            replica_duration,
        });
        Ok(())
    }

    /// Times out every attempt whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, session)) = self.session_timers.pop_due(now) {
            let in_replica = self
                .sessions
                .get(&session)
                .is_some_and(|s| matches!(s.route, Route::Replica { .. }));
            if in_replica {
                self.return_now(session, now);
            } else {
                self.finish_attempt(session, AttemptOutcome::TimedOut, "timeout", now);
            }
        }
    }

    /// Sends a session in replica mode (or unavailable) back to a healthy
    /// relay peer right away, if there is one; returns that peer.
    pub fn return_now(&mut self, session: SessionId, now: Instant) -> Option<PeerId> {
        let current = self.sessions.get(&session)?;
        let relay = current.relay;
        let waiting = matches!(current.route, Route::Replica { .. } | Route::Unavailable);
        if !waiting {
            return None;
        }
        let peer = self.next_healthy_peer(relay)?;
        self.route_back(session, relay, peer, now);
        Some(peer)
    }

    // ---- outputs ----

    /// The next decision, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RouterEvent> {
        self.events.pop_front()
    }

    /// The next attempt deadline and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        self.session_timers.next().map(|(at, session)| {
            let in_replica = self
                .sessions
                .get(session)
                .is_some_and(|s| matches!(s.route, Route::Replica { .. }));
            let reason = if in_replica {
                "replica retry"
            } else {
                "peer attempt timeout"
            };
            (at, reason)
        })
    }

    // ---- internals ----

    fn health(&self, peer: &PeerId) -> PeerHealth {
        self.peer_health
            .get(peer)
            .copied()
            .unwrap_or(PeerHealth::Down)
    }

    fn usable(&self, peer: &PeerId) -> bool {
        self.health(peer) != PeerHealth::Down
    }

    /// Usable peers of `relay`, round-robin from the relay's cursor, healthy
    /// before suspect. Advances the cursor.
    fn sweep_order(&mut self, relay: RelayKey, skip: Option<PeerId>) -> VecDeque<PeerId> {
        let Some(routes) = self.relays.get(&relay) else {
            return VecDeque::new();
        };
        let peers: Vec<PeerId> = routes.peers.iter().copied().collect();
        let start = if peers.is_empty() {
            0
        } else {
            routes.cursor % peers.len()
        };
        let rotated = peers.iter().cycle().skip(start).take(peers.len()).copied();
        let candidates: Vec<PeerId> = rotated
            .filter(|peer| Some(*peer) != skip && self.usable(peer))
            .collect();
        let (healthy, suspect): (Vec<PeerId>, Vec<PeerId>) = candidates
            .into_iter()
            .partition(|peer| self.health(peer) == PeerHealth::Healthy);
        let order: VecDeque<PeerId> = healthy.into_iter().chain(suspect).collect();
        if let Some(routes) = self.relays.get_mut(&relay) {
            routes.cursor = routes.cursor.wrapping_add(1);
        }
        order
    }

    fn start_sweep(&mut self, session: SessionId, skip: Option<PeerId>, now: Instant) {
        let Some(relay) = self.sessions.get(&session).map(|s| s.relay) else {
            return;
        };
        let remaining = self.sweep_order(relay, skip);
        let mut tried = BTreeSet::new();
        if let Some(skipped) = skip {
            tried.insert(skipped);
        }
        self.continue_sweep(session, tried, remaining, now);
    }

    fn continue_sweep(
        &mut self,
        session: SessionId,
        tried: BTreeSet<PeerId>,
        mut remaining: VecDeque<PeerId>,
        now: Instant,
    ) {
        let Some(relay) = self.sessions.get(&session).map(|s| s.relay) else {
            return;
        };
        while let Some(peer) = remaining.pop_front() {
            let still_serves = self
                .relays
                .get(&relay)
                .is_some_and(|routes| routes.peers.contains(&peer));
            if tried.contains(&peer) || !still_serves || !self.usable(&peer) {
                continue;
            }
            let attempt = AttemptId(self.next_attempt);
            self.next_attempt += 1;
            let mut tried = tried;
            tried.insert(peer);
            let deadline = now + self.config.attempt_timeout;
            self.set_route(
                session,
                Route::Sweeping(Sweep {
                    attempt,
                    peer,
                    started: now,
                    tried,
                    remaining,
                }),
            );
            self.session_timers.arm(session, deadline);
            self.events.push_back(RouterEvent::Attempt {
                session,
                relay,
                attempt,
                peer,
                deadline,
            });
            return;
        }
        // Every usable peer was tried once: fall back.
        let has_replica = self.relays.get(&relay).is_some_and(|routes| routes.replica);
        if has_replica {
            self.enter_replica(session, now);
        } else {
            self.set_route(session, Route::Unavailable);
            self.events
                .push_back(RouterEvent::NoPeersAvailable { session, relay });
        }
    }

    fn finish_attempt(
        &mut self,
        session: SessionId,
        outcome: AttemptOutcome,
        reason: &str,
        now: Instant,
    ) {
        let Some(current) = self.sessions.get(&session) else {
            return;
        };
        let Route::Sweeping(sweep) = current.route.clone() else {
            return;
        };
        let relay = current.relay;
        let record = AttemptRecord {
            peer: sweep.peer,
            outcome,
            reason: if outcome == AttemptOutcome::Succeeded && reason.is_empty() {
                "ok".to_owned()
            } else {
                reason.to_owned()
            },
            latency: now.saturating_duration_since(sweep.started),
        };
        if let Some(routes) = self.relays.get_mut(&relay) {
            *routes.counters.sweep_attempts.entry(outcome).or_default() += 1;
        }
        self.events.push_back(RouterEvent::AttemptFinished {
            session,
            relay,
            record,
        });
        if outcome == AttemptOutcome::Succeeded {
            self.set_route(session, Route::Peer(sweep.peer));
            self.events.push_back(RouterEvent::Routed {
                session,
                relay,
                peer: sweep.peer,
            });
        } else {
            self.continue_sweep(session, sweep.tried, sweep.remaining, now);
        }
    }

    fn enter_replica(&mut self, session: SessionId, now: Instant) {
        let Some(relay) = self.sessions.get(&session).map(|s| s.relay) else {
            return;
        };
        self.set_route(session, Route::Replica { since: now });
        if let Some(routes) = self.relays.get_mut(&relay) {
            routes.counters.replica_sessions += 1;
            routes.counters.fallbacks_started += 1;
        }
        let healthy_peer_left = self.relays.get(&relay).is_some_and(|routes| {
            routes
                .peers
                .iter()
                .any(|peer| self.health(peer) == PeerHealth::Healthy)
        });
        let is_client = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.kind == SessionKind::Client);
        if healthy_peer_left && is_client {
            self.session_timers
                .arm(session, now + self.config.replica_retry);
        }
        self.events
            .push_back(RouterEvent::FallbackStarted { session, relay });
    }

    fn leave_replica_counters(&mut self, relay: RelayKey, since: Instant, now: Instant) {
        if let Some(routes) = self.relays.get_mut(&relay) {
            routes.counters.replica_sessions = routes.counters.replica_sessions.saturating_sub(1);
            routes
                .counters
                .fallback_duration
                .observe(now.saturating_duration_since(since));
        }
    }

    /// Sends the relay's client sessions that are in replica mode or
    /// unavailable back to a healthy peer, round-robin.
    fn return_to_peers(&mut self, relay: RelayKey, now: Instant) {
        let Some(routes) = self.relays.get(&relay) else {
            return;
        };
        let waiting: Vec<SessionId> = routes
            .sessions
            .iter()
            .copied()
            .filter(|id| {
                self.sessions.get(id).is_some_and(|session| {
                    session.kind == SessionKind::Client
                        && matches!(session.route, Route::Replica { .. } | Route::Unavailable)
                })
            })
            .collect();
        for id in waiting {
            let Some(peer) = self.next_healthy_peer(relay) else {
                return;
            };
            self.route_back(id, relay, peer, now);
        }
    }

    /// Moves a waiting session to `peer`, closing its replica episode.
    fn route_back(&mut self, id: SessionId, relay: RelayKey, peer: PeerId, now: Instant) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        if let Route::Replica { since } = session.route {
            let subscriptions = session.subscriptions.iter().cloned().collect();
            self.leave_replica_counters(relay, since, now);
            self.events.push_back(RouterEvent::FallbackEnded {
                session: id,
                relay,
                peer,
                duration: now.saturating_duration_since(since),
                subscriptions,
            });
        }
        self.session_timers.disarm(&id);
        self.set_route(id, Route::Peer(peer));
        self.events.push_back(RouterEvent::Routed {
            session: id,
            relay,
            peer,
        });
    }

    fn next_healthy_peer(&mut self, relay: RelayKey) -> Option<PeerId> {
        let order = self.sweep_order(relay, None);
        order
            .into_iter()
            .find(|peer| self.health(peer) == PeerHealth::Healthy)
    }

    /// Sessions of `relay` that use or are trying `peer` move on.
    fn reroute_away_from(&mut self, relay: RelayKey, peer: PeerId, reason: &str, now: Instant) {
        let Some(routes) = self.relays.get(&relay) else {
            return;
        };
        let affected: Vec<SessionId> = routes
            .sessions
            .iter()
            .copied()
            .filter(|id| {
                self.sessions
                    .get(id)
                    .is_some_and(|session| match &session.route {
                        Route::Peer(current) => *current == peer,
                        Route::Sweeping(sweep) => sweep.peer == peer,
                        _ => false,
                    })
            })
            .collect();
        for id in affected {
            let sweeping = self
                .sessions
                .get(&id)
                .is_some_and(|session| matches!(session.route, Route::Sweeping(_)));
            if sweeping {
                self.session_timers.disarm(&id);
                self.finish_attempt(id, AttemptOutcome::Failed, reason, now);
            } else {
                let _ = self.handle_forward_failure(id, reason, now);
            }
        }
    }

    fn set_route(&mut self, session: SessionId, route: Route) {
        if let Some(session) = self.sessions.get_mut(&session) {
            session.route = route;
        }
    }
}

#[cfg(test)]
mod tests;

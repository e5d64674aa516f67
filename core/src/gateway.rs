//! The gateway composition: registry, health, router, leases and the
//! pending-write push wired together.
//!
//! Contract: the adapter feeds link events, decoded peer-link frames, mirror
//! progress, client-session inputs and the escrow's answers; the gateway
//! keeps the machines consistent (a heartbeat reaches health, a health change
//! reaches the router, the push scheduler and the lease table, a registration
//! reaches registry and router) and exposes one output surface:
//!
//! 1. [`Gateway::poll_transmit`]: frames to send to peers;
//! 2. [`Gateway::poll_event`]: what happened, for the adapter to act on;
//! 3. [`Gateway::poll_timeout`]: when to call [`Gateway::handle_timeout`].
//!
//! The single-mutation rule: after every input, drain transmits, then events,
//! then re-arm the one timer. Wall-clock time is derived from the anchor given
//! at construction, so the core never reads a clock.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hypergate_core::gateway::{Gateway, GatewayConfig, GatewayEvent};
//! use hypergate_core::ids::PeerId;
//! use hypergate_core::time::UnixTime;
//!
//! // The adapter reads its clock and passes `start` in; the core never reads one.
//! // Run with a real clock in `tests/tests/drive_loops.rs`.
//! fn drive(start: Instant) {
//!     let mut gateway = Gateway::new(GatewayConfig::default(), start, UnixTime(1_700_000_000_000));
//!     let worker = PeerId([1; 32]);
//!     gateway.handle_link_up(worker, start);
//!
//!     // The drive loop: after each input, drain everything, then arm one timer.
//!     let mut now = start;
//!     for _ in 0..3 {
//!         while let Some(transmit) = gateway.poll_transmit() {
//!             let _ = (transmit.peer, transmit.frame); // write to the peer link
//!         }
//!         while let Some(event) = gateway.poll_event() {
//!             if let GatewayEvent::Health(change) = event {
//!                 let _ = change; // export metrics, log
//!             }
//!         }
//!         let Some((deadline, _reason)) = gateway.poll_timeout() else { break };
//!         now = deadline; // a real adapter sleeps until `deadline`
//!         gateway.handle_timeout(now);
//!     }
//!     assert!(now >= start + Duration::from_secs(5), "the worker sent no heartbeat");
//! }
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use std::collections::BTreeMap;

use crate::escrow::Evidence;
use crate::health::{Health, HealthConfig, HealthEvent};
use crate::ids::{PeerId, RelayKey};
use crate::lease::{EndReason, LeaseConfig, LeaseError, LeaseEvent, LeaseTable};
use crate::partition::Partition;
use crate::push::{PushConfig, PushEvent, PushScheduler};
use crate::registry::{Registry, RegistryError, RegistryEvent, Removal};
use crate::router::{
    AttemptId, Router, RouterConfig, RouterError, RouterEvent, SessionId, SessionKind,
};
use crate::time::{UnixTime, duration_millis};
use crate::wire::{
    Frame, Heartbeat, Message, RegisterAck, RegisterRelays, RelayLeaseEpoch, RelayRegistration,
};

/// Tuning of the gateway composition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatewayConfig {
    /// Liveness detection.
    pub health: HealthConfig,
    /// Routing.
    pub router: RouterConfig,
    /// Lease expiry warnings and request timeouts (the TTL is the escrow's).
    pub lease: LeaseConfig,
    /// Pending-write push cadence.
    pub push: PushConfig,
    /// Writes per relay that may wait for a lease request to be answered.
    pub max_waiting_writes: usize,
    /// Seed of the gateway's randomness (push ids, retry jitter).
    pub seed: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            health: HealthConfig::default(),
            router: RouterConfig::default(),
            lease: LeaseConfig::default(),
            push: PushConfig::default(),
            max_waiting_writes: 64,
            seed: 0,
        }
    }
}

/// A frame to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The receiving peer.
    pub peer: PeerId,
    /// The frame.
    pub frame: Frame,
}

/// What happened; drained with [`Gateway::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    /// From the registry.
    Registry(RegistryEvent),
    /// From the health machine.
    Health(HealthEvent),
    /// From the router.
    Router(RouterEvent),
    /// From the lease table. `Ended` means: wipe the key from the vault and
    /// tell the escrow.
    Lease(LeaseEvent),
    /// From the push scheduler (telemetry; the pushes themselves are transmits).
    Push(PushEvent),
    /// Ask the escrow to unlock (or renew) the relay's gateway writer key,
    /// with this evidence from the gateway's own health and mirror state.
    LeaseRequestNeeded {
        /// The relay.
        relay: RelayKey,
        /// The lease to renew, if this is a renewal.
        renewing: Option<crate::lease::LeaseId>,
        /// What the gateway observes.
        evidence: Evidence,
    },
    /// A write that waited for a lease may now be appended under `epoch`;
    /// answer with [`Gateway::handle_write_appended`] or
    /// [`Gateway::handle_write_failed`] (also if the client has gone).
    WriteReleased {
        /// The write.
        write: WriteId,
        /// The relay.
        relay: RelayKey,
        /// The lease epoch to carry.
        epoch: u64,
    },
    /// A write that waited for a lease is refused (answer read-only).
    WriteRefused {
        /// The write.
        write: WriteId,
        /// The relay.
        relay: RelayKey,
        /// Why, for the `OK false "read-only: …"` message.
        reason: String,
    },
    /// A peer-link frame the composition does not handle itself (forwarded
    /// NIP-01 and HTTP replies, mirror data, acks): the adapter's to act on.
    Inbound {
        /// The sending peer.
        peer: PeerId,
        /// The frame.
        frame: Frame,
    },
}

/// Errors of the composition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The client named a relay that is not registered.
    #[error("relay not registered: {0}")]
    RelayNotRegistered(String),
    /// A routing input was stale or wrong.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A lease input was stale or wrong.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// A registry input was wrong.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    // The request is refused by the gateway's own rules.
    /// A lease may not be requested for this relay now.
    #[error("lease request refused: {0}")]
    LeaseRefused(String),
}

/// The gateway composition. See the module docs for the drive loop.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    /// Which relays this gateway core owns (all, unless the driver partitions by relay).
    partition: Partition,
    registry: Registry,
    health: Health,
    router: Router,
    leases: LeaseTable,
    push: PushScheduler,
    /// Writes waiting for the answer to a lease request, per relay, in arrival order.
    waiting_writes: BTreeMap<RelayKey, VecDeque<WriteId>>,
    /// Appends allowed (verdict or release) and not yet reported done, per relay.
    appends_in_flight: BTreeMap<RelayKey, u32>,
    anchor: (Instant, UnixTime),
    transmits: VecDeque<Transmit>,
    events: VecDeque<GatewayEvent>,
}

impl Gateway {
    /// A gateway with an empty registry. `unix_now` is the wall-clock time at
    /// `now`; later wall-clock values are derived from this anchor.
    #[must_use]
    pub fn new(config: GatewayConfig, now: Instant, unix_now: UnixTime) -> Self {
        Self::with_registry(config, Registry::new(), now, unix_now)
    }

    /// A gateway resuming from a persisted registry: every relay is routable
    /// again (to its replica until its workers reconnect), pending notices are
    /// pushed again, and lease epochs continue from the latest pending write's.
    #[must_use]
    pub fn with_registry(
        config: GatewayConfig,
        registry: Registry,
        now: Instant,
        unix_now: UnixTime,
    ) -> Self {
        Self::in_partition(config, registry, Partition::whole(), now, unix_now)
    }

    /// One partition of a gateway whose core state is split by relay
    /// ([`crate::partition`]): it owns the relays of `registry` (the part of the snapshot
    /// [`crate::partition::Partitioning::split_snapshot`] dealt it) and those registered
    /// with it later, hands out its own session ids, and otherwise resumes as
    /// [`Gateway::with_registry`] does.
    #[must_use]
    pub fn in_partition(
        config: GatewayConfig,
        registry: Registry,
        partition: Partition,
        now: Instant,
        unix_now: UnixTime,
    ) -> Self {
        let (first_session, session_stride) = partition.session_ids();
        let mut gateway = Self {
            config,
            partition,
            registry,
            health: Health::new(config.health),
            router: Router::with_session_ids(config.router, first_session, session_stride),
            leases: LeaseTable::new(config.lease),
            // Partitions draw their retry jitter from different streams.
            push: PushScheduler::new(
                config.push,
                config.seed.wrapping_add(partition.index() as u64),
            ),
            waiting_writes: BTreeMap::new(),
            appends_in_flight: BTreeMap::new(),
            anchor: (now, unix_now),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        let relays: Vec<(RelayKey, Vec<PeerId>)> = gateway
            .registry
            .relays()
            .map(|record| (record.relay_key, record.workers.keys().copied().collect()))
            .collect();
        for (relay, workers) in relays {
            gateway.router.handle_relay_peers(relay, workers, now);
        }
        // Lease epochs continue where the last writes left them, so a worker that was away
        // still learns from its registration ack that it must rotate.
        let epochs: Vec<(RelayKey, u64)> = gateway
            .registry
            .relays()
            .filter_map(|record| Some((record.relay_key, record.pending.lease_version?)))
            .collect();
        for (relay, epoch) in epochs {
            gateway.leases.restore_epoch(relay, epoch);
        }
        // Pending writes survive a restart in the registry: resume their pushes.
        gateway.resume_pending_pushes(now);
        gateway.pump(now);
        gateway
    }

    // ---- getters ----

    /// Which relays this core owns.
    #[must_use]
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The registry.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The health machine.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The router.
    #[must_use]
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The lease table.
    #[must_use]
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// The push scheduler.
    #[must_use]
    pub fn push(&self) -> &PushScheduler {
        &self.push
    }

    /// Breaks the gateway on purpose (tests only): its leases never expire,
    /// as in the original. The simulation must catch this.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault_ignore_lease_expiry(&mut self) {
        self.leases.inject_fault_ignore_expiry();
    }

    /// Wall-clock time at `now`, from the construction anchor.
    #[must_use]
    pub fn unix_time(&self, now: Instant) -> UnixTime {
        let (anchor_instant, anchor_unix) = self.anchor;
        UnixTime(anchor_unix.0.saturating_add(duration_millis(
            now.saturating_duration_since(anchor_instant),
        )))
    }

    // ---- inputs: peer links ----

    /// A worker's link completed its handshake.
    pub fn handle_link_up(&mut self, peer: PeerId, now: Instant) {
        self.health.handle_link_up(peer, now);
        self.pump(now);
    }

    /// A worker's link closed.
    pub fn handle_link_down(&mut self, peer: PeerId, now: Instant) {
        self.health.handle_link_down(peer, now);
        self.pump(now);
    }

    /// A decoded frame arrived from `peer` over an authenticated link.
    pub fn handle_frame(&mut self, peer: PeerId, frame: Frame, now: Instant) {
        let request_id = frame.request_id;
        match frame.message {
            Message::Heartbeat(beat) => {
                self.health.handle_heartbeat(peer, now);
                // Every partition hears a heartbeat; one answers it.
                if self.partition.answers_peers() {
                    self.transmits.push_back(Transmit {
                        peer,
                        frame: Frame {
                            request_id,
                            message: Message::HeartbeatAck(Heartbeat {
                                seq: beat.seq,
                                sent_at: self.unix_time(now),
                            }),
                        },
                    });
                }
            }
            Message::RegisterRelays(register) => {
                let ack = self.register(peer, &register, now);
                self.transmits.push_back(Transmit {
                    peer,
                    frame: Frame {
                        request_id,
                        message: Message::RegisterAck(ack),
                    },
                });
            }
            Message::MirrorAdvertise(advert) => {
                self.health.handle_heartbeat(peer, now);
                // Every partition hears an advert; each keeps its own relays' freshness.
                for core in advert
                    .cores
                    .iter()
                    .filter(|core| self.partition.owns(&core.relay_key))
                {
                    self.health.handle_mirror_advertised(
                        core.relay_key,
                        core.core_key,
                        core.length,
                        now,
                    );
                }
            }
            Message::PushAck(ack) => self.on_push_ack(peer, &ack, now),
            Message::ResyncComplete(done) => self.on_resync_complete(peer, request_id, &done, now),
            message => self.events.push_back(GatewayEvent::Inbound {
                peer,
                frame: Frame {
                    request_id,
                    message,
                },
            }),
        }
        self.pump(now);
    }

    /// A worker registers the relays it serves (what a [`Message::RegisterRelays`] frame
    /// does, without queuing the ack): this core registers the relays it owns and returns
    /// their ack, which a partitioned driver merges with the other partitions'
    /// ([`crate::partition::merge_register_acks`]) and sends. The worker counts as alive.
    #[must_use]
    pub fn handle_registration(
        &mut self,
        peer: PeerId,
        register: &RegisterRelays,
        now: Instant,
    ) -> RegisterAck {
        let ack = self.register(peer, register, now);
        self.pump(now);
        ack
    }

    /// The mirror store verified and stored blocks of a relay's core up to `length`.
    pub fn handle_mirror_stored(
        &mut self,
        relay: RelayKey,
        core: [u8; 32],
        length: u64,
        now: Instant,
    ) {
        self.health.handle_mirror_stored(relay, core, length, now);
        if length > 0 && self.registry.relay(&relay).is_some() {
            self.router.handle_replica_available(relay, true, now);
        }
        self.pump(now);
    }

    /// At start, the mirror store already holds `stored` blocks of `relay`'s `core` from an
    /// earlier run, whose owner last advertised `advertised`: sessions of the relay may be
    /// served from it while no worker is reachable, and its freshness is what those lengths
    /// say (a mirror holding all that was advertised is in sync, see
    /// [`Health::mirror_freshness`]; one behind is as stale as its lag). Ignored for a relay
    /// the registry does not know.
    pub fn handle_mirror_found_at_start(
        &mut self,
        relay: RelayKey,
        core: [u8; 32],
        stored: u64,
        advertised: u64,
        now: Instant,
    ) {
        if self.registry.relay(&relay).is_none() {
            return;
        }
        self.health
            .handle_mirror_advertised(relay, core, advertised, now);
        self.health.handle_mirror_stored(relay, core, stored, now);
        if stored > 0 {
            self.router.handle_replica_available(relay, true, now);
        }
        self.pump(now);
    }

    /// An operator registers a relay or updates it (`POST /api/relays`); no worker is
    /// attached. A relay with a mirror is routable to it at once.
    pub fn handle_operator_registration(&mut self, registration: &RelayRegistration, now: Instant) {
        let unix = self.unix_time(now);
        self.registry
            .handle_operator_registration(registration, unix);
        self.pump(now);
    }

    /// A worker stops serving a relay (it unregistered it). The relay stays.
    pub fn handle_worker_detach(&mut self, worker: PeerId, relay: RelayKey, now: Instant) -> bool {
        let unix = self.unix_time(now);
        let detached = self.registry.detach_worker(&relay, &worker, unix);
        self.pump(now);
        detached
    }

    /// An operator removes a relay. With pending writes this needs
    /// [`Removal::Force`]; the relay's notice and lease are then given up.
    pub fn handle_relay_removal(
        &mut self,
        relay: RelayKey,
        mode: Removal,
        now: Instant,
    ) -> Result<(), GatewayError> {
        let result = self.registry.remove_relay(&relay, mode);
        self.pump(now);
        Ok(result?)
    }

    // ---- inputs: client sessions ----

    /// Opens a routed session for the relay a client named (key or alias).
    pub fn open_session(
        &mut self,
        relay_name: &str,
        kind: SessionKind,
        now: Instant,
    ) -> Result<SessionId, GatewayError> {
        let relay = self
            .registry
            .resolve(relay_name)
            .ok_or_else(|| GatewayError::RelayNotRegistered(relay_name.to_owned()))?;
        let session = self.router.open_session(relay, kind, now)?;
        self.pump(now);
        Ok(session)
    }

    /// The outcome of an attempt the router asked for; also feeds health.
    pub fn handle_attempt_outcome(
        &mut self,
        session: SessionId,
        attempt: AttemptId,
        peer: PeerId,
        succeeded: bool,
        reason: &str,
        now: Instant,
    ) -> Result<(), GatewayError> {
        self.router
            .handle_attempt_outcome(session, attempt, succeeded, reason, now)?;
        self.health.handle_request_outcome(peer, succeeded, now);
        self.pump(now);
        Ok(())
    }

    /// Closes a session.
    pub fn close_session(&mut self, session: SessionId, now: Instant) -> Result<(), GatewayError> {
        self.router.close_session(session, now)?;
        self.pump(now);
        Ok(())
    }

    /// Mutable access to the router for per-frame routing calls
    /// (`route_read`, subscriptions, fallback-write counts), which touch no
    /// other machine.
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.health.handle_timeout(now);
        self.router.handle_timeout(now);
        self.leases.handle_timeout(now);
        self.push.handle_timeout(now);
        self.pump(now);
    }

    // ---- outputs ----

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline of any machine, and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        [
            self.health.poll_timeout(),
            self.router.poll_timeout(),
            self.leases.poll_timeout(),
            self.push.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
    }

    // ---- internals ----

    fn register(&mut self, peer: PeerId, register: &RegisterRelays, now: Instant) -> RegisterAck {
        let unix = self.unix_time(now);
        let mut accepted = Vec::new();
        let mut lease_epochs = Vec::new();
        for registration in register.relays.iter() {
            let relay_key = registration.relay_key;
            // Another partition registers (and answers for) its own relays.
            if !self.partition.owns(&relay_key) {
                continue;
            }
            self.registry.handle_registration(peer, registration, unix);
            accepted.push(relay_key);
            // A worker that was away when a lease was issued learns it here (it rotates).
            let epoch = self.leases.current_epoch(&relay_key);
            if epoch > 0 {
                lease_epochs.push(RelayLeaseEpoch { relay_key, epoch });
            }
        }
        // A registering worker is alive.
        self.health.handle_heartbeat(peer, now);
        // Both lists have at most one entry per registered relay, within the same bound.
        RegisterAck {
            accepted: crate::wire::BoundedVec::new(accepted)
                .unwrap_or_else(|_| crate::wire::BoundedVec::empty()),
            rejected: crate::wire::BoundedVec::empty(),
            lease_epochs: crate::wire::BoundedVec::new(lease_epochs)
                .unwrap_or_else(|_| crate::wire::BoundedVec::empty()),
        }
    }

    /// Moves every machine's events to where they matter, until quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(event) = self.registry.poll_event() {
                moved = true;
                match &event {
                    RegistryEvent::WorkerAttached { relay, worker } => {
                        let workers: Vec<PeerId> = self.registry.workers_of(relay).collect();
                        self.router.handle_relay_peers(*relay, workers, now);
                        // A worker that turned healthy before registering the
                        // relay ends its lease now, as any returning worker does.
                        let health = self.health.health_of(worker);
                        self.on_worker_of_relay(*relay, health, now);
                    }
                    RegistryEvent::WorkerDetached { relay, .. } => {
                        let workers: Vec<PeerId> = self.registry.workers_of(relay).collect();
                        self.router.handle_relay_peers(*relay, workers, now);
                        // The push goes to the workers still serving the relay.
                        let reachable = self.any_worker_up(relay);
                        self.push.handle_reachability(*relay, reachable, now);
                    }
                    RegistryEvent::RelayAdded { relay } => {
                        let workers: Vec<PeerId> = self.registry.workers_of(relay).collect();
                        self.router.handle_relay_peers(*relay, workers, now);
                    }
                    RegistryEvent::RelayRemoved { relay } => {
                        self.router.handle_relay_peers(*relay, Vec::new(), now);
                        self.router.handle_replica_available(*relay, false, now);
                        // A forced removal gives up the relay's pending notice and lease.
                        self.push.forget(*relay);
                        self.leases.end_relay(
                            relay,
                            EndReason::Manual {
                                reason: "relay-removed".into(),
                            },
                            now,
                        );
                    }
                    _ => {}
                }
                self.events.push_back(GatewayEvent::Registry(event));
            }
            while let Some(event) = self.health.poll_event() {
                moved = true;
                if let HealthEvent::PeerChanged { peer, to, .. } = &event {
                    self.router.handle_peer_health(*peer, *to, now);
                    self.on_peer_health(*peer, *to, now);
                }
                self.events.push_back(GatewayEvent::Health(event));
            }
            while let Some(event) = self.router.poll_event() {
                moved = true;
                self.events.push_back(GatewayEvent::Router(event));
            }
            while let Some(event) = self.leases.poll_event() {
                moved = true;
                // The lease event first: writes it releases follow it.
                self.events.push_back(GatewayEvent::Lease(event.clone()));
                self.on_lease_event(&event, now);
            }
            while let Some(push) = self.push.poll_push() {
                moved = true;
                self.send_push(push);
            }
            while let Some(event) = self.push.poll_event() {
                moved = true;
                self.events.push_back(GatewayEvent::Push(event));
            }
            if !moved {
                break;
            }
        }
    }
}

mod writes;

pub use writes::{WriteId, WriteVerdict};

#[cfg(test)]
mod tests;

//! The gateway's shared state and the places the core is driven.
//!
//! Contract:
//! - The core's state is split by relay into partitions (`hypergate_core::partition`): one
//!   core [`Gateway`] per partition, each behind its own synchronous mutex, touched only
//!   through [`Shared::with_partition`] and the helpers that pick the partition for a relay
//!   ([`Shared::with_relay`]) or for all of them ([`Shared::with_every`]). The closure feeds
//!   one input, then the same lock drains every transmit (into the peers' bounded outbound
//!   queues, in order) and every event (routed to client sessions, pending writes and
//!   background tasks) until that core is quiet, and the partition's timer task is woken to
//!   re-arm from `poll_timeout`. No `.await` happens under a lock. The tokio driver has one
//!   partition; the glommio driver one per shard, whose timer runs on that shard.
//! - Lock order: partition locks one at a time, or all in index order
//!   ([`Shared::read_every`]); the link table's lock is the innermost and is never held
//!   while a partition lock is taken.
//! - Router attempts are answered inside the same drain: a worker is worth trying when its
//!   peer link is up; a frame it cannot serve comes back as a "session ended" frame, which
//!   the session reports as a forward failure.
//! - Each link's outbound frames wait in a [`LinkQueue`]: client frames in their session's
//!   flow (a refusal is that client's `rate-limited:` answer, never the link's end), the
//!   core's frames in the control flow, whose own room client frames never take. A peer
//!   whose control flow is full anyway is treated as a dead link (every partition hears it
//!   is down), the peer link's backpressure contract.
//! - Escrow calls, lease-end cleanup and replica refreshes are spawned, never awaited in the
//!   drain; they come back with their own input to the relay's partition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::crypto::{Identity, LeaseVault};
use crate::drive::GatewayDrives;
use crate::mirror::MirrorStore;
use crate::peer_link::{CloseCode, PeerLink};
use crate::rt::{self, Spawner};
use hypergate_core::fair_queue::{Flow, Refused};
use hypergate_core::gateway::{Gateway, GatewayEvent, WriteId};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseEvent;
use hypergate_core::partition::{self, Partitioning, Route};
use hypergate_core::registry::RelayRecord;
use hypergate_core::router::{RouterEvent, SessionId};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{Frame, Message};
use tokio::sync::{Notify, oneshot};

use super::escrow_link::EscrowLink;
use super::link_queue::LinkQueue;
use super::metrics::GatewayMetrics;
use super::replica::{LeasedWriters, ReplicaHosts};
use super::tokens::TokenKeys;

/// What a client session hears from the drain.
#[derive(Debug)]
pub(crate) enum SessionSignal {
    /// Forward frames to this worker from now on (after a sweep, or back from replica mode).
    Peer(PeerId),
    /// Serve from the mirror.
    Replica,
    /// Neither a worker nor a replica can serve the relay.
    Unavailable,
    /// A frame the worker sent for this session; empty: the worker ended the session.
    FromWorker(PeerId, String),
}

/// What became of a client frame forwarded to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarded {
    /// Queued on the worker's link.
    Queued,
    /// Refused by the link's queue (the session's backlog or the link's room is full).
    Refused(Refused),
    /// The worker has no link (any more).
    NoLink,
}

/// What became of a write that waited for a lease.
#[derive(Debug)]
pub(crate) enum WriteDecision {
    /// Append under this lease epoch.
    Append(u64),
    /// Refuse it: read-only, with why.
    ReadOnly(String),
}

/// Everything under one partition's lock.
pub(crate) struct CoreState {
    pub(crate) core: Gateway,
    /// The partition's client sessions, by the router's id.
    pub(crate) sessions: BTreeMap<SessionId, flume::Sender<SessionSignal>>,
    /// Writes waiting for a lease request's answer.
    pub(crate) waiting_writes: BTreeMap<WriteId, oneshot::Sender<WriteDecision>>,
    next_write: u64,
}

/// The peers whose links are up, under the innermost lock (see the module docs).
#[derive(Default)]
pub(crate) struct LinkTable {
    /// Outbound frame queues.
    pub(crate) outbound: BTreeMap<PeerId, Arc<LinkQueue>>,
    /// The links themselves, for requests that wait for an answer (forwarded HTTP).
    pub(crate) links: BTreeMap<PeerId, PeerLink>,
}

/// One partition of the core and the wake-up of its timer task.
struct CorePartition {
    state: Mutex<CoreState>,
    /// Wakes the partition's timer task after an input (its deadline may have moved).
    timer: Notify,
}

/// The gateway's shared state. See the module docs.
pub(crate) struct Shared {
    partitioning: Partitioning,
    partitions: Box<[CorePartition]>,
    links: Mutex<LinkTable>,
    /// Inputs fed to the partitions so far, each counted once it is applied: a snapshot of
    /// the partitions read after this was `n` covers every change of the first `n`.
    inputs: AtomicU64,
    pub(crate) identity: Identity,
    pub(crate) clock: SystemClock,
    /// Starts background tasks on the driver's runtime.
    pub(crate) spawner: Spawner,
    pub(crate) mirror: Arc<tokio::sync::Mutex<MirrorStore>>,
    /// Leased gateway writers, by relay (lock before the mirror, never after).
    pub(crate) writers: LeasedWriters,
    pub(crate) vault: LeaseVault,
    pub(crate) replicas: ReplicaHosts,
    pub(crate) escrow: Option<EscrowLink>,
    pub(crate) metrics: GatewayMetrics,
    /// The gateway's relay and pfp drives.
    pub(crate) drives: tokio::sync::Mutex<GatewayDrives>,
    /// Client tokens of the write routes.
    pub(crate) tokens: TokenKeys,
    /// Where the registry snapshot is persisted.
    pub(crate) snapshot_path: PathBuf,
    /// Serialises snapshot writes, so a later snapshot is never overwritten by an earlier one;
    /// holds how many core inputs the last durable snapshot covers (group commit, D118).
    persist_lock: tokio::sync::Mutex<u64>,
    /// Wakes the persister after the registry changed.
    pub(crate) registry_changed: Notify,
}

impl Shared {
    #[allow(clippy::too_many_arguments)] // one constructor, called once by `start`
    pub(crate) fn new(
        partitioning: Partitioning,
        cores: Vec<Gateway>,
        identity: Identity,
        mirror: MirrorStore,
        replica_index_dir: PathBuf,
        escrow: Option<EscrowLink>,
        metrics: GatewayMetrics,
        drives: GatewayDrives,
        tokens: TokenKeys,
        snapshot_path: PathBuf,
        spawner: Spawner,
    ) -> Arc<Shared> {
        let mirror = Arc::new(tokio::sync::Mutex::new(mirror));
        let writers = Arc::new(tokio::sync::Mutex::new(BTreeMap::new()));
        let replicas = ReplicaHosts::new(
            replica_index_dir,
            Arc::clone(&mirror),
            Arc::clone(&writers),
            spawner.clone(),
        );
        debug_assert_eq!(cores.len(), partitioning.count(), "one core per partition");
        let partitions = cores
            .into_iter()
            .map(|core| CorePartition {
                state: Mutex::new(CoreState {
                    core,
                    sessions: BTreeMap::new(),
                    waiting_writes: BTreeMap::new(),
                    next_write: 1,
                }),
                timer: Notify::new(),
            })
            .collect();
        Arc::new(Shared {
            partitioning,
            partitions,
            links: Mutex::new(LinkTable::default()),
            inputs: AtomicU64::new(0),
            identity,
            clock: SystemClock,
            spawner,
            mirror,
            writers,
            vault: LeaseVault::new(),
            replicas,
            escrow,
            metrics,
            drives: tokio::sync::Mutex::new(drives),
            tokens,
            snapshot_path,
            persist_lock: tokio::sync::Mutex::new(0),
            registry_changed: Notify::new(),
        })
    }

    /// Monotonic now.
    pub(crate) fn clock_now(&self) -> Instant {
        self.clock.now()
    }

    /// This gateway's peer id.
    pub(crate) fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Wall-clock now.
    pub(crate) fn unix_now(&self) -> UnixTime {
        self.clock.unix_now()
    }

    /// How the core is partitioned.
    pub(crate) fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    fn lock(&self, partition: usize) -> MutexGuard<'_, CoreState> {
        // A panic under the lock is a bug; the state it left is still the best there is.
        self.partitions[partition]
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The peers whose links are up (the innermost lock: take no partition lock under it).
    pub(crate) fn links(&self) -> MutexGuard<'_, LinkTable> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds one input to `partition`'s core, then drains its outputs. See the module docs.
    pub(crate) fn with_partition<R>(
        self: &Arc<Self>,
        partition: usize,
        input: impl FnOnce(&mut CoreState, Instant) -> R,
    ) -> R {
        let now = self.clock.now();
        let mut state = self.lock(partition);
        let result = input(&mut state, now);
        self.drain(&mut state, now);
        // Counted once applied, still under the lock: see `inputs`.
        self.inputs.fetch_add(1, Ordering::SeqCst);
        drop(state);
        self.partitions[partition].timer.notify_one();
        result
    }

    /// Feeds one input to the core of the partition that owns `relay`.
    pub(crate) fn with_relay<R>(
        self: &Arc<Self>,
        relay: RelayKey,
        input: impl FnOnce(&mut CoreState, Instant) -> R,
    ) -> R {
        self.with_partition(self.partitioning.of_relay(&relay), input)
    }

    /// Feeds the same input to every partition's core, one after the other.
    pub(crate) fn with_every(self: &Arc<Self>, mut input: impl FnMut(&mut CoreState, Instant)) {
        for partition in 0..self.partitions.len() {
            self.with_partition(partition, &mut input);
        }
    }

    /// Reads `partition`'s core without feeding it.
    pub(crate) fn read_partition<R>(
        &self,
        partition: usize,
        read: impl FnOnce(&CoreState) -> R,
    ) -> R {
        read(&self.lock(partition))
    }

    /// Reads the core of the partition that owns `relay`.
    pub(crate) fn read_relay<R>(&self, relay: &RelayKey, read: impl FnOnce(&CoreState) -> R) -> R {
        self.read_partition(self.partitioning.of_relay(relay), read)
    }

    /// Reads every partition at once (locked in index order), for views across relays.
    pub(crate) fn read_every<R>(&self, read: impl FnOnce(&[&CoreState]) -> R) -> R {
        let guards: Vec<MutexGuard<'_, CoreState>> =
            (0..self.partitions.len()).map(|p| self.lock(p)).collect();
        let states: Vec<&CoreState> = guards.iter().map(|guard| &**guard).collect();
        read(&states)
    }

    /// The relay a URL names (64-hex key or a registered identifier). An identifier claimed
    /// in two partitions (which neither refuses, each seeing only its own relays) resolves to
    /// the relay registered first, ties broken by key.
    pub(crate) fn resolve(&self, name: &str) -> Option<RelayKey> {
        // A registered key names its relay before any identifier does (as in one registry),
        // and only its own partition can hold it.
        if let Ok(relay) = name.parse::<RelayKey>()
            && self.read_relay(&relay, |state| {
                state.core.registry().relay(&relay).is_some()
            })
        {
            return Some(relay);
        }
        (0..self.partitions.len())
            .filter_map(|partition| {
                self.read_partition(partition, |state| {
                    let registry = state.core.registry();
                    let relay = registry.resolve(name)?;
                    Some((registry.relay(&relay)?.registered_at, relay))
                })
            })
            .min()
            .map(|(_, relay)| relay)
    }

    /// Feeds a frame from `peer` to the partitions it concerns (`Partitioning::route`); a
    /// registration is answered once, with the partitions' acks merged.
    pub(crate) fn handle_peer_frame(self: &Arc<Self>, peer: PeerId, frame: Frame) {
        match self.partitioning.route(&frame) {
            Route::One(partition) => self.with_partition(partition, |state, now| {
                state.core.handle_frame(peer, frame, now);
            }),
            Route::Every => self.with_every(|state, now| {
                state.core.handle_frame(peer, frame.clone(), now);
            }),
            Route::Registration => {
                let Message::RegisterRelays(register) = &frame.message else {
                    return;
                };
                let mut acks = Vec::with_capacity(self.partitions.len());
                self.with_every(|state, now| {
                    acks.push(state.core.handle_registration(peer, register, now));
                });
                let ack = Frame::new(
                    frame.request_id,
                    Message::RegisterAck(partition::merge_register_acks(acks)),
                );
                self.send_to_peer(peer, ack);
            }
        }
    }

    /// Writes the registry snapshot (relays, workers, pending writes, lease epochs) and syncs
    /// it: callers that report a gateway write as accepted call this first, so a crash never
    /// forgets a pending write. Atomic: a temp file, fsync, rename, fsync of the directory.
    /// One snapshot holds every partition's relays, so a restart may partition differently.
    ///
    /// Group commit: a snapshot read after every core input this caller made covers them, so
    /// a caller that finds such a snapshot already durable (another writer's, taken while it
    /// waited for the lock) returns at once. Concurrent writers then share one snapshot write
    /// instead of queueing one each.
    pub(crate) async fn persist_registry(&self) -> std::io::Result<()> {
        let wanted = self.inputs.load(Ordering::SeqCst);
        let mut durable = self.persist_lock.lock().await;
        if *durable >= wanted {
            return Ok(());
        }
        // Read before the partitions: every input counted here is in what they show.
        let covers = self.inputs.load(Ordering::SeqCst);
        let parts: Vec<_> = (0..self.partitions.len())
            .map(|p| self.read_partition(p, |state| state.core.registry().snapshot()))
            .collect();
        let bytes = partition::merge_snapshots(parts)
            .to_bytes()
            .map_err(std::io::Error::other)?;
        let path = self.snapshot_path.clone();
        rt::unblock(move || write_atomically(&path, &bytes)).await?;
        *durable = covers;
        Ok(())
    }

    /// When `partition`'s core next needs its `handle_timeout`, and the wake-up of the
    /// partition's timer task.
    pub(crate) fn next_deadline(&self, partition: usize) -> (Option<Instant>, &Notify) {
        let deadline = self.read_partition(partition, |state| state.core.poll_timeout());
        (
            deadline.map(|(at, _reason)| at),
            &self.partitions[partition].timer,
        )
    }

    /// A fresh id for a client write.
    pub(crate) fn next_write_id(state: &mut CoreState) -> WriteId {
        let id = WriteId(state.next_write);
        state.next_write += 1;
        id
    }

    fn drain(self: &Arc<Self>, state: &mut CoreState, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(transmit) = state.core.poll_transmit() {
                moved = true;
                self.send_to_peer(transmit.peer, transmit.frame);
            }
            while let Some(event) = state.core.poll_event() {
                moved = true;
                self.on_event(state, event, now);
            }
            if !moved {
                return;
            }
        }
    }

    /// Queues `session`'s `frame` for `peer` in the session's own flow, without ever taking
    /// the link down: a refusal refuses this frame only; no queue means no link.
    pub(crate) fn forward_to_peer(
        &self,
        peer: PeerId,
        session: SessionId,
        frame: Frame,
    ) -> Forwarded {
        // The queue has its own lock: the link table's is held only to find it.
        let queue = self.links().outbound.get(&peer).cloned();
        match queue {
            None => Forwarded::NoLink,
            Some(queue) => match queue.push(Flow::Client(session), frame) {
                Ok(()) => Forwarded::Queued,
                Err(refused) => Forwarded::Refused(refused),
            },
        }
    }

    /// Tells `peer` that `session` left it (`ended` is the "session ended" frame); what the
    /// session still had queued there is dropped. Whether the peer has a link.
    pub(crate) fn end_session_on_peer(
        &self,
        peer: PeerId,
        session: SessionId,
        ended: Frame,
    ) -> bool {
        let Some(queue) = self.links().outbound.get(&peer).cloned() else {
            return false;
        };
        let dropped = queue.end_session(session, ended);
        if dropped > 0 {
            tracing::debug!(
                session = session.0,
                dropped,
                "frames of a session that left its worker dropped"
            );
        }
        true
    }

    /// Queues the core's `frame` for `peer` in the link's control flow; a full control flow
    /// takes the link down, and every partition hears so from a task (the caller may hold
    /// a partition's lock).
    pub(crate) fn send_to_peer(self: &Arc<Self>, peer: PeerId, frame: Frame) {
        let mut links = self.links();
        let Some(queue) = links.outbound.get(&peer) else {
            return;
        };
        let Err(refused) = queue.push(Flow::Control, frame) else {
            return;
        };
        tracing::warn!(peer = %peer.short(), %refused, "peer link outbound queue full: dropping the link");
        links.outbound.remove(&peer);
        let link = links.links.remove(&peer);
        drop(links);
        let shared = Arc::clone(self);
        self.spawner.spawn(async move {
            if let Some(link) = link {
                let _ = link
                    .close(CloseCode::GOING_AWAY, "outbound queue full")
                    .await;
            }
            // Unless the worker linked again meanwhile (its new link is up).
            if shared.links().outbound.contains_key(&peer) {
                return;
            }
            shared.with_every(|state, now| state.core.handle_link_down(peer, now));
        });
    }

    fn signal(state: &mut CoreState, session: SessionId, signal: SessionSignal) {
        if let Some(queue) = state.sessions.get(&session)
            && queue.try_send(signal).is_err()
        {
            // The session task is gone or hopelessly behind: it will be closed by its task.
            tracing::debug!(session = session.0, "session signal dropped");
        }
    }

    fn on_event(self: &Arc<Self>, state: &mut CoreState, event: GatewayEvent, now: Instant) {
        self.metrics.observe(&event);
        if matches!(event, GatewayEvent::Registry(_) | GatewayEvent::Lease(_)) {
            self.registry_changed.notify_one();
        }
        match event {
            GatewayEvent::Router(event) => self.on_router_event(state, event, now),
            GatewayEvent::LeaseRequestNeeded {
                relay,
                renewing,
                evidence,
            } => match &self.escrow {
                Some(escrow) => {
                    escrow.spawn_request(Arc::clone(self), relay, renewing, evidence);
                }
                None => state
                    .core
                    .handle_lease_refused(relay, "no escrow is configured", now),
            },
            GatewayEvent::WriteReleased {
                write,
                relay,
                epoch,
            } => match state.waiting_writes.remove(&write) {
                Some(waiter) => {
                    if waiter.send(WriteDecision::Append(epoch)).is_err() {
                        state.core.handle_write_failed(relay, now);
                    }
                }
                None => state.core.handle_write_failed(relay, now),
            },
            GatewayEvent::WriteRefused { write, reason, .. } => {
                if let Some(waiter) = state.waiting_writes.remove(&write) {
                    let _ = waiter.send(WriteDecision::ReadOnly(reason));
                }
            }
            GatewayEvent::Lease(LeaseEvent::Ended { id, reason }) => {
                let wiped = self.vault.wipe(&id);
                tracing::info!(lease = %id, reason = ?reason, wiped, "lease ended");
                let shared = Arc::clone(self);
                self.spawner.spawn(async move {
                    {
                        // Only this lease's writer: a newer lease may have replaced it already.
                        let mut writers = shared.writers.lock().await;
                        if writers
                            .get(&id.relay)
                            .is_some_and(|leased| leased.lease == id)
                        {
                            writers.remove(&id.relay);
                        }
                    }
                    if let Some(escrow) = &shared.escrow {
                        escrow.release(&shared, id).await;
                    }
                });
            }
            GatewayEvent::Inbound { peer, frame } => self.on_inbound(state, peer, frame),
            GatewayEvent::Health(change) => tracing::debug!(?change, "peer health"),
            GatewayEvent::Registry(change) => tracing::debug!(?change, "registry"),
            GatewayEvent::Lease(event) => tracing::info!(?event, "lease"),
            GatewayEvent::Push(event) => tracing::debug!(?event, "pending-write push"),
        }
    }

    fn on_router_event(self: &Arc<Self>, state: &mut CoreState, event: RouterEvent, now: Instant) {
        match event {
            RouterEvent::Attempt {
                session,
                attempt,
                peer,
                ..
            } => {
                let up = self.links().outbound.contains_key(&peer);
                let reason = if up { "link-up" } else { "no-link" };
                if let Err(error) = state
                    .core
                    .handle_attempt_outcome(session, attempt, peer, up, reason, now)
                {
                    tracing::debug!(%error, "stale routing attempt");
                }
            }
            RouterEvent::Routed { session, peer, .. } => {
                Self::signal(state, session, SessionSignal::Peer(peer));
            }
            RouterEvent::FallbackStarted { session, relay } => {
                tracing::info!(session = session.0, relay = %relay.short(), "replica mode");
                Self::signal(state, session, SessionSignal::Replica);
            }
            RouterEvent::FallbackEnded {
                session,
                relay,
                peer,
                duration,
                ..
            } => {
                tracing::info!(session = session.0, relay = %relay.short(), ?duration, "back to a worker");
                Self::signal(state, session, SessionSignal::Peer(peer));
            }
            RouterEvent::NoPeersAvailable { session, .. } => {
                Self::signal(state, session, SessionSignal::Unavailable);
            }
            RouterEvent::AttemptFinished { .. } | RouterEvent::SessionClosed { .. } => {}
        }
    }

    fn on_inbound(&self, state: &mut CoreState, peer: PeerId, frame: Frame) {
        match frame.message {
            Message::NostrFrame(forwarded) => {
                let session = SessionId(forwarded.session);
                Self::signal(
                    state,
                    session,
                    SessionSignal::FromWorker(peer, forwarded.frame.as_str().to_owned()),
                );
            }
            other => {
                tracing::debug!(peer = %peer.short(), kind = other.kind(), "unhandled peer frame")
            }
        }
    }
}

/// Every partition's relay records in key order (the order one registry lists them in), each
/// with its partition's state.
pub(crate) fn relays_in_key_order<'a>(
    cores: &[&'a CoreState],
) -> Vec<(&'a CoreState, &'a RelayRecord)> {
    let mut records: Vec<_> = cores
        .iter()
        .flat_map(|core| {
            core.core
                .registry()
                .relays()
                .map(move |record| (*core, record))
        })
        .collect();
    records.sort_by_key(|(_, record)| record.relay_key);
    records
}

/// Replaces `path` with `bytes` so a crash leaves the old or the new file, never a mix.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

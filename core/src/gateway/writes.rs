//! The gateway's write path while a relay has no healthy worker: lease
//! acquisition, the epoch fence, pending marks, pushes and resync.
//!
//! Contract:
//! - A client write on a session routed to a peer is forwarded. On a session
//!   in replica mode it is accepted **only** under the relay's usable lease,
//!   and only while no worker of the relay is healthy (if one is, the session
//!   returns to it and the write is forwarded there).
//! - With no lease, the gateway requests one automatically
//!   ([`GatewayEvent::LeaseRequestNeeded`] with evidence from its own health
//!   and mirror state); writes arriving meanwhile wait, bounded per relay, for
//!   the one request in flight, then are released ([`GatewayEvent::WriteReleased`])
//!   or refused ([`GatewayEvent::WriteRefused`]).
//! - A relay whose owner did not enable escrow is read-only while its workers
//!   are away; the gateway does not ask.
//! - A lease ends when a worker of the relay is healthy again
//!   (`peer-healthy`), on resync-complete (`worker-resync`), on revoke, at
//!   expiry and on shutdown. While no worker is healthy, the lease is renewed
//!   at its expiry warning.
//! - An appended write marks the relay's pending writes (with the lease
//!   epoch) and hands the notice to the push scheduler. A worker's
//!   resync-complete that covers the latest mark, while no allowed append is
//!   still in flight, clears the flags, releases the lease and starts the
//!   `cleared` notice; every resync-complete is answered (`ResyncAck`), and the
//!   worker rotates its gateway writer only on `cleared`, so the old writer's
//!   final length never cuts off a gateway write.

use std::time::Instant;

use crate::escrow::Evidence;
use crate::health::PeerHealth;
use crate::ids::{PeerId, RelayKey};
use crate::lease::{EndReason, LeaseEvent, LeaseGrant, LeaseId, RequestOutcome};
use crate::push::{OutboundPush, PendingNotice, ResyncOutcome};
use crate::registry::PendingMark;
use crate::router::{SessionId, Target};
use crate::wire::{Frame, Message, PushAck, ResyncAck, ResyncComplete, ResyncStatus};

use super::{Gateway, GatewayError, GatewayEvent, Transmit};

/// The adapter's name for one client write (e.g. a counter per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// What to do with a client write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteVerdict {
    /// Forward it to this worker.
    Forward(PeerId),
    /// The session is still sweeping: hold the frame until it is routed.
    Hold,
    /// Append it to the gateway writer log under lease `epoch` (the fence
    /// passed now), then report [`Gateway::handle_write_appended`].
    Append {
        /// The lease epoch the write carries.
        epoch: u64,
    },
    /// It waits for the lease request in flight; a
    /// [`GatewayEvent::WriteReleased`] or [`GatewayEvent::WriteRefused`] follows.
    Wait,
    /// Refuse it: `NOTICE "Relay is read-only while workers are offline"` and
    /// `OK false "read-only: <reason>"`.
    ReadOnly {
        /// Why.
        reason: String,
    },
}

impl Gateway {
    /// Decides what happens to a client write on `session`.
    pub fn handle_client_write(
        &mut self,
        session: SessionId,
        write: WriteId,
        now: Instant,
    ) -> Result<WriteVerdict, GatewayError> {
        let relay = self.router.relay_of(session)?;
        let verdict = match self.router.target(session)? {
            Target::Peer(peer) => WriteVerdict::Forward(peer),
            Target::Pending => WriteVerdict::Hold,
            Target::Unavailable => WriteVerdict::ReadOnly {
                reason: "no worker and no replica of this relay".into(),
            },
            Target::Replica => {
                if let Some(peer) = self.router.return_now(session, now) {
                    // A worker is healthy: it takes the write, never a lease.
                    WriteVerdict::Forward(peer)
                } else {
                    self.replica_write(relay, write, now)
                }
            }
        };
        self.pump(now);
        Ok(verdict)
    }

    /// A write was appended durably to the gateway writer log under `epoch`:
    /// record it as pending and push the notice to the relay's workers. Every
    /// `Append` verdict and `WriteReleased` event is answered by this or by
    /// [`Gateway::handle_write_failed`].
    pub fn handle_write_appended(
        &mut self,
        relay: RelayKey,
        epoch: u64,
        mut mark: PendingMark,
        now: Instant,
    ) -> Result<(), GatewayError> {
        self.end_append(relay);
        mark.lease_version = Some(epoch);
        let unix = self.unix_time(now);
        let pending = self.registry.mark_pending(&relay, mark, unix)?.clone();
        if let Some(notice) = PendingNotice::from_pending_writes(relay, &pending) {
            let reachable = self.any_worker_up(&relay);
            let _ = self.push.notify_pending(notice, reachable, now);
        }
        self.pump(now);
        Ok(())
    }

    /// An append the gateway allowed did not happen (disk error, shutdown):
    /// nothing was written, so nothing is marked.
    pub fn handle_write_failed(&mut self, relay: RelayKey, now: Instant) {
        self.end_append(relay);
        self.pump(now);
    }

    /// An operator asks for `relay`'s lease now (`POST /api/escrow/leases/:relayKey/request`):
    /// the request a write would make, with the gateway's own evidence, so the escrow's policy
    /// still decides. Refused here when the relay is unknown, its owner did not enable escrow,
    /// or one of its workers is healthy (it takes the writes).
    pub fn handle_operator_lease_request(
        &mut self,
        relay: RelayKey,
        now: Instant,
    ) -> Result<RequestOutcome, GatewayError> {
        let record = self
            .registry
            .relay(&relay)
            .ok_or_else(|| GatewayError::RelayNotRegistered(relay.to_hex()))?;
        if !record.escrow_enabled() {
            return Err(GatewayError::LeaseRefused(
                "the relay's owner has not enabled escrow".into(),
            ));
        }
        if self.any_worker_healthy(&relay) {
            return Err(GatewayError::LeaseRefused(
                "a worker of the relay is healthy; it takes the writes".into(),
            ));
        }
        let outcome = self.leases.request(relay, now);
        if outcome == RequestOutcome::Started {
            let evidence = self.evidence(&relay, now);
            self.events.push_back(GatewayEvent::LeaseRequestNeeded {
                relay,
                renewing: None,
                evidence,
            });
        }
        self.pump(now);
        Ok(outcome)
    }

    /// The escrow granted (or renewed) a lease.
    pub fn handle_lease_granted(
        &mut self,
        grant: LeaseGrant,
        now: Instant,
    ) -> Result<(), GatewayError> {
        let relay = grant.id.relay;
        let worker_back = self.any_worker_healthy(&relay);
        if worker_back {
            // A worker came back while the escrow decided: it takes the
            // writes; the lease is installed (its epoch counts) and ended.
            self.refuse_waiting(relay, "a worker is back; retry");
        }
        let result = self.leases.handle_grant(grant, now);
        if result.is_err() && !self.leases.is_requested(&relay) {
            // Only when no request is left to wait for: a late or duplicate
            // grant leaves the real request in flight.
            self.refuse_waiting(relay, "lease-grant-refused");
        } else if result.is_ok() && worker_back {
            self.leases.end_relay(&relay, EndReason::PeerHealthy, now);
        }
        self.pump(now);
        Ok(result?)
    }

    /// The escrow refused the lease request (policy reasons) or could not be reached.
    pub fn handle_lease_refused(&mut self, relay: RelayKey, reason: &str, now: Instant) {
        self.leases.handle_request_failed(relay, reason, now);
        self.pump(now);
    }

    /// A lease was revoked (by the escrow or an operator). A late notice
    /// about an older epoch does not touch the current lease.
    pub fn handle_lease_revoked(
        &mut self,
        lease: LeaseId,
        reason: &str,
        now: Instant,
    ) -> Result<(), GatewayError> {
        let reason = EndReason::Revoked {
            reason: reason.to_owned(),
        };
        let result = self.leases.end(lease, reason, now);
        self.pump(now);
        Ok(result?)
    }

    /// The process is stopping: end every lease so the adapter wipes the keys.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.leases.end_all(&EndReason::Shutdown, now);
        let relays: Vec<RelayKey> = self.waiting_writes.keys().copied().collect();
        for relay in relays {
            self.refuse_waiting(relay, "gateway-shutdown");
        }
        self.pump(now);
    }

    /// What the gateway observes about `relay`, for the escrow's policy.
    #[must_use]
    pub fn evidence(&self, relay: &RelayKey, now: Instant) -> Evidence {
        let workers: Vec<PeerId> = self.registry.workers_of(relay).collect();
        let healthy = workers
            .iter()
            .filter(|peer| self.health.health_of(peer) == PeerHealth::Healthy)
            .count();
        // A worker never seen since this process started was last healthy no
        // later than the start: report that lower bound, not nothing (which the
        // policy rightly reads as missing evidence).
        let last_healthy = workers
            .iter()
            .map(|peer| {
                self.health
                    .peer(peer)
                    .and_then(|s| s.last_healthy_at)
                    .unwrap_or(self.anchor.0)
            })
            .max();
        let freshness = self.health.mirror_freshness(relay, now);
        Evidence {
            escrow_enabled: Some(
                self.registry
                    .relay(relay)
                    .is_some_and(|record| record.escrow_enabled()),
            ),
            healthy_peer_count: Some(u32::try_from(healthy).unwrap_or(u32::MAX)),
            last_healthy_at: last_healthy.map(|at| self.unix_time(at)),
            mirror_lag_blocks: freshness.map(|f| f.lag_blocks),
            mirror_lag_ms: freshness.map(|f| f.lag_ms),
            mirror_last_synced_at: freshness
                .and_then(|f| f.last_synced_at)
                .map(|at| self.unix_time(at)),
        }
    }

    // ---- internals, called from the composition ----

    fn replica_write(&mut self, relay: RelayKey, write: WriteId, now: Instant) -> WriteVerdict {
        if let Some(lease) = self.leases.active(&relay, now) {
            let epoch = lease.id.epoch;
            return match self.leases.check_write(&relay, epoch, now) {
                Ok(_) => {
                    self.begin_append(relay);
                    WriteVerdict::Append { epoch }
                }
                Err(error) => WriteVerdict::ReadOnly {
                    reason: error.to_string(),
                },
            };
        }
        let escrow_enabled = self
            .registry
            .relay(&relay)
            .is_some_and(|record| record.escrow_enabled());
        if !escrow_enabled {
            return WriteVerdict::ReadOnly {
                reason: "the relay's owner has not enabled escrow".into(),
            };
        }
        let queue = self.waiting_writes.entry(relay).or_default();
        if queue.len() >= self.config.max_waiting_writes {
            return WriteVerdict::ReadOnly {
                reason: "too many writes waiting for a lease".into(),
            };
        }
        queue.push_back(write);
        match self.leases.request(relay, now) {
            RequestOutcome::Started => {
                let evidence = self.evidence(&relay, now);
                self.events.push_back(GatewayEvent::LeaseRequestNeeded {
                    relay,
                    renewing: None,
                    evidence,
                });
                WriteVerdict::Wait
            }
            RequestOutcome::InFlight => WriteVerdict::Wait,
            // Unreachable in practice: `active` said no lease a moment ago.
            RequestOutcome::Active(id) => {
                self.release_waiting(relay, id.epoch);
                WriteVerdict::Wait
            }
        }
    }

    pub(super) fn on_lease_event(&mut self, event: &LeaseEvent, now: Instant) {
        match event {
            LeaseEvent::Activated { id, .. } => self.release_waiting(id.relay, id.epoch),
            LeaseEvent::RequestFailed { relay, reason } => {
                let reason = reason.clone();
                self.refuse_waiting(*relay, &reason);
            }
            LeaseEvent::ExpiryWarning { id, .. } => {
                // Renew while the workers are still away; otherwise let it end.
                if !self.any_worker_healthy(&id.relay)
                    && self.leases.request_renewal(id.relay, now) == RequestOutcome::Started
                {
                    let evidence = self.evidence(&id.relay, now);
                    self.events.push_back(GatewayEvent::LeaseRequestNeeded {
                        relay: id.relay,
                        renewing: Some(*id),
                        evidence,
                    });
                }
            }
            LeaseEvent::Ended { id, .. } => self.registry.mark_lease_inactive(&id.relay),
            LeaseEvent::RequestNeeded { .. } | LeaseEvent::Renewed { .. } => {}
        }
    }

    pub(super) fn on_peer_health(&mut self, peer: PeerId, health: PeerHealth, now: Instant) {
        let relays: Vec<RelayKey> = self
            .registry
            .relays()
            .filter(|record| record.workers.contains_key(&peer))
            .map(|record| record.relay_key)
            .collect();
        for relay in relays {
            self.on_worker_of_relay(relay, health, now);
        }
    }

    /// A worker of `relay` is now in state `health`.
    pub(super) fn on_worker_of_relay(&mut self, relay: RelayKey, health: PeerHealth, now: Instant) {
        if health == PeerHealth::Healthy {
            // A worker is back: it takes the writes; the lease goes.
            self.leases.end_relay(&relay, EndReason::PeerHealthy, now);
            self.refuse_waiting(relay, "a worker is back; retry");
        }
        let reachable = self.any_worker_up(&relay);
        self.push.handle_reachability(relay, reachable, now);
    }

    pub(super) fn on_push_ack(&mut self, peer: PeerId, ack: &PushAck, now: Instant) {
        if !self.serves(&peer, &ack.relay_key) {
            return;
        }
        // A stale or unknown ack is expected after retries and restarts.
        let _ = self
            .push
            .handle_ack(ack.relay_key, ack.push_id, ack.updated_at, now);
    }

    pub(super) fn on_resync_complete(
        &mut self,
        peer: PeerId,
        request_id: u64,
        done: &ResyncComplete,
        now: Instant,
    ) {
        let relay = done.relay_key;
        let status = if self.serves(&peer, &relay) {
            let unix = self.unix_time(now);
            let appending = self.appends_in_flight.get(&relay).copied().unwrap_or(0) > 0;
            let nothing_pending = self
                .registry
                .relay(&relay)
                .is_some_and(|record| !record.pending.pending);
            if appending {
                // A write is being appended under the lease right now: the
                // worker's view cannot be final yet; its mark pushes again.
                ResyncStatus::StillPending
            } else if nothing_pending {
                // Already cleared (a retried report): the answer stays the same.
                self.leases.end_relay(&relay, EndReason::WorkerResync, now);
                ResyncStatus::Cleared
            } else {
                match self
                    .push
                    .handle_resync_complete(relay, done.resynced_through, unix, now)
                {
                    Ok(ResyncOutcome::Clearing | ResyncOutcome::AlreadyClearing) => {
                        // Cannot fail: `serves` proved the relay is registered.
                        let _ = self.registry.clear_pending(&relay, unix);
                        self.leases.end_relay(&relay, EndReason::WorkerResync, now);
                        ResyncStatus::Cleared
                    }
                    Ok(ResyncOutcome::StillPending { .. }) => ResyncStatus::StillPending,
                    // Pending flags without a notice: cannot happen (the mark
                    // creates the notice); refuse rather than clear blindly.
                    Err(_) => ResyncStatus::Refused,
                }
            }
        } else {
            ResyncStatus::Refused
        };
        self.transmits.push_back(Transmit {
            peer,
            frame: Frame {
                request_id,
                message: Message::ResyncAck(ResyncAck {
                    relay_key: relay,
                    resynced_through: done.resynced_through,
                    status,
                }),
            },
        });
    }

    pub(super) fn send_push(&mut self, push: OutboundPush) {
        let workers: Vec<PeerId> = self
            .registry
            .workers_of(&push.relay)
            .filter(|peer| self.health.health_of(peer) != PeerHealth::Down)
            .collect();
        for peer in workers {
            self.transmits.push_back(Transmit {
                peer,
                frame: Frame {
                    request_id: push.message.push_id,
                    message: Message::PendingWritePush(push.message.clone()),
                },
            });
        }
    }

    pub(super) fn resume_pending_pushes(&mut self, now: Instant) {
        let pending: Vec<_> = self
            .registry
            .relays()
            .filter(|record| record.pending.pending)
            .filter_map(|record| {
                PendingNotice::from_pending_writes(record.relay_key, &record.pending)
            })
            .collect();
        for notice in pending {
            let reachable = self.any_worker_up(&notice.relay_key);
            let _ = self.push.notify_pending(notice, reachable, now);
        }
    }

    fn release_waiting(&mut self, relay: RelayKey, epoch: u64) {
        for write in self.waiting_writes.remove(&relay).unwrap_or_default() {
            self.begin_append(relay);
            self.events.push_back(GatewayEvent::WriteReleased {
                write,
                relay,
                epoch,
            });
        }
    }

    fn refuse_waiting(&mut self, relay: RelayKey, reason: &str) {
        for write in self.waiting_writes.remove(&relay).unwrap_or_default() {
            self.events.push_back(GatewayEvent::WriteRefused {
                write,
                relay,
                reason: reason.to_owned(),
            });
        }
    }

    fn begin_append(&mut self, relay: RelayKey) {
        *self.appends_in_flight.entry(relay).or_default() += 1;
    }

    fn end_append(&mut self, relay: RelayKey) {
        if let Some(count) = self.appends_in_flight.get_mut(&relay) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.appends_in_flight.remove(&relay);
            }
        }
    }

    fn serves(&self, peer: &PeerId, relay: &RelayKey) -> bool {
        self.registry
            .relay(relay)
            .is_some_and(|record| record.workers.contains_key(peer))
    }

    fn any_worker_healthy(&self, relay: &RelayKey) -> bool {
        self.registry
            .workers_of(relay)
            .any(|peer| self.health.health_of(&peer) == PeerHealth::Healthy)
    }

    pub(super) fn any_worker_up(&self, relay: &RelayKey) -> bool {
        self.registry
            .workers_of(relay)
            .any(|peer| self.health.health_of(&peer) != PeerHealth::Down)
    }
}

//! The simulation's invariants.
//!
//! 1. A write is accepted only under the relay's active, unexpired lease of
//!    the current epoch (checked against the escrow's own records), and never
//!    while a worker of the relay is healthy.
//! 2. Every accepted write is, once the relay's worker stays up long enough,
//!    in that worker's store (checked after the final quiescence).
//! 3. At most one active lease per relay on each side, and no lease is active
//!    past its expiry.
//! 4. Every relay with pending writes has a notice the push scheduler is
//!    retrying or waiting on (never silently dropped); after quiescence none
//!    is left.
//! 5. No session stays in replica mode longer than one heartbeat interval
//!    beside a worker of its relay that is healthy all that time.
//! 6. A write uses the writer key of the relay's newest deposit.

use hypergate_core::health::PeerHealth;
use hypergate_core::ids::RelayKey;
use hypergate_core::lease::LeaseState;
use hypergate_core::router::Target;

use super::Sim;

impl Sim {
    /// Invariants 1 and 6, at the moment a write passes the fence.
    pub(crate) fn check_write_acceptance(
        &self,
        relay: &RelayKey,
        epoch: u64,
    ) -> Result<(), String> {
        let health = self.gateway.health();
        if let Some(peer) = self
            .gateway
            .registry()
            .workers_of(relay)
            .find(|peer| health.health_of(peer) == PeerHealth::Healthy)
        {
            return Err(format!(
                "invariant 1: write accepted under a lease for relay {} while worker {} is healthy",
                relay.short(),
                peer.short()
            ));
        }
        let gateway_lease = self.gateway.leases().current(relay).ok_or_else(|| {
            format!(
                "invariant 1: write accepted for relay {} with no lease",
                relay.short()
            )
        })?;
        if gateway_lease.id.epoch != epoch || gateway_lease.state != LeaseState::Active {
            return Err(format!(
                "invariant 1: write carries epoch {epoch}, the gateway's lease is {:?} in state {:?}",
                gateway_lease.id, gateway_lease.state
            ));
        }
        let escrow_lease = self
            .escrow
            .active_leases(self.now)
            .find(|lease| lease.id.relay == *relay)
            .ok_or_else(|| {
                format!(
                    "invariant 1: write accepted for relay {} under epoch {epoch}, but the escrow holds no active lease",
                    relay.short()
                )
            })?;
        if escrow_lease.id.epoch != epoch {
            return Err(format!(
                "invariant 1: write carries epoch {epoch}, the escrow's current lease is epoch {}",
                escrow_lease.id.epoch
            ));
        }
        if self.now >= escrow_lease.expires_at {
            return Err("invariant 1: write accepted after the escrow's lease expiry".into());
        }
        let newest = self
            .escrow
            .current_deposit(relay)
            .map(|deposit| deposit.escrow_id.clone());
        if newest.as_deref() != Some(escrow_lease.escrow_id.as_str()) {
            return Err(format!(
                "invariant 6: write uses the key of deposit {} but the newest deposit is {newest:?}",
                escrow_lease.escrow_id
            ));
        }
        Ok(())
    }

    /// Invariants 3, 4 and 5, after every step.
    pub(crate) fn check_step(&self) -> Result<(), String> {
        // 3: one active lease per relay, none past its expiry, on both sides.
        let mut seen = std::collections::BTreeSet::new();
        for lease in self.escrow.active_leases(self.now) {
            if !seen.insert(lease.id.relay) {
                return Err(format!(
                    "invariant 3: two active escrow leases for relay {}",
                    lease.id.relay.short()
                ));
            }
        }
        for relay in self.gateway.registry().relays().map(|r| r.relay_key) {
            if let Some(lease) = self.gateway.leases().current(&relay)
                && lease.state == LeaseState::Active
                && self.now > lease.expires_at
            {
                return Err(format!(
                    "invariant 3: gateway lease {} outlived its TTL",
                    lease.id
                ));
            }
        }
        // 4: pending writes always have a live notice with a deadline on schedule.
        let push_config = self.gateway.push().config();
        let longest_wait = push_config
            .resync_deadline
            .max(push_config.max_retry.mul_f64(1.0 + push_config.jitter));
        for record in self.gateway.registry().relays() {
            if !record.pending.pending {
                continue;
            }
            let Some(notice) = self.gateway.push().notice(&record.relay_key) else {
                return Err(format!(
                    "invariant 4: relay {} has pending writes but no push notice",
                    record.relay_key.short()
                ));
            };
            match notice.next_deadline {
                Some(at) if at <= self.now + longest_wait => {}
                other => {
                    return Err(format!(
                        "invariant 4: the notice of relay {} is not retried on schedule (next {other:?})",
                        record.relay_key.short()
                    ));
                }
            }
        }
        // The reference model's lease state agrees with the gateway's.
        for relay in self.gateway.registry().relays().map(|r| r.relay_key) {
            let model = self
                .model
                .leases
                .get(&relay)
                .filter(|(_, expires_at)| self.now < *expires_at)
                .map(|(id, _)| *id);
            let actual = self.gateway.leases().active(&relay, self.now).map(|l| l.id);
            if model != actual {
                return Err(format!(
                    "model: relay {} lease is {actual:?} on the gateway, {model:?} in the reference model",
                    relay.short()
                ));
            }
        }
        // 5: no session lingers in replica mode beside a healthy worker.
        for (session, relay) in &self.sessions {
            if self.gateway.router().target(*session) != Ok(Target::Replica) {
                continue;
            }
            let since = self.replica_since.get(session).copied().unwrap_or(self.now);
            for worker in self.gateway.registry().workers_of(relay) {
                if let Some(healthy) = self.healthy_since.get(&worker)
                    && self.now > since.max(*healthy) + self.config.heartbeat
                {
                    return Err(format!(
                        "invariant 5: session {session:?} in replica mode beside healthy worker {}",
                        worker.short()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariants 2 and 4 once everything is healed and quiet.
    pub(crate) fn check_final(&self) -> Result<(), String> {
        for write in &self.accepted {
            // Counted in the worker's view: ingested, and within the final
            // length of its writer if that writer was removed by a rotation.
            let resynced = self.workers.iter().any(|worker| {
                worker.relay == write.relay
                    && worker.store.contains(&write.id)
                    && worker
                        .final_lengths
                        .get(&write.writer)
                        .is_none_or(|final_length| write.index < *final_length)
            });
            if !resynced {
                return Err(format!(
                    "invariant 2: accepted write {} of relay {} never reached its worker",
                    write.id,
                    write.relay.short()
                ));
            }
        }
        for record in self.gateway.registry().relays() {
            if record.pending.pending {
                return Err(format!(
                    "invariant 4: relay {} still has pending writes after quiescence",
                    record.relay_key.short()
                ));
            }
        }
        if self.gateway.push().pending_count() > 0 {
            return Err("invariant 4: push notices remain after quiescence".into());
        }
        Ok(())
    }
}

//! Splitting the gateway's core state by relay, for drivers that keep one [`Gateway`] per
//! shard (a thread-per-core executor owns its partition; the tokio driver has one).
//!
//! Contract:
//! - A relay belongs to exactly one partition, decided by its key alone
//!   ([`Partitioning::of_relay`]); everything the core keeps about a relay (registry record,
//!   routes, sessions, leases, pending writes, mirror freshness) lives in that partition's
//!   [`Gateway`], built with [`Gateway::in_partition`].
//! - Session ids are disjoint across partitions (each partition's router numbers its
//!   sessions in its own residue class), so a worker's link queue and a worker's answer
//!   ([`Message::NostrFrame`]) name one session of one partition: [`Partitioning::of_session`].
//! - A peer-link frame goes where [`Partitioning::route`] says: a relay's frame to the
//!   relay's partition, a session's frame to the session's, a peer's liveness (heartbeats,
//!   mirror adverts) to every partition, since each keeps the health of the peers its
//!   relays use. Only partition 0 answers a heartbeat, so the worker hears one ack.
//! - A registration names relays of several partitions: every partition registers its own
//!   ([`Gateway::handle_registration`]) and the driver sends the one ack
//!   [`merge_register_acks`] makes of theirs.
//! - The registry is persisted as one snapshot whatever the partition count:
//!   [`merge_snapshots`] joins the partitions' snapshots, [`Partitioning::split_snapshot`]
//!   deals a snapshot out again, so a gateway restarts with any number of partitions.
//! - With one partition every route leads to it and the behaviour is the unpartitioned
//!   gateway's.
//!
//! [`Gateway`]: crate::gateway::Gateway
//! [`Gateway::in_partition`]: crate::gateway::Gateway::in_partition
//! [`Gateway::handle_registration`]: crate::gateway::Gateway::handle_registration

use crate::ids::RelayKey;
use crate::registry::{RegistrySnapshot, SNAPSHOT_VERSION};
use crate::router::SessionId;
use crate::wire::{BoundedVec, Frame, Message, RegisterAck};

/// How many partitions the core state is split into. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    count: u16,
}

/// One partition of a [`Partitioning`]: which one, and of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    index: u16,
    count: u16,
}

/// Where a frame from a worker goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this partition only.
    One(usize),
    /// To every partition (a peer's liveness); each takes its own part.
    Every,
    /// A registration: every partition registers its relays, and one merged ack answers
    /// ([`merge_register_acks`]).
    Registration,
}

/// Why a partitioning cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// Zero partitions, or more than a `u16` counts.
    #[error("a gateway has 1 to 65535 core partitions, not {0}")]
    Count(usize),
}

impl Partitioning {
    /// Everything in one partition.
    #[must_use]
    pub fn single() -> Self {
        Partitioning { count: 1 }
    }

    /// `count` partitions.
    pub fn new(count: usize) -> Result<Self, PartitionError> {
        match u16::try_from(count) {
            Ok(count) if count > 0 => Ok(Partitioning { count }),
            _ => Err(PartitionError::Count(count)),
        }
    }

    /// How many partitions there are.
    #[must_use]
    pub fn count(self) -> usize {
        usize::from(self.count)
    }

    /// The partitions, in index order.
    pub fn partitions(self) -> impl Iterator<Item = Partition> {
        (0..self.count).map(move |index| Partition {
            index,
            count: self.count,
        })
    }

    /// The partition that owns `relay`. Relay keys are public keys, so their leading bytes
    /// spread relays evenly.
    #[must_use]
    pub fn of_relay(self, relay: &RelayKey) -> usize {
        let mut leading = [0u8; 8];
        leading.copy_from_slice(&relay.0[..8]);
        // The remainder is below `count`, a u16: it fits a usize.
        (u64::from_le_bytes(leading) % u64::from(self.count)) as usize
    }

    /// The partition whose router opened `session` (see [`Partition::session_ids`]). An id
    /// no partition hands out (0) is partition 0's, which does not know it.
    #[must_use]
    pub fn of_session(self, session: SessionId) -> usize {
        // The remainder is below `count`, a u16: it fits a usize.
        (session.0.saturating_sub(1) % u64::from(self.count)) as usize
    }

    /// Where a frame from a worker goes (see the module docs).
    #[must_use]
    pub fn route(self, frame: &Frame) -> Route {
        match &frame.message {
            Message::Heartbeat(_) | Message::MirrorAdvertise(_) => Route::Every,
            Message::RegisterRelays(_) => Route::Registration,
            Message::PushAck(ack) => Route::One(self.of_relay(&ack.relay_key)),
            Message::ResyncComplete(done) => Route::One(self.of_relay(&done.relay_key)),
            Message::NostrFrame(forwarded) => {
                Route::One(self.of_session(SessionId(forwarded.session)))
            }
            // Nothing else is a partition's business; partition 0 hears it (and logs it).
            _ => Route::One(0),
        }
    }

    /// Deals `snapshot`'s relays out to their partitions (index order).
    #[must_use]
    pub fn split_snapshot(self, snapshot: RegistrySnapshot) -> Vec<RegistrySnapshot> {
        let mut parts: Vec<RegistrySnapshot> = self
            .partitions()
            .map(|_| RegistrySnapshot {
                version: snapshot.version,
                relays: Vec::new(),
            })
            .collect();
        for record in snapshot.relays {
            parts[self.of_relay(&record.relay_key)].relays.push(record);
        }
        parts
    }
}

impl Partition {
    /// The only partition of an unpartitioned gateway.
    #[must_use]
    pub fn whole() -> Self {
        Partition { index: 0, count: 1 }
    }

    /// Which partition this is.
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.index)
    }

    /// The partitioning this partition is part of.
    #[must_use]
    pub fn partitioning(self) -> Partitioning {
        Partitioning { count: self.count }
    }

    /// Whether this partition owns `relay`.
    #[must_use]
    pub fn owns(self, relay: &RelayKey) -> bool {
        self.partitioning().of_relay(relay) == self.index()
    }

    /// Whether this partition answers what a peer asks of the whole gateway (heartbeats).
    #[must_use]
    pub fn answers_peers(self) -> bool {
        self.index == 0
    }

    /// The first session id this partition's router hands out, and the step to the next:
    /// ids `index + 1`, `index + 1 + count`, … so no two partitions share one.
    #[must_use]
    pub fn session_ids(self) -> (u64, u64) {
        (u64::from(self.index) + 1, u64::from(self.count))
    }
}

/// The one snapshot of all partitions' registries (relays in key order).
#[must_use]
pub fn merge_snapshots(parts: impl IntoIterator<Item = RegistrySnapshot>) -> RegistrySnapshot {
    let mut relays: Vec<_> = parts.into_iter().flat_map(|part| part.relays).collect();
    relays.sort_by_key(|record| record.relay_key);
    RegistrySnapshot {
        version: SNAPSHOT_VERSION,
        relays,
    }
}

/// The one ack of a registration the partitions answered in parts, in partition order
/// (each part lists only its own relays, so together they stay within the registration's
/// bound).
#[must_use]
pub fn merge_register_acks(acks: impl IntoIterator<Item = RegisterAck>) -> RegisterAck {
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    let mut lease_epochs = Vec::new();
    for ack in acks {
        accepted.extend(ack.accepted);
        rejected.extend(ack.rejected);
        lease_epochs.extend(ack.lease_epochs);
    }
    RegisterAck {
        accepted: BoundedVec::new(accepted).unwrap_or_default(),
        rejected: BoundedVec::new(rejected).unwrap_or_default(),
        lease_epochs: BoundedVec::new(lease_epochs).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;

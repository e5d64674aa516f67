//! What the mirror store knows about each core: who announced it, for which
//! relay, in which role, and how far behind its owner the mirror is.
//!
//! Lag has two fields with one unit each (the original's `lagMs` held either
//! milliseconds or blocks depending on which code path wrote it last):
//! - [`CoreRecord::lag_blocks`] counts blocks: the length the mirror should
//!   reach minus the length it holds without a gap from block 0;
//! - [`CoreRecord::lag_ms`] counts milliseconds since the mirror was last seen
//!   fully caught up (since it was first seen, if never), and is 0 while it is.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use hypercore::VerifyingKey;
use hypergate_core::ids::{KeyParseError, PeerId, RelayKey};
use hypergate_core::time::{UnixTime, duration_millis};
use hypergate_core::wire::{CoreAdvert, CoreRole};
use serde::{Deserialize, Serialize};

/// A mirrored core: the ed25519 public key that signs its tree.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CoreKey(pub [u8; 32]);

impl CoreKey {
    /// The raw 32 key bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters: the core's directory name and API form.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for log lines.
    #[must_use]
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The key as a signature verifier; `None` if the bytes are not a point on
    /// the curve (no log can be signed by such a key).
    #[must_use]
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl From<VerifyingKey> for CoreKey {
    fn from(key: VerifyingKey) -> Self {
        CoreKey(key.to_bytes())
    }
}

impl fmt::Display for CoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoreKey({})", self.short())
    }
}

impl FromStr for CoreKey {
    type Err = KeyParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 64 {
            return Err(KeyParseError::WrongLength(text.len()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyParseError::NotHex)?;
        Ok(CoreKey(bytes))
    }
}

/// A worker asking the gateway to mirror one of its relay's cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreAnnouncement {
    /// The core to mirror.
    pub core_key: CoreKey,
    /// The authenticated peer that announced it.
    pub owner: PeerId,
    /// The relay the core belongs to. A core never changes relay.
    pub relay: RelayKey,
    /// What the core is to the relay.
    pub role: CoreRole,
    /// Whether the mirror should announce the core on the swarm.
    pub announce: bool,
    /// Eviction priority (the wire's priority): higher survives longer; 0 may become stale.
    pub priority: u8,
}

impl CoreAnnouncement {
    /// An announcement with the original's defaults for `role`: drive metadata
    /// announced at priority 1, drive blobs unannounced at priority 0, relay
    /// logs unannounced at priority 1 (what blind-peering's `addAutobase` sends).
    #[must_use]
    pub fn new(core_key: CoreKey, owner: PeerId, relay: RelayKey, role: CoreRole) -> Self {
        let (announce, priority) = match role {
            CoreRole::DriveMeta => (true, 1),
            CoreRole::DriveBlobs => (false, 0),
            CoreRole::Owner | CoreRole::Writer | CoreRole::GatewayWriter => (false, 1),
        };
        CoreAnnouncement {
            core_key,
            owner,
            relay,
            role,
            announce,
            priority,
        }
    }

    /// The announcement a worker's [`CoreAdvert`] makes, `owner` being the
    /// link's authenticated peer. (Its `length` goes to
    /// [`MirrorStore::advertise`](super::MirrorStore::advertise).)
    #[must_use]
    pub fn from_advert(advert: &CoreAdvert, owner: PeerId) -> Self {
        CoreAnnouncement {
            core_key: CoreKey(advert.core_key),
            owner,
            relay: advert.relay_key,
            role: advert.role,
            announce: advert.announce,
            priority: advert.priority,
        }
    }
}

/// Everything the store knows about one mirrored core. Times are the
/// caller's wall clock at the input that set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CoreRecord {
    /// The core.
    pub core_key: CoreKey,
    /// The peer that last announced it.
    pub owner: PeerId,
    /// The relay it belongs to.
    pub relay: RelayKey,
    /// What it is to the relay (as last announced).
    pub role: CoreRole,
    /// Whether it is announced (as last announced).
    pub announce: bool,
    /// Eviction priority (as last announced).
    pub priority: u8,
    /// First announcement.
    pub first_seen: UnixTime,
    /// Latest announcement, advertisement or stored batch.
    pub last_seen: UnixTime,
    /// Latest moment the mirror was seen holding everything it should.
    pub last_synced_at: Option<UnixTime>,
    /// Blocks held without a gap from block 0.
    pub local_length: u64,
    /// The length the mirror's verified signed tree covers (what it can prove;
    /// it may run ahead of `local_length` when a batch was cut short).
    pub signed_length: u64,
    /// The longest length the owner advertised or a verified proof signed.
    pub remote_length: u64,
    /// Set when the core left the relay (a removed writer): only blocks below
    /// it count, so the mirror is complete once it holds them.
    pub final_length: Option<u64>,
    /// Bytes the core's directory occupies on disk.
    pub bytes: u64,
    /// Blocks that verified and were stored.
    pub verified_blocks: u64,
    /// Proofs rejected by verification.
    pub rejected_blocks: u64,
}

impl CoreRecord {
    pub(super) fn new(announcement: &CoreAnnouncement, now: UnixTime) -> Self {
        CoreRecord {
            core_key: announcement.core_key,
            owner: announcement.owner,
            relay: announcement.relay,
            role: announcement.role,
            announce: announcement.announce,
            priority: announcement.priority,
            first_seen: now,
            last_seen: now,
            last_synced_at: None,
            local_length: 0,
            signed_length: 0,
            remote_length: 0,
            final_length: None,
            bytes: 0,
            verified_blocks: 0,
            rejected_blocks: 0,
        }
    }

    /// The length the mirror should reach: the remote length, capped at the
    /// final length of a core that left its relay.
    #[must_use]
    pub fn target_length(&self) -> u64 {
        match self.final_length {
            Some(limit) => self.remote_length.min(limit),
            None => self.remote_length,
        }
    }

    /// Blocks the mirror is behind (a count of blocks).
    #[must_use]
    pub fn lag_blocks(&self) -> u64 {
        self.target_length().saturating_sub(self.local_length)
    }

    /// Whether the mirror holds everything it should.
    #[must_use]
    pub fn in_sync(&self) -> bool {
        self.lag_blocks() == 0
    }

    /// Milliseconds since the mirror was last fully synced (since first seen if
    /// never); 0 while in sync.
    #[must_use]
    pub fn lag_ms(&self, now: UnixTime) -> u64 {
        if self.in_sync() {
            return 0;
        }
        let since = self.last_synced_at.unwrap_or(self.first_seen);
        duration_millis(now.saturating_since(since))
    }

    /// Whether the core may be dropped as stale: not announced, priority 0,
    /// and not seen for longer than `ttl`.
    #[must_use]
    pub fn is_stale(&self, ttl: Duration, now: UnixTime) -> bool {
        !self.announce && self.priority == 0 && now.saturating_since(self.last_seen) > ttl
    }

    /// Records activity at `now` and, if the mirror holds everything it should,
    /// that it was in sync at `now`.
    pub(super) fn touch(&mut self, now: UnixTime) {
        self.last_seen = self.last_seen.max(now);
        if self.in_sync() {
            self.last_synced_at = Some(self.last_synced_at.map_or(now, |at| at.max(now)));
        }
    }
}

/// A relay's mirror freshness, aggregated over its cores. One unit per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayFreshness {
    /// The relay.
    pub relay: RelayKey,
    /// Cores mirrored for it.
    pub cores: usize,
    /// Blocks behind, summed over the cores (the unit of `health`'s freshness).
    pub lag_blocks: u64,
    /// Blocks behind of the furthest-behind core.
    pub max_core_lag_blocks: u64,
    /// Milliseconds the furthest-behind core has been behind; 0 when every
    /// core is in sync.
    pub lag_ms: u64,
    /// The last moment every core was in sync: `now` while all are, `None`
    /// if a lagging core was never in sync.
    pub last_synced_at: Option<UnixTime>,
    /// Bytes the relay's cores occupy.
    pub bytes: u64,
}

impl RelayFreshness {
    pub(super) fn of<'a>(
        relay: RelayKey,
        records: impl IntoIterator<Item = &'a CoreRecord>,
        now: UnixTime,
    ) -> Option<RelayFreshness> {
        let mut freshness = RelayFreshness {
            relay,
            cores: 0,
            lag_blocks: 0,
            max_core_lag_blocks: 0,
            lag_ms: 0,
            last_synced_at: Some(now),
            bytes: 0,
        };
        for record in records {
            freshness.cores += 1;
            freshness.bytes = freshness.bytes.saturating_add(record.bytes);
            let lag = record.lag_blocks();
            freshness.lag_blocks = freshness.lag_blocks.saturating_add(lag);
            freshness.max_core_lag_blocks = freshness.max_core_lag_blocks.max(lag);
            freshness.lag_ms = freshness.lag_ms.max(record.lag_ms(now));
            if lag > 0 {
                // The relay was last whole when its worst lagging core was.
                freshness.last_synced_at = match (freshness.last_synced_at, record.last_synced_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    _ => None,
                };
            }
        }
        (freshness.cores > 0).then_some(freshness)
    }
}

/// Why a core left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EvictionReason {
    /// Not announced, priority 0 and not seen for longer than the TTL.
    Stale,
    /// Lowest priority / least recently seen while over the byte budget.
    Budget,
    /// Removed on request ([`MirrorStore::remove_core`](super::MirrorStore::remove_core)).
    Removed,
}

impl EvictionReason {
    /// The reason as a metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionReason::Stale => "stale",
            EvictionReason::Budget => "budget",
            EvictionReason::Removed => "removed",
        }
    }
}

/// Monotonic totals of the store, kept across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MirrorCounters {
    /// Blocks that verified and were stored.
    pub verified_blocks: u64,
    /// Proofs rejected by verification.
    pub rejected_blocks: u64,
    /// Cores evicted as stale.
    pub evicted_stale: u64,
    /// Cores evicted to meet the byte budget.
    pub evicted_budget: u64,
    /// Cores removed on request.
    pub evicted_removed: u64,
    /// Core directories moved aside because they could not be reopened.
    pub quarantined: u64,
}

impl MirrorCounters {
    /// Evictions for one reason.
    #[must_use]
    pub fn evictions(&self, reason: EvictionReason) -> u64 {
        match reason {
            EvictionReason::Stale => self.evicted_stale,
            EvictionReason::Budget => self.evicted_budget,
            EvictionReason::Removed => self.evicted_removed,
        }
    }

    pub(super) fn count_eviction(&mut self, reason: EvictionReason) {
        let counter = match reason {
            EvictionReason::Stale => &mut self.evicted_stale,
            EvictionReason::Budget => &mut self.evicted_budget,
            EvictionReason::Removed => &mut self.evicted_removed,
        };
        *counter = counter.saturating_add(1);
    }
}

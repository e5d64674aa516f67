//! The gateway's Prometheus metrics, with the original's names and labels (fixed where the
//! original was broken: one unit per field, the lease-expiry gauge refreshed on every scrape
//! from the lease table rather than only on lease events, the push-wait histogram observed).
//!
//! Contract:
//! - Gauges are read at scrape time: the core's (under its lock, in [`GatewayMetrics::render`])
//!   and the mirror store's (a [`MirrorSnapshot`] the `/metrics` handler takes first; when the
//!   store is busy the mirror gauges keep their last values). Relay-labelled gauges are rebuilt
//!   on every scrape, so a removed relay or core stops being exported.
//! - Counters and histograms are bumped from core events ([`GatewayMetrics::observe`]) and from
//!   the client, peer-link and escrow tasks.
//! - Counters are exported at 0 before their first increment (fixed labels from the start,
//!   relay-labelled ones from the first scrape after the relay registered): a series that
//!   first appears at 1 is invisible to `rate()` and `increase()`, so an alert on the first
//!   read-only write would never fire.
//! - Labels are bounded: `relay` is a registered relay (workers the gateway admits, or
//!   operators, register them), `type` a core role, everything else a fixed string. Escrow
//!   refusal reasons outside the policy's list count as `other`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `gateway_active_sessions` | gauge | – |
//! | `gateway_active_peers` | gauge | – (workers with a link up) |
//! | `gateway_relay_fallback_writes_total` | counter | `relay`, `result`: `accepted`, `readonly`, `error` |
//! | `gateway_replica_fallback_total` | counter | `relay`, `mode`: `session` |
//! | `gateway_relay_fallback_duration_seconds` | histogram | –; buckets 0.1 … 120 (time a session spent in replica mode) |
//! | `gateway_escrow_unlock_requests_total` | counter | `result`: `success`, `refused` |
//! | `gateway_escrow_policy_rejections_total` | counter | `reason`: the escrow policy's reason strings, or `other` |
//! | `gateway_escrow_leases_active` | gauge 0/1 | `relay` |
//! | `gateway_escrow_lease_time_to_expiry_seconds` | gauge | `relay` (0 without a lease) |
//! | `gateway_pending_writes` | gauge 0/1 | `relay` |
//! | `gateway_pending_writes_oldest_seconds` | gauge | `relay`: seconds since the first unresynced write (0 when none) |
//! | `gateway_pending_write_push_total` | counter | `result`: `sent`, `acked`, `overdue` (no resync-complete by the deadline: pushed again), `cleared`, `abandoned` (the `cleared` notice's retries ran out) |
//! | `gateway_pending_write_push_wait_seconds` | histogram | –; buckets 5 … 600 (first push of a round to the worker's ack) |
//! | `gateway_blind_peer_cores` | gauge | – (cores mirrored) |
//! | `gateway_blind_peer_bytes_allocated` | gauge | – (bytes the mirrored cores occupy) |
//! | `gateway_blind_peer_evictions_total` | counter | `reason`: `stale`, `budget`, `removed` (store totals, kept across restarts) |
//! | `gateway_blind_peer_mirror_lag_ms` | gauge | `relay`, `type`: max over the relay's cores of that role of the ms since the core was last fully mirrored (0 in sync) |
//! | `gateway_blind_peer_mirror_lag_blocks` | gauge | `relay`, `type`: max blocks behind over those cores |
//! | `gateway_blind_peer_verified_blocks_total` | counter | – |
//! | `gateway_blind_peer_rejected_blocks_total` | counter | – |
//! | `gateway_client_frames_refused_total` | counter | `reason`: `rate-limit` (over the connection's frame rate), `flow-full` (the session's backlog on its worker's link is full), `link-busy` (the link's room is full) |
//! | `gateway_peer_link_queued_frames` | gauge | – (frames waiting on all worker links) |

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crate::mirror::{CoreRole, EvictionReason, MirrorStore};
use hypergate_core::escrow::RejectReason;
use hypergate_core::gateway::GatewayEvent;
use hypergate_core::ids::RelayKey;
use hypergate_core::push::PushEvent;
use hypergate_core::router::RouterEvent;
use hypergate_core::time::UnixTime;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::state::{CoreState, LinkTable};
use crate::escrow_client::ClientError;

/// The original's fallback-duration buckets, in seconds.
const FALLBACK_BUCKETS: [f64; 9] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];
/// The original's push-wait buckets, in seconds.
const PUSH_WAIT_BUCKETS: [f64; 7] = [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Every push outcome, exported at 0 from the start.
const PUSH_RESULTS: [&str; 5] = ["sent", "acked", "overdue", "cleared", "abandoned"];
/// Every fallback-write outcome.
const FALLBACK_WRITE_RESULTS: [&str; 3] = ["accepted", "readonly", "error"];
/// A client frame refused for exceeding its connection's frame rate.
pub(crate) const RATE_LIMIT: &str = "rate-limit";
/// Every reason a client frame is refused `rate-limited:`: the connection's own rate, then the
/// labels of the link queue's refusals (`Refused::as_str`) a client frame can get.
const CLIENT_FRAME_REFUSALS: [&str; 3] = [RATE_LIMIT, "flow-full", "link-busy"];
/// Every eviction reason.
const EVICTION_REASONS: [EvictionReason; 3] = [
    EvictionReason::Stale,
    EvictionReason::Budget,
    EvictionReason::Removed,
];

/// `{relay, result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RelayResult {
    relay: String,
    result: &'static str,
}

/// `{relay, mode}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RelayMode {
    relay: String,
    mode: &'static str,
}

/// `{relay}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RelayLabel {
    relay: String,
}

/// `{relay, type}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RelayType {
    relay: String,
    r#type: &'static str,
}

/// `{result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// `{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What the mirror gauges need, read from the store under its lock and applied at render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MirrorSnapshot {
    /// Max `(lag ms, lag blocks)` over the cores of each relay and role.
    lag: BTreeMap<(RelayKey, CoreRole), (u64, u64)>,
    cores: usize,
    bytes: u64,
    /// Evictions by reason, the store's totals.
    evictions: [u64; 3],
}

impl MirrorSnapshot {
    /// Reads `store` as of wall-clock `now`.
    pub(crate) fn of(store: &MirrorStore, now: UnixTime) -> MirrorSnapshot {
        let mut lag: BTreeMap<(RelayKey, CoreRole), (u64, u64)> = BTreeMap::new();
        for core in store.cores() {
            let worst = lag.entry((core.relay, core.role)).or_default();
            worst.0 = worst.0.max(core.lag_ms(now));
            worst.1 = worst.1.max(core.lag_blocks());
        }
        let counters = store.counters();
        MirrorSnapshot {
            lag,
            cores: store.core_count(),
            bytes: store.total_bytes(),
            evictions: EVICTION_REASONS.map(|reason| counters.evictions(reason)),
        }
    }
}

/// The gateway's metrics. See the module docs.
pub(crate) struct GatewayMetrics {
    registry: Registry,
    sessions: Gauge,
    sessions_now: AtomicI64,
    peers: Gauge,
    fallback_writes: Family<RelayResult, Counter>,
    replica_fallbacks: Family<RelayMode, Counter>,
    fallback_duration: Histogram,
    unlocks: Family<ResultLabel, Counter>,
    policy_rejections: Family<ReasonLabel, Counter>,
    leases_active: Family<RelayLabel, Gauge>,
    lease_expiry: Family<RelayLabel, FloatGauge>,
    pending: Family<RelayLabel, Gauge>,
    pending_oldest: Family<RelayLabel, FloatGauge>,
    pushes: Family<ResultLabel, Counter>,
    push_wait: Histogram,
    mirror_cores: Gauge,
    mirror_bytes: Gauge,
    evictions: Family<ReasonLabel, Counter>,
    mirror_lag_ms: Family<RelayType, Gauge>,
    mirror_lag_blocks: Family<RelayType, Gauge>,
    verified_blocks: Counter,
    rejected_blocks: Counter,
    frames_refused: Family<ReasonLabel, Counter>,
    link_queued: Gauge,
}

impl GatewayMetrics {
    pub(crate) fn new() -> GatewayMetrics {
        let mut metrics = GatewayMetrics {
            registry: Registry::default(),
            sessions: Gauge::default(),
            sessions_now: AtomicI64::new(0),
            peers: Gauge::default(),
            fallback_writes: Family::default(),
            replica_fallbacks: Family::default(),
            fallback_duration: Histogram::new(FALLBACK_BUCKETS),
            unlocks: Family::default(),
            policy_rejections: Family::default(),
            leases_active: Family::default(),
            lease_expiry: Family::default(),
            pending: Family::default(),
            pending_oldest: Family::default(),
            pushes: Family::default(),
            push_wait: Histogram::new(PUSH_WAIT_BUCKETS),
            mirror_cores: Gauge::default(),
            mirror_bytes: Gauge::default(),
            evictions: Family::default(),
            mirror_lag_ms: Family::default(),
            mirror_lag_blocks: Family::default(),
            verified_blocks: Counter::default(),
            rejected_blocks: Counter::default(),
            frames_refused: Family::default(),
            link_queued: Gauge::default(),
        };
        metrics.register_all();
        for result in PUSH_RESULTS {
            metrics.pushes.get_or_create_owned(&ResultLabel { result });
        }
        for result in ["success", "refused"] {
            metrics.unlocks.get_or_create_owned(&ResultLabel { result });
        }
        for reason in RejectReason::ALL.iter().map(|reason| reason.as_str()) {
            metrics
                .policy_rejections
                .get_or_create_owned(&ReasonLabel { reason });
        }
        metrics
            .policy_rejections
            .get_or_create_owned(&ReasonLabel { reason: "other" });
        for reason in EVICTION_REASONS {
            metrics.evictions.get_or_create_owned(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for reason in CLIENT_FRAME_REFUSALS {
            metrics
                .frames_refused
                .get_or_create_owned(&ReasonLabel { reason });
        }
        metrics
    }

    /// Puts every metric (a shared handle to it) in the registry.
    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "gateway_active_sessions",
            "Client WebSocket sessions open",
            self.sessions.clone(),
        );
        r.register(
            "gateway_active_peers",
            "Workers with a peer link up",
            self.peers.clone(),
        );
        r.register(
            "gateway_relay_fallback_writes",
            "Client writes while no worker of the relay was reachable, by outcome",
            self.fallback_writes.clone(),
        );
        r.register(
            "gateway_replica_fallback",
            "Sessions that entered replica mode",
            self.replica_fallbacks.clone(),
        );
        r.register(
            "gateway_relay_fallback_duration_seconds",
            "Time client sessions spent in replica mode before returning to a worker",
            self.fallback_duration.clone(),
        );
        r.register(
            "gateway_escrow_unlock_requests",
            "Lease requests to the escrow, by outcome",
            self.unlocks.clone(),
        );
        r.register(
            "gateway_escrow_policy_rejections",
            "Escrow policy reasons given for refused lease requests",
            self.policy_rejections.clone(),
        );
        r.register(
            "gateway_escrow_leases_active",
            "1 while the gateway holds a usable lease of the relay",
            self.leases_active.clone(),
        );
        r.register(
            "gateway_escrow_lease_time_to_expiry_seconds",
            "Seconds until the relay's active lease expires, 0 without one (refreshed on every scrape)",
            self.lease_expiry.clone(),
        );
        r.register(
            "gateway_pending_writes",
            "1 while the relay has gateway writes its workers have not resynced",
            self.pending.clone(),
        );
        r.register(
            "gateway_pending_writes_oldest_seconds",
            "Seconds since the relay's first gateway write its workers have not resynced (0 when none)",
            self.pending_oldest.clone(),
        );
        r.register(
            "gateway_pending_write_push",
            "Pending-write notices: sent, acked, overdue resyncs, cleared, abandoned cleared notices",
            self.pushes.clone(),
        );
        r.register(
            "gateway_pending_write_push_wait_seconds",
            "From the first push of a round to the worker's ack",
            self.push_wait.clone(),
        );
        r.register(
            "gateway_blind_peer_cores",
            "Cores mirrored",
            self.mirror_cores.clone(),
        );
        r.register(
            "gateway_blind_peer_bytes_allocated",
            "Bytes the mirrored cores occupy on disk",
            self.mirror_bytes.clone(),
        );
        r.register(
            "gateway_blind_peer_evictions",
            "Mirrored cores evicted, by reason (the store's totals, kept across restarts)",
            self.evictions.clone(),
        );
        r.register(
            "gateway_blind_peer_mirror_lag_ms",
            "Max over the relay's cores of that type: ms since the core was last fully mirrored",
            self.mirror_lag_ms.clone(),
        );
        r.register(
            "gateway_blind_peer_mirror_lag_blocks",
            "Max over the relay's cores of that type: blocks the mirror is behind",
            self.mirror_lag_blocks.clone(),
        );
        r.register(
            "gateway_blind_peer_verified_blocks",
            "Mirrored blocks verified and stored",
            self.verified_blocks.clone(),
        );
        r.register(
            "gateway_blind_peer_rejected_blocks",
            "Mirrored blocks refused because they did not verify",
            self.rejected_blocks.clone(),
        );
        r.register(
            "gateway_client_frames_refused",
            "Client frames answered rate-limited, by reason: the connection's rate, its backlog on the worker link, the link's room",
            self.frames_refused.clone(),
        );
        r.register(
            "gateway_peer_link_queued_frames",
            "Frames waiting on all worker links",
            self.link_queued.clone(),
        );
    }

    pub(crate) fn client_connected(&self) {
        let now = self.sessions_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.sessions.set(now);
    }

    pub(crate) fn client_disconnected(&self) {
        let now = self.sessions_now.fetch_sub(1, Ordering::Relaxed) - 1;
        self.sessions.set(now);
    }

    pub(crate) fn fallback_write_for(&self, relay: &str, result: &'static str) {
        self.fallback_writes
            .get_or_create(&RelayResult {
                relay: relay.to_owned(),
                result,
            })
            .inc();
    }

    pub(crate) fn lease_granted(&self) {
        self.unlocks
            .get_or_create(&ResultLabel { result: "success" })
            .inc();
    }

    pub(crate) fn lease_refused(&self) {
        self.unlocks
            .get_or_create(&ResultLabel { result: "refused" })
            .inc();
    }

    /// Counts the policy reasons of an escrow refusal (other errors carry none).
    pub(crate) fn escrow_refused(&self, error: &ClientError) {
        let ClientError::Refused {
            reasons: Some(reasons),
            ..
        } = error
        else {
            return;
        };
        for reason in reasons {
            self.policy_rejections
                .get_or_create(&ReasonLabel {
                    reason: policy_reason_label(reason),
                })
                .inc();
        }
    }

    /// Counts a client frame refused `rate-limited:` for `reason` (one of
    /// `CLIENT_FRAME_REFUSALS`; anything else is counted as given, and is a bug).
    pub(crate) fn client_frame_refused(&self, reason: &'static str) {
        self.frames_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn mirror_stored(&self, blocks: u64) {
        self.verified_blocks.inc_by(blocks);
    }

    pub(crate) fn mirror_rejected(&self, blocks: u64) {
        self.rejected_blocks.inc_by(blocks);
    }

    /// Counts what a core event says.
    pub(crate) fn observe(&self, event: &GatewayEvent) {
        match event {
            GatewayEvent::Router(RouterEvent::FallbackStarted { relay, .. }) => {
                self.replica_fallbacks
                    .get_or_create(&RelayMode {
                        relay: relay.to_hex(),
                        mode: "session",
                    })
                    .inc();
            }
            GatewayEvent::Router(RouterEvent::FallbackEnded { duration, .. }) => {
                self.fallback_duration.observe(duration.as_secs_f64());
            }
            GatewayEvent::Push(event) => {
                let result = match event {
                    PushEvent::Sent { .. } => "sent",
                    PushEvent::Acked { wait, .. } => {
                        self.push_wait.observe(wait.as_secs_f64());
                        "acked"
                    }
                    PushEvent::ResyncOverdue { .. } => "overdue",
                    PushEvent::Cleared { .. } => "cleared",
                    PushEvent::ClearedAbandoned { .. } => "abandoned",
                };
                self.pushes.get_or_create(&ResultLabel { result }).inc();
            }
            _ => {}
        }
    }

    /// The exposition, with the gauges read now from every partition of the core and the
    /// link table, and from `mirror` (`None`: the mirror gauges keep their last values).
    pub(crate) fn render(
        &self,
        partitions: &[&CoreState],
        links: &LinkTable,
        mirror: Option<&MirrorSnapshot>,
        now: Instant,
        unix_now: UnixTime,
    ) -> String {
        self.peers
            .set(i64::try_from(links.outbound.len()).unwrap_or(i64::MAX));
        let queued: usize = links.outbound.values().map(|queue| queue.len()).sum();
        self.link_queued
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        // Rebuilt from the registry: a removed relay stops being exported.
        self.pending.clear();
        self.pending_oldest.clear();
        self.leases_active.clear();
        self.lease_expiry.clear();
        let relays = partitions.iter().flat_map(|state| {
            state
                .core
                .registry()
                .relays()
                .map(move |record| (*state, record))
        });
        for (state, record) in relays {
            let label = RelayLabel {
                relay: record.relay_key.to_hex(),
            };
            // Relay counters start at 0, so `rate()` sees their first increment.
            for result in FALLBACK_WRITE_RESULTS {
                self.fallback_writes.get_or_create_owned(&RelayResult {
                    relay: label.relay.clone(),
                    result,
                });
            }
            self.replica_fallbacks.get_or_create_owned(&RelayMode {
                relay: label.relay.clone(),
                mode: "session",
            });
            let pending = &record.pending;
            self.pending
                .get_or_create(&label)
                .set(i64::from(pending.pending));
            let oldest = match (pending.pending, pending.since) {
                (true, Some(since)) => unix_now.saturating_since(since).as_secs_f64(),
                _ => 0.0,
            };
            self.pending_oldest.get_or_create(&label).set(oldest);
            let lease = state.core.leases().active(&record.relay_key, now);
            self.leases_active
                .get_or_create(&label)
                .set(i64::from(lease.is_some()));
            let left = lease.map_or(0.0, |lease| {
                lease
                    .expires_at
                    .saturating_duration_since(now)
                    .as_secs_f64()
            });
            self.lease_expiry.get_or_create(&label).set(left);
        }
        if let Some(mirror) = mirror {
            self.apply_mirror(mirror);
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        text
    }

    fn apply_mirror(&self, mirror: &MirrorSnapshot) {
        self.mirror_cores
            .set(i64::try_from(mirror.cores).unwrap_or(i64::MAX));
        self.mirror_bytes
            .set(i64::try_from(mirror.bytes).unwrap_or(i64::MAX));
        for (reason, total) in EVICTION_REASONS.iter().zip(mirror.evictions) {
            let counter = self.evictions.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
            // The store's totals only grow; the counter follows them.
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.mirror_lag_ms.clear();
        self.mirror_lag_blocks.clear();
        for ((relay, role), (ms, blocks)) in &mirror.lag {
            let label = RelayType {
                relay: relay.to_hex(),
                r#type: role.as_str(),
            };
            self.mirror_lag_ms
                .get_or_create(&label)
                .set(i64::try_from(*ms).unwrap_or(i64::MAX));
            self.mirror_lag_blocks
                .get_or_create(&label)
                .set(i64::try_from(*blocks).unwrap_or(i64::MAX));
        }
    }
}

/// The label of one escrow refusal reason: the policy's own string, or `other` for a
/// reason this gateway does not know (keeps the label set bounded).
fn policy_reason_label(raw: &str) -> &'static str {
    serde_json::from_value::<RejectReason>(serde_json::Value::String(raw.to_owned()))
        .map_or("other", RejectReason::as_str)
}

#[cfg(test)]
mod tests;

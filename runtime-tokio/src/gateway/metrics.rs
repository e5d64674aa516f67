//! The gateway's Prometheus metrics, with the original's names and labels (fixed where the
//! original was broken: one unit per field, the lease-expiry gauge refreshed on every scrape
//! from the lease table rather than only on lease events).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `gateway_active_sessions` | gauge | – |
//! | `gateway_active_peers` | gauge | – (workers with a link up) |
//! | `gateway_relay_fallback_writes_total` | counter | `relay`, `result`: `accepted`, `readonly`, `error` |
//! | `gateway_replica_fallback_total` | counter | `relay`, `mode`: `session` |
//! | `gateway_escrow_unlock_requests_total` | counter | `result`: `success`, `refused` |
//! | `gateway_escrow_leases_active` | gauge 0/1 | `relay` |
//! | `gateway_escrow_lease_time_to_expiry_seconds` | gauge | `relay` (refreshed per scrape) |
//! | `gateway_pending_writes` | gauge 0/1 | `relay` |
//! | `gateway_pending_write_push_total` | counter | `result`: `sent`, `acked` |
//! | `gateway_blind_peer_verified_blocks_total` | counter | – |
//! | `gateway_blind_peer_rejected_blocks_total` | counter | – |
//!
//! Relay labels are bounded by the registry (relays are registered by workers the gateway
//! admits, or by operators).

use std::sync::atomic::{AtomicI64, Ordering};

use hypergate_core::gateway::GatewayEvent;
use hypergate_core::push::PushEvent;
use hypergate_core::router::RouterEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::state::CoreState;

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

/// `{result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The gateway's metrics. See the module docs.
pub(crate) struct GatewayMetrics {
    registry: Registry,
    sessions: Gauge,
    sessions_now: AtomicI64,
    peers: Gauge,
    fallback_writes: Family<RelayResult, Counter>,
    replica_fallbacks: Family<RelayMode, Counter>,
    unlocks: Family<ResultLabel, Counter>,
    leases_active: Family<RelayLabel, Gauge>,
    lease_expiry: Family<RelayLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pending: Family<RelayLabel, Gauge>,
    pushes: Family<ResultLabel, Counter>,
    verified_blocks: Counter,
    rejected_blocks: Counter,
}

impl GatewayMetrics {
    pub(crate) fn new() -> GatewayMetrics {
        let mut registry = Registry::default();
        let sessions = Gauge::default();
        registry.register(
            "gateway_active_sessions",
            "Client WebSocket sessions open",
            sessions.clone(),
        );
        let peers = Gauge::default();
        registry.register(
            "gateway_active_peers",
            "Workers with a peer link up",
            peers.clone(),
        );
        let fallback_writes = Family::<RelayResult, Counter>::default();
        registry.register(
            "gateway_relay_fallback_writes",
            "Client writes while no worker of the relay was reachable, by outcome",
            fallback_writes.clone(),
        );
        let replica_fallbacks = Family::<RelayMode, Counter>::default();
        registry.register(
            "gateway_replica_fallback",
            "Sessions that entered replica mode",
            replica_fallbacks.clone(),
        );
        let unlocks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "gateway_escrow_unlock_requests",
            "Lease requests to the escrow, by outcome",
            unlocks.clone(),
        );
        let leases_active = Family::<RelayLabel, Gauge>::default();
        registry.register(
            "gateway_escrow_leases_active",
            "1 while the gateway holds a usable lease of the relay",
            leases_active.clone(),
        );
        let lease_expiry =
            Family::<RelayLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "gateway_escrow_lease_time_to_expiry_seconds",
            "Seconds until the relay's active lease expires (refreshed on every scrape)",
            lease_expiry.clone(),
        );
        let pending = Family::<RelayLabel, Gauge>::default();
        registry.register(
            "gateway_pending_writes",
            "1 while the relay has gateway writes its workers have not resynced",
            pending.clone(),
        );
        let pushes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "gateway_pending_write_push",
            "Pending-write notices sent to workers, and acks received",
            pushes.clone(),
        );
        let verified_blocks = Counter::default();
        registry.register(
            "gateway_blind_peer_verified_blocks",
            "Mirrored blocks verified and stored",
            verified_blocks.clone(),
        );
        let rejected_blocks = Counter::default();
        registry.register(
            "gateway_blind_peer_rejected_blocks",
            "Mirrored blocks refused because they did not verify",
            rejected_blocks.clone(),
        );
        GatewayMetrics {
            registry,
            sessions,
            sessions_now: AtomicI64::new(0),
            peers,
            fallback_writes,
            replica_fallbacks,
            unlocks,
            leases_active,
            lease_expiry,
            pending,
            pushes,
            verified_blocks,
            rejected_blocks,
        }
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
            GatewayEvent::Push(PushEvent::Sent { .. }) => {
                self.pushes
                    .get_or_create(&ResultLabel { result: "sent" })
                    .inc();
            }
            GatewayEvent::Push(PushEvent::Acked { .. }) => {
                self.pushes
                    .get_or_create(&ResultLabel { result: "acked" })
                    .inc();
            }
            _ => {}
        }
    }

    /// The exposition, with the gauges read from the core now.
    pub(crate) fn render(&self, state: &CoreState, now: std::time::Instant) -> String {
        self.peers
            .set(i64::try_from(state.outbound.len()).unwrap_or(i64::MAX));
        for record in state.core.registry().relays() {
            let label = RelayLabel {
                relay: record.relay_key.to_hex(),
            };
            let pending = i64::from(record.pending.pending);
            self.pending.get_or_create(&label).set(pending);
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
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        text
    }
}

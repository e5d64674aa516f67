//! The escrow service's Prometheus metrics, on the registry `GET /metrics`
//! actually serves (the original created its four escrow metrics on
//! prom-client's global registry and served another one, so none was
//! exported).
//!
//! Exported (OpenMetrics text, `application/openmetrics-text`):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `escrow_unlock_total` | counter | `result`: `success`, `refetch`, `policy-rejection`, `error` |
//! | `escrow_policy_rejections_total` | counter | `reason`: the policy's reason strings |
//! | `escrow_active_leases` | gauge | – (refreshed after every change and by the expiry sweep) |
//! | `escrow_unlock_duration_seconds` | histogram | –; buckets 0.01 … 5 (the original's) |
//! | `escrow_deposits_total` | counter | `result`: `stored`, `rejected`, `error` |
//! | `escrow_http_request_duration_seconds` | histogram | `route`, `status` |
//! | `escrow_store_operation_duration_seconds` | histogram | `operation` |
//! | `escrow_audit_append_duration_seconds` | histogram | – |
//! | `escrow_audit_failures_total` | counter | – |
//! | `escrow_audit_repairs_total` | counter | – (1 when this start rebuilt a log a crash left half-appended) |
//!
//! Labels are bounded: routes are the router's matched paths (or
//! `unmatched`), reasons and operations are fixed strings.

use std::sync::Arc;

use hypergate_core::escrow::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type `GET /metrics` answers with.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The original's unlock-duration buckets, in seconds.
const UNLOCK_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0];
/// Request, store and audit latency buckets, in seconds (1 ms to 5 s).
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every policy reason, exported at 0 from the start (with the unlock and deposit results):
/// a series that first appears at 1 is invisible to `rate()` and `increase()`, so a first
/// rejection would not fire an alert.
pub const POLICY_REASONS: [RejectReason; 13] = RejectReason::ALL;
const UNLOCK_RESULTS: [&str; 4] = ["success", "refetch", "policy-rejection", "error"];
const DEPOSIT_RESULTS: [&str; 3] = ["stored", "rejected", "error"];

/// `{result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    /// The outcome.
    pub result: &'static str,
}

/// `{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The policy reason.
    pub reason: &'static str,
}

/// `{route, status}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route.
    pub route: String,
    /// The HTTP status code.
    pub status: u16,
}

/// `{operation}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabel {
    /// The store operation.
    pub operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric of the escrow service, and the registry that serves them.
#[derive(Debug)]
pub struct EscrowMetrics {
    registry: Registry,
    /// `escrow_unlock_total{result}`.
    pub unlocks: Family<ResultLabel, Counter>,
    /// `escrow_policy_rejections_total{reason}`.
    pub policy_rejections: Family<ReasonLabel, Counter>,
    /// `escrow_active_leases`.
    pub active_leases: Gauge,
    /// `escrow_unlock_duration_seconds`.
    pub unlock_duration: Histogram,
    /// `escrow_deposits_total{result}`.
    pub deposits: Family<ResultLabel, Counter>,
    /// `escrow_http_request_duration_seconds{route,status}`.
    pub http_duration: HistogramFamily<RouteLabels>,
    /// `escrow_store_operation_duration_seconds{operation}`.
    pub store_duration: HistogramFamily<OperationLabel>,
    /// `escrow_audit_append_duration_seconds`.
    pub audit_duration: Histogram,
    /// `escrow_audit_failures_total`.
    pub audit_failures: Counter,
    /// `escrow_audit_repairs_total`.
    pub audit_repairs: Counter,
}

impl EscrowMetrics {
    /// A fresh registry with every metric registered.
    #[must_use]
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let unlocks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "escrow_unlock",
            "Unlock requests by result",
            unlocks.clone(),
        );
        let policy_rejections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "escrow_policy_rejections",
            "Policy rejection reasons of refused unlocks and renewals",
            policy_rejections.clone(),
        );
        let active_leases = Gauge::default();
        registry.register(
            "escrow_active_leases",
            "Leases active now",
            active_leases.clone(),
        );
        let unlock_duration = Histogram::new(UNLOCK_BUCKETS);
        registry.register(
            "escrow_unlock_duration_seconds",
            "Time to decide and answer an unlock, audit and store included",
            unlock_duration.clone(),
        );
        let deposits = Family::<ResultLabel, Counter>::default();
        registry.register("escrow_deposits", "Deposits by result", deposits.clone());
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "escrow_http_request_duration_seconds",
            "HTTP request latency by route and status",
            http_duration.clone(),
        );
        let store_duration: HistogramFamily<OperationLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "escrow_store_operation_duration_seconds",
            "Escrow store call latency by operation",
            store_duration.clone(),
        );
        let audit_duration = latency_histogram();
        registry.register(
            "escrow_audit_append_duration_seconds",
            "Audit log append latency (durable on return)",
            audit_duration.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "escrow_audit_failures",
            "Audit appends that failed (the escrow refuses until restarted)",
            audit_failures.clone(),
        );
        let audit_repairs = Counter::default();
        registry.register(
            "escrow_audit_repairs",
            "Audit logs rebuilt at start after a crash inside an append (the damaged copy is kept)",
            audit_repairs.clone(),
        );
        for result in UNLOCK_RESULTS {
            unlocks.get_or_create_owned(&ResultLabel { result });
        }
        for result in DEPOSIT_RESULTS {
            deposits.get_or_create_owned(&ResultLabel { result });
        }
        for reason in POLICY_REASONS {
            policy_rejections.get_or_create_owned(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        Arc::new(Self {
            registry,
            unlocks,
            policy_rejections,
            active_leases,
            unlock_duration,
            deposits,
            http_duration,
            store_duration,
            audit_duration,
            audit_failures,
            audit_repairs,
        })
    }

    /// Counts one unlock outcome.
    pub fn unlock(&self, result: &'static str) {
        self.unlocks.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts one deposit outcome.
    pub fn deposit(&self, result: &'static str) {
        self.deposits.get_or_create(&ResultLabel { result }).inc();
    }

    /// The OpenMetrics text of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

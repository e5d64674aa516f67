//! Garbage collection under a byte budget.
//!
//! [`plan`] is a pure function of the records, the protection predicate, the
//! budget and `now`: it orders the unprotected cores (stale ones first, oldest
//! first; then lowest priority, least recently seen) and takes them until the
//! bytes left fit the budget. Protected cores are never candidates. If the
//! budget cannot be met without them, the plan says so — it evicts every
//! unprotected core it can and reports the shortfall rather than touch a
//! relay's live members.
//!
//! Under budget, nothing is evicted, stale or not: staleness only decides
//! which cores go first when space is needed.

use std::time::Duration;

use hypergate_core::ids::RelayKey;
use hypergate_core::time::UnixTime;

use super::MirrorStore;
use super::error::MirrorError;
use super::record::{CoreKey, CoreRecord, EvictionReason};
use hypergate_core::wire::CoreRole;

/// One core taken out of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Eviction {
    /// The core.
    pub core_key: CoreKey,
    /// Its relay.
    pub relay: RelayKey,
    /// Its role.
    pub role: CoreRole,
    /// Why it went.
    pub reason: EvictionReason,
    /// Bytes it occupied.
    pub bytes: u64,
}

impl Eviction {
    pub(super) fn of(record: &CoreRecord, reason: EvictionReason) -> Eviction {
        Eviction {
            core_key: record.core_key,
            relay: record.relay,
            role: record.role,
            reason,
            bytes: record.bytes,
        }
    }
}

/// The budget could not be met without evicting protected cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetShortfall {
    /// Bytes still over the budget after every unprotected eviction.
    pub over_by: u64,
    /// Protected cores left in place.
    pub protected_cores: usize,
    /// Bytes those protected cores occupy.
    pub protected_bytes: u64,
}

/// What one garbage collection did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct GcReport {
    /// Cores evicted, in eviction order.
    pub evicted: Vec<Eviction>,
    /// Bytes used before.
    pub bytes_before: u64,
    /// Bytes used after.
    pub bytes_after: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Set when the budget is still exceeded because only protected cores remain.
    pub shortfall: Option<BudgetShortfall>,
}

impl GcReport {
    /// Whether the store now fits its budget.
    #[must_use]
    pub fn budget_met(&self) -> bool {
        self.shortfall.is_none()
    }
}

/// Which cores to evict (pure; see the module docs).
pub(super) fn plan<'a>(
    records: impl IntoIterator<Item = &'a CoreRecord>,
    protected: &dyn Fn(&CoreRecord) -> bool,
    max_bytes: u64,
    stale_ttl: Duration,
    now: UnixTime,
) -> GcReport {
    let mut bytes = 0u64;
    let mut protected_cores = 0usize;
    let mut protected_bytes = 0u64;
    let mut candidates = Vec::new();
    for record in records {
        bytes = bytes.saturating_add(record.bytes);
        if protected(record) {
            protected_cores += 1;
            protected_bytes = protected_bytes.saturating_add(record.bytes);
        } else {
            candidates.push((record.is_stale(stale_ttl, now), record));
        }
    }
    let bytes_before = bytes;
    // Stale first (oldest first); then lowest priority, least recently seen;
    // the key last so equal records order the same on every run.
    candidates.sort_by(|(a_stale, a), (b_stale, b)| {
        b_stale
            .cmp(a_stale)
            .then_with(|| {
                if *a_stale {
                    std::cmp::Ordering::Equal
                } else {
                    a.priority.cmp(&b.priority)
                }
            })
            .then_with(|| a.last_seen.cmp(&b.last_seen))
            .then_with(|| a.core_key.cmp(&b.core_key))
    });
    let mut evicted = Vec::new();
    for (stale, record) in candidates {
        if bytes <= max_bytes {
            break;
        }
        let reason = if stale {
            EvictionReason::Stale
        } else {
            EvictionReason::Budget
        };
        evicted.push(Eviction::of(record, reason));
        bytes = bytes.saturating_sub(record.bytes);
    }
    let shortfall = (bytes > max_bytes).then(|| BudgetShortfall {
        over_by: bytes.saturating_sub(max_bytes),
        protected_cores,
        protected_bytes,
    });
    GcReport {
        evicted,
        bytes_before,
        bytes_after: bytes,
        max_bytes,
        shortfall,
    }
}

impl MirrorStore {
    /// Evicts unprotected cores until the bytes used fit `max_bytes` (see the
    /// module docs for the order). `protected` must hold for every current
    /// member core of every relay the gateway serves — owner log, each writer,
    /// the gateway writer, and the drives it keeps — and those are never
    /// evicted; when the budget cannot be met without them the report carries
    /// a [`BudgetShortfall`].
    pub fn collect_garbage(
        &mut self,
        protected: &dyn Fn(&CoreRecord) -> bool,
        now: UnixTime,
    ) -> Result<GcReport, MirrorError> {
        let report = plan(
            self.records.values(),
            protected,
            self.config.max_bytes,
            self.config.stale_core_ttl,
            now,
        );
        if !report.evicted.is_empty() {
            self.evict(&report.evicted)?;
        }
        if let Some(shortfall) = &report.shortfall {
            tracing::warn!(
                over_by = shortfall.over_by,
                protected_cores = shortfall.protected_cores,
                protected_bytes = shortfall.protected_bytes,
                max_bytes = report.max_bytes,
                "mirror over its byte budget with only protected cores left"
            );
        }
        Ok(report)
    }
}

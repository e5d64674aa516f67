//! Time as the core sees it: monotonic `now: Instant` passed into every input,
//! and wall-clock [`UnixTime`] injected where a persisted or wire field needs it.
//!
//! The core never reads a clock. Wall-clock values that arrive from peers are
//! untrusted: [`UnixTime::clamp_untrusted`] bounds them against the local view.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as carried on the wire and in snapshots.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The epoch itself; used as "never" in persisted records.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// Milliseconds since the epoch.
    #[must_use]
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus a duration, saturating instead of overflowing.
    #[must_use]
    pub fn saturating_add(self, by: Duration) -> UnixTime {
        UnixTime(self.0.saturating_add(duration_millis(by)))
    }

    /// How long after `earlier` this time is; zero if it is not later.
    #[must_use]
    pub fn saturating_since(self, earlier: UnixTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Bounds a time reported by a peer to at most `max_skew` ahead of `local_now`,
    /// so a peer with a wrong clock cannot push records into the far future.
    #[must_use]
    pub fn clamp_untrusted(self, local_now: UnixTime, max_skew: Duration) -> UnixTime {
        self.min(local_now.saturating_add(max_skew))
    }
}

/// Whole milliseconds of a duration, saturating at `u64::MAX`.
#[must_use]
pub fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A starting instant for unit tests: the one clock read in this crate, compiled into test builds only.
#[rustfmt::skip]
#[cfg(test)] #[allow(clippy::disallowed_methods)] pub(crate) fn test_start() -> std::time::Instant { std::time::Instant::now() } // cfg(test)

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_future_time_is_clamped_to_allowed_skew() {
        let now = UnixTime(1_000_000);
        let far = UnixTime(9_000_000);
        assert_eq!(
            far.clamp_untrusted(now, Duration::from_secs(60)),
            UnixTime(1_060_000)
        );
        assert_eq!(
            UnixTime(5).clamp_untrusted(now, Duration::ZERO),
            UnixTime(5)
        );
    }
}

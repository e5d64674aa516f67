//! The system clock, read once per input by the runtime drivers.
//!
//! The core takes `now: Instant` on every input and a wall-clock anchor at
//! construction; this module is where both come from, so tests and
//! simulations can substitute their own.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hypergate_core::time::{UnixTime, duration_millis};

/// A source of the two kinds of time the core needs.
pub trait Clock {
    /// Monotonic time, for deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock time, for persisted and wire fields.
    fn unix_now(&self) -> UnixTime;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now(&self) -> UnixTime {
        // A clock set before 1970 is a misconfigured host; report the epoch
        // rather than failing every request.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UnixTime(duration_millis(since_epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reports_a_plausible_wall_clock() {
        let clock = SystemClock;
        // 2020-01-01 in milliseconds: any machine running this is later.
        assert!(clock.unix_now() > UnixTime(1_577_836_800_000));
        let first = clock.now();
        assert!(clock.now() >= first);
    }
}

//! A client connection's frame budget.
//!
//! Contract: a token bucket. A connection may send `burst` frames at once and `rate` frames a
//! second after that; [`FrameBudget::admit`] spends one token per frame and says whether the
//! frame may be executed. Over any stretch of time `T` it admits at most `burst + rate × T`
//! frames, and a client that never sends faster than `rate` is never refused. The gateway
//! answers a refused frame `rate-limited:` and executes nothing.

use std::time::Instant;

/// A token bucket of frames (see the module docs).
#[derive(Debug, Clone)]
pub struct FrameBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl FrameBudget {
    /// A full bucket at `now`: `rate` frames a second, `burst` at once (each at least 1).
    #[must_use]
    pub fn new(rate: u32, burst: u32, now: Instant) -> FrameBudget {
        let burst = f64::from(burst.max(1));
        FrameBudget {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Whether a frame arriving at `now` may pass (its token is spent if so). A `now` earlier
    /// than the last call counts as no time passed.
    #[must_use]
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::time::test_start;

    #[test]
    fn a_burst_passes_then_frames_wait_for_the_rate() {
        let t0 = test_start();
        let mut budget = FrameBudget::new(10, 3, t0);
        assert!((0..3).all(|_| budget.admit(t0)));
        assert!(!budget.admit(t0));
        assert!(!budget.admit(t0 + Duration::from_millis(50)));
        assert!(budget.admit(t0 + Duration::from_millis(100)));
    }

    proptest! {
        #[test]
        fn no_stretch_of_time_admits_more_than_burst_plus_rate_times_its_length(
            rate in 1u32..500,
            burst in 1u32..50,
            gaps_us in proptest::collection::vec(0u64..20_000, 1..400),
        ) {
            let t0 = test_start();
            let mut budget = FrameBudget::new(rate, burst, t0);
            let mut now = t0;
            let mut admitted_at = Vec::new();
            for gap in gaps_us {
                now += Duration::from_micros(gap);
                if budget.admit(now) {
                    admitted_at.push(now);
                }
            }
            for (i, start) in admitted_at.iter().enumerate() {
                for (j, end) in admitted_at.iter().enumerate().skip(i) {
                    let span = end.duration_since(*start).as_secs_f64();
                    let allowed = f64::from(burst) + f64::from(rate) * span;
                    prop_assert!((j - i + 1) as f64 <= allowed + 1e-6,
                        "{} frames in {span} s with rate {rate}, burst {burst}", j - i + 1);
                }
            }
        }

        #[test]
        fn a_client_that_keeps_to_the_rate_is_never_refused(
            rate in 1u32..500,
            burst in 1u32..50,
            frames in 1usize..300,
            slack_us in 0u64..5_000,
        ) {
            let t0 = test_start();
            let mut budget = FrameBudget::new(rate, burst, t0);
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate))
                + Duration::from_micros(slack_us + 1);
            for n in 0..frames {
                let now = t0 + interval * u32::try_from(n).unwrap_or(u32::MAX);
                prop_assert!(budget.admit(now), "frame {n} refused");
            }
        }
    }
}

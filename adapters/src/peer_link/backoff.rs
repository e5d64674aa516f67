//! The worker's reconnect loop: exponential backoff with jitter from a seeded RNG.
//!
//! Contract:
//! - After the `n`-th consecutive failure (counting from 0) the delay is
//!   `min(max, initial · 2ⁿ)`, scaled by a factor drawn uniformly from
//!   `[1 − jitter, 1 + jitter]` (in per mille) by a ChaCha8 RNG seeded at construction: the same
//!   seed gives the same delays, and workers seeded differently do not reconnect in lockstep.
//! - [`connect_with_backoff`] calls `dial` until it succeeds, sleeping [`Backoff::next_delay`]
//!   between failures, and gives up after [`BackoffConfig::max_attempts`] failures if set,
//!   returning the last error. Every failure is logged with its attempt number and delay.
//! - Success does not reset the backoff: call [`Backoff::reset`] once the link has proven
//!   itself (e.g. stayed up past a heartbeat), so a gateway that accepts and then drops at once
//!   is not hammered.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::Sleeper;

/// Shape of the backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay after the first failure, before jitter.
    pub initial: Duration,
    /// Largest delay before jitter.
    pub max: Duration,
    /// Jitter, in per mille of the delay either way (200 = ±20 %; capped at 1000).
    pub jitter_permille: u16,
    /// Failures after which [`connect_with_backoff`] gives up; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for BackoffConfig {
    /// 500 ms doubling to 60 s, ±20 % jitter (the core's push scheduler uses the same jitter),
    /// retrying forever: a worker keeps trying until the gateway is back.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            jitter_permille: 200,
            max_attempts: None,
        }
    }
}

/// Delays between reconnect attempts; see the module docs.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// A backoff with no failures yet, its jitter drawn from `seed`.
    #[must_use]
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            failures: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let doubled = self
            .config
            .initial
            .saturating_mul(2u32.saturating_pow(self.failures));
        let capped = doubled.min(self.config.max);
        let jitter = u64::from(self.config.jitter_permille.min(1000));
        let factor = 1000 - jitter + self.rng.next_u64() % (2 * jitter + 1);
        let nanos = capped.as_nanos().saturating_mul(u128::from(factor)) / 1000;
        self.failures = self.failures.saturating_add(1);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Forgets past failures: the next delay is the initial one again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures counted since the last reset.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

/// [`connect_with_backoff`] gave up.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// Failed attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last: E,
}

impl<E: fmt::Display> fmt::Display for GaveUp<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} failed attempts; last error: {}",
            self.attempts, self.last
        )
    }
}

impl<E: fmt::Display + fmt::Debug> std::error::Error for GaveUp<E> {}

/// Calls `dial` until it succeeds, waiting `backoff`'s delays on `timer` between failures.
///
/// `dial` is whatever opens a link: typically a TCP connect followed by
/// [`connect`](super::connect).
pub async fn connect_with_backoff<D, F, T, E, Z>(
    mut dial: D,
    backoff: &mut Backoff,
    timer: &Z,
) -> Result<T, GaveUp<E>>
where
    D: FnMut() -> F,
    F: Future<Output = Result<T, E>>,
    E: fmt::Display,
    Z: Sleeper,
{
    let mut attempts = 0u32;
    loop {
        let error = match dial().await {
            Ok(connected) => return Ok(connected),
            Err(error) => error,
        };
        attempts = attempts.saturating_add(1);
        if backoff
            .config
            .max_attempts
            .is_some_and(|max| attempts >= max)
        {
            return Err(GaveUp {
                attempts,
                last: error,
            });
        }
        let delay = backoff.next_delay();
        tracing::warn!(attempt = attempts, ?delay, %error, "peer link: connect failed, retrying");
        timer.sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn config(max_attempts: Option<u32>) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            jitter_permille: 200,
            max_attempts,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_the_jitter() {
        let mut backoff = Backoff::new(config(None), 7);
        for failure in 0..10u32 {
            let nominal =
                Duration::from_millis(100 * 2u64.pow(failure)).min(Duration::from_secs(2));
            let delay = backoff.next_delay();
            assert!(
                delay >= nominal * 8 / 10,
                "{delay:?} below {nominal:?} − 20 %"
            );
            assert!(
                delay <= nominal * 12 / 10,
                "{delay:?} above {nominal:?} + 20 %"
            );
        }
        assert_eq!(backoff.failures(), 10);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_another_seed_does_not() {
        let delays = |seed| {
            let mut backoff = Backoff::new(config(None), seed);
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut backoff = Backoff::new(config(None), 3);
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn zero_jitter_gives_the_exact_exponential_delays() {
        let mut backoff = Backoff::new(
            BackoffConfig {
                jitter_permille: 0,
                ..config(None)
            },
            0,
        );
        let delays: Vec<_> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000]);
    }

    #[test]
    fn connect_retries_after_failures_sleeping_the_backoff_delays() {
        let slept = RefCell::new(Vec::new());
        let timer = |delay: Duration| {
            slept.borrow_mut().push(delay);
            std::future::ready(())
        };
        let mut backoff = Backoff::new(config(None), 11);
        let mut expected = Backoff::new(config(None), 11);
        let mut calls = 0;
        let connected = futures_lite::future::block_on(connect_with_backoff(
            || {
                calls += 1;
                let attempt = calls;
                async move {
                    if attempt < 4 {
                        Err(format!("refused #{attempt}"))
                    } else {
                        Ok(attempt)
                    }
                }
            },
            &mut backoff,
            &timer,
        ));
        assert_eq!(connected.unwrap(), 4);
        let want: Vec<_> = (0..3).map(|_| expected.next_delay()).collect();
        assert_eq!(*slept.borrow(), want);
    }

    #[test]
    fn connect_gives_up_after_max_attempts_with_the_last_error() {
        let timer = |_: Duration| std::future::ready(());
        let mut backoff = Backoff::new(config(Some(3)), 0);
        let mut calls = 0;
        let result: Result<(), _> = futures_lite::future::block_on(connect_with_backoff(
            || {
                calls += 1;
                let attempt = calls;
                async move { Err(format!("refused #{attempt}")) }
            },
            &mut backoff,
            &timer,
        ));
        let gave_up = result.unwrap_err();
        assert_eq!(gave_up.attempts, 3);
        assert_eq!(gave_up.last, "refused #3");
        assert_eq!(backoff.failures(), 2, "no delay after the last attempt");
    }
}

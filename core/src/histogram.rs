//! A fixed-bucket histogram the core fills and the adapters export.
//!
//! Buckets are upper bounds in seconds, as Prometheus expects; counts are per
//! bucket (not cumulative) and an implicit `+Inf` bucket catches the rest.

use std::time::Duration;

/// Bucket bounds of `gateway_relay_fallback_duration_seconds`, as the original had them.
pub const FALLBACK_DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Observations of a duration, bucketed.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus one for `+Inf`.
    counts: Vec<u64>,
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, in seconds).
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_seconds: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Cumulative `(upper bound, count)` pairs, ending with `(+Inf, total)`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().scan(0u64, |running, count| {
            *running += count;
            Some(*running)
        }))
    }

    /// Sum of all observations, in seconds.
    #[must_use]
    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// Number of observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut histogram = Histogram::new(FALLBACK_DURATION_BUCKETS);
        histogram.observe(Duration::from_millis(100));
        histogram.observe(Duration::from_secs(3));
        histogram.observe(Duration::from_secs(500));
        let cumulative: Vec<_> = histogram.cumulative().collect();
        assert_eq!(cumulative[0], (0.1, 1));
        assert_eq!(cumulative[4], (5.0, 2));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(histogram.count(), 3);
        assert!((histogram.sum_seconds() - 503.1).abs() < 1e-9);
    }
}

//! Latency percentiles and medians of the load generator.
//!
//! Contract: percentiles use the nearest-rank method on the full sample (no histogram
//! buckets, no interpolation): `p`-th percentile = the smallest sample such that at least
//! `p` % of the samples are ≤ it. An empty sample has no percentiles (`None`), never a zero
//! that could be mistaken for a measurement. Medians of a few runs take the mean of the two
//! middle values when the count is even.

use std::time::Duration;

/// Latency figures of one load run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest sample.
    pub max_us: u64,
}

/// Collected request latencies (one per completed request).
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples_us: Vec<u64>,
}

impl Latencies {
    /// Records one request's latency.
    pub fn record(&mut self, latency: Duration) {
        self.samples_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds another connection's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.samples_us.extend(other.samples_us);
    }

    /// How many samples were recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.samples_us.len()
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.samples_us.is_empty()
    }

    /// p50, p99 and max; `None` without samples.
    #[must_use]
    pub fn summary(mut self) -> Option<LatencySummary> {
        self.samples_us.sort_unstable();
        Some(LatencySummary {
            p50_us: nearest_rank(&self.samples_us, 50)?,
            p99_us: nearest_rank(&self.samples_us, 99)?,
            max_us: *self.samples_us.last()?,
        })
    }
}

/// The `percent`-th percentile of `sorted` (ascending) by nearest rank; `None` if empty.
/// `percent` above 100 is read as 100.
#[must_use]
pub fn nearest_rank(sorted: &[u64], percent: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let percent = u64::from(percent.min(100));
    let n = sorted.len() as u64;
    // rank = ceil(p/100 · n), at least 1; index = rank − 1.
    let rank = (percent * n).div_ceil(100).max(1);
    let index = usize::try_from(rank - 1).ok()?;
    sorted.get(index).copied()
}

/// The median of a few per-run figures; `None` if there are none.
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(middle).copied()
    } else {
        Some((sorted.get(middle - 1)? + sorted.get(middle)?) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_smallest_sample_covering_the_percentage() {
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&hundred, 50), Some(50));
        assert_eq!(nearest_rank(&hundred, 99), Some(99));
        assert_eq!(nearest_rank(&hundred, 100), Some(100));
        assert_eq!(nearest_rank(&hundred, 0), Some(1));
        // Ten samples: p99 is the largest (rank ceil(9.9) = 10), p50 the fifth.
        let ten: Vec<u64> = (10..=100).step_by(10).collect();
        assert_eq!(nearest_rank(&ten, 99), Some(100));
        assert_eq!(nearest_rank(&ten, 50), Some(50));
        assert_eq!(nearest_rank(&ten, 51), Some(60));
        assert_eq!(nearest_rank(&[7], 99), Some(7));
        assert_eq!(nearest_rank(&hundred, 250), Some(100));
    }

    #[test]
    fn an_empty_sample_has_no_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(Latencies::default().summary(), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_sorts_unordered_samples_from_several_connections() {
        let mut first = Latencies::default();
        let mut second = Latencies::default();
        for us in [900, 100, 500] {
            first.record(Duration::from_micros(us));
        }
        for us in [300, 700] {
            second.record(Duration::from_micros(us));
        }
        first.merge(second);
        assert_eq!(first.len(), 5);
        let summary = first.summary();
        assert_eq!(
            summary,
            Some(LatencySummary {
                p50_us: 500,
                p99_us: 900,
                max_us: 900
            })
        );
    }

    #[test]
    fn median_of_runs_averages_the_middle_pair_when_even_and_skips_non_finite() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }
}

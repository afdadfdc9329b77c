//! A histogram of atomics: observing is a few relaxed atomic adds, never a lock,
//! so it can sit on the share path of every session.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

use crate::atomic::AtomicF64;

/// Upper bounds for latencies in seconds: 50 µs to 10 s.
pub const LATENCY_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Upper bounds for counts of things (batch sizes): powers of four up to 16384.
pub const SIZES: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];

/// Counts of observations at or below each bound, plus their sum.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One per bound, plus the overflow bucket (+Inf); not cumulative.
    buckets: Box<[AtomicU64]>,
    sum: AtomicF64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicF64::default(),
        }
    }

    /// Records one value; NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let slot = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum.add(value);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, elapsed: std::time::Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the histogram in the exposition format (cumulative buckets).
    ///
    /// # Errors
    /// Whatever the encoder's writer returns.
    pub fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (buckets, count) = cumulative(
            self.bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed))),
        );
        encoder.encode_histogram::<NoLabelSet>(self.sum.load(), count, &buckets, None)
    }
}

/// Turns per-bucket counts into cumulative ones; returns them and the total.
pub fn cumulative(counts: impl Iterator<Item = (f64, u64)>) -> (Vec<(f64, u64)>, u64) {
    let mut total = 0;
    let buckets = counts
        .map(|(bound, n)| {
            total += n;
            (bound, total)
        })
        .collect();
    (buckets, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let histogram = AtomicHistogram::new(SIZES);
        for value in [1.0, 3.0, 4.0, 5.0, 1e9] {
            histogram.observe(value);
        }
        histogram.observe(f64::NAN);
        assert_eq!(histogram.count(), 5);
        let counts: Vec<u64> = histogram
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // ≤1: 1; ≤4: 3, 4; ≤16: 5; +Inf: 1e9.
        assert_eq!(counts, [1, 2, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(histogram.sum.load(), 1.0 + 3.0 + 4.0 + 5.0 + 1e9);
    }
}

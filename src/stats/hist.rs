//! Latency and extent histograms (HDR) and their percentile summary.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// An HDR histogram of non-negative integer samples (nanoseconds, extents, ...), 3 significant
/// digits, auto-resizing, never failing on a large value.
#[derive(Clone)]
pub struct Hist {
    h: Histogram<u64>,
}

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hist({} samples)", self.h.len())
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        self.h == other.h
    }
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        let mut h = Histogram::new(3).expect("3 significant figures is valid");
        h.auto(true);
        Hist { h }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        // auto(true) makes recording infallible for any u64 the histogram can grow to cover.
        let _ = self.h.record(v);
    }

    /// `n` values of `v` at once (a receive buffer's datagrams that share a latency).
    pub(crate) fn record_n(&mut self, v: u64, n: u64) {
        let _ = self.h.record_n(v, n);
    }

    pub fn add(&mut self, other: &Hist) {
        let _ = self.h.add(&other.h);
    }

    pub fn len(&self) -> u64 {
        self.h.len()
    }

    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Samples at or below `v` (within the histogram's 3 significant digits).
    pub(crate) fn count_le(&self, v: u64) -> u64 {
        self.h.count_between(0, v)
    }

    /// The sum of the samples, from the mean (within the histogram's 3 significant digits).
    pub fn sum(&self) -> f64 {
        self.h.mean() * self.h.len() as f64
    }

    pub fn reset(&mut self) {
        self.h.reset();
    }

    /// The percentile summary, each value divided by `scale` (1000.0 turns ns into µs).
    pub fn summary(&self, scale: f64) -> Percentiles {
        if self.h.is_empty() {
            return Percentiles::default();
        }
        let q = |p: f64| self.h.value_at_quantile(p) as f64 / scale;
        Percentiles {
            count: self.h.len(),
            min: self.h.min() as f64 / scale,
            mean: self.h.mean() / scale,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: self.h.max() as f64 / scale,
        }
    }
}

/// A summary of a histogram. All values are in the unit the caller scaled to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Median of a list of values (mean of the two middle ones for an even count); None if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary(1000.0);
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
        h.record(u64::MAX / 4);
        assert_eq!(h.len(), 1001);
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Hist::new().summary(1.0), Percentiles::default());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

//! A lock-free log-linear latency histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: 2^SUB_BITS. 16 sub-buckets bound the
/// relative error of a quantile to 1/16 (6.25 %).
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` get one exact bucket each; every power of two above
/// gets `SUB` buckets.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// Bucket index of `v` (nanoseconds).
fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = ((v >> shift) as usize) & (SUB - 1);
    SUB + (exp - SUB_BITS) as usize * SUB + sub
}

/// Largest value that falls into bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let group = (i - SUB) / SUB;
    let sub = ((i - SUB) % SUB) as u64;
    let shift = group as u32;
    let exp = shift + SUB_BITS;
    let base = 1u128 << exp;
    let width = 1u128 << shift;
    let ub = base + u128::from(sub + 1) * width - 1;
    u64::try_from(ub).unwrap_or(u64::MAX)
}

/// Smallest value that falls into bucket `i`.
fn lower_bound(i: usize) -> u64 {
    match i.checked_sub(1) {
        Some(before) => upper_bound(before).saturating_add(1),
        None => 0,
    }
}

/// Exponent of the smallest and of the largest fixed bucket bound of
/// [`LatencyBuckets`]: bounds are `2^k - 1` ns for `k` in this range.
const FIXED_FIRST_EXP: u32 = 10;
const FIXED_LAST_EXP: u32 = 35;
/// Number of fixed (finite) buckets of [`LatencyBuckets`].
pub const LATENCY_BUCKETS: usize = (FIXED_LAST_EXP - FIXED_FIRST_EXP + 1) as usize;

/// Lock-free histogram of durations, recorded in nanoseconds.
///
/// Recording is two relaxed atomic adds, one saturating add (a
/// compare-and-swap loop: the sum stops at `u64::MAX` ns, 584 years, rather
/// than wrapping) and one `fetch_max`; no locks, no allocation. Quantiles
/// are computed from log-linear buckets (16 per power of two), so a reported
/// quantile is within 6.25 % of the true value and
/// never above the recorded maximum.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count.load(Ordering::Relaxed))
            .field("max_ns", &self.max_ns.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.record_nanos(ns);
    }

    /// Records one duration given in nanoseconds.
    pub fn record_nanos(&self, ns: u64) {
        self.buckets[index(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // saturating: a wrapped sum would read as a tiny total (and a
        // Prometheus `_sum` going down, as after a reset)
        let _ = self
            .sum_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(ns))
            });
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Number of recorded durations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Summary of the recorded durations.
    pub fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        // a record counted in its bucket may not have raised the maximum
        // yet (another thread in the middle of `record_nanos`): the maximum
        // is at least the low end of the highest bucket counted, so that it
        // never caps a quantile below the durations counted
        let floor = counts.iter().rposition(|&c| c > 0).map_or(0, lower_bound);
        let max = self.max_ns.load(Ordering::Relaxed).max(floor);
        let sum = self.sum_ns.load(Ordering::Relaxed);
        // each fixed bound is the last value of an internal bucket, so the
        // count up to it is exact
        let mut fixed = [0u64; LATENCY_BUCKETS];
        let (mut seen, mut from) = (0u64, 0usize);
        for (k, slot) in fixed.iter_mut().enumerate() {
            let last = index(LatencyBuckets::bound_ns(k));
            seen += counts[from..=last].iter().sum::<u64>();
            from = last + 1;
            *slot = seen;
        }
        let quantile = |q: f64| -> u64 {
            if total == 0 {
                return 0;
            }
            // rank of the q-quantile, 1-based
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0u64;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_bound(i).min(max);
                }
            }
            max
        };
        LatencySummary {
            count: total,
            sum_ns: sum,
            p50_ns: quantile(0.50),
            p90_ns: quantile(0.90),
            p99_ns: quantile(0.99),
            max_ns: max,
            buckets: LatencyBuckets { cumulative: fixed },
        }
    }

    /// Zeroes the histogram.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_ns.store(0, Ordering::Relaxed);
        self.max_ns.store(0, Ordering::Relaxed);
    }
}

/// Point-in-time summary of a [`LatencyHistogram`], in nanoseconds (a field
/// missing from JSON reads as zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LatencySummary {
    /// Recorded durations.
    pub count: u64,
    /// Sum of all recorded durations (saturates at `u64::MAX`).
    pub sum_ns: u64,
    /// Median (within 6.25 %).
    pub p50_ns: u64,
    /// 90th percentile (within 6.25 %).
    pub p90_ns: u64,
    /// 99th percentile (within 6.25 %).
    pub p99_ns: u64,
    /// Largest recorded duration (exact; in a summary taken while another
    /// thread records, at least the low end of the highest bucket counted,
    /// within 6.25 % of the duration being recorded).
    pub max_ns: u64,
    /// Cumulative counts at fixed bounds (exact), for a Prometheus
    /// histogram that can be aggregated across instances.
    pub buckets: LatencyBuckets,
}

/// Cumulative counts of a [`LatencyHistogram`] at fixed bounds: the
/// durations of at most `2^k - 1` ns for `k` from 10 to 35, that is
/// "below 2^k ns": about 1 µs, 2 µs, 4 µs, ... up to 34.4 s (the last
/// bound), doubling each time.
///
/// The bounds are the same in every process and version using them, and
/// each falls exactly on a boundary of the histogram's internal buckets, so
/// the counts are exact (not interpolated): summed across instances they
/// give the counts of the whole fleet. Durations above the last bound are
/// counted only in the total ([`LatencySummary::count`], Prometheus
/// `le="+Inf"`).
///
/// In JSON it is the array of the cumulative counts, smallest bound first
/// (missing: all zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LatencyBuckets {
    cumulative: [u64; LATENCY_BUCKETS],
}

impl LatencyBuckets {
    /// The bound of fixed bucket `k` (0-based) in nanoseconds: `2^(k+10) - 1`.
    /// Beyond the last bucket it is the last bound.
    pub fn bound_ns(k: usize) -> u64 {
        let exp = FIXED_FIRST_EXP + u32::try_from(k.min(LATENCY_BUCKETS - 1)).unwrap_or(0);
        (1u64 << exp) - 1
    }

    /// `(bound in ns, durations at most that long)` of every fixed bucket,
    /// smallest bound first; the counts never decrease.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.cumulative
            .iter()
            .enumerate()
            .map(|(k, &count)| (Self::bound_ns(k), count))
    }
}

impl LatencySummary {
    /// Mean duration in nanoseconds (0 when empty).
    pub fn mean_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.count).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut prev = None;
        for i in 0..BUCKETS {
            let ub = upper_bound(i);
            if let Some(p) = prev {
                assert!(ub > p || ub == u64::MAX, "bucket {i}: {ub} <= {p}");
            }
            prev = Some(ub);
        }
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            1000,
            123_456,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(upper_bound(i) >= v, "{v} above its bucket");
            assert!(lower_bound(i) <= v, "{v} below its bucket");
            assert_eq!(index(lower_bound(i)), i, "{v}");
            if i > 0 {
                assert!(upper_bound(i - 1) < v, "{v} belongs to an earlier bucket");
            }
        }
    }

    #[test]
    fn fixed_bounds_fall_on_internal_bucket_boundaries() {
        assert_eq!(LatencyBuckets::bound_ns(0), 1_023);
        assert_eq!(LatencyBuckets::bound_ns(LATENCY_BUCKETS - 1), (1 << 35) - 1);
        assert_eq!(LatencyBuckets::bound_ns(usize::MAX), (1 << 35) - 1);
        for k in 0..LATENCY_BUCKETS {
            let bound = LatencyBuckets::bound_ns(k);
            // the bound ends an internal bucket, and the next value starts one
            assert_eq!(upper_bound(index(bound)), bound, "bucket {k}");
            assert_eq!(index(bound + 1), index(bound) + 1, "bucket {k}");
        }
    }

    #[test]
    fn fixed_bucket_counts_are_exact_on_random_samples() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..100 {
            let h = LatencyHistogram::new();
            let n = rnd() % 3000 + 1;
            let values: Vec<u64> = (0..n).map(|_| rnd() >> (rnd() % 64).max(26)).collect();
            for v in &values {
                h.record_nanos(*v);
            }
            let s = h.summary();
            for (bound, count) in s.buckets.iter() {
                let want = values.iter().filter(|v| **v <= bound).count() as u64;
                assert_eq!(count, want, "round {round}, bound {bound}");
            }
            assert_eq!(s.count, n);
        }
    }

    #[test]
    fn buckets_serialise_as_an_array_and_read_back() {
        let h = LatencyHistogram::new();
        h.record_nanos(5_000);
        let s = h.summary();
        let v = serde_json::to_value(s).unwrap();
        let array = v["buckets"].as_array().unwrap();
        assert_eq!(array.len(), LATENCY_BUCKETS);
        assert_eq!(array[0], 0); // <= 1023 ns
        assert_eq!(array[3], 1); // <= 8191 ns
        let back: LatencySummary = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn quantiles_within_error_bound() {
        let h = LatencyHistogram::new();
        for v in 1..=10_000u64 {
            h.record_nanos(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.max_ns, 10_000_000);
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 0.0625, "got {got}, want {want}");
        };
        close(s.p50_ns, 5_000_000);
        close(s.p90_ns, 9_000_000);
        close(s.p99_ns, 9_900_000);
        assert_eq!(s.mean_ns(), 5_000_500);
    }

    #[test]
    fn empty_and_reset() {
        let h = LatencyHistogram::new();
        assert_eq!(h.summary(), LatencySummary::default());
        h.record(Duration::from_micros(3));
        assert_eq!(h.summary().p99_ns, 3000);
        h.reset();
        assert_eq!(h.summary(), LatencySummary::default());
    }

    /// A snapshot taken while another thread records (its duration
    /// counted in its bucket, the maximum not raised yet: `record_nanos`
    /// is several atomic steps) reported the maximum as it was before, and
    /// every quantile capped by it: seen in 3 of 20,000 snapshots racing
    /// one record of 5 µs, a p50 and a max of 0 for one observation of
    /// 5 µs. Here that moment, set up by hand.
    #[test]
    fn a_snapshot_in_the_middle_of_a_record_keeps_its_quantiles_in_bounds() {
        let h = LatencyHistogram::new();
        h.buckets[index(5_000)].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let s = h.summary();
        assert_eq!(s.count, 1);
        for (q, got) in [("p50", s.p50_ns), ("p99", s.p99_ns), ("max", s.max_ns)] {
            let err = (got as f64 - 5_000.0).abs() / 5_000.0;
            assert!(err <= 0.0625, "{q} {got} for one duration of 5000 ns");
        }
        assert!(s.p99_ns <= s.max_ns);
    }

    #[test]
    fn sum_saturates_instead_of_wrapping() {
        let h = LatencyHistogram::new();
        h.record(Duration::MAX); // clamped to u64::MAX ns
        h.record_nanos(10);
        let s = h.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.sum_ns, u64::MAX, "the sum wrapped to {}", s.sum_ns);
        assert_eq!(s.max_ns, u64::MAX);
        assert_eq!(s.mean_ns(), u64::MAX / 2);
        // a saturated sum stays saturated (never goes back down)
        h.record_nanos(u64::MAX);
        assert_eq!(h.summary().sum_ns, u64::MAX);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = std::sync::Arc::new(LatencyHistogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record_nanos(i * (t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.summary().count, 40_000);
        assert_eq!(h.summary().max_ns, 9_999 * 4);
    }

    #[test]
    fn quantiles_bound_the_exact_rank_on_random_samples() {
        // xorshift: deterministic, spread over every magnitude
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let h = LatencyHistogram::new();
            let n = usize::try_from(rnd() % 2000 + 1).unwrap();
            let shift = rnd() % 64;
            let mut values: Vec<u64> = (0..n).map(|_| rnd() >> shift).collect();
            for v in &values {
                h.record_nanos(*v);
            }
            values.sort_unstable();
            let s = h.summary();
            for (q, got) in [(0.5, s.p50_ns), (0.9, s.p90_ns), (0.99, s.p99_ns)] {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                let want = values[rank - 1];
                assert!(got >= want, "round {round} q {q}: {got} < {want}");
                assert!(
                    (got - want) as f64 <= want as f64 / 16.0,
                    "round {round} q {q}: {got} vs {want}"
                );
            }
            assert_eq!(s.max_ns, values[n - 1]);
            assert_eq!(s.count, n as u64);
        }
    }
}

//! A node's own counters of what openraft's metrics do not tell: failed proposals, leader
//! changes seen, log fsync and apply durations, snapshots built. Plain atomics, updated
//! where the event happens (proposer, log store, state machine, a watch of openraft's
//! metrics) and read by whoever exports them (the binary's `/metrics`): this crate knows
//! no metrics format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds, in seconds, of [`DurationHistogram`]'s buckets (an overflow bucket
/// follows): 100 µs to ~6.5 s, doubling.
pub const DURATION_BOUNDS: [f64; 17] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];

/// A histogram of durations over fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// One count per bound of [`DURATION_BOUNDS`], then the overflow.
    buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// What a [`DurationHistogram`] held when read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, count in that bucket alone)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_secs: f64,
    pub count: u64,
}

impl DurationHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The buckets, sum and count now (each read on its own: a scrape during an
    /// observation may see it in one and not yet in another).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = DURATION_BOUNDS.iter().copied().chain([f64::INFINITY]);
        HistogramSnapshot {
            buckets: bounds
                .zip(&self.buckets)
                .map(|(b, c)| (b, c.load(Ordering::Relaxed)))
                .collect(),
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A node's counters; shared (`Arc`) by its proposer, log store and state machine.
#[derive(Debug, Default)]
pub struct RaftStats {
    /// Writes whose proposal failed (not leader, timed out, stopped).
    pub proposals_failed: AtomicU64,
    /// Times this node saw a new leader.
    pub leader_changes: AtomicU64,
    /// Synced writes of the log store (entries, vote, purge).
    pub fsync: DurationHistogram,
    /// Applies of committed entries to the state machine, one per batch.
    pub apply: DurationHistogram,
    /// Snapshots this node built.
    pub snapshots_built: AtomicU64,
    /// The size of the snapshot file this node built last, in bytes.
    pub last_snapshot_bytes: AtomicU64,
}

impl RaftStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_that_holds_them() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), DURATION_BOUNDS.len() + 1);
        assert_eq!(s.buckets[0], (0.0001, 2));
        assert_eq!(s.buckets[5], (0.0032, 1));
        assert_eq!(s.buckets[DURATION_BOUNDS.len()], (f64::INFINITY, 1));
        assert_eq!(s.buckets.iter().map(|b| b.1).sum::<u64>(), 4);
        assert!((s.sum_secs - 60.00315).abs() < 1e-9, "{}", s.sum_secs);
    }
}

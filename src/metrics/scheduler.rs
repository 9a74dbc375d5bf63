//! What the active scheduler counts as it goes: the latency from a task being ready to
//! its hand-out, the ready tasks still waiting for an executor, and runs as they end
//! (by phase and result) with their duration. Only the node whose scheduler is active
//! counts; sum over the nodes.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type EndLabels = [(&'static str, String); 2];
type ResultLabels = [(&'static str, String); 1];

/// The scheduler's families. Clones share them.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    handout: Histogram,
    waiting: Gauge,
    runs_ended: Family<EndLabels, Counter>,
    run_duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
}

impl Default for SchedulerMetrics {
    /// Families registered nowhere (a scheduler in a test).
    fn default() -> Self {
        SchedulerMetrics::register(&mut Registry::default())
    }
}

/// Run durations: 1 s to ~4.5 h, doubling.
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

impl SchedulerMetrics {
    pub(super) fn register(registry: &mut Registry) -> SchedulerMetrics {
        let m = SchedulerMetrics {
            // 1 ms to ~9 min, doubling: waits for a free executor can be long.
            handout: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            waiting: Gauge::default(),
            runs_ended: Family::default(),
            run_duration: Family::new_with_constructor(run_histogram),
        };
        registry.register(
            "cairn_scheduler_handout_latency_seconds",
            "Time from the scheduler's first pass that found a task ready to its hand-out to an executor",
            m.handout.clone(),
        );
        registry.register(
            "cairn_scheduler_tasks_waiting",
            "Ready tasks the active scheduler could not hand out yet (no executor can take them)",
            m.waiting.clone(),
        );
        registry.register(
            "cairn_runs_finished",
            "Runs that ended, by phase (finished, cancelled) and result",
            m.runs_ended.clone(),
        );
        registry.register(
            "cairn_run_duration_seconds",
            "Time from a run's start to its end, by result",
            m.run_duration.clone(),
        );
        m
    }

    /// A task was handed out `waited` after it was first found ready.
    pub fn handed_out(&self, waited: Duration) {
        self.handout.observe(waited.as_secs_f64());
    }

    /// `n` ready tasks wait for an executor now.
    pub fn set_waiting(&self, n: usize) {
        self.waiting.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A run ended in `phase` with `result`; `took` is its run time if it started.
    pub fn run_finished(&self, phase: &str, result: &str, took: Option<Duration>) {
        self.runs_ended
            .get_or_create(&[("phase", phase.to_string()), ("result", result.to_string())])
            .inc();
        if let Some(took) = took {
            self.run_duration
                .get_or_create(&[("result", result.to_string())])
                .observe(took.as_secs_f64());
        }
    }
}

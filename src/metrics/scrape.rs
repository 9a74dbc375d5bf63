//! The gauges read when `/metrics` is asked: [`Scrape::gather`] reads the Raft node
//! (openraft's metrics and `raft::stats`, in memory), the watch hub, and from the store
//! the runs by phase (counted on the listing index, not read), the executor tasks and
//! the executors' registrations; the pure [`Collector`] impl formats them. A store read
//! that fails (no quorum) leaves the store's families out and sets `cairn_metrics_store_up`
//! to 0: the node's own families are still served.

use std::time::Duration;

use cairn_client::run::{ExecutorTaskPhase, RunPhase};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use raft::stats::{HistogramSnapshot, RaftStats};

use crate::datamanager::{Datamanager, DmError};

/// How long a scrape waits for the store.
pub const STORE_DEADLINE: Duration = Duration::from_secs(5);

/// The Raft node's state when scraped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftState {
    pub term: u64,
    pub is_leader: bool,
    pub has_leader: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub voters: u64,
    pub learners: u64,
    pub leader_changes: u64,
    pub proposals_failed: u64,
    pub fsync: HistogramSnapshot,
    pub apply: HistogramSnapshot,
    pub snapshots_built: u64,
    pub last_snapshot_bytes: u64,
    pub revision: i64,
    pub watchers: u64,
}

/// One registered executor.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorLoad {
    pub id: String,
    pub active_tasks: u64,
    /// 0 = no limit.
    pub limit: u64,
}

/// What the store holds of runs, tasks and executors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreState {
    pub runs_by_phase: Vec<(RunPhase, u64)>,
    pub tasks_by_phase: Vec<(ExecutorTaskPhase, u64)>,
    pub executors: Vec<ExecutorLoad>,
}

/// Everything read at one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub raft: RaftState,
    /// `None`: the store could not be read in time.
    pub store: Option<StoreState>,
}

impl RaftState {
    pub fn of(node: &raft::Node) -> RaftState {
        let m = node.raft().metrics().borrow().clone();
        let stats = node.stats();
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count() as u64;
        let learners = membership.learner_ids().count() as u64;
        let mvcc = node.mvcc();
        RaftState {
            term: m.current_term,
            is_leader: m.current_leader == Some(m.id),
            has_leader: m.current_leader.is_some(),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            voters,
            learners,
            leader_changes: RaftStats::get(&stats.leader_changes),
            proposals_failed: RaftStats::get(&stats.proposals_failed),
            fsync: stats.fsync.snapshot(),
            apply: stats.apply.snapshot(),
            snapshots_built: RaftStats::get(&stats.snapshots_built),
            last_snapshot_bytes: RaftStats::get(&stats.last_snapshot_bytes),
            revision: mvcc.revision(),
            watchers: mvcc.hub().watcher_count() as u64,
        }
    }
}

impl StoreState {
    async fn read(dm: &Datamanager) -> Result<StoreState, DmError> {
        let mut runs_by_phase = Vec::new();
        for phase in RunPhase::ALL {
            runs_by_phase.push((phase, dm.count_runs(phase).await?));
        }
        let mut tasks_by_phase: Vec<(ExecutorTaskPhase, u64)> = Vec::new();
        for et in dm.all_executor_tasks().await? {
            let phase = et.value.status.phase;
            match tasks_by_phase.iter_mut().find(|(p, _)| *p == phase) {
                Some((_, n)) => *n += 1,
                None => tasks_by_phase.push((phase, 1)),
            }
        }
        for phase in [ExecutorTaskPhase::NotStarted, ExecutorTaskPhase::Running] {
            if !tasks_by_phase.iter().any(|(p, _)| *p == phase) {
                tasks_by_phase.push((phase, 0));
            }
        }
        let executors = dm
            .executors()
            .await?
            .into_iter()
            .map(|e| ExecutorLoad {
                id: e.id,
                active_tasks: u64::from(e.active_tasks),
                limit: u64::from(e.active_tasks_limit),
            })
            .collect();
        Ok(StoreState {
            runs_by_phase,
            tasks_by_phase,
            executors,
        })
    }
}

impl Scrape {
    /// Reads the node and, within [`STORE_DEADLINE`], the store.
    pub async fn gather(node: &raft::Node, dm: &Datamanager) -> Scrape {
        let raft = RaftState::of(node);
        let dm = dm.with_ctx(raft::Ctx::timeout(STORE_DEADLINE));
        let store = match tokio::time::timeout(STORE_DEADLINE, StoreState::read(&dm)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "metrics: reading the store failed");
                None
            }
            Err(_) => {
                tracing::debug!("metrics: reading the store timed out");
                None
            }
        };
        Scrape { raft, store }
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_secs, h.count, &h.buckets, None,
    )
}

/// One gauge family with one label.
fn labelled_gauges<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (v, n) in values {
        let labels = [(label, v)];
        let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        g.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.raft;
        let e = &mut enc;
        gauge(
            e,
            "cairn_raft_term",
            "The node's current Raft term",
            int(r.term),
        )?;
        gauge(
            e,
            "cairn_raft_is_leader",
            "1 if this node is the Raft leader",
            i64::from(r.is_leader),
        )?;
        gauge(
            e,
            "cairn_raft_has_leader",
            "1 if this node knows a Raft leader",
            i64::from(r.has_leader),
        )?;
        gauge(
            e,
            "cairn_raft_last_log_index",
            "Index of the node's last Raft log entry",
            int(r.last_log_index),
        )?;
        gauge(
            e,
            "cairn_raft_applied_index",
            "Index of the last entry applied to the node's state machine",
            int(r.applied_index),
        )?;
        gauge(
            e,
            "cairn_raft_snapshot_index",
            "Last log index of the node's current snapshot",
            int(r.snapshot_index),
        )?;
        labelled_gauges(
            e,
            "cairn_raft_members",
            "Members of the cluster as this node knows it, by role",
            "role",
            [("voter", r.voters), ("learner", r.learners)],
        )?;
        counter(
            e,
            "cairn_raft_leader_changes_seen",
            "Times this node saw a new Raft leader",
            r.leader_changes,
        )?;
        counter(
            e,
            "cairn_raft_proposals_failed",
            "Writes whose Raft proposal failed (not leader, timed out, stopped)",
            r.proposals_failed,
        )?;
        histogram(
            e,
            "cairn_raft_fsync_duration_seconds",
            "Synced writes of the Raft log and vote",
            &r.fsync,
        )?;
        histogram(
            e,
            "cairn_raft_apply_duration_seconds",
            "Applies of committed entries to the state machine, per batch",
            &r.apply,
        )?;
        counter(
            e,
            "cairn_raft_snapshots_built",
            "Snapshots this node built",
            r.snapshots_built,
        )?;
        gauge(
            e,
            "cairn_raft_snapshot_size_bytes",
            "Size of the snapshot this node built last (0: none since start)",
            int(r.last_snapshot_bytes),
        )?;
        gauge(
            e,
            "cairn_store_revision",
            "The store's current revision on this node",
            r.revision,
        )?;
        gauge(
            e,
            "cairn_store_watchers",
            "Open watches of this node's store",
            int(r.watchers),
        )?;
        gauge(
            e,
            "cairn_metrics_store_up",
            "1 if this scrape could read the store",
            i64::from(self.store.is_some()),
        )?;
        let Some(s) = &self.store else {
            return Ok(());
        };
        labelled_gauges(
            e,
            "cairn_runs",
            "Runs held in the store (not yet moved into segments), by phase",
            "phase",
            s.runs_by_phase.iter().map(|(p, n)| (p.as_str(), *n)),
        )?;
        labelled_gauges(
            e,
            "cairn_executor_tasks",
            "Tasks handed out to executors and not yet cleaned up, by phase",
            "phase",
            s.tasks_by_phase.iter().map(|(p, n)| (p.as_str(), *n)),
        )?;
        gauge(
            e,
            "cairn_executors",
            "Registered executors",
            s.executors.len() as i64,
        )?;
        labelled_gauges(
            e,
            "cairn_executor_active_tasks",
            "Tasks each executor reported running at its last heartbeat",
            "executor",
            s.executors.iter().map(|x| (x.id.as_str(), x.active_tasks)),
        )?;
        labelled_gauges(
            e,
            "cairn_executor_task_limit",
            "Each executor's limit of active tasks (0: none)",
            "executor",
            s.executors.iter().map(|x| (x.id.as_str(), x.limit)),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scrape as a node with one executor and a finished run would give.
    pub(crate) fn sample() -> Scrape {
        let h = raft::stats::DurationHistogram::default();
        h.observe(Duration::from_millis(2));
        Scrape {
            raft: RaftState {
                term: 3,
                is_leader: true,
                has_leader: true,
                last_log_index: 40,
                applied_index: 40,
                voters: 1,
                leader_changes: 1,
                fsync: h.snapshot(),
                apply: h.snapshot(),
                revision: 12,
                watchers: 4,
                ..RaftState::default()
            },
            store: Some(StoreState {
                runs_by_phase: vec![(RunPhase::Finished, 1), (RunPhase::Running, 0)],
                tasks_by_phase: vec![(ExecutorTaskPhase::Running, 1)],
                executors: vec![ExecutorLoad {
                    id: "e1".into(),
                    active_tasks: 1,
                    limit: 0,
                }],
            }),
        }
    }

    fn encoded(s: Scrape) -> String {
        crate::metrics::Metrics::new().encode(s)
    }

    #[test]
    fn a_scrape_formats_every_family() {
        let text = encoded(sample());
        for line in [
            "cairn_raft_term 3",
            "cairn_raft_is_leader 1",
            "cairn_raft_members{role=\"voter\"} 1",
            "cairn_raft_leader_changes_seen_total 1",
            "cairn_raft_fsync_duration_seconds_bucket{le=\"0.0032\"} 1",
            "cairn_raft_apply_duration_seconds_count 1",
            "cairn_runs{phase=\"finished\"} 1",
            "cairn_executor_tasks{phase=\"running\"} 1",
            "cairn_executors 1",
            "cairn_executor_active_tasks{executor=\"e1\"} 1",
            "cairn_metrics_store_up 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn without_the_store_only_the_nodes_own_families_are_served() {
        let text = encoded(Scrape {
            store: None,
            ..sample()
        });
        assert!(text.contains("cairn_metrics_store_up 0"), "{text}");
        assert!(text.contains("cairn_raft_term 3"), "{text}");
        assert!(!text.contains("cairn_runs{"), "{text}");
    }
}

//! When a run's data leaves the store: a finished task's logs go to object storage and its
//! executor task can be deleted ([`executor_task_done`], [`logs_to_archive`],
//! [`close_fetch_phases`]), and when the run itself is archived ([`is_archivable`]: the
//! ARCHITECTURE invariant "only when it is finished-like, every log and archive of its
//! tasks is in object storage, and none of its executor tasks remains").
//!
//! Pure: the scheduler's pass archives the logs, deletes the executor tasks and writes the
//! run; these functions only say what is due.

use std::time::Duration;

use cairn_client::LogStep;
use cairn_client::executor::ExecutorTask;
use cairn_client::run::{FetchPhase, Run, RunTask, Time};

/// Whether the executor task of run task `rt` is done with: both have finished, so the
/// task's logs can go to object storage and then the executor task can be deleted.
pub fn executor_task_done(et: &ExecutorTask, rt: &RunTask) -> bool {
    et.status.phase.is_finished() && rt.status.is_finished()
}

/// The logs of a finished task still to archive, setup first: every one of them until
/// its fetch phases are closed, none afterwards.
pub fn logs_to_archive(rt: &RunTask) -> Vec<LogStep> {
    if rt.all_fetched() {
        return Vec::new();
    }
    std::iter::once(LogStep::Setup)
        .chain((0..rt.steps.len()).map(LogStep::Step))
        .collect()
}

/// Closes every fetch phase of a task whose logs are archived: the setup log, each step's
/// log, and its workspace archives (uploaded straight to object storage by the executor).
pub fn close_fetch_phases(rt: &mut RunTask) {
    rt.setup_step.log_phase = FetchPhase::Finished;
    for s in &mut rt.steps {
        s.log_phase = FetchPhase::Finished;
    }
    for p in &mut rt.workspace_archives_phase {
        *p = FetchPhase::Finished;
    }
}

/// Whether `run` can be archived: it is finished-like, every log and archive of its tasks
/// is in object storage, and none of its executor tasks remains (`executor_tasks_left`).
pub fn is_archivable(run: &Run, executor_tasks_left: usize) -> bool {
    run.phase.is_finished()
        && executor_tasks_left == 0
        && run.tasks.values().all(|t| t.all_fetched())
}

/// When archived runs waiting in the store move into a segment in object storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// A segment is written as soon as this many runs wait (and holds at most this many).
    pub batch: usize,
    /// ... or once the oldest waiting run finished this long ago, however few wait.
    pub max_wait: Duration,
    /// How often the queue is looked at.
    pub every: Duration,
}

impl Default for SegmentPolicy {
    /// Batches of 1,000 runs, none waiting over 10 minutes, looked at every 5 s.
    fn default() -> SegmentPolicy {
        SegmentPolicy {
            batch: 1000,
            max_wait: Duration::from_secs(600),
            every: Duration::from_secs(5),
        }
    }
}

/// Whether the archived runs waiting in the store are due to move into a segment:
/// `waiting` of them (at most a batch is counted), the oldest of which ended at
/// `oldest_end`. A run without an end time (cancelled before it started) counts as old.
pub fn segment_due(
    waiting: usize,
    oldest_end: Option<Time>,
    now: Time,
    policy: &SegmentPolicy,
) -> bool {
    if waiting == 0 {
        return false;
    }
    if waiting >= policy.batch {
        return true;
    }
    let max_wait = chrono::Duration::from_std(policy.max_wait).unwrap_or(chrono::Duration::MAX);
    oldest_end.is_none_or(|end| now - end >= max_wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{at, config, running, task};
    use crate::runservice::new_run;
    use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunTaskStatus};

    fn finished_task(steps: usize, archives: usize) -> RunTask {
        RunTask {
            id: "a".into(),
            status: RunTaskStatus::Success,
            steps: vec![Default::default(); steps],
            workspace_archives: (0..archives).collect(),
            workspace_archives_phase: vec![FetchPhase::NotStarted; archives],
            ..RunTask::default()
        }
    }

    #[test]
    fn an_executor_task_is_done_with_when_it_and_its_run_task_have_finished() {
        let mut et = ExecutorTask::new("a", "run1", "x1", 1);
        let mut rt = finished_task(1, 0);
        rt.status = RunTaskStatus::Running;
        et.status.phase = ExecutorTaskPhase::Running;
        assert!(!executor_task_done(&et, &rt));
        et.status.phase = ExecutorTaskPhase::Success;
        assert!(
            !executor_task_done(&et, &rt),
            "the run has not mirrored the report yet"
        );
        rt.status = RunTaskStatus::Success;
        assert!(executor_task_done(&et, &rt));
        et.status.phase = ExecutorTaskPhase::Running;
        assert!(!executor_task_done(&et, &rt));
    }

    #[test]
    fn a_finished_task_archives_its_setup_and_step_logs_once() {
        let mut rt = finished_task(2, 1);
        assert_eq!(
            logs_to_archive(&rt),
            vec![LogStep::Setup, LogStep::Step(0), LogStep::Step(1)]
        );
        close_fetch_phases(&mut rt);
        assert!(rt.all_fetched());
        assert_eq!(rt.setup_step.log_phase, FetchPhase::Finished);
        assert!(rt.steps.iter().all(|s| s.log_phase == FetchPhase::Finished));
        assert_eq!(rt.workspace_archives_phase, vec![FetchPhase::Finished]);
        assert_eq!(logs_to_archive(&rt), Vec::<LogStep>::new());
    }

    #[test]
    fn a_run_is_archivable_only_finished_fetched_and_without_executor_tasks() {
        let cfg = config(vec![task("a", &[])]);
        let mut run = running(&cfg);
        assert!(!is_archivable(&run, 0), "running");

        run.phase = RunPhase::Finished;
        run.end_time = Some(at(9));
        assert!(!is_archivable(&run, 0), "logs still in the store");

        for t in run.tasks.values_mut() {
            t.status = RunTaskStatus::Success;
            close_fetch_phases(t);
        }
        assert!(!is_archivable(&run, 1), "an executor task remains");
        assert!(is_archivable(&run, 0));

        let mut cancelled = new_run(&cfg, 1, at(0));
        cancelled.phase = RunPhase::Cancelled;
        for t in cancelled.tasks.values_mut() {
            close_fetch_phases(t);
        }
        assert!(is_archivable(&cancelled, 0));
    }

    #[test]
    fn a_segment_is_due_for_a_full_batch_or_an_old_enough_run() {
        let policy = SegmentPolicy {
            batch: 3,
            max_wait: std::time::Duration::from_secs(60),
            every: std::time::Duration::from_secs(1),
        };
        let now = at(1000);
        assert!(!segment_due(0, None, now, &policy), "nothing waits");
        assert!(
            !segment_due(2, Some(at(990)), now, &policy),
            "few and young"
        );
        assert!(segment_due(3, Some(at(999)), now, &policy), "a full batch");
        assert!(
            segment_due(1, Some(at(940)), now, &policy),
            "waited max_wait"
        );
        assert!(!segment_due(1, Some(at(941)), now, &policy), "just under");
        assert!(segment_due(1, None, now, &policy), "never started");
    }

    #[test]
    fn a_setuperror_run_is_archivable_at_once() {
        let mut cfg = config(vec![task("a", &[])]);
        cfg.setup_errors = vec!["cycle".into()];
        assert!(is_archivable(&new_run(&cfg, 1, at(0)), 0));
    }
}

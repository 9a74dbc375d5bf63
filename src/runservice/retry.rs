//! Lost tasks run again: an executor task that failed because it was lost with its
//! executor ([`ExecutorTaskStatus::lost`]: the executor is gone, restarted, stopped or out
//! of contact; its steps were killed or died with it) does not fail its run task while the
//! task has retries left. The run task goes back to not started, remembering the lost
//! attempt ([`RunTask::lost_attempts`]), and the scheduler hands it out again like any
//! ready task. Agola has no such thing; Buildkite's `automatic: exit_status: -1` and
//! GitLab's `retry: when: runner_system_failure` do the same.
//!
//! How many times: the task's own `retry_lost_tasks` (its [`RunConfigTask::retry_lost`]),
//! else the server's `--retry-lost-tasks`. Never for a stopping run, nor for a task whose
//! steps failed (only `lost` failures).
//!
//! Each executor task carries the attempt it was handed out as
//! ([`ExecutorTaskSpec::attempt`]), so giving up an attempt is idempotent: a scheduler
//! that recorded the lost attempt and died before deleting its executor task only deletes
//! it on the next pass.
//!
//! [`ExecutorTaskStatus::lost`]: cairn_client::executor::ExecutorTaskStatus::lost
//! [`ExecutorTaskSpec::attempt`]: cairn_client::executor::ExecutorTaskSpec::attempt
//! [`RunTask::lost_attempts`]: cairn_client::run::RunTask::lost_attempts
//! [`RunConfigTask::retry_lost`]: cairn_client::runconfig::RunConfigTask::retry_lost

use cairn_client::executor::ExecutorTask;
use cairn_client::run::{ExecutorTaskPhase, LostAttempt, Run, RunPhase, RunTaskStatus, Time};
use cairn_client::runconfig::{MAX_RETRY_LOST, RunConfig};

use super::create::new_run_task;

/// What to do with one executor task of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostTask {
    /// Not a lost attempt that can run again: apply its status as usual.
    Keep,
    /// The attempt was given up now and the run task queued again: delete the executor
    /// task; the task is handed out again.
    Retried,
    /// An earlier pass gave this attempt up (and died before deleting its executor task):
    /// only delete the executor task.
    AlreadyRetried,
}

/// Decides on `et`, an executor task of `run` (of `config`), given the server's
/// `default_retries`; when it retries, resets the run task in `run` (not started, steps
/// and archives as new, the lost attempt appended) and returns [`LostTask::Retried`].
pub fn retry_lost_task(
    run: &mut Run,
    config: &RunConfig,
    et: &ExecutorTask,
    default_retries: u32,
    now: Time,
) -> LostTask {
    if et.spec.run_id != run.id || et.status.phase != ExecutorTaskPhase::Failed || !et.status.lost {
        return LostTask::Keep;
    }
    let (Some(task), Some(rt)) = (config.tasks.get(&et.id), run.tasks.get(&et.id)) else {
        return LostTask::Keep;
    };
    let attempt = et.spec.attempt as usize;
    if rt.lost_attempts.len() > attempt {
        return LostTask::AlreadyRetried;
    }
    // Capped here too: a run config may come from an import, not through the parser.
    let retries = task
        .retry_lost
        .unwrap_or(default_retries)
        .min(MAX_RETRY_LOST) as usize;
    let can_rerun = run.phase == RunPhase::Running
        && !run.stop
        && matches!(
            rt.status,
            RunTaskStatus::NotStarted | RunTaskStatus::Running
        )
        && rt.lost_attempts.len() == attempt
        && attempt < retries;
    if !can_rerun {
        return LostTask::Keep;
    }
    let mut fresh = new_run_task(task);
    fresh.annotations = rt.annotations.clone();
    fresh.approved = rt.approved;
    fresh.lost_attempts = rt.lost_attempts.clone();
    fresh.lost_attempts.push(LostAttempt {
        executor_id: et.spec.executor_id.clone(),
        reason: et
            .status
            .fail_error
            .clone()
            .unwrap_or_else(|| "lost with its executor".to_string()),
        time: now,
    });
    run.tasks.insert(et.id.clone(), fresh);
    LostTask::Retried
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{at, config, et, running, set_status, task};
    use crate::runservice::{advance, apply_executor_status, fail_lost_task};

    fn lost(task_id: &str, executor: &str, attempt: u32) -> ExecutorTask {
        let mut e = et(task_id, executor, ExecutorTaskPhase::Running);
        e.spec.attempt = attempt;
        assert!(fail_lost_task(
            &mut e,
            &format!("executor {executor} is gone"),
            at(5)
        ));
        e
    }

    #[test]
    fn a_lost_attempt_queues_the_task_again_and_is_remembered() {
        let cfg = config(vec![task("a", &[]), task("b", &["a"])]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", RunTaskStatus::Running);
        let e = lost("a", "e1", 0);
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &e, 2, at(9)),
            LostTask::Retried
        );
        let a = &run.tasks["a"];
        assert_eq!(a.status, RunTaskStatus::NotStarted);
        assert_eq!(a.fail_error, None);
        assert_eq!(a.lost_attempts.len(), 1);
        assert_eq!(a.lost_attempts[0].executor_id, "e1");
        assert_eq!(a.lost_attempts[0].reason, "executor e1 is gone");
        assert_eq!(a.lost_attempts[0].time, at(9));
        // Without its executor task, the task is handed out again and the run goes on.
        let adv = advance(&run, &cfg, &Default::default(), at(10));
        assert_eq!(adv.to_run, ["a"]);
        assert_eq!(adv.run.result, cairn_client::run::RunResult::Unknown);
    }

    #[test]
    fn the_same_attempt_is_given_up_once_even_if_seen_again() {
        let cfg = config(vec![task("a", &[])]);
        let mut run = running(&cfg);
        let e = lost("a", "e1", 0);
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &e, 2, at(9)),
            LostTask::Retried
        );
        let once = run.clone();
        // The scheduler died before deleting the executor task: the next pass sees it.
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &e, 2, at(11)),
            LostTask::AlreadyRetried
        );
        assert_eq!(run, once, "nothing recorded twice");
    }

    #[test]
    fn retries_run_out_and_then_the_lost_attempt_fails_the_task() {
        let cfg = config(vec![task("a", &[])]);
        let mut run = running(&cfg);
        for attempt in 0..2 {
            let e = lost("a", "e1", attempt);
            assert_eq!(
                retry_lost_task(&mut run, &cfg, &e, 2, at(9)),
                LostTask::Retried
            );
        }
        let third = lost("a", "e2", 2);
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &third, 2, at(9)),
            LostTask::Keep
        );
        apply_executor_status(&mut run, &third).expect("applied");
        let a = &run.tasks["a"];
        assert_eq!(a.status, RunTaskStatus::Failed);
        assert_eq!(a.fail_error.as_deref(), Some("executor e2 is gone"));
        assert_eq!(a.lost_attempts.len(), 2);
    }

    #[test]
    fn the_task_setting_overrides_the_server_default() {
        let mut never = task("a", &[]);
        never.retry_lost = Some(0);
        let cfg = config(vec![never]);
        let mut run = running(&cfg);
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &lost("a", "e1", 0), 5, at(9)),
            LostTask::Keep
        );
        let mut once = task("a", &[]);
        once.retry_lost = Some(1);
        let cfg = config(vec![once]);
        let mut run = running(&cfg);
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &lost("a", "e1", 0), 0, at(9)),
            LostTask::Retried
        );
    }

    /// A run config that did not come through the parser (an import) asking for billions
    /// of retries gets [`MAX_RETRY_LOST`].
    #[test]
    fn retries_are_capped_whatever_the_run_config_asks() {
        let mut greedy = task("a", &[]);
        greedy.retry_lost = Some(u32::MAX);
        let cfg = config(vec![greedy]);
        let mut run = running(&cfg);
        for attempt in 0..MAX_RETRY_LOST {
            let e = lost("a", "e1", attempt);
            assert_eq!(
                retry_lost_task(&mut run, &cfg, &e, 2, at(9)),
                LostTask::Retried
            );
        }
        let last = lost("a", "e1", MAX_RETRY_LOST);
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &last, 2, at(9)),
            LostTask::Keep
        );
    }

    #[test]
    fn step_failures_stopping_runs_and_old_attempts_are_not_retried() {
        let cfg = config(vec![task("a", &[])]);
        let mut run = running(&cfg);
        let mut failed = et("a", "e1", ExecutorTaskPhase::Failed);
        failed.status.fail_error = Some("step 1 exited with 2".into());
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &failed, 2, at(9)),
            LostTask::Keep
        );

        let mut stopping = running(&cfg);
        stopping.stop = true;
        assert_eq!(
            retry_lost_task(&mut stopping, &cfg, &lost("a", "e1", 0), 2, at(9)),
            LostTask::Keep
        );

        // A report for attempt 1 while the run task only knows of attempt 0 being handed
        // out (cannot happen in order; never counted twice either way).
        assert_eq!(
            retry_lost_task(&mut run, &cfg, &lost("a", "e1", 1), 2, at(9)),
            LostTask::Keep
        );
    }
}

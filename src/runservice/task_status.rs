//! Executor status reports: whether one is accepted over the stored executor task
//! ([`accept_report`]: only from its executor, and a finished status is final), applied to
//! a run ([`apply_executor_status`]), and the failing of executor tasks whose executor is
//! gone ([`fail_lost_task`]).
//!
//! A report may move a run task only along the executor task's state machine (Agola's
//! table, from `updateRunTaskStatus` in `internal/services/runservice/scheduler.go`,
//! widened so that a finished report also applies over a not-started task: the store
//! keeps only an executor task's latest status, so the scheduler may never see the
//! `running` in between):
//!
//! | reported phase | allowed current run-task status |
//! |---|---|
//! | notstarted | notstarted |
//! | cancelled | cancelled, notstarted |
//! | running | running, notstarted |
//! | stopped | stopped, running, notstarted |
//! | success | success, running, notstarted |
//! | failed | failed, notstarted, running |
//!
//! Anything else is an inconsistent (late or replayed) report and is refused with a typed
//! error, so the caller can log it and move on.

use cairn_client::executor::{ExecutorTask, ExecutorTaskStatus, StepStatus};
use cairn_client::run::{ExecutorTaskPhase, Run, RunTaskStatus, RunTaskStep, Time};

use super::error::RunServiceError;

/// Copies the status of `et` into its run task; whether anything changed.
pub fn apply_executor_status(run: &mut Run, et: &ExecutorTask) -> Result<bool, RunServiceError> {
    if et.spec.run_id != run.id {
        return Err(RunServiceError::WrongRun {
            task_id: et.id.clone(),
            run_id: run.id.clone(),
            reported: et.spec.run_id.clone(),
        });
    }
    let run_id = run.id.clone();
    let task = run
        .tasks
        .get_mut(&et.id)
        .ok_or_else(|| RunServiceError::TaskNotFound {
            run_id,
            task_id: et.id.clone(),
        })?;
    let reported = et.status.phase;
    if !allowed(reported, task.status) {
        return Err(RunServiceError::InconsistentStatus {
            task_id: et.id.clone(),
            current: task.status,
            reported,
        });
    }
    if et.status.steps.len() != task.steps.len() {
        return Err(RunServiceError::StepCountMismatch {
            task_id: et.id.clone(),
            expected: task.steps.len(),
            reported: et.status.steps.len(),
        });
    }
    let before = task.clone();
    task.status = status_of(reported);
    task.fail_error.clone_from(&et.status.fail_error);
    task.timedout = et.status.timedout;
    task.start_time = et.status.start_time;
    task.end_time = et.status.end_time;
    copy_step(&mut task.setup_step, &et.status.setup_step);
    for (step, status) in task.steps.iter_mut().zip(&et.status.steps) {
        copy_step(step, status);
    }
    Ok(*task != before)
}

/// Executor `reporter`'s status report for the stored executor task `current`: the task
/// to write, or `None` when the report repeats the stored status. Only the task's own
/// executor may report ([`RunServiceError::NotAssigned`]), and a finished status is final:
/// a late or replayed report cannot rewrite it ([`RunServiceError::AlreadyFinished`]).
pub fn accept_report(
    current: &ExecutorTask,
    reporter: &str,
    report: &ExecutorTaskStatus,
) -> Result<Option<ExecutorTask>, RunServiceError> {
    if current.spec.executor_id != reporter {
        return Err(RunServiceError::NotAssigned {
            task_id: current.id.clone(),
        });
    }
    if current.status == *report {
        return Ok(None);
    }
    if current.status.phase.is_finished() {
        return Err(RunServiceError::AlreadyFinished {
            task_id: current.id.clone(),
            phase: current.status.phase,
            reported: report.phase,
        });
    }
    let mut next = current.clone();
    next.status = report.clone();
    Ok(Some(next))
}

/// Marks an unfinished executor task failed because its executor is gone: phase failed with
/// `reason`, lost (so it may run again, see [`super::retry`]), end time `now`, and every
/// running step (setup included) failed with end time `now`. Returns false, changing nothing, when the task had already finished.
pub fn fail_lost_task(et: &mut ExecutorTask, reason: &str, now: Time) -> bool {
    if et.status.phase.is_finished() {
        return false;
    }
    et.status.mark_lost(reason, now);
    true
}

/// Agola's table, widened in one place: a finished report (stopped, success) is also
/// accepted over a not-started task, because the store keeps only an executor task's
/// latest status and the scheduler may never observe the `running` in between (a fast
/// task, or reports coalesced while the scheduler was busy or failing over).
fn allowed(reported: ExecutorTaskPhase, current: RunTaskStatus) -> bool {
    use ExecutorTaskPhase as P;
    use RunTaskStatus as S;
    match reported {
        P::NotStarted => matches!(current, S::NotStarted),
        P::Cancelled => matches!(current, S::Cancelled | S::NotStarted),
        P::Running => matches!(current, S::Running | S::NotStarted),
        P::Stopped => matches!(current, S::Stopped | S::Running | S::NotStarted),
        P::Success => matches!(current, S::Success | S::Running | S::NotStarted),
        P::Failed => matches!(current, S::Failed | S::NotStarted | S::Running),
    }
}

fn status_of(phase: ExecutorTaskPhase) -> RunTaskStatus {
    match phase {
        ExecutorTaskPhase::NotStarted => RunTaskStatus::NotStarted,
        ExecutorTaskPhase::Cancelled => RunTaskStatus::Cancelled,
        ExecutorTaskPhase::Running => RunTaskStatus::Running,
        ExecutorTaskPhase::Stopped => RunTaskStatus::Stopped,
        ExecutorTaskPhase::Success => RunTaskStatus::Success,
        ExecutorTaskPhase::Failed => RunTaskStatus::Failed,
    }
}

/// The executor's view of a step; the log fetch phase is the run's own.
fn copy_step(step: &mut RunTaskStep, status: &StepStatus) {
    step.phase = status.phase;
    step.exit_status = status.exit_status;
    step.start_time = status.start_time;
    step.end_time = status.end_time;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{at, config, running, task};
    use cairn_client::run::FetchPhase;
    use cairn_client::runconfig::{RunStep, Step};

    const PHASES: [ExecutorTaskPhase; 6] = [
        ExecutorTaskPhase::NotStarted,
        ExecutorTaskPhase::Cancelled,
        ExecutorTaskPhase::Running,
        ExecutorTaskPhase::Stopped,
        ExecutorTaskPhase::Success,
        ExecutorTaskPhase::Failed,
    ];
    const STATUSES: [RunTaskStatus; 7] = [
        RunTaskStatus::NotStarted,
        RunTaskStatus::Skipped,
        RunTaskStatus::Cancelled,
        RunTaskStatus::Running,
        RunTaskStatus::Stopped,
        RunTaskStatus::Success,
        RunTaskStatus::Failed,
    ];

    fn two_step_run() -> Run {
        let mut t = task("a", &[]);
        t.steps = vec![
            Step::Run(RunStep {
                command: "make".into(),
                ..RunStep::default()
            });
            2
        ];
        running(&config(vec![t]))
    }

    fn report(phase: ExecutorTaskPhase) -> ExecutorTask {
        let mut et = ExecutorTask::new("a", "run1", "x1", 2);
        et.status.phase = phase;
        et
    }

    #[test]
    fn every_reported_phase_is_accepted_only_from_the_statuses_of_the_table() {
        use ExecutorTaskPhase as P;
        use RunTaskStatus as S;
        let accepted: &[(P, &[S])] = &[
            (P::NotStarted, &[S::NotStarted]),
            (P::Cancelled, &[S::Cancelled, S::NotStarted]),
            (P::Running, &[S::Running, S::NotStarted]),
            (P::Stopped, &[S::Stopped, S::Running, S::NotStarted]),
            (P::Success, &[S::Success, S::Running, S::NotStarted]),
            (P::Failed, &[S::Failed, S::NotStarted, S::Running]),
        ];
        for (phase, from) in accepted {
            for current in STATUSES {
                let mut run = two_step_run();
                run.tasks.get_mut("a").expect("a").status = current;
                let result = apply_executor_status(&mut run, &report(*phase));
                if from.contains(&current) {
                    assert!(result.is_ok(), "{phase:?} from {current:?}: {result:?}");
                    assert_eq!(run.tasks["a"].status, status_of(*phase));
                } else {
                    assert_eq!(
                        result,
                        Err(RunServiceError::InconsistentStatus {
                            task_id: "a".into(),
                            current,
                            reported: *phase,
                        }),
                        "{phase:?} from {current:?}"
                    );
                    assert_eq!(run.tasks["a"].status, current, "unchanged");
                }
            }
        }
        assert_eq!(PHASES.len(), accepted.len(), "every phase is in the table");
    }

    #[test]
    fn a_report_copies_times_steps_and_errors_but_keeps_log_phases() {
        let mut run = two_step_run();
        run.tasks.get_mut("a").expect("a").status = RunTaskStatus::Running;
        run.tasks.get_mut("a").expect("a").steps[0].log_phase = FetchPhase::Finished;
        let mut et = report(ExecutorTaskPhase::Failed);
        et.status.fail_error = Some("exit 2".into());
        et.status.timedout = true;
        et.status.start_time = Some(at(10));
        et.status.end_time = Some(at(20));
        et.status.setup_step = StepStatus {
            phase: ExecutorTaskPhase::Success,
            exit_status: None,
            start_time: Some(at(10)),
            end_time: Some(at(11)),
        };
        et.status.steps[0] = StepStatus {
            phase: ExecutorTaskPhase::Failed,
            exit_status: Some(2),
            start_time: Some(at(11)),
            end_time: Some(at(20)),
        };

        assert_eq!(apply_executor_status(&mut run, &et), Ok(true));
        let a = &run.tasks["a"];
        assert_eq!(a.status, RunTaskStatus::Failed);
        assert_eq!(a.fail_error.as_deref(), Some("exit 2"));
        assert!(a.timedout);
        assert_eq!((a.start_time, a.end_time), (Some(at(10)), Some(at(20))));
        assert_eq!(a.setup_step.phase, ExecutorTaskPhase::Success);
        assert_eq!(a.setup_step.end_time, Some(at(11)));
        assert_eq!(a.steps[0].phase, ExecutorTaskPhase::Failed);
        assert_eq!(a.steps[0].exit_status, Some(2));
        assert_eq!(a.steps[0].log_phase, FetchPhase::Finished);
        assert_eq!(a.steps[1].phase, ExecutorTaskPhase::NotStarted);

        assert_eq!(
            apply_executor_status(&mut run, &et),
            Ok(false),
            "the same report twice changes nothing"
        );
    }

    #[test]
    fn reports_for_other_runs_unknown_tasks_or_other_step_counts_are_refused() {
        let mut run = two_step_run();
        let mut other_run = report(ExecutorTaskPhase::Running);
        other_run.spec.run_id = "run2".into();
        assert!(matches!(
            apply_executor_status(&mut run, &other_run),
            Err(RunServiceError::WrongRun { .. })
        ));

        let mut unknown = report(ExecutorTaskPhase::Running);
        unknown.id = "zz".into();
        assert!(matches!(
            apply_executor_status(&mut run, &unknown),
            Err(RunServiceError::TaskNotFound { .. })
        ));

        let mut short = report(ExecutorTaskPhase::Running);
        short.status.steps.pop();
        assert_eq!(
            apply_executor_status(&mut run, &short),
            Err(RunServiceError::StepCountMismatch {
                task_id: "a".into(),
                expected: 2,
                reported: 1,
            })
        );
        assert_eq!(run, two_step_run(), "nothing changed");
    }

    #[test]
    fn a_lost_task_fails_with_end_times_on_itself_and_its_running_steps() {
        let mut et = ExecutorTask::new("a", "run1", "x1", 3);
        et.status.phase = ExecutorTaskPhase::Running;
        et.status.start_time = Some(at(1));
        et.status.setup_step.phase = ExecutorTaskPhase::Success;
        et.status.setup_step.end_time = Some(at(2));
        et.status.steps[0].phase = ExecutorTaskPhase::Success;
        et.status.steps[0].end_time = Some(at(3));
        et.status.steps[1].phase = ExecutorTaskPhase::Running;
        et.status.steps[1].start_time = Some(at(3));

        assert!(fail_lost_task(&mut et, "executor x1 is gone", at(9)));

        assert_eq!(et.status.phase, ExecutorTaskPhase::Failed);
        assert_eq!(et.status.fail_error.as_deref(), Some("executor x1 is gone"));
        assert_eq!(et.status.end_time, Some(at(9)));
        assert_eq!(
            et.status.setup_step.end_time,
            Some(at(2)),
            "setup had ended"
        );
        assert_eq!(et.status.steps[0].phase, ExecutorTaskPhase::Success);
        assert_eq!(et.status.steps[0].end_time, Some(at(3)));
        assert_eq!(et.status.steps[1].phase, ExecutorTaskPhase::Failed);
        assert_eq!(et.status.steps[1].end_time, Some(at(9)));
        assert_eq!(et.status.steps[2].phase, ExecutorTaskPhase::NotStarted);
        assert_eq!(et.status.steps[2].end_time, None);
    }

    #[test]
    fn a_task_lost_during_setup_fails_its_setup_step() {
        let mut et = ExecutorTask::new("a", "run1", "x1", 1);
        et.status.phase = ExecutorTaskPhase::Running;
        et.status.setup_step.phase = ExecutorTaskPhase::Running;
        assert!(fail_lost_task(&mut et, "executor deleted", at(5)));
        assert_eq!(et.status.setup_step.phase, ExecutorTaskPhase::Failed);
        assert_eq!(et.status.setup_step.end_time, Some(at(5)));
        assert_eq!(et.status.steps[0].phase, ExecutorTaskPhase::NotStarted);
    }

    #[test]
    fn a_finished_task_is_not_failed_when_its_executor_is_gone() {
        for phase in PHASES.into_iter().filter(|p| p.is_finished()) {
            let mut et = ExecutorTask::new("a", "run1", "x1", 1);
            et.status.phase = phase;
            let before = et.clone();
            assert!(!fail_lost_task(&mut et, "gone", at(5)), "{phase:?}");
            assert_eq!(et, before);
        }
        let mut never_started = ExecutorTask::new("a", "run1", "x1", 1);
        assert!(fail_lost_task(&mut never_started, "gone", at(5)));
        assert_eq!(never_started.status.phase, ExecutorTaskPhase::Failed);
    }

    #[test]
    fn a_report_from_another_executor_is_refused() {
        let stored = ExecutorTask::new("a", "run1", "x1", 1);
        let mut report = stored.status.clone();
        report.phase = ExecutorTaskPhase::Running;
        let err = accept_report(&stored, "x2", &report).expect_err("not its task");
        assert_eq!(
            err,
            RunServiceError::NotAssigned {
                task_id: "a".into()
            }
        );
        assert_eq!(err.to_string(), "task a is assigned to another executor");
        assert_eq!(err.code(), cairn_client::ErrorCode::Forbidden);
    }

    #[test]
    fn a_report_moves_an_unfinished_task_and_a_repeat_writes_nothing() {
        let stored = ExecutorTask::new("a", "run1", "x1", 1);
        assert_eq!(accept_report(&stored, "x1", &stored.status), Ok(None));
        for phase in PHASES {
            let mut report = stored.status.clone();
            report.phase = phase;
            report.start_time = Some(at(3));
            let next = accept_report(&stored, "x1", &report)
                .expect("unfinished task")
                .expect("a changed status is written");
            assert_eq!(next.status, report);
            assert_eq!(next.spec, stored.spec);
        }
    }

    #[test]
    fn a_finished_executor_task_status_is_final() {
        for finished in PHASES.into_iter().filter(|p| p.is_finished()) {
            let mut stored = ExecutorTask::new("a", "run1", "x1", 1);
            stored.status.phase = finished;
            assert_eq!(
                accept_report(&stored, "x1", &stored.status),
                Ok(None),
                "a replay of the final status is harmless"
            );
            for reported in PHASES {
                let mut report = stored.status.clone();
                report.phase = reported;
                report.end_time = Some(at(9));
                let err = accept_report(&stored, "x1", &report).expect_err("final");
                assert_eq!(
                    err,
                    RunServiceError::AlreadyFinished {
                        task_id: "a".into(),
                        phase: finished,
                        reported,
                    }
                );
                assert_eq!(err.code(), cairn_client::ErrorCode::Conflict);
                assert_eq!(
                    err.to_string(),
                    format!(
                        "task a already finished ({}); a {} report is refused",
                        finished.as_str(),
                        reported.as_str()
                    )
                );
            }
        }
    }
}

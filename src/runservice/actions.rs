//! User and scheduler actions on a run: [`start`], [`cancel`], [`stop`], [`approve`] and
//! [`set_task_annotations`]. Each checks that the run is in a state that allows it and
//! changes only what the action names; [`advance`](super::advance::advance) draws the
//! consequences.
//!
//! Like stop and approve, cancel only sets a flag (`run.cancel`): the scheduler applies it
//! in its pass ([`advance`](super::advance::advance)), so only the scheduler writes a
//! run's phase and result, through its fence.
//!
//! Decision: a cancelled queued run gets the result `stopped` (Agola leaves it
//! `unknown`). The run ended by a user's decision before it ran, exactly what `stopped`
//! means for a running run; it also lets the state machine cancel the run's tasks and close
//! their fetch phases, and lets listings by result find cancelled runs.

use std::collections::BTreeMap;

use cairn_client::run::{Run, RunPhase, RunResult, RunTask, Time};

use super::error::RunServiceError;

/// The task annotation holding a JSON list of who approved the task.
pub const APPROVERS_ANNOTATION: &str = "approvers";

/// queued → running, with start time `now`; a run asked to cancel never starts.
pub fn start(run: &mut Run, now: Time) -> Result<(), RunServiceError> {
    expect_phase(run, &[RunPhase::Queued])?;
    if run.cancel {
        return Err(RunServiceError::CancelRequested {
            run_id: run.id.clone(),
        });
    }
    run.phase = RunPhase::Running;
    run.start_time = Some(now);
    Ok(())
}

/// Asks a queued run to be cancelled (idempotent). The scheduler's next
/// [`advance`](super::advance::advance) makes it `cancelled` with result `stopped` (see
/// the module doc); it never starts meanwhile.
pub fn cancel(run: &mut Run) -> Result<(), RunServiceError> {
    expect_phase(run, &[RunPhase::Queued])?;
    run.cancel = true;
    Ok(())
}

/// Applies a cancel request: queued → cancelled, with end time `now` and result
/// `stopped`. Only for the scheduler's pass; whether anything changed.
pub(super) fn apply_cancel(run: &mut Run, now: Time) -> bool {
    if !run.cancel || run.phase != RunPhase::Queued {
        return false;
    }
    run.phase = RunPhase::Cancelled;
    run.result = RunResult::Stopped;
    run.end_time = Some(now);
    true
}

/// Asks a running run to stop (idempotent). The result becomes `stopped` at the next
/// [`advance`](super::advance::advance) unless it is already set, and the run finishes
/// once its executor tasks have ended.
pub fn stop(run: &mut Run) -> Result<(), RunServiceError> {
    expect_phase(run, &[RunPhase::Running])?;
    run.stop = true;
    Ok(())
}

/// Approves a task waiting for approval, recording `approver` (when known) in the task's
/// [`APPROVERS_ANNOTATION`].
pub fn approve(
    run: &mut Run,
    task_id: &str,
    approver: Option<&str>,
) -> Result<(), RunServiceError> {
    let task = task_mut(run, task_id)?;
    if task.approved {
        return Err(RunServiceError::AlreadyApproved {
            task_id: task_id.to_string(),
        });
    }
    if !task.waiting_approval {
        return Err(RunServiceError::NotWaitingApproval {
            task_id: task_id.to_string(),
        });
    }
    if let Some(approver) = approver {
        let mut approvers: Vec<String> = match task.annotations.get(APPROVERS_ANNOTATION) {
            Some(json) => {
                serde_json::from_str(json).map_err(|e| RunServiceError::BadApproversAnnotation {
                    task_id: task_id.to_string(),
                    reason: e.to_string(),
                })?
            }
            None => Vec::new(),
        };
        approvers.push(approver.to_string());
        let json = serde_json::to_string(&approvers).expect("a list of strings serializes");
        task.annotations
            .insert(APPROVERS_ANNOTATION.to_string(), json);
    }
    task.waiting_approval = false;
    task.approved = true;
    Ok(())
}

/// Replaces a task's annotations.
pub fn set_task_annotations(
    run: &mut Run,
    task_id: &str,
    annotations: BTreeMap<String, String>,
) -> Result<(), RunServiceError> {
    task_mut(run, task_id)?.annotations = annotations;
    Ok(())
}

fn expect_phase(run: &Run, expected: &'static [RunPhase]) -> Result<(), RunServiceError> {
    if expected.contains(&run.phase) {
        Ok(())
    } else {
        Err(RunServiceError::InvalidPhase {
            run_id: run.id.clone(),
            expected,
            found: run.phase,
        })
    }
}

fn task_mut<'r>(run: &'r mut Run, task_id: &str) -> Result<&'r mut RunTask, RunServiceError> {
    let run_id = run.id.clone();
    run.tasks
        .get_mut(task_id)
        .ok_or_else(|| RunServiceError::TaskNotFound {
            run_id,
            task_id: task_id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::create::new_run;
    use crate::runservice::fixture::{at, config, running, task};

    fn waiting_run() -> Run {
        let mut deploy = task("deploy", &[]);
        deploy.needs_approval = true;
        let mut run = running(&config(vec![deploy]));
        run.tasks
            .get_mut("deploy")
            .expect("deploy")
            .waiting_approval = true;
        run
    }

    #[test]
    fn start_moves_a_queued_run_to_running_with_a_start_time() {
        let mut run = new_run(&config(vec![task("a", &[])]), 1, at(0));
        start(&mut run, at(3)).expect("queued");
        assert_eq!(run.phase, RunPhase::Running);
        assert_eq!(run.start_time, Some(at(3)));

        let again = start(&mut run, at(4));
        assert_eq!(
            again,
            Err(RunServiceError::InvalidPhase {
                run_id: run.id.clone(),
                expected: &[RunPhase::Queued],
                found: RunPhase::Running,
            })
        );
    }

    #[test]
    fn cancel_only_flags_a_queued_run_which_then_never_starts() {
        let mut run = new_run(&config(vec![task("a", &[])]), 1, at(0));
        cancel(&mut run).expect("queued");
        assert!(run.cancel);
        assert_eq!(run.phase, RunPhase::Queued, "the scheduler applies it");
        assert_eq!(run.result, RunResult::Unknown);
        assert_eq!(run.end_time, None);
        cancel(&mut run).expect("cancelling twice is harmless");
        assert_eq!(
            start(&mut run, at(3)),
            Err(RunServiceError::CancelRequested {
                run_id: run.id.clone()
            })
        );
        assert_eq!(run.phase, RunPhase::Queued);

        assert!(apply_cancel(&mut run, at(4)));
        assert_eq!(run.phase, RunPhase::Cancelled);
        assert_eq!(run.result, RunResult::Stopped);
        assert_eq!(run.end_time, Some(at(4)));
        assert!(!apply_cancel(&mut run, at(5)), "applied once");
        assert_eq!(run.end_time, Some(at(4)));

        let mut started = running(&config(vec![task("a", &[])]));
        let refused = cancel(&mut started);
        assert!(matches!(
            refused,
            Err(RunServiceError::InvalidPhase {
                found: RunPhase::Running,
                ..
            })
        ));
        assert_eq!(started.phase, RunPhase::Running);
        assert!(!started.cancel);
    }

    #[test]
    fn stop_is_for_running_runs_only_and_leaves_the_result_to_advance() {
        let mut run = running(&config(vec![task("a", &[])]));
        stop(&mut run).expect("running");
        assert!(run.stop);
        assert_eq!(run.result, RunResult::Unknown);
        stop(&mut run).expect("stopping twice is harmless");

        let mut queued = new_run(&config(vec![task("a", &[])]), 1, at(0));
        assert!(matches!(
            stop(&mut queued),
            Err(RunServiceError::InvalidPhase {
                found: RunPhase::Queued,
                ..
            })
        ));
        assert!(!queued.stop);
    }

    #[test]
    fn approve_records_approvers_and_refuses_a_second_approval() {
        let mut run = waiting_run();
        approve(&mut run, "deploy", Some("alice")).expect("waiting");
        let deploy = &run.tasks["deploy"];
        assert!(deploy.approved);
        assert!(!deploy.waiting_approval);
        assert_eq!(deploy.annotations[APPROVERS_ANNOTATION], r#"["alice"]"#);

        assert_eq!(
            approve(&mut run, "deploy", Some("bob")),
            Err(RunServiceError::AlreadyApproved {
                task_id: "deploy".into()
            })
        );
        assert_eq!(
            run.tasks["deploy"].annotations[APPROVERS_ANNOTATION],
            r#"["alice"]"#
        );
    }

    #[test]
    fn approve_appends_to_existing_approvers() {
        let mut run = waiting_run();
        run.tasks
            .get_mut("deploy")
            .expect("deploy")
            .annotations
            .insert(APPROVERS_ANNOTATION.into(), r#"["carol"]"#.into());
        approve(&mut run, "deploy", Some("alice")).expect("waiting");
        assert_eq!(
            run.tasks["deploy"].annotations[APPROVERS_ANNOTATION],
            r#"["carol","alice"]"#
        );
    }

    #[test]
    fn approve_without_an_approver_leaves_the_annotations_alone() {
        let mut run = waiting_run();
        approve(&mut run, "deploy", None).expect("waiting");
        assert!(run.tasks["deploy"].approved);
        assert!(run.tasks["deploy"].annotations.is_empty());
    }

    #[test]
    fn approve_refuses_tasks_not_waiting_unknown_tasks_and_bad_annotations() {
        let mut run = running(&config(vec![task("a", &[])]));
        assert_eq!(
            approve(&mut run, "a", None),
            Err(RunServiceError::NotWaitingApproval {
                task_id: "a".into()
            })
        );
        assert!(matches!(
            approve(&mut run, "nope", None),
            Err(RunServiceError::TaskNotFound { .. })
        ));

        let mut run = waiting_run();
        run.tasks
            .get_mut("deploy")
            .expect("deploy")
            .annotations
            .insert(APPROVERS_ANNOTATION.into(), "alice".into());
        assert!(matches!(
            approve(&mut run, "deploy", Some("bob")),
            Err(RunServiceError::BadApproversAnnotation { .. })
        ));
        assert!(!run.tasks["deploy"].approved, "nothing changed");
    }

    #[test]
    fn set_task_annotations_replaces_them() {
        let mut run = running(&config(vec![task("a", &[])]));
        let first = BTreeMap::from([("k".to_string(), "v".to_string())]);
        set_task_annotations(&mut run, "a", first).expect("exists");
        let second = BTreeMap::from([("other".to_string(), "w".to_string())]);
        set_task_annotations(&mut run, "a", second.clone()).expect("exists");
        assert_eq!(run.tasks["a"].annotations, second);
        assert!(matches!(
            set_task_annotations(&mut run, "zz", BTreeMap::new()),
            Err(RunServiceError::TaskNotFound { .. })
        ));
    }
}

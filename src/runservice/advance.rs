//! The run state machine: [`advance`] moves a run as far as its tasks and executor tasks
//! allow, and says which executor tasks must stop and which tasks may be handed out.
//!
//! It is the only writer of a run's phase (after start) and result, and combines
//! Agola's advanceRun, advanceRunTasks and getTasksToRun. Unlike the 2019 code, it
//! evaluates tasks parents-first and repeats until nothing changes, so a single call
//! converges (a skip propagates down a whole chain at once).
//!
//! Rules, in the order they apply:
//! 0. Cancel: a queued run asked to cancel becomes `cancelled` with result `stopped` and
//!    end time `now` (the API only sets the flag).
//! 1. Result (running runs without one), in Agola's priority (scheduler.go advanceRun):
//!    `failed` when a task failed without `ignore_failure`; else `success` when every task
//!    finished (so a run whose last task succeeded in the same pass as a stop succeeded);
//!    else `stopped` when the stop flag is set. A result is never changed once set. The
//!    result is decided before rule 2 in each pass, so tasks skipped by a stop never turn
//!    a stopped run into a successful one.
//! 2. Tasks that can no longer run (not started, no executor task): when the run is
//!    stopping, all of them are `skipped` (Agola since 2020); else they are `cancelled`:
//!    all of them when the run's phase is finished-like (cancelled, setuperror, finished),
//!    only root tasks when the run merely has a result, so that children with
//!    `on_failure` (cleanup, notification) still run after a failure, as in Agola.
//! 3. Dependency conditions (running runs, see [`super::depends`]): a not-started task
//!    without an executor task whose parents all finished and whose parents' archives are
//!    fetched either matches (may run, possibly after approval) or is skipped.
//! 4. Approval: a task that may run and needs approval waits for it
//!    (`waiting_approval = true`) until approved.
//! 5. Phase: a running run with a result becomes `finished` (end time `now`) when all its
//!    tasks finished and none of its executor tasks is unfinished, so a finished run never
//!    has work still running anywhere.
//! 6. Fetch phases: a task that never ran (skipped or cancelled without an executor task,
//!    or not started in a finished-like run) has nothing to fetch: its log and archive fetch
//!    phases are closed, so the run can be archived (the 2019 code left cancelled-from-queued
//!    runs unarchivable).
//!
//! Outputs: the executor tasks to stop (every unfinished one of a stopping run not already
//! asked to stop) and the tasks to hand out (only for running, non-stopping runs: tasks that
//! may run, approved if they need it, without an executor task yet), in (level, name) order.

use std::collections::BTreeMap;

use cairn_client::executor::ExecutorTask;
use cairn_client::run::{FetchPhase, Run, RunPhase, RunResult, RunTaskStatus, Time};
use cairn_client::runconfig::RunConfig;

use super::depends::{Readiness, in_level_order, readiness};

/// What [`advance`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advance {
    /// The advanced run.
    pub run: Run,
    /// `run` differs from the input: write it back.
    pub changed: bool,
    /// The phase or the result changed: emit a run event.
    pub phase_or_result_changed: bool,
    /// Executor task ids that must get `spec.stop = true`.
    pub stop: Vec<String>,
    /// Task ids ready to hand out (no executor task yet), in (level, name) order.
    pub to_run: Vec<String>,
}

/// Advances `run` (of `config`) given `ets`, every executor task of this run in the store,
/// finished or not, keyed by run task id.
pub fn advance(
    run: &Run,
    config: &RunConfig,
    ets: &BTreeMap<String, ExecutorTask>,
    now: Time,
) -> Advance {
    let mut next = run.clone();
    // Every rule only moves state forward (results are set once, statuses leave
    // notstarted once, phases only close), so this ends; parents-first evaluation makes the
    // second pass the confirming one in practice. The bound only guards against a bug.
    for _ in 0..next.tasks.len() + 4 {
        if !pass(&mut next, config, ets, now) {
            break;
        }
    }
    let stop = if next.stop {
        ets.values()
            .filter(|et| !et.status.phase.is_finished() && !et.spec.stop)
            .map(|et| et.id.clone())
            .collect()
    } else {
        Vec::new()
    };
    let to_run = tasks_to_run(&next, config, ets);
    Advance {
        changed: next != *run,
        phase_or_result_changed: next.phase != run.phase || next.result != run.result,
        run: next,
        stop,
        to_run,
    }
}

/// One application of every rule; whether anything changed.
fn pass(
    run: &mut Run,
    config: &RunConfig,
    ets: &BTreeMap<String, ExecutorTask>,
    now: Time,
) -> bool {
    let cancelled = super::actions::apply_cancel(run, now);
    let result = advance_result(run, config);
    let tasks = advance_tasks(run, config, ets);
    let phase = advance_phase(run, ets, now);
    let fetch = close_fetch_phases(run, ets);
    cancelled || result || tasks || phase || fetch
}

fn advance_result(run: &mut Run, config: &RunConfig) -> bool {
    if run.phase != RunPhase::Running || run.result.is_set() {
        return false;
    }
    let failed = run.tasks.values().any(|t| {
        t.status == RunTaskStatus::Failed
            && !config.tasks.get(&t.id).is_some_and(|c| c.ignore_failure)
    });
    run.result = if failed {
        RunResult::Failed
    } else if run.tasks.values().all(|t| t.status.is_finished()) {
        RunResult::Success
    } else if run.stop {
        RunResult::Stopped
    } else {
        return false;
    };
    true
}

fn advance_tasks(run: &mut Run, config: &RunConfig, ets: &BTreeMap<String, ExecutorTask>) -> bool {
    let mut changed = false;
    for task in in_level_order(config) {
        let Some(current) = run.tasks.get(&task.id) else {
            continue;
        };
        if current.status != RunTaskStatus::NotStarted || ets.contains_key(&task.id) {
            continue;
        }
        let cancel = run.phase.is_finished() || (run.result.is_set() && task.depends.is_empty());
        let decision = if run.stop {
            Some(RunTaskStatus::Skipped)
        } else if cancel {
            Some(RunTaskStatus::Cancelled)
        } else if run.phase != RunPhase::Running {
            None
        } else if current.skip {
            Some(RunTaskStatus::Skipped)
        } else {
            match readiness(run, config, task) {
                Readiness::Unmatched => Some(RunTaskStatus::Skipped),
                Readiness::Matched
                    if task.needs_approval && !current.approved && !current.waiting_approval =>
                {
                    let rt = run.tasks.get_mut(&task.id).expect("looked up above");
                    rt.waiting_approval = true;
                    changed = true;
                    None
                }
                _ => None,
            }
        };
        if let Some(status) = decision {
            let rt = run.tasks.get_mut(&task.id).expect("looked up above");
            rt.status = status;
            rt.waiting_approval = false;
            changed = true;
        }
    }
    changed
}

fn advance_phase(run: &mut Run, ets: &BTreeMap<String, ExecutorTask>, now: Time) -> bool {
    let done = run.phase == RunPhase::Running
        && run.result.is_set()
        && run.tasks.values().all(|t| t.status.is_finished())
        && ets.values().all(|et| et.status.phase.is_finished());
    if done {
        run.phase = RunPhase::Finished;
        run.end_time = Some(now);
    }
    done
}

fn close_fetch_phases(run: &mut Run, ets: &BTreeMap<String, ExecutorTask>) -> bool {
    let finished_like = run.phase.is_finished();
    let mut changed = false;
    for task in run.tasks.values_mut() {
        let never_ran = !ets.contains_key(&task.id)
            && match task.status {
                RunTaskStatus::Skipped | RunTaskStatus::Cancelled => true,
                RunTaskStatus::NotStarted => finished_like,
                _ => false,
            };
        if !never_ran || task.all_fetched() {
            continue;
        }
        task.setup_step.log_phase = FetchPhase::Finished;
        for step in &mut task.steps {
            step.log_phase = FetchPhase::Finished;
        }
        for phase in &mut task.workspace_archives_phase {
            *phase = FetchPhase::Finished;
        }
        changed = true;
    }
    changed
}

fn tasks_to_run(
    run: &Run,
    config: &RunConfig,
    ets: &BTreeMap<String, ExecutorTask>,
) -> Vec<String> {
    if run.phase != RunPhase::Running || run.stop {
        return Vec::new();
    }
    in_level_order(config)
        .into_iter()
        .filter(|task| {
            run.tasks.get(&task.id).is_some_and(|rt| {
                rt.status == RunTaskStatus::NotStarted
                    && !rt.skip
                    && !ets.contains_key(&task.id)
                    && (!task.needs_approval || rt.approved)
            }) && readiness(run, config, task) == Readiness::Matched
        })
        .map(|task| task.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::actions;
    use crate::runservice::create::new_run;
    use crate::runservice::fixture::{
        at, config, et, ets, running, set_status, task, with_conditions,
    };
    use DependCondition::{OnFailure, OnSkipped, OnSuccess};
    use RunTaskStatus::{Cancelled, Failed, NotStarted, Running, Skipped, Stopped, Success};
    use cairn_client::run::ExecutorTaskPhase;
    use cairn_client::runconfig::{DependCondition, SaveToWorkspaceStep, Step};

    fn none() -> BTreeMap<String, ExecutorTask> {
        BTreeMap::new()
    }

    fn status(run: &Run, id: &str) -> RunTaskStatus {
        run.tasks[id].status
    }

    #[test]
    fn a_started_run_hands_out_its_root_tasks_in_level_then_name_order() {
        let cfg = config(vec![
            task("zeta", &[]),
            task("alpha", &[]),
            task("child", &["alpha"]),
        ]);
        let out = advance(&running(&cfg), &cfg, &none(), at(2));
        assert_eq!(out.to_run, vec!["alpha", "zeta"]);
        assert!(!out.changed);
        assert!(out.stop.is_empty());
    }

    #[test]
    fn a_queued_run_hands_out_nothing_and_does_not_change() {
        let cfg = config(vec![task("a", &[])]);
        let run = new_run(&cfg, 1, at(0));
        let out = advance(&run, &cfg, &none(), at(2));
        assert!(out.to_run.is_empty());
        assert!(!out.changed);
        assert_eq!(out.run, run);
    }

    #[test]
    fn tasks_that_already_have_an_executor_task_are_not_handed_out_again() {
        let cfg = config(vec![task("a", &[]), task("b", &[])]);
        let out = advance(
            &running(&cfg),
            &cfg,
            &ets(vec![et("a", "x1", ExecutorTaskPhase::NotStarted)]),
            at(2),
        );
        assert_eq!(out.to_run, vec!["b"]);
    }

    /// Two parents `a` and `b` finish as given; `c` depends on both with the given
    /// conditions. Expected: `c` runs (`NotStarted` and handed out) or is skipped.
    #[test]
    fn conditions_over_two_parents_decide_whether_the_child_runs_or_is_skipped() {
        type Case = (
            RunTaskStatus,
            &'static [DependCondition],
            RunTaskStatus,
            &'static [DependCondition],
            bool,
        );
        let table: &[Case] = &[
            (Success, &[], Success, &[], true),
            (Success, &[], Failed, &[], false),
            (Failed, &[], Success, &[], false),
            (Success, &[OnSuccess], Failed, &[OnFailure], true),
            (Failed, &[OnFailure], Failed, &[OnFailure], true),
            (Failed, &[OnFailure], Success, &[OnFailure], false),
            (Skipped, &[OnSkipped], Success, &[], true),
            (Skipped, &[], Success, &[], false),
            (
                Skipped,
                &[OnSuccess, OnSkipped],
                Failed,
                &[OnSuccess, OnFailure],
                true,
            ),
            (
                Cancelled,
                &[OnSuccess, OnFailure, OnSkipped],
                Success,
                &[],
                false,
            ),
            (
                Stopped,
                &[OnSuccess, OnFailure, OnSkipped],
                Success,
                &[],
                false,
            ),
        ];
        for (a_status, a_cond, b_status, b_cond, runs) in table {
            let child = with_conditions(task("c", &["a", "b"]), "a", a_cond);
            let child = with_conditions(child, "b", b_cond);
            let mut a = task("a", &[]);
            a.ignore_failure = true;
            let mut b = task("b", &[]);
            b.ignore_failure = true;
            let cfg = config(vec![a, b, child]);
            let mut run = running(&cfg);
            set_status(&mut run, "a", *a_status);
            set_status(&mut run, "b", *b_status);
            let all = ets(vec![
                et("a", "x1", ExecutorTaskPhase::Success),
                et("b", "x1", ExecutorTaskPhase::Success),
            ]);

            let out = advance(&run, &cfg, &all, at(5));

            let case = format!("a {a_status:?} {a_cond:?}, b {b_status:?} {b_cond:?}");
            if *runs {
                assert_eq!(status(&out.run, "c"), NotStarted, "{case}");
                assert_eq!(out.to_run, vec!["c"], "{case}");
            } else {
                assert_eq!(status(&out.run, "c"), Skipped, "{case}");
                assert!(out.to_run.is_empty(), "{case}");
            }
        }
    }

    #[test]
    fn a_skip_propagates_down_a_chain_and_finishes_the_run_in_one_call() {
        let cfg = config(vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &["c"]),
        ]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", Failed);

        let out = advance(
            &run,
            &cfg,
            &ets(vec![et("a", "x1", ExecutorTaskPhase::Failed)]),
            at(9),
        );

        for id in ["b", "c", "d"] {
            assert_eq!(status(&out.run, id), Skipped, "{id}");
            assert!(out.run.tasks[id].all_fetched(), "{id} has nothing to fetch");
        }
        assert_eq!(out.run.result, RunResult::Failed);
        assert_eq!(out.run.phase, RunPhase::Finished);
        assert_eq!(out.run.end_time, Some(at(9)));
        assert!(out.changed && out.phase_or_result_changed);
    }

    #[test]
    fn on_skipped_children_run_after_a_task_excluded_by_when() {
        let mut excluded = task("deploy", &[]);
        excluded.skip = true;
        let cfg = config(vec![
            excluded,
            with_conditions(task("explain", &["deploy"]), "deploy", &[OnSkipped]),
            task("after-deploy", &["deploy"]),
        ]);
        let out = advance(&running(&cfg), &cfg, &none(), at(2));
        assert_eq!(out.to_run, vec!["explain"]);
        assert_eq!(status(&out.run, "after-deploy"), Skipped);
        assert!(out.run.tasks["deploy"].all_fetched());
    }

    #[test]
    fn a_cancelled_parent_matches_no_condition_so_its_child_is_skipped() {
        let cfg = config(vec![
            task("a", &[]),
            task("b", &[]),
            with_conditions(task("c", &["b"]), "b", &[OnSuccess, OnFailure, OnSkipped]),
        ]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", Failed);
        run.tasks.get_mut("b").expect("b").waiting_approval = true;

        let out = advance(
            &run,
            &cfg,
            &ets(vec![et("a", "x1", ExecutorTaskPhase::Failed)]),
            at(3),
        );
        assert_eq!(status(&out.run, "b"), Cancelled);
        assert!(!out.run.tasks["b"].waiting_approval);
        assert_eq!(status(&out.run, "c"), Skipped);
        assert_eq!(out.run.phase, RunPhase::Finished);
    }

    #[test]
    fn a_failure_cancels_unscheduled_roots_but_on_failure_children_still_run() {
        let cfg = config(vec![
            task("build", &[]),
            task("lint", &[]),
            with_conditions(task("report", &["build"]), "build", &[OnFailure]),
        ]);
        let mut run = running(&cfg);
        set_status(&mut run, "build", Failed);
        let out = advance(
            &run,
            &cfg,
            &ets(vec![et("build", "x1", ExecutorTaskPhase::Failed)]),
            at(3),
        );
        assert_eq!(out.run.result, RunResult::Failed);
        assert_eq!(status(&out.run, "lint"), Cancelled);
        assert_eq!(out.to_run, vec!["report"]);
        assert_eq!(out.run.phase, RunPhase::Running, "report has yet to run");
    }

    #[test]
    fn ignored_failures_leave_the_run_successful() {
        let mut flaky = task("flaky", &[]);
        flaky.ignore_failure = true;
        let cfg = config(vec![flaky, task("main", &[])]);
        let mut run = running(&cfg);
        set_status(&mut run, "flaky", Failed);
        set_status(&mut run, "main", Success);
        let out = advance(
            &run,
            &cfg,
            &ets(vec![
                et("flaky", "x1", ExecutorTaskPhase::Failed),
                et("main", "x1", ExecutorTaskPhase::Success),
            ]),
            at(4),
        );
        assert_eq!(out.run.result, RunResult::Success);
        assert_eq!(out.run.phase, RunPhase::Finished);
    }

    #[test]
    fn a_task_needing_approval_waits_and_is_handed_out_once_approved() {
        let mut deploy = task("deploy", &["build"]);
        deploy.needs_approval = true;
        let cfg = config(vec![task("build", &[]), deploy]);
        let mut run = running(&cfg);
        set_status(&mut run, "build", Success);
        let all = ets(vec![et("build", "x1", ExecutorTaskPhase::Success)]);

        let waiting = advance(&run, &cfg, &all, at(2));
        assert!(waiting.run.tasks["deploy"].waiting_approval);
        assert!(waiting.changed);
        assert!(!waiting.phase_or_result_changed);
        assert!(waiting.to_run.is_empty());
        assert_eq!(
            advance(&waiting.run, &cfg, &all, at(3)).run,
            waiting.run,
            "waiting is stable"
        );

        let mut approved = waiting.run;
        actions::approve(&mut approved, "deploy", Some("alice")).expect("waiting for approval");
        let out = advance(&approved, &cfg, &all, at(4));
        assert_eq!(out.to_run, vec!["deploy"]);
        assert!(!out.run.tasks["deploy"].waiting_approval);
    }

    #[test]
    fn stopping_a_run_stops_its_executor_tasks_and_finishes_only_after_they_end() {
        let cfg = config(vec![task("a", &[]), task("b", &[]), task("c", &["a"])]);
        let mut run = running(&cfg);
        run.tasks.get_mut("a").expect("a").status = Running;
        actions::stop(&mut run).expect("running");
        let mut live = ets(vec![et("a", "x1", ExecutorTaskPhase::Running)]);

        let stopping = advance(&run, &cfg, &live, at(5));
        assert_eq!(stopping.stop, vec!["a"]);
        assert_eq!(stopping.run.result, RunResult::Stopped);
        assert_eq!(stopping.run.phase, RunPhase::Running);
        // Agola (since 2020) skips the tasks a stop keeps from ever starting.
        assert_eq!(status(&stopping.run, "b"), Skipped, "root never scheduled");
        assert_eq!(status(&stopping.run, "c"), Skipped, "child never scheduled");
        assert!(stopping.run.tasks["b"].all_fetched(), "nothing to fetch");
        assert!(stopping.to_run.is_empty());
        assert!(stopping.phase_or_result_changed);

        // The scheduler wrote spec.stop: it is not asked again.
        live.get_mut("a").expect("a").spec.stop = true;
        let again = advance(&stopping.run, &cfg, &live, at(6));
        assert!(again.stop.is_empty());
        assert!(!again.changed);

        // The executor reports the task stopped: now the run finishes.
        let et_a = live.get_mut("a").expect("a");
        et_a.status.phase = ExecutorTaskPhase::Stopped;
        let mut reported = again.run;
        set_status(&mut reported, "a", Stopped);
        let done = advance(&reported, &cfg, &live, at(7));
        assert_eq!(done.run.phase, RunPhase::Finished);
        assert_eq!(done.run.end_time, Some(at(7)));
        assert_eq!(done.run.result, RunResult::Stopped);
    }

    #[test]
    fn a_stop_skips_tasks_waiting_for_approval_and_those_below_them() {
        let mut deploy = task("deploy", &["build"]);
        deploy.needs_approval = true;
        let cfg = config(vec![
            task("build", &[]),
            deploy,
            task("notify", &["deploy"]),
        ]);
        let mut run = running(&cfg);
        set_status(&mut run, "build", Success);
        run.tasks
            .get_mut("deploy")
            .expect("deploy")
            .waiting_approval = true;
        actions::stop(&mut run).expect("running");
        let all = ets(vec![et("build", "x1", ExecutorTaskPhase::Success)]);

        let out = advance(&run, &cfg, &all, at(5));
        assert_eq!(status(&out.run, "deploy"), Skipped);
        assert!(!out.run.tasks["deploy"].waiting_approval);
        assert_eq!(status(&out.run, "notify"), Skipped);
        assert_eq!(out.run.result, RunResult::Stopped, "stopped before the end");
        assert_eq!(out.run.phase, RunPhase::Finished);
    }

    #[test]
    fn a_run_whose_last_task_succeeded_in_the_same_pass_as_a_stop_succeeds() {
        let cfg = config(vec![task("a", &[]), task("b", &[])]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", Success);
        set_status(&mut run, "b", Success);
        actions::stop(&mut run).expect("running");
        let all = ets(vec![
            et("a", "x1", ExecutorTaskPhase::Success),
            et("b", "x1", ExecutorTaskPhase::Success),
        ]);

        let out = advance(&run, &cfg, &all, at(5));
        assert_eq!(out.run.result, RunResult::Success);
        assert_eq!(out.run.phase, RunPhase::Finished);

        // A failure still wins over both.
        set_status(&mut run, "b", Failed);
        let out = advance(&run, &cfg, &all, at(5));
        assert_eq!(out.run.result, RunResult::Failed);
    }

    #[test]
    fn a_run_with_a_result_stays_running_while_any_executor_task_is_unfinished() {
        let cfg = config(vec![task("a", &[])]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", Failed);
        let lingering = ets(vec![et("a", "x1", ExecutorTaskPhase::Running)]);
        let out = advance(&run, &cfg, &lingering, at(3));
        assert_eq!(out.run.result, RunResult::Failed);
        assert_eq!(out.run.phase, RunPhase::Running);
        assert_eq!(out.run.end_time, None);
    }

    #[test]
    fn a_cancelled_queued_run_cancels_its_tasks_and_closes_their_fetch_phases() {
        let mut t = task("a", &[]);
        t.steps = vec![Step::SaveToWorkspace(SaveToWorkspaceStep::default())];
        let cfg = config(vec![t, task("b", &["a"])]);
        let mut run = new_run(&cfg, 1, at(0));
        actions::cancel(&mut run).expect("queued");

        let out = advance(&run, &cfg, &none(), at(2));
        assert_eq!(
            out.run.phase,
            RunPhase::Cancelled,
            "the pass applies the flag"
        );
        assert_eq!(out.run.result, RunResult::Stopped);
        assert_eq!(out.run.end_time, Some(at(2)));
        for id in ["a", "b"] {
            assert_eq!(status(&out.run, id), Cancelled);
            assert!(out.run.tasks[id].all_fetched());
        }
        assert!(out.to_run.is_empty());
        assert!(out.changed && out.phase_or_result_changed);
        let again = advance(&out.run, &cfg, &none(), at(3));
        assert!(!again.changed, "applied once");
    }

    #[test]
    fn a_setuperror_run_has_nothing_to_fetch() {
        let mut cfg = config(vec![task("a", &[])]);
        cfg.setup_errors = vec!["bad".into()];
        let run = new_run(&cfg, 1, at(0));
        let out = advance(&run, &cfg, &none(), at(1));
        assert!(out.run.tasks.is_empty());
        assert_eq!(out.run.phase, RunPhase::SetupError);
        assert!(out.to_run.is_empty());
    }

    #[test]
    fn a_child_waits_until_its_parents_workspace_archives_are_fetched() {
        let mut build = task("build", &[]);
        build.steps = vec![Step::SaveToWorkspace(SaveToWorkspaceStep::default())];
        let cfg = config(vec![build, task("test", &["build"])]);
        let mut run = running(&cfg);
        run.tasks.get_mut("build").expect("build").status = Success;
        let all = ets(vec![et("build", "x1", ExecutorTaskPhase::Success)]);

        assert!(advance(&run, &cfg, &all, at(2)).to_run.is_empty());
        set_status(&mut run, "build", Success);
        assert_eq!(advance(&run, &cfg, &all, at(3)).to_run, vec!["test"]);
    }

    #[test]
    fn a_five_task_dag_converges_in_one_call() {
        // a ─┬─ b ─┬─ d ── e
        //    └─ c ─┘
        // c runs only on a's failure; a succeeds, so c is skipped, d (on_success of b and
        // on_skipped of c) runs once b succeeds.
        let cfg = config(vec![
            task("a", &[]),
            task("b", &["a"]),
            with_conditions(task("c", &["a"]), "a", &[OnFailure]),
            with_conditions(task("d", &["b", "c"]), "c", &[OnSkipped]),
            task("e", &["d"]),
        ]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", Success);
        set_status(&mut run, "b", Success);
        let done_ets = ets(vec![
            et("a", "x1", ExecutorTaskPhase::Success),
            et("b", "x1", ExecutorTaskPhase::Success),
        ]);
        let out = advance(&run, &cfg, &done_ets, at(4));
        assert_eq!(status(&out.run, "c"), Skipped);
        assert_eq!(out.to_run, vec!["d"]);

        // Now d fails: e is skipped, the run fails and finishes, all in one call.
        let mut run = out.run;
        set_status(&mut run, "d", Failed);
        let mut all = done_ets;
        all.insert("d".into(), et("d", "x1", ExecutorTaskPhase::Failed));
        let out = advance(&run, &cfg, &all, at(5));
        assert_eq!(status(&out.run, "e"), Skipped);
        assert_eq!(out.run.result, RunResult::Failed);
        assert_eq!(out.run.phase, RunPhase::Finished);
        let again = advance(&out.run, &cfg, &all, at(6));
        assert!(!again.changed, "one call reached the fixed point");
    }

    #[test]
    fn a_run_without_tasks_succeeds_at_once() {
        let cfg = config(vec![]);
        let out = advance(&running(&cfg), &cfg, &none(), at(2));
        assert_eq!(out.run.result, RunResult::Success);
        assert_eq!(out.run.phase, RunPhase::Finished);
    }
}

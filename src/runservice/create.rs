//! A new [`Run`] from its [`RunConfig`]: the initial phase (queued, or setuperror when the
//! config has setup errors) and one not-started [`RunTask`] per config task (none for a
//! setuperror run).

use std::collections::BTreeMap;

use cairn_client::run::{FetchPhase, Run, RunPhase, RunResult, RunTask, RunTaskStatus, Time};
use cairn_client::runconfig::{RunConfig, RunConfigTask, Step};

/// The name of the one run recorded for a config that cannot be parsed (Agola's
/// `RunGenericSetupErrorName`): how many runs it defines is unknown.
pub const SETUP_ERROR_RUN_NAME: &str = "Setup Error";

/// The run of `config`, enqueued at `now` with number `counter` in its root group.
///
/// A config with setup errors gives a run in phase `setuperror` (end time `now`) that never
/// starts and has no tasks (Agola's `genRun`); its result stays `unknown`, as in Agola:
/// the phase alone says what happened. Being finished-like from the start, it never holds
/// its group's queue and is archived by the scheduler's first pass.
pub fn new_run(config: &RunConfig, counter: u64, now: Time) -> Run {
    let setup_error = !config.setup_errors.is_empty();
    let tasks: BTreeMap<String, RunTask> = if setup_error {
        BTreeMap::new()
    } else {
        config
            .tasks
            .values()
            .map(|task| (task.id.clone(), new_run_task(task)))
            .collect()
    };
    Run {
        id: config.id.clone(),
        name: config.name.clone(),
        counter,
        group: config.group.clone(),
        annotations: config.annotations.clone(),
        phase: if setup_error {
            RunPhase::SetupError
        } else {
            RunPhase::Queued
        },
        result: RunResult::Unknown,
        stop: false,
        cancel: false,
        tasks,
        enqueue_time: Some(now),
        start_time: None,
        end_time: setup_error.then_some(now),
        archived: false,
    }
}

/// The initial state of one task: not started (skipped when excluded by `when`), every step
/// and log not started, one not-fetched archive per `save_to_workspace` step.
pub fn new_run_task(task: &RunConfigTask) -> RunTask {
    let workspace_archives: Vec<usize> = task
        .steps
        .iter()
        .enumerate()
        .filter(|(_, step)| matches!(step, Step::SaveToWorkspace(_)))
        .map(|(index, _)| index)
        .collect();
    RunTask {
        id: task.id.clone(),
        status: if task.skip {
            RunTaskStatus::Skipped
        } else {
            RunTaskStatus::NotStarted
        },
        skip: task.skip,
        steps: vec![Default::default(); task.steps.len()],
        workspace_archives_phase: vec![FetchPhase::NotStarted; workspace_archives.len()],
        workspace_archives,
        ..RunTask::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{at, config, task};
    use cairn_client::run::ExecutorTaskPhase;
    use cairn_client::runconfig::{RunStep, SaveToWorkspaceStep};

    #[test]
    fn a_new_run_is_queued_with_one_not_started_task_per_config_task() {
        let mut cfg = config(vec![task("a", &[]), task("b", &["a"])]);
        cfg.annotations.insert("branch".into(), "main".into());
        let run = new_run(&cfg, 7, at(10));

        assert_eq!(run.id, cfg.id);
        assert_eq!(run.name, cfg.name);
        assert_eq!(run.group, cfg.group);
        assert_eq!(run.counter, 7);
        assert_eq!(run.annotations, cfg.annotations);
        assert_eq!(run.phase, RunPhase::Queued);
        assert_eq!(run.result, RunResult::Unknown);
        assert_eq!(run.enqueue_time, Some(at(10)));
        assert_eq!(run.start_time, None);
        assert_eq!(run.end_time, None);
        assert_eq!(run.tasks.len(), 2);
        assert!(
            run.tasks
                .values()
                .all(|t| t.status == RunTaskStatus::NotStarted)
        );
    }

    #[test]
    fn setup_errors_give_a_setuperror_run_with_an_end_time_and_no_tasks() {
        let mut cfg = config(vec![task("a", &[])]);
        cfg.setup_errors = vec!["cycle between a and b".into()];
        let run = new_run(&cfg, 1, at(5));
        assert_eq!(run.phase, RunPhase::SetupError);
        assert_eq!(run.end_time, Some(at(5)));
        assert_eq!(run.result, RunResult::Unknown);
        assert!(run.tasks.is_empty(), "{:?}", run.tasks);
        assert!(run.phase.is_finished(), "never waits in its group's queue");
    }

    #[test]
    fn tasks_get_a_step_per_config_step_and_an_archive_per_workspace_save() {
        let mut t = task("build", &[]);
        t.steps = vec![
            Step::Run(RunStep {
                command: "make".into(),
                ..RunStep::default()
            }),
            Step::SaveToWorkspace(SaveToWorkspaceStep::default()),
            Step::Run(RunStep {
                command: "make test".into(),
                ..RunStep::default()
            }),
            Step::SaveToWorkspace(SaveToWorkspaceStep::default()),
        ];
        let mut skipped = task("docs", &[]);
        skipped.skip = true;
        let cfg = config(vec![t, skipped]);
        let run = new_run(&cfg, 1, at(0));

        let build = &run.tasks["build"];
        assert_eq!(build.steps.len(), 4);
        assert!(
            build
                .steps
                .iter()
                .all(|s| s.phase == ExecutorTaskPhase::NotStarted
                    && s.log_phase == FetchPhase::NotStarted)
        );
        assert_eq!(build.setup_step.log_phase, FetchPhase::NotStarted);
        assert_eq!(build.workspace_archives, vec![1, 3]);
        assert_eq!(
            build.workspace_archives_phase,
            vec![FetchPhase::NotStarted; 2]
        );

        let docs = &run.tasks["docs"];
        assert_eq!(docs.status, RunTaskStatus::Skipped);
        assert!(docs.skip);
    }
}

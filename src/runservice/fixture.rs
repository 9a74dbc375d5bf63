//! Test fixtures for the run-service decisions: configs built from task names, runs in a
//! given state and executor tasks. Task ids equal task names so tests read like the spec.

use std::collections::BTreeMap;

use cairn_client::executor::ExecutorTask;
use cairn_client::run::{ExecutorTaskPhase, Run, RunPhase, RunTaskStatus, Time};
use cairn_client::runconfig::{Depend, DependCondition, RunConfig, RunConfigTask};

use super::create::new_run;

/// `secs` seconds after the epoch.
pub fn at(secs: i64) -> Time {
    Time::from_timestamp(secs, 0).expect("small timestamps are valid")
}

/// A task named (and identified by) `name` depending on `parents` with the default
/// condition (on_success).
pub fn task(name: &str, parents: &[&str]) -> RunConfigTask {
    RunConfigTask {
        id: name.to_string(),
        name: name.to_string(),
        depends: parents
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Depend {
                        task_id: p.to_string(),
                        conditions: Vec::new(),
                    },
                )
            })
            .collect(),
        ..RunConfigTask::default()
    }
}

/// `task` with the conditions of its edge to `parent` replaced.
pub fn with_conditions(
    mut task: RunConfigTask,
    parent: &str,
    conditions: &[DependCondition],
) -> RunConfigTask {
    task.depends.insert(
        parent.to_string(),
        Depend {
            task_id: parent.to_string(),
            conditions: conditions.to_vec(),
        },
    );
    task
}

/// A config of `tasks` with levels computed from their depends.
pub fn config(tasks: Vec<RunConfigTask>) -> RunConfig {
    let mut tasks: BTreeMap<String, RunConfigTask> =
        tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
    loop {
        let levels: BTreeMap<String, u32> =
            tasks.iter().map(|(id, t)| (id.clone(), t.level)).collect();
        let mut changed = false;
        for t in tasks.values_mut() {
            let level = t
                .depends
                .keys()
                .filter_map(|p| levels.get(p))
                .map(|l| l + 1)
                .max()
                .unwrap_or(0);
            if level != t.level {
                t.level = level;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    RunConfig {
        id: "run1".into(),
        name: "ci".into(),
        group: "/project/p1/branch/main".into(),
        tasks,
        ..RunConfig::default()
    }
}

/// The run of `config`, started.
pub fn running(config: &RunConfig) -> Run {
    let mut run = new_run(config, 1, at(0));
    run.phase = RunPhase::Running;
    run.start_time = Some(at(1));
    run
}

/// Sets the status of `task_id`, with every fetch phase closed when it finished (as the
/// fetcher would have done).
pub fn set_status(run: &mut Run, task_id: &str, status: RunTaskStatus) {
    let task = run.tasks.get_mut(task_id).expect("fixture task exists");
    task.status = status;
    if status.is_finished() {
        use cairn_client::run::FetchPhase;
        task.setup_step.log_phase = FetchPhase::Finished;
        for step in &mut task.steps {
            step.log_phase = FetchPhase::Finished;
        }
        for phase in &mut task.workspace_archives_phase {
            *phase = FetchPhase::Finished;
        }
    }
}

/// An executor task of `task_id` on `executor` in `phase`.
pub fn et(task_id: &str, executor: &str, phase: ExecutorTaskPhase) -> ExecutorTask {
    let mut et = ExecutorTask::new(task_id, "run1", executor, 0);
    et.status.phase = phase;
    et
}

/// Executor tasks keyed by task id.
pub fn ets(list: Vec<ExecutorTask>) -> BTreeMap<String, ExecutorTask> {
    list.into_iter().map(|e| (e.id.clone(), e)).collect()
}

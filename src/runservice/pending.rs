//! "Why is this task pending?": one sentence per not-started task of a run, by task name.
//!
//! The first reason that applies wins: the task was handed out but its executor has not
//! started it; the run is queued; the run is stopping or over; parents have not finished;
//! parents' workspace archives are not in object storage yet; the task will be skipped;
//! the task waits for approval; no executor can take it (the placement's reason); or it is
//! simply next in line for the scheduler.

use std::collections::BTreeMap;

use cairn_client::executor::ExecutorTask;
use cairn_client::run::{Run, RunPhase, RunTaskStatus};
use cairn_client::runconfig::{RunConfig, RunConfigTask};

use super::depends::{Readiness, readiness};

/// The reason each not-started task of `run` waits, keyed by task name. `placement` says
/// why no executor can take a task (`None` when one can).
pub fn task_pending_reasons(
    run: &Run,
    config: &RunConfig,
    ets: &BTreeMap<String, ExecutorTask>,
    placement: &dyn Fn(&RunConfigTask) -> Option<String>,
) -> BTreeMap<String, String> {
    config
        .tasks
        .values()
        .filter_map(|task| {
            let rt = run.tasks.get(&task.id)?;
            if rt.status != RunTaskStatus::NotStarted {
                return None;
            }
            let reason = if let Some(et) = ets.get(&task.id) {
                format!(
                    "assigned to executor {}, not started yet",
                    et.spec.executor_id
                )
            } else if run.phase == RunPhase::Queued {
                "run is queued".to_string()
            } else if run.stop {
                "run is stopping".to_string()
            } else if run.phase != RunPhase::Running {
                format!("run is {}", run.phase.as_str())
            } else {
                match readiness(run, config, task) {
                    Readiness::WaitingParents(names) => {
                        format!("waiting for parents: {}", names.join(", "))
                    }
                    Readiness::WaitingArchives(names) => format!(
                        "waiting for the workspace archives of: {}",
                        names.join(", ")
                    ),
                    Readiness::Unmatched => {
                        "will be skipped: a dependency condition does not hold".to_string()
                    }
                    Readiness::Matched if task.needs_approval && !rt.approved => {
                        "waiting for approval".to_string()
                    }
                    Readiness::Matched => placement(task)
                        .unwrap_or_else(|| "waiting to be handed to an executor".to_string()),
                }
            };
            Some((task.name.clone(), reason))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::create::new_run;
    use crate::runservice::fixture::{at, config, et, ets, running, set_status, task};
    use cairn_client::run::ExecutorTaskPhase;
    use cairn_client::runconfig::{SaveToWorkspaceStep, Step};

    fn no_reason(_: &RunConfigTask) -> Option<String> {
        None
    }

    #[test]
    fn every_task_of_a_queued_run_waits_for_the_run() {
        let cfg = config(vec![task("a", &[]), task("b", &["a"])]);
        let reasons =
            task_pending_reasons(&new_run(&cfg, 1, at(0)), &cfg, &BTreeMap::new(), &no_reason);
        assert_eq!(reasons["a"], "run is queued");
        assert_eq!(reasons["b"], "run is queued");
    }

    #[test]
    fn each_waiting_task_says_what_it_waits_for() {
        let mut saver = task("build", &[]);
        saver.steps = vec![Step::SaveToWorkspace(SaveToWorkspaceStep::default())];
        let mut deploy = task("deploy", &["lint"]);
        deploy.needs_approval = true;
        let cfg = config(vec![
            saver,
            task("lint", &[]),
            task("test", &["build"]),
            task("package", &["build", "test"]),
            deploy,
            task("docs", &[]),
            task("bench", &[]),
        ]);
        let mut run = running(&cfg);
        run.tasks.get_mut("build").expect("build").status = RunTaskStatus::Success;
        set_status(&mut run, "lint", RunTaskStatus::Success);
        let all = ets(vec![
            et("build", "x1", ExecutorTaskPhase::Success),
            et("lint", "x1", ExecutorTaskPhase::Success),
            et("docs", "x7", ExecutorTaskPhase::NotStarted),
        ]);
        let placement = |t: &RunConfigTask| {
            (t.name == "bench").then(|| "no executor has arch arm64".to_string())
        };

        let reasons = task_pending_reasons(&run, &cfg, &all, &placement);

        assert_eq!(
            reasons["test"],
            "waiting for the workspace archives of: build"
        );
        assert_eq!(reasons["package"], "waiting for parents: test");
        assert_eq!(reasons["deploy"], "waiting for approval");
        assert_eq!(reasons["docs"], "assigned to executor x7, not started yet");
        assert_eq!(reasons["bench"], "no executor has arch arm64");
        assert!(
            !reasons.contains_key("build"),
            "finished tasks are not pending"
        );
        assert!(!reasons.contains_key("lint"));
    }

    #[test]
    fn a_ready_task_with_an_executor_available_is_next_in_line() {
        let cfg = config(vec![task("a", &[])]);
        let reasons = task_pending_reasons(&running(&cfg), &cfg, &BTreeMap::new(), &no_reason);
        assert_eq!(reasons["a"], "waiting to be handed to an executor");
    }
}

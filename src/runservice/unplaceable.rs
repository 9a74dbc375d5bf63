//! A task that no executor can ever take fails at once ([`fail_unplaceable`]) instead of
//! waiting forever: on a node whose executors are fixed (the embedded node of `cairn
//! run`), the scheduler fails such a task with the placement's reason as its
//! `fail_error`, and [`advance`](mod@super::advance) then fails the run as for any failed
//! task. Pure: the caller passes `now` and writes the run back.

use cairn_client::run::{FetchPhase, Run, RunTaskStatus, Time};

/// Fails not-started task `task_id` of `run` with `reason`. It never ran, so it has no log
/// or workspace archive to fetch. Returns whether the run changed (false for a task that
/// already started or finished, or that `run` does not have).
pub fn fail_unplaceable(run: &mut Run, task_id: &str, reason: &str, now: Time) -> bool {
    let Some(rt) = run.tasks.get_mut(task_id) else {
        return false;
    };
    if rt.status != RunTaskStatus::NotStarted {
        return false;
    }
    rt.status = RunTaskStatus::Failed;
    rt.fail_error = Some(reason.to_string());
    rt.waiting_approval = false;
    rt.end_time = Some(now);
    rt.setup_step.log_phase = FetchPhase::Finished;
    for step in &mut rt.steps {
        step.log_phase = FetchPhase::Finished;
    }
    for phase in &mut rt.workspace_archives_phase {
        *phase = FetchPhase::Finished;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::advance;
    use crate::runservice::fixture::{at, config, running, task};
    use cairn_client::run::{RunPhase, RunResult};
    use std::collections::BTreeMap;

    #[test]
    fn an_unplaceable_task_fails_with_the_reason_and_fails_the_run() {
        let cfg = config(vec![task("build", &[]), task("test", &["build"])]);
        let mut run = running(&cfg);

        assert!(fail_unplaceable(
            &mut run,
            "build",
            "no executor allows privileged containers",
            at(5)
        ));

        let build = &run.tasks["build"];
        assert_eq!(build.status, RunTaskStatus::Failed);
        assert_eq!(
            build.fail_error.as_deref(),
            Some("no executor allows privileged containers")
        );
        assert!(
            build.all_fetched(),
            "nothing to fetch from a task that never ran"
        );
        let adv = advance(&run, &cfg, &BTreeMap::new(), at(6));
        assert_eq!(adv.run.result, RunResult::Failed);
        assert_eq!(adv.run.phase, RunPhase::Finished);
        assert_eq!(adv.run.tasks["test"].status, RunTaskStatus::Skipped);
        assert!(adv.to_run.is_empty());
    }

    #[test]
    fn a_started_or_unknown_task_is_left_alone() {
        let cfg = config(vec![task("build", &[])]);
        let mut run = running(&cfg);
        run.tasks.get_mut("build").expect("build").status = RunTaskStatus::Running;
        let before = run.clone();
        assert!(!fail_unplaceable(&mut run, "build", "why", at(5)));
        assert!(!fail_unplaceable(&mut run, "nope", "why", at(5)));
        assert_eq!(run, before);
    }
}

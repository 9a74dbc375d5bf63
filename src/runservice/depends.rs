//! The evaluation of a task's parents: whether it must still wait, may run, or must be
//! skipped because a dependency condition does not hold; and the transitive ancestors of a
//! task in (level, name) order.
//!
//! Conditions: `on_success` matches a successful parent, `on_failure` a failed one,
//! `on_skipped` a skipped one; no condition means `on_success`. A task may run when, for
//! every parent, at least one of its conditions matches. A cancelled or stopped parent
//! matches no condition, so its children are skipped: a task that never ran, or was cut
//! short by a stop, gives its children nothing to build on (Agola does the same). A parent
//! missing from the run or the config (an invalid config) also matches nothing, so the run
//! can still finish instead of waiting forever.

use std::collections::{BTreeMap, BTreeSet};

use cairn_client::run::{Run, RunTaskStatus};
use cairn_client::runconfig::{DependCondition, RunConfig, RunConfigTask};

/// Where a task stands with respect to its parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// These parents (by name, sorted) have not finished.
    WaitingParents(Vec<String>),
    /// Every parent finished; the workspace archives of these (by name, sorted) are not in
    /// object storage yet.
    WaitingArchives(Vec<String>),
    /// Every parent finished as one of its conditions asks: the task may run.
    Matched,
    /// Some parent finished in a way none of its conditions accepts: the task is skipped.
    Unmatched,
}

/// The readiness of `task` given the current state of its parents in `run`.
pub fn readiness(run: &Run, config: &RunConfig, task: &RunConfigTask) -> Readiness {
    let mut waiting = BTreeSet::new();
    let mut unfetched = BTreeSet::new();
    let mut matched = true;
    for (parent_id, depend) in &task.depends {
        let (Some(parent), Some(parent_config)) =
            (run.tasks.get(parent_id), config.tasks.get(parent_id))
        else {
            matched = false;
            continue;
        };
        if !parent.status.is_finished() {
            waiting.insert(parent_config.name.clone());
            continue;
        }
        if !parent.archives_fetched() {
            unfetched.insert(parent_config.name.clone());
        }
        if !condition_matches(&depend.conditions, parent.status) {
            matched = false;
        }
    }
    if !waiting.is_empty() {
        Readiness::WaitingParents(waiting.into_iter().collect())
    } else if !unfetched.is_empty() {
        Readiness::WaitingArchives(unfetched.into_iter().collect())
    } else if matched {
        Readiness::Matched
    } else {
        Readiness::Unmatched
    }
}

/// Whether a parent that finished with `status` satisfies `conditions`.
pub fn condition_matches(conditions: &[DependCondition], status: RunTaskStatus) -> bool {
    let matches = |condition: &DependCondition| match condition {
        DependCondition::OnSuccess => status == RunTaskStatus::Success,
        DependCondition::OnFailure => status == RunTaskStatus::Failed,
        DependCondition::OnSkipped => status == RunTaskStatus::Skipped,
    };
    if conditions.is_empty() {
        matches(&DependCondition::OnSuccess)
    } else {
        conditions.iter().any(matches)
    }
}

/// Every transitive parent of `task`, sorted by (level, name).
pub fn ancestors<'c>(config: &'c RunConfig, task: &RunConfigTask) -> Vec<&'c RunConfigTask> {
    let mut seen: BTreeMap<&str, &'c RunConfigTask> = BTreeMap::new();
    let mut queue: Vec<&str> = task.depends.keys().map(String::as_str).collect();
    while let Some(id) = queue.pop() {
        let Some(parent) = config.tasks.get(id) else {
            continue;
        };
        if seen.insert(parent.id.as_str(), parent).is_none() {
            queue.extend(parent.depends.keys().map(String::as_str));
        }
    }
    let mut list: Vec<&RunConfigTask> = seen.into_values().collect();
    list.sort_by(|a, b| (a.level, &a.name).cmp(&(b.level, &b.name)));
    list
}

/// The config's tasks sorted by (level, name): parents before children.
pub fn in_level_order(config: &RunConfig) -> Vec<&RunConfigTask> {
    let mut list: Vec<&RunConfigTask> = config.tasks.values().collect();
    list.sort_by(|a, b| (a.level, &a.name).cmp(&(b.level, &b.name)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{config, running, set_status, task, with_conditions};
    use DependCondition::{OnFailure, OnSkipped, OnSuccess};
    use RunTaskStatus::{Cancelled, Failed, Skipped, Stopped, Success};

    #[test]
    fn each_condition_matches_exactly_its_parent_status() {
        let table: &[(&[DependCondition], RunTaskStatus, bool)] = &[
            (&[], Success, true),
            (&[], Failed, false),
            (&[], Skipped, false),
            (&[OnSuccess], Success, true),
            (&[OnSuccess], Failed, false),
            (&[OnFailure], Failed, true),
            (&[OnFailure], Success, false),
            (&[OnSkipped], Skipped, true),
            (&[OnSkipped], Success, false),
            (&[OnSuccess, OnFailure], Success, true),
            (&[OnSuccess, OnFailure], Failed, true),
            (&[OnSuccess, OnFailure], Skipped, false),
            (&[OnSuccess, OnFailure, OnSkipped], Cancelled, false),
            (&[OnSuccess, OnFailure, OnSkipped], Stopped, false),
        ];
        for (conditions, status, expected) in table {
            assert_eq!(
                condition_matches(conditions, *status),
                *expected,
                "{conditions:?} against a {status:?} parent"
            );
        }
    }

    #[test]
    fn a_task_waits_for_unfinished_parents_then_for_their_archives() {
        let mut parent = task("a", &[]);
        parent.steps = vec![cairn_client::runconfig::Step::SaveToWorkspace(
            Default::default(),
        )];
        let cfg = config(vec![parent, task("b", &[]), task("c", &["a", "b"])]);
        let mut run = running(&cfg);
        let c = &cfg.tasks["c"];
        assert_eq!(
            readiness(&run, &cfg, c),
            Readiness::WaitingParents(vec!["a".into(), "b".into()])
        );

        run.tasks.get_mut("a").expect("a").status = Success;
        set_status(&mut run, "b", Success);
        assert_eq!(
            readiness(&run, &cfg, c),
            Readiness::WaitingArchives(vec!["a".into()])
        );

        set_status(&mut run, "a", Success);
        assert_eq!(readiness(&run, &cfg, c), Readiness::Matched);
    }

    #[test]
    fn ancestors_are_transitive_and_sorted_by_level_then_name() {
        let cfg = config(vec![
            task("z-root", &[]),
            task("a-root", &[]),
            task("mid", &["z-root", "a-root"]),
            task("other", &[]),
            task("leaf", &["mid"]),
        ]);
        let names: Vec<&str> = ancestors(&cfg, &cfg.tasks["leaf"])
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, vec!["a-root", "z-root", "mid"]);
    }

    #[test]
    fn an_unmatched_condition_on_any_parent_means_skip() {
        let cfg = config(vec![
            task("a", &[]),
            task("b", &[]),
            with_conditions(task("c", &["a", "b"]), "b", &[OnFailure]),
        ]);
        let mut run = running(&cfg);
        set_status(&mut run, "a", Success);
        set_status(&mut run, "b", Success);
        assert_eq!(readiness(&run, &cfg, &cfg.tasks["c"]), Readiness::Unmatched);
    }
}

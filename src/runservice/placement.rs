//! Which executor gets a task ([`choose_executor`]), or why none can ([`NoExecutor`], whose
//! message answers "why is this task pending?"), and whether a fixed set of executors can
//! ever take it ([`never_placeable`]).
//!
//! An executor can take a task when it has the task's arch (if the task names one), carries
//! every label the task asks for with the same value, allows privileged containers if any
//! container of the task is privileged, and has spare capacity. Its load is the larger of
//! what it reports and what the store has assigned to it (heartbeats lag behind bursts of
//! ready tasks, Agola #218); `active_tasks_limit` 0 means no limit. Among the executors that
//! can, the least loaded wins, ties going to the smallest id, so work spreads evenly and the
//! choice is deterministic.

use std::collections::BTreeMap;

use cairn_client::executor::Executor;
use cairn_client::runconfig::{Arch, RunConfigTask};

/// Why no executor can take a task now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoExecutor {
    #[error("no executor is registered")]
    NoneRegistered,
    #[error("no executor has arch {}", .arch.as_str())]
    NoArch { arch: Arch },
    #[error("no executor has the labels {}", label_list(.labels))]
    NoLabels { labels: BTreeMap<String, String> },
    #[error("no executor allows privileged containers")]
    NoPrivileged,
    #[error("all {matching} matching executors are at capacity")]
    AllAtCapacity { matching: usize },
}

/// The id of the executor that should run `task`, given the registered `executors` and the
/// number of unfinished executor tasks the store has `assigned` to each (by executor id).
pub fn choose_executor(
    task: &RunConfigTask,
    executors: &[Executor],
    assigned: &BTreeMap<String, usize>,
) -> Result<String, NoExecutor> {
    let candidates = able(task, executors)?;
    let matching = candidates.len();
    candidates
        .into_iter()
        .map(|e| (load(e, assigned), e))
        .filter(|(load, e)| e.active_tasks_limit == 0 || *load < e.active_tasks_limit as usize)
        .min_by(|(la, a), (lb, b)| (la, &a.id).cmp(&(lb, &b.id)))
        .map(|(_, e)| e.id.clone())
        .ok_or(NoExecutor::AllAtCapacity { matching })
}

/// Why no executor of `executors`, a set that will never change (the embedded node of
/// `cairn run`), can ever take `task`, whatever their load: a foreign arch, labels nobody
/// has, privileged containers nobody allows. `None` when one can, or when none is
/// registered yet (the set is not known).
pub fn never_placeable(task: &RunConfigTask, executors: &[Executor]) -> Option<NoExecutor> {
    match able(task, executors) {
        Err(NoExecutor::NoneRegistered) | Ok(_) => None,
        Err(why) => Some(why),
    }
}

/// The executors that can take `task` when they have room, or why there is none.
fn able<'e>(
    task: &RunConfigTask,
    executors: &'e [Executor],
) -> Result<Vec<&'e Executor>, NoExecutor> {
    if executors.is_empty() {
        return Err(NoExecutor::NoneRegistered);
    }
    let mut candidates: Vec<&Executor> = executors.iter().collect();
    if let Some(arch) = task.runtime.arch {
        candidates.retain(|e| e.archs.contains(&arch));
        if candidates.is_empty() {
            return Err(NoExecutor::NoArch { arch });
        }
    }
    let labels = &task.runtime.labels;
    candidates.retain(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)));
    if candidates.is_empty() {
        return Err(NoExecutor::NoLabels {
            labels: labels.clone(),
        });
    }
    if task.runtime.containers.iter().any(|c| c.privileged) {
        candidates.retain(|e| e.allow_privileged);
        if candidates.is_empty() {
            return Err(NoExecutor::NoPrivileged);
        }
    }
    Ok(candidates)
}

fn load(executor: &Executor, assigned: &BTreeMap<String, usize>) -> usize {
    let reported = executor.active_tasks as usize;
    let scheduled = assigned.get(&executor.id).copied().unwrap_or(0);
    reported.max(scheduled)
}

fn label_list(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::task;
    use cairn_client::runconfig::Container;

    fn executor(id: &str, limit: u32, active: u32) -> Executor {
        Executor {
            id: id.to_string(),
            archs: vec![Arch::Amd64],
            active_tasks_limit: limit,
            active_tasks: active,
            ..Executor::default()
        }
    }

    fn none_assigned() -> BTreeMap<String, usize> {
        BTreeMap::new()
    }

    #[test]
    fn no_registered_executor_is_its_own_reason() {
        let err = choose_executor(&task("a", &[]), &[], &none_assigned());
        assert_eq!(err, Err(NoExecutor::NoneRegistered));
        assert_eq!(
            NoExecutor::NoneRegistered.to_string(),
            "no executor is registered"
        );
    }

    #[test]
    fn the_task_arch_must_be_among_the_executor_archs() {
        let mut t = task("a", &[]);
        t.runtime.arch = Some(Arch::Arm64);
        let err = choose_executor(&t, &[executor("x1", 0, 0)], &none_assigned())
            .expect_err("no arm64 executor");
        assert_eq!(err, NoExecutor::NoArch { arch: Arch::Arm64 });
        assert_eq!(err.to_string(), "no executor has arch arm64");

        let mut arm = executor("x2", 0, 0);
        arm.archs = vec![Arch::Amd64, Arch::Arm64];
        let pool = [executor("x1", 0, 0), arm];
        assert_eq!(
            choose_executor(&t, &pool, &none_assigned()),
            Ok("x2".into())
        );
    }

    #[test]
    fn every_task_label_must_be_carried_with_the_same_value() {
        let mut t = task("a", &[]);
        t.runtime.labels = BTreeMap::from([
            ("gpu".to_string(), "yes".to_string()),
            ("os".to_string(), "linux".to_string()),
        ]);
        let mut partial = executor("x1", 0, 0);
        partial.labels = BTreeMap::from([
            ("gpu".to_string(), "no".to_string()),
            ("os".to_string(), "linux".to_string()),
        ]);
        let err =
            choose_executor(&t, &[partial.clone()], &none_assigned()).expect_err("labels differ");
        assert_eq!(
            err.to_string(),
            "no executor has the labels {gpu=yes, os=linux}"
        );

        let mut full = executor("x2", 0, 0);
        full.labels = t.runtime.labels.clone();
        full.labels.insert("zone".into(), "eu".into());
        assert_eq!(
            choose_executor(&t, &[partial, full], &none_assigned()),
            Ok("x2".into())
        );
    }

    #[test]
    fn privileged_containers_need_an_executor_that_allows_them() {
        let mut t = task("a", &[]);
        t.runtime.containers = vec![Container {
            image: "docker:dind".into(),
            privileged: true,
            ..Container::default()
        }];
        let err = choose_executor(&t, &[executor("x1", 0, 0)], &none_assigned())
            .expect_err("not allowed");
        assert_eq!(err.to_string(), "no executor allows privileged containers");

        let mut allowing = executor("x2", 0, 0);
        allowing.allow_privileged = true;
        assert_eq!(
            choose_executor(&t, &[executor("x1", 0, 0), allowing], &none_assigned()),
            Ok("x2".into())
        );
    }

    #[test]
    fn capacity_counts_the_larger_of_reported_and_assigned_tasks() {
        let t = task("a", &[]);
        // x1 reports 0 running but the store already assigned it 2 (heartbeat lag);
        // x2 reports 2 running that the store no longer counts.
        let pool = [executor("x1", 2, 0), executor("x2", 2, 2)];
        let assigned = BTreeMap::from([("x1".to_string(), 2)]);
        let err = choose_executor(&t, &pool, &assigned).expect_err("both full");
        assert_eq!(err, NoExecutor::AllAtCapacity { matching: 2 });
        assert_eq!(err.to_string(), "all 2 matching executors are at capacity");

        let assigned = BTreeMap::from([("x1".to_string(), 1)]);
        assert_eq!(choose_executor(&t, &pool, &assigned), Ok("x1".into()));
    }

    #[test]
    fn the_least_loaded_executor_wins_and_ties_go_to_the_smallest_id() {
        let t = task("a", &[]);
        let pool = [
            executor("x3", 0, 1),
            executor("x2", 10, 4),
            executor("x1", 0, 1),
        ];
        let assigned = BTreeMap::from([("x1".to_string(), 3)]);
        assert_eq!(choose_executor(&t, &pool, &assigned), Ok("x3".into()));
        assert_eq!(
            choose_executor(&t, &pool, &none_assigned()),
            Ok("x1".into())
        );
    }

    #[test]
    fn a_limit_of_zero_means_unlimited() {
        let t = task("a", &[]);
        let assigned = BTreeMap::from([("x1".to_string(), 500)]);
        assert_eq!(
            choose_executor(&t, &[executor("x1", 0, 100)], &assigned),
            Ok("x1".into())
        );
    }

    #[test]
    fn a_fixed_set_can_never_take_a_task_it_lacks_the_arch_labels_or_privilege_for() {
        let foreign = Arch::Arm64;
        let mut arch = task("arch", &[]);
        arch.runtime.arch = Some(foreign);
        let mut labelled = task("labelled", &[]);
        labelled.runtime.labels = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
        let mut privileged = task("privileged", &[]);
        privileged.runtime.containers = vec![Container {
            image: "docker:dind".into(),
            privileged: true,
            ..Container::default()
        }];
        let pool = [executor("x1", 1, 1)];

        assert_eq!(
            never_placeable(&arch, &pool),
            Some(NoExecutor::NoArch { arch: foreign })
        );
        assert_eq!(
            never_placeable(&labelled, &pool).map(|e| e.to_string()),
            Some("no executor has the labels {gpu=yes}".to_string())
        );
        assert_eq!(
            never_placeable(&privileged, &pool),
            Some(NoExecutor::NoPrivileged)
        );
    }

    #[test]
    fn a_full_executor_or_an_empty_set_is_not_a_reason_to_give_up() {
        let t = task("a", &[]);
        // At capacity now, free later.
        assert_eq!(never_placeable(&t, &[executor("x1", 1, 1)]), None);
        // Nobody registered yet: the set is not known.
        assert_eq!(never_placeable(&t, &[]), None);
        let mut allowing = executor("x1", 0, 0);
        allowing.allow_privileged = true;
        let mut privileged = task("p", &[]);
        privileged.runtime.containers = vec![Container {
            privileged: true,
            ..Container::default()
        }];
        assert_eq!(never_placeable(&privileged, &[allowing]), None);
    }
}

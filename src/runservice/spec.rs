//! The [`ExecutorTaskSpecData`] of a task, generated from the run and its config every time
//! the task is handed to an executor (never stored: big, secret-bearing, derivable).
//!
//! - environment: the task's, overlaid by the run config's static environment, overlaid by
//!   the run's own environment (run-level values win), and last the run's identity
//!   (`CAIRN_RUN_ID`, `CAIRN_RUN_COUNTER`, `AGOLA_RUN_COUNTER`) taken from the run handed
//!   out, so a restart sees its own.
//! - cache prefix: the namespace of the config's cache group, else of the run group's
//!   root (see [`cache_namespace`](super::cache_namespace)).
//! - workspace operations: for every ancestor in (level, name) order, one operation per
//!   workspace archive of that ancestor whose save step succeeded. Agola listed every
//!   archive of every ancestor, so a child of an `on_skipped`/`on_failure` edge tried to
//!   restore archives that were never written; only archives that exist are listed here.

use cairn_client::executor::{ExecutorTaskSpecData, WorkspaceOperation};
use cairn_client::run::{ExecutorTaskPhase, Run};
use cairn_client::runconfig::RunConfig;

use super::cache_namespace::cache_namespace;
use super::depends::ancestors;

/// The spec data of task `task_id`, or `None` when the run or its config has no such task.
pub fn spec_data(run: &Run, config: &RunConfig, task_id: &str) -> Option<ExecutorTaskSpecData> {
    let task = config.tasks.get(task_id)?;
    run.tasks.get(task_id)?;

    let mut environment = task.environment.clone();
    environment.extend(config.static_environment.clone());
    environment.extend(config.environment.clone());
    // The run's own identity, from the run being handed out (never stored in its config,
    // so a restarted run sees its own id and counter), as Agola does for its counter.
    environment.extend(run_identity(run));

    let workspace_operations = ancestors(config, task)
        .into_iter()
        .filter_map(|ancestor| run.tasks.get(&ancestor.id))
        .flat_map(|ancestor| {
            ancestor
                .workspace_archives
                .iter()
                .filter(|index| {
                    ancestor
                        .steps
                        .get(**index)
                        .is_some_and(|s| s.phase == ExecutorTaskPhase::Success)
                })
                .map(|index| WorkspaceOperation {
                    task_id: ancestor.id.clone(),
                    step: *index,
                    overwrite: false,
                })
        })
        .collect();

    Some(ExecutorTaskSpecData {
        task_name: task.name.clone(),
        run_id: run.id.clone(),
        arch: task.runtime.arch,
        containers: task.runtime.containers.clone(),
        environment,
        working_dir: task.working_dir.clone(),
        shell: task.shell.clone(),
        user: task.user.clone(),
        privileged: task.runtime.containers.iter().any(|c| c.privileged),
        steps: task.steps.clone(),
        workspace_operations,
        docker_registries_auth: task.docker_registries_auth.clone(),
        cache_prefix: cache_namespace(config.cache_group.as_deref(), &run.group),
        timeout_secs: task.timeout_secs,
        source: config.source.clone(),
        secrets: secrets(task),
    })
}

/// The values the executor redacts from the task's logs: those of its secret environment
/// variables (wherever they are set) and its registry passwords and auths.
fn secrets(task: &cairn_client::runconfig::RunConfigTask) -> Vec<String> {
    let named = &task.secret_environment;
    let envs = std::iter::once(&task.environment)
        .chain(task.runtime.containers.iter().map(|c| &c.environment))
        .chain(task.steps.iter().filter_map(|s| match s {
            cairn_client::runconfig::Step::Run(r) => Some(&r.environment),
            _ => None,
        }));
    let from_env = envs
        .flat_map(|env| env.iter())
        .filter(|(k, _)| named.contains(*k))
        .map(|(_, v)| v.clone());
    let registries = task
        .docker_registries_auth
        .values()
        .flat_map(|a| [a.password.clone(), a.auth.clone()]);
    let mut out: Vec<String> = from_env
        .chain(registries)
        .filter(|v| !v.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `CAIRN_RUN_ID`, `CAIRN_RUN_COUNTER` and Agola's `AGOLA_RUN_COUNTER` of `run`.
fn run_identity(run: &Run) -> [(String, String); 3] {
    let counter = run.counter.to_string();
    [
        ("CAIRN_RUN_ID".to_string(), run.id.clone()),
        ("CAIRN_RUN_COUNTER".to_string(), counter.clone()),
        ("AGOLA_RUN_COUNTER".to_string(), counter),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{config, running, task};
    use cairn_client::runconfig::{
        Arch, Container, RegistryAuth, RunStep, SaveToWorkspaceStep, SourceRef, Step,
    };

    fn env(pairs: &[(&str, &str)]) -> cairn_client::runconfig::Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn saving(
        name: &str,
        parents: &[&str],
        saves: usize,
    ) -> cairn_client::runconfig::RunConfigTask {
        let mut t = task(name, parents);
        t.steps = vec![Step::Run(RunStep::default())];
        t.steps.extend(vec![
            Step::SaveToWorkspace(SaveToWorkspaceStep::default());
            saves
        ]);
        t
    }

    fn succeed_all_steps(run: &mut Run) {
        for t in run.tasks.values_mut() {
            for s in &mut t.steps {
                s.phase = ExecutorTaskPhase::Success;
            }
        }
    }

    #[test]
    fn the_run_environment_wins_over_the_static_one_which_wins_over_the_task_one() {
        let mut t = task("a", &[]);
        t.environment = env(&[("A", "task"), ("B", "task"), ("C", "task")]);
        let mut cfg = config(vec![t]);
        cfg.static_environment = env(&[("B", "static"), ("C", "static"), ("CI", "true")]);
        cfg.environment = env(&[("C", "run")]);
        let run = running(&cfg);
        let data = spec_data(&run, &cfg, "a").expect("task exists");
        assert_eq!(
            data.environment,
            env(&[
                ("A", "task"),
                ("AGOLA_RUN_COUNTER", "1"),
                ("B", "static"),
                ("C", "run"),
                ("CAIRN_RUN_COUNTER", "1"),
                ("CAIRN_RUN_ID", &run.id),
                ("CI", "true")
            ])
        );
    }

    #[test]
    fn the_run_id_and_counter_come_from_the_run_handed_out_not_from_its_config() {
        let mut cfg = config(vec![task("a", &[])]);
        // A config copied from an older run (as a restart does) with stale values.
        cfg.static_environment = env(&[
            ("CAIRN_RUN_ID", "0000000000000001"),
            ("CAIRN_RUN_COUNTER", "1"),
            ("AGOLA_RUN_COUNTER", "1"),
        ]);
        cfg.environment = env(&[("AGOLA_RUN_COUNTER", "99")]);
        let mut run = running(&cfg);
        run.id = "0000000000000007".into();
        run.counter = 7;
        let data = spec_data(&run, &cfg, "a").expect("task exists");
        assert_eq!(data.environment["CAIRN_RUN_ID"], "0000000000000007");
        assert_eq!(data.environment["CAIRN_RUN_COUNTER"], "7");
        assert_eq!(data.environment["AGOLA_RUN_COUNTER"], "7");
    }

    #[test]
    fn workspace_operations_list_ancestors_archives_by_level_then_name() {
        let cfg = config(vec![
            saving("zz-root", &[], 1),
            saving("aa-root", &[], 2),
            saving("unrelated", &[], 1),
            saving("mid", &["zz-root", "aa-root"], 1),
            saving("leaf", &["mid"], 1),
        ]);
        let mut run = running(&cfg);
        succeed_all_steps(&mut run);
        let ops: Vec<(String, usize)> = spec_data(&run, &cfg, "leaf")
            .expect("task exists")
            .workspace_operations
            .into_iter()
            .map(|op| (op.task_id, op.step))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("aa-root".to_string(), 1),
                ("aa-root".to_string(), 2),
                ("zz-root".to_string(), 1),
                ("mid".to_string(), 1),
            ]
        );
    }

    #[test]
    fn archives_that_were_never_saved_are_not_restored() {
        let cfg = config(vec![saving("a", &[], 1), saving("b", &["a"], 0)]);
        let run = running(&cfg);
        let data = spec_data(&run, &cfg, "b").expect("task exists");
        assert!(data.workspace_operations.is_empty());
    }

    #[test]
    fn the_cache_prefix_is_the_namespace_of_the_cache_group_else_of_the_run_group_root() {
        let mut cfg = config(vec![task("a", &[])]);
        let run = running(&cfg);
        assert_eq!(
            spec_data(&run, &cfg, "a").expect("exists").cache_prefix,
            cache_namespace(None, &run.group)
        );
        cfg.cache_group = Some("alice-4f2c".into());
        assert_eq!(
            spec_data(&run, &cfg, "a").expect("exists").cache_prefix,
            cache_namespace(Some("alice-4f2c"), &run.group)
        );
    }

    #[test]
    fn task_fields_are_copied_and_privileged_follows_the_containers() {
        let mut t = task("a", &[]);
        t.runtime.arch = Some(Arch::Arm64);
        t.runtime.containers = vec![
            Container {
                image: "rust:1".into(),
                ..Container::default()
            },
            Container {
                image: "docker:dind".into(),
                privileged: true,
                ..Container::default()
            },
        ];
        t.working_dir = "/src".into();
        t.shell = "/bin/bash -e".into();
        t.user = "builder".into();
        t.timeout_secs = Some(600);
        t.steps = vec![Step::Run(RunStep {
            command: "cargo test".into(),
            ..RunStep::default()
        })];
        t.docker_registries_auth
            .insert("ghcr.io".into(), RegistryAuth::default());
        let mut cfg = config(vec![t.clone()]);
        cfg.source = Some(SourceRef::Snapshot {
            object: "sources/1".into(),
        });
        let run = running(&cfg);

        let data = spec_data(&run, &cfg, "a").expect("task exists");
        assert_eq!(data.task_name, "a");
        assert_eq!(data.run_id, run.id);
        assert_eq!(data.arch, Some(Arch::Arm64));
        assert_eq!(data.containers, t.runtime.containers);
        assert!(data.privileged);
        assert_eq!(data.working_dir, "/src");
        assert_eq!(data.shell, "/bin/bash -e");
        assert_eq!(data.user, "builder");
        assert_eq!(data.timeout_secs, Some(600));
        assert_eq!(data.steps, t.steps);
        assert_eq!(data.docker_registries_auth, t.docker_registries_auth);
        assert_eq!(data.source, cfg.source);

        assert_eq!(spec_data(&run, &cfg, "missing"), None);
    }
}

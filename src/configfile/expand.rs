//! Expansion of one config run into the tasks of a run config: fresh ids, DAG levels,
//! depends keyed by parent id, `skip` from the task's `when`, approval, environment
//! with `from_variable` resolved, registry auth layered top → run → task, the innermost
//! `task_timeout`, and the defaults (`~/project`, `/bin/sh -e`). Also which runs of a
//! config match a git reference.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cairn_client::api::RefSpec;
use cairn_client::runconfig::{
    Container, Depend, Env, RegistryAuth, RunConfigTask, RunStep, Runtime, Step,
};
use uuid::Uuid;

use super::error::{ConfigError, ConfigErrors};
use super::model::{Config, ConfigRegistryAuth, ConfigRun, ConfigStep, ConfigTask, ConfigValue};
use super::when::when_matches;

pub const DEFAULT_WORKING_DIR: &str = "~/project";
pub const DEFAULT_SHELL: &str = "/bin/sh -e";

/// What a run is created for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpandContext {
    /// Selects tasks by their `when`.
    pub reference: RefSpec,
    /// Values for `from_variable`; unknown names resolve to "".
    pub variables: BTreeMap<String, String>,
    /// Keep only these tasks and all their ancestors; empty = all tasks.
    pub only_tasks: Vec<String>,
}

/// The runs of `config` whose `when` matches `reference` (all runs without `when`).
pub fn matching_runs<'a>(config: &'a Config, reference: &RefSpec) -> Vec<&'a ConfigRun> {
    config
        .runs
        .iter()
        .filter(|r| when_matches(r.when.as_ref(), reference))
        .collect()
}

/// The tasks, by id, of a new run of the config run named `run_name`.
pub fn expand(
    config: &Config,
    run_name: &str,
    ctx: &ExpandContext,
) -> Result<BTreeMap<String, RunConfigTask>, ConfigErrors> {
    let file = config.file.as_str();
    let Some(run) = config.run(run_name) else {
        return Err(ConfigErrors::single(ConfigError::new(
            file,
            0,
            0,
            "runs",
            format!("no run named \"{run_name}\""),
        )));
    };
    let kept = kept_tasks(file, run, &ctx.only_tasks)?;
    let ids: BTreeMap<&str, String> = run
        .tasks
        .iter()
        .filter(|t| kept.contains(t.name.as_str()))
        .map(|t| (t.name.as_str(), Uuid::new_v4().to_string()))
        .collect();
    let levels = levels(file, run, &kept)?;

    let mut tasks = BTreeMap::new();
    for task in run.tasks.iter().filter(|t| kept.contains(t.name.as_str())) {
        let id = ids[task.name.as_str()].clone();
        let depends = task
            .depends
            .iter()
            .filter_map(|d| {
                let parent = ids.get(d.task.as_str())?;
                Some((
                    parent.clone(),
                    Depend {
                        task_id: parent.clone(),
                        conditions: d.conditions.clone(),
                    },
                ))
            })
            .collect();
        let rct = RunConfigTask {
            id: id.clone(),
            name: task.name.clone(),
            level: levels[task.name.as_str()],
            depends,
            runtime: runtime(task, &ctx.variables),
            environment: env(&task.environment, &ctx.variables),
            working_dir: task
                .working_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_WORKING_DIR.to_string()),
            shell: task
                .shell
                .clone()
                .unwrap_or_else(|| DEFAULT_SHELL.to_string()),
            user: task.user.clone().unwrap_or_default(),
            steps: task.steps.iter().map(|s| step(s, &ctx.variables)).collect(),
            ignore_failure: task.ignore_failure,
            needs_approval: task.approval,
            skip: !when_matches(task.when.as_ref(), &ctx.reference),
            docker_registries_auth: registries(config, run, task, &ctx.variables),
            timeout_secs: task
                .task_timeout
                .or(run.task_timeout)
                .or(config.task_timeout)
                .filter(|&secs| secs > 0),
            secret_environment: secret_names(task),
            retry_lost: task.retry_lost,
        };
        tasks.insert(id, rct);
    }
    Ok(tasks)
}

/// Names of the tasks to create: `only` and their ancestors, or every task.
fn kept_tasks<'a>(
    file: &str,
    run: &'a ConfigRun,
    only: &[String],
) -> Result<BTreeSet<&'a str>, ConfigErrors> {
    if only.is_empty() {
        return Ok(run.tasks.iter().map(|t| t.name.as_str()).collect());
    }
    let unknown: Vec<ConfigError> = only
        .iter()
        .filter(|n| run.task(n).is_none())
        .map(|n| {
            run.loc.error(
                file,
                format!("run \"{}\" has no task named \"{n}\"", run.name),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ConfigErrors(unknown));
    }
    // The first task of a name, as `ConfigRun::task`.
    let mut by_name: HashMap<&str, &ConfigTask> = HashMap::new();
    for t in &run.tasks {
        by_name.entry(t.name.as_str()).or_insert(t);
    }
    let mut kept = BTreeSet::new();
    let mut todo: Vec<&ConfigTask> = only.iter().filter_map(|n| run.task(n)).collect();
    while let Some(task) = todo.pop() {
        if kept.insert(task.name.as_str()) {
            todo.extend(
                task.depends
                    .iter()
                    .filter_map(|d| by_name.get(d.task.as_str()).copied()),
            );
        }
    }
    Ok(kept)
}

/// Agola's level assignment: 0 without parents, else 1 + the deepest parent (among the
/// kept tasks); computed in topological order (Kahn's algorithm), linear in the tasks
/// and their dependencies rather than one pass over all tasks per level.
fn levels<'a>(
    file: &str,
    run: &'a ConfigRun,
    kept: &BTreeSet<&'a str>,
) -> Result<BTreeMap<&'a str, u32>, ConfigErrors> {
    let tasks: Vec<&ConfigTask> = run
        .tasks
        .iter()
        .filter(|t| kept.contains(t.name.as_str()))
        .collect();
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut waiting = vec![0usize; tasks.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        for d in &task.depends {
            if let Some(&p) = index.get(d.task.as_str()) {
                waiting[i] += 1;
                children[p].push(i);
            }
        }
    }
    let mut level = vec![0u32; tasks.len()];
    let mut ready: Vec<usize> = (0..tasks.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(p) = ready.pop() {
        done += 1;
        for &c in &children[p] {
            level[c] = level[c].max(level[p] + 1);
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    if done < tasks.len() {
        // Only a config that skipped validation can get here.
        return Err(ConfigErrors::single(run.loc.error(
            file,
            format!("run \"{}\" has a dependency cycle", run.name),
        )));
    }
    Ok(tasks
        .iter()
        .zip(level)
        .map(|(t, l)| (t.name.as_str(), l))
        .collect())
}

/// The names of the task's, its containers' and its steps' environment variables whose
/// values come from `from_variable` (their values are redacted from step logs).
fn secret_names(task: &ConfigTask) -> BTreeSet<String> {
    let containers = task.runtime.containers.iter().map(|c| &c.environment);
    let steps = task.steps.iter().filter_map(|s| match s {
        ConfigStep::Run(r) => Some(&r.environment),
        _ => None,
    });
    std::iter::once(&task.environment)
        .chain(containers)
        .chain(steps)
        .flat_map(|env| env.iter())
        .filter(|(_, v)| matches!(v, ConfigValue::FromVariable(_)))
        .map(|(k, _)| k.clone())
        .collect()
}

fn env(values: &BTreeMap<String, ConfigValue>, variables: &BTreeMap<String, String>) -> Env {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.resolve(variables)))
        .collect()
}

fn runtime(task: &ConfigTask, variables: &BTreeMap<String, String>) -> Runtime {
    Runtime {
        kind: task.runtime.kind,
        arch: task.runtime.arch,
        containers: task
            .runtime
            .containers
            .iter()
            .map(|c| Container {
                image: c.image.clone(),
                environment: env(&c.environment, variables),
                user: c.user.clone(),
                privileged: c.privileged,
                entrypoint: c.entrypoint.clone(),
                volumes: c.volumes.clone(),
            })
            .collect(),
        labels: task.runtime.labels.clone(),
    }
}

fn step(step: &ConfigStep, variables: &BTreeMap<String, String>) -> Step {
    match step {
        ConfigStep::Clone(c) => Step::Clone(c.clone()),
        ConfigStep::Run(r) => Step::Run(RunStep {
            name: r.name.clone(),
            command: r.command.clone(),
            environment: env(&r.environment, variables),
            working_dir: r.working_dir.clone(),
            shell: r.shell.clone(),
            tty: r.tty,
        }),
        ConfigStep::SaveToWorkspace(s) => Step::SaveToWorkspace(s.clone()),
        ConfigStep::RestoreWorkspace(s) => Step::RestoreWorkspace(s.clone()),
        ConfigStep::SaveCache(s) => Step::SaveCache(s.clone()),
        ConfigStep::RestoreCache(s) => Step::RestoreCache(s.clone()),
    }
}

/// Top level, then run, then task: an inner entry replaces an outer one for its host.
fn registries(
    config: &Config,
    run: &ConfigRun,
    task: &ConfigTask,
    variables: &BTreeMap<String, String>,
) -> BTreeMap<String, RegistryAuth> {
    let layers: [&BTreeMap<String, ConfigRegistryAuth>; 3] = [
        &config.docker_registries_auth,
        &run.docker_registries_auth,
        &task.docker_registries_auth,
    ];
    let mut out = BTreeMap::new();
    for layer in layers {
        for (host, auth) in layer {
            out.insert(
                host.clone(),
                RegistryAuth {
                    kind: auth.kind,
                    username: auth.username.resolve(variables),
                    password: auth.password.resolve(variables),
                    auth: auth.auth.resolve(variables),
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::parse;
    use cairn_client::runconfig::{DependCondition, RegistryAuthType};

    fn by_name(tasks: &BTreeMap<String, RunConfigTask>) -> BTreeMap<String, RunConfigTask> {
        tasks
            .values()
            .map(|t| (t.name.clone(), t.clone()))
            .collect()
    }

    fn typical(ctx: &ExpandContext) -> BTreeMap<String, RunConfigTask> {
        let config = parse("c.yml", crate::configfile::tests::TYPICAL)
            .expect("valid")
            .config;
        let tasks = expand(&config, "pipeline", ctx).expect("expands");
        for (id, t) in &tasks {
            assert_eq!(id, &t.id, "tasks are keyed by id");
            Uuid::parse_str(id).expect("a uuid");
        }
        by_name(&tasks)
    }

    fn on_branch(b: &str) -> ExpandContext {
        ExpandContext {
            reference: RefSpec {
                branch: Some(b.into()),
                ..RefSpec::default()
            },
            ..ExpandContext::default()
        }
    }

    #[test]
    fn the_minimal_example_expands_with_defaults() {
        let config = parse("c.yml", crate::configfile::tests::MINIMAL)
            .expect("valid")
            .config;
        let tasks = expand(&config, "ci", &ExpandContext::default()).expect("expands");
        let task = tasks.values().next().expect("one task");
        assert_eq!(task.level, 0);
        assert_eq!(task.working_dir, "~/project");
        assert_eq!(task.shell, "/bin/sh -e");
        assert_eq!(task.timeout_secs, None);
        assert!(!task.skip && !task.needs_approval);
        assert_eq!(task.runtime.containers[0].image, "golang:1.13");
        assert!(
            matches!(&task.steps[0], Step::Clone(c) if c.name == crate::configfile::CLONE_STEP_NAME)
        );
        assert!(matches!(&task.steps[1], Step::Run(r) if r.command == "go test ./..."));
    }

    #[test]
    fn levels_and_depends_follow_the_dag() {
        let t = typical(&on_branch("master"));
        assert_eq!(t["build"].level, 0);
        assert_eq!(t["test"].level, 1);
        assert_eq!(t["report failure"].level, 2);
        assert_eq!(t["deploy"].level, 2);
        let dep = &t["report failure"].depends[&t["test"].id];
        assert_eq!(dep.task_id, t["test"].id);
        assert_eq!(dep.conditions, [DependCondition::OnFailure]);
        assert!(t["test"].depends[&t["build"].id].conditions.is_empty());
        assert!(t["build"].depends.is_empty());
    }

    #[test]
    fn every_expansion_gets_fresh_ids() {
        let a = typical(&on_branch("master"));
        let b = typical(&on_branch("master"));
        assert_ne!(a["build"].id, b["build"].id);
    }

    #[test]
    fn when_sets_skip_and_approval_sets_needs_approval() {
        let t = typical(&on_branch("master"));
        assert!(t["deploy"].skip, "deploy only runs for v* tags");
        assert!(t["deploy"].needs_approval);
        assert!(!t["build"].skip);
        let on_tag = ExpandContext {
            reference: RefSpec {
                tag: Some("v1.2".into()),
                ..RefSpec::default()
            },
            ..ExpandContext::default()
        };
        assert!(!typical(&on_tag)["deploy"].skip);
    }

    #[test]
    fn variables_resolve_and_unknown_ones_are_empty() {
        let mut ctx = on_branch("master");
        ctx.variables
            .insert("registry_password".into(), "s3cret".into());
        let t = typical(&ctx);
        let auth = &t["test"].docker_registries_auth["registry.example.com"];
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("ci", "s3cret")
        );
        assert_eq!(t["build"].environment["GO111MODULE"], "on");
        let t = typical(&on_branch("master"));
        assert_eq!(
            t["test"].docker_registries_auth["registry.example.com"].password,
            ""
        );
    }

    const LAYERS: &str = "
task_timeout: 1h
docker_registries_auth:
  a.io: { username: top }
  b.io: { username: top }
  c.io: { username: top }
runs:
  - name: ci
    task_timeout: 30m
    docker_registries_auth:
      b.io: { username: run }
      c.io: { username: run }
    tasks:
      - name: inner
        task_timeout: 45s
        runtime: { containers: [ { image: a, environment: { X: { from_variable: x } } } ], labels: { gpu: 'true' } }
        docker_registries_auth:
          c.io: { type: encodedauth, auth: dGFzaw== }
        environment: { A: '1', B: { from_variable: b } }
        steps:
          - run: { command: make, environment: { C: { from_variable: c } } }
      - name: outer
        runtime: { containers: [ { image: a } ] }
  - name: other
    tasks:
      - name: t
        runtime: { containers: [ { image: a } ] }
";

    fn layers() -> BTreeMap<String, RunConfigTask> {
        let config = parse("c.yml", LAYERS).expect("valid").config;
        let ctx = ExpandContext {
            variables: [("x", "1"), ("b", "2"), ("c", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ExpandContext::default()
        };
        by_name(&expand(&config, "ci", &ctx).expect("expands"))
    }

    #[test]
    fn registry_auth_is_layered_top_run_task() {
        let t = layers();
        let users = |name: &str| -> Vec<(String, String)> {
            t[name]
                .docker_registries_auth
                .iter()
                .map(|(h, a)| (h.clone(), a.username.clone()))
                .collect()
        };
        assert_eq!(
            users("outer"),
            [
                ("a.io".into(), "top".into()),
                ("b.io".into(), "run".into()),
                ("c.io".into(), "run".into())
            ]
        );
        let c = &t["inner"].docker_registries_auth["c.io"];
        assert_eq!(c.kind, RegistryAuthType::Encodedauth);
        assert_eq!((c.username.as_str(), c.auth.as_str()), ("", "dGFzaw=="));
    }

    #[test]
    fn the_innermost_task_timeout_wins() {
        let t = layers();
        assert_eq!(t["inner"].timeout_secs, Some(45));
        assert_eq!(t["outer"].timeout_secs, Some(1800));
        let config = parse("c.yml", LAYERS).expect("valid").config;
        let other = expand(&config, "other", &ExpandContext::default()).expect("expands");
        assert_eq!(
            other.values().next().expect("a task").timeout_secs,
            Some(3600)
        );
    }

    #[test]
    fn environments_of_task_container_and_step_resolve() {
        let t = layers();
        let inner = &t["inner"];
        assert_eq!(inner.environment["A"], "1");
        assert_eq!(inner.environment["B"], "2");
        assert_eq!(inner.runtime.containers[0].environment["X"], "1");
        assert_eq!(inner.runtime.labels["gpu"], "true");
        let Step::Run(run) = &inner.steps[0] else {
            panic!("a run step")
        };
        assert_eq!(run.environment["C"], "3");
    }

    #[test]
    fn only_tasks_keeps_the_tasks_and_their_ancestors() {
        let mut ctx = on_branch("master");
        ctx.only_tasks = vec!["test".into()];
        let config = parse("c.yml", crate::configfile::tests::TYPICAL)
            .expect("valid")
            .config;
        let t = by_name(&expand(&config, "pipeline", &ctx).expect("expands"));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["build", "test"]);
        assert_eq!(t["test"].depends[&t["build"].id].task_id, t["build"].id);

        ctx.only_tasks = vec!["tset".into()];
        let e = expand(&config, "pipeline", &ctx).expect_err("unknown task");
        assert_eq!(
            e.0[0].message,
            "run \"pipeline\" has no task named \"tset\""
        );
    }

    #[test]
    fn an_unknown_run_is_an_error() {
        let config = parse("c.yml", crate::configfile::tests::MINIMAL)
            .expect("valid")
            .config;
        let e = expand(&config, "nope", &ExpandContext::default()).expect_err("no such run");
        assert_eq!(e.to_string(), "c.yml: runs: no run named \"nope\"");
    }

    #[test]
    fn matching_runs_applies_each_runs_when() {
        let yaml = "runs:\n  - name: always\n    tasks: [ { name: t, runtime: { containers: [ { image: a } ] } } ]\n  - name: releases\n    when: { tag: '/^v/' }\n    tasks: [ { name: t, runtime: { containers: [ { image: a } ] } } ]\n";
        let config = parse("c.yml", yaml).expect("valid").config;
        let names = |r: &RefSpec| -> Vec<String> {
            matching_runs(&config, r)
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(names(&on_branch("master").reference), ["always"]);
        let tag = RefSpec {
            tag: Some("v1".into()),
            ..RefSpec::default()
        };
        assert_eq!(names(&tag), ["always", "releases"]);
    }

    #[test]
    fn a_chain_at_the_task_limit_written_backwards_gets_its_levels_fast() {
        let n = crate::configfile::limits::MAX_TASKS;
        let mut yaml = String::from("runs:\n  - name: ci\n    tasks:\n");
        for i in (0..n).rev() {
            let depends = if i == 0 {
                String::new()
            } else {
                format!("t{}", i - 1)
            };
            yaml.push_str(&format!(
                "      - {{ name: t{i}, runtime: {{ containers: [ {{ image: a }} ] }}, depends: [{depends}] }}\n"
            ));
        }
        let config = parse("c.yml", &yaml).expect("valid").config;
        let started = std::time::Instant::now();
        let ctx = ExpandContext {
            only_tasks: vec![format!("t{}", n - 1)],
            ..on_branch("main")
        };
        let t = by_name(&expand(&config, "ci", &ctx).expect("expands"));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(t.len(), n);
        assert_eq!(t["t0"].level, 0);
        assert_eq!(t[&format!("t{}", n - 1)].level, n as u32 - 1);
    }
}

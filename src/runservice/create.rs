//! A new [`Run`] from its [`RunConfig`]: the initial phase (queued, or setuperror when the
//! config has setup errors) and one not-started [`RunTask`] per config task (none for a
//! setuperror run); and the run configs a creation request asks for
//! ([`resolve_request`], [`run_configs`]): the group check, the reference and commit, the
//! runs of the config that match, their expanded tasks and the static environment. The API
//! loads the config in between and writes the results.

use std::collections::BTreeMap;

use cairn_client::api::{CreateRunRequest, RefSpec};
use cairn_client::run::{FetchPhase, Run, RunPhase, RunResult, RunTask, RunTaskStatus, Time};
use cairn_client::runconfig::{RunConfig, RunConfigTask, SourceRef, Step};

use super::error::RunServiceError;
use super::reference::{self, PullRequestRefs};
use crate::configfile;

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

/// A creation request checked and resolved against its reference: what the config is
/// loaded with, and the fields every run of the request shares.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRequest {
    /// The run group, in canonical form.
    pub group: String,
    /// The reference the config's `when`s are matched against.
    pub reference: RefSpec,
    /// Agola's `ctx` for a config program (Jsonnet, Starlark).
    pub config_context: configfile::ConfigContext,
    /// Every run's config but its id, name, setup errors and tasks.
    template: RunConfig,
}

/// Checks a creation request and resolves its reference: the group must be an absolute
/// path of at least two segments, the commit sha and message well-formed, the reference a
/// branch, tag or pull request (by the request's own pull-request patterns if it gives
/// any, else `default_prs`).
pub fn resolve_request(
    req: &CreateRunRequest,
    default_prs: &PullRequestRefs,
) -> Result<ResolvedRequest, RunServiceError> {
    let group = reference::normalize_group(&req.group)
        .filter(|_| req.group.starts_with('/'))
        .filter(|g| g.split('/').filter(|s| !s.is_empty()).count() >= 2)
        .ok_or_else(|| RunServiceError::BadGroup {
            group: req.group.clone(),
        })?;
    reference::check_commit(req.commit_sha.as_deref(), req.message.as_deref())?;
    let own_prs;
    let prs = if req.pull_request_ref_regexes.is_empty() {
        default_prs
    } else {
        own_prs = PullRequestRefs::new(&req.pull_request_ref_regexes)?;
        &own_prs
    };
    let resolved = reference::classify(&req.reference, prs)?;
    let commit = commit(req);
    let config_context = configfile::ConfigContext {
        ref_type: resolved.ref_type.as_str().to_string(),
        git_ref: resolved.git_ref.clone(),
        branch: resolved.branch.clone(),
        tag: resolved.tag.clone(),
        pull_request_id: resolved.pull_request_id.clone(),
        commit_sha: commit.sha.clone(),
    };
    let template = RunConfig {
        id: String::new(),
        name: String::new(),
        group: group.clone(),
        setup_errors: Vec::new(),
        annotations: reference::annotations(&resolved, &commit, &group, &req.annotations),
        static_environment: reference::static_environment(&resolved, &commit, &group),
        environment: req.environment.clone(),
        tasks: Default::default(),
        cache_group: req.cache_group.clone(),
        source: req.source.clone(),
    };
    Ok(ResolvedRequest {
        group,
        reference: resolved.ref_spec(),
        config_context,
        template,
    })
}

/// The commit a request is for: its `commit_sha` (else a git source's commit), message
/// and a git source's URL.
fn commit(req: &CreateRunRequest) -> reference::Commit {
    let (url, source_commit) = match &req.source {
        Some(SourceRef::Git { url, commit, .. }) => (url.clone(), commit.clone()),
        _ => (String::new(), String::new()),
    };
    reference::Commit {
        sha: req
            .commit_sha
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or(source_commit),
        message: req.message.clone().unwrap_or_default(),
        repository_url: url,
    }
}

/// The run configs (ids empty, set when each is recorded) a request creates from its
/// loaded config, in the config's order:
///
/// - a config beyond Cairn's limits (size, counts, regexes, aliases) is refused, not
///   recorded: [`RunServiceError::Config`];
/// - any other config that cannot be parsed records one run (Agola's gateway), named
///   [`SETUP_ERROR_RUN_NAME`], with the positioned errors as its setup errors and no tasks;
/// - otherwise one config per run of the file matching the reference (only `run_name` if
///   the request names one), with its tasks expanded; none matching is
///   [`RunServiceError::NoRunNamed`] or [`RunServiceError::NoMatchingRun`].
pub fn run_configs(
    req: &CreateRunRequest,
    resolved: &ResolvedRequest,
    loaded: Result<configfile::Parsed, configfile::ConfigErrors>,
) -> Result<Vec<RunConfig>, RunServiceError> {
    let config = match loaded {
        Ok(parsed) => parsed.config,
        Err(errors) if errors.over_limit() => return Err(RunServiceError::Config(errors)),
        Err(errors) => {
            return Ok(vec![RunConfig {
                name: SETUP_ERROR_RUN_NAME.to_string(),
                setup_errors: errors.lines(),
                ..resolved.template.clone()
            }]);
        }
    };
    let mut names: Vec<String> = configfile::matching_runs(&config, &resolved.reference)
        .into_iter()
        .map(|r| r.name.clone())
        .collect();
    if let Some(only) = &req.run_name {
        names.retain(|n| n == only);
        if names.is_empty() {
            return Err(RunServiceError::NoRunNamed {
                path: req.config.path.clone(),
                name: only.clone(),
            });
        }
    }
    if names.is_empty() {
        return Err(RunServiceError::NoMatchingRun {
            path: req.config.path.clone(),
        });
    }
    let ctx = configfile::ExpandContext {
        reference: resolved.reference.clone(),
        variables: req.variables.clone(),
        only_tasks: req.tasks.clone(),
    };
    names
        .into_iter()
        .map(|name| {
            let tasks =
                configfile::expand(&config, &name, &ctx).map_err(RunServiceError::Config)?;
            Ok(RunConfig {
                name,
                tasks,
                ..resolved.template.clone()
            })
        })
        .collect()
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

    /// Two runs: `ci` always, `release` for tags only.
    const TWO_RUNS: &str = "runs:\n  - name: ci\n    tasks: [ { name: build, runtime: { containers: [ { image: a } ] }, steps: [ { run: make } ] } ]\n  - name: release\n    when: { tag: '/^v/' }\n    tasks: [ { name: publish, runtime: { containers: [ { image: a } ] } } ]\n";

    fn request(group: &str, branch: &str) -> CreateRunRequest {
        CreateRunRequest {
            group: group.into(),
            config: cairn_client::api::ConfigFile {
                path: ".agola/config.yml".into(),
                content: TWO_RUNS.into(),
            },
            reference: RefSpec {
                branch: Some(branch.into()),
                ..RefSpec::default()
            },
            commit_sha: Some("abc123".into()),
            ..CreateRunRequest::default()
        }
    }

    fn resolve(req: &CreateRunRequest) -> Result<ResolvedRequest, RunServiceError> {
        resolve_request(req, &PullRequestRefs::agola_default())
    }

    fn loaded(req: &CreateRunRequest) -> Result<configfile::Parsed, configfile::ConfigErrors> {
        configfile::parse(&req.config.path, &req.config.content)
    }

    #[test]
    fn a_group_must_be_absolute_with_at_least_two_segments() {
        for group in ["user/u1", "/user", "/", "/user/../x", ""] {
            let err = resolve(&request(group, "main")).expect_err(group);
            assert_eq!(
                err,
                RunServiceError::BadGroup {
                    group: group.into()
                }
            );
            assert_eq!(err.code(), cairn_client::ErrorCode::BadRequest);
        }
        let ok = resolve(&request("//user//u1/branch/main/", "main")).expect("valid group");
        assert_eq!(ok.group, "/user/u1/branch/main");
    }

    #[test]
    fn a_bad_commit_reference_or_pattern_is_refused() {
        let mut req = request("/user/u1", "main");
        req.commit_sha = Some("not a sha".into());
        assert!(matches!(
            resolve(&req),
            Err(RunServiceError::Reference(
                reference::ReferenceError::BadCommit(_)
            ))
        ));
        let mut req = request("/user/u1", "main");
        req.reference = RefSpec::default();
        assert_eq!(
            resolve(&req),
            Err(RunServiceError::Reference(
                reference::ReferenceError::Missing
            ))
        );
        let mut req = request("/user/u1", "main");
        req.pull_request_ref_regexes = vec!["(".into()];
        assert!(matches!(
            resolve(&req),
            Err(RunServiceError::Reference(
                reference::ReferenceError::BadPattern { .. }
            ))
        ));
    }

    #[test]
    fn a_request_resolves_its_reference_context_and_static_environment() {
        let req = request("/user/u1", "main");
        let resolved = resolve(&req).expect("valid");
        assert_eq!(resolved.reference.branch.as_deref(), Some("main"));
        assert_eq!(resolved.config_context.ref_type, "branch");
        assert_eq!(resolved.config_context.git_ref, "refs/heads/main");
        assert_eq!(resolved.config_context.commit_sha, "abc123");
        let env = &resolved.template.static_environment;
        assert_eq!(env["AGOLA_GIT_BRANCH"], "main");
        assert_eq!(env["CAIRN_GIT_COMMITSHA"], "abc123");
        assert_eq!(env["CAIRN_RUN_GROUP"], "/user/u1");
        assert_eq!(resolved.template.annotations["userid"], "u1");
        assert_eq!(resolved.template.annotations["branch"], "main");
    }

    #[test]
    fn only_the_runs_matching_the_reference_become_run_configs_with_expanded_tasks() {
        let mut req = request("/user/u1", "main");
        req.environment.insert("FOO".into(), "bar".into());
        req.cache_group = Some("shared".into());
        let resolved = resolve(&req).expect("valid");
        let configs = run_configs(&req, &resolved, loaded(&req)).expect("one run");
        assert_eq!(configs.len(), 1, "{configs:?}");
        let ci = &configs[0];
        assert_eq!(ci.name, "ci");
        assert_eq!(ci.id, "", "the id is given when the run is recorded");
        assert_eq!(ci.group, "/user/u1");
        assert!(ci.setup_errors.is_empty());
        assert_eq!(ci.tasks.len(), 1);
        assert_eq!(
            ci.tasks.values().next().map(|t| t.name.as_str()),
            Some("build")
        );
        assert_eq!(ci.environment["FOO"], "bar");
        assert_eq!(ci.cache_group.as_deref(), Some("shared"));
        assert_eq!(ci.static_environment, resolved.template.static_environment);

        let mut tag = request("/user/u1", "main");
        tag.reference = RefSpec {
            tag: Some("v1".into()),
            ..RefSpec::default()
        };
        let resolved = resolve(&tag).expect("valid");
        let names: Vec<String> = run_configs(&tag, &resolved, loaded(&tag))
            .expect("two runs")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, vec!["ci", "release"]);
    }

    #[test]
    fn a_named_run_must_match_and_some_run_must_match() {
        let mut req = request("/user/u1", "main");
        req.run_name = Some("release".into());
        let resolved = resolve(&req).expect("valid");
        let err = run_configs(&req, &resolved, loaded(&req)).expect_err("release is for tags");
        assert_eq!(
            err.to_string(),
            ".agola/config.yml: no run named \"release\" matches this reference"
        );
        req.run_name = Some("ci".into());
        let only = run_configs(&req, &resolved, loaded(&req)).expect("ci matches");
        assert_eq!(only.len(), 1);

        let mut req = request("/user/u1", "main");
        req.config.content = "runs:\n  - name: release\n    when: { tag: '/^v/' }\n    tasks: [ { name: t, runtime: { containers: [ { image: a } ] } } ]\n".into();
        let resolved = resolve(&req).expect("valid");
        assert_eq!(
            run_configs(&req, &resolved, loaded(&req)),
            Err(RunServiceError::NoMatchingRun {
                path: ".agola/config.yml".into()
            })
        );
    }

    #[test]
    fn an_unparsable_config_gives_one_setup_error_config_and_one_beyond_the_limits_is_refused() {
        let mut req = request("/user/u1", "main");
        req.config.content =
            "runs: [ { name: ci, tasks: [ { name: a, depends: [ a ] } ] } ]\n".into();
        let resolved = resolve(&req).expect("valid");
        let errors = loaded(&req).expect_err("a task depending on itself");
        let configs = run_configs(&req, &resolved, Err(errors.clone())).expect("recorded");
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].name, SETUP_ERROR_RUN_NAME);
        assert_eq!(configs[0].setup_errors, errors.lines());
        assert!(configs[0].tasks.is_empty());
        assert_eq!(new_run(&configs[0], 1, at(0)).phase, RunPhase::SetupError);

        let over = configfile::ConfigErrors::single(configfile::ConfigError::over_limit(
            ".agola/config.yml",
            1,
            1,
            "runs",
            "too many",
        ));
        assert_eq!(
            run_configs(&req, &resolved, Err(over.clone())),
            Err(RunServiceError::Config(over))
        );
    }
}

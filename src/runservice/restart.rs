//! Restarting a finished run as a new run: from scratch (every task re-runs), from its
//! failed tasks (successful tasks are kept, everything else and everything downstream of it
//! re-runs), or from a chosen set of tasks (those tasks and everything downstream of them
//! re-run, whatever their status; Agola issue 28).
//!
//! Re-run tasks get fresh ids, so their logs and archives never mix with the old run's;
//! kept tasks keep their id and their whole run-task state (status, steps, fetch phases),
//! so the new run reuses the logs and workspace archives already in object storage. That
//! is why restarting from failed tasks needs every successful task fully fetched.

use std::collections::{BTreeMap, BTreeSet};

use cairn_client::run::{Run, RunPhase, RunResult, RunTaskStatus, Time};
use cairn_client::runconfig::{Env, RunConfig};

use super::create::new_run;
use super::depends::in_level_order;
use super::error::RunServiceError;

const RESTARTABLE: &[RunPhase] = &[RunPhase::Finished, RunPhase::Cancelled];

/// Which tasks of the old run re-run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartFrom {
    /// Every task.
    Start,
    /// Every task that did not succeed, and everything below one.
    Failed,
    /// These tasks (by name or id), everything below them, and any task that never
    /// finished; the others are kept with their results.
    Tasks(Vec<String>),
}

impl RestartFrom {
    /// The selection of a restart request: `tasks`, when given, excludes `from_start`.
    pub fn of_request(from_start: bool, tasks: &[String]) -> Result<RestartFrom, RunServiceError> {
        match (from_start, tasks.is_empty()) {
            (true, false) => Err(RunServiceError::BadRestart {
                reason: "restart either from the start or from chosen tasks, not both".into(),
            }),
            (true, true) => Ok(RestartFrom::Start),
            (false, true) => Ok(RestartFrom::Failed),
            (false, false) => Ok(RestartFrom::Tasks(tasks.to_vec())),
        }
    }
}

/// The run is over (finished or cancelled; a setuperror run has nothing to restart).
pub fn can_restart_from_scratch(run: &Run) -> bool {
    run.phase.is_finished() && run.phase != RunPhase::SetupError
}

/// The run is over, did not succeed, and every successful task's logs and archives are in
/// object storage (the new run reuses them).
pub fn can_restart_from_failed(run: &Run) -> bool {
    can_restart_from_scratch(run)
        && run.result != RunResult::Success
        && run
            .tasks
            .values()
            .filter(|t| t.status == RunTaskStatus::Success)
            .all(|t| t.all_fetched())
}

/// Checks that `old_run` can be restarted as `from` says, without building anything (the
/// API answers before allocating a run id).
pub fn check_restart(
    old_run: &Run,
    old_config: &RunConfig,
    from: &RestartFrom,
) -> Result<(), RunServiceError> {
    rerun_tasks(old_run, old_config, from).map(|_| ())
}

/// A restart asked for: of which run (with its config), which of its tasks re-run, the
/// environment of the new run, and when it is enqueued.
#[derive(Clone, Copy, Debug)]
pub struct Restart<'a> {
    pub old_run: &'a Run,
    pub old_config: &'a RunConfig,
    pub from: &'a RestartFrom,
    /// When given, replaces the run-level environment.
    pub environment: Option<&'a Env>,
    /// When the new run is enqueued.
    pub now: Time,
}

/// The config and run of the restart `request` as run `new_id`, number `counter`.
/// `new_task_id` is called once per re-run task, in (level, name) order.
pub fn restart(
    request: &Restart<'_>,
    new_id: &str,
    counter: u64,
    new_task_id: &mut dyn FnMut() -> String,
) -> Result<(RunConfig, Run), RunServiceError> {
    let Restart {
        old_run,
        old_config,
        from,
        environment,
        now,
    } = *request;
    let rerun = rerun_tasks(old_run, old_config, from)?;
    let ids: BTreeMap<String, String> = in_level_order(old_config)
        .into_iter()
        .map(|task| {
            let id = if rerun.contains(task.id.as_str()) {
                new_task_id()
            } else {
                task.id.clone()
            };
            (task.id.clone(), id)
        })
        .collect();
    let renamed = |id: &String| ids.get(id).cloned().unwrap_or_else(|| id.clone());

    let mut config = old_config.clone();
    config.id = new_id.to_string();
    if let Some(environment) = environment {
        config.environment = environment.clone();
    }
    config.tasks = old_config
        .tasks
        .values()
        .map(|task| {
            let mut task = task.clone();
            task.id = renamed(&task.id);
            task.depends = task
                .depends
                .into_values()
                .map(|mut depend| {
                    depend.task_id = renamed(&depend.task_id);
                    (depend.task_id.clone(), depend)
                })
                .collect();
            (task.id.clone(), task)
        })
        .collect();

    let mut run = new_run(&config, counter, now);
    for (id, task) in &mut run.tasks {
        if !rerun.contains(id.as_str())
            && let Some(old) = old_run.tasks.get(id)
        {
            *task = old.clone();
        }
    }
    Ok((config, run))
}

fn check_restartable(run: &Run, from: &RestartFrom) -> Result<(), RunServiceError> {
    if !can_restart_from_scratch(run) {
        return Err(RunServiceError::InvalidPhase {
            run_id: run.id.clone(),
            expected: RESTARTABLE,
            found: run.phase,
        });
    }
    if *from != RestartFrom::Failed || can_restart_from_failed(run) {
        return Ok(());
    }
    let reason = if run.result == RunResult::Success {
        "it succeeded: restart it from the start"
    } else {
        "the logs and archives of its successful tasks are not in object storage yet"
    };
    Err(RunServiceError::CannotRestart {
        run_id: run.id.clone(),
        reason: reason.to_string(),
    })
}

/// Old ids of the tasks to re-run, after checking that the run can restart that way: all
/// when from the start; from failed tasks, every task that did not succeed; from chosen
/// tasks, those and any task that never finished; and, transitively, every descendant of
/// one. Every task kept must have its logs and archives in object storage.
fn rerun_tasks<'c>(
    run: &Run,
    config: &'c RunConfig,
    from: &RestartFrom,
) -> Result<BTreeSet<&'c str>, RunServiceError> {
    check_restartable(run, from)?;
    let chosen: BTreeSet<&str> = match from {
        RestartFrom::Tasks(names) => chosen_tasks(run, config, names)?,
        _ => BTreeSet::new(),
    };
    let mut rerun: BTreeSet<&str> = BTreeSet::new();
    // Parents come first in level order, so one pass reaches every descendant.
    for task in in_level_order(config) {
        let status = run.tasks.get(&task.id).map(|t| t.status);
        let below_rerun = task.depends.keys().any(|p| rerun.contains(p.as_str()));
        let selected = match from {
            RestartFrom::Start => true,
            RestartFrom::Failed => status != Some(RunTaskStatus::Success),
            RestartFrom::Tasks(_) => {
                chosen.contains(task.id.as_str()) || !status.is_some_and(|s| s.is_finished())
            }
        };
        if selected || below_rerun {
            rerun.insert(task.id.as_str());
        }
    }
    let unfetched: Vec<&str> = config
        .tasks
        .values()
        .filter(|t| !rerun.contains(t.id.as_str()))
        .filter(|t| run.tasks.get(&t.id).is_some_and(|rt| !rt.all_fetched()))
        .map(|t| t.name.as_str())
        .collect();
    if !unfetched.is_empty() {
        return Err(RunServiceError::CannotRestart {
            run_id: run.id.clone(),
            reason: format!(
                "the logs and archives of the tasks it would keep ({}) are not in object storage yet",
                unfetched.join(", ")
            ),
        });
    }
    Ok(rerun)
}

/// The ids of the tasks named (by name or id) in `names`; unknown names are an error that
/// lists them and the run's task names.
fn chosen_tasks<'c>(
    run: &Run,
    config: &'c RunConfig,
    names: &[String],
) -> Result<BTreeSet<&'c str>, RunServiceError> {
    let mut chosen = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in names {
        match config
            .tasks
            .get(name)
            .or_else(|| config.tasks.values().find(|t| &t.name == name))
        {
            Some(task) => {
                chosen.insert(task.id.as_str());
            }
            None => unknown.push(name.clone()),
        }
    }
    if unknown.is_empty() {
        return Ok(chosen);
    }
    let mut known: Vec<String> = config.tasks.values().map(|t| t.name.clone()).collect();
    known.sort();
    Err(RunServiceError::UnknownTasks {
        run_id: run.id.clone(),
        unknown,
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{at, config, running, set_status, task};
    use RunTaskStatus::{Failed, Skipped, Success};
    use cairn_client::run::FetchPhase;

    /// a → b → c, a → d, e alone: a, d and e succeeded, b failed, c was skipped.
    fn failed_run() -> (RunConfig, Run) {
        let mut cfg = config(vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &["a"]),
            task("e", &[]),
        ]);
        cfg.environment = Env::from([("V".to_string(), "1".to_string())]);
        let mut run = running(&cfg);
        for (id, status) in [
            ("a", Success),
            ("b", Failed),
            ("c", Skipped),
            ("d", Success),
            ("e", Success),
        ] {
            set_status(&mut run, id, status);
        }
        run.tasks.get_mut("a").expect("a").start_time = Some(at(3));
        run.result = RunResult::Failed;
        run.phase = RunPhase::Finished;
        run.end_time = Some(at(9));
        run.archived = true;
        (cfg, run)
    }

    fn counter_ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("new{n}")
        }
    }

    #[test]
    fn restarting_from_failed_re_runs_failed_tasks_and_their_descendants_only() {
        let (old_cfg, old_run) = failed_run();
        let (cfg, run) = restart(
            &Restart {
                old_run: &old_run,
                old_config: &old_cfg,
                from: &RestartFrom::Failed,
                environment: None,
                now: at(20),
            },
            "run2",
            8,
            &mut counter_ids(),
        )
        .expect("restartable");

        // b (level 1) then c (level 2) get fresh ids, in level order.
        let names: BTreeMap<&str, &str> = cfg
            .tasks
            .values()
            .map(|t| (t.name.as_str(), t.id.as_str()))
            .collect();
        assert_eq!(
            names,
            BTreeMap::from([
                ("a", "a"),
                ("b", "new1"),
                ("c", "new2"),
                ("d", "d"),
                ("e", "e")
            ])
        );
        assert_eq!(cfg.id, "run2");
        assert_eq!(
            cfg.tasks["new1"].depends.keys().collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(cfg.tasks["new2"].depends["new1"].task_id, "new1");
        assert_eq!(cfg.environment, old_cfg.environment, "kept when not given");

        assert_eq!(run.id, "run2");
        assert_eq!(run.counter, 8);
        assert_eq!(run.phase, RunPhase::Queued);
        assert_eq!(run.result, RunResult::Unknown);
        assert!(!run.stop && !run.archived);
        assert_eq!(run.enqueue_time, Some(at(20)));
        assert_eq!((run.start_time, run.end_time), (None, None));
        assert_eq!(run.tasks["a"], old_run.tasks["a"], "kept with its state");
        assert_eq!(run.tasks["a"].start_time, Some(at(3)));
        assert_eq!(run.tasks["d"].status, Success);
        assert_eq!(run.tasks["new1"].status, RunTaskStatus::NotStarted);
        assert_eq!(run.tasks["new2"].status, RunTaskStatus::NotStarted);
        assert_eq!(
            run.tasks["new1"].setup_step.log_phase,
            FetchPhase::NotStarted
        );
    }

    #[test]
    fn restarting_from_scratch_re_runs_everything_with_a_new_environment() {
        let (old_cfg, old_run) = failed_run();
        let env = Env::from([("V".to_string(), "2".to_string())]);
        let (cfg, run) = restart(
            &Restart {
                old_run: &old_run,
                old_config: &old_cfg,
                from: &RestartFrom::Start,
                environment: Some(&env),
                now: at(20),
            },
            "run2",
            8,
            &mut counter_ids(),
        )
        .expect("restartable");
        let ids: BTreeSet<&str> = cfg.tasks.keys().map(String::as_str).collect();
        assert_eq!(
            ids,
            BTreeSet::from(["new1", "new2", "new3", "new4", "new5"])
        );
        assert_eq!(cfg.environment, env);
        assert!(
            run.tasks
                .values()
                .all(|t| t.status == RunTaskStatus::NotStarted)
        );
        let by_name: BTreeMap<&str, &str> = cfg
            .tasks
            .values()
            .map(|t| (t.name.as_str(), t.id.as_str()))
            .collect();
        let c = &cfg.tasks[by_name["c"]];
        assert_eq!(c.depends.keys().collect::<Vec<_>>(), vec![by_name["b"]]);
    }

    fn names_by_id(cfg: &RunConfig) -> BTreeMap<&str, &str> {
        cfg.tasks
            .values()
            .map(|t| (t.name.as_str(), t.id.as_str()))
            .collect()
    }

    #[test]
    fn restarting_chosen_tasks_re_runs_them_and_their_descendants_only() {
        let (old_cfg, old_run) = failed_run();
        // b failed, but only a (and so b, c, d below it) is asked for; e is kept.
        let (cfg, run) = restart(
            &Restart {
                old_run: &old_run,
                old_config: &old_cfg,
                from: &RestartFrom::Tasks(vec!["a".into()]),
                environment: None,
                now: at(20),
            },
            "run2",
            8,
            &mut counter_ids(),
        )
        .expect("restartable");
        let names = names_by_id(&cfg);
        assert_eq!(names["e"], "e", "kept");
        assert_eq!(run.tasks["e"], old_run.tasks["e"]);
        for name in ["a", "b", "c", "d"] {
            assert!(names[name].starts_with("new"), "{name} re-runs");
            assert_eq!(run.tasks[names[name]].status, RunTaskStatus::NotStarted);
        }

        // Two chosen tasks of a successful run: d and e re-run, a and b/c are kept.
        let mut ok_run = old_run.clone();
        ok_run.result = RunResult::Success;
        let (cfg, run) = restart(
            &Restart {
                old_run: &ok_run,
                old_config: &old_cfg,
                from: &RestartFrom::Tasks(vec!["d".into(), "e".into()]),
                environment: None,
                now: at(21),
            },
            "run3",
            9,
            &mut counter_ids(),
        )
        .expect("a successful run restarts from chosen tasks");
        let names = names_by_id(&cfg);
        // Level order (level, name): e (0) before d (1).
        assert_eq!((names["e"], names["d"]), ("new1", "new2"));
        for name in ["a", "b", "c"] {
            assert_eq!(names[name], name, "{name} kept");
            assert_eq!(run.tasks[name], ok_run.tasks[name]);
        }
    }

    #[test]
    fn restarting_unknown_tasks_is_refused_naming_them_and_the_known_ones() {
        let (cfg, run) = failed_run();
        let refused = restart(
            &Restart {
                old_run: &run,
                old_config: &cfg,
                from: &RestartFrom::Tasks(vec!["a".into(), "nope".into(), "zilch".into()]),
                environment: None,
                now: at(5),
            },
            "run2",
            2,
            &mut counter_ids(),
        );
        let err = refused.expect_err("unknown tasks");
        assert_eq!(
            err,
            RunServiceError::UnknownTasks {
                run_id: "run1".into(),
                unknown: vec!["nope".into(), "zilch".into()],
                known: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            }
        );
        assert_eq!(err.code(), cairn_client::ErrorCode::BadRequest);
        assert!(
            err.to_string().contains("no task named nope, zilch"),
            "{err}"
        );
        assert_eq!(
            RestartFrom::of_request(true, &["a".into()]),
            Err(RunServiceError::BadRestart {
                reason: "restart either from the start or from chosen tasks, not both".into()
            })
        );
        assert_eq!(RestartFrom::of_request(false, &[]), Ok(RestartFrom::Failed));
        assert_eq!(RestartFrom::of_request(true, &[]), Ok(RestartFrom::Start));
    }

    #[test]
    fn restarting_chosen_tasks_needs_the_kept_tasks_in_object_storage() {
        let (cfg, mut run) = failed_run();
        run.tasks.get_mut("e").expect("e").setup_step.log_phase = FetchPhase::NotStarted;
        let refused = restart(
            &Restart {
                old_run: &run,
                old_config: &cfg,
                from: &RestartFrom::Tasks(vec!["b".into()]),
                environment: None,
                now: at(5),
            },
            "run2",
            2,
            &mut counter_ids(),
        );
        assert!(matches!(
            refused,
            Err(RunServiceError::CannotRestart { ref reason, .. })
                if reason.contains("(e)") && reason.contains("object storage")
        ));
        assert!(
            check_restart(&run, &cfg, &RestartFrom::Tasks(vec!["e".into()])).is_ok(),
            "e itself re-runs"
        );
    }

    #[test]
    fn a_running_run_cannot_be_restarted() {
        let cfg = config(vec![task("a", &[])]);
        let run = running(&cfg);
        for from in [
            RestartFrom::Start,
            RestartFrom::Failed,
            RestartFrom::Tasks(vec!["a".into()]),
        ] {
            let refused = restart(
                &Restart {
                    old_run: &run,
                    old_config: &cfg,
                    from: &from,
                    environment: None,
                    now: at(5),
                },
                "run2",
                2,
                &mut counter_ids(),
            );
            assert_eq!(
                refused,
                Err(RunServiceError::InvalidPhase {
                    run_id: "run1".into(),
                    expected: RESTARTABLE,
                    found: RunPhase::Running,
                })
            );
        }
        assert!(!can_restart_from_scratch(&run));
    }

    #[test]
    fn which_runs_can_be_restarted() {
        let (_, failed) = failed_run();
        assert!(can_restart_from_scratch(&failed));
        assert!(can_restart_from_failed(&failed));

        let mut succeeded = failed.clone();
        succeeded.result = RunResult::Success;
        assert!(can_restart_from_scratch(&succeeded));
        assert!(!can_restart_from_failed(&succeeded));

        let mut unfetched = failed.clone();
        unfetched
            .tasks
            .get_mut("a")
            .expect("a")
            .steps
            .push(Default::default());
        assert!(!can_restart_from_failed(&unfetched));

        let mut setup_error = failed.clone();
        setup_error.phase = RunPhase::SetupError;
        assert!(!can_restart_from_scratch(&setup_error));

        let mut cancelled = failed;
        cancelled.phase = RunPhase::Cancelled;
        assert!(can_restart_from_scratch(&cancelled));
    }

    #[test]
    fn restarting_a_successful_run_from_failed_tasks_is_refused_with_a_reason() {
        let (cfg, mut run) = failed_run();
        run.result = RunResult::Success;
        let refused = restart(
            &Restart {
                old_run: &run,
                old_config: &cfg,
                from: &RestartFrom::Failed,
                environment: None,
                now: at(5),
            },
            "run2",
            2,
            &mut counter_ids(),
        );
        assert!(matches!(
            refused,
            Err(RunServiceError::CannotRestart { ref reason, .. }) if reason.contains("succeeded")
        ));

        let (cfg, mut run) = failed_run();
        run.tasks.get_mut("d").expect("d").setup_step.log_phase = FetchPhase::NotStarted;
        let refused = restart(
            &Restart {
                old_run: &run,
                old_config: &cfg,
                from: &RestartFrom::Failed,
                environment: None,
                now: at(5),
            },
            "run2",
            2,
            &mut counter_ids(),
        );
        assert!(matches!(
            refused,
            Err(RunServiceError::CannotRestart { ref reason, .. })
                if reason.contains("object storage")
        ));
        assert!(
            restart(
                &Restart {
                    old_run: &run,
                    old_config: &cfg,
                    from: &RestartFrom::Start,
                    environment: None,
                    now: at(5),
                },
                "run2",
                2,
                &mut counter_ids(),
            )
            .is_ok(),
            "from scratch reuses nothing"
        );
    }
}

//! The scheduler over a one-node in-process store ([`TestStore`]), through its public
//! surface: [`Scheduler::spawn`] and the store. The tests in paused time
//! (`start_paused`) drive the scheduler's own clock — its sweep — by advancing tokio's
//! time, so what takes seconds in production takes none here. Store leases cannot be
//! expired that way (the store's lessor runs on `std::time::Instant`): an executor's
//! lease running out is replayed by revoking it, which deletes its registration the same
//! way.

use std::collections::BTreeMap;

use cairn_client::executor::{Executor, ExecutorTask};
use cairn_client::run::{ExecutorTaskPhase, Run, RunPhase, RunResult, RunTaskStatus};
use cairn_client::runconfig::{Arch, RunConfig};
use tokio::time::Instant;

use super::*;
use crate::configfile;
use crate::datamanager::blobs::Blobs;
use crate::datamanager::testing::{CHAIN, ONE_TASK, TestError, TestStore};
use crate::runservice;

const GROUP: &str = "/project/p/branch/main";

/// A spawned scheduler with its maintenance switch and quiet signal.
struct Running {
    scheduler: Scheduler,
    mode: tokio::sync::watch::Sender<bool>,
    quiet: tokio::sync::watch::Receiver<bool>,
}

/// A scheduler over `kv` with `config`, whose maintenance switch starts as `maintenance`.
fn spawn(kv: Kv, maintenance: bool, config: SchedulerConfig) -> Running {
    let blobs = Blobs::open("memory:").expect("memory blobs");
    spawn_with(kv, blobs, maintenance, config)
}

/// [`spawn`] over the object storage `blobs`.
fn spawn_with(kv: Kv, blobs: Blobs, maintenance: bool, config: SchedulerConfig) -> Running {
    let (mode, mode_rx) = tokio::sync::watch::channel(maintenance);
    let (quiet_tx, quiet) = tokio::sync::watch::channel(false);
    let scheduler = Scheduler::spawn(
        kv,
        LogStore::new(blobs.clone()),
        blobs,
        config,
        Arc::new(AtomicBool::new(false)),
        ModeSignals {
            mode: mode_rx,
            quiet: quiet_tx,
        },
        Default::default(),
        CancellationToken::new(),
    );
    Running {
        scheduler,
        mode,
        quiet,
    }
}

/// A scheduler over `kv` whose maintenance switch starts as `maintenance`.
fn scheduler(kv: Kv, maintenance: bool) -> (Scheduler, tokio::sync::watch::Sender<bool>) {
    let s = spawn(
        kv,
        maintenance,
        SchedulerConfig {
            sweep_every: Duration::from_millis(200),
            ..SchedulerConfig::default()
        },
    );
    (s.scheduler, s.mode)
}

/// The default config, but a task lost with its executor fails at once.
fn without_retries() -> SchedulerConfig {
    SchedulerConfig {
        retry_lost_tasks: 0,
        ..SchedulerConfig::default()
    }
}

/// Creates the run `ci` of the YAML `config` in [`GROUP`], as the API does; its id and
/// its task ids by name.
async fn create(dm: &Datamanager, config: &str) -> (String, BTreeMap<String, String>) {
    let parsed = configfile::load(
        ".agola/config.yml",
        config,
        &configfile::ConfigContext::default(),
    )
    .expect("a valid config");
    let tasks = configfile::expand(&parsed.config, "ci", &configfile::ExpandContext::default())
        .expect("the run expands");
    let created = dm
        .create_run(GROUP, |id, counter| {
            let config = RunConfig {
                id: id.to_string(),
                name: "ci".into(),
                group: GROUP.to_string(),
                tasks: tasks.clone(),
                ..RunConfig::default()
            };
            let run = runservice::new_run(&config, counter, chrono::Utc::now());
            (config, run)
        })
        .await
        .expect("create");
    let ids = created
        .config
        .tasks
        .values()
        .map(|t| (t.name.clone(), t.id.clone()))
        .collect();
    (created.run.value.id, ids)
}

/// Registers executor `id` (this host's architecture) under `lease` (0: none).
async fn register(dm: &Datamanager, id: &str, lease: i64) {
    dm.put_executor(&Executor {
        id: id.to_string(),
        archs: Arch::host().into_iter().collect(),
        lease,
        ..Executor::default()
    })
    .await
    .expect("register");
}

/// Polls `check` every 10 ms (of tokio's clock: no wait at all in paused time) until it
/// returns `Some`; fails after `within`.
async fn until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The task ids handed to executor `id`.
async fn handed_to(dm: &Datamanager, id: &str) -> Vec<String> {
    let (tasks, _) = dm.executor_tasks_of(id).await.expect("executor tasks");
    tasks.into_iter().map(|et| et.value.id).collect()
}

/// Reports `phase` as the finished status of `task_id`'s executor task (every step
/// ended the same way), as its executor would.
async fn report(dm: &Datamanager, task_id: &str, phase: ExecutorTaskPhase) {
    let et = dm
        .executor_task(task_id)
        .await
        .expect("read")
        .expect("the task was handed out");
    let now = chrono::Utc::now();
    let mut next: ExecutorTask = et.value.clone();
    next.status.phase = phase;
    next.status.start_time = Some(now);
    next.status.end_time = Some(now);
    next.status.setup_step.phase = ExecutorTaskPhase::Success;
    for step in &mut next.status.steps {
        step.phase = phase;
        step.exit_status = Some(i32::from(phase != ExecutorTaskPhase::Success));
    }
    dm.update_executor_task(&et, &next).await.expect("report");
}

async fn run(dm: &Datamanager, id: &str) -> Run {
    dm.run(id).await.expect("run").value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_recorded_while_the_scheduler_is_stopped_is_applied_once_it_runs() {
    let st = TestStore::start().await;
    let dm = st.dm();
    let (sched, mode) = scheduler(st.node.kv(), true);
    let group = "/project/p/branch/main";
    let created = dm
        .create_run(group, |id, counter| {
            let config = RunConfig {
                id: id.to_string(),
                name: "ci".into(),
                group: group.to_string(),
                ..RunConfig::default()
            };
            let run = runservice::new_run(&config, counter, chrono::Utc::now());
            (config, run)
        })
        .await
        .expect("create");
    let id = created.run.value.id;

    // The API's cancel: a compare-and-swap write of the flag, nothing else.
    let flagged = dm
        .update_run_with(&id, |run| runservice::cancel(run).map_err(TestError::from))
        .await
        .expect("queued");
    assert!(flagged.value.cancel);
    assert_eq!(flagged.value.phase, RunPhase::Queued);
    assert_eq!(
        dm.run(&id).await.expect("run").value.phase,
        RunPhase::Queued
    );

    // The scheduler comes out of maintenance and applies it in its pass.
    mode.send_replace(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = dm.run(&id).await.expect("run").value;
        if run.phase != RunPhase::Queued {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never applied the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(run.phase, RunPhase::Cancelled, "never started: {run:?}");
    assert_eq!(run.result, RunResult::Stopped);
    assert_eq!(run.start_time, None);
    assert!(run.end_time.is_some());
    sched.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_waits_for_its_dependency_and_the_finished_run_is_archived() {
    let st = TestStore::start().await;
    let dm = st.dm();
    register(&dm, "e1", 0).await;
    let (id, tasks) = create(&dm, CHAIN).await;
    let (a, b) = (tasks["a"].clone(), tasks["b"].clone());
    let s = spawn(st.node.kv(), false, SchedulerConfig::default());

    // Started, and only the dependency is handed out.
    let handed = until(Duration::from_secs(10), "b handed out", || async {
        Some(handed_to(&dm, "e1").await).filter(|h| !h.is_empty())
    })
    .await;
    assert_eq!(handed, vec![b.clone()]);
    let started = run(&dm, &id).await;
    assert_eq!(started.phase, RunPhase::Running);
    assert!(started.start_time.is_some());
    assert_eq!(started.tasks[&a].status, RunTaskStatus::NotStarted);

    // b succeeds: its executor task goes (its logs archived), and a is handed out.
    report(&dm, &b, ExecutorTaskPhase::Success).await;
    let handed = until(Duration::from_secs(10), "a handed out", || async {
        Some(handed_to(&dm, "e1").await).filter(|h| h.contains(&a))
    })
    .await;
    assert_eq!(handed, vec![a.clone()], "b's executor task is deleted");
    let r = run(&dm, &id).await;
    assert_eq!(r.tasks[&b].status, RunTaskStatus::Success);
    assert!(r.tasks[&b].all_fetched(), "{:?}", r.tasks[&b]);
    assert_eq!(r.phase, RunPhase::Running);

    // a succeeds: the run finishes with success and, its logs archived, is archived.
    report(&dm, &a, ExecutorTaskPhase::Success).await;
    let done = until(Duration::from_secs(10), "the run archived", || async {
        Some(run(&dm, &id).await).filter(|r| r.archived)
    })
    .await;
    assert_eq!(done.phase, RunPhase::Finished);
    assert_eq!(done.result, RunResult::Success);
    assert!(done.end_time.is_some());
    assert!(
        done.tasks
            .values()
            .all(|t| t.status == RunTaskStatus::Success)
    );
    assert!(handed_to(&dm, "e1").await.is_empty());
    assert!(dm.all_executor_tasks().await.expect("tasks").is_empty());
    assert!(
        !dm.active_run_ids().await.expect("active").contains(&id),
        "an archived run is no longer active"
    );
    s.scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_sweep_fails_the_task_of_an_executor_that_went_while_no_scheduler_watched() {
    let st = TestStore::start().await;
    let dm = st.dm();
    let kv = st.node.kv();
    let (lease, _) = kv.lease_grant(60, 0).await.expect("lease");
    register(&dm, "e1", lease).await;
    let (id, tasks) = create(&dm, ONE_TASK).await;
    let build = tasks["build"].clone();
    // No retries: the lost task fails its run (lost tasks run again: see below).
    let config = without_retries();
    let sweep = config.sweep_every;
    let s = spawn(kv.clone(), false, config);
    until(Duration::from_secs(10), "build handed out", || async {
        Some(handed_to(&dm, "e1").await).filter(|h| h.contains(&build))
    })
    .await;

    // The scheduler stops (maintenance); meanwhile e1's lease ends, which deletes its
    // registration, and no watch of a scheduler sees the delete.
    s.mode.send_replace(true);
    let mut quiet = s.quiet.clone();
    tokio::time::timeout(Duration::from_secs(10), quiet.wait_for(|q| *q))
        .await
        .expect("the scheduler stops within 10 s")
        .expect("the scheduler is alive");
    kv.lease_revoke(lease).await.expect("revoke");
    assert_eq!(dm.executor("e1").await.expect("read"), None);
    s.mode.send_replace(false);
    until(
        Duration::from_secs(10),
        "the scheduler active again",
        || async { s.scheduler.is_active().then_some(()) },
    )
    .await;

    // Restarted, it does not know: the task stays as it was until its first sweep, one
    // sweep period later, fails it.
    let restarted = Instant::now();
    let status = |dm: Datamanager, task: String| async move {
        dm.executor_task(&task)
            .await
            .expect("read")
            .map(|et| et.value.status)
    };
    while Instant::now() < restarted + sweep - Duration::from_millis(500) {
        let now = status(dm.clone(), build.clone())
            .await
            .expect("still there");
        assert_eq!(
            now.phase,
            ExecutorTaskPhase::NotStarted,
            "failed before the sweep"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = until(sweep, "the run finished", || async {
        Some(run(&dm, &id).await).filter(|r| r.phase.is_finished())
    })
    .await;
    assert!(
        Instant::now() <= restarted + sweep + Duration::from_millis(500),
        "the first sweep failed it, {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(done.result, RunResult::Failed);
    let task = &done.tasks[&build];
    assert_eq!(task.status, RunTaskStatus::Failed);
    assert_eq!(task.fail_error.as_deref(), Some("executor e1 is gone"));
    assert!(task.end_time.is_some());
    // And, its (empty) logs archived, the run is archived.
    until(Duration::from_secs(10), "the run archived", || async {
        Some(run(&dm, &id).await).filter(|r| r.archived)
    })
    .await;
    assert!(dm.all_executor_tasks().await.expect("tasks").is_empty());
    s.scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_executor_deleted_while_the_scheduler_watches_fails_its_task_without_a_sweep() {
    let st = TestStore::start().await;
    let dm = st.dm();
    register(&dm, "e1", 0).await;
    let (id, tasks) = create(&dm, ONE_TASK).await;
    let build = tasks["build"].clone();
    // No retries: the lost task fails its run (lost tasks run again: see below).
    let config = without_retries();
    let sweep = config.sweep_every;
    let s = spawn(st.node.kv(), false, config);
    until(Duration::from_secs(10), "build handed out", || async {
        Some(handed_to(&dm, "e1").await).filter(|h| h.contains(&build))
    })
    .await;

    // `DELETE /executors/e1` (or its lease running out): the watch sees the registration
    // go, long before the next sweep.
    let deleted = Instant::now();
    dm.delete_executor("e1").await.expect("delete");
    let done = until(sweep, "the run finished", || async {
        Some(run(&dm, &id).await).filter(|r| r.phase.is_finished())
    })
    .await;
    assert!(
        deleted.elapsed() < sweep / 2,
        "failed by the watch, not a sweep: {:?}",
        deleted.elapsed()
    );
    assert_eq!(done.result, RunResult::Failed);
    assert_eq!(
        done.tasks[&build].fail_error.as_deref(),
        Some("executor e1 is gone")
    );
    s.scheduler.stop().await;
}

/// Issue 14: a task lost with its executor runs again on another one, its lost attempt
/// recorded on the task; once the retries are spent, a loss fails it.
#[tokio::test(start_paused = true)]
async fn a_task_lost_with_its_executor_runs_again_elsewhere_until_its_retries_run_out() {
    let st = TestStore::start().await;
    let dm = st.dm();
    register(&dm, "e1", 0).await;
    let (id, tasks) = create(&dm, ONE_TASK).await;
    let build = tasks["build"].clone();
    let config = SchedulerConfig {
        retry_lost_tasks: 1,
        ..SchedulerConfig::default()
    };
    let s = spawn(st.node.kv(), false, config);
    until(Duration::from_secs(10), "build handed to e1", || async {
        Some(handed_to(&dm, "e1").await).filter(|h| h.contains(&build))
    })
    .await;

    // e1 goes; e2 is there: the task is handed to e2 as attempt 1, the run still running.
    register(&dm, "e2", 0).await;
    dm.delete_executor("e1").await.expect("delete");
    until(Duration::from_secs(10), "build handed to e2", || async {
        Some(handed_to(&dm, "e2").await).filter(|h| h.contains(&build))
    })
    .await;
    let et = dm
        .executor_task(&build)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(et.value.spec.executor_id, "e2");
    assert_eq!(et.value.spec.attempt, 1);
    assert_eq!(et.value.status.phase, ExecutorTaskPhase::NotStarted);
    let r = run(&dm, &id).await;
    assert_eq!(r.phase, RunPhase::Running);
    assert_eq!(r.result, RunResult::Unknown);
    let task = &r.tasks[&build];
    assert_eq!(task.status, RunTaskStatus::NotStarted);
    assert_eq!(task.lost_attempts.len(), 1);
    assert_eq!(task.lost_attempts[0].executor_id, "e1");
    assert_eq!(task.lost_attempts[0].reason, "executor e1 is gone");

    // e2 goes too: the one retry is spent, so the run fails with the loss.
    dm.delete_executor("e2").await.expect("delete");
    let done = until(Duration::from_secs(10), "the run finished", || async {
        Some(run(&dm, &id).await).filter(|r| r.phase.is_finished())
    })
    .await;
    assert_eq!(done.result, RunResult::Failed);
    let task = &done.tasks[&build];
    assert_eq!(task.fail_error.as_deref(), Some("executor e2 is gone"));
    assert_eq!(task.lost_attempts.len(), 1);
    s.scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn housekeeping_prunes_old_run_events_once_per_period() {
    let st = TestStore::start().await;
    let dm = st.dm();
    // No executor: the first run starts and waits, the other three queue behind it.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create(&dm, ONE_TASK).await.0);
    }
    let config = SchedulerConfig {
        keep_events: 2,
        ..SchedulerConfig::default()
    };
    let period = config.housekeeping_every;
    let s = spawn(st.node.kv(), false, config);
    until(Duration::from_secs(10), "the first run started", || async {
        Some(run(&dm, &ids[0]).await).filter(|r| r.phase == RunPhase::Running)
    })
    .await;
    let started = Instant::now();
    let events = || async { dm.events_after(0).await.expect("events").0 };
    let all = events().await;
    assert_eq!(all.len(), 5, "four creations and a start: {all:?}");

    // Nothing is pruned before the period is over; then all but the newest two go.
    while Instant::now() < started + period - Duration::from_secs(5) {
        assert_eq!(events().await.len(), 5, "pruned early");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let kept = until(Duration::from_secs(10), "old events pruned", || async {
        Some(events().await).filter(|e| e.len() == 2)
    })
    .await;
    assert_eq!(kept, all[3..].to_vec(), "the newest two are kept");
    assert!(started.elapsed() <= period + Duration::from_secs(1));
    s.scheduler.stop().await;
}

#[tokio::test]
async fn archived_runs_move_into_segments_in_full_batches_or_once_old_enough() {
    use crate::datamanager::segments;
    use crate::datamanager::testing::{archived_run, archived_run_ended};
    use crate::runservice::archive::SegmentPolicy;

    let st = TestStore::start().await;
    let dm = st.dm();
    let blobs = Blobs::open("memory:").expect("memory blobs");
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(archived_run(&dm, GROUP).await.value);
    }
    let config = SchedulerConfig {
        segments: SegmentPolicy {
            batch: 3,
            max_wait: Duration::from_secs(3600),
            every: Duration::from_millis(20),
        },
        ..SchedulerConfig::default()
    };
    let s = spawn_with(st.node.kv(), blobs.clone(), false, config);
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let records = until(Duration::from_secs(20), "a full batch", || async {
        Some(dm.segment_records().await.expect("records")).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(records.len(), 1);
    let meta = &records[0].value;
    assert_eq!(
        (&meta.first_id, &meta.last_id, meta.runs),
        (&ids[0], &ids[2], 3)
    );
    let footer = segments::read_footer(&blobs, &meta.key)
        .await
        .expect("footer");
    for (i, run) in runs.iter().enumerate().take(3) {
        assert!(
            matches!(dm.run(&run.id).await, Err(DmError::NotFound { .. })),
            "run {i} left the store"
        );
        let stored = segments::read_run(&blobs, &meta.key, &footer.runs[i])
            .await
            .expect("record");
        assert_eq!(&stored.run, run, "the segment holds the run as it was");
        assert!(!stored.events.is_empty(), "with its events");
    }
    // The fourth is alone and young: it waits in the store, queued (passes go on).
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            dm.archived_run_ids(10).await.expect("queue"),
            vec![ids[3].clone()]
        );
    }
    assert_eq!(dm.run(&ids[3]).await.expect("in the store").value, runs[3]);

    // A run that ended over max_wait ago joins the queue (written while the scheduler
    // is stopped for maintenance): not a full batch, but due.
    s.mode.send_replace(true);
    let mut quiet = s.quiet.clone();
    tokio::time::timeout(Duration::from_secs(10), quiet.wait_for(|q| *q))
        .await
        .expect("stopped in time")
        .expect("quiet");
    let old = archived_run_ended(&dm, GROUP, chrono::Duration::hours(2)).await;
    s.mode.send_replace(false);
    let records = until(Duration::from_secs(20), "the old run segmented", || async {
        Some(dm.segment_records().await.expect("records")).filter(|r| r.len() == 2)
    })
    .await;
    assert_eq!(
        (&records[1].value.first_id, &records[1].value.last_id),
        (&ids[3], &old.value.id)
    );
    assert!(dm.archived_run_ids(10).await.expect("queue").is_empty());
    assert_eq!(
        segments::list_segments(&blobs)
            .await
            .expect("objects")
            .len(),
        2
    );
    s.scheduler.stop().await;
}

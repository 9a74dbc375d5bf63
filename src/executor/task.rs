//! Runs one task: setup (task directory, pod, working directory), then its steps in
//! order, stopping at the first failure; reports the status after every transition;
//! honours the stop flag (cancelled before start, stopped while running) and the task
//! timeout; streams every step's log; removes the pod at the end.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_client::executor::{AssignedTask, ExecutorTaskStatus, StepStatus};
use cairn_client::ids::{IdError, TaskId};
use cairn_client::run::ExecutorTaskPhase;
use cairn_client::runconfig::Step;
use cairn_client::{LogStep, RunClient};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::driver::{Driver, LogSink, Pod, PodSpec};
use super::log_upload::{LogUpload, Redactor};
use super::steps::{self, StepCtx};

/// What a task runner needs from its executor.
#[derive(Clone)]
pub struct TaskEnv {
    pub client: RunClient,
    pub executor_id: String,
    pub driver: Arc<dyn Driver>,
    pub tasks_root: PathBuf,
    /// Privileged containers are refused unless allowed.
    pub allow_privileged: bool,
}

/// Why a task's directory could not be named.
#[derive(Debug, thiserror::Error)]
pub enum TaskDirError {
    #[error(transparent)]
    Id(#[from] IdError),
    /// Cannot happen with a valid id; checked anyway (security review C2).
    #[error("the directory of task {0} would not be directly under the tasks root")]
    Escapes(String),
}

/// A task's directory on the executor host: `<tasks root>/<task id>`, made only from a
/// validated [`TaskId`] and checked to be a direct child of the tasks root, so a task id
/// from the server (or a store write) never names another host directory (security
/// review C2: `remove_dir_all` runs on it before and after the task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDir(PathBuf);

impl TaskDir {
    /// The directory of task `id` under `tasks_root`.
    pub fn new(tasks_root: &Path, id: &TaskId) -> Result<TaskDir, TaskDirError> {
        let dir = tasks_root.join(id.as_str());
        let under_root = dir.parent() == Some(tasks_root)
            && dir
                .strip_prefix(tasks_root)
                .map(|rel| {
                    let mut parts = rel.components();
                    matches!(parts.next(), Some(Component::Normal(p)) if p == id.as_str())
                        && parts.next().is_none()
                })
                .unwrap_or(false);
        if !under_root {
            return Err(TaskDirError::Escapes(id.to_string()));
        }
        Ok(TaskDir(dir))
    }

    /// Validates `id` and names its directory under `tasks_root`.
    pub fn of(tasks_root: &Path, id: &str) -> Result<TaskDir, TaskDirError> {
        TaskDir::new(tasks_root, &TaskId::parse(id)?)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Handles of a running task, kept by the agent.
pub struct TaskHandle {
    /// Fired when the server sets the stop flag.
    pub stop: CancellationToken,
    /// Set with [`TaskHandle::abandon`]: the server no longer runs the task here.
    abandoned: Arc<AtomicBool>,
    /// The latest status this runner reported (or tried to).
    pub status: watch::Receiver<ExecutorTaskStatus>,
    pub join: tokio::task::JoinHandle<()>,
}

impl TaskHandle {
    /// Stops a task the server no longer runs here (it finished it without this executor,
    /// e.g. when the executor was deleted, or gave it away): its processes are killed and
    /// its pod removed as on a stop, and no more status is reported, the server would
    /// refuse it.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }

    /// Whether [`TaskHandle::abandon`] was called.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}

/// Reports `status`, retrying while the server is unreachable; gives up when the task is
/// gone or the report is refused.
pub async fn report(
    client: &RunClient,
    executor_id: &str,
    task_id: &str,
    status: &ExecutorTaskStatus,
) {
    let mut pause = Duration::from_millis(50);
    let started = tokio::time::Instant::now();
    loop {
        match client.report_status(executor_id, task_id, status).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && started.elapsed() < Duration::from_secs(600) => {
                tracing::debug!(task_id, error = %e, "status report failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "status report refused");
                return;
            }
        }
    }
}

/// Starts the runner of `task`.
pub fn spawn(env: TaskEnv, task: AssignedTask) -> TaskHandle {
    let stop = CancellationToken::new();
    let initial = task.task.status.clone();
    let (tx, rx) = watch::channel(initial);
    let s = stop.clone();
    let abandoned = Arc::new(AtomicBool::new(false));
    let a = abandoned.clone();
    let join = tokio::spawn(async move {
        let id = task.task.id.clone();
        let span = tracing::info_span!("task", task_id = %id, task_name = %task.data.task_name);
        let _ = tracing::Instrument::instrument(run(env, task, s, a, tx), span).await;
    });
    TaskHandle {
        stop,
        abandoned,
        status: rx,
        join,
    }
}

struct Runner {
    env: TaskEnv,
    id: String,
    status: ExecutorTaskStatus,
    tx: watch::Sender<ExecutorTaskStatus>,
    abandoned: Arc<AtomicBool>,
    /// The task's secret values, redacted from every log of the task.
    redactor: Redactor,
}

impl Runner {
    async fn publish(&mut self) {
        self.tx.send_replace(self.status.clone());
        if self.abandoned.load(Ordering::Relaxed) {
            return;
        }
        report(
            &self.env.client,
            &self.env.executor_id,
            &self.id,
            &self.status,
        )
        .await;
    }

    fn log(&self, step: LogStep) -> LogUpload {
        LogUpload::start(
            self.env.client.clone(),
            self.env.executor_id.clone(),
            self.id.clone(),
            step,
            self.redactor.clone(),
        )
    }
}

async fn run(
    env: TaskEnv,
    task: AssignedTask,
    stop: CancellationToken,
    abandoned: Arc<AtomicBool>,
    tx: watch::Sender<ExecutorTaskStatus>,
) {
    let now = chrono::Utc::now;
    // Before anything touches the file system: the id names the task's directory.
    let task_dir = match TaskDir::of(&env.tasks_root, &task.task.id) {
        Ok(dir) => dir.path().to_path_buf(),
        Err(e) => {
            tracing::warn!(error = %e, "task refused: its id cannot name a task directory");
            return;
        }
    };
    let spec = task.data;
    let mut r = Runner {
        id: task.task.id.clone(),
        status: task.task.status.clone(),
        env,
        tx,
        abandoned,
        redactor: Redactor::new(&spec.secrets),
    };
    r.status
        .steps
        .resize(spec.steps.len(), StepStatus::default());
    if stop.is_cancelled() || task.task.spec.stop {
        r.status.phase = ExecutorTaskPhase::Cancelled;
        r.status.end_time = Some(now());
        r.publish().await;
        return;
    }
    r.status.phase = ExecutorTaskPhase::Running;
    r.status.start_time = Some(now());
    r.status.setup_step.phase = ExecutorTaskPhase::Running;
    r.status.setup_step.start_time = Some(now());
    r.publish().await;

    // Stop and timeout both cancel the running step; `timedout` tells them apart.
    let cancel = stop.child_token();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = spec.timeout_secs.map(|secs| {
        let (cancel, flag) = (cancel.clone(), timed_out.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            cancel.cancel();
        })
    });

    let mut setup_log = r.log(LogStep::Setup);
    let pod = setup(&r, &spec, &task_dir, &mut setup_log).await;
    let pod = match pod {
        Ok(p) => p,
        Err(why) => {
            setup_log
                .write(Bytes::from(format!("setup failed: {why}\n")))
                .await;
            let _ = setup_log.finish().await;
            r.status.setup_step.phase = ExecutorTaskPhase::Failed;
            r.status.setup_step.end_time = Some(now());
            r.status.phase = ExecutorTaskPhase::Failed;
            r.status.fail_error = Some(format!("setup failed: {why}"));
            r.status.end_time = Some(now());
            r.publish().await;
            return;
        }
    };
    let user = if spec.user.is_empty() {
        spec.containers
            .first()
            .map(|c| c.user.clone())
            .unwrap_or_default()
    } else {
        spec.user.clone()
    };
    let home = pod.home(&user).await.unwrap_or_else(|_| "/".to_string());
    let wd = steps::expand_tilde(
        &home,
        if spec.working_dir.is_empty() {
            "~/project"
        } else {
            &spec.working_dir
        },
    );
    let working_dir = steps::resolve(&home, &home, &wd);
    // The working directory exists before the first step (an empty archive creates it).
    let empty: super::driver::ByteStream = futures::stream::once(async { Ok(empty_tar()) }).boxed();
    if let Err(e) = pod.put_archive(&working_dir, &user, empty).await {
        setup_log
            .write(Bytes::from(format!(
                "cannot create the working directory {working_dir}: {e}\n"
            )))
            .await;
    }
    let _ = setup_log.finish().await;
    r.status.setup_step.phase = ExecutorTaskPhase::Success;
    r.status.setup_step.end_time = Some(now());
    r.publish().await;

    let (env, task_id) = (r.env.clone(), r.id.clone());
    let ctx = StepCtx {
        pod: pod.as_ref(),
        client: &env.client,
        executor_id: &env.executor_id,
        task_id: &task_id,
        spec: &spec,
        task_dir: task_dir.clone(),
        user,
        working_dir,
        home,
    };
    let mut phase = ExecutorTaskPhase::Success;
    let mut fail_error = None;
    for (i, step) in spec.steps.iter().enumerate() {
        if cancel.is_cancelled() {
            phase = ExecutorTaskPhase::Stopped;
            break;
        }
        r.status.steps[i].phase = ExecutorTaskPhase::Running;
        r.status.steps[i].start_time = Some(now());
        r.publish().await;
        let mut log = r.log(LogStep::Step(i));
        let outcome = match step {
            Step::Clone(s) => steps::clone(&ctx, s, &mut log, &cancel).await,
            Step::Run(s) => steps::run(&ctx, s, &mut log, &cancel).await,
            Step::SaveToWorkspace(s) => steps::save_to_workspace(&ctx, i, s, &mut log).await,
            Step::RestoreWorkspace(s) => steps::restore_workspace(&ctx, s, &mut log).await,
            Step::SaveCache(s) => steps::save_cache(&ctx, s, &mut log).await,
            Step::RestoreCache(s) => steps::restore_cache(&ctx, s, &mut log).await,
        };
        let st = &mut r.status.steps[i];
        st.end_time = Some(now());
        match outcome {
            Ok(Some(0)) => {
                st.phase = ExecutorTaskPhase::Success;
                st.exit_status = Some(0);
            }
            Ok(Some(code)) => {
                st.phase = ExecutorTaskPhase::Failed;
                st.exit_status = Some(code);
                phase = ExecutorTaskPhase::Failed;
                log.write(Bytes::from(format!("exit status {code}\n")))
                    .await;
            }
            Ok(None) => {
                let timed = timed_out.load(std::sync::atomic::Ordering::Relaxed);
                st.phase = if timed {
                    ExecutorTaskPhase::Failed
                } else {
                    ExecutorTaskPhase::Stopped
                };
                phase = st.phase;
                let why = if timed { "timed out" } else { "stopped" };
                log.write(Bytes::from(format!("{why}\n"))).await;
            }
            Err(e) => {
                st.phase = ExecutorTaskPhase::Failed;
                phase = ExecutorTaskPhase::Failed;
                fail_error = Some(format!("step {i}: {e}"));
                log.write(Bytes::from(format!("error: {e}\n"))).await;
            }
        }
        if let Err(e) = log.finish().await {
            tracing::warn!(error = %e, step = i, "the step log could not be closed");
        }
        if phase != ExecutorTaskPhase::Success {
            break;
        }
    }
    drop(ctx);
    if let Some(t) = timer {
        t.abort();
    }
    pod.stop().await;
    pod.remove().await;
    let _ = tokio::fs::remove_dir_all(&task_dir).await;
    if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
        r.status.timedout = true;
        phase = ExecutorTaskPhase::Failed;
        fail_error
            .get_or_insert_with(|| format!("timed out after {}s", spec.timeout_secs.unwrap_or(0)));
    }
    r.status.phase = phase;
    r.status.fail_error = fail_error;
    r.status.end_time = Some(now());
    if r.abandoned.load(Ordering::Relaxed) {
        tracing::info!("task abandoned: the server no longer runs it here; its pod is removed");
    }
    r.publish().await;
}

async fn setup(
    r: &Runner,
    spec: &cairn_client::executor::ExecutorTaskSpecData,
    task_dir: &PathBuf,
    log: &mut LogUpload,
) -> Result<Box<dyn Pod>, String> {
    if spec.privileged && !r.env.allow_privileged {
        return Err(
            "the task needs privileged containers and this executor does not allow them".into(),
        );
    }
    let _ = tokio::fs::remove_dir_all(task_dir).await;
    tokio::fs::create_dir_all(task_dir)
        .await
        .map_err(|e| format!("creating {}: {e}", task_dir.display()))?;
    let pod_spec = PodSpec {
        task_id: r.id.clone(),
        executor_id: r.env.executor_id.clone(),
        containers: spec.containers.clone(),
        registry_auth: spec.docker_registries_auth.clone(),
        task_dir: task_dir.clone(),
    };
    r.env
        .driver
        .create_pod(&pod_spec, log)
        .await
        .map_err(|e| e.to_string())
}

/// A tar with no entries (two zero blocks).
fn empty_tar() -> Bytes {
    Bytes::from(vec![0u8; 1024])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C2: a task id is a uuid and its directory a direct child of the tasks root.
    #[test]
    fn task_dirs_are_made_only_from_uuids_under_the_root() {
        let root = Path::new("/data/tasks");
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let dir = TaskDir::of(root, id).expect("a uuid");
        assert_eq!(dir.path(), root.join(id));
        for bad in ["/tmp/victim", "../../x", "..", "", "a/b", "t1"] {
            let e = TaskDir::of(root, bad).expect_err(bad);
            assert!(matches!(e, TaskDirError::Id(_)), "{bad}: {e}");
        }
    }
}

//! Runs one task: the I/O shell around [`TaskRun`], which decides every status change.
//! Setup (task directory, pod, working directory), then the steps in order, stopping at
//! the first failure; reports the status after every transition; honours the stop flag
//! (cancelled before start, stopped while running) and the task timeout; streams every
//! step's log; removes the pod at the end.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_client::executor::{AssignedTask, ExecutorTaskSpecData, ExecutorTaskStatus};
use cairn_client::ids::{IdError, TaskId};
use cairn_client::runconfig::Step;
use cairn_client::{LogStep, RunClient};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::driver::{ByteStream, Driver, DriverError, LogSink, Pod, PodSpec};
use super::log_upload::{LogUpload, Redactor};
use super::steps::{self, StepCtx};
use super::task_run::{StepOutcome, TaskRun};

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
    /// The attempt it runs (`ExecutorTaskSpec::attempt`): a task lost here may come back
    /// to this executor as the next attempt, under the same id.
    pub attempt: u32,
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
    let attempt = task.task.spec.attempt;
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
        attempt,
    }
}

/// Why a task's setup failed (the task then fails with this message).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The task asks for privileged containers and the executor refuses them.
    #[error("the task needs privileged containers and this executor does not allow them")]
    PrivilegedRefused,
    /// The task's directory could not be created.
    #[error("creating {}: {source}", dir.display())]
    TaskDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The driver could not create the pod.
    #[error(transparent)]
    Pod(#[from] DriverError),
}

struct Runner {
    env: TaskEnv,
    id: String,
    /// The task's status and the decisions that change it.
    run: TaskRun,
    tx: watch::Sender<ExecutorTaskStatus>,
    abandoned: Arc<AtomicBool>,
    /// The task's secret values, redacted from every log of the task.
    redactor: Redactor,
}

impl Runner {
    async fn publish(&mut self) {
        self.tx.send_replace(self.run.status().clone());
        if self.abandoned.load(Ordering::Relaxed) {
            return;
        }
        report(
            &self.env.client,
            &self.env.executor_id,
            &self.id,
            self.run.status(),
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

/// Closes the log of `step`; a log that cannot be closed is warned about here, once, and
/// does not change the task's result.
async fn close_log(log: LogUpload, step: LogStep) {
    if let Err(e) = log.finish().await {
        tracing::warn!(error = %e, step = %step, "the task log could not be closed");
    }
}

/// The task's deadline: when it passes, it cancels the steps' token and
/// [`Deadline::passed`] turns true (a stop cancels the same token; this tells them apart).
struct Deadline {
    passed: Arc<AtomicBool>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Deadline {
    /// Starts the timer of `timeout_secs` (none: no deadline) over `cancel`.
    fn start(timeout_secs: Option<u64>, cancel: &CancellationToken) -> Deadline {
        let passed = Arc::new(AtomicBool::new(false));
        let timer = timeout_secs.map(|secs| {
            let (cancel, flag) = (cancel.clone(), passed.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                flag.store(true, Ordering::Relaxed);
                cancel.cancel();
            })
        });
        Deadline { passed, timer }
    }

    fn passed(&self) -> bool {
        self.passed.load(Ordering::Relaxed)
    }

    /// Stops the timer: the deadline can no longer pass.
    fn disarm(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Where the steps run in the pod.
struct Place {
    user: String,
    home: String,
    working_dir: String,
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
        run: TaskRun::new(
            task.task.status.clone(),
            spec.steps.len(),
            spec.timeout_secs,
        ),
        env,
        tx,
        abandoned,
        redactor: Redactor::new(&spec.secrets),
    };
    if stop.is_cancelled() || task.task.spec.stop {
        r.run.cancel(now());
        r.publish().await;
        return;
    }
    r.run.start(now());
    r.publish().await;

    // Stop and timeout both cancel the running step; the deadline tells them apart.
    let cancel = stop.child_token();
    let mut deadline = Deadline::start(spec.timeout_secs, &cancel);

    let mut setup_log = r.log(LogStep::Setup);
    let pod = match setup(&r, &spec, &task_dir, &mut setup_log).await {
        Ok(p) => p,
        Err(e) => {
            let line = r.run.setup_failed(&e.to_string(), now());
            setup_log.write(Bytes::from(line)).await;
            close_log(setup_log, LogStep::Setup).await;
            r.publish().await;
            return;
        }
    };
    let place = prepare_working_dir(pod.as_ref(), &spec, &mut setup_log).await;
    close_log(setup_log, LogStep::Setup).await;
    r.run.setup_done(now());
    r.publish().await;

    run_steps(
        &mut r,
        pod.as_ref(),
        &spec,
        &task_dir,
        place,
        &cancel,
        &deadline,
    )
    .await;
    deadline.disarm();
    pod.stop().await;
    pod.remove().await;
    let _ = tokio::fs::remove_dir_all(&task_dir).await;
    r.run.finish(deadline.passed(), now());
    if r.abandoned.load(Ordering::Relaxed) {
        tracing::info!("task abandoned: the server no longer runs it here; its pod is removed");
    }
    r.publish().await;
}

/// Runs the steps in order as [`TaskRun`] says, each with its own log.
async fn run_steps(
    r: &mut Runner,
    pod: &dyn Pod,
    spec: &ExecutorTaskSpecData,
    task_dir: &Path,
    place: Place,
    cancel: &CancellationToken,
    deadline: &Deadline,
) {
    let now = chrono::Utc::now;
    let (env, task_id) = (r.env.clone(), r.id.clone());
    let ctx = StepCtx {
        pod,
        client: &env.client,
        executor_id: &env.executor_id,
        task_id: &task_id,
        spec,
        task_dir: task_dir.to_path_buf(),
        user: place.user,
        working_dir: place.working_dir,
        home: place.home,
    };
    while let Some(i) = r.run.next_step(cancel.is_cancelled(), now()) {
        r.publish().await;
        let mut log = r.log(LogStep::Step(i));
        // `TaskRun` has one step per step of the spec.
        let outcome = match &spec.steps[i] {
            Step::Clone(s) => steps::clone(&ctx, s, &mut log, cancel).await,
            Step::Run(s) => steps::run(&ctx, s, &mut log, cancel).await,
            Step::SaveToWorkspace(s) => steps::save_to_workspace(&ctx, i, s, &mut log).await,
            Step::RestoreWorkspace(s) => steps::restore_workspace(&ctx, s, &mut log).await,
            Step::SaveCache(s) => steps::save_cache(&ctx, s, &mut log).await,
            Step::RestoreCache(s) => steps::restore_cache(&ctx, s, &mut log).await,
        };
        let outcome = match outcome {
            Ok(Some(code)) => StepOutcome::Exited(code),
            Ok(None) => StepOutcome::Cancelled,
            Err(e) => StepOutcome::Error(e.to_string()),
        };
        if let Some(line) = r.run.step_ended(outcome, deadline.passed(), now()) {
            log.write(Bytes::from(line)).await;
        }
        close_log(log, LogStep::Step(i)).await;
    }
}

/// The steps' user, home and working directory; the working directory is created (an
/// empty archive put there), and a failure to create it is written to the setup log.
async fn prepare_working_dir(
    pod: &dyn Pod,
    spec: &ExecutorTaskSpecData,
    setup_log: &mut LogUpload,
) -> Place {
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
    let empty: ByteStream = futures::stream::once(async { Ok(empty_tar()) }).boxed();
    if let Err(e) = pod.put_archive(&working_dir, &user, empty).await {
        setup_log
            .write(Bytes::from(format!(
                "cannot create the working directory {working_dir}: {e}\n"
            )))
            .await;
    }
    Place {
        user,
        home,
        working_dir,
    }
}

async fn setup(
    r: &Runner,
    spec: &ExecutorTaskSpecData,
    task_dir: &Path,
    log: &mut LogUpload,
) -> Result<Box<dyn Pod>, SetupError> {
    if spec.privileged && !r.env.allow_privileged {
        return Err(SetupError::PrivilegedRefused);
    }
    let _ = tokio::fs::remove_dir_all(task_dir).await;
    tokio::fs::create_dir_all(task_dir)
        .await
        .map_err(|source| SetupError::TaskDir {
            dir: task_dir.to_path_buf(),
            source,
        })?;
    let pod_spec = PodSpec {
        task_id: r.id.clone(),
        executor_id: r.env.executor_id.clone(),
        containers: spec.containers.clone(),
        registry_auth: spec.docker_registries_auth.clone(),
        task_dir: task_dir.to_path_buf(),
    };
    Ok(r.env.driver.create_pod(&pod_spec, log).await?)
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

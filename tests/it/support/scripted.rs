//! A scripted executor: a real HTTP client of the executor protocol (register and
//! heartbeat, long-poll for tasks, report phases, upload logs) whose tasks do what the
//! test says instead of running anything. It records every task it was handed, so tests
//! can check that no task is handed out twice.
//!
//! Status reports are retried ([`Script::report_attempts`]) and polls and heartbeats retry
//! for ever, so an executor rides out a server outage as a real one does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::LogStep;
use cairn_client::RunClient;
use cairn_client::executor::{AssignedTask, Executor, ExecutorTaskStatus, StepStatus};
use cairn_client::run::ExecutorTaskPhase;
use cairn_client::runconfig::Arch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::heartbeat::spawn_heartbeat;

/// What a task does, chosen by task name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Every step succeeds.
    Succeed,
    /// The first step exits 1.
    Fail,
    /// The first step runs until the task is asked to stop.
    RunUntilStopped,
    /// The first step runs until the test calls [`ScriptedExecutor::release`] (then every
    /// step succeeds) or the task is asked to stop (then it stops).
    Hold,
}

/// Options of a scripted executor.
#[derive(Clone)]
pub struct Script {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub limit: u32,
    pub behaviour: fn(&str) -> Behaviour,
    /// How many times a status report is sent (100 ms apart) before the executor gives
    /// up on it; raise it to ride out a server outage.
    pub report_attempts: u32,
}

impl Script {
    pub fn new(id: &str) -> Script {
        Script {
            id: id.to_string(),
            labels: BTreeMap::new(),
            limit: 0,
            behaviour: |_| Behaviour::Succeed,
            report_attempts: 50,
        }
    }
}

/// A running scripted executor; stops (without deregistering) when dropped.
pub struct ScriptedExecutor {
    pub id: String,
    /// Task ids this executor started, in order (duplicates would show twice).
    pub started: Arc<Mutex<Vec<String>>>,
    /// Task ids this executor was asked to stop, in the order it first saw each request.
    pub stop_requests: Arc<Mutex<Vec<String>>>,
    /// Task ids offered again as not started by a poll sent after the server had
    /// acknowledged that this executor was running them: a second hand-out.
    pub reoffered: Arc<Mutex<Vec<String>>>,
    /// Opened by [`ScriptedExecutor::release`]: held tasks go on.
    released: Arc<AtomicBool>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ScriptedExecutor {
    pub fn start(urls: &[String], token: &str, script: Script) -> ScriptedExecutor {
        let client = RunClient::new(urls, Some(token.to_string())).expect("client");
        let cancel = CancellationToken::new();
        let started = Arc::new(Mutex::new(Vec::new()));
        let stop_requests = Arc::new(Mutex::new(Vec::new()));
        let reoffered = Arc::new(Mutex::new(Vec::new()));
        let released = Arc::new(AtomicBool::new(false));
        // When the server first acknowledged each task as running.
        let acked: Acked = Arc::default();
        let me = Executor {
            id: script.id.clone(),
            archs: Arch::host().into_iter().collect(),
            labels: script.labels.clone(),
            allow_privileged: false,
            active_tasks_limit: script.limit,
            ..Executor::default()
        };
        let heartbeat = spawn_heartbeat(
            client.clone(),
            me.clone(),
            Duration::from_millis(500),
            cancel.clone(),
        );
        let poller = {
            let (client, cancel, started) = (client.clone(), cancel.clone(), started.clone());
            let stop_requests = stop_requests.clone();
            let (reoffered, released) = (reoffered.clone(), released.clone());
            tokio::spawn(async move {
                // First registration must land before polling makes sense.
                while client.heartbeat(&me).await.is_err() {
                    if cancel.is_cancelled() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let stops: Arc<Mutex<BTreeSet<String>>> = Arc::default();
                let mut running: BTreeSet<String> = BTreeSet::new();
                let mut after = 0;
                loop {
                    let sent = Instant::now();
                    let resp = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = client.executor_tasks(&me.id, after, Duration::from_secs(5)) => r,
                    };
                    let Ok(resp) = resp else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    after = resp.revision;
                    for t in resp.tasks {
                        let id = t.task.id.clone();
                        if t.task.spec.stop && stops.lock().expect("lock").insert(id.clone()) {
                            stop_requests.lock().expect("lock").push(id.clone());
                        }
                        let not_started = t.task.status.phase == ExecutorTaskPhase::NotStarted;
                        let acked_before = acked
                            .lock()
                            .expect("lock")
                            .get(&id)
                            .is_some_and(|at| *at < sent);
                        if not_started && acked_before {
                            reoffered.lock().expect("lock").push(id.clone());
                        }
                        if not_started && !running.contains(&id) {
                            running.insert(id.clone());
                            started.lock().expect("lock").push(id.clone());
                            let behaviour = (script.behaviour)(&t.data.task_name);
                            let ctx = TaskCtx {
                                client: client.clone(),
                                exec: me.id.clone(),
                                stops: stops.clone(),
                                released: released.clone(),
                                acked: acked.clone(),
                                attempts: script.report_attempts,
                            };
                            tokio::spawn(async move {
                                run_task(&ctx, t, behaviour).await;
                            });
                        }
                    }
                }
            })
        };
        ScriptedExecutor {
            id: script.id,
            started,
            stop_requests,
            reoffered,
            released,
            cancel,
            tasks: vec![heartbeat, poller],
        }
    }

    pub fn started(&self) -> Vec<String> {
        self.started.lock().expect("lock").clone()
    }

    /// Task ids whose executor task came with `stop` set, each once.
    pub fn stop_requests(&self) -> Vec<String> {
        self.stop_requests.lock().expect("lock").clone()
    }

    /// Tasks handed to this executor a second time (see [`ScriptedExecutor::reoffered`]).
    pub fn reoffered(&self) -> Vec<String> {
        self.reoffered.lock().expect("lock").clone()
    }

    /// Lets every [`Behaviour::Hold`] task, held now or later, go on and succeed.
    pub fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
    }

    /// Stops heartbeats and polling (as if the process died).
    pub fn kill(&mut self) {
        self.cancel.cancel();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ScriptedExecutor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// When the server acknowledged each task as running, by task id.
type Acked = Arc<Mutex<BTreeMap<String, Instant>>>;

/// What a running task shares with its executor.
struct TaskCtx {
    client: RunClient,
    exec: String,
    stops: Arc<Mutex<BTreeSet<String>>>,
    released: Arc<AtomicBool>,
    acked: Acked,
    attempts: u32,
}

async fn report(ctx: &TaskCtx, task: &str, status: &ExecutorTaskStatus) {
    for _ in 0..ctx.attempts {
        if ctx
            .client
            .report_status(&ctx.exec, task, status)
            .await
            .is_ok()
        {
            if status.phase == ExecutorTaskPhase::Running {
                ctx.acked
                    .lock()
                    .expect("lock")
                    .entry(task.to_string())
                    .or_insert_with(Instant::now);
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_task(ctx: &TaskCtx, t: AssignedTask, behaviour: Behaviour) {
    let (client, exec, stops) = (&ctx.client, ctx.exec.as_str(), &ctx.stops);
    let id = t.task.id.clone();
    let now = chrono::Utc::now;
    let mut st = ExecutorTaskStatus {
        phase: ExecutorTaskPhase::Running,
        start_time: Some(now()),
        setup_step: StepStatus {
            phase: ExecutorTaskPhase::Success,
            start_time: Some(now()),
            end_time: Some(now()),
            exit_status: None,
        },
        steps: vec![StepStatus::default(); t.data.steps.len()],
        ..ExecutorTaskStatus::default()
    };
    report(ctx, &id, &st).await;
    let _ = client
        .append_log(
            exec,
            &id,
            LogStep::Setup,
            0,
            Bytes::from_static(b"setup ok\n"),
            true,
        )
        .await;
    for i in 0..st.steps.len() {
        st.steps[i].phase = ExecutorTaskPhase::Running;
        st.steps[i].start_time = Some(now());
        report(ctx, &id, &st).await;
        let line = format!("{} step {i}\n", t.data.task_name);
        let _ = client
            .append_log(exec, &id, LogStep::Step(i), 0, Bytes::from(line), false)
            .await;
        let outcome = match behaviour {
            Behaviour::Succeed => (ExecutorTaskPhase::Success, Some(0)),
            Behaviour::Fail => (ExecutorTaskPhase::Failed, Some(1)),
            Behaviour::RunUntilStopped => {
                loop {
                    if stops.lock().expect("lock").contains(&id) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (ExecutorTaskPhase::Stopped, None)
            }
            Behaviour::Hold => loop {
                if ctx.released.load(Ordering::Relaxed) {
                    break (ExecutorTaskPhase::Success, Some(0));
                }
                if stops.lock().expect("lock").contains(&id) {
                    break (ExecutorTaskPhase::Stopped, None);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            },
        };
        let len = format!("{} step {i}\n", t.data.task_name).len() as u64;
        let _ = client
            .append_log(exec, &id, LogStep::Step(i), len, Bytes::new(), true)
            .await;
        st.steps[i].phase = outcome.0;
        st.steps[i].exit_status = outcome.1;
        st.steps[i].end_time = Some(now());
        if outcome.0 != ExecutorTaskPhase::Success {
            st.phase = outcome.0;
            st.end_time = Some(now());
            report(ctx, &id, &st).await;
            return;
        }
    }
    st.phase = ExecutorTaskPhase::Success;
    st.end_time = Some(now());
    report(ctx, &id, &st).await;
}

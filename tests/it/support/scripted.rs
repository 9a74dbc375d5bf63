//! A scripted executor: a real HTTP client of the executor protocol (register and
//! heartbeat, long-poll for tasks, report phases, upload logs) whose tasks do what the
//! test says instead of running anything. It records every task it was handed, so tests
//! can check that no task is handed out twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_client::LogStep;
use cairn_client::RunClient;
use cairn_client::executor::{AssignedTask, Executor, ExecutorTaskStatus, StepStatus};
use cairn_client::run::ExecutorTaskPhase;
use cairn_client::runconfig::Arch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a task does, chosen by task name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Every step succeeds.
    Succeed,
    /// The first step exits 1.
    Fail,
    /// The first step runs until the task is asked to stop.
    RunUntilStopped,
}

/// Options of a scripted executor.
#[derive(Clone)]
pub struct Script {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub limit: u32,
    pub behaviour: fn(&str) -> Behaviour,
}

impl Script {
    pub fn new(id: &str) -> Script {
        Script {
            id: id.to_string(),
            labels: BTreeMap::new(),
            limit: 0,
            behaviour: |_| Behaviour::Succeed,
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
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ScriptedExecutor {
    pub fn start(urls: &[String], token: &str, script: Script) -> ScriptedExecutor {
        let client = RunClient::new(urls, Some(token.to_string())).expect("client");
        let cancel = CancellationToken::new();
        let started = Arc::new(Mutex::new(Vec::new()));
        let stop_requests = Arc::new(Mutex::new(Vec::new()));
        let me = Executor {
            id: script.id.clone(),
            archs: Arch::host().into_iter().collect(),
            labels: script.labels.clone(),
            allow_privileged: false,
            active_tasks_limit: script.limit,
            ..Executor::default()
        };
        let heartbeat = {
            let (client, cancel, me) = (client.clone(), cancel.clone(), me.clone());
            tokio::spawn(async move {
                loop {
                    let _ = client.heartbeat(&me).await;
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            })
        };
        let poller = {
            let (client, cancel, started) = (client.clone(), cancel.clone(), started.clone());
            let stop_requests = stop_requests.clone();
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
                        if t.task.status.phase == ExecutorTaskPhase::NotStarted
                            && !running.contains(&id)
                        {
                            running.insert(id.clone());
                            started.lock().expect("lock").push(id.clone());
                            let behaviour = (script.behaviour)(&t.data.task_name);
                            let (client, stops, exec) =
                                (client.clone(), stops.clone(), me.id.clone());
                            tokio::spawn(async move {
                                run_task(&client, &exec, t, behaviour, stops).await;
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

async fn report(client: &RunClient, exec: &str, task: &str, status: &ExecutorTaskStatus) {
    for _ in 0..50 {
        if client.report_status(exec, task, status).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_task(
    client: &RunClient,
    exec: &str,
    t: AssignedTask,
    behaviour: Behaviour,
    stops: Arc<Mutex<BTreeSet<String>>>,
) {
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
    report(client, exec, &id, &st).await;
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
        report(client, exec, &id, &st).await;
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
            report(client, exec, &id, &st).await;
            return;
        }
    }
    st.phase = ExecutorTaskPhase::Success;
    st.end_time = Some(now());
    report(client, exec, &id, &st).await;
}

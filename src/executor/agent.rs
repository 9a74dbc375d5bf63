//! The executor agent: registers and keeps its registration alive, long-polls its tasks,
//! starts a runner for each new one (up to its active-task limit), forwards stop flags,
//! abandons the tasks the server no longer runs here (finished without it, as when the
//! executor was deleted while alive, or no longer assigned to it: their processes are
//! killed), re-sends statuses after a reconnect, reports tasks it lost in a restart as
//! failed, and cleans the directories and pods of tasks that are gone. It only dials out.
//!
//! A task is never left running where the server may hand it to another executor (a lost
//! task runs again elsewhere, see [`crate::runservice::retry`]):
//! - **Out of contact**: when no heartbeat got through for two thirds of the lease TTL
//!   ([`out_of_contact`]), the agent kills every task it runs, before the server can deem
//!   the executor gone (a full TTL after the last heartbeat it received), and reports them
//!   lost once it reaches a server again.
//! - **Clean stop** ([`Agent::stop`]): every running task is killed and reported lost, then
//!   the executor deregisters, so its tasks run again elsewhere at once and it gets no more.
//! - **Capacity**: a heartbeat goes out as soon as a task ends, so the scheduler sees the
//!   free slot at once rather than at the next heartbeat.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::RunClient;
use cairn_client::executor::{AssignedTask, Executor, ExecutorTaskStatus};
use cairn_client::run::ExecutorTaskPhase;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::driver::Driver;
use super::lifeline::{self, Lifeline, Watch, WatchedDriver};
use super::task::{self, TaskEnv, TaskHandle};

/// How an agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// Where task directories go.
    pub tasks_dir: PathBuf,
    pub servers: Vec<String>,
    /// A registration (or admin) token, exchanged at registration for this executor's
    /// own credential (kept in `<data_dir>/credential`, 0600), or that credential itself.
    pub token: Option<String>,
    /// The servers' CA and this executor's client certificate (`https://` servers).
    pub tls: cairn_client::ClientTls,
    pub labels: BTreeMap<String, String>,
    /// 0 = no limit.
    pub active_tasks_limit: u32,
    pub allow_privileged: bool,
    pub driver: Arc<dyn Driver>,
    /// The program to start as this agent's lifeline watchdog and the driver it cleans up
    /// after ([`super::lifeline`]); `None`: no watchdog.
    pub lifeline: Option<(PathBuf, WatchedDriver)>,
}

/// A running agent.
pub struct Agent {
    pub id: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Kept until the agent is dropped (after [`Agent::stop`]) or the process ends.
    _lifeline: Option<Lifeline>,
}

/// The file keeping an executor's own credential.
pub fn credential_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("credential")
}

fn load_credential(data_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(credential_file(data_dir))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn save_credential(data_dir: &std::path::Path, credential: &str) -> std::io::Result<()> {
    use std::io::Write;
    let path = credential_file(data_dir);
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(credential.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The agent's id, kept in its data dir so a restart is the same executor.
pub fn load_or_make_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("executor-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

impl Agent {
    /// Starts the agent's loops; they run until [`Agent::stop`].
    pub fn start(cfg: AgentConfig) -> anyhow::Result<Agent> {
        let id = load_or_make_id(&cfg.data_dir)?;
        // Before any task starts: from now on, whatever kills this process kills its steps.
        let lifeline = match &cfg.lifeline {
            Some((program, driver)) => {
                let watch = Watch {
                    executor_id: id.clone(),
                    driver: driver.clone(),
                };
                Some(lifeline::start(program, &watch).map_err(|e| {
                    anyhow::anyhow!(
                        "starting the executor's lifeline {}: {e}",
                        program.display()
                    )
                })?)
            }
            None => None,
        };
        // The credential of an earlier registration first; the registration token if the
        // server refuses it.
        let client = RunClient::with_tls(
            &cfg.servers,
            load_credential(&cfg.data_dir).or_else(|| cfg.token.clone()),
            &cfg.tls,
        )?;
        let cancel = CancellationToken::new();
        let state = State {
            env: TaskEnv {
                client,
                executor_id: id.clone(),
                driver: cfg.driver.clone(),
                tasks_root: cfg.tasks_dir.clone(),
                allow_privileged: cfg.allow_privileged,
            },
            cfg,
            running: BTreeMap::new(),
            handed_at: BTreeMap::new(),
            finished: Default::default(),
            last_contact: None,
            reported_active: 0,
            reports: JoinSet::new(),
        };
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let span = tracing::info_span!("executor", executor_id = %state.env.executor_id);
            tracing::Instrument::instrument(state.run(c), span).await;
        });
        Ok(Agent {
            id,
            cancel,
            task,
            _lifeline: lifeline,
        })
    }

    /// A clean stop: stops polling, kills every running task (their pods are removed) and
    /// reports it lost so it runs again elsewhere, deregisters, then returns. Waiting is
    /// bounded by [`TASKS_DIE_TIME`] and [`HAND_BACK_TIME`]: what does not get through, the
    /// server learns when the executor's lease expires.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "the executor agent task panicked");
        }
    }
}

struct State {
    cfg: AgentConfig,
    env: TaskEnv,
    running: BTreeMap<String, TaskHandle>,
    /// The poll revision at which each running task was handed out: a poll answered from
    /// an older view (another server catching up) cannot tell that a task is gone.
    handed_at: BTreeMap<String, i64>,
    /// Tasks this process ran to the end (a poll answered before their last report
    /// landed may still show them running; they are not lost), or killed when it lost
    /// contact (never started again: they are reported lost), by task id and attempt: the
    /// server hands a lost task out again as the next attempt under the same id, maybe to
    /// this executor, which must then run it.
    finished: std::collections::BTreeSet<(String, u32)>,
    /// When the last heartbeat that got an answer was sent.
    last_contact: Option<Instant>,
    /// The task count the last heartbeat reported.
    reported_active: usize,
    /// Reports of tasks killed out of contact, sent once a server answers; aborted when
    /// the agent stops.
    reports: JoinSet<()>,
}

/// How long a clean stop waits for the servers to take its tasks' lost reports and its
/// deregistration (a healthy cluster answers in milliseconds; one without a quorum never).
pub const HAND_BACK_TIME: Duration = Duration::from_secs(1);

/// How long a clean stop waits for its killed tasks to end (a pod's removal included).
pub const TASKS_DIE_TIME: Duration = Duration::from_secs(5);

/// Whether an executor whose last answered heartbeat was sent at `last_contact` must kill
/// its tasks at `now`, its lease being `ttl`: after two thirds of it. The server deems the
/// executor gone no sooner than a whole TTL after it received that heartbeat (later than
/// it was sent), and only then gives its tasks to another executor, so the tasks are dead
/// by then with a third of the TTL to spare. Pure.
pub fn out_of_contact(last_contact: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(last_contact) >= ttl * 2 / 3
}

/// `status` as the report of a task lost with its executor (see
/// [`ExecutorTaskStatus::mark_lost`]). Pure.
pub fn lost_status(
    mut status: ExecutorTaskStatus,
    reason: &str,
    now: cairn_client::run::Time,
) -> ExecutorTaskStatus {
    status.mark_lost(reason, now);
    status
}

impl State {
    fn me(&self) -> Executor {
        Executor {
            id: self.env.executor_id.clone(),
            archs: self.cfg.driver.archs(),
            labels: self.cfg.labels.clone(),
            allow_privileged: self.cfg.allow_privileged,
            active_tasks_limit: self.cfg.active_tasks_limit,
            active_tasks: u32::try_from(self.active()).unwrap_or(u32::MAX),
            ..Executor::default()
        }
    }

    /// Tasks that hold a slot: running ones that have not reported their end (a finished
    /// one may still be uploading its logs, but its slot is free).
    fn active(&self) -> usize {
        self.running
            .values()
            .filter(|h| !h.status.borrow().phase.is_finished())
            .count()
    }

    async fn run(mut self, cancel: CancellationToken) {
        let client = self.env.client.clone();
        // Register first (retrying until a server answers), and learn the lease TTL.
        let ttl = loop {
            let sent = Instant::now();
            match self.register().await {
                Ok(ttl) => {
                    self.last_contact = Some(sent);
                    tracing::info!(driver = self.cfg.driver.name(), "executor registered");
                    break ttl;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        // Leftovers of a previous process of this executor.
        let tasks_root = self.env.tasks_root.clone();
        let known = known_task_dirs(&tasks_root).await;
        match self
            .cfg
            .driver
            .remove_orphans(&self.env.executor_id, &[])
            .await
        {
            Ok(n) if n > 0 => tracing::info!(removed = n, "orphans of a previous run removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "orphan cleanup failed"),
        }
        for dir in known {
            let _ = tokio::fs::remove_dir_all(tasks_root.join(dir)).await;
        }

        let ttl = Duration::from_secs(ttl.unsigned_abs());
        let heartbeat_every = (ttl / 3).max(Duration::from_millis(200));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        let mut resend = tokio::time::interval(Duration::from_secs(5));
        let mut after = 0i64;
        let mut poll = Box::pin(poll(client.clone(), self.env.executor_id.clone(), after));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = heartbeat.tick() => self.heartbeat(ttl, heartbeat_every).await,
                _ = resend.tick() => self.resend().await,
                r = &mut poll => {
                    match r {
                        Ok(resp) => {
                            after = resp.revision;
                            self.reconcile(resp.tasks, resp.revision).await;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "polling for tasks failed");
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                        }
                    }
                    self.reap();
                    if self.active() < self.reported_active {
                        // A slot came free: say so now, not at the next heartbeat.
                        self.heartbeat(ttl, heartbeat_every).await;
                    }
                    poll = Box::pin(self::poll(client.clone(), self.env.executor_id.clone(), after));
                }
            }
        }
        self.hand_back().await;
    }

    /// One heartbeat, bounded by `timeout`; then, if no heartbeat got through for too
    /// long ([`out_of_contact`]), every running task is killed.
    async fn heartbeat(&mut self, ttl: Duration, timeout: Duration) {
        let sent = Instant::now();
        let active = self.active();
        match tokio::time::timeout(timeout, self.register()).await {
            Ok(Ok(_)) => {
                self.last_contact = Some(sent);
                self.reported_active = active;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            Err(_) => tracing::warn!(secs = timeout.as_secs_f32(), "heartbeat timed out"),
        }
        let Some(last) = self.last_contact else {
            return;
        };
        if !self.running.is_empty() && out_of_contact(last, Instant::now(), ttl) {
            let secs = last.elapsed().as_secs();
            let reason = format!(
                "executor {} lost contact with the servers for {secs} s",
                self.env.executor_id
            );
            tracing::warn!(tasks = self.running.len(), %reason, "killing every task so none runs twice");
            for (id, status) in self.kill_all(&reason) {
                let (env, handle) = (self.env.clone(), self.running.remove(&id));
                self.handed_at.remove(&id);
                if let Some(h) = &handle {
                    self.finished.insert((id.clone(), h.attempt));
                }
                self.reports.spawn(async move {
                    if let Some(h) = handle {
                        let _ = h.join.await;
                    }
                    task::report(&env.client, &env.executor_id, &id, &status).await;
                });
            }
        }
    }

    /// Abandons every running task (its processes are killed, its runner reports nothing
    /// more); the lost statuses to report for those that had not ended.
    fn kill_all(&mut self, reason: &str) -> Vec<(String, ExecutorTaskStatus)> {
        let now = chrono::Utc::now();
        let mut lost = Vec::new();
        for (id, h) in &self.running {
            let status = h.status.borrow().clone();
            h.abandon();
            if !status.phase.is_finished() {
                lost.push((id.clone(), lost_status(status, reason, now)));
            }
        }
        lost
    }

    /// The clean stop of [`Agent::stop`].
    async fn hand_back(&mut self) {
        self.reports.abort_all();
        if self.running.is_empty() {
            // Nothing to hand back; deregistering still stops new hand-outs at once.
            let _ = tokio::time::timeout(
                HAND_BACK_TIME,
                self.env.client.delete_executor(&self.env.executor_id),
            )
            .await;
            return;
        }
        let reason = format!("executor {} was stopped", self.env.executor_id);
        let lost = self.kill_all(&reason);
        let running = std::mem::take(&mut self.running);
        let dead = tokio::time::timeout(TASKS_DIE_TIME, async {
            for (_, h) in running {
                let _ = h.join.await;
            }
        })
        .await;
        if dead.is_err() {
            // Its processes may live on: the server must not run them again before the
            // lease expires.
            tracing::warn!("tasks still dying after {TASKS_DIE_TIME:?}; not handed back");
            return;
        }
        let (client, me) = (&self.env.client, &self.env.executor_id);
        let handed_back = tokio::time::timeout(HAND_BACK_TIME, async {
            for (id, status) in &lost {
                if let Err(e) = client.report_status(me, id, status).await {
                    tracing::debug!(task_id = %id, error = %e, "lost report refused");
                }
            }
            client.delete_executor(me).await
        })
        .await;
        match handed_back {
            Ok(Ok(())) => tracing::info!(
                tasks = lost.len(),
                "tasks handed back; executor deregistered"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "deregistering failed; the server forgets this executor when its lease expires")
            }
            Err(_) => tracing::warn!(
                "the servers did not answer; they forget this executor when its lease expires"
            ),
        }
    }

    /// Registers or heartbeats; returns the lease TTL. A credential in the reply becomes
    /// the client's token (and is kept); when the server refuses the credential (revoked,
    /// or the executor was deleted), registers again with the registration token.
    async fn register(&mut self) -> Result<i64, cairn_client::ClientError> {
        let client = self.env.client.clone();
        let reply = match client.heartbeat(&self.me()).await {
            Err(e)
                if e.code() == Some(cairn_client::ErrorCode::Unauthorized)
                    && self.cfg.token.is_some() =>
            {
                tracing::warn!("the executor credential was refused; registering again");
                client.set_token(self.cfg.token.clone());
                client.heartbeat(&self.me()).await?
            }
            other => other?,
        };
        if let Some(credential) = reply.credential {
            client.set_token(Some(credential.clone()));
            if let Err(e) = save_credential(&self.cfg.data_dir, &credential) {
                tracing::warn!(error = %e, "cannot keep the executor credential");
            }
        }
        Ok(reply.lease_ttl_secs.max(1))
    }

    /// Acts on the server's view of this executor's tasks (as of poll `revision`).
    async fn reconcile(&mut self, tasks: Vec<AssignedTask>, revision: i64) {
        for (id, verdict) in running_verdicts(&self.handed_at, &tasks, revision) {
            let Some(h) = self.running.get(&id) else {
                continue;
            };
            if h.status.borrow().phase.is_finished() {
                // It already reported its end and is only cleaning up.
                continue;
            }
            match verdict {
                Verdict::Stop => h.stop.cancel(),
                Verdict::Abandon(why) => {
                    if !h.stop.is_cancelled() {
                        tracing::warn!(task_id = %id, why, "stopping a task the server no longer runs here");
                    }
                    h.abandon();
                }
                Verdict::Keep => {}
            }
        }
        let limit = self.cfg.active_tasks_limit as usize;
        for t in tasks {
            let id = t.task.id.clone();
            if self.running.contains_key(&id) {
                continue;
            }
            if ran_here(&self.finished, &t.task) {
                continue;
            }
            match t.task.status.phase {
                ExecutorTaskPhase::NotStarted => {
                    if limit > 0 && self.running.len() >= limit && !t.task.spec.stop {
                        continue;
                    }
                    tracing::info!(task_id = %id, task = %t.data.task_name, "task started");
                    let h = task::spawn(self.env.clone(), t);
                    self.handed_at.insert(id.clone(), revision);
                    self.running.insert(id, h);
                }
                ExecutorTaskPhase::Running => {
                    // The server thinks it runs here, but this process does not run it:
                    // an earlier process of this executor died with it.
                    let status = lost_status(
                        t.task.status.clone(),
                        "the executor restarted and lost the task",
                        chrono::Utc::now(),
                    );
                    tracing::warn!(task_id = %id, "task lost in a restart reported failed");
                    task::report(&self.env.client, &self.env.executor_id, &id, &status).await;
                }
                _ => {}
            }
        }
    }

    /// Forgets finished runners (remembering their ids).
    fn reap(&mut self) {
        let done: Vec<(String, u32)> = self
            .running
            .iter()
            .filter(|(_, h)| h.join.is_finished())
            .map(|(id, h)| (id.clone(), h.attempt))
            .collect();
        for (id, attempt) in done {
            self.running.remove(&id);
            self.handed_at.remove(&id);
            self.finished.insert((id, attempt));
        }
        // Bounded memory: the server deletes finished tasks soon after they end.
        if self.finished.len() > 10_000 {
            self.finished.clear();
        }
    }

    /// Re-sends the latest status of every running task (after a reconnect a report may
    /// have been lost; the server ignores repeats).
    async fn resend(&mut self) {
        self.reap();
        for (id, h) in &self.running {
            let status = h.status.borrow().clone();
            if status.phase == ExecutorTaskPhase::NotStarted || h.is_abandoned() {
                continue;
            }
            if let Err(e) = self
                .env
                .client
                .report_status(&self.env.executor_id, id, &status)
                .await
            {
                tracing::debug!(task_id = %id, error = %e, "status re-send failed");
            }
        }
    }
}

/// What to do with a task this executor runs, given one poll answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Go on.
    Keep,
    /// The server asked for a stop: the runner stops it and reports `stopped`.
    Stop,
    /// The server no longer runs the task here (why): kill it, report nothing more.
    Abandon(&'static str),
}

/// The verdict on every running task (`handed_at`: each one's hand-out revision) from a
/// poll answer at `revision` listing the executor's `tasks`. A task the answer shows
/// finished, or does not list although the answer is not older than its hand-out, is no
/// longer this executor's to run (Agola's cleaner told the executor to stop it; here the
/// executor learns it from its own poll).
fn running_verdicts(
    handed_at: &BTreeMap<String, i64>,
    tasks: &[AssignedTask],
    revision: i64,
) -> Vec<(String, Verdict)> {
    handed_at
        .iter()
        .map(|(id, handed)| {
            let verdict = match tasks.iter().find(|t| &t.task.id == id) {
                Some(t) if t.task.status.phase.is_finished() => {
                    Verdict::Abandon("the server has finished it (was this executor deleted?)")
                }
                Some(t) if t.task.spec.stop => Verdict::Stop,
                Some(_) => Verdict::Keep,
                None if revision >= *handed => {
                    Verdict::Abandon("it is no longer assigned to this executor")
                }
                None => Verdict::Keep,
            };
            (id.clone(), verdict)
        })
        .collect()
}

async fn poll(
    client: RunClient,
    id: String,
    after: i64,
) -> Result<cairn_client::api::ExecutorTasksResponse, cairn_client::ClientError> {
    client
        .executor_tasks(&id, after, Duration::from_secs(30))
        .await
}

/// Whether this process already ran (or killed) this attempt of the task. A task lost
/// here comes back under the same id as the next attempt, and that one must run.
fn ran_here(
    finished: &std::collections::BTreeSet<(String, u32)>,
    task: &cairn_client::executor::ExecutorTask,
) -> bool {
    finished.contains(&(task.id.clone(), task.spec.attempt))
}

async fn known_task_dirs(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(mut d) = tokio::fs::read_dir(root).await {
        while let Ok(Some(e)) = d.next_entry().await {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::executor::ExecutorTask;

    fn assigned(id: &str, phase: ExecutorTaskPhase, stop: bool) -> AssignedTask {
        let mut task = ExecutorTask::new(id, "run", "me", 1);
        task.status.phase = phase;
        task.spec.stop = stop;
        AssignedTask {
            task,
            data: Default::default(),
        }
    }

    fn handed(ids: &[(&str, i64)]) -> BTreeMap<String, i64> {
        ids.iter().map(|(id, r)| (id.to_string(), *r)).collect()
    }

    /// Chaos seed 2014455005334509019: an executor out of contact killed its tasks and
    /// reported them lost; the retries, handed to it again under the same task ids, were
    /// skipped as already run, and their runs never finished.
    #[test]
    fn a_lost_task_handed_back_as_its_next_attempt_runs_again_here() {
        let mut finished = std::collections::BTreeSet::new();
        let mut first = assigned("t1", ExecutorTaskPhase::NotStarted, false).task;
        finished.insert((first.id.clone(), first.spec.attempt));
        assert!(ran_here(&finished, &first));
        first.spec.attempt = 1;
        assert!(!ran_here(&finished, &first), "the next attempt is new work");
    }

    #[test]
    fn tasks_die_two_thirds_of_a_lease_after_the_last_heartbeat_that_got_through() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(15);
        assert!(!out_of_contact(sent, sent, ttl));
        assert!(!out_of_contact(
            sent,
            sent + Duration::from_millis(9_999),
            ttl
        ));
        assert!(out_of_contact(sent, sent + Duration::from_secs(10), ttl));
        // A clock reading before the heartbeat (never in practice) is not a loss.
        assert!(!out_of_contact(sent + Duration::from_secs(1), sent, ttl));
    }

    #[test]
    fn a_lost_status_fails_the_running_steps_and_says_it_was_lost() {
        let now = chrono::Utc::now();
        let mut status = ExecutorTaskStatus {
            phase: ExecutorTaskPhase::Running,
            steps: vec![Default::default(); 3],
            ..Default::default()
        };
        status.setup_step.phase = ExecutorTaskPhase::Success;
        status.steps[0].phase = ExecutorTaskPhase::Success;
        status.steps[1].phase = ExecutorTaskPhase::Running;
        let lost = lost_status(status, "executor e1 was stopped", now);
        assert_eq!(lost.phase, ExecutorTaskPhase::Failed);
        assert!(lost.lost);
        assert_eq!(lost.fail_error.as_deref(), Some("executor e1 was stopped"));
        assert_eq!(lost.end_time, Some(now));
        assert_eq!(lost.setup_step.phase, ExecutorTaskPhase::Success);
        let phases: Vec<_> = lost.steps.iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            [
                ExecutorTaskPhase::Success,
                ExecutorTaskPhase::Failed,
                ExecutorTaskPhase::NotStarted
            ]
        );
        assert_eq!(lost.steps[1].end_time, Some(now));
    }

    #[test]
    fn a_running_task_the_server_still_runs_here_goes_on() {
        let tasks = [assigned("t", ExecutorTaskPhase::Running, false)];
        assert_eq!(
            running_verdicts(&handed(&[("t", 5)]), &tasks, 9),
            [("t".to_string(), Verdict::Keep)]
        );
    }

    #[test]
    fn the_stop_flag_stops_the_task_and_it_reports_stopped() {
        let tasks = [assigned("t", ExecutorTaskPhase::Running, true)];
        assert_eq!(
            running_verdicts(&handed(&[("t", 5)]), &tasks, 9),
            [("t".to_string(), Verdict::Stop)]
        );
    }

    /// Issue 10 (13): the executor was deleted while alive; the scheduler failed its task,
    /// the executor re-registered and the step ran on to its end.
    #[test]
    fn a_task_the_server_finished_without_this_executor_is_abandoned() {
        for phase in [
            ExecutorTaskPhase::Failed,
            ExecutorTaskPhase::Stopped,
            ExecutorTaskPhase::Cancelled,
            ExecutorTaskPhase::Success,
        ] {
            let tasks = [assigned("t", phase, false)];
            let verdicts = running_verdicts(&handed(&[("t", 5)]), &tasks, 9);
            assert!(
                matches!(verdicts.as_slice(), [(id, Verdict::Abandon(_))] if id == "t"),
                "{phase:?}: {verdicts:?}"
            );
        }
    }

    #[test]
    fn a_task_no_longer_listed_is_abandoned_unless_the_answer_predates_it() {
        let other = [assigned("u", ExecutorTaskPhase::Running, false)];
        let verdicts = running_verdicts(&handed(&[("t", 5)]), &other, 5);
        assert!(matches!(verdicts.as_slice(), [(_, Verdict::Abandon(_))]));
        // An answer from a server that has not caught up with the hand-out yet.
        assert_eq!(
            running_verdicts(&handed(&[("t", 5)]), &other, 4),
            [("t".to_string(), Verdict::Keep)]
        );
    }
}

//! One scheduling pass over one run: mirror executor-task reports into the run, advance
//! it, move finished tasks' logs to object storage, write it back (compare-and-swap),
//! stop, delete and create executor tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::executor::ExecutorTask;
use cairn_client::run::{Run, RunPhase};
use cairn_client::runconfig::RunConfig;

use super::SchedulerTask;
use crate::datamanager::logs::LogId;
use crate::datamanager::{Datamanager, DmError};
use crate::runservice::{self, LostTask};

/// What the scheduler remembers between passes.
#[derive(Default)]
pub(super) struct PassState {
    /// Runs with a ready task that no executor could take.
    pub waiting_for_executor: BTreeSet<String>,
    /// Groups whose queue may be able to start a run.
    pub groups_to_check: BTreeSet<String>,
    /// Run configs are immutable: read once, forgotten once their run finished (at most
    /// [`MAX_CONFIGS`]). heaptrack at 20k runs made through the scheduler found this map at
    /// its old cap of 4,096 configs (~12 MB of decoded configs of long-finished runs).
    configs: HashMap<String, Arc<RunConfig>>,
    /// When a pass first found each (run, task) ready and not yet handed out: the start
    /// of its hand-out latency (on a takeover, the new scheduler's first pass).
    ready_since: BTreeMap<(String, String), Instant>,
}

/// The most run configs [`PassState`] keeps (cleared when full).
const MAX_CONFIGS: usize = 1024;
/// The most ready tasks [`PassState`] times (cleared when full: a bound, never reached
/// in practice, as entries go at hand-out and when their run ends).
const MAX_READY: usize = 100_000;

impl PassState {
    /// `to_run` of run `run_id` are ready now: start their clocks (those already
    /// running keep theirs).
    fn note_ready(&mut self, run_id: &str, to_run: &[String], now: Instant) {
        if self.ready_since.len() + to_run.len() > MAX_READY {
            self.ready_since.clear();
        }
        for task in to_run {
            self.ready_since
                .entry((run_id.to_string(), task.clone()))
                .or_insert(now);
        }
    }

    /// How long `task` of `run_id` waited since it was noted ready; forgets it.
    fn handed(&mut self, run_id: &str, task: &str, now: Instant) -> Option<Duration> {
        self.ready_since
            .remove(&(run_id.to_string(), task.to_string()))
            .map(|t| now.saturating_duration_since(t))
    }

    /// Forgets the ready tasks of a run that will hand out no more.
    fn forget_run(&mut self, run_id: &str) {
        self.ready_since.retain(|(r, _), _| r != run_id);
    }

    /// Ready tasks not handed out yet.
    pub fn waiting(&self) -> usize {
        self.ready_since.len()
    }

    async fn config(&mut self, dm: &Datamanager, id: &str) -> Result<Arc<RunConfig>, DmError> {
        if let Some(c) = self.configs.get(id) {
            return Ok(c.clone());
        }
        if self.configs.len() >= MAX_CONFIGS {
            self.configs.clear();
        }
        let c = Arc::new(dm.run_config(id).await?);
        self.configs.insert(id.to_string(), c.clone());
        Ok(c)
    }
}

impl SchedulerTask {
    /// Passes run `id` once. Returns whether it wants another pass at once.
    pub(super) async fn pass(
        &self,
        dm: &Datamanager,
        state: &mut PassState,
        id: &str,
    ) -> Result<bool, DmError> {
        let prev = match dm.run(id).await {
            Ok(r) => r,
            Err(DmError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if prev.value.archived {
            return Ok(false);
        }
        let config = state.config(dm, id).await?;
        let mut ets = dm.executor_tasks_of_run(&prev.value).await?;
        let now = chrono::Utc::now();

        let mut run = prev.value.clone();
        // Attempts lost with their executor run again while they have retries left: their
        // executor tasks go (after the run is written) and the tasks are handed out anew.
        let mut given_up = Vec::new();
        for (task_id, et) in &ets {
            let retries = self.config.retry_lost_tasks;
            match runservice::retry_lost_task(&mut run, &config, &et.value, retries, now) {
                LostTask::Keep => continue,
                LostTask::Retried => {
                    tracing::info!(run_id = %id, task_id = %task_id, executor_id = %et.value.spec.executor_id, reason = ?et.value.status.fail_error, "task lost with its executor; it runs again");
                }
                LostTask::AlreadyRetried => {}
            }
            given_up.push(task_id.clone());
        }
        let given_up: Vec<_> = given_up
            .iter()
            .filter_map(|task_id| ets.remove(task_id))
            .collect();
        for et in ets.values() {
            if let Err(e) = runservice::apply_executor_status(&mut run, &et.value) {
                tracing::debug!(run_id = %id, task_id = %et.value.id, error = %e, "ignoring an inconsistent executor report");
            }
        }
        let plain: BTreeMap<String, ExecutorTask> = ets
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        let adv = runservice::advance(&run, &config, &plain, now);
        let mut run = adv.run;
        let mut to_run = adv.to_run;
        let mut failed = Vec::new();
        if self.config.fixed_executors && run.phase == RunPhase::Running && !to_run.is_empty() {
            failed = self
                .fail_unplaceable(dm, &mut run, &config, &to_run, now)
                .await?;
            to_run.retain(|t| !failed.contains(t));
        }

        // Finished executor tasks: their logs go to object storage; then they can go.
        let mut done_ets = Vec::new();
        for (task_id, et) in &ets {
            let Some(rt) = run.tasks.get_mut(task_id) else {
                continue;
            };
            if !runservice::archive::executor_task_done(&et.value, rt) {
                continue;
            }
            let logs = runservice::archive::logs_to_archive(rt);
            if !logs.is_empty() {
                for step in logs {
                    let log = LogId {
                        task_id: task_id.clone(),
                        step,
                    };
                    if let Err(e) = self.logs.archive(&log).await {
                        tracing::warn!(task_id = %task_id, step = %log.step, error = %e, "archiving a log failed; retrying later");
                        return Ok(false);
                    }
                }
                runservice::archive::close_fetch_phases(rt);
            }
            done_ets.push(task_id.clone());
        }

        if runservice::archive::is_archivable(&run, ets.len()) {
            run.archived = true;
        }
        if run.phase == RunPhase::Queued {
            state.groups_to_check.insert(run.group.clone());
        }
        if run.phase.is_finished() {
            // Only its log archiving is left: it needs no config.
            state.configs.remove(id);
        }
        if run != prev.value {
            dm.update_run(&prev, &run).await?;
            if run.phase.is_finished() && !prev.value.phase.is_finished() {
                state.groups_to_check.insert(run.group.clone());
                let took = run_time(&run);
                self.metrics
                    .run_finished(run.phase.as_str(), run.result.as_str(), took);
            }
            if run.archived {
                tracing::debug!(run_id = %id, "run archived");
            }
        }

        for task_id in &adv.stop {
            if let Some(et) = ets.get(task_id)
                && !et.value.spec.stop
            {
                let mut next = et.value.clone();
                next.spec.stop = true;
                dm.update_executor_task(et, &next).await?;
            }
        }
        for task_id in &done_ets {
            if let Some(et) = ets.get(task_id) {
                dm.delete_executor_task(et).await?;
            }
        }
        for et in &given_up {
            // The lost attempt's logs go, so the next attempt's start from offset 0
            // (again on the next pass if this one fails here).
            if let Err(e) = self.logs.delete_task_logs(&et.value.id).await {
                tracing::warn!(task_id = %et.value.id, error = %e, "deleting a lost attempt's logs failed; retrying later");
                return Ok(false);
            }
            dm.delete_executor_task(et).await?;
        }

        state.waiting_for_executor.remove(id);
        if !to_run.is_empty() && run.phase == RunPhase::Running {
            state.note_ready(id, &to_run, Instant::now());
            self.hand_out(dm, state, &run, &config, &to_run).await?;
        } else if run.phase != RunPhase::Running {
            state.forget_run(id);
        }
        self.metrics.set_waiting(state.waiting());
        // A failed task changes the run's result: advance it again at once.
        Ok(!done_ets.is_empty() || !failed.is_empty())
    }

    /// Creates an executor task for each ready task that an executor can take.
    async fn hand_out(
        &self,
        dm: &Datamanager,
        state: &mut PassState,
        run: &Run,
        config: &RunConfig,
        to_run: &[String],
    ) -> Result<(), DmError> {
        let run_id = run.id.as_str();
        let executors = dm.executors().await?;
        let mut assigned = dm.assigned_counts().await?;
        for task_id in to_run {
            let Some(task) = config.tasks.get(task_id) else {
                continue;
            };
            match runservice::choose_executor(task, &executors, &assigned) {
                Ok(executor_id) => {
                    let mut et = ExecutorTask::new(task_id, run_id, &executor_id, task.steps.len());
                    et.spec.attempt = run.tasks.get(task_id).map_or(0, |t| {
                        u32::try_from(t.lost_attempts.len()).unwrap_or(u32::MAX)
                    });
                    if dm.create_executor_task(&et).await? {
                        if let Some(waited) = state.handed(run_id, task_id, Instant::now()) {
                            self.metrics.handed_out(waited);
                        }
                        *assigned.entry(executor_id.clone()).or_default() += 1;
                        tracing::debug!(run_id, task_id = %task_id, executor_id = %executor_id, "task handed out");
                    }
                }
                Err(why) => {
                    tracing::debug!(run_id, task_id = %task_id, reason = %why, "task waits for an executor");
                    state.waiting_for_executor.insert(run_id.to_string());
                }
            }
        }
        Ok(())
    }

    /// Fails every unfinished executor task whose executor is gone (deleted, or its
    /// lease expired), with end times on the task and its running steps.
    pub(super) async fn fail_lost_tasks(
        &self,
        dm: &Datamanager,
        dirty: &mut BTreeSet<String>,
    ) -> Result<(), DmError> {
        let alive: BTreeSet<String> = dm.executors().await?.into_iter().map(|e| e.id).collect();
        let now = chrono::Utc::now();
        for et in dm.all_executor_tasks().await? {
            if et.value.status.phase.is_finished() || alive.contains(&et.value.spec.executor_id) {
                continue;
            }
            let mut next = et.value.clone();
            let reason = format!("executor {} is gone", et.value.spec.executor_id);
            if runservice::fail_lost_task(&mut next, &reason, now) {
                match dm.update_executor_task(&et, &next).await {
                    Ok(_) | Err(DmError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(task_id = %next.id, run_id = %next.spec.run_id, %reason, "task failed");
                dirty.insert(next.spec.run_id.clone());
            }
        }
        Ok(())
    }
}

/// How long a run ran: start to end, `None` if it never started; pure.
fn run_time(run: &Run) -> Option<Duration> {
    let (start, end) = (run.start_time?, run.end_time?);
    (end - start).to_std().ok()
}

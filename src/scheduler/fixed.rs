//! Scheduling with a fixed set of executors ([`super::SchedulerConfig::fixed_executors`]):
//! a ready task that none of them can ever take (foreign arch, labels nobody has,
//! privileged containers nobody allows) is failed with the reason, through the fenced
//! run write of the pass, so `cairn run` ends instead of hanging on it.

use cairn_client::run::{Run, Time};
use cairn_client::runconfig::RunConfig;

use super::SchedulerTask;
use crate::datamanager::{Datamanager, DmError};
use crate::runservice;

impl SchedulerTask {
    /// Fails, in `run`, each of the ready tasks `to_run` that no registered executor can
    /// ever take. Returns the ids of the tasks failed (the caller writes the run).
    pub(super) async fn fail_unplaceable(
        &self,
        dm: &Datamanager,
        run: &mut Run,
        config: &RunConfig,
        to_run: &[String],
        now: Time,
    ) -> Result<Vec<String>, DmError> {
        let executors = dm.executors().await?;
        let mut failed = Vec::new();
        for task_id in to_run {
            let Some(task) = config.tasks.get(task_id) else {
                continue;
            };
            if let Some(why) = runservice::never_placeable(task, &executors)
                && runservice::fail_unplaceable(run, task_id, &why.to_string(), now)
            {
                tracing::info!(run_id = %run.id, task_id = %task_id, reason = %why, "task failed: no executor can ever take it");
                failed.push(task_id.clone());
            }
        }
        Ok(failed)
    }
}

//! The run queue: FIFO per run group, one running run per group. A run starts when it is
//! the oldest queued run of its group and no run of the group is running; the start is
//! guarded by the group's change group, so two starts in one group cannot both commit.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::SchedulerTask;
use crate::datamanager::{Datamanager, DmError};
use crate::runservice;

/// The change group that serializes starts in `group`.
pub fn queue_change_group(group: &str) -> String {
    format!("queue-{}", URL_SAFE_NO_PAD.encode(group.as_bytes()))
}

impl SchedulerTask {
    /// Starts the next run of `group` if the group has none running. Returns its id.
    pub(super) async fn start_next(
        &self,
        dm: &Datamanager,
        group: &str,
    ) -> Result<Option<String>, DmError> {
        let cg = queue_change_group(group);
        let token = dm.change_group_token(std::slice::from_ref(&cg)).await?;
        if !dm.running_in(group, 1).await?.is_empty() {
            return Ok(None);
        }
        let Some(id) = dm.first_queued(group).await? else {
            return Ok(None);
        };
        let prev = dm.run(&id).await?;
        let mut run = prev.value.clone();
        if prev.value.cancel {
            // Asked to cancel: its pass cancels it, then the group is checked again.
            return Ok(Some(id));
        }
        if runservice::start(&mut run, chrono::Utc::now()).is_err() {
            return Ok(None);
        }
        match dm.update_run_guarded(&prev, &run, &token).await {
            Ok(_) => {
                tracing::info!(run_id = %id, group, "run started");
                Ok(Some(id))
            }
            Err(DmError::Conflict(_)) => Ok(Some(id)),
            Err(e) => Err(e),
        }
    }
}

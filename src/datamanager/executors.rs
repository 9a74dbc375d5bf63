//! The executor registry: one key per executor, attached to a lease the executor keeps
//! alive with its heartbeats, so a dead executor's key disappears by itself. Deleting an
//! executor deletes only its key; the scheduler fails its unfinished tasks.

use cairn_client::executor::Executor;

use super::keys;
use super::{Datamanager, DmError, delete, encode, put_with_lease};

impl Datamanager {
    /// Registers or refreshes an executor under `lease`.
    pub async fn put_executor(&self, executor: &Executor) -> Result<i64, DmError> {
        let resp = self
            .commit(
                vec![],
                vec![put_with_lease(
                    keys::executor(&executor.id),
                    encode(executor),
                    executor.lease,
                )],
            )
            .await?;
        Ok(resp.revision)
    }

    pub async fn executor(&self, id: &str) -> Result<Option<Executor>, DmError> {
        Ok(self.get_json(&keys::executor(id)).await?.map(|v| v.value))
    }

    pub async fn executors(&self) -> Result<Vec<Executor>, DmError> {
        Ok(self
            .scan_json(keys::EXECUTOR)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// Deletes the executor's key; `NotFound` when there is none.
    pub async fn delete_executor(&self, id: &str) -> Result<(), DmError> {
        if self.executor(id).await?.is_none() {
            return Err(DmError::not_found("executor", id));
        }
        self.commit(vec![], vec![delete(keys::executor(id))])
            .await?;
        Ok(())
    }
}

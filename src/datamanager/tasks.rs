//! Executor tasks: the stored part (spec + status) of each task handed to an executor,
//! keyed by run task id so that a run task is scheduled at most once, plus a marker per
//! executor that every change rewrites, which is what executors' long polls watch.

use std::collections::BTreeMap;

use cairn_client::executor::ExecutorTask;
use cairn_client::run::Run;
use store::{KeyRange, WatchRequest, WatchStream};

use super::keys;
use raft::Write;

use super::{Datamanager, DmError, Versioned, absent, decode, delete, encode, put, unchanged};

impl Datamanager {
    /// Creates `et` unless its key exists. Returns whether it was created.
    pub async fn create_executor_task(&self, et: &ExecutorTask) -> Result<bool, DmError> {
        let resp = self
            .commit(
                vec![absent(keys::executor_task(&et.id))],
                vec![
                    put(keys::executor_task(&et.id), encode(et)),
                    put(
                        keys::executor_task_marker(&et.spec.executor_id, &et.id),
                        Vec::new(),
                    ),
                ],
            )
            .await?;
        Ok(resp.succeeded)
    }

    pub async fn executor_task(
        &self,
        id: &str,
    ) -> Result<Option<Versioned<ExecutorTask>>, DmError> {
        self.get_json(&keys::executor_task(id)).await
    }

    /// Writes `et` if it is still at `prev`'s revision; `Conflict` otherwise.
    pub async fn update_executor_task(
        &self,
        prev: &Versioned<ExecutorTask>,
        et: &ExecutorTask,
    ) -> Result<i64, DmError> {
        let resp = self
            .commit(
                vec![unchanged(keys::executor_task(&et.id), prev.mod_revision)],
                vec![
                    put(keys::executor_task(&et.id), encode(et)),
                    put(
                        keys::executor_task_marker(&et.spec.executor_id, &et.id),
                        Vec::new(),
                    ),
                ],
            )
            .await?;
        if !resp.succeeded {
            return Err(DmError::Conflict(format!("executor task {}", et.id)));
        }
        Ok(resp.revision)
    }

    /// Applies `f` to executor task `id` and writes the task it returns (`None`: nothing
    /// to write), re-reading and re-applying on concurrent changes until the handle's
    /// context expires. `NotFound` when the task does not exist. Returns the task as
    /// written, or `None` when `f` wrote nothing.
    pub async fn update_executor_task_with<E, F>(
        &self,
        id: &str,
        mut f: F,
    ) -> Result<Option<Versioned<ExecutorTask>>, E>
    where
        F: FnMut(&ExecutorTask) -> Result<Option<ExecutorTask>, E>,
        E: From<DmError>,
    {
        let key = keys::executor_task(id);
        let written = self
            .update_keys(
                &format!("updating executor task {id}"),
                vec![key.clone()],
                |current| {
                    let Some(kv) = &current[0] else {
                        return Err(E::from(DmError::not_found("executor task", id)));
                    };
                    let prev: ExecutorTask = decode(&key, &kv.value)?;
                    let Some(next) = f(&prev)? else {
                        return Ok(None);
                    };
                    let write = Write::ops(vec![
                        put(key.clone(), encode(&next)),
                        put(
                            keys::executor_task_marker(&next.spec.executor_id, &next.id),
                            Vec::new(),
                        ),
                    ]);
                    Ok(Some((write, next)))
                },
            )
            .await?;
        Ok(written.map(|(value, mod_revision)| Versioned {
            value,
            mod_revision,
        }))
    }

    /// Deletes `prev` if unchanged since it was read.
    pub async fn delete_executor_task(
        &self,
        prev: &Versioned<ExecutorTask>,
    ) -> Result<(), DmError> {
        let et = &prev.value;
        let resp = self
            .commit(
                vec![unchanged(keys::executor_task(&et.id), prev.mod_revision)],
                vec![
                    delete(keys::executor_task(&et.id)),
                    delete(keys::executor_task_marker(&et.spec.executor_id, &et.id)),
                ],
            )
            .await?;
        if !resp.succeeded {
            return Err(DmError::Conflict(format!("executor task {}", et.id)));
        }
        Ok(())
    }

    /// The executor tasks that exist for `run`'s tasks, by task id.
    pub async fn executor_tasks_of_run(
        &self,
        run: &Run,
    ) -> Result<BTreeMap<String, Versioned<ExecutorTask>>, DmError> {
        let keys: Vec<String> = run.tasks.keys().map(|id| keys::executor_task(id)).collect();
        Ok(self
            .get_many_json::<ExecutorTask>(&keys)
            .await?
            .into_iter()
            .flatten()
            .map(|v| (v.value.id.clone(), v))
            .collect())
    }

    /// The tasks assigned to one executor, and the revision they were read at.
    pub async fn executor_tasks_of(
        &self,
        executor_id: &str,
    ) -> Result<(Vec<Versioned<ExecutorTask>>, i64), DmError> {
        let prefix = keys::executor_tasks_of(executor_id);
        // Taken before reading: a long poll resuming from it may wake once for nothing,
        // but never misses a change.
        let revision = self.kv().header().revision;
        let markers = self.scan(&prefix, true).await?;
        let keys: Vec<String> = markers
            .iter()
            .filter_map(|kv| keys::id_of(&kv.key, &prefix).map(keys::executor_task))
            .collect();
        let tasks = self
            .get_many_json::<ExecutorTask>(&keys)
            .await?
            .into_iter()
            .flatten()
            .filter(|v| v.value.spec.executor_id == executor_id)
            .filter(|v| match cairn_client::ids::check_task_id(&v.value.id) {
                Ok(()) => true,
                // Only a direct store write makes one (security review C2): never hand
                // it to an executor, which names a directory after it.
                Err(e) => {
                    tracing::warn!(error = %e, "an executor task with an invalid id is not handed out");
                    false
                }
            })
            .collect();
        Ok((tasks, revision))
    }

    /// Unfinished executor tasks per executor id: the load the scheduler counts against
    /// each executor's capacity.
    pub async fn assigned_counts(&self) -> Result<BTreeMap<String, usize>, DmError> {
        let mut assigned = BTreeMap::new();
        for et in self.all_executor_tasks().await? {
            if !et.value.status.phase.is_finished() {
                *assigned.entry(et.value.spec.executor_id).or_default() += 1;
            }
        }
        Ok(assigned)
    }

    /// Every executor task (they exist only while runs are active).
    pub async fn all_executor_tasks(&self) -> Result<Vec<Versioned<ExecutorTask>>, DmError> {
        self.scan_json(keys::EXECUTOR_TASK).await
    }

    /// Changes to one executor's tasks from revision `from` on.
    pub fn watch_executor_tasks(&self, executor_id: &str, from: i64) -> WatchStream {
        self.kv().watch(WatchRequest {
            range: KeyRange::prefix(keys::executor_tasks_of(executor_id).into_bytes()),
            start_revision: from,
            prev_kv: false,
            progress_notify: false,
            filter_put: false,
            filter_delete: false,
        })
    }
}

//! The scheduler's watches, typed: which runs were written, which runs' executor tasks
//! changed, and whether executors came or went. The keys and the JSON of the watched
//! objects stay here: a watch yields run ids or an [`ExecutorChanges`], never store
//! events.
//!
//! Each watch starts at the revision it is given (the caller reads first, then watches
//! from the next revision: no gap). A watch that ends — cancelled by the store (compacted
//! away, a slow consumer) or closed — yields [`DmError::Kv`] with
//! [`raft::KvError::Unavailable`] and nothing after it.

use store::{Event, EventKind, KeyRange, WatchMessage, WatchRequest, WatchStream};

use super::{Datamanager, DmError, keys};

/// A watch whose messages are decoded to `T` (a progress notification decodes to
/// `T::default()`).
pub struct ChangeWatch<T> {
    stream: WatchStream,
    decode: fn(&[Event]) -> T,
}

/// What the executors watch reported: registrations and heartbeats (puts), and executors
/// gone (deleted, or their lease expired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutorChanges {
    pub put: bool,
    pub gone: bool,
}

impl ExecutorChanges {
    /// The changes of `self` and of `other`, together.
    pub fn merge(self, other: ExecutorChanges) -> ExecutorChanges {
        ExecutorChanges {
            put: self.put || other.put,
            gone: self.gone || other.gone,
        }
    }
}

impl<T: Default> ChangeWatch<T> {
    /// The next message, decoded; an error once the watch has ended.
    pub async fn recv(&mut self) -> Result<T, DmError> {
        let m = self.stream.recv().await;
        decoded(m, self.decode)
    }

    /// A message already received, decoded, without waiting; `None` when there is none
    /// (the next [`recv`](Self::recv) reports a watch that ended meanwhile).
    pub fn try_recv(&mut self) -> Option<Result<T, DmError>> {
        let m = self.stream.try_recv()?;
        Some(decoded(Some(m), self.decode))
    }
}

impl Datamanager {
    /// The ids of the runs written (or deleted) from revision `from` on, one batch per
    /// revision.
    pub fn watch_run_ids(&self, from: i64) -> ChangeWatch<Vec<String>> {
        self.change_watch(keys::RUN, from, false, run_ids_of_run_events)
    }

    /// The ids of the runs whose executor tasks are created, changed or deleted from
    /// revision `from` on (a deleted task's run is read from its value before the delete).
    pub fn watch_task_run_ids(&self, from: i64) -> ChangeWatch<Vec<String>> {
        self.change_watch(keys::EXECUTOR_TASK, from, true, run_ids_of_task_events)
    }

    /// Executor registrations, heartbeats and removals from revision `from` on.
    pub fn watch_executor_changes(&self, from: i64) -> ChangeWatch<ExecutorChanges> {
        self.change_watch(keys::EXECUTOR, from, true, executor_changes)
    }

    fn change_watch<T>(
        &self,
        prefix: &str,
        from: i64,
        prev_kv: bool,
        decode: fn(&[Event]) -> T,
    ) -> ChangeWatch<T> {
        let stream = self.kv().watch(WatchRequest {
            range: KeyRange::prefix(prefix.as_bytes().to_vec()),
            start_revision: from,
            prev_kv,
            progress_notify: false,
            filter_put: false,
            filter_delete: false,
        });
        ChangeWatch { stream, decode }
    }
}

/// One watch message decoded: events through `decode`, a progress notification as
/// nothing, the end of the watch as an error.
fn decoded<T: Default>(m: Option<WatchMessage>, decode: fn(&[Event]) -> T) -> Result<T, DmError> {
    match m {
        Some(WatchMessage::Events { events, .. }) => Ok(decode(&events)),
        Some(WatchMessage::Progress { .. }) => Ok(T::default()),
        Some(WatchMessage::Canceled(reason)) => Err(watch_ended(reason.to_string())),
        None => Err(watch_ended("closed".into())),
    }
}

fn watch_ended(why: String) -> DmError {
    DmError::Kv(raft::KvError::Unavailable(format!(
        "scheduler watch ended: {why}"
    )))
}

/// The run ids of events on `rs/run/<id>`.
fn run_ids_of_run_events(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(run_id_of_run_event).collect()
}

fn run_id_of_run_event(ev: &Event) -> Option<String> {
    keys::id_of(&ev.kv.key, keys::RUN).map(str::to_string)
}

/// The run ids of events on executor tasks (`rs/et/<task id>`), read from their JSON.
fn run_ids_of_task_events(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(run_id_of_task_event).collect()
}

/// The run of an executor task event: from the task written, or for a delete, from the
/// task as it was before (`prev_kv`). A value that is not an executor task is skipped.
fn run_id_of_task_event(ev: &Event) -> Option<String> {
    let value = if ev.kv.value.is_empty() {
        ev.prev_kv.as_ref().map(|kv| kv.value.as_slice())?
    } else {
        ev.kv.value.as_slice()
    };
    serde_json::from_slice::<cairn_client::executor::ExecutorTask>(value)
        .ok()
        .map(|et| et.spec.run_id)
}

fn executor_changes(events: &[Event]) -> ExecutorChanges {
    events
        .iter()
        .fold(ExecutorChanges::default(), |seen, e| match e.kind {
            EventKind::Put => seen.merge(ExecutorChanges {
                put: true,
                gone: false,
            }),
            EventKind::Delete => seen.merge(ExecutorChanges {
                put: false,
                gone: true,
            }),
        })
}

#[cfg(test)]
mod tests {
    use cairn_client::executor::ExecutorTask;
    use store::{CancelReason, KeyValue};

    use super::*;

    fn kv(key: &str, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value,
            ..KeyValue::default()
        }
    }

    fn put(key: &str, value: Vec<u8>) -> Event {
        Event {
            kind: EventKind::Put,
            kv: kv(key, value),
            prev_kv: None,
        }
    }

    /// A delete of `key`, with the value before it when the watch asked for it.
    fn delete(key: &str, prev: Option<Vec<u8>>) -> Event {
        Event {
            kind: EventKind::Delete,
            kv: kv(key, Vec::new()),
            prev_kv: prev.map(|v| kv(key, v)),
        }
    }

    fn task_json(task_id: &str, run_id: &str) -> Vec<u8> {
        serde_json::to_vec(&ExecutorTask::new(task_id, run_id, "e1", 1)).expect("JSON")
    }

    #[test]
    fn a_run_event_names_the_run_of_its_key() {
        let events = [
            put(&keys::run("0000000000000007"), b"{}".to_vec()),
            delete(&keys::run("0000000000000008"), None),
            put(&keys::run_config("0000000000000009"), b"{}".to_vec()),
        ];
        assert_eq!(
            run_ids_of_run_events(&events),
            vec!["0000000000000007", "0000000000000008"]
        );
    }

    #[test]
    fn a_task_event_names_the_run_of_the_task_also_when_deleted() {
        let events = [
            put(&keys::executor_task("t1"), task_json("t1", "r1")),
            delete(&keys::executor_task("t2"), Some(task_json("t2", "r2"))),
            // A delete without the previous value, and a value that is not a task: nothing.
            delete(&keys::executor_task("t3"), None),
            put(&keys::executor_task("t4"), b"not json".to_vec()),
        ];
        assert_eq!(run_ids_of_task_events(&events), vec!["r1", "r2"]);
    }

    #[test]
    fn executor_events_tell_puts_from_executors_gone() {
        let key = keys::EXECUTOR.to_string() + "e1";
        assert_eq!(executor_changes(&[]), ExecutorChanges::default());
        assert_eq!(
            executor_changes(&[put(&key, b"{}".to_vec()), put(&key, b"{}".to_vec())]),
            ExecutorChanges {
                put: true,
                gone: false
            }
        );
        assert_eq!(
            executor_changes(&[put(&key, b"{}".to_vec()), delete(&key, None)]),
            ExecutorChanges {
                put: true,
                gone: true
            }
        );
        assert_eq!(
            ExecutorChanges {
                put: false,
                gone: true
            }
            .merge(ExecutorChanges {
                put: true,
                gone: false
            }),
            ExecutorChanges {
                put: true,
                gone: true
            }
        );
    }

    #[test]
    fn progress_decodes_to_nothing_and_an_ended_watch_to_an_error() {
        let events = vec![put(&keys::run("r1"), b"{}".to_vec())];
        assert_eq!(
            decoded(
                Some(WatchMessage::Events {
                    revision: 3,
                    events
                }),
                run_ids_of_run_events
            )
            .expect("events"),
            vec!["r1"]
        );
        assert_eq!(
            decoded(
                Some(WatchMessage::Progress { revision: 3 }),
                run_ids_of_run_events
            )
            .expect("progress"),
            Vec::<String>::new()
        );
        let cancelled = decoded(
            Some(WatchMessage::Canceled(CancelReason::SlowConsumer)),
            executor_changes,
        );
        assert!(
            matches!(cancelled, Err(DmError::Kv(raft::KvError::Unavailable(ref why)))
                if why.starts_with("scheduler watch ended: ")),
            "{cancelled:?}"
        );
        let closed = decoded(None, executor_changes);
        assert!(
            matches!(closed, Err(DmError::Kv(raft::KvError::Unavailable(ref why)))
                if why == "scheduler watch ended: closed"),
            "{closed:?}"
        );
    }

    #[tokio::test]
    async fn the_watches_yield_run_ids_from_the_store() {
        let st = crate::datamanager::testing::TestStore::start().await;
        let dm = st.dm();
        let from = dm.kv().header().revision + 1;
        let mut runs = dm.watch_run_ids(from);
        let mut tasks = dm.watch_task_run_ids(from);
        let et = ExecutorTask::new("t1", "r1", "e1", 1);
        assert!(dm.create_executor_task(&et).await.expect("create"));
        assert_eq!(tasks.recv().await.expect("a task change"), vec!["r1"]);
        let stored = dm.executor_task("t1").await.expect("read").expect("stored");
        dm.delete_executor_task(&stored).await.expect("delete");
        assert_eq!(
            tasks.recv().await.expect("a task deleted"),
            vec!["r1"],
            "read from the task before the delete"
        );
        assert!(runs.try_recv().is_none(), "no run was written");
    }
}

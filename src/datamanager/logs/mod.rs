//! Step logs: appended live by executors, followed live by any reader, archived at the end.
//!
//! [`LogStore`] owns the object layout of logs and the in-process notification hub that
//! wakes followers. A log ([`LogId`]: a run task and its setup step or step N) is, while
//! live, a run of immutable chunk objects named by their byte offset; [`LogStore::finish`]
//! seals it with an `end` marker holding the final length; [`LogStore::archive`] writes one
//! object with the whole content and only then deletes the chunks:
//!
//! ```text
//! logs/<task>/<step>/chunks/<offset, 20 digits>   live chunks, contiguous from 0
//! logs/<task>/<step>/end                          the final length, once finished
//! logs/<task>/data/<step>.log                     the archive (preferred by readers)
//! ```
//!
//! Every chunk is created with create-if-absent at exactly the current length, so two
//! writers (even on two nodes sharing the object store) can never both extend a log from
//! the same offset. Readers never see a gap or a truncation: a chunk that disappears under
//! a reader has been archived first, and the reader carries on from the archive at the same
//! offset. The read and follow streams live in `reader.rs`. This module knows nothing of
//! HTTP, runs or executors.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_client::LogStep;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

use super::blobs::{BlobError, Blobs, ByteStream, key_segment};

mod reader;

/// How soon a follower first re-checks the object store when nothing woke it: appends may
/// land on another node that shares the store. Appends on this node wake followers at once.
pub const DEFAULT_RECHECK: Duration = Duration::from_millis(500);

/// How many times a reader re-resolves one offset before calling the layout inconsistent
/// (each retry follows a concurrent archive step, so two are always enough).
const RESOLVE_ATTEMPTS: usize = 4;

/// One log: a run task's setup log or the log of one of its steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogId {
    /// The run task (= executor task) id.
    pub task_id: String,
    /// Which of its logs.
    pub step: LogStep,
}

impl LogId {
    /// The log of `step` of task `task_id`.
    pub fn new(task_id: impl Into<String>, step: LogStep) -> LogId {
        LogId {
            task_id: task_id.into(),
            step,
        }
    }

    fn task_prefix(task_id: &str) -> String {
        format!("logs/{}/", key_segment(task_id))
    }

    /// Everything of the live log (chunks and end marker).
    fn live_prefix(&self) -> String {
        format!("{}{}/", LogId::task_prefix(&self.task_id), self.step)
    }

    fn chunk_prefix(&self) -> String {
        format!("{}chunks/", self.live_prefix())
    }

    fn chunk_key(&self, offset: u64) -> String {
        format!("{}{offset:020}", self.chunk_prefix())
    }

    fn end_key(&self) -> String {
        format!("{}end", self.live_prefix())
    }

    fn archive_key(&self) -> String {
        format!(
            "{}data/{}.log",
            LogId::task_prefix(&self.task_id),
            self.step
        )
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.task_id, self.step)
    }
}

/// What went wrong with a log operation.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An append did not start at the log's current length; resend from `expected`.
    #[error("append at the wrong offset: the log is {expected} bytes long")]
    OffsetMismatch { expected: u64 },
    /// The log is finished (or archived); nothing more can be appended.
    #[error("log {id} is finished at {len} bytes; no more appends")]
    Finished { id: String, len: u64 },
    /// A read asked for an offset past the end of a finished log.
    #[error("offset {offset} is past the end of log {id} ({len} bytes)")]
    OffsetPastEnd { id: String, offset: u64, len: u64 },
    /// The stored objects of a log contradict each other (a gap, a bad marker).
    #[error("log {id} is inconsistent in the object store: {reason}")]
    Corrupt { id: String, reason: String },
    /// The object store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, Result<Bytes, LogError>>;

/// What is known of a log's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    len: u64,
    complete: bool,
}

/// Per-log in-process state: the cached extent (its lock also serialises this process's
/// appends to the log) and the channel that wakes followers.
struct LogEntry {
    extent: tokio::sync::Mutex<Option<Extent>>,
    changed: watch::Sender<u64>,
}

impl LogEntry {
    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

struct Inner {
    blobs: Blobs,
    entries: Mutex<HashMap<LogId, Arc<LogEntry>>>,
    recheck: Duration,
}

/// Step logs over [`Blobs`]. Cloning is cheap; clones share the cache and the hub.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogStore({:?})", self.inner.blobs)
    }
}

impl LogStore {
    /// Logs in `blobs`, re-checking the store every [`DEFAULT_RECHECK`] while following.
    pub fn new(blobs: Blobs) -> LogStore {
        LogStore::with_recheck(blobs, DEFAULT_RECHECK)
    }

    /// Logs in `blobs` with another follower re-check interval.
    pub fn with_recheck(blobs: Blobs, recheck: Duration) -> LogStore {
        LogStore {
            inner: Arc::new(Inner {
                blobs,
                entries: Mutex::new(HashMap::new()),
                recheck,
            }),
        }
    }

    /// Appends `data` at byte `offset`, which must be the log's current length, and returns
    /// the new length. An exact retry of the last append (same offset, same bytes) succeeds
    /// again without storing anything; any other offset is [`LogError::OffsetMismatch`]
    /// carrying the length to resume from. Appending to a finished log is
    /// [`LogError::Finished`]. An empty append at the current length changes nothing.
    pub async fn append(&self, id: &LogId, offset: u64, data: Bytes) -> Result<u64, LogError> {
        let entry = self.entry(id);
        let mut cached = entry.extent.lock().await;
        let mut extent = match *cached {
            Some(extent) => extent,
            None => self.scan(id).await?,
        };
        let mut refreshed = cached.is_none();
        for _ in 0..RESOLVE_ATTEMPTS {
            if offset == extent.len && !extent.complete {
                if data.is_empty() {
                    *cached = Some(extent);
                    return Ok(extent.len);
                }
                let key = id.chunk_key(offset);
                if self.inner.blobs.put_if_absent(&key, data.clone()).await? {
                    extent.len += data.len() as u64;
                    *cached = Some(extent);
                    entry.notify();
                    return Ok(extent.len);
                }
                // Someone else (another node) extended the log from this offset.
            } else if offset == extent.len && data.is_empty() {
                return Ok(extent.len);
            } else if self.is_retry(id, offset, &data, extent).await? {
                *cached = Some(extent);
                return Ok(extent.len);
            } else if refreshed {
                *cached = Some(extent);
                return Err(if extent.complete {
                    LogError::Finished {
                        id: id.to_string(),
                        len: extent.len,
                    }
                } else {
                    LogError::OffsetMismatch {
                        expected: extent.len,
                    }
                });
            }
            // The cache may lag appends made through another node: look again.
            extent = self.scan(id).await?;
            refreshed = true;
        }
        *cached = None;
        Err(self.corrupt(id, format!("cannot append at byte {offset}")))
    }

    /// Seals the log: no more appends, and followers end once they have everything. Returns
    /// the final length. Finishing twice is harmless.
    pub async fn finish(&self, id: &LogId) -> Result<u64, LogError> {
        let entry = self.entry(id);
        let mut cached = entry.extent.lock().await;
        // Always from the store: appends may have landed through another node.
        let extent = self.scan(id).await?;
        let len = if extent.complete {
            extent.len
        } else {
            let marker = Bytes::from(extent.len.to_string());
            if self
                .inner
                .blobs
                .put_if_absent(&id.end_key(), marker)
                .await?
            {
                extent.len
            } else {
                self.scan(id).await?.len
            }
        };
        *cached = Some(Extent {
            len,
            complete: true,
        });
        entry.notify();
        Ok(len)
    }

    /// Seals the log if needed, writes its whole content as one archive object (streamed,
    /// never held in memory), then deletes the live chunks. Returns the archived length.
    /// Readers and followers see no gap or truncation while this runs; archiving twice is
    /// harmless.
    pub async fn archive(&self, id: &LogId) -> Result<u64, LogError> {
        let len = self.finish(id).await?;
        let blobs = &self.inner.blobs;
        let archive_key = id.archive_key();
        match blobs.head(&archive_key).await? {
            Some(meta) if meta.size != len => {
                return Err(self.corrupt(
                    id,
                    format!("archive holds {} bytes, log is {len}", meta.size),
                ));
            }
            Some(_) => {}
            None => {
                let chunks = self.chunks(id).await?;
                let mut expected = 0;
                for (offset, size, _) in &chunks {
                    if *offset != expected {
                        return Err(self.corrupt(id, format!("gap at byte {expected}")));
                    }
                    expected += size;
                }
                if expected != len {
                    return Err(self.corrupt(
                        id,
                        format!("chunks hold {expected} bytes, end marker says {len}"),
                    ));
                }
                let source = blobs.clone();
                let content = stream::iter(chunks)
                    .then(move |(_, _, key)| open_owned(source.clone(), key))
                    .try_flatten();
                let written = blobs.put_stream(&archive_key, content).await?;
                if written != len {
                    blobs.delete(&archive_key).await?;
                    return Err(
                        self.corrupt(id, format!("archived {written} bytes of a {len}-byte log"))
                    );
                }
            }
        }
        // The archive is in place: the live objects can go.
        blobs.delete_prefix(&id.live_prefix()).await?;
        // Followers wake and carry on from the archive; the entry is no longer needed (a
        // later look at this log finds the archive in one request).
        if let Some(entry) = self.lock_entries().remove(id) {
            entry.notify();
        }
        Ok(len)
    }

    /// The log's current length (0 for a log nothing was written to).
    pub async fn len(&self, id: &LogId) -> Result<u64, LogError> {
        Ok(self.refresh(id).await?.len)
    }

    /// Whether the log is finished (or archived).
    pub async fn is_complete(&self, id: &LogId) -> Result<bool, LogError> {
        Ok(self.refresh(id).await?.complete)
    }

    /// Streams the log from byte `offset` up to its length at the time of the call, then
    /// ends. An offset past the end is [`LogError::OffsetPastEnd`].
    pub async fn read(&self, id: &LogId, offset: u64) -> Result<LogStream, LogError> {
        let extent = self.refresh(id).await?;
        if offset > extent.len {
            return Err(LogError::OffsetPastEnd {
                id: id.to_string(),
                offset,
                len: extent.len,
            });
        }
        Ok(self.reader(id, offset, Some(extent.len)).into_stream())
    }

    /// Streams the log from byte `offset`, then new data as it is appended, and ends when
    /// the log is finished and everything has been delivered. A finished log nothing was
    /// written to gives an empty stream that ends.
    pub fn follow(&self, id: &LogId, offset: u64) -> LogStream {
        self.reader(id, offset, None).into_stream()
    }

    /// Deletes every log of a task, live or archived; returns how many objects went.
    /// Followers of a deleted log keep waiting for data (re-checking the store).
    pub async fn delete_task_logs(&self, task_id: &str) -> Result<usize, LogError> {
        let deleted = self
            .inner
            .blobs
            .delete_prefix(&LogId::task_prefix(task_id))
            .await?;
        let removed: Vec<Arc<LogEntry>> = {
            let mut entries = self.lock_entries();
            let ids: Vec<LogId> = entries
                .keys()
                .filter(|id| id.task_id == task_id)
                .cloned()
                .collect();
            ids.iter().filter_map(|id| entries.remove(id)).collect()
        };
        for entry in removed {
            entry.notify();
        }
        Ok(deleted)
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<LogId, Arc<LogEntry>>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, id: &LogId) -> Arc<LogEntry> {
        self.lock_entries()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(LogEntry {
                    extent: tokio::sync::Mutex::new(None),
                    changed: watch::Sender::new(0),
                })
            })
            .clone()
    }

    /// The extent from the cache when final, else from the store (updating the cache).
    async fn refresh(&self, id: &LogId) -> Result<Extent, LogError> {
        let entry = self.entry(id);
        let mut cached = entry.extent.lock().await;
        if let Some(extent) = *cached
            && extent.complete
        {
            return Ok(extent);
        }
        let extent = self.scan(id).await?;
        *cached = Some(extent);
        Ok(extent)
    }

    /// Works out a log's extent from the object store alone (after a restart, or when
    /// another node may have written).
    async fn scan(&self, id: &LogId) -> Result<Extent, LogError> {
        if let Some(extent) = self.sealed_extent(id).await? {
            return Ok(extent);
        }
        let chunks = self.chunks(id).await?;
        // The log may have been finished and archived while we listed (chunks are deleted
        // only after the archive is written, so looking again settles it).
        if let Some(extent) = self.sealed_extent(id).await? {
            return Ok(extent);
        }
        let len = chunks
            .last()
            .map(|(offset, size, _)| offset + size)
            .unwrap_or(0);
        Ok(Extent {
            len,
            complete: false,
        })
    }

    /// The final extent if the log is finished (end marker) or archived.
    async fn sealed_extent(&self, id: &LogId) -> Result<Option<Extent>, LogError> {
        if let Some(len) = self.end_marker(id).await? {
            return Ok(Some(Extent {
                len,
                complete: true,
            }));
        }
        Ok(self
            .inner
            .blobs
            .head(&id.archive_key())
            .await?
            .map(|meta| Extent {
                len: meta.size,
                complete: true,
            }))
    }

    /// The final length written by `finish`, if any.
    async fn end_marker(&self, id: &LogId) -> Result<Option<u64>, LogError> {
        match self.inner.blobs.get_bytes(&id.end_key()).await {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| self.corrupt(id, "unreadable end marker".to_owned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The live chunks as `(offset, size, key)`, ordered by offset.
    async fn chunks(&self, id: &LogId) -> Result<Vec<(u64, u64, String)>, LogError> {
        let prefix = id.chunk_prefix();
        self.inner
            .blobs
            .list(&prefix)
            .await?
            .into_iter()
            .map(|(key, meta)| {
                key[prefix.len()..]
                    .parse::<u64>()
                    .map(|offset| (offset, meta.size, key.clone()))
                    .map_err(|_| self.corrupt(id, format!("stray object {key:?}")))
            })
            .collect()
    }

    /// Whether `data` at `offset` is exactly the last stretch of the stored log.
    async fn is_retry(
        &self,
        id: &LogId,
        offset: u64,
        data: &Bytes,
        extent: Extent,
    ) -> Result<bool, LogError> {
        if data.is_empty() || offset.checked_add(data.len() as u64) != Some(extent.len) {
            return Ok(false);
        }
        let blobs = &self.inner.blobs;
        let stored = match blobs.get_bytes(&id.chunk_key(offset)).await {
            Ok(stored) => stored,
            Err(e) if e.is_not_found() => {
                // Archived since: compare with the archive's tail.
                match blobs.get_range(&id.archive_key(), offset).await {
                    Ok(tail) => tail
                        .try_fold(Vec::new(), |mut all, b| async move {
                            all.extend_from_slice(&b);
                            Ok(all)
                        })
                        .await
                        .map(Bytes::from)?,
                    Err(e) if e.is_not_found() => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(stored == *data)
    }

    fn corrupt(&self, id: &LogId, reason: String) -> LogError {
        LogError::Corrupt {
            id: id.to_string(),
            reason,
        }
    }
}

/// Opens an object for streaming, owning its arguments (so the future is `'static`).
async fn open_owned(blobs: Blobs, key: String) -> Result<ByteStream, BlobError> {
    blobs.get(&key).await
}

#[cfg(test)]
mod tests;

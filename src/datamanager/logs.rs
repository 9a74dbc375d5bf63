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
//! offset. This module knows nothing of HTTP, runs or executors.

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

/// How soon a follower first re-checks the object store when nothing woke it: appends may
/// land on another node that shares the store. Appends on this node wake followers at once.
pub const DEFAULT_RECHECK: Duration = Duration::from_millis(500);

/// Each re-check that finds nothing doubles the next wait, up to this many times the first
/// (500 ms → 8 s), so idle followers cost next to nothing; new data resets it.
const MAX_RECHECK_FACTOR: u32 = 16;

/// The wait before a follower's re-check after `idle` re-checks that found nothing.
fn recheck_after(first: Duration, idle: u32) -> Duration {
    first.saturating_mul(2u32.saturating_pow(idle).min(MAX_RECHECK_FACTOR))
}

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

    fn reader(&self, id: &LogId, offset: u64, until: Option<u64>) -> Reader {
        let wake = until.is_none().then(|| self.entry(id).changed.subscribe());
        Reader {
            logs: self.clone(),
            id: id.clone(),
            pos: offset,
            until,
            wake,
            idle: 0,
            // Chunk 0 starts at 0; any other offset may fall inside a chunk.
            aligned: offset == 0,
            current: None,
        }
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

/// Where the bytes at a reader's position come from.
enum Source {
    /// A stream of the bytes from the position on.
    Bytes(ByteStream),
    /// The log is finished and the position is its end.
    End,
    /// Nothing is stored at the position yet.
    NotYet,
}

/// The state of one `read` or `follow` stream.
struct Reader {
    logs: LogStore,
    id: LogId,
    /// The offset of the next byte to deliver.
    pos: u64,
    /// `read`: the length to stop at. `follow`: `None`, stop at the end of a finished log.
    until: Option<u64>,
    /// `follow`: wakes on appends and finishes made in this process.
    wake: Option<watch::Receiver<u64>>,
    /// Re-checks in a row that found nothing new (they space out; see [`recheck_after`]).
    idle: u32,
    /// Whether `pos` is known to be a chunk boundary (true once something was read).
    aligned: bool,
    current: Option<ByteStream>,
}

impl Reader {
    fn into_stream(self) -> LogStream {
        stream::try_unfold(self, |mut reader| async move {
            Ok(reader.next().await?.map(|bytes| (bytes, reader)))
        })
        .boxed()
    }

    async fn next(&mut self) -> Result<Option<Bytes>, LogError> {
        loop {
            if let Some(current) = &mut self.current {
                match current.next().await {
                    Some(Ok(bytes)) if bytes.is_empty() => continue,
                    Some(Ok(bytes)) => {
                        self.pos += bytes.len() as u64;
                        self.idle = 0;
                        return Ok(Some(bytes));
                    }
                    // Removed under us by archiving: resolve the same offset again.
                    Some(Err(e)) if e.is_not_found() => self.current = None,
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        self.current = None;
                        self.aligned = true;
                    }
                }
                continue;
            }
            if let Some(until) = self.until
                && self.pos >= until
            {
                return Ok(None);
            }
            if let Some(wake) = &mut self.wake {
                wake.borrow_and_update();
            }
            match self.resolve().await? {
                Source::Bytes(bytes) => self.current = Some(bytes),
                Source::End => return Ok(None),
                Source::NotYet if self.until.is_some() => return Ok(None),
                Source::NotYet => self.wait().await,
            }
        }
    }

    /// Finds where the byte at `pos` is stored.
    async fn resolve(&mut self) -> Result<Source, LogError> {
        let blobs = self.logs.inner.blobs.clone();
        let id = self.id.clone();
        for _ in 0..RESOLVE_ATTEMPTS {
            // The usual case: a chunk starts exactly here.
            match blobs.get(&id.chunk_key(self.pos)).await {
                Ok(bytes) => {
                    self.aligned = true;
                    return Ok(Source::Bytes(bytes));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(meta) = blobs.head(&id.archive_key()).await? {
                if self.pos == meta.size {
                    return Ok(Source::End);
                }
                match blobs.get_range(&id.archive_key(), self.pos).await {
                    Ok(bytes) => return Ok(Source::Bytes(bytes)),
                    Err(BlobError::OffsetPastEnd { size, .. }) => {
                        return Err(self.past_end(size));
                    }
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if !self.aligned {
                // Starting inside a chunk: find the one that holds `pos`.
                let chunks = self.logs.chunks(&id).await?;
                let end = chunks.last().map(|(offset, size, _)| offset + size);
                if end == Some(self.pos) {
                    // At the current end: the next chunk will start exactly here.
                    self.aligned = true;
                }
                let holder = chunks
                    .into_iter()
                    .find(|(offset, size, _)| *offset < self.pos && self.pos < offset + size);
                if let Some((offset, _, key)) = holder {
                    match blobs.get_range(&key, self.pos - offset).await {
                        Ok(bytes) => {
                            self.aligned = true;
                            return Ok(Source::Bytes(bytes));
                        }
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            match self.logs.end_marker(&id).await? {
                Some(len) if self.pos == len => return Ok(Source::End),
                Some(len) if self.pos > len => return Err(self.past_end(len)),
                // Finished with data at `pos`: it was archived between our looks.
                Some(_) => continue,
                None => return Ok(Source::NotYet),
            }
        }
        Err(self
            .logs
            .corrupt(&id, format!("no object holds byte {}", self.pos)))
    }

    /// Waits for an append or finish in this process, or the periodic re-check.
    async fn wait(&mut self) {
        let recheck = recheck_after(self.logs.inner.recheck, self.idle);
        let Some(wake) = &mut self.wake else {
            tokio::time::sleep(recheck).await;
            self.idle = self.idle.saturating_add(1);
            return;
        };
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    // The log's entry was dropped (archived or deleted): from now on only
                    // the periodic re-check wakes this reader.
                    self.wake = None;
                }
            }
            () = tokio::time::sleep(recheck) => self.idle = self.idle.saturating_add(1),
        }
    }

    fn past_end(&self, len: u64) -> LogError {
        LogError::OffsetPastEnd {
            id: self.id.to_string(),
            offset: self.pos,
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::blobs::testing::{backends, collect};
    use super::*;
    use tokio::sync::mpsc;

    const WITHIN: Duration = Duration::from_secs(20);

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn step0() -> LogId {
        LogId::new("task-1", LogStep::Step(0))
    }

    fn failed<T>(result: Result<T, LogError>, what: &str) -> LogError {
        match result {
            Ok(_) => panic!("{what}: expected an error"),
            Err(e) => e,
        }
    }

    /// Everything `read` returns now.
    async fn read_all(logs: &LogStore, id: &LogId, offset: u64) -> Vec<u8> {
        collect(logs.read(id, offset).await.expect("read")).await
    }

    /// Everything `follow` delivers until it ends (bounded, so a hang fails the test).
    async fn follow_all(logs: &LogStore, id: &LogId, offset: u64) -> Vec<u8> {
        tokio::time::timeout(WITHIN, collect(logs.follow(id, offset)))
            .await
            .expect("follow ends")
    }

    #[test]
    fn idle_rechecks_space_out_up_to_a_bound() {
        let first = Duration::from_millis(500);
        assert_eq!(recheck_after(first, 0), first);
        assert_eq!(recheck_after(first, 1), first * 2);
        assert_eq!(recheck_after(first, 3), first * 8);
        assert_eq!(recheck_after(first, 4), first * 16);
        assert_eq!(recheck_after(first, u32::MAX), first * 16);
    }

    #[test]
    fn steps_display_as_setup_or_their_number_and_parse_back() {
        assert_eq!(LogStep::Setup.to_string(), "setup");
        assert_eq!(LogStep::Step(3).to_string(), "3");
        assert_eq!("setup".parse::<LogStep>().expect("setup"), LogStep::Setup);
        assert_eq!("12".parse::<LogStep>().expect("12"), LogStep::Step(12));
        assert!(matches!(
            "x".parse::<LogStep>(),
            Err(cairn_client::api::BadLogStep { .. })
        ));
        assert_eq!(
            LogId::new("t", LogStep::Step(2)).chunk_key(7),
            "logs/t/2/chunks/00000000000000000007"
        );
        assert_eq!(
            LogId::new("t", LogStep::Setup).archive_key(),
            "logs/t/data/setup.log"
        );
    }

    #[tokio::test]
    async fn appends_at_the_current_length_grow_the_log() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            assert_eq!(logs.len(&id).await.expect("len"), 0);
            assert_eq!(logs.append(&id, 0, b("hello ")).await.expect("append"), 6);
            assert_eq!(logs.append(&id, 6, b("world")).await.expect("append"), 11);
            assert_eq!(logs.len(&id).await.expect("len"), 11, "{}", be.name);
            assert!(!logs.is_complete(&id).await.expect("complete"));
            assert_eq!(read_all(&logs, &id, 0).await, b"hello world");
        }
    }

    #[tokio::test]
    async fn an_append_at_the_wrong_offset_is_refused_with_the_length_to_resume_from() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("abc")).await.expect("append");
            for offset in [0, 2, 4, 100] {
                let err = failed(logs.append(&id, offset, b("zz")).await, "wrong offset");
                assert!(
                    matches!(err, LogError::OffsetMismatch { expected: 3 }),
                    "{}: offset {offset}: {err}",
                    be.name
                );
            }
            assert_eq!(read_all(&logs, &id, 0).await, b"abc");
        }
    }

    #[tokio::test]
    async fn an_exact_retry_of_the_last_chunk_succeeds_without_storing_twice() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("one ")).await.expect("append");
            logs.append(&id, 4, b("two")).await.expect("append");
            assert_eq!(
                logs.append(&id, 4, b("two")).await.expect("retry"),
                7,
                "{}",
                be.name
            );
            // Not a retry: other bytes at that offset, or an older chunk again.
            let err = failed(logs.append(&id, 4, b("TWO")).await, "other bytes");
            assert!(
                matches!(err, LogError::OffsetMismatch { expected: 7 }),
                "{err}"
            );
            let err = failed(logs.append(&id, 0, b("one ")).await, "older chunk");
            assert!(
                matches!(err, LogError::OffsetMismatch { expected: 7 }),
                "{err}"
            );
            assert_eq!(read_all(&logs, &id, 0).await, b"one two");
        }
    }

    #[tokio::test]
    async fn an_empty_append_changes_nothing() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            assert_eq!(logs.append(&id, 0, Bytes::new()).await.expect("empty"), 0);
            logs.append(&id, 0, b("x")).await.expect("append");
            assert_eq!(logs.append(&id, 1, Bytes::new()).await.expect("empty"), 1);
            assert_eq!(read_all(&logs, &id, 0).await, b"x", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn a_finished_log_refuses_appends_but_accepts_the_retry_of_its_last_chunk() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("done")).await.expect("append");
            assert_eq!(logs.finish(&id).await.expect("finish"), 4);
            assert_eq!(logs.finish(&id).await.expect("finish twice"), 4);
            assert!(logs.is_complete(&id).await.expect("complete"));
            let err = failed(logs.append(&id, 4, b("late")).await, "after finish");
            assert!(
                matches!(err, LogError::Finished { len: 4, .. }),
                "{}: {err}",
                be.name
            );
            assert_eq!(logs.append(&id, 0, b("done")).await.expect("retry"), 4);
        }
    }

    #[tokio::test]
    async fn read_starts_anywhere_up_to_the_end_and_refuses_past_it() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("abc")).await.expect("append");
            logs.append(&id, 3, b("defg")).await.expect("append");
            assert_eq!(read_all(&logs, &id, 1).await, b"bcdefg", "{}", be.name);
            assert_eq!(read_all(&logs, &id, 3).await, b"defg");
            assert_eq!(read_all(&logs, &id, 5).await, b"fg");
            assert!(read_all(&logs, &id, 7).await.is_empty());
            let err = failed(logs.read(&id, 8).await, "past end");
            assert!(
                matches!(err, LogError::OffsetPastEnd { len: 7, .. }),
                "{err}"
            );
            // A log nobody wrote reads as empty.
            let other = LogId::new("task-1", LogStep::Setup);
            assert!(read_all(&logs, &other, 0).await.is_empty());
        }
    }

    /// Appends `parts` from another task, each only after the follower reported the
    /// previous one, then finishes the log.
    fn drive_appends(
        logs: &LogStore,
        id: &LogId,
        start: u64,
        parts: Vec<&'static str>,
        mut received: mpsc::UnboundedReceiver<usize>,
    ) -> tokio::task::JoinHandle<()> {
        let logs = logs.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut offset = start;
            let mut seen = 0;
            for part in parts {
                offset = logs.append(&id, offset, b(part)).await.expect("append");
                // Wait until the follower has everything so far: it is now waiting live.
                while seen < offset as usize {
                    seen = received.recv().await.expect("follower alive");
                }
            }
            logs.finish(&id).await.expect("finish");
        })
    }

    /// Follows `id` from `offset`, reporting progress to the writer, until the stream ends.
    async fn follow_reporting(
        logs: &LogStore,
        id: &LogId,
        offset: u64,
        report: mpsc::UnboundedSender<usize>,
    ) -> Vec<u8> {
        let mut stream = logs.follow(id, offset);
        let mut got = Vec::new();
        let follow = async {
            while let Some(bytes) = stream.next().await {
                got.extend_from_slice(&bytes.expect("follow item"));
                // Report the absolute end of what was delivered.
                let _ = report.send(offset as usize + got.len());
            }
        };
        tokio::time::timeout(WITHIN, follow)
            .await
            .expect("follow ends");
        got
    }

    #[tokio::test]
    async fn follow_from_zero_receives_live_appends_and_ends_after_finish() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            let (report, received) = mpsc::unbounded_channel();
            let writer = drive_appends(&logs, &id, 0, vec!["a", "bb", "ccc"], received);
            let got = follow_reporting(&logs, &id, 0, report).await;
            writer.await.expect("writer");
            assert_eq!(got, b"abbccc", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn follow_from_the_middle_of_a_chunk_receives_the_rest_and_new_data() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("01234")).await.expect("append");
            let (report, received) = mpsc::unbounded_channel();
            let writer = drive_appends(&logs, &id, 5, vec!["56", "789"], received);
            let got = follow_reporting(&logs, &id, 3, report).await;
            writer.await.expect("writer");
            assert_eq!(got, b"3456789", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn follow_from_past_the_current_end_waits_for_the_data() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("ab")).await.expect("append");
            let follower = tokio::spawn({
                let logs = logs.clone();
                let id = id.clone();
                async move { follow_all(&logs, &id, 4).await }
            });
            logs.append(&id, 2, b("cdef")).await.expect("append");
            logs.finish(&id).await.expect("finish");
            assert_eq!(follower.await.expect("follower"), b"ef", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn follow_from_the_current_end_receives_only_new_data() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("old ")).await.expect("append");
            let (report, received) = mpsc::unbounded_channel();
            let writer = drive_appends(&logs, &id, 4, vec!["new ", "newer"], received);
            let got = follow_reporting(&logs, &id, 4, report).await;
            writer.await.expect("writer");
            assert_eq!(got, b"new newer", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn following_a_finished_empty_log_ends_at_once_with_nothing() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = LogId::new("quiet", LogStep::Setup);
            logs.finish(&id).await.expect("finish");
            assert!(follow_all(&logs, &id, 0).await.is_empty(), "{}", be.name);
            logs.archive(&id).await.expect("archive");
            assert!(follow_all(&logs, &id, 0).await.is_empty());
            assert!(read_all(&logs, &id, 0).await.is_empty());
        }
    }

    #[tokio::test]
    async fn following_a_finished_log_delivers_everything_then_ends() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("all ")).await.expect("append");
            logs.append(&id, 4, b("there")).await.expect("append");
            logs.finish(&id).await.expect("finish");
            assert_eq!(follow_all(&logs, &id, 0).await, b"all there", "{}", be.name);
            assert_eq!(follow_all(&logs, &id, 9).await, b"");
            let err = collect_err(logs.follow(&id, 10)).await;
            assert!(
                matches!(err, LogError::OffsetPastEnd { len: 9, .. }),
                "{err}"
            );
        }
    }

    async fn collect_err(mut stream: LogStream) -> LogError {
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                return e;
            }
        }
        panic!("the stream ended without an error");
    }

    #[tokio::test]
    async fn archive_keeps_the_content_byte_identical_and_removes_the_chunks() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            let mut offset = 0;
            for piece in big.chunks(700_000) {
                offset = logs
                    .append(&id, offset, Bytes::copy_from_slice(piece))
                    .await
                    .expect("append");
            }
            assert_eq!(logs.archive(&id).await.expect("archive"), big.len() as u64);
            assert_eq!(
                logs.archive(&id).await.expect("archive twice"),
                big.len() as u64
            );
            let left = be.blobs.list(&id.live_prefix()).await.expect("list");
            assert!(left.is_empty(), "{}: {left:?}", be.name);
            let stored = be
                .blobs
                .get_bytes(&id.archive_key())
                .await
                .expect("archive");
            assert!(stored[..] == big[..], "{}: archive differs", be.name);
            assert!(
                read_all(&logs, &id, 0).await == big,
                "{}: read differs",
                be.name
            );
            assert_eq!(read_all(&logs, &id, 1_000_001).await[..], big[1_000_001..]);
            assert_eq!(logs.len(&id).await.expect("len"), big.len() as u64);
            assert!(logs.is_complete(&id).await.expect("complete"));
            // Seen from a fresh process too.
            let fresh = LogStore::new(be.blobs.clone());
            assert_eq!(fresh.len(&id).await.expect("len"), big.len() as u64);
            assert!(fresh.is_complete(&id).await.expect("complete"));
            let err = failed(
                fresh.append(&id, big.len() as u64, b("x")).await,
                "archived",
            );
            assert!(matches!(err, LogError::Finished { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn a_follower_carries_on_across_the_switch_to_the_archive() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            logs.append(&id, 0, b("first ")).await.expect("append");
            logs.append(&id, 6, b("second ")).await.expect("append");
            let mut stream = logs.follow(&id, 0);
            let first = stream.next().await.expect("an item").expect("bytes");
            assert_eq!(&first[..], b"first ");
            // The rest moves to the archive (chunks deleted) while the follower is mid-log.
            logs.append(&id, 13, b("third")).await.expect("append");
            logs.archive(&id).await.expect("archive");
            let rest = tokio::time::timeout(WITHIN, collect(stream))
                .await
                .expect("ends");
            assert_eq!(rest, b"second third", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn a_live_follower_sees_no_gap_when_the_log_is_archived_under_it() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let id = step0();
            let (report, mut received) = mpsc::unbounded_channel();
            let writer = tokio::spawn({
                let logs = logs.clone();
                let id = id.clone();
                async move {
                    let mut offset = 0;
                    for part in ["x1 ", "x2 ", "x3"] {
                        offset = logs.append(&id, offset, b(part)).await.expect("append");
                    }
                    // Archive as soon as the follower has the first chunk only.
                    while received.recv().await.expect("follower alive") < 3 {}
                    logs.archive(&id).await.expect("archive");
                }
            });
            let got = follow_reporting(&logs, &id, 0, report).await;
            writer.await.expect("writer");
            assert_eq!(got, b"x1 x2 x3", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn the_length_is_rebuilt_from_the_store_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let id = step0();
        let setup = LogId::new("task-1", LogStep::Setup);
        {
            let logs = LogStore::new(Blobs::open(&url).expect("open"));
            logs.append(&id, 0, b("before ")).await.expect("append");
            logs.append(&id, 7, b("restart")).await.expect("append");
            logs.append(&setup, 0, b("pulled")).await.expect("append");
            logs.finish(&setup).await.expect("finish");
        }
        let logs = LogStore::new(Blobs::open(&url).expect("reopen"));
        assert_eq!(logs.len(&id).await.expect("len"), 14);
        assert!(!logs.is_complete(&id).await.expect("complete"));
        assert!(logs.is_complete(&setup).await.expect("complete"));
        let err = failed(logs.append(&id, 7, b("x")).await, "stale offset");
        assert!(
            matches!(err, LogError::OffsetMismatch { expected: 14 }),
            "{err}"
        );
        assert_eq!(logs.append(&id, 14, b("!")).await.expect("append"), 15);
        assert_eq!(read_all(&logs, &id, 0).await, b"before restart!");
    }

    #[tokio::test]
    async fn nodes_sharing_a_store_extend_one_log_without_overlap() {
        for be in backends() {
            let node_a = LogStore::new(be.blobs.clone());
            let node_b = LogStore::new(be.blobs.clone());
            let id = step0();
            node_a.append(&id, 0, b("a")).await.expect("a");
            assert_eq!(node_b.append(&id, 1, b("b")).await.expect("b"), 2);
            // Node A's cache says 1; the store says 2.
            assert_eq!(node_a.append(&id, 2, b("c")).await.expect("a again"), 3);
            let err = failed(node_b.append(&id, 2, b("X")).await, "taken offset");
            assert!(
                matches!(err, LogError::OffsetMismatch { expected: 3 }),
                "{err}"
            );
            node_b.finish(&id).await.expect("finish");
            assert_eq!(follow_all(&node_a, &id, 0).await, b"abc", "{}", be.name);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_at_one_offset_from_two_nodes_have_one_winner() {
        for be in backends() {
            let id = step0();
            let attempts: Vec<_> = (0..2)
                .map(|i| {
                    let logs = LogStore::new(be.blobs.clone());
                    let id = id.clone();
                    tokio::spawn(async move {
                        logs.append(&id, 0, Bytes::from(format!("node {i}"))).await
                    })
                })
                .collect();
            let mut won = 0;
            for attempt in attempts {
                match attempt.await.expect("task") {
                    Ok(len) => {
                        assert_eq!(len, 6);
                        won += 1;
                    }
                    Err(LogError::OffsetMismatch { expected: 6 }) => {}
                    Err(e) => panic!("{}: unexpected {e}", be.name),
                }
            }
            assert_eq!(won, 1, "{}", be.name);
        }
    }

    #[tokio::test]
    async fn a_follower_notices_appends_made_through_another_node_by_rechecking() {
        let blobs = Blobs::open("memory:").expect("memory");
        let here = LogStore::with_recheck(blobs.clone(), Duration::from_millis(5));
        let elsewhere = LogStore::new(blobs);
        let id = step0();
        let follower = tokio::spawn({
            let here = here.clone();
            let id = id.clone();
            async move { follow_all(&here, &id, 0).await }
        });
        // No in-process wake-up reaches `here`: only its periodic re-check can see these.
        elsewhere
            .append(&id, 0, b("remote "))
            .await
            .expect("append");
        elsewhere.append(&id, 7, b("data")).await.expect("append");
        elsewhere.finish(&id).await.expect("finish");
        assert_eq!(follower.await.expect("follower"), b"remote data");
    }

    #[tokio::test]
    async fn deleting_a_tasks_logs_removes_live_and_archived_logs() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let live = LogId::new("gone", LogStep::Step(1));
            let archived = LogId::new("gone", LogStep::Setup);
            let kept = LogId::new("gone-not", LogStep::Setup);
            logs.append(&live, 0, b("live")).await.expect("append");
            logs.append(&archived, 0, b("old")).await.expect("append");
            logs.archive(&archived).await.expect("archive");
            logs.append(&kept, 0, b("kept")).await.expect("append");
            assert_eq!(logs.delete_task_logs("gone").await.expect("delete"), 2);
            assert_eq!(logs.len(&live).await.expect("len"), 0, "{}", be.name);
            assert_eq!(logs.len(&archived).await.expect("len"), 0);
            assert!(!logs.is_complete(&archived).await.expect("complete"));
            assert_eq!(read_all(&logs, &kept, 0).await, b"kept");
        }
    }

    #[tokio::test]
    async fn task_ids_with_path_characters_stay_inside_their_own_directory() {
        for be in backends() {
            let logs = LogStore::new(be.blobs.clone());
            let odd = LogId::new("../a/b#1", LogStep::Step(0));
            logs.append(&odd, 0, b("odd")).await.expect("append");
            let keys = be.blobs.list("logs/").await.expect("list");
            assert_eq!(keys.len(), 1, "{}", be.name);
            assert!(
                keys[0].0.starts_with("logs/..%2Fa%2Fb%231/0/chunks/"),
                "{keys:?}"
            );
            assert_eq!(read_all(&logs, &odd, 0).await, b"odd");
        }
    }
}

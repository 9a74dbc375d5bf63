//! The state of one `read` or `follow` stream of a log: where the byte at its position is
//! stored (a chunk that starts there, the archive, or a chunk that holds it) and, when
//! following, how it waits for more (woken by appends in this process, re-checking the
//! store on a backoff otherwise).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream;
use tokio::sync::watch;

use super::{LogError, LogId, LogStore, LogStream, RESOLVE_ATTEMPTS};
use crate::datamanager::blobs::{BlobError, ByteStream};

/// Each re-check that finds nothing doubles the next wait, up to this many times the first
/// (500 ms → 8 s), so idle followers cost next to nothing; new data resets it.
const MAX_RECHECK_FACTOR: u32 = 16;

/// The wait before a follower's re-check after `idle` re-checks that found nothing.
pub(super) fn recheck_after(first: Duration, idle: u32) -> Duration {
    first.saturating_mul(2u32.saturating_pow(idle).min(MAX_RECHECK_FACTOR))
}

impl LogStore {
    pub(super) fn reader(&self, id: &LogId, offset: u64, until: Option<u64>) -> Reader {
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
pub(super) struct Reader {
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
    pub(super) fn into_stream(self) -> LogStream {
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

//! Export: the store's exported keys page by page at one revision, then the runs of every
//! segment recorded at that revision, merged into one id order.
//!
//! Segments are read one at a time: a segment is opened (read whole, checked against its
//! recorded SHA-256) when its first run id is the smallest still to write, and dropped
//! once its last run is written. Segments whose run-id ranges overlap (a run archived
//! later than runs with greater ids) are open together, and only those.
//!
//! Turning a run's record into its export line (decode, redact, encode) is most of an
//! export's work, so an open segment hands it to blocking threads, [`LINES_PER_TASK`] runs
//! at a time and [`TASKS_AHEAD`] tasks ahead of the writer: the export uses every core
//! while it stays one ordered stream, hashed in order by the one writer. Memory: per open
//! segment, its bytes and at most `TASKS_AHEAD + 1` batches of lines.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};
use store::{KeyRange, RangeRequest};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

use super::{ExchangeError, ExportWriter, archived_line, is_exported, keys, redact_secrets};
use crate::datamanager::blobs::Blobs;
use crate::datamanager::segments::format::{self, FooterEntry, HEADER_LEN, TRAILER_LEN};
use crate::datamanager::segments::{SegmentError, SegmentMeta};
use crate::datamanager::{Datamanager, DmError};

/// Keys read per store request.
const PAGE: i64 = 500;
/// Bytes of export lines gathered before they are sent.
const CHUNK: usize = 1 << 20;
/// Runs of a segment one blocking task turns into export lines.
const LINES_PER_TASK: usize = 500;
/// Conversion tasks in flight per open segment beyond the batch being written (2: both
/// cores of a small machine).
const TASKS_AHEAD: usize = 2;

type Tx = Sender<Result<Bytes, ExchangeError>>;

impl Datamanager {
    /// The export stream, read at the current revision, page by page and segment by
    /// segment (memory does not grow with the export's size). A read failure ends the
    /// stream with an error, so the receiver sees a truncated (invalid) export.
    /// The trailer's HMAC is keyed by `key` ([`super::export_key`]); secrets are redacted
    /// unless `include_secrets`.
    pub fn export(
        &self,
        blobs: Blobs,
        key: Vec<u8>,
        include_secrets: bool,
    ) -> impl Stream<Item = Result<Bytes, ExchangeError>> + Send + 'static {
        let dm = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, ExchangeError>>(16);
        tokio::spawn(async move {
            let r = dm.export_into(&blobs, &tx, &key, include_secrets).await;
            if let Err(e) = r {
                let _ = tx.send(Err(e)).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn export_into(
        &self,
        blobs: &Blobs,
        tx: &Tx,
        key: &[u8],
        include_secrets: bool,
    ) -> Result<(), ExchangeError> {
        let revision = self.kv().header().revision;
        // A linearizable read first, so the revision is the cluster's, not a stale one.
        self.kv().read_barrier().await.map_err(DmError::from)?;
        let (mut writer, header) = ExportWriter::start(revision, key, Some(!include_secrets));
        let mut out = Lines { tx, buf: header };
        for prefix in super::EXPORTED {
            self.export_prefix(prefix, revision, include_secrets, &mut writer, &mut out)
                .await?;
        }
        self.export_segments(blobs, revision, include_secrets, &mut writer, &mut out)
            .await?;
        out.buf.extend_from_slice(&writer.finish());
        out.flush().await;
        Ok(())
    }

    /// One page of keys from `start` (inclusive) to `end` at `revision`.
    async fn page(
        &self,
        start: Vec<u8>,
        end: &Option<Vec<u8>>,
        revision: i64,
    ) -> Result<store::RangeResponse, DmError> {
        let mut req = RangeRequest::new(match end {
            Some(e) => KeyRange::interval(start, e.clone()),
            None => KeyRange::key(start),
        });
        req.revision = revision;
        req.limit = PAGE;
        req.page_only = end.is_some();
        req.serializable = true;
        Ok(self.kv().range(req).await?)
    }

    /// The entries under `prefix` (the run sequence: that one key).
    async fn export_prefix(
        &self,
        prefix: &str,
        revision: i64,
        include_secrets: bool,
        writer: &mut ExportWriter,
        out: &mut Lines<'_>,
    ) -> Result<(), ExchangeError> {
        let range = if prefix == keys::RUN_SEQ {
            KeyRange::key(prefix.as_bytes().to_vec())
        } else {
            KeyRange::prefix(prefix.as_bytes().to_vec())
        };
        let end = range.end_bound();
        let mut start = range.key.clone();
        loop {
            let resp = self.page(start, &end, revision).await?;
            for kv in &resp.kvs {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                if !is_exported(&key) {
                    continue;
                }
                let mut value = String::from_utf8_lossy(&kv.value).into_owned();
                if !include_secrets && key.starts_with(keys::RUN_CONFIG) {
                    value = redacted_config(&key, &value)?;
                }
                writer.entry(key, value, &mut out.buf);
            }
            if !out.send_if_full().await {
                return Ok(());
            }
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// The runs of every segment recorded at `revision`, in id order.
    async fn export_segments(
        &self,
        blobs: &Blobs,
        revision: i64,
        include_secrets: bool,
        writer: &mut ExportWriter,
        out: &mut Lines<'_>,
    ) -> Result<(), ExchangeError> {
        let mut records = Records::new(revision);
        let mut next_record = records.next(self).await?;
        let mut open: Vec<OpenSegment> = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let smallest =
                (0..open.len()).min_by(|a, b| open[*a].peek_id().cmp(open[*b].peek_id()));
            // A recorded segment is opened once it may hold the smallest run left.
            if let Some(meta) = &next_record
                && smallest.is_none_or(|i| meta.first_id.as_str() <= open[i].peek_id())
            {
                open.push(OpenSegment::open(blobs, meta, include_secrets).await?);
                next_record = records.next(self).await?;
                continue;
            }
            let Some(i) = smallest else { break };
            let line = open[i].take().await?;
            if open[i].is_done() {
                open.swap_remove(i);
            }
            if last.as_deref().is_some_and(|l| l >= line.id.as_str()) {
                return Err(DmError::Corrupt {
                    key: keys::SEGMENT.to_string(),
                    why: format!("run {} is in two recorded segments", line.id),
                }
                .into());
            }
            writer.archived_line(&line.bytes, &mut out.buf);
            last = Some(line.id);
            if !out.send_if_full().await {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A run config's JSON with its secrets redacted.
fn redacted_config(key: &str, value: &str) -> Result<String, DmError> {
    let mut config: cairn_client::runconfig::RunConfig =
        serde_json::from_str(value).map_err(|e| DmError::Corrupt {
            key: key.to_string(),
            why: e.to_string(),
        })?;
    redact_secrets(&mut config);
    Ok(serde_json::to_string(&config).expect("run configs serialize"))
}

/// Export lines on their way to the receiver, sent in chunks of about [`CHUNK`] bytes.
struct Lines<'a> {
    tx: &'a Tx,
    buf: Vec<u8>,
}

impl Lines<'_> {
    /// Sends the lines gathered once they fill a chunk; false when the receiver is gone.
    async fn send_if_full(&mut self) -> bool {
        self.buf.len() < CHUNK || self.flush().await
    }

    /// Sends the lines gathered; false when the receiver is gone.
    async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(Ok(chunk)).await.is_ok()
    }
}

/// The segment records at one revision, read a page at a time, in id order (the order of
/// their first run ids).
struct Records {
    revision: i64,
    page: std::collections::VecDeque<SegmentMeta>,
    /// Where the next page starts; `None` once the last one was read.
    start: Option<Vec<u8>>,
}

impl Records {
    fn new(revision: i64) -> Records {
        Records {
            revision,
            page: Default::default(),
            start: Some(keys::SEGMENT.as_bytes().to_vec()),
        }
    }

    async fn next(&mut self, dm: &Datamanager) -> Result<Option<SegmentMeta>, DmError> {
        while self.page.is_empty() {
            let Some(start) = self.start.take() else {
                return Ok(None);
            };
            let end = KeyRange::prefix(keys::SEGMENT.as_bytes().to_vec()).end_bound();
            let resp = dm.page(start, &end, self.revision).await?;
            for kv in &resp.kvs {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                let meta: SegmentMeta =
                    serde_json::from_slice(&kv.value).map_err(|e| DmError::Corrupt {
                        key,
                        why: e.to_string(),
                    })?;
                self.page.push_back(meta);
            }
            if let Some(last) = resp.kvs.last()
                && resp.more
            {
                let mut start = last.key.clone();
                start.push(0);
                self.start = Some(start);
            }
        }
        Ok(self.page.pop_front())
    }
}

/// One run's export line, and its id.
struct Line {
    id: String,
    bytes: Vec<u8>,
}

/// A segment being exported: its bytes, checked, and its runs not written yet, as lines
/// ready to write, being made on blocking threads, or not handed out yet.
///
/// The conversion tasks belong to it; dropped (the export ended or failed), it leaves
/// them to finish their batch, whose lines nobody reads.
struct OpenSegment {
    id: String,
    bytes: Bytes,
    include_secrets: bool,
    /// Entries not handed to a task yet, in id order.
    entries: std::vec::IntoIter<FooterEntry>,
    /// Tasks in flight, oldest (lowest ids) first.
    converting: VecDeque<JoinHandle<Result<Vec<Line>, ExchangeError>>>,
    /// Lines ready to write, lowest id first; empty only once every run was written.
    ready: VecDeque<Line>,
}

impl OpenSegment {
    /// Reads segment `meta` whole and checks it (its recorded size and SHA-256, header,
    /// trailer and footer; each record is checked as it is converted), then starts
    /// converting its runs and waits for the first batch.
    async fn open(
        blobs: &Blobs,
        meta: &SegmentMeta,
        include_secrets: bool,
    ) -> Result<OpenSegment, ExchangeError> {
        let failed = |e: SegmentError| ExchangeError::segment(meta.id.clone(), e);
        let key = crate::datamanager::segments::segment_key(&meta.id).map_err(failed)?;
        let bytes = blobs
            .get_bytes(&key)
            .await
            .map_err(|e| failed(SegmentError::Blob(e)))?;
        let checked = {
            let (meta, bytes) = (meta.clone(), bytes.clone());
            tokio::task::spawn_blocking(move || check_segment(&meta, &bytes)).await?
        };
        let entries = checked.map_err(failed)?;
        let mut segment = OpenSegment {
            id: meta.id.clone(),
            bytes,
            include_secrets,
            entries: entries.into_iter(),
            converting: VecDeque::new(),
            ready: VecDeque::new(),
        };
        segment.refill().await?;
        Ok(segment)
    }

    fn peek_id(&self) -> &str {
        self.ready.front().map_or("", |l| l.id.as_str())
    }

    fn is_done(&self) -> bool {
        self.ready.is_empty()
    }

    /// The next run's line (there is one unless [`Self::is_done`]).
    async fn take(&mut self) -> Result<Line, ExchangeError> {
        let line = self
            .ready
            .pop_front()
            .ok_or_else(|| ExchangeError::segment(self.id.clone(), SegmentError::Empty))?;
        if self.ready.is_empty() {
            self.refill().await?;
        }
        Ok(line)
    }

    /// Keeps [`TASKS_AHEAD`] tasks in flight and waits for the oldest one's lines (none
    /// once every run was handed out).
    async fn refill(&mut self) -> Result<(), ExchangeError> {
        while self.converting.len() <= TASKS_AHEAD {
            let batch: Vec<FooterEntry> = self.entries.by_ref().take(LINES_PER_TASK).collect();
            if batch.is_empty() {
                break;
            }
            let (id, bytes) = (self.id.clone(), self.bytes.clone());
            let include_secrets = self.include_secrets;
            self.converting
                .push_back(tokio::task::spawn_blocking(move || {
                    export_lines(&id, &bytes, &batch, include_secrets)
                }));
        }
        if let Some(task) = self.converting.pop_front() {
            self.ready = task.await??.into();
        }
        Ok(())
    }
}

/// The checked footer entries of segment `meta`'s whole `bytes`, in id order: its size
/// and SHA-256 are the recorded ones, and it holds a run. Pure.
fn check_segment(meta: &SegmentMeta, bytes: &[u8]) -> Result<Vec<FooterEntry>, SegmentError> {
    if bytes.len() as u64 != meta.bytes || super::hex(&Sha256::digest(bytes)) != meta.sha256 {
        return Err(SegmentError::Mismatch {
            id: meta.id.clone(),
            what: "the object and its record (size or SHA-256)",
        });
    }
    let footer = decode_footer(bytes)?;
    if footer.runs.is_empty() {
        return Err(SegmentError::Empty);
    }
    Ok(footer.runs)
}

/// The export lines of the runs of `entries` in segment `segment`'s `bytes`, each record
/// checked, secrets redacted unless `include_secrets`. Pure (runs on a blocking thread).
fn export_lines(
    segment: &str,
    bytes: &[u8],
    entries: &[FooterEntry],
    include_secrets: bool,
) -> Result<Vec<Line>, ExchangeError> {
    let failed = |e: SegmentError| ExchangeError::segment(segment, e);
    entries
        .iter()
        .map(|entry| {
            let end = entry.offset.saturating_add(entry.len);
            let record = usize::try_from(entry.offset)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(from, to)| bytes.get(from..to))
                .ok_or_else(|| {
                    failed(SegmentError::EntryOutOfBounds {
                        id: entry.id.clone(),
                        offset: entry.offset,
                        len: entry.len,
                        records_end: bytes.len() as u64,
                    })
                })?;
            let mut run = format::decode_record(record, entry).map_err(failed)?;
            if !include_secrets {
                redact_secrets(&mut run.config);
            }
            Ok(Line {
                bytes: archived_line(&run),
                id: run.run.id,
            })
        })
        .collect()
}

/// The checked footer of a whole segment's bytes.
fn decode_footer(bytes: &[u8]) -> Result<format::SegmentFooter, SegmentError> {
    format::decode_header(bytes)?;
    let size = bytes.len() as u64;
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(SegmentError::Truncated {
            part: "segment",
            need: HEADER_LEN + TRAILER_LEN,
            have: size,
        });
    }
    let trailer = format::decode_trailer(&bytes[bytes.len() - TRAILER_LEN as usize..], size)?;
    let from = trailer.footer_offset as usize;
    let footer = bytes.get(from..from + trailer.footer_len as usize).ok_or(
        SegmentError::FooterOutOfBounds {
            offset: trailer.footer_offset,
            len: u64::from(trailer.footer_len),
            size,
        },
    )?;
    format::decode_footer(footer, &trailer)
}

//! [`SegmentWriter`]: builds one segment in memory from runs given in ascending id order,
//! within limits on its run count and size. Pure apart from the clock and the random id
//! suffix of [`SegmentWriter::finish`] ([`SegmentWriter::finish_with`] takes both).

use bytes::Bytes;
use cairn_client::run::Time;
use sha2::{Digest, Sha256};

use super::SegmentError;
use super::format::{
    self, ArchivedRun, FORMAT_VERSION, FooterEntry, HEADER_LEN, MAX_FOOTER_BYTES, SegmentFooter,
    TRAILER_LEN,
};

/// A bound on a footer's JSON beyond its entries: field names, the segment id (≤ 50
/// bytes) and the creation time (≤ 40 bytes).
const FOOTER_OVERHEAD: u64 = 256;

/// When a segment is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLimits {
    /// At most this many runs (at least 1).
    pub max_runs: usize,
    /// At most this many bytes in the whole object, unless its one run alone is larger
    /// (a run is never refused by an empty writer for its size, only past
    /// [`format::MAX_RECORD_BYTES`]).
    pub max_bytes: u64,
}

impl Default for SegmentLimits {
    /// 10,000 runs or 64 MiB.
    fn default() -> SegmentLimits {
        SegmentLimits {
            max_runs: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// What the store records about a written segment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentMeta {
    /// `<first run id>-<last run id>-<8 hex digits>`.
    pub id: String,
    /// Its object key: `segments/<id>.seg`.
    pub key: String,
    pub created: Time,
    /// How many runs it holds.
    pub runs: usize,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole object, lowercase hex.
    pub sha256: String,
    pub first_id: String,
    pub last_id: String,
}

/// Builds one segment: [`add`](SegmentWriter::add) runs in ascending id order, then
/// [`finish`](SegmentWriter::finish).
#[derive(Debug)]
pub struct SegmentWriter {
    limits: SegmentLimits,
    /// Header and records so far.
    buf: Vec<u8>,
    entries: Vec<FooterEntry>,
    /// The footer entries' JSON bytes so far, a comma each.
    entries_json: u64,
}

impl SegmentWriter {
    pub fn new(limits: SegmentLimits) -> SegmentWriter {
        SegmentWriter {
            limits,
            buf: format::encode_header().to_vec(),
            entries: Vec::new(),
            entries_json: 0,
        }
    }

    /// Appends a run. Refused, leaving the writer as it was: a run that cannot be archived
    /// ([`format::check_archived`]), one whose id is not after the last one added
    /// ([`SegmentError::OutOfOrder`]), a record over [`format::MAX_RECORD_BYTES`], and a
    /// run that would take the segment past a limit ([`SegmentError::Full`]: finish this
    /// segment and add the run to the next).
    pub fn add(&mut self, archived: &ArchivedRun) -> Result<(), SegmentError> {
        format::check_archived(archived)?;
        if let Some(prev) = self.entries.last()
            && archived.run.id <= prev.id
        {
            return Err(SegmentError::OutOfOrder {
                prev: prev.id.clone(),
                id: archived.run.id.clone(),
            });
        }
        let full = SegmentError::Full {
            runs: self.entries.len(),
            bytes: self.projected_size(),
        };
        if !self.entries.is_empty() && self.entries.len() >= self.limits.max_runs {
            return Err(full);
        }
        let record = format::encode_record(archived)?;
        let entry = format::footer_entry(archived, self.buf.len() as u64, record.len() as u64);
        let entry_json = serde_json::to_vec(&entry)
            .expect("a footer entry serializes")
            .len() as u64
            + 1;
        let entries_json = self.entries_json + entry_json;
        let size = self.buf.len() as u64
            + record.len() as u64
            + entries_json
            + FOOTER_OVERHEAD
            + TRAILER_LEN;
        let too_big = size > self.limits.max_bytes && !self.entries.is_empty();
        if too_big || entries_json + FOOTER_OVERHEAD > MAX_FOOTER_BYTES {
            return Err(full);
        }
        self.buf.extend_from_slice(&record);
        self.entries.push(entry);
        self.entries_json = entries_json;
        Ok(())
    }

    /// How many runs were added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An upper bound of the finished object's size with the runs added so far.
    pub fn projected_size(&self) -> u64 {
        self.buf.len() as u64 + self.entries_json + FOOTER_OVERHEAD + TRAILER_LEN
    }

    /// The id of the last run added.
    pub fn last_id(&self) -> Option<&str> {
        self.entries.last().map(|e| e.id.as_str())
    }

    /// Finishes the segment, created now with a random id suffix.
    pub fn finish(self) -> Result<(Bytes, SegmentMeta), SegmentError> {
        let created = chrono::Utc::now();
        self.finish_with(created, rand::random())
    }

    /// Finishes the segment with the given creation time and id suffix: the object's bytes
    /// and what the store records about it. [`SegmentError::Empty`] without runs.
    pub fn finish_with(
        mut self,
        created: Time,
        nonce: u32,
    ) -> Result<(Bytes, SegmentMeta), SegmentError> {
        let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) else {
            return Err(SegmentError::Empty);
        };
        let (first_id, last_id) = (first.id.clone(), last.id.clone());
        let id = format::segment_id(&first_id, &last_id, nonce);
        let key = super::segment_key(&id)?;
        let runs = self.entries.len();
        let footer = SegmentFooter {
            version: FORMAT_VERSION,
            segment_id: id.clone(),
            created,
            runs: std::mem::take(&mut self.entries),
        };
        let footer_offset = self.buf.len() as u64;
        debug_assert!(footer_offset >= HEADER_LEN);
        let tail = format::encode_tail(&footer, footer_offset)?;
        self.buf.extend_from_slice(&tail);
        let sha256 = hex(&Sha256::digest(&self.buf));
        let meta = SegmentMeta {
            id,
            key,
            created,
            runs,
            bytes: self.buf.len() as u64,
            sha256,
            first_id,
            last_id,
        };
        Ok((Bytes::from(self.buf), meta))
    }
}

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").expect("writing to a String cannot fail");
        s
    })
}

//! Segments: finished runs (run, run config, events) archived out of the store into
//! immutable, checksummed, versioned objects under `segments/<segment id>.seg` in object
//! storage (issue 13).
//!
//! `format.rs` is the byte format (pure; the table is in its doc), `writer.rs` builds
//! one segment within count and size limits, and this file holds the typed error and the
//! object operations over [`Blobs`]: [`put_segment`], [`read_footer`] and [`read_run`]
//! (ranged reads: trailer and footer, then one record), [`read_segment`] (whole, with its
//! SHA-256), [`SegmentReader`] (`reader.rs`: whole, streamed a batch of runs at a time,
//! with its SHA-256), [`list_segments`], [`delete_segment`]. Nothing here knows the store: which
//! segments exist for the run service, and which runs they hold, is recorded elsewhere.
//! Every id is checked before it becomes a key, and every byte read is checked before it
//! is trusted.

pub mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use cairn_client::run::RunPhase;
use sha2::{Digest, Sha256};

pub use format::{ArchivedRun, DecodedSegment, FooterEntry, SegmentFooter};
pub use reader::SegmentReader;
pub use writer::{SegmentLimits, SegmentMeta, SegmentWriter};

use super::blobs::{BlobError, Blobs, Meta};

/// Where segments live in object storage.
pub const PREFIX: &str = "segments/";
/// The suffix of every segment's key.
pub const SUFFIX: &str = ".seg";

/// How many bytes from a segment's end [`read_footer`] reads at first: the trailer and,
/// for segments of up to a few hundred runs, the whole footer in the same request.
const TAIL_READ: u64 = 64 * 1024;

/// Why a segment could not be built, stored or read. Every variant but
/// [`Blob`](SegmentError::Blob), [`Full`](SegmentError::Full),
/// [`Exists`](SegmentError::Exists) and the writer's refusals of a run
/// ([`NotFinished`](SegmentError::NotFinished)) says how an object is not a valid segment
/// ([`SegmentError::is_corrupt`]).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Fewer bytes than the part needs.
    #[error("segment {part} truncated: {have} bytes, {need} needed")]
    Truncated {
        part: &'static str,
        need: u64,
        have: u64,
    },
    #[error("segment {part} has the wrong magic bytes")]
    BadMagic { part: &'static str },
    #[error("segment format version {version} is not supported (this build reads version 1)")]
    UnsupportedVersion { version: u16 },
    #[error("segment header has unknown flags {flags:#x} or reserved bits {reserved:#x}")]
    UnknownFlags { flags: u16, reserved: u32 },
    #[error("segment footer of {len} bytes is over the cap of {max}")]
    FooterTooLarge { len: u64, max: u64 },
    #[error(
        "segment footer at {offset} ({len} bytes) is not between the header and the trailer of a {size}-byte object"
    )]
    FooterOutOfBounds { offset: u64, len: u64, size: u64 },
    #[error(
        "segment footer checksum mismatch: crc32 {actual:#010x}, trailer says {expected:#010x}"
    )]
    FooterChecksum { expected: u32, actual: u32 },
    #[error("segment footer is not valid: {why}")]
    FooterJson { why: String },
    /// The footer lists no run (a writer never makes such a segment).
    #[error("segment holds no run")]
    Empty,
    #[error("invalid segment id {id:?}: {why}")]
    InvalidSegmentId { id: String, why: String },
    #[error("invalid run id in segment: {why}")]
    InvalidRunId { why: String },
    /// Run ids must be strictly ascending: out of order or a duplicate.
    #[error("run {id} comes after run {prev}: runs must be in strictly ascending id order")]
    OutOfOrder { prev: String, id: String },
    #[error(
        "footer entry of run {id} ({offset}+{len}) is outside the record area ending at {records_end}"
    )]
    EntryOutOfBounds {
        id: String,
        offset: u64,
        len: u64,
        records_end: u64,
    },
    /// Records must follow each other from the header to the footer, without gap or overlap.
    #[error("record of run {id} is at {offset}, the previous one ends at {expected}")]
    EntriesNotContiguous {
        id: String,
        offset: u64,
        expected: u64,
    },
    #[error("record of run {id} is {len} bytes, over the cap of {max}")]
    RecordTooLarge { id: String, len: u64, max: u64 },
    #[error("record of run {id} has length {actual}, {expected} expected")]
    RecordLength {
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "record of run {id}: checksum mismatch: crc32 {actual:#010x}, record says {expected:#010x}"
    )]
    RecordChecksum {
        id: String,
        expected: u32,
        actual: u32,
    },
    #[error("record of run {id} is not a valid archived run: {why}")]
    RecordJson { id: String, why: String },
    /// A part of a run disagrees with another (config, events, footer entry, group form).
    #[error("run {id}: {what} does not match")]
    Mismatch { id: String, what: &'static str },
    /// Only finished runs are archived.
    #[error("run {id} is {} and cannot be archived", phase.as_str())]
    NotFinished { id: String, phase: RunPhase },
    /// The writer's limits are reached: finish this segment, add the run to the next.
    #[error("segment is full ({runs} runs, {bytes} bytes)")]
    Full { runs: usize, bytes: u64 },
    /// Another object is already stored under this segment's key.
    #[error("a different object is already stored at {key}")]
    Exists { key: String },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl SegmentError {
    /// True when the error says the bytes read are not a valid segment (or not the segment
    /// expected), as opposed to a refused write or a failed object store.
    pub fn is_corrupt(&self) -> bool {
        !matches!(
            self,
            SegmentError::Blob(_)
                | SegmentError::Full { .. }
                | SegmentError::Exists { .. }
                | SegmentError::NotFinished { .. }
        )
    }
}

/// The object key of segment `id`, once the id is checked.
pub fn segment_key(id: &str) -> Result<String, SegmentError> {
    format::split_segment_id(id)?;
    Ok(format!("{PREFIX}{id}{SUFFIX}"))
}

/// The segment id of an object key, when the key is a segment's.
pub fn segment_id_of_key(key: &str) -> Option<&str> {
    let id = key.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    format::split_segment_id(id).ok().map(|_| id)
}

/// A stored segment as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSegment {
    pub id: String,
    pub key: String,
    pub meta: Meta,
}

/// Stores a finished segment under `meta.key`, only if nothing is there: creating it, or
/// finding the same bytes already stored (a retried put), is `Ok`; different bytes under
/// the key are [`SegmentError::Exists`].
pub async fn put_segment(
    blobs: &Blobs,
    bytes: Bytes,
    meta: &SegmentMeta,
) -> Result<(), SegmentError> {
    let key = segment_key(&meta.id)?;
    if key != meta.key || bytes.len() as u64 != meta.bytes {
        return Err(SegmentError::Mismatch {
            id: meta.id.clone(),
            what: "the segment's key or size and its meta",
        });
    }
    if blobs.put_if_absent(&key, bytes).await? {
        return Ok(());
    }
    let stored = blobs.get_bytes(&key).await?;
    if writer::hex(&Sha256::digest(&stored)) == meta.sha256 {
        Ok(())
    } else {
        Err(SegmentError::Exists { key })
    }
}

/// Reads and checks a segment's footer with ranged reads: the last 64 KiB
/// (trailer, and the footer when it fits), then the rest of the footer if needed.
pub async fn read_footer(blobs: &Blobs, key: &str) -> Result<SegmentFooter, SegmentError> {
    let size = match blobs.head(key).await? {
        Some(meta) => meta.size,
        None => {
            return Err(SegmentError::Blob(BlobError::NotFound {
                key: key.to_owned(),
            }));
        }
    };
    let smallest = format::HEADER_LEN + format::TRAILER_LEN;
    if size < smallest {
        return Err(SegmentError::Truncated {
            part: "segment",
            need: smallest,
            have: size,
        });
    }
    let tail_start = size - size.min(TAIL_READ);
    let tail = blobs
        .get_range_bounded(key, tail_start, size - tail_start)
        .await?;
    let trailer_at = tail.len() - format::TRAILER_LEN as usize;
    let trailer = format::decode_trailer(&tail[trailer_at..], size)?;
    let footer_len = u64::from(trailer.footer_len);
    let footer = if trailer.footer_offset >= tail_start {
        let start = (trailer.footer_offset - tail_start) as usize;
        tail.slice(start..trailer_at)
    } else {
        blobs
            .get_range_bounded(key, trailer.footer_offset, footer_len)
            .await?
    };
    format::decode_footer(&footer, &trailer)
}

/// Reads one run's record by its range and checks it against its footer entry.
pub async fn read_run(
    blobs: &Blobs,
    key: &str,
    entry: &FooterEntry,
) -> Result<ArchivedRun, SegmentError> {
    if entry.len > format::MAX_RECORD_BYTES + format::RECORD_HEADER_LEN {
        return Err(SegmentError::RecordTooLarge {
            id: entry.id.clone(),
            len: entry.len,
            max: format::MAX_RECORD_BYTES,
        });
    }
    let bytes = blobs
        .get_range_bounded(key, entry.offset, entry.len)
        .await?;
    format::decode_record(&bytes, entry)
}

/// Reads a whole segment, checks every part, and returns it with the SHA-256 of its
/// bytes (lowercase hex), to compare with the one recorded when it was written.
pub async fn read_segment(
    blobs: &Blobs,
    key: &str,
) -> Result<(DecodedSegment, String), SegmentError> {
    let bytes = blobs.get_bytes(key).await?;
    let decoded = format::decode_segment(&bytes)?;
    Ok((decoded, writer::hex(&Sha256::digest(&bytes))))
}

/// Every stored segment, by key. Objects under [`PREFIX`] whose key is not a segment's are
/// skipped with a warning.
pub async fn list_segments(blobs: &Blobs) -> Result<Vec<StoredSegment>, SegmentError> {
    let mut found = Vec::new();
    for (key, meta) in blobs.list(PREFIX).await? {
        match segment_id_of_key(&key) {
            Some(id) => found.push(StoredSegment {
                id: id.to_owned(),
                key: key.clone(),
                meta,
            }),
            None => tracing::warn!(key, "an object under segments/ is not a segment; skipped"),
        }
    }
    Ok(found)
}

/// Deletes segment `id`; a missing segment is not an error.
pub async fn delete_segment(blobs: &Blobs, id: &str) -> Result<(), SegmentError> {
    let key = segment_key(id)?;
    blobs.delete(&key).await?;
    Ok(())
}

//! The segment format: encoding and decoding of one immutable object of archived runs.
//! Pure: bytes in, bytes or typed errors out, no I/O.
//!
//! A segment holds finished runs (each with its run config and run events) in strictly
//! ascending run-id order (string order, which is the store's key order and numeric order
//! while ids keep their 16 digits). All integers are little-endian.
//!
//! ```text
//! offset              size   field
//! 0                   8      magic b"CAIRNSEG"
//! 8                   2      format version u16 = 1
//! 10                  2      flags u16 = 0 (none defined in version 1)
//! 12                  4      reserved u32 = 0
//! 16                         records, one per run, back to back:
//!   +0                4        payload length u32 (≤ MAX_RECORD_BYTES)
//!   +4                4        crc32 of the payload u32
//!   +8                len      payload: the JSON of an `ArchivedRun`
//! footer_offset       len    footer: the JSON of a `SegmentFooter` (≤ MAX_FOOTER_BYTES):
//!                            version, segment id, creation time, and per run its id,
//!                            group, phase, result and the record's `offset` and `len`
//!                            (the whole record, its 8-byte header included)
//! size − 24           8      footer_offset u64
//! size − 16           4      footer length u32
//! size − 12           4      crc32 of the footer u32
//! size − 8            8      magic b"CAIRNEND"
//! ```
//!
//! A reader fetches the trailer (the last [`TRAILER_LEN`] bytes), then the footer, then
//! any one record by its range, each checked by its crc32 ([`decode_trailer`],
//! [`decode_footer`], [`decode_record`]); [`decode_segment`] checks a whole object. The
//! whole object's SHA-256 is computed by the writer and recorded by the store, not kept in
//! the object.
//!
//! Every input is treated as hostile: each offset and length is bounds-checked before it
//! is used, the footer and each record are capped before anything is allocated for them,
//! and the footer's entries must tile the record area exactly (from [`HEADER_LEN`] to the
//! footer, no gap, no overlap), in strictly ascending id order, each naming the record it
//! points to. Any violation is a [`SegmentError`] saying which; decoding never panics.

use cairn_client::ids::check_run_id;
use cairn_client::run::{Run, RunEvent, RunPhase, RunResult, Time};
use cairn_client::runconfig::RunConfig;
use serde::{Deserialize, Serialize};

use super::SegmentError;
use crate::datamanager::keys::normalize_group;

/// The first eight bytes of every segment.
pub const MAGIC: &[u8; 8] = b"CAIRNSEG";
/// The last eight bytes of every segment.
pub const END_MAGIC: &[u8; 8] = b"CAIRNEND";
/// The one format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the header (magic, version, flags, reserved).
pub const HEADER_LEN: u64 = 16;
/// Bytes of a record's own header (length, crc32).
pub const RECORD_HEADER_LEN: u64 = 8;
/// Bytes of the trailer (footer offset, footer length, footer crc32, end magic).
pub const TRAILER_LEN: u64 = 24;
/// The largest record payload written or read (one run with its config and events).
pub const MAX_RECORD_BYTES: u64 = 64 << 20;
/// The largest footer written or read.
pub const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// One archived run: everything the store held about it once it finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRun {
    pub run: Run,
    pub config: RunConfig,
    /// The run's events, in sequence order.
    pub events: Vec<RunEvent>,
}

/// Where one run's record is, with what a listing needs without reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FooterEntry {
    pub id: String,
    pub group: String,
    pub phase: RunPhase,
    pub result: RunResult,
    /// Offset of the record (its 8-byte header) in the object.
    pub offset: u64,
    /// Length of the whole record, header included: the record is `offset..offset + len`.
    pub len: u64,
}

/// The index at the end of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentFooter {
    pub version: u16,
    pub segment_id: String,
    pub created: Time,
    /// One entry per record, in record (and id) order.
    pub runs: Vec<FooterEntry>,
}

/// The fixed-size end of a segment: where the footer is and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub footer_offset: u64,
    pub footer_len: u32,
    pub footer_crc: u32,
}

/// A whole segment, checked and decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSegment {
    pub footer: SegmentFooter,
    /// In footer order.
    pub runs: Vec<ArchivedRun>,
}

/// The header of a version-1 segment.
pub fn encode_header() -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Checks a segment's first [`HEADER_LEN`] bytes.
pub fn decode_header(bytes: &[u8]) -> Result<(), SegmentError> {
    let header = bytes
        .get(..HEADER_LEN as usize)
        .ok_or(SegmentError::Truncated {
            part: "header",
            need: HEADER_LEN,
            have: bytes.len() as u64,
        })?;
    if &header[..8] != MAGIC {
        return Err(SegmentError::BadMagic { part: "header" });
    }
    let version = u16_at(header, 8);
    if version != FORMAT_VERSION {
        return Err(SegmentError::UnsupportedVersion { version });
    }
    let flags = u16_at(header, 10);
    let reserved = u32_at(header, 12);
    if flags != 0 || reserved != 0 {
        return Err(SegmentError::UnknownFlags { flags, reserved });
    }
    Ok(())
}

/// The record of one run: length, crc32, JSON payload. Checks the run first
/// ([`check_archived`]).
pub fn encode_record(archived: &ArchivedRun) -> Result<Vec<u8>, SegmentError> {
    check_archived(archived)?;
    let payload =
        serde_json::to_vec(archived).expect("runs, configs and events serialize (string keys)");
    let len = payload.len() as u64;
    if len > MAX_RECORD_BYTES {
        return Err(SegmentError::RecordTooLarge {
            id: archived.run.id.clone(),
            len,
            max: MAX_RECORD_BYTES,
        });
    }
    let mut record = Vec::with_capacity(payload.len() + RECORD_HEADER_LEN as usize);
    record.extend_from_slice(&(len as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

/// Decodes the record `bytes` that `entry` points to (exactly `entry.len` bytes): its
/// length and crc32, its JSON, and that it is the run the entry names.
pub fn decode_record(bytes: &[u8], entry: &FooterEntry) -> Result<ArchivedRun, SegmentError> {
    let id = || entry.id.clone();
    let have = bytes.len() as u64;
    if have != entry.len || have < RECORD_HEADER_LEN {
        return Err(SegmentError::RecordLength {
            id: id(),
            expected: entry.len,
            actual: have,
        });
    }
    let declared = u64::from(u32_at(bytes, 0));
    if declared > MAX_RECORD_BYTES {
        return Err(SegmentError::RecordTooLarge {
            id: id(),
            len: declared,
            max: MAX_RECORD_BYTES,
        });
    }
    if declared + RECORD_HEADER_LEN != have {
        return Err(SegmentError::RecordLength {
            id: id(),
            expected: have - RECORD_HEADER_LEN,
            actual: declared,
        });
    }
    let payload = &bytes[RECORD_HEADER_LEN as usize..];
    let expected = u32_at(bytes, 4);
    let actual = crc32fast::hash(payload);
    if expected != actual {
        return Err(SegmentError::RecordChecksum {
            id: id(),
            expected,
            actual,
        });
    }
    let archived: ArchivedRun =
        serde_json::from_slice(payload).map_err(|e| SegmentError::RecordJson {
            id: id(),
            why: e.to_string(),
        })?;
    check_archived(&archived)?;
    let run = &archived.run;
    let mismatch = |what: &'static str| SegmentError::Mismatch { id: id(), what };
    if run.id != entry.id {
        return Err(mismatch("the record's run id"));
    }
    if run.group != entry.group {
        return Err(mismatch("the record's group"));
    }
    if run.phase != entry.phase || run.result != entry.result {
        return Err(mismatch("the record's phase or result"));
    }
    Ok(archived)
}

/// Checks that a run can be archived, and that an archived one is whole: a valid run id, a
/// group in canonical form, a finished phase, and a config and events of the same run.
pub fn check_archived(archived: &ArchivedRun) -> Result<(), SegmentError> {
    let run = &archived.run;
    check_run_id(&run.id).map_err(|e| SegmentError::InvalidRunId { why: e.to_string() })?;
    let mismatch = |what: &'static str| SegmentError::Mismatch {
        id: run.id.clone(),
        what,
    };
    if normalize_group(&run.group).as_deref() != Some(run.group.as_str()) {
        return Err(mismatch("the group (not in canonical form)"));
    }
    if !run.phase.is_finished() {
        return Err(SegmentError::NotFinished {
            id: run.id.clone(),
            phase: run.phase,
        });
    }
    if archived.config.id != run.id {
        return Err(mismatch("the run config's id"));
    }
    if archived.events.iter().any(|e| e.run_id != run.id) {
        return Err(mismatch("a run event's run id"));
    }
    Ok(())
}

/// The footer entry of a record written at `offset`.
pub fn footer_entry(archived: &ArchivedRun, offset: u64, record_len: u64) -> FooterEntry {
    FooterEntry {
        id: archived.run.id.clone(),
        group: archived.run.group.clone(),
        phase: archived.run.phase,
        result: archived.run.result,
        offset,
        len: record_len,
    }
}

/// The footer and trailer of a segment whose records end at `footer_offset`.
pub fn encode_tail(footer: &SegmentFooter, footer_offset: u64) -> Result<Vec<u8>, SegmentError> {
    let json = serde_json::to_vec(footer).expect("a footer serializes (plain fields)");
    let len = json.len() as u64;
    if len > MAX_FOOTER_BYTES {
        return Err(SegmentError::FooterTooLarge {
            len,
            max: MAX_FOOTER_BYTES,
        });
    }
    let trailer = Trailer {
        footer_offset,
        footer_len: len as u32,
        footer_crc: crc32fast::hash(&json),
    };
    let mut tail = json;
    tail.extend_from_slice(&encode_trailer(&trailer));
    Ok(tail)
}

/// The trailer's bytes.
pub fn encode_trailer(trailer: &Trailer) -> [u8; TRAILER_LEN as usize] {
    let mut out = [0u8; TRAILER_LEN as usize];
    out[..8].copy_from_slice(&trailer.footer_offset.to_le_bytes());
    out[8..12].copy_from_slice(&trailer.footer_len.to_le_bytes());
    out[12..16].copy_from_slice(&trailer.footer_crc.to_le_bytes());
    out[16..].copy_from_slice(END_MAGIC);
    out
}

/// Decodes the last [`TRAILER_LEN`] bytes of an object of `object_size` bytes, and checks
/// that the footer it names lies between the header and the trailer, within the cap.
pub fn decode_trailer(bytes: &[u8], object_size: u64) -> Result<Trailer, SegmentError> {
    let smallest = HEADER_LEN + TRAILER_LEN;
    if object_size < smallest {
        return Err(SegmentError::Truncated {
            part: "segment",
            need: smallest,
            have: object_size,
        });
    }
    if bytes.len() as u64 != TRAILER_LEN {
        return Err(SegmentError::Truncated {
            part: "trailer",
            need: TRAILER_LEN,
            have: bytes.len() as u64,
        });
    }
    if &bytes[16..24] != END_MAGIC {
        return Err(SegmentError::BadMagic { part: "trailer" });
    }
    let trailer = Trailer {
        footer_offset: u64_at(bytes, 0),
        footer_len: u32_at(bytes, 8),
        footer_crc: u32_at(bytes, 12),
    };
    let len = u64::from(trailer.footer_len);
    if len > MAX_FOOTER_BYTES {
        return Err(SegmentError::FooterTooLarge {
            len,
            max: MAX_FOOTER_BYTES,
        });
    }
    // The footer ends exactly where the trailer starts (no overflow: both terms are
    // checked against the object's size first).
    let fits = trailer.footer_offset >= HEADER_LEN
        && trailer.footer_offset <= object_size - TRAILER_LEN
        && len == object_size - TRAILER_LEN - trailer.footer_offset;
    if !fits {
        return Err(SegmentError::FooterOutOfBounds {
            offset: trailer.footer_offset,
            len,
            size: object_size,
        });
    }
    Ok(trailer)
}

/// Decodes and checks the footer `bytes` that `trailer` names: crc32, JSON, version,
/// segment id, and entries tiling the record area in ascending id order.
pub fn decode_footer(bytes: &[u8], trailer: &Trailer) -> Result<SegmentFooter, SegmentError> {
    let have = bytes.len() as u64;
    if have != u64::from(trailer.footer_len) {
        return Err(SegmentError::Truncated {
            part: "footer",
            need: u64::from(trailer.footer_len),
            have,
        });
    }
    let actual = crc32fast::hash(bytes);
    if actual != trailer.footer_crc {
        return Err(SegmentError::FooterChecksum {
            expected: trailer.footer_crc,
            actual,
        });
    }
    let footer: SegmentFooter = serde_json::from_slice(bytes)
        .map_err(|e| SegmentError::FooterJson { why: e.to_string() })?;
    check_footer(&footer, trailer.footer_offset)?;
    Ok(footer)
}

/// Checks a footer's fields against the record area `HEADER_LEN..footer_offset`.
pub fn check_footer(footer: &SegmentFooter, footer_offset: u64) -> Result<(), SegmentError> {
    if footer.version != FORMAT_VERSION {
        return Err(SegmentError::UnsupportedVersion {
            version: footer.version,
        });
    }
    let (first, last) = split_segment_id(&footer.segment_id)?;
    let (Some(head), Some(tail)) = (footer.runs.first(), footer.runs.last()) else {
        return Err(SegmentError::Empty);
    };
    if head.id != first || tail.id != last {
        return Err(SegmentError::InvalidSegmentId {
            id: footer.segment_id.clone(),
            why: format!("its runs are {}..{}", head.id, tail.id),
        });
    }
    let mut expected_offset = HEADER_LEN;
    let mut prev: Option<&str> = None;
    for entry in &footer.runs {
        check_run_id(&entry.id).map_err(|e| SegmentError::InvalidRunId { why: e.to_string() })?;
        if let Some(prev) = prev
            && entry.id.as_str() <= prev
        {
            return Err(SegmentError::OutOfOrder {
                prev: prev.to_owned(),
                id: entry.id.clone(),
            });
        }
        prev = Some(&entry.id);
        if normalize_group(&entry.group).as_deref() != Some(entry.group.as_str()) {
            return Err(SegmentError::Mismatch {
                id: entry.id.clone(),
                what: "the footer's group (not in canonical form)",
            });
        }
        let payload = entry.len.saturating_sub(RECORD_HEADER_LEN);
        if payload > MAX_RECORD_BYTES {
            return Err(SegmentError::RecordTooLarge {
                id: entry.id.clone(),
                len: payload,
                max: MAX_RECORD_BYTES,
            });
        }
        let end = entry.offset.checked_add(entry.len);
        let inside = entry.len >= RECORD_HEADER_LEN && end.is_some_and(|e| e <= footer_offset);
        if !inside {
            return Err(SegmentError::EntryOutOfBounds {
                id: entry.id.clone(),
                offset: entry.offset,
                len: entry.len,
                records_end: footer_offset,
            });
        }
        if entry.offset != expected_offset {
            return Err(SegmentError::EntriesNotContiguous {
                id: entry.id.clone(),
                offset: entry.offset,
                expected: expected_offset,
            });
        }
        expected_offset = end.expect("checked just above");
    }
    if expected_offset != footer_offset {
        return Err(SegmentError::EntriesNotContiguous {
            id: last.to_owned(),
            offset: footer_offset,
            expected: expected_offset,
        });
    }
    Ok(())
}

/// Decodes and checks a whole segment: header, trailer, footer and every record.
pub fn decode_segment(bytes: &[u8]) -> Result<DecodedSegment, SegmentError> {
    let size = bytes.len() as u64;
    decode_header(bytes)?;
    let trailer_start = size.saturating_sub(TRAILER_LEN);
    let trailer = decode_trailer(slice(bytes, trailer_start, TRAILER_LEN), size)?;
    let footer_bytes = slice(bytes, trailer.footer_offset, u64::from(trailer.footer_len));
    let footer = decode_footer(footer_bytes, &trailer)?;
    let runs = footer
        .runs
        .iter()
        .map(|entry| decode_record(slice(bytes, entry.offset, entry.len), entry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedSegment { footer, runs })
}

/// A segment id: `<first run id>-<last run id>-<8 lowercase hex digits>`.
pub fn segment_id(first: &str, last: &str, nonce: u32) -> String {
    format!("{first}-{last}-{nonce:08x}")
}

/// Checks a segment id and returns its first and last run ids.
pub fn split_segment_id(id: &str) -> Result<(&str, &str), SegmentError> {
    let invalid = |why: &str| SegmentError::InvalidSegmentId {
        id: id.chars().take(80).collect(),
        why: why.to_owned(),
    };
    let mut parts = id.split('-');
    let (Some(first), Some(last), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "it must be <first run id>-<last run id>-<8 hex digits>",
        ));
    };
    if check_run_id(first).is_err() || check_run_id(last).is_err() {
        return Err(invalid("its first and last run ids must be run ids"));
    }
    if first > last {
        return Err(invalid("its first run id is after its last"));
    }
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if nonce.len() != 8 || !nonce.bytes().all(hex) {
        return Err(invalid("its suffix must be 8 lowercase hex digits"));
    }
    Ok((first, last))
}

/// `bytes[offset..offset + len]`, or an empty slice when that is out of bounds (the
/// decoders then refuse it for its length).
fn slice(bytes: &[u8], offset: u64, len: u64) -> &[u8] {
    let range = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(len).ok())
        .and_then(|(start, len)| Some(start..start.checked_add(len)?));
    range.and_then(|r| bytes.get(r)).unwrap_or_default()
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

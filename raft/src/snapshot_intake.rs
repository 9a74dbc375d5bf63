//! The receiving side's checks on snapshot chunks, before openraft writes them.
//!
//! openraft 0.9 writes a chunk of an `InstallSnapshot` RPC at whatever offset it names
//! (seeking the receiving file there) and installs the snapshot when a chunk says `done`;
//! a failed install is a fatal storage error that stops the node. So every chunk from the
//! network goes through [`SnapshotIntake::admit`] first, a pure check with no I/O:
//!
//! - a chunk holds at most [`MAX_SNAPSHOT_CHUNK`] bytes and a snapshot at most
//!   [`MAX_SNAPSHOT_BYTES`];
//! - the chunk at offset 0 starts the snapshot file ([`crate::snapshot_file`]): it must
//!   hold the whole header, which must decode to the request's own meta, and the dump must
//!   start with the store's magic;
//! - later chunks follow on without a gap: at the end of what was received, or again at
//!   the start of the last chunk (a chunk re-sent after its answer was lost), or at 0
//!   (the leader starting over);
//! - the dump's end marker and CRC-32 are verified as the bytes pass
//!   ([`store::snapshot::DumpCheck`]), so the `done` chunk of a corrupt or truncated
//!   snapshot is refused and openraft never installs it.
//!
//! A chunk of a snapshot this intake is not following, at an offset other than 0, goes
//! through untouched: openraft answers it with `SnapshotMismatch` (writing nothing) and the
//! leader starts over at 0. A refused chunk changes nothing here.

use openraft::raft::InstallSnapshotRequest;
use serde::{Deserialize, Serialize};
use store::snapshot::DumpCheck;

use crate::snapshot_file::parse_header;
use crate::types::{SnapshotMeta, TypeConfig};

/// Largest snapshot chunk accepted. Leaders send [`crate::timing::SNAPSHOT_CHUNK`] bytes.
pub const MAX_SNAPSHOT_CHUNK: usize = 16 << 20;
/// Largest snapshot accepted (a live state holds leases, executors and live runs; a dump
/// this large would not fit the memory of the node installing it anyway).
pub const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

/// Why a snapshot chunk was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ChunkRefusal {
    #[error("snapshot chunk of {len} bytes is over the limit of {MAX_SNAPSHOT_CHUNK}")]
    ChunkTooLarge { len: usize },
    #[error("snapshot reaching {end} bytes is over the limit of {MAX_SNAPSHOT_BYTES}")]
    SnapshotTooLarge { end: u64 },
    #[error(
        "snapshot {id}: chunk at offset {offset} does not follow the {received} bytes received"
    )]
    NotContiguous {
        id: String,
        offset: u64,
        received: u64,
    },
    #[error("snapshot {id}: bad header: {why}")]
    BadHeader { id: String, why: String },
    #[error("snapshot {id} is corrupt: {why}")]
    Corrupt { id: String, why: String },
}

/// What the node is receiving: at most one snapshot at a time, as openraft does.
#[derive(Default)]
pub struct SnapshotIntake {
    stream: Option<Stream>,
    refused: u64,
}

#[derive(Clone)]
struct Stream {
    meta: SnapshotMeta,
    /// Bytes of the file received so far.
    received: u64,
    /// The dump's check over the bytes received after the header.
    dump: DumpCheck,
    /// Where the last chunk started and the check as it was before it.
    before_last: Option<(u64, DumpCheck)>,
}

impl SnapshotIntake {
    /// Checks `req` and, when it passes, takes it into account (see the module docs).
    pub fn admit(&mut self, req: &InstallSnapshotRequest<TypeConfig>) -> Result<(), ChunkRefusal> {
        let admitted = self.check(req);
        if admitted.is_err() {
            self.refused += 1;
        }
        admitted
    }

    /// Chunks refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn check(&mut self, req: &InstallSnapshotRequest<TypeConfig>) -> Result<(), ChunkRefusal> {
        let id = || req.meta.snapshot_id.clone();
        let len = req.data.len();
        if len > MAX_SNAPSHOT_CHUNK {
            return Err(ChunkRefusal::ChunkTooLarge { len });
        }
        let end = req.offset.saturating_add(len as u64);
        if end > MAX_SNAPSHOT_BYTES {
            return Err(ChunkRefusal::SnapshotTooLarge { end });
        }
        let mut next = if req.offset == 0 {
            start(req)?
        } else {
            match &self.stream {
                Some(s) if s.meta.snapshot_id == req.meta.snapshot_id => s.clone(),
                // Not ours: openraft refuses it as a mismatch without writing.
                _ => return Ok(()),
            }
        };
        if req.offset != 0 {
            if next.meta != req.meta {
                return Err(ChunkRefusal::BadHeader {
                    id: id(),
                    why: "the meta changed between chunks".into(),
                });
            }
            next.rewind_to(req.offset)
                .map_err(|received| ChunkRefusal::NotContiguous {
                    id: id(),
                    offset: req.offset,
                    received,
                })?;
            next.before_last = Some((req.offset, next.dump.clone()));
            next.take(&req.data)?;
            next.received = end;
        }
        if req.done {
            next.dump.finish().map_err(|e| ChunkRefusal::Corrupt {
                id: id(),
                why: e.to_string(),
            })?;
            self.stream = None;
        } else {
            self.stream = Some(next);
        }
        Ok(())
    }
}

/// The stream a chunk at offset 0 starts: its header checked, its dump bytes taken.
fn start(req: &InstallSnapshotRequest<TypeConfig>) -> Result<Stream, ChunkRefusal> {
    let bad = |why: String| ChunkRefusal::BadHeader {
        id: req.meta.snapshot_id.clone(),
        why,
    };
    let (meta, header) = parse_header(&req.data).map_err(|e| bad(e.to_string()))?;
    if meta != req.meta {
        return Err(bad("the file's meta is not the request's".into()));
    }
    let mut s = Stream {
        meta,
        received: req.data.len() as u64,
        dump: DumpCheck::new(),
        before_last: None,
    };
    s.take(&req.data[header..])?;
    Ok(s)
}

impl Stream {
    /// Goes back to `offset` if it is the end of what was received or the start of the
    /// last chunk; otherwise says how much was received.
    fn rewind_to(&mut self, offset: u64) -> Result<(), u64> {
        if offset == self.received {
            return Ok(());
        }
        match &self.before_last {
            Some((at, dump)) if *at == offset && offset > 0 => {
                self.dump = dump.clone();
                self.received = offset;
                Ok(())
            }
            _ => Err(self.received),
        }
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), ChunkRefusal> {
        self.dump.update(bytes).map_err(|e| ChunkRefusal::Corrupt {
            id: self.meta.snapshot_id.clone(),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use store::Cf;
    use store::snapshot::SnapshotWriter;

    use super::*;
    use crate::snapshot_file::write_header;

    fn meta(id: &str) -> SnapshotMeta {
        SnapshotMeta {
            snapshot_id: id.into(),
            ..Default::default()
        }
    }

    /// A snapshot file of `records` records of 1 KiB.
    fn file(m: &SnapshotMeta, records: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, m).unwrap();
        let mut w = SnapshotWriter::new(&mut out).unwrap();
        for i in 0..records {
            w.record(Cf::Current, format!("k{i:05}").as_bytes(), &[7; 1024])
                .unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn chunk(
        m: &SnapshotMeta,
        bytes: &[u8],
        offset: usize,
        len: usize,
    ) -> InstallSnapshotRequest<TypeConfig> {
        let end = (offset + len).min(bytes.len());
        InstallSnapshotRequest {
            vote: Default::default(),
            meta: m.clone(),
            offset: offset as u64,
            data: bytes[offset..end].to_vec(),
            done: end == bytes.len(),
        }
    }

    fn send_all(
        intake: &mut SnapshotIntake,
        m: &SnapshotMeta,
        bytes: &[u8],
        size: usize,
    ) -> Result<(), ChunkRefusal> {
        let mut offset = 0;
        while offset < bytes.len() {
            intake.admit(&chunk(m, bytes, offset, size))?;
            offset += size;
        }
        Ok(())
    }

    #[test]
    fn a_whole_snapshot_in_chunks_of_any_size_passes() {
        let m = meta("1-50-1");
        let bytes = file(&m, 40);
        // The first chunk holds the header (leaders send 1 MiB); later ones any size.
        for size in [20, 1000, 4096, bytes.len()] {
            let mut intake = SnapshotIntake::default();
            send_all(&mut intake, &m, &bytes, size).unwrap_or_else(|e| panic!("{size}: {e}"));
            assert!(intake.stream.is_none(), "done ends the stream");
        }
    }

    #[test]
    fn a_resent_chunk_and_a_restart_at_zero_are_taken() {
        let m = meta("1-50-1");
        let bytes = file(&m, 10);
        let mut intake = SnapshotIntake::default();
        intake.admit(&chunk(&m, &bytes, 0, 3000)).unwrap();
        intake.admit(&chunk(&m, &bytes, 3000, 3000)).unwrap();
        // The answer to the last chunk was lost: it comes again.
        intake.admit(&chunk(&m, &bytes, 3000, 3000)).unwrap();
        // The leader starts over.
        intake.admit(&chunk(&m, &bytes, 0, 3000)).unwrap();
        let mut offset = 3000;
        while offset < bytes.len() {
            intake.admit(&chunk(&m, &bytes, offset, 3000)).unwrap();
            offset += 3000;
        }
    }

    #[test]
    fn gaps_oversized_chunks_and_huge_offsets_are_refused() {
        let m = meta("1-50-1");
        let bytes = file(&m, 10);
        let mut intake = SnapshotIntake::default();
        intake.admit(&chunk(&m, &bytes, 0, 3000)).unwrap();
        let gap = intake.admit(&chunk(&m, &bytes, 4000, 1000)).unwrap_err();
        assert!(
            matches!(
                gap,
                ChunkRefusal::NotContiguous {
                    offset: 4000,
                    received: 3000,
                    ..
                }
            ),
            "{gap}"
        );
        // A refusal changed nothing: the next chunk in order is taken.
        intake.admit(&chunk(&m, &bytes, 3000, 1000)).unwrap();

        let mut big = chunk(&m, &bytes, 0, 10);
        big.data = vec![0; MAX_SNAPSHOT_CHUNK + 1];
        assert!(matches!(
            intake.admit(&big),
            Err(ChunkRefusal::ChunkTooLarge { .. })
        ));
        let mut far = chunk(&m, &bytes, 3000, 10);
        far.offset = MAX_SNAPSHOT_BYTES;
        assert!(matches!(
            intake.admit(&far),
            Err(ChunkRefusal::SnapshotTooLarge { .. })
        ));
        far.offset = u64::MAX;
        assert!(matches!(
            intake.admit(&far),
            Err(ChunkRefusal::SnapshotTooLarge { .. })
        ));
    }

    #[test]
    fn a_corrupt_or_truncated_snapshot_is_refused_at_its_last_chunk() {
        let m = meta("1-50-1");
        let bytes = file(&m, 10);
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        let e = send_all(&mut SnapshotIntake::default(), &m, &flipped, 3000).unwrap_err();
        assert!(
            matches!(&e, ChunkRefusal::Corrupt { why, .. } if why.contains("checksum")),
            "{e}"
        );

        let truncated = &bytes[..bytes.len() - 100];
        let e = send_all(&mut SnapshotIntake::default(), &m, truncated, 3000).unwrap_err();
        assert!(
            matches!(&e, ChunkRefusal::Corrupt { why, .. } if why.contains("truncated")),
            "{e}"
        );
    }

    #[test]
    fn a_header_that_is_not_the_requests_meta_or_not_a_dump_is_refused() {
        let m = meta("1-50-1");
        let other = file(&meta("9-99-9"), 3);
        let e = SnapshotIntake::default()
            .admit(&chunk(&m, &other, 0, 100_000))
            .unwrap_err();
        assert!(
            matches!(&e, ChunkRefusal::BadHeader { why, .. } if why.contains("not the request")),
            "{e}"
        );

        let mut not_a_dump = Vec::new();
        write_header(&mut not_a_dump, &m).unwrap();
        not_a_dump.extend_from_slice(b"SOMETHING ELSE");
        let e = SnapshotIntake::default()
            .admit(&chunk(&m, &not_a_dump, 0, 100))
            .unwrap_err();
        assert!(
            matches!(&e, ChunkRefusal::Corrupt { why, .. } if why.contains("magic")),
            "{e}"
        );

        let e = SnapshotIntake::default()
            .admit(&chunk(&m, &[0xff; 8], 0, 100))
            .unwrap_err();
        assert!(matches!(e, ChunkRefusal::BadHeader { .. }), "{e}");
    }
}

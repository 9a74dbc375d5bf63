//! The state-machine dump format, used for Raft snapshots and `snapshot save`:
//! a magic header, then `(family, key, value)` records, an end marker and a CRC-32 of
//! everything before it. A truncated or altered dump is refused, never half-installed.
//!
//! Byte layout (version 1, told by the magic; a reader refuses any other magic):
//!
//! ```text
//! "CAIRNSM1"                                   8 bytes, format and version
//! repeated: family u8 | key len u32 BE | key | value len u32 BE | value
//! 0xff                                         end marker
//! CRC-32 (IEEE) u32 BE                         of every byte above, magic included
//! ```
//!
//! Both ends stream: [`SnapshotWriter`] writes one record at a time to any `Write` (the
//! dump is never a whole `Vec`), [`SnapshotReader`] reads one record at a time, and
//! [`DumpCheck`] verifies a dump arriving in pieces (Raft snapshot chunks) without keeping
//! them, so a receiver can refuse a corrupt or truncated transfer before installing it.

use std::io::{Read, Write};

use crate::engine::Cf;
use crate::error::StoreError;

/// The first bytes of every dump: the format and its version.
pub const MAGIC: &[u8; 8] = b"CAIRNSM1";

/// One record of a dump: family, key, value.
pub type Record = (Cf, Vec<u8>, Vec<u8>);
/// The byte that ends the records, just before the checksum.
pub const END: u8 = 0xff;
/// Bytes after the records: the end marker and the checksum.
const TRAILER: usize = 5;

fn io(e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("snapshot I/O: {e}"))
}

pub struct SnapshotWriter<'a> {
    out: &'a mut dyn Write,
    crc: crc32fast::Hasher,
}

impl<'a> SnapshotWriter<'a> {
    pub fn new(out: &'a mut dyn Write) -> Result<Self, StoreError> {
        let mut w = Self {
            out,
            crc: crc32fast::Hasher::new(),
        };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.crc.update(b);
        self.out.write_all(b).map_err(io)
    }

    pub fn record(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(&[cf.prefix()])?;
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_be_bytes())?;
        self.put(value)
    }

    pub fn finish(mut self) -> Result<(), StoreError> {
        self.put(&[END])?;
        let sum = self.crc.finalize();
        self.out.write_all(&sum.to_be_bytes()).map_err(io)?;
        self.out.flush().map_err(io)
    }
}

pub struct SnapshotReader<'a> {
    input: &'a mut dyn Read,
    crc: crc32fast::Hasher,
    done: bool,
}

impl<'a> SnapshotReader<'a> {
    pub fn new(input: &'a mut dyn Read) -> Result<Self, StoreError> {
        let mut r = Self {
            input,
            crc: crc32fast::Hasher::new(),
            done: false,
        };
        let magic = r.take(8)?;
        if magic != MAGIC {
            return Err(StoreError::corrupt(
                "not a Cairn state-machine snapshot (bad magic)",
            ));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; n];
        self.input.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::corrupt("snapshot is truncated")
            } else {
                io(e)
            }
        })?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let b = self.take(4)?;
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if n > 1 << 30 {
            return Err(StoreError::corrupt(format!("snapshot record of {n} bytes")));
        }
        Ok(n)
    }

    /// The next record, or `None` after the end marker once the checksum matched.
    pub fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let tag = self.take(1)?[0];
        if tag == END {
            self.done = true;
            let expected = self.crc.clone().finalize();
            let mut sum = [0u8; 4];
            self.input
                .read_exact(&mut sum)
                .map_err(|_| StoreError::corrupt("snapshot checksum missing"))?;
            if u32::from_be_bytes(sum) != expected {
                return Err(StoreError::corrupt("snapshot checksum mismatch"));
            }
            return Ok(None);
        }
        let cf = Cf::from_prefix(tag)
            .ok_or_else(|| StoreError::corrupt(format!("unknown family tag {tag}")))?;
        let kl = self.len()?;
        let key = self.take(kl)?;
        let vl = self.len()?;
        let value = self.take(vl)?;
        Ok(Some((cf, key, value)))
    }
}

/// Verifies a dump that arrives in pieces, in order, keeping only a running checksum and
/// the last few bytes (the trailer is only known to be the trailer at the end). It checks
/// the magic, the end marker and the checksum; the records themselves are parsed by
/// [`SnapshotReader`] when the dump is installed. Clone it to be able to go back to the
/// state before a piece (a piece sent again).
#[derive(Clone, Debug, Default)]
pub struct DumpCheck {
    crc: crc32fast::Hasher,
    /// The first bytes seen, until the magic is complete.
    head: Vec<u8>,
    /// The last `TRAILER` bytes seen, not yet hashed.
    tail: Vec<u8>,
    len: u64,
}

impl DumpCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the next piece of the dump; refuses a dump that does not start with [`MAGIC`].
    pub fn update(&mut self, piece: &[u8]) -> Result<(), StoreError> {
        self.len += piece.len() as u64;
        if self.head.len() < MAGIC.len() {
            let take = (MAGIC.len() - self.head.len()).min(piece.len());
            self.head.extend_from_slice(&piece[..take]);
            if !MAGIC.starts_with(&self.head) {
                return Err(StoreError::corrupt(
                    "not a Cairn state-machine snapshot (bad magic)",
                ));
            }
        }
        // Hash everything but the last TRAILER bytes of (tail ++ piece).
        let total = self.tail.len() + piece.len();
        let hash = total.saturating_sub(TRAILER);
        let from_tail = hash.min(self.tail.len());
        self.crc.update(&self.tail[..from_tail]);
        self.crc.update(&piece[..hash - from_tail]);
        self.tail.drain(..from_tail);
        self.tail.extend_from_slice(&piece[hash - from_tail..]);
        Ok(())
    }

    /// Checks the end of the dump: the end marker, then a checksum of everything before.
    pub fn finish(mut self) -> Result<(), StoreError> {
        if self.head.len() < MAGIC.len() || self.tail.len() < TRAILER {
            return Err(StoreError::corrupt("snapshot is truncated"));
        }
        if self.tail[0] != END {
            return Err(StoreError::corrupt(
                "snapshot is truncated (no end marker before its checksum)",
            ));
        }
        self.crc.update(&self.tail[..1]);
        let sum = u32::from_be_bytes([self.tail[1], self.tail[2], self.tail[3], self.tail[4]]);
        if sum != self.crc.finalize() {
            return Err(StoreError::corrupt("snapshot checksum mismatch"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn dump(records: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = SnapshotWriter::new(&mut out).unwrap();
        for i in 0..records {
            w.record(Cf::Current, format!("k{i}").as_bytes(), &[i as u8; 100])
                .unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn check_in_pieces(bytes: &[u8], piece: usize) -> Result<(), StoreError> {
        let mut c = DumpCheck::new();
        for p in bytes.chunks(piece) {
            c.update(p)?;
        }
        c.finish()
    }

    #[test]
    fn a_dump_checked_in_pieces_of_any_size_passes_and_reads_back() {
        let bytes = dump(50);
        for piece in [1, 2, 3, 5, 7, 64, 4096, bytes.len()] {
            check_in_pieces(&bytes, piece).unwrap_or_else(|e| panic!("pieces of {piece}: {e}"));
        }
        let mut input = bytes.as_slice();
        let mut r = SnapshotReader::new(&mut input).unwrap();
        let mut n = 0;
        while r.next_record().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
        assert!(
            input.is_empty(),
            "the reader stops right after the checksum"
        );
    }

    #[test]
    fn a_flipped_byte_a_truncation_or_a_bad_magic_is_refused() {
        let bytes = dump(20);
        for at in [0, 9, bytes.len() / 2, bytes.len() - 5, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let e = check_in_pieces(&bad, 7).unwrap_err().to_string();
            assert!(
                e.contains("checksum") || e.contains("magic") || e.contains("end marker"),
                "byte {at}: {e}"
            );
        }
        for cut in [0, 3, 8, bytes.len() / 2, bytes.len() - 1] {
            let e = check_in_pieces(&bytes[..cut], 7).unwrap_err().to_string();
            assert!(
                e.contains("truncated") || e.contains("checksum"),
                "cut at {cut}: {e}"
            );
        }
        let e = check_in_pieces(b"CAIRNSM9 and more", 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad magic"), "{e}");
    }
}

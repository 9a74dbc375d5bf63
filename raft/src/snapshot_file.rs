//! The Raft snapshot file: what a node keeps as its current snapshot under
//! `<data>/snapshot/current`, and exactly the bytes a leader sends to a follower in chunks.
//!
//! ```text
//! meta length u32 BE | meta (bincode SnapshotMeta: last log id, membership, id) | dump
//! ```
//!
//! where the dump is the store's versioned, checksummed state-machine dump
//! ([`store::snapshot`]: magic `CAIRNSM1`, records, end marker, CRC-32). The header is not
//! covered by the dump's checksum: a receiver checks it against the meta of the
//! request that carries it ([`crate::snapshot_intake`]), a reader of a saved file decodes
//! it with a bound on its length. Nothing here reads a whole file into memory.

use std::io::{Read, Write};

use crate::types::{SnapshotMeta, decode, encode};

/// Largest header meta accepted (a membership of a few nodes is well under 1 KiB).
pub const MAX_META_LEN: usize = 64 << 10;

/// Why a snapshot file header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("snapshot file is truncated (header of {needed} bytes, {got} available)")]
    Truncated { needed: usize, got: usize },
    #[error("snapshot meta of {0} bytes is over the limit of {MAX_META_LEN}")]
    TooLong(usize),
    #[error("snapshot meta does not decode: {0}")]
    Meta(#[source] store::StoreError),
    #[error("reading the snapshot header: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the header of a snapshot file; the dump follows.
pub fn write_header(out: &mut dyn Write, meta: &SnapshotMeta) -> std::io::Result<()> {
    let m = encode(meta);
    out.write_all(&(m.len() as u32).to_be_bytes())?;
    out.write_all(&m)
}

/// The meta at the start of `bytes` and the length of the header, when `bytes` holds it.
pub fn parse_header(bytes: &[u8]) -> Result<(SnapshotMeta, usize), HeaderError> {
    let Some(len) = bytes.get(..4) else {
        return Err(HeaderError::Truncated {
            needed: 4,
            got: bytes.len(),
        });
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_META_LEN {
        return Err(HeaderError::TooLong(len));
    }
    let Some(m) = bytes.get(4..4 + len) else {
        return Err(HeaderError::Truncated {
            needed: 4 + len,
            got: bytes.len(),
        });
    };
    let meta = decode(m).map_err(HeaderError::Meta)?;
    Ok((meta, 4 + len))
}

/// Reads the header from `input`, leaving it at the first byte of the dump.
pub fn read_header(input: &mut dyn Read) -> Result<SnapshotMeta, HeaderError> {
    let eof = |needed, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HeaderError::Truncated { needed, got: 0 }
        } else {
            HeaderError::Io(e)
        }
    };
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(|e| eof(4, e))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_META_LEN {
        return Err(HeaderError::TooLong(len));
    }
    let mut m = vec![0u8; len];
    input.read_exact(&mut m).map_err(|e| eof(4 + len, e))?;
    decode(&m).map_err(HeaderError::Meta)
}

/// A reader that copies every byte it reads to `copy`: installing a received snapshot
/// reads it once, into the engine and into the node's new current snapshot file.
pub struct Tee<'a> {
    pub input: &'a mut dyn Read,
    pub copy: &'a mut dyn Write,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_header_reads_back_and_a_short_or_huge_one_is_refused() {
        let meta = SnapshotMeta {
            snapshot_id: "3-40-1".into(),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        write_header(&mut bytes, &meta).unwrap();
        bytes.extend_from_slice(b"dump");
        let (got, len) = parse_header(&bytes).unwrap();
        assert_eq!((got, &bytes[len..]), (meta.clone(), &b"dump"[..]));
        let mut input = bytes.as_slice();
        assert_eq!(read_header(&mut input).unwrap(), meta);
        assert_eq!(input, b"dump");

        assert!(matches!(
            parse_header(&bytes[..len - 1]),
            Err(HeaderError::Truncated { .. })
        ));
        let huge = (u32::MAX).to_be_bytes();
        assert!(matches!(parse_header(&huge), Err(HeaderError::TooLong(_))));
        assert!(matches!(
            read_header(&mut &huge[..]),
            Err(HeaderError::TooLong(_))
        ));
    }
}

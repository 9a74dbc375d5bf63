//! The state-machine dump format, used for Raft snapshots and `snapshot save`:
//! a magic header, then `(family, key, value)` records, an end marker and a CRC-32 of
//! everything before it. A truncated or altered dump is refused, never half-installed.

use std::io::{Read, Write};

use crate::engine::Cf;
use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"CAIRNSM1";

/// One record of a dump: family, key, value.
pub type Record = (Cf, Vec<u8>, Vec<u8>);
const END: u8 = 0xff;

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

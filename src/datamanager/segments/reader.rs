//! Reading a whole segment as a stream, a batch of runs at a time, so that memory is
//! bounded by one batch (and one record), not by the segment: the footer first (ranged
//! reads, [`read_footer`]), then the object from its start, each record checked
//! ([`format::decode_record`]) as it goes by and every byte hashed. [`SegmentReader::finish`]
//! gives the SHA-256 of the whole object, for the caller to compare with the one the store
//! recorded: until then, the runs handed out are checked record by record but the object
//! is not yet known to be the recorded one.

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::format::{self, ArchivedRun, FooterEntry, SegmentFooter};
use super::{SegmentError, read_footer, writer};
use crate::datamanager::blobs::{Blobs, ByteStream};

/// One segment being read from its start.
pub struct SegmentReader {
    footer: SegmentFooter,
    body: ByteStream,
    hasher: Sha256,
    /// Bytes received and not yet consumed; `buf[0]` is at offset `at` in the object.
    buf: BytesMut,
    at: u64,
    /// The next footer entry (record) to hand out.
    next: usize,
    header_checked: bool,
}

impl SegmentReader {
    /// Reads and checks the footer of the segment at `key`, then starts reading it.
    pub async fn open(blobs: &Blobs, key: &str) -> Result<SegmentReader, SegmentError> {
        let footer = read_footer(blobs, key).await?;
        let body = blobs.get(key).await?;
        Ok(SegmentReader {
            footer,
            body,
            hasher: Sha256::new(),
            buf: BytesMut::new(),
            at: 0,
            next: 0,
            header_checked: false,
        })
    }

    pub fn footer(&self) -> &SegmentFooter {
        &self.footer
    }

    /// The next (at most `max`, at least one while any is left) runs in footer order, each
    /// with its footer entry; empty once every run was handed out.
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Vec<(FooterEntry, ArchivedRun)>, SegmentError> {
        let mut out = Vec::new();
        while out.len() < max.max(1) {
            let Some(entry) = self.footer.runs.get(self.next).cloned() else {
                break;
            };
            if !self.header_checked {
                self.fill_to(format::HEADER_LEN).await?;
                format::decode_header(&self.buf)?;
                self.header_checked = true;
            }
            // The footer was checked: entries tile the record area from the header on, in
            // order, each within `MAX_RECORD_BYTES`. So `entry.offset` is where we are.
            let end = entry.offset + entry.len;
            self.fill_to(end).await?;
            let start = (entry.offset - self.at) as usize;
            let archived =
                format::decode_record(&self.buf[start..start + entry.len as usize], &entry)?;
            self.consume_to(end);
            self.next += 1;
            out.push((entry, archived));
        }
        Ok(out)
    }

    /// Reads the rest of the object and returns the SHA-256 of all of it (lowercase hex).
    pub async fn finish(mut self) -> Result<String, SegmentError> {
        while let Some(chunk) = self.body.next().await {
            self.hasher.update(&chunk?);
        }
        Ok(writer::hex(&self.hasher.finalize()))
    }

    /// Receives chunks until the object's bytes up to offset `end` are buffered.
    async fn fill_to(&mut self, end: u64) -> Result<(), SegmentError> {
        while self.at + (self.buf.len() as u64) < end {
            let Some(chunk) = self.body.next().await else {
                return Err(SegmentError::Truncated {
                    part: "segment",
                    need: end,
                    have: self.at + self.buf.len() as u64,
                });
            };
            let chunk = chunk?;
            self.hasher.update(&chunk);
            self.buf.extend_from_slice(&chunk);
        }
        Ok(())
    }

    /// Drops the buffered bytes before offset `end`.
    fn consume_to(&mut self, end: u64) {
        let n = (end - self.at) as usize;
        self.buf.advance(n);
        self.at = end;
    }
}

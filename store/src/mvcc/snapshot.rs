//! Snapshot and restore of the whole state machine: a point-in-time [`StateSnapshot`] (an
//! engine view, or a dump in memory) written out as the format of [`crate::snapshot`], and
//! the atomic restore that replaces every state-machine family and reloads the state.

use std::io::{Read, Write};

use super::{Mvcc, for_each_pair, load_state};
use crate::engine::{Cf, Durability, Scan, WriteBatch};
use crate::error::StoreError;
use crate::snapshot::{SnapshotReader, SnapshotWriter};

impl Mvcc {
    /// Writes a consistent point-in-time copy of the whole state machine (no concurrent
    /// apply can interleave: the state lock is held while copying).
    pub fn dump(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        self.snapshot()?.write_to(out)
    }

    /// Fixes the state as of now for a later [`StateSnapshot::write_to`]. Where the engine
    /// has a point-in-time view this is cheap and applies go on while the dump is written;
    /// otherwise the dump is written to memory here, holding applies up for its duration.
    pub fn snapshot(&self) -> Result<StateSnapshot, StoreError> {
        let _st = self.read();
        if let Some(view) = self.engine.view()? {
            return Ok(StateSnapshot(Fixed::View(view)));
        }
        let mut dumped = Vec::new();
        write_dump(self.engine.as_ref(), &mut dumped)?;
        Ok(StateSnapshot(Fixed::Dumped(dumped)))
    }

    /// Replaces the whole state machine with a dump, atomically (one synced engine write),
    /// then reloads the in-memory state. `extra` is written in the same batch. Watchers are
    /// moved back to catch-up so they see the installed history, or are cancelled as
    /// compacted when it no longer reaches them.
    pub fn restore(&self, input: &mut dyn Read, extra: WriteBatch) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        for cf in Cf::STATE_MACHINE {
            batch.delete_range(cf, Vec::new(), None);
        }
        let mut r = SnapshotReader::new(input)?;
        while let Some((cf, k, v)) = r.next_record()? {
            if !Cf::STATE_MACHINE.contains(&cf) {
                return Err(StoreError::corrupt(format!(
                    "snapshot holds a record of {cf:?}"
                )));
            }
            batch.put(cf, k, v);
        }
        batch.extend(extra);
        let mut st = self.write();
        self.engine.write(batch, Durability::Sync)?;
        *st = load_state(self.engine.as_ref())?;
        self.hub.reset(st.revision, st.compact_revision);
        Ok(())
    }
}

/// The state machine as of one moment (see [`Mvcc::snapshot`]).
pub struct StateSnapshot(Fixed);

enum Fixed {
    View(Box<dyn Scan>),
    Dumped(Vec<u8>),
}

impl StateSnapshot {
    /// Writes the dump [`Mvcc::restore`] reads.
    pub fn write_to(self, out: &mut dyn Write) -> Result<(), StoreError> {
        match self.0 {
            Fixed::View(view) => write_dump(view.as_ref(), out),
            Fixed::Dumped(bytes) => out
                .write_all(&bytes)
                .map_err(|e| StoreError::Storage(format!("writing a snapshot: {e}"))),
        }
    }
}

/// Writes every state-machine family of `from` as a snapshot dump.
fn write_dump(from: &dyn Scan, out: &mut dyn Write) -> Result<(), StoreError> {
    let mut w = SnapshotWriter::new(out)?;
    for cf in Cf::STATE_MACHINE {
        for_each_pair(from, cf, Vec::new(), None, |k, v| w.record(cf, &k, &v))?;
    }
    w.finish()
}

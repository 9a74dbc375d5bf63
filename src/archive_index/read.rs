//! Point reads of the index: one run, the segments, counts, the applied revision. Each
//! call is one read transaction (a consistent snapshot). Listings are in `listing.rs`.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use cairn_client::run::RunEvent;

use super::tables::{
    APPLIED_KEY, EVENTS, IndexedRun, IndexedSegment, META, PARTIAL, RUNS, SEGMENTS,
};
use super::{ArchiveIndex, IndexError};

impl ArchiveIndex {
    /// Archived run `id`, with where its record is.
    pub fn get(&self, id: &str) -> Result<Option<IndexedRun>, IndexError> {
        let txn = self.db.begin_read()?;
        let runs = txn.open_table(RUNS)?;
        let Some(value) = runs.get(id)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| IndexError::undecodable("run", id, e))
    }

    /// Up to `limit` kept events of archived runs with a sequence greater than `after`,
    /// oldest first.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<RunEvent>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            let (seq, value) = entry?;
            let event: RunEvent = serde_json::from_slice(value.value())
                .map_err(|e| IndexError::undecodable("event", &seq.value().to_string(), e))?;
            out.push(event);
        }
        Ok(out)
    }

    pub fn has_segment(&self, segment: &str) -> Result<bool, IndexError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SEGMENTS)?.get(segment)?.is_some())
    }

    /// Every segment indexed, by id.
    pub fn segments(&self) -> Result<Vec<(String, IndexedSegment)>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SEGMENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let id = key.value().to_string();
            let meta = serde_json::from_slice(value.value())
                .map_err(|e| IndexError::undecodable("segment", &id, e))?;
            out.push((id, meta));
        }
        Ok(out)
    }

    /// Segments being indexed in batches and not completed (a crash in between).
    pub fn partial_segments(&self) -> Result<Vec<String>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PARTIAL)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(entry?.0.value().to_string());
        }
        Ok(out)
    }

    /// Runs indexed.
    pub fn len(&self) -> Result<u64, IndexError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(RUNS)?.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// The store revision of the last segment record applied (`set_applied`), if any.
    pub fn applied(&self) -> Result<Option<i64>, IndexError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(APPLIED_KEY)?.map(|v| v.value()))
    }
}

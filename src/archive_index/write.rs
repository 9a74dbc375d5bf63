//! Changing the index: a segment's runs added in one write transaction or in batches
//! (begin, add runs, complete), removed in one,
//! a single run removed, the applied revision moved forward. Every change is idempotent,
//! so a follower that crashes between applying a segment record and recording its
//! revision simply applies it again.

use std::collections::BTreeSet;

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::tables::{
    self, APPLIED_KEY, EVENTS, EVENTS_KEPT, IndexedRun, IndexedSegment, LISTING, META, PARTIAL,
    RUNS, SEGMENT_RUNS, SEGMENTS, SegmentEntry,
};
use super::{ArchiveIndex, IndexError};
use crate::datamanager::keys;

impl ArchiveIndex {
    /// Indexes segment `segment` and its runs in one write transaction. Returns false,
    /// writing nothing, when the segment is already indexed with the same metadata
    /// (`SegmentConflict` when with other metadata). A run already indexed from another
    /// segment (a compacted segment taking over older ones) now points into this one.
    pub fn add_segment(
        &self,
        segment: &str,
        meta: &IndexedSegment,
        entries: Vec<SegmentEntry>,
    ) -> Result<bool, IndexError> {
        check_segment(segment, &entries)?;
        let txn = self.db.begin_write()?;
        {
            let mut segments = txn.open_table(SEGMENTS)?;
            if already_indexed(&segments, segment, meta)? {
                return Ok(false);
            }
            segments.insert(segment, encode(meta).as_slice())?;
            insert_runs(&txn, segment, entries)?;
            txn.open_table(PARTIAL)?.remove(segment)?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Starts indexing segment `segment` in parts (a segment too large for one
    /// transaction's memory): it is marked partial, then [`add_segment_runs`] adds its
    /// runs a batch at a time, and [`complete_segment`] records it. A partial segment's
    /// runs are listed like any other; a sync that finds it partial (a crash in between)
    /// indexes it again from the start. Returns false, marking nothing, when the segment
    /// is already indexed with the same metadata (`SegmentConflict` when with other).
    ///
    /// [`add_segment_runs`]: ArchiveIndex::add_segment_runs
    /// [`complete_segment`]: ArchiveIndex::complete_segment
    pub fn begin_segment(&self, segment: &str, meta: &IndexedSegment) -> Result<bool, IndexError> {
        if segment.is_empty() {
            return Err(IndexError::Invalid {
                what: "segment id",
                why: "empty".into(),
            });
        }
        let txn = self.db.begin_write()?;
        {
            let segments = txn.open_table(SEGMENTS)?;
            if already_indexed(&segments, segment, meta)? {
                return Ok(false);
            }
            txn.open_table(PARTIAL)?.insert(segment, ())?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Indexes a batch of the runs of partial segment `segment` (see
    /// [`begin_segment`](ArchiveIndex::begin_segment)), in one write transaction.
    pub fn add_segment_runs(
        &self,
        segment: &str,
        entries: Vec<SegmentEntry>,
    ) -> Result<(), IndexError> {
        check_segment(segment, &entries)?;
        let txn = self.db.begin_write()?;
        {
            if txn.open_table(PARTIAL)?.get(segment)?.is_none() {
                return Err(IndexError::Invalid {
                    what: "segment",
                    why: format!("{segment} is not being indexed"),
                });
            }
            insert_runs(&txn, segment, entries)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records partial segment `segment` as indexed with `meta`: every run was added.
    pub fn complete_segment(&self, segment: &str, meta: &IndexedSegment) -> Result<(), IndexError> {
        let txn = self.db.begin_write()?;
        {
            if txn.open_table(PARTIAL)?.remove(segment)?.is_none() {
                return Err(IndexError::Invalid {
                    what: "segment",
                    why: format!("{segment} is not being indexed"),
                });
            }
            txn.open_table(SEGMENTS)?
                .insert(segment, encode(meta).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes segment `segment`, indexed or partial, and the runs indexed from it (not
    /// those a later segment took over), in one write transaction. Returns false when it
    /// was neither.
    pub fn remove_segment(&self, segment: &str) -> Result<bool, IndexError> {
        let txn = self.db.begin_write()?;
        {
            let indexed = txn.open_table(SEGMENTS)?.remove(segment)?.is_some();
            let partial = txn.open_table(PARTIAL)?.remove(segment)?.is_some();
            if !indexed && !partial {
                return Ok(false);
            }
            let mut runs = txn.open_table(RUNS)?;
            let mut listing = txn.open_table(LISTING)?;
            let mut members = txn.open_table(SEGMENT_RUNS)?;
            let mut ids = Vec::new();
            for entry in members.range((segment, "")..)? {
                let (key, _) = entry?;
                let (seg, id) = key.value();
                if seg != segment {
                    break;
                }
                ids.push(id.to_string());
            }
            for id in ids {
                unindex(&mut runs, &mut listing, &mut members, &id)?;
            }
        }
        txn.commit()?;
        Ok(true)
    }

    /// Removes run `id` (retention, or a run restored to the store). Returns false when
    /// it was not indexed.
    pub fn remove_run(&self, id: &str) -> Result<bool, IndexError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut runs = txn.open_table(RUNS)?;
            let mut listing = txn.open_table(LISTING)?;
            let mut members = txn.open_table(SEGMENT_RUNS)?;
            unindex(&mut runs, &mut listing, &mut members, id)?
        };
        if !removed {
            return Ok(false);
        }
        txn.commit()?;
        Ok(true)
    }

    /// Records that the store's segment records up to `revision` are applied. The
    /// applied revision only moves forward; returns the one recorded.
    pub fn set_applied(&self, revision: i64) -> Result<i64, IndexError> {
        let txn = self.db.begin_write()?;
        let applied = {
            let mut meta = txn.open_table(META)?;
            let current = meta.get(APPLIED_KEY)?.map(|v| v.value());
            match current {
                Some(c) if c >= revision => return Ok(c),
                _ => {
                    meta.insert(APPLIED_KEY, revision)?;
                    revision
                }
            }
        };
        txn.commit()?;
        Ok(applied)
    }
}

/// Whether `segment` is indexed with `meta` already; `SegmentConflict` when it is indexed
/// with other metadata.
fn already_indexed(
    segments: &Table<&str, &[u8]>,
    segment: &str,
    meta: &IndexedSegment,
) -> Result<bool, IndexError> {
    let Some(existing) = segments.get(segment)? else {
        return Ok(false);
    };
    let existing: IndexedSegment = serde_json::from_slice(existing.value())
        .map_err(|e| IndexError::undecodable("segment", segment, e))?;
    if existing == *meta {
        Ok(true)
    } else {
        Err(IndexError::SegmentConflict {
            segment: segment.to_string(),
        })
    }
}

/// Indexes `entries` as runs of `segment` (replacing what the index held of each run) and
/// their events, keeping the newest [`EVENTS_KEPT`] events.
fn insert_runs(
    txn: &WriteTransaction,
    segment: &str,
    entries: Vec<SegmentEntry>,
) -> Result<(), IndexError> {
    let mut runs = txn.open_table(RUNS)?;
    let mut listing = txn.open_table(LISTING)?;
    let mut members = txn.open_table(SEGMENT_RUNS)?;
    let mut events = txn.open_table(EVENTS)?;
    for entry in entries {
        let id = entry.run.id.clone();
        for event in &entry.events {
            events.insert(event.sequence, encode(event).as_slice())?;
        }
        unindex(&mut runs, &mut listing, &mut members, &id)?;
        for key in tables::listing_keys(&entry.run) {
            listing.insert(key.as_str(), ())?;
        }
        members.insert((segment, id.as_str()), ())?;
        let indexed = IndexedRun {
            segment: segment.to_string(),
            offset: entry.offset,
            len: entry.len,
            run: entry.run,
        };
        runs.insert(id.as_str(), encode(&indexed).as_slice())?;
    }
    while events.len()? > EVENTS_KEPT {
        events.pop_first()?;
    }
    Ok(())
}

/// Removes run `id`, its listing keys and its segment membership. False: not indexed.
fn unindex(
    runs: &mut Table<&str, &[u8]>,
    listing: &mut Table<&str, ()>,
    members: &mut Table<(&str, &str), ()>,
    id: &str,
) -> Result<bool, IndexError> {
    let old: IndexedRun = match runs.remove(id)? {
        None => return Ok(false),
        Some(v) => {
            serde_json::from_slice(v.value()).map_err(|e| IndexError::undecodable("run", id, e))?
        }
    };
    for key in tables::listing_keys(&old.run) {
        listing.remove(key.as_str())?;
    }
    members.remove((old.segment.as_str(), id))?;
    Ok(true)
}

/// A segment id and its runs are indexable: a non-empty id; run ids non-empty, without
/// NUL (the listing keys' separator) and each once; groups in canonical form (the
/// listing keys are built from them).
pub fn check_segment(segment: &str, entries: &[SegmentEntry]) -> Result<(), IndexError> {
    let invalid = |what, why: String| Err(IndexError::Invalid { what, why });
    if segment.is_empty() {
        return invalid("segment id", "empty".into());
    }
    let mut seen = BTreeSet::new();
    for e in entries {
        let id = &e.run.id;
        if id.is_empty() || id.contains('\0') {
            return invalid("run id", format!("{id:?} in segment {segment}"));
        }
        if !seen.insert(id.as_str()) {
            return invalid("segment", format!("run {id} is in segment {segment} twice"));
        }
        if keys::normalize_group(&e.run.group).as_deref() != Some(e.run.group.as_str()) {
            return invalid("group", format!("{:?} of run {id}", e.run.group));
        }
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("index values are plain data and always serialize")
}

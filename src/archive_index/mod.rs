//! The local index of archived runs (issue 13): each node's own on-disk redb database,
//! separate from the Raft engine, answering "where is archived run X" and "one page of
//! archived runs under group G with phase/result F" without reading a segment.
//!
//! It holds, per archived run, the segment and byte range of its record and the run
//! itself; the listing keys of the store's own index (`keys::index_keys`: per group
//! ancestor × {all, phase, result}, in run-id order), so listings have the store's order
//! and cursors and the two can be merged; the segments indexed; the newest run events of
//! archived runs by sequence (for the run-event stream); and the store revision of the
//! last segment record applied. It is a cache of object storage: a file that is
//! corrupt or of another format version is reported as such (`IndexError::needs_rebuild`)
//! and the caller deletes and rebuilds it. `sync.rs` feeds it: the store's segment records
//! (`datamanager::archived`) say which segments exist, their objects give the runs.
//!
//! redb is blocking: the methods here block on disk I/O; async code calls the `*_async`
//! wrappers (`asynchronous.rs`), which run them with `spawn_blocking`.

mod asynchronous;
mod error;
mod listing;
mod read;
mod sync;
mod tables;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableHandle};

pub use error::IndexError;
pub use listing::{ListPlan, merge_page, plan};
pub use sync::{SyncError, SyncReport, sync};
pub use tables::{
    EVENTS_KEPT, FORMAT_VERSION, IndexedRun, IndexedSegment, SegmentEntry, listing_keys,
    listing_prefix, stream_bounds,
};
pub use write::check_segment;

use tables::{EVENTS, LISTING, META, PARTIAL, RUNS, SEGMENT_RUNS, SEGMENTS, VERSION_KEY};

/// The page cache of the index file. Listings read a few pages each and the OS page cache
/// holds the rest of the file; at 32 MiB the cache filling made RSS grow by ~25 MiB from
/// 10k to 100k archived runs, at 8 MiB it is flat (BENCHMARKS.md "Archived runs").
pub const CACHE_BYTES: usize = 8 << 20;

/// A handle on one index file; clones share it.
#[derive(Clone)]
pub struct ArchiveIndex {
    db: Arc<Database>,
}

impl ArchiveIndex {
    /// Opens the index at `path`, creating it (and its directory) when missing.
    /// `Corrupt` or `WrongVersion` (see `IndexError::needs_rebuild`): delete the file and
    /// rebuild; `Locked`: another process has it open.
    pub fn open(path: &Path) -> Result<ArchiveIndex, IndexError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IndexError::Storage(e.into()))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        check_format(&db)?;
        Ok(ArchiveIndex { db: Arc::new(db) })
    }
}

/// Reads the format version, or writes it into a new file, and creates every table so
/// read transactions always find them. A file with tables but no version was not written
/// by this module: corrupt.
fn check_format(db: &Database) -> Result<(), IndexError> {
    let txn = db.begin_write()?;
    {
        let found = {
            let meta = txn.open_table(META)?;
            meta.get(VERSION_KEY)?.map(|v| v.value())
        };
        match found {
            Some(v) if v == tables::FORMAT_VERSION => {}
            Some(v) => {
                return Err(IndexError::WrongVersion {
                    found: v,
                    expected: tables::FORMAT_VERSION,
                });
            }
            None => {
                let foreign: Vec<String> = txn
                    .list_tables()?
                    .map(|t| t.name().to_string())
                    .filter(|name| name != META.name())
                    .collect();
                if !foreign.is_empty() {
                    return Err(IndexError::Corrupt {
                        why: format!(
                            "not an archive index: tables {foreign:?} and no format version"
                        ),
                        source: None,
                    });
                }
                txn.open_table(META)?
                    .insert(VERSION_KEY, tables::FORMAT_VERSION)?;
            }
        }
        txn.open_table(RUNS)?;
        txn.open_table(LISTING)?;
        txn.open_table(SEGMENTS)?;
        txn.open_table(SEGMENT_RUNS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(PARTIAL)?;
    }
    txn.commit()?;
    Ok(())
}

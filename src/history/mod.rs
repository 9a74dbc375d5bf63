//! One view of every run, live or archived: the store holds live runs and the archived
//! runs not yet moved into a segment; this node's [`ArchiveIndex`] holds the runs moved
//! into segments in object storage (see `scheduler/segmenter.rs`). [`History`] answers
//! "run X", "run X's config" and "a page of runs" from both, so a client sees one list
//! in one order with one kind of cursor; only `Run::archived` and where the bytes come
//! from differ.
//!
//! Consistency: a run leaves the store in the same transaction that records its segment,
//! and this node's index applies records as `follower.rs` sees them. A read of the store
//! at revision `r` is completed from the index only once the index holds every segment
//! recorded up to `r` ([`History::ensure_indexed`]): then a run archived before `r` is in
//! the index, a run archived after it is still in what the store returned, and a run in
//! both (moved between the two reads) is shown once. An index behind makes archived
//! reads wait a little, or give up at once while it is rebuilt or far behind (`lag.rs`,
//! by the read's [`ReadOrigin`]), with [`HistoryError::IndexBehind`]: the API then asks
//! a peer whose index is complete (`api/forward.rs`), or answers 503; never wrongly
//! empty.
//!
//! Run events are merged the same way: the store's with the newest events of archived
//! runs, which the index keeps by sequence.
//!
//! Archived runs' configs are read from their segment record (one ranged read) through a
//! bounded cache ([`RecordCache`]).

pub mod cache;
mod follower;
pub mod lag;
mod listing;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use cairn_client::api::{ListRunsQuery, RunsPage};
use cairn_client::run::{Run, RunEvent};
use cairn_client::runconfig::RunConfig;

pub use cache::RecordCache;
pub use follower::{IndexFollower, IndexPublisher, IndexedRevision};
pub use lag::{IndexLag, LagPlan, ReadOrigin, lag_plan};

use crate::archive_index::{self, ArchiveIndex, IndexError, IndexedRun};
use crate::datamanager::blobs::Blobs;
use crate::datamanager::segments::{self, ArchivedRun, FooterEntry, SegmentError};
use crate::datamanager::{Datamanager, DmError, Versioned};

/// How long a read waits for this node's index to catch up with the store before it
/// fails with [`HistoryError::IndexBehind`] (when it waits at all: [`lag_plan`]).
pub const INDEX_WAIT: Duration = Duration::from_secs(5);

/// The file name of a node's index under its data dir.
pub const INDEX_FILE: &str = "archive-index.redb";

/// Opens the index at `path`; a corrupt file or one of another format version is
/// deleted and a new one made (the follower rebuilds it from object storage).
pub async fn open_index(path: std::path::PathBuf) -> Result<ArchiveIndex, IndexError> {
    match ArchiveIndex::open_async(path.clone()).await {
        Err(e) if e.needs_rebuild() => {
            tracing::warn!(path = %path.display(), error = %e, "the archive index cannot be used; deleting it to rebuild it");
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| IndexError::Storage(e.into()))?;
            ArchiveIndex::open_async(path).await
        }
        other => other,
    }
}

/// Why a read of the run history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] DmError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("reading archived run {id} from segment {segment}: {source}")]
    Segment {
        id: String,
        segment: String,
        #[source]
        source: SegmentError,
    },
    /// This node's index of archived runs lags the store (being rebuilt, or behind).
    #[error(
        "this node's index of archived runs is catching up (it holds the segments recorded up to revision {indexed}, the store is at {wanted}); retry shortly"
    )]
    IndexBehind { indexed: i64, wanted: i64 },
}

/// Live and archived runs as one (cheap to clone).
#[derive(Clone)]
pub struct History {
    dm: Datamanager,
    index: ArchiveIndex,
    blobs: Blobs,
    cache: RecordCache,
    indexed: IndexedRevision,
    /// Whether reads wait for a lagging index ([`lag_plan`]); `Local` unless set by
    /// [`History::reading_for`].
    origin: ReadOrigin,
}

impl History {
    pub fn new(
        dm: Datamanager,
        index: ArchiveIndex,
        blobs: Blobs,
        cache: RecordCache,
        indexed: IndexedRevision,
    ) -> History {
        History {
            dm,
            index,
            blobs,
            cache,
            indexed,
            origin: ReadOrigin::Local,
        }
    }

    /// This history for reads from `origin`: how they meet a lagging index.
    pub fn reading_for(&self, origin: ReadOrigin) -> History {
        History {
            origin,
            ..self.clone()
        }
    }

    /// Run `id`, live or archived. An archived run's mod revision is 0: it never changes.
    pub async fn run(&self, id: &str) -> Result<Versioned<Run>, HistoryError> {
        match self.dm.run(id).await {
            Err(DmError::NotFound { .. }) => {}
            other => return Ok(other?),
        }
        let found = self.archived_entry(id).await?;
        Ok(Versioned {
            value: found.run,
            mod_revision: 0,
        })
    }

    /// Run `id` and its config, live or archived.
    pub async fn run_and_config(
        &self,
        id: &str,
    ) -> Result<(Versioned<Run>, Arc<RunConfig>), HistoryError> {
        match self.dm.run(id).await {
            Err(DmError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
            Ok(run) => match self.dm.run_config(id).await {
                Ok(config) => return Ok((run, Arc::new(config))),
                // Archived between the two reads: read both from the segment.
                Err(DmError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            },
        }
        let entry = self.archived_entry(id).await?;
        let record = self.record(&entry).await?;
        let run = Versioned {
            value: record.run.clone(),
            mod_revision: 0,
        };
        Ok((run, Arc::new(record.config.clone())))
    }

    /// The config of run `id`, live or archived.
    pub async fn run_config(&self, id: &str) -> Result<Arc<RunConfig>, HistoryError> {
        Ok(self.run_and_config(id).await?.1)
    }

    /// Run events with a sequence greater than `after`, oldest first, wherever their run
    /// lives (the store's, and the newest `EVENTS_KEPT` of archived runs from the index),
    /// and the store revision they were read at: a watch from the next revision continues
    /// them without a gap or a repeat (an archived event written after that revision is
    /// left to the watch, which sees it written).
    pub async fn events_after(&self, after: u64) -> Result<(Vec<RunEvent>, i64), HistoryError> {
        let (mut events, revision) = self.dm.events_after(after).await?;
        self.ensure_indexed(revision).await?;
        let until = u64::try_from(revision).unwrap_or(0);
        let kept = usize::try_from(archive_index::EVENTS_KEPT).unwrap_or(usize::MAX);
        let archived = self.index.events_after_async(after, kept).await?;
        events.extend(archived.into_iter().filter(|e| e.sequence <= until));
        events.sort_by_key(|e| e.sequence);
        events.dedup_by_key(|e| e.sequence);
        Ok((events, revision))
    }

    /// One page of runs from the store and the index, merged (see `listing.rs`).
    pub async fn list(&self, q: &ListRunsQuery) -> Result<RunsPage, HistoryError> {
        listing::list(self, q).await
    }

    /// Archived run `id` from the index, once the index holds every segment recorded up
    /// to the store's current revision; `NotFound` when it is in neither.
    async fn archived_entry(&self, id: &str) -> Result<IndexedRun, HistoryError> {
        self.ensure_indexed(self.dm.kv().header().revision).await?;
        self.index
            .get_async(id.to_string())
            .await?
            .ok_or_else(|| DmError::not_found("run", id).into())
    }

    /// The archived run's whole record (run, config, events), from the cache or its
    /// segment.
    async fn record(&self, entry: &IndexedRun) -> Result<Arc<ArchivedRun>, HistoryError> {
        let id = &entry.run.id;
        if let Some(hit) = self.cache.get(id) {
            return Ok(hit);
        }
        let failed = |source| HistoryError::Segment {
            id: id.clone(),
            segment: entry.segment.clone(),
            source,
        };
        let key = segments::segment_key(&entry.segment).map_err(failed)?;
        let footer = FooterEntry {
            id: id.clone(),
            group: entry.run.group.clone(),
            phase: entry.run.phase,
            result: entry.run.result,
            offset: entry.offset,
            len: entry.len,
        };
        let record = segments::read_run(&self.blobs, &key, &footer)
            .await
            .map_err(failed)?;
        let record = Arc::new(record);
        self.cache.insert(id, record.clone(), entry.len);
        Ok(record)
    }

    /// Waits until this node's index holds every segment recorded up to store revision
    /// `wanted`: at once when it applied the records at or past `wanted`, or when no
    /// record was written after the revision it applied; else as it catches up, for at
    /// most [`INDEX_WAIT`], when [`lag_plan`] says to wait at all (else it fails at once).
    pub async fn ensure_indexed(&self, wanted: i64) -> Result<(), HistoryError> {
        let deadline = tokio::time::Instant::now() + INDEX_WAIT;
        let mut indexed = self.indexed.clone();
        loop {
            let at = indexed.current();
            if at.is_some_and(|at| at >= wanted) {
                return Ok(());
            }
            let lag = match at {
                None => IndexLag::Rebuilding,
                Some(at) => match self.dm.segments_written_after(at).await? {
                    0 => return Ok(()),
                    segments => IndexLag::Behind { segments },
                },
            };
            let waits = lag_plan(self.origin, lag) == LagPlan::Wait;
            if !waits
                || tokio::time::timeout_at(deadline, indexed.changed())
                    .await
                    .is_err()
            {
                return Err(HistoryError::IndexBehind {
                    indexed: indexed.current().unwrap_or(-1),
                    wanted,
                });
            }
        }
    }
}

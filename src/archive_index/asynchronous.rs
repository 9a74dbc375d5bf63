//! The index from async code: every call runs on tokio's blocking pool
//! (`spawn_blocking`), so a disk read or an fsync never stalls a runtime worker. A panic
//! inside a call comes back as `IndexError::Task`.

use std::path::PathBuf;

use cairn_client::api::{ListRunsQuery, RunsPage};

use super::tables::{IndexedRun, IndexedSegment, SegmentEntry};
use super::{ArchiveIndex, IndexError};

impl ArchiveIndex {
    /// `open` on the blocking pool.
    pub async fn open_async(path: PathBuf) -> Result<ArchiveIndex, IndexError> {
        blocking(move || ArchiveIndex::open(&path)).await
    }

    /// Runs `f` on a clone of this handle on the blocking pool: any sequence of calls
    /// that has no wrapper of its own.
    pub async fn call<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&ArchiveIndex) -> Result<T, IndexError> + Send + 'static,
    {
        let index = self.clone();
        blocking(move || f(&index)).await
    }

    pub async fn get_async(&self, id: String) -> Result<Option<IndexedRun>, IndexError> {
        self.call(move |i| i.get(&id)).await
    }

    pub async fn events_after_async(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<cairn_client::run::RunEvent>, IndexError> {
        self.call(move |i| i.events_after(after, limit)).await
    }

    pub async fn list_async(&self, q: ListRunsQuery) -> Result<RunsPage, IndexError> {
        self.call(move |i| i.list(&q)).await
    }

    pub async fn add_segment_async(
        &self,
        segment: String,
        meta: IndexedSegment,
        entries: Vec<SegmentEntry>,
    ) -> Result<bool, IndexError> {
        self.call(move |i| i.add_segment(&segment, &meta, entries))
            .await
    }

    pub async fn begin_segment_async(
        &self,
        segment: String,
        meta: IndexedSegment,
    ) -> Result<bool, IndexError> {
        self.call(move |i| i.begin_segment(&segment, &meta)).await
    }

    pub async fn add_segment_runs_async(
        &self,
        segment: String,
        entries: Vec<SegmentEntry>,
    ) -> Result<(), IndexError> {
        self.call(move |i| i.add_segment_runs(&segment, entries))
            .await
    }

    pub async fn complete_segment_async(
        &self,
        segment: String,
        meta: IndexedSegment,
    ) -> Result<(), IndexError> {
        self.call(move |i| i.complete_segment(&segment, &meta))
            .await
    }

    pub async fn remove_segment_async(&self, segment: String) -> Result<bool, IndexError> {
        self.call(move |i| i.remove_segment(&segment)).await
    }

    pub async fn remove_run_async(&self, id: String) -> Result<bool, IndexError> {
        self.call(move |i| i.remove_run(&id)).await
    }

    pub async fn has_segment_async(&self, segment: String) -> Result<bool, IndexError> {
        self.call(move |i| i.has_segment(&segment)).await
    }

    pub async fn set_applied_async(&self, revision: i64) -> Result<i64, IndexError> {
        self.call(move |i| i.set_applied(revision)).await
    }
}

async fn blocking<T, F>(f: F) -> Result<T, IndexError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, IndexError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(IndexError::Task)?
}

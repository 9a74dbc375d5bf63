//! Keeping this node's index of archived runs in line with the store: an owned,
//! cancellable task that syncs the index with the store's segment records
//! (`archive_index::sync`: a missing or deleted index is rebuilt from object storage,
//! with a progress line), then watches `rs/segment/` and syncs again at every change.
//! It publishes the store revision up to which the index holds every recorded segment
//! ([`IndexedRevision`]), which readers wait on (`History::ensure_indexed`); `None`
//! until the first sync of the process has finished, which is how a reader tells an
//! index being rebuilt (ask a peer) from one a little behind (wait).

use std::time::Duration;

use store::{KeyRange, WatchMessage, WatchRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::archive_index::{self, ArchiveIndex};
use crate::datamanager::blobs::Blobs;
use crate::datamanager::{Datamanager, keys};

/// The store revision up to which this node's index holds every recorded segment;
/// `None` until the first sync has finished.
#[derive(Clone, Debug)]
pub struct IndexedRevision {
    rx: watch::Receiver<Option<i64>>,
}

/// The follower's side of [`IndexedRevision`].
pub struct IndexPublisher(watch::Sender<Option<i64>>);

impl IndexedRevision {
    /// A revision not known yet, and the side that publishes it (given to
    /// [`IndexFollower::spawn`]).
    pub fn channel() -> (IndexPublisher, IndexedRevision) {
        let (tx, rx) = watch::channel(None);
        (IndexPublisher(tx), IndexedRevision { rx })
    }

    /// A revision that is always `at` (tests, and nodes without archived runs).
    pub fn fixed(at: Option<i64>) -> IndexedRevision {
        let (tx, rx) = watch::channel(at);
        drop(tx);
        IndexedRevision { rx }
    }

    pub fn current(&self) -> Option<i64> {
        *self.rx.borrow()
    }

    /// Resolves at the next change; never once the follower has ended.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Handle of the follower task.
pub struct IndexFollower {
    task: JoinHandle<()>,
    cancel: CancellationToken,
}

/// The pause after a failed sync or a cut watch, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl IndexFollower {
    /// Starts following, publishing through `publisher`; the task ends when `cancel`
    /// fires.
    pub fn spawn(
        index: ArchiveIndex,
        dm: Datamanager,
        blobs: Blobs,
        publisher: IndexPublisher,
        cancel: CancellationToken,
    ) -> IndexFollower {
        let tx = publisher.0;
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let span = tracing::info_span!("archive_index");
            let follow = follow(index, dm, blobs, tx);
            tokio::select! {
                _ = c.cancelled() => {}
                _ = tracing::Instrument::instrument(follow, span) => {}
            }
        });
        IndexFollower { task, cancel }
    }

    /// Stops the task and waits for it to end.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "the archive index follower panicked");
        }
    }
}

/// Syncs, publishes the revision, watches from there; starts over after a failure or a
/// cut watch. Runs until dropped.
async fn follow(
    index: ArchiveIndex,
    dm: Datamanager,
    blobs: Blobs,
    tx: watch::Sender<Option<i64>>,
) {
    // Tests hold a node's index back here, so that it stays incomplete (`None`).
    crate::crash_point::held("index-first-sync").await;
    let mut backoff = FIRST_BACKOFF;
    let mut first = true;
    loop {
        let report = match sync_once(&index, &dm, &blobs, first).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "syncing the archive index failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        first = false;
        backoff = FIRST_BACKOFF;
        if let Err(e) = index.set_applied_async(report.revision).await {
            tracing::warn!(error = %e, "recording the archive index's revision failed");
        }
        tx.send_replace(Some(report.revision));
        watch_records(&dm, &tx, report.revision).await;
    }
}

/// One sync; the first one of the process says what it did, with a progress line while
/// it indexes many segments.
async fn sync_once(
    index: &ArchiveIndex,
    dm: &Datamanager,
    blobs: &Blobs,
    first: bool,
) -> Result<archive_index::SyncReport, archive_index::SyncError> {
    let mut last_line = tokio::time::Instant::now();
    let progress = |done: usize, total: usize| {
        if done == total || last_line.elapsed() >= Duration::from_secs(5) {
            last_line = tokio::time::Instant::now();
            tracing::info!(
                done,
                total,
                "indexing archived runs: {done} of {total} segments"
            );
        }
    };
    let report = archive_index::sync(index, dm, blobs, progress).await?;
    if report.added > 0 {
        crate::crash_point::reached("segment-indexed");
    }
    if first || report.added > 0 || report.removed > 0 {
        tracing::info!(
            segments = report.recorded,
            added = report.added,
            removed = report.removed,
            revision = report.revision,
            "archive index in line with the store"
        );
    }
    Ok(report)
}

/// Watches the segment records after `from`: progress moves the published revision on;
/// a change (or the watch ending) returns, for the caller to sync again.
async fn watch_records(dm: &Datamanager, tx: &watch::Sender<Option<i64>>, from: i64) {
    let mut watch = dm.kv().watch(WatchRequest {
        range: KeyRange::prefix(keys::SEGMENT.as_bytes().to_vec()),
        start_revision: from + 1,
        prev_kv: false,
        progress_notify: true,
        filter_put: false,
        filter_delete: false,
    });
    loop {
        match watch.recv().await {
            Some(WatchMessage::Progress { revision }) => {
                tx.send_if_modified(|at| {
                    let newer = at.is_none_or(|at| revision > at);
                    if newer {
                        *at = Some(revision);
                    }
                    newer
                });
            }
            Some(WatchMessage::Events { .. }) => return,
            Some(WatchMessage::Canceled(reason)) => {
                tracing::debug!(?reason, "the segment record watch ended; syncing again");
                tokio::time::sleep(FIRST_BACKOFF).await;
                return;
            }
            None => {
                tokio::time::sleep(FIRST_BACKOFF).await;
                return;
            }
        }
    }
}

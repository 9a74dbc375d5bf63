//! The segmenter: the active scheduler's background loop (beside the scheduling loop),
//! which moves archived runs out of the store into segments in object storage and, less
//! often, deletes orphan segments and runs the housekeeping chores.
//!
//! A finished run is archived in two steps. The scheduler's pass marks it archived once
//! its logs are in object storage (`archived = true`, and the `rs/archived/<id>` marker
//! queues it here). Then, when a batch is due (`runservice::archive::segment_due`: a full
//! batch waits, or the oldest waited long enough), this loop reads the oldest waiting runs
//! with their configs and events, writes them as one segment (put-if-absent), and commits
//! the segment's record while deleting the runs' keys in one fenced transaction
//! (`Datamanager::commit_segment`). A crash between the two leaves an unrecorded segment
//! and the runs still in the store: the runs are segmented again, and the orphan object is
//! deleted once older than [`ORPHAN_AGE`]. A run that cannot be written into a segment (a
//! record over the format's cap, say) is taken off the queue and stays in the store.

use std::collections::BTreeSet;
use std::time::Duration;

use super::SchedulerTask;
use crate::datamanager::archived::{MAX_RUNS_PER_COMMIT, orphan_segments};
use crate::datamanager::segmenting::{SegmentingError, move_into_segment};
use crate::datamanager::segments::{self, SegmentLimits};
use crate::datamanager::{Datamanager, DmError};
use crate::runservice::archive::segment_due;

/// An unrecorded segment younger than this may belong to a segmenter (or an import, or a
/// retention pass) still between writing it and recording it; older, it is an orphan.
pub const ORPHAN_AGE: Duration = Duration::from_secs(600);

impl SchedulerTask {
    /// The active scheduler's background loop, beside the scheduling loop so that its
    /// slow object-storage work never holds up a hand-out: segments due runs every
    /// `segments.every`, and every `housekeeping_every` deletes orphan segments and does
    /// the housekeeping chores (compaction, expiry, retention). Runs until the scheduler
    /// stops (the caller drops this future); returns only when the lock is lost.
    pub(super) async fn background(&self, dm: &Datamanager) -> Result<(), DmError> {
        let mut tick = tokio::time::interval(self.config.segments.every);
        let mut chores = tokio::time::interval(self.config.housekeeping_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        chores.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        chores.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.segment_due_runs(dm).await?,
                _ = chores.tick() => {
                    match self.remove_orphan_segments(dm).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "orphan segments deleted"),
                        Err(e) => tracing::warn!(error = %e, "deleting orphan segments failed"),
                    }
                    self.housekeeping(dm).await;
                }
            }
        }
    }

    /// Writes segments while full batches wait (and one more when the oldest waited long
    /// enough). A failure is logged and retried at the next tick; a lost lock ends it.
    async fn segment_due_runs(&self, dm: &Datamanager) -> Result<(), DmError> {
        loop {
            match self.segment_once(dm).await {
                Ok(moved) if moved >= self.batch() => continue,
                Ok(_) => return Ok(()),
                Err(SegmentingError::Store(e @ DmError::Kv(raft::KvError::LockLost { .. }))) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "moving archived runs into a segment failed; retrying later");
                    return Ok(());
                }
            }
        }
    }

    /// The most runs one segment takes.
    fn batch(&self) -> usize {
        self.config.segments.batch.clamp(1, MAX_RUNS_PER_COMMIT)
    }

    /// Moves one batch of waiting runs into a segment if one is due. Returns how many
    /// runs left the store.
    pub(super) async fn segment_once(&self, dm: &Datamanager) -> Result<usize, SegmentingError> {
        let ids = dm.archived_run_ids(self.batch()).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        // A full batch is due as it is; a smaller one only once its oldest run waited
        // long enough, which the runs alone tell (configs and events are read only for a
        // batch that moves).
        let policy = &self.config.segments;
        let now = chrono::Utc::now();
        if ids.len() < self.batch() {
            let runs = dm.runs(&ids).await?;
            let oldest_end = runs.iter().map(|r| r.value.end_time).min().flatten();
            if !segment_due(ids.len(), oldest_end, now, policy) {
                return Ok(0);
            }
        }
        let batch = dm.archived_batch(&ids).await?;
        let limits = SegmentLimits {
            max_runs: self.batch(),
            ..SegmentLimits::default()
        };
        let moved = move_into_segment(dm, &self.blobs, batch, limits).await?;
        Ok(moved.runs())
    }

    /// Deletes the segments no store record names that are older than [`ORPHAN_AGE`].
    /// Objects are listed before the records are read, so a segment recorded meanwhile is
    /// seen recorded.
    pub(super) async fn remove_orphan_segments(
        &self,
        dm: &Datamanager,
    ) -> Result<usize, SegmentingError> {
        let stored: Vec<_> = segments::list_segments(&self.blobs)
            .await?
            .into_iter()
            .map(|s| (s.id, s.meta.last_modified))
            .collect();
        if stored.is_empty() {
            return Ok(0);
        }
        let recorded: BTreeSet<String> = dm
            .segment_records()
            .await?
            .into_iter()
            .map(|r| r.value.id)
            .collect();
        let age = chrono::Duration::from_std(ORPHAN_AGE).unwrap_or(chrono::Duration::MAX);
        let doomed = orphan_segments(&stored, &recorded, chrono::Utc::now() - age);
        for id in &doomed {
            segments::delete_segment(&self.blobs, id).await?;
            tracing::info!(segment = %id, "orphan segment deleted");
        }
        Ok(doomed.len())
    }
}

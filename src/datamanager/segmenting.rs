//! Moving archived runs out of the store into one segment in object storage: the runs
//! (as read, with configs and events: `Datamanager::archived_batch`) are written as a
//! segment (put-if-absent), then the segment is recorded and the runs' keys deleted in
//! one store transaction (`Datamanager::commit_segment`, fenced when the handle is). A
//! crash between the two leaves an unrecorded segment (an orphan, deleted later) and
//! the runs still in the store; a run changed meanwhile makes the commit fail and the
//! object is deleted at once.

use cairn_client::run::Run;

use super::segments::{self, ArchivedRun, SegmentError, SegmentLimits, SegmentMeta, SegmentWriter};
use super::{Datamanager, DmError, Versioned, blobs::Blobs};

/// Why moving runs into a segment stopped.
#[derive(Debug, thiserror::Error)]
pub enum SegmentingError {
    #[error(transparent)]
    Store(#[from] DmError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// What one move did.
#[derive(Debug, Default)]
pub struct Moved {
    /// The segment written and recorded, if any.
    pub segment: Option<SegmentMeta>,
    /// Runs the segment format refused (a record over its cap, say): taken off the
    /// queue, they stay in the store.
    pub refused: Vec<String>,
    /// A run changed meanwhile: nothing moved, the object was deleted.
    pub conflict: bool,
}

impl Moved {
    /// Runs that left the store.
    pub fn runs(&self) -> usize {
        self.segment.as_ref().map_or(0, |m| m.runs)
    }
}

/// Moves the runs of `batch` (ascending ids), as many as fit `limits`, into one new
/// segment.
pub async fn move_into_segment(
    dm: &Datamanager,
    blobs: &Blobs,
    batch: Vec<(Versioned<Run>, ArchivedRun)>,
    limits: SegmentLimits,
) -> Result<Moved, SegmentingError> {
    let mut writer = SegmentWriter::new(limits);
    let mut runs = Vec::with_capacity(batch.len());
    let mut moved = Moved::default();
    for (versioned, archived) in batch {
        match writer.add(&archived) {
            Ok(()) => runs.push(versioned),
            Err(SegmentError::Full { .. }) => break,
            Err(e) => {
                tracing::warn!(run_id = %archived.run.id, error = %e, "run cannot go into a segment; it stays in the store");
                moved.refused.push(archived.run.id.clone());
            }
        }
    }
    if !moved.refused.is_empty() {
        dm.keep_in_store(&moved.refused).await?;
    }
    if writer.is_empty() {
        return Ok(moved);
    }
    let (bytes, meta) = writer.finish()?;
    segments::put_segment(blobs, bytes, &meta).await?;
    crate::crash_point::reached("segment-written");
    match dm.commit_segment(&meta, &runs).await {
        Ok(revision) => {
            crate::crash_point::reached("segment-recorded");
            tracing::info!(segment = %meta.id, runs = meta.runs, bytes = meta.bytes, revision, "archived runs moved into a segment");
            moved.segment = Some(meta);
        }
        Err(DmError::Conflict(why)) => {
            tracing::debug!(segment = %meta.id, %why, "a run changed while segmenting; trying again later");
            if let Err(e) = segments::delete_segment(blobs, &meta.id).await {
                tracing::warn!(segment = %meta.id, error = %e, "deleting an unrecorded segment failed; it will be removed as an orphan");
            }
            moved.conflict = true;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(moved)
}

//! Bringing a node's index in line with the store: every segment the store records
//! (`rs/segment/`, [`Datamanager::segment_records`]) is indexed from its object, checked
//! against the SHA-256 the record holds, and every indexed segment the store no longer
//! records is dropped. The same pass rebuilds a deleted index from nothing and catches a
//! lagging one up; it is idempotent, so a node runs it at start and again whenever the
//! records change.

use std::collections::BTreeSet;

use super::{ArchiveIndex, IndexError, IndexedSegment, SegmentEntry};
use crate::datamanager::blobs::Blobs;
use crate::datamanager::segments::{SegmentError, SegmentMeta, SegmentReader};
use crate::datamanager::{Datamanager, DmError};

/// Why a sync pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading the segment records: {0}")]
    Records(#[from] DmError),
    #[error("reading segment {segment}: {source}")]
    Segment {
        segment: String,
        #[source]
        source: SegmentError,
    },
    #[error(
        "segment {segment} is not the one the store recorded (SHA-256 {found}, recorded {recorded})"
    )]
    Mismatch {
        segment: String,
        recorded: String,
        found: String,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What one pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Segments indexed by this pass.
    pub added: usize,
    /// Indexed segments dropped because the store no longer records them.
    pub removed: usize,
    /// Segments the store records.
    pub recorded: usize,
    /// The store revision the records were read at: the index now holds every segment
    /// recorded up to it.
    pub revision: i64,
}

/// Indexes every recorded segment the index lacks and drops the ones the store no longer
/// records. `progress(done, total)` is called after each segment indexed.
pub async fn sync(
    index: &ArchiveIndex,
    dm: &Datamanager,
    blobs: &Blobs,
    mut progress: impl FnMut(usize, usize),
) -> Result<SyncReport, SyncError> {
    let (records, revision) = dm.segment_records_at().await?;
    let (indexed, partial) = index
        .call(|index| Ok((index.segments()?, index.partial_segments()?)))
        .await?;
    let indexed: BTreeSet<String> = indexed.into_iter().map(|(id, _)| id).collect();
    let partial: BTreeSet<String> = partial.into_iter().collect();
    let recorded: BTreeSet<String> = records.iter().map(|r| r.value.id.clone()).collect();
    let missing: Vec<&SegmentMeta> = records
        .iter()
        .map(|r| &r.value)
        .filter(|m| !indexed.contains(&m.id))
        .collect();
    let mut report = SyncReport {
        recorded: records.len(),
        revision,
        ..SyncReport::default()
    };
    for (done, meta) in missing.iter().enumerate() {
        index_segment(index, blobs, meta).await?;
        report.added += 1;
        progress(done + 1, missing.len());
    }
    for gone in indexed.union(&partial).filter(|s| !recorded.contains(*s)) {
        if index.remove_segment_async(gone.clone()).await? {
            report.removed += 1;
        }
    }
    Ok(report)
}

/// Runs indexed per write transaction while a segment is read: what bounds the memory
/// of indexing (decoded runs and the transaction's dirty pages), whatever the segment's
/// size.
pub const INDEX_BATCH: usize = 500;

/// Streams segment `meta`, indexing its runs [`INDEX_BATCH`] at a time, then records it
/// once the whole object is read and is the recorded one. An object that is not (another
/// SHA-256) is unindexed again and refused.
async fn index_segment(
    index: &ArchiveIndex,
    blobs: &Blobs,
    meta: &SegmentMeta,
) -> Result<(), SyncError> {
    let segment_error = |source| SyncError::Segment {
        segment: meta.id.clone(),
        source,
    };
    let mut reader = SegmentReader::open(blobs, &meta.key)
        .await
        .map_err(segment_error)?;
    let indexed = IndexedSegment {
        runs: u32::try_from(reader.footer().runs.len()).unwrap_or(u32::MAX),
        bytes: meta.bytes,
        sha256: meta.sha256.clone(),
    };
    if !index
        .begin_segment_async(meta.id.clone(), indexed.clone())
        .await?
    {
        return Ok(());
    }
    loop {
        let batch = reader
            .next_batch(INDEX_BATCH)
            .await
            .map_err(segment_error)?;
        if batch.is_empty() {
            break;
        }
        let entries: Vec<SegmentEntry> = batch
            .into_iter()
            .map(|(entry, archived)| SegmentEntry {
                run: archived.run,
                offset: entry.offset,
                len: entry.len,
                events: archived.events,
            })
            .collect();
        index
            .add_segment_runs_async(meta.id.clone(), entries)
            .await?;
    }
    let sha256 = reader.finish().await.map_err(segment_error)?;
    if sha256 != meta.sha256 {
        index.remove_segment_async(meta.id.clone()).await?;
        return Err(SyncError::Mismatch {
            segment: meta.id.clone(),
            recorded: meta.sha256.clone(),
            found: sha256,
        });
    }
    index
        .complete_segment_async(meta.id.clone(), indexed)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use cairn_client::api::ListRunsQuery;
    use cairn_client::run::{Run, RunPhase};
    use cairn_client::runconfig::RunConfig;

    use super::*;
    use crate::datamanager::Versioned;
    use crate::datamanager::keys;
    use crate::datamanager::segments::{self, ArchivedRun, SegmentLimits, SegmentWriter};
    use crate::datamanager::testing::{self, TestStore};

    const GROUP: &str = "/project/a/branch/main";

    /// A finished run in the store, with its config.
    async fn finished(dm: &Datamanager) -> (Versioned<Run>, RunConfig) {
        testing::finished_run(dm, GROUP).await
    }

    /// Archives `n` new finished runs as one segment, as the archiver will; their ids.
    async fn archive(dm: &Datamanager, blobs: &Blobs, n: usize) -> (SegmentMeta, Vec<String>) {
        let mut writer = SegmentWriter::new(SegmentLimits::default());
        let mut runs = Vec::new();
        for _ in 0..n {
            let (run, config) = finished(dm).await;
            writer
                .add(&ArchivedRun {
                    run: run.value.clone(),
                    config,
                    events: Vec::new(),
                })
                .expect("fits");
            runs.push(run);
        }
        let (bytes, meta) = writer.finish().expect("finished");
        segments::put_segment(blobs, bytes, &meta)
            .await
            .expect("stored");
        dm.commit_segment(&meta, &runs).await.expect("recorded");
        (meta, runs.into_iter().map(|r| r.value.id).collect())
    }

    fn file_blobs() -> (Blobs, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        (Blobs::open(&url).expect("file store"), dir)
    }

    async fn listed(index: &ArchiveIndex) -> Vec<String> {
        let q = ListRunsQuery {
            group: Some(GROUP.to_string()),
            ..ListRunsQuery::default()
        };
        let page = index.list_async(q).await.expect("listing");
        page.runs.into_iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn a_sync_indexes_recorded_segments_once_and_a_deleted_index_is_rebuilt_the_same() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let (blobs, _objects) = file_blobs();
        let (first, mut ids) = archive(&dm, &blobs, 3).await;
        let (_, more) = archive(&dm, &blobs, 2).await;
        ids.extend(more);
        ids.reverse(); // newest first, as listings are

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive-index.redb");
        let index = ArchiveIndex::open_async(path.clone()).await.expect("open");
        let mut seen = Vec::new();
        let report = sync(&index, &dm, &blobs, |done, total| seen.push((done, total)))
            .await
            .expect("synced");
        assert_eq!(
            report,
            SyncReport {
                added: 2,
                removed: 0,
                recorded: 2,
                revision: report.revision,
            }
        );
        assert_eq!(seen, vec![(1, 2), (2, 2)]);
        assert_eq!(listed(&index).await, ids);
        let one = index
            .get_async(ids[4].clone())
            .await
            .expect("read")
            .expect("indexed");
        assert_eq!(one.segment, first.id);
        assert_eq!(one.run.phase, RunPhase::Finished);

        // Nothing new: nothing done.
        let again = sync(&index, &dm, &blobs, |_, _| {}).await.expect("synced");
        assert_eq!(again.added, 0);

        // Deleted: rebuilt, answering the same.
        drop(index);
        std::fs::remove_file(&path).expect("deleted");
        let index = ArchiveIndex::open_async(path).await.expect("reopen");
        let rebuilt = sync(&index, &dm, &blobs, |_, _| {}).await.expect("rebuilt");
        assert_eq!(rebuilt.added, 2);
        assert_eq!(listed(&index).await, ids);
    }

    #[tokio::test]
    async fn a_segment_that_is_not_the_recorded_one_is_refused_and_a_dropped_record_unindexed() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let (blobs, _objects) = file_blobs();
        let (meta, _) = archive(&dm, &blobs, 2).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let index = ArchiveIndex::open_async(dir.path().join("index.redb"))
            .await
            .expect("open");
        sync(&index, &dm, &blobs, |_, _| {}).await.expect("synced");

        // The store no longer records it (retention, compaction): the index drops it.
        st.node
            .kv()
            .delete_range(store::DeleteRangeRequest {
                range: store::KeyRange::key(keys::segment(&meta.id).into_bytes()),
                prev_kv: false,
            })
            .await
            .expect("deleted");
        let report = sync(&index, &dm, &blobs, |_, _| {}).await.expect("synced");
        assert_eq!(report.removed, 1);
        assert!(listed(&index).await.is_empty());

        // A record whose object differs (another writer's bytes, a damaged copy).
        let (_, runs) = {
            let (run, config) = finished(&dm).await;
            let mut writer = SegmentWriter::new(SegmentLimits::default());
            writer
                .add(&ArchivedRun {
                    run: run.value.clone(),
                    config,
                    events: Vec::new(),
                })
                .expect("fits");
            let (bytes, meta) = writer.finish().expect("finished");
            segments::put_segment(&blobs, bytes, &meta)
                .await
                .expect("stored");
            let mut wrong = meta.clone();
            wrong.sha256 = "00".repeat(32);
            dm.commit_segment(&wrong, std::slice::from_ref(&run))
                .await
                .expect("recorded");
            (wrong, vec![run])
        };
        let err = sync(&index, &dm, &blobs, |_, _| {})
            .await
            .expect_err("the object is not the recorded one");
        assert!(matches!(err, SyncError::Mismatch { .. }), "{err}");
        assert!(
            index
                .get_async(runs[0].value.id.clone())
                .await
                .expect("read")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_segment_left_partial_by_a_crash_is_indexed_again_and_an_unrecorded_one_dropped() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let (blobs, _objects) = file_blobs();
        let (meta, mut ids) = archive(&dm, &blobs, 4).await;
        ids.reverse();
        let dir = tempfile::tempdir().expect("tempdir");
        let index = ArchiveIndex::open_async(dir.path().join("index.redb"))
            .await
            .expect("open");
        // What a crash after the first batch leaves: the segment partial, one run in.
        let indexed = IndexedSegment {
            runs: 4,
            bytes: meta.bytes,
            sha256: meta.sha256.clone(),
        };
        assert!(index.begin_segment(&meta.id, &indexed).expect("begin"));
        let first = ids[3].clone(); // the oldest: the segment's first run
        let (decoded, _) = crate::datamanager::segments::read_segment(&blobs, &meta.key)
            .await
            .expect("read");
        let one = SegmentEntry {
            run: decoded.runs[0].run.clone(),
            offset: decoded.footer.runs[0].offset,
            len: decoded.footer.runs[0].len,
            events: Vec::new(),
        };
        assert_eq!(one.run.id, first);
        index
            .add_segment_runs(&meta.id, vec![one])
            .expect("first batch");
        // And a partial segment the store never recorded (its record rolled back).
        assert!(
            index
                .begin_segment("0000000000000900-0000000000000900-00000000", &indexed)
                .expect("begin")
        );

        let report = sync(&index, &dm, &blobs, |_, _| {}).await.expect("synced");
        assert_eq!((report.added, report.removed), (1, 1));
        assert!(index.partial_segments().expect("partial").is_empty());
        assert!(index.has_segment(&meta.id).expect("has"));
        assert_eq!(listed(&index).await, ids);
    }
}

//! The retention pass of the active scheduler: deletes the archived runs that are past
//! their group's limits ([`crate::runservice::retention`] decides which), with their logs
//! and workspace archives, by compacting the segments that hold them.
//!
//! One segment at a time: its kept runs are written into a new segment (same creation
//! time, so their age does not restart), then one fenced store transaction deletes the old
//! record and puts the new one — only if the old record is unchanged — and deletes a
//! group's `rs/last/<group>` pointer when it names a deleted run; then the old object is
//! deleted. A segment left with no run is only unrecorded and deleted. A crash leaves at
//! worst an unrecorded object (the new one before the swap, the old one after), which
//! housekeeping's orphan deletion removes ([`crate::datamanager::archived::orphan_segments`]);
//! a reader following the records sees every kept run exactly once at every point.
//!
//! Logs and workspace archives are keyed by task id, and a restarted run keeps the ids
//! (and so the logs and archives) of the tasks it did not re-run. After the swaps, the
//! tasks of the deleted runs that a remaining run of the same group uses — older or
//! newer, archived or still in the store — are kept; the others' logs and archives are
//! deleted. Finding them reads every remaining run of the groups that lost runs (ranged
//! reads, or whole segments when many): the cost of a pass that deletes something grows
//! with those groups' kept history. A crash between the swap and this step leaves those
//! objects behind (workspace archives still expire by age). A restart of a run being
//! deleted that read the run before its swap and commits after this step can lose its
//! kept tasks' logs: the window is one request's, on a run past its retention.
//!
//! Work is bounded: at most [`MAX_COMPACTIONS_PER_PASS`] segments per pass, one footer
//! in memory at a time plus, with count limits, the newest N ids of each limited group.

use std::collections::{BTreeMap, BTreeSet};

use cairn_client::api::ListRunsQuery;
use cairn_client::run::{Run, Time};
use raft::Write;

use super::SchedulerTask;
use crate::datamanager::archives::ArchiveStore;
use crate::datamanager::blobs::{BlobError, Blobs};
use crate::datamanager::logs::{LogError, LogStore};
use crate::datamanager::segments::{
    self, ArchivedRun, FooterEntry, SegmentError, SegmentFooter, SegmentLimits, SegmentMeta,
    SegmentWriter,
};
use crate::datamanager::{Datamanager, DmError, Versioned, delete, encode, keys, put};
use crate::runservice::retention::{
    self as policy, NewestRuns, RetentionPolicy, TasksInUse, doomed_in_segment,
};

/// Most segments one pass compacts; later passes go on.
pub const MAX_COMPACTIONS_PER_PASS: usize = 4;
/// Runs of one segment read one by one (ranged reads) when looking for tasks a kept run
/// uses; with more, the whole segment is read once.
const RANGED_READS: usize = 32;
/// The page size of store listings.
const PAGE: usize = 200;

/// Why a retention pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum RetentionFailure {
    #[error(transparent)]
    Dm(#[from] DmError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("segment {id} does not match its record: {what}")]
    NotAsRecorded { id: String, what: &'static str },
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Runs deleted from segments.
    pub runs_deleted: usize,
    /// Segments replaced by a smaller one.
    pub segments_rewritten: usize,
    /// Segments removed, all their runs deleted.
    pub segments_removed: usize,
    /// Tasks whose logs and workspace archives were deleted.
    pub tasks_deleted: usize,
    /// Tasks of deleted runs kept because a remaining run uses them.
    pub tasks_kept: usize,
}

/// One segment to compact: its record, and the runs of it to delete.
struct Compaction {
    record: Versioned<SegmentMeta>,
    footer: SegmentFooter,
    doomed: BTreeSet<String>,
}

/// The compacted segment, written but not recorded yet.
pub struct Rewritten {
    /// The new segment, `None` when no run is kept.
    pub meta: Option<SegmentMeta>,
    /// The runs deleted (not in the new segment).
    pub deleted: Vec<ArchivedRun>,
}

/// A retention pass over one store and object storage.
pub struct Retention<'a> {
    /// The scheduler's fenced datamanager.
    pub dm: &'a Datamanager,
    pub blobs: &'a Blobs,
    pub logs: &'a LogStore,
    pub policy: &'a RetentionPolicy,
}

impl Retention<'_> {
    /// Deletes the runs past the policy at `now`, up to [`MAX_COMPACTIONS_PER_PASS`]
    /// segments of them. A segment that cannot be compacted is logged and left.
    pub async fn run(&self, now: Time) -> Result<RetentionReport, RetentionFailure> {
        let mut report = RetentionReport::default();
        if self.policy.keeps_everything() {
            return Ok(report);
        }
        let records = self.dm.segment_records().await?;
        let cutoffs = self.count_cutoffs(&records).await?;
        let plan = self.plan(&records, &cutoffs, now).await?;
        let mut deleted: Vec<Run> = Vec::new();
        for c in plan {
            let id = c.record.value.id.clone();
            match self.compact(&c).await {
                Ok(Some(rewritten)) => {
                    report.runs_deleted += rewritten.deleted.len();
                    match rewritten.meta {
                        Some(_) => report.segments_rewritten += 1,
                        None => report.segments_removed += 1,
                    }
                    deleted.extend(rewritten.deleted.into_iter().map(|a| a.run));
                }
                Ok(None) => {
                    tracing::debug!(segment = %id, "segment not compacted: changed, or nothing to delete")
                }
                Err(e) => tracing::warn!(segment = %id, error = %e, "compacting a segment failed"),
            }
        }
        if !deleted.is_empty() {
            self.delete_unreferenced_tasks(&deleted, &mut report)
                .await?;
        }
        Ok(report)
    }

    /// With count limits: for each limited group with more archived runs than it keeps,
    /// the oldest run id it keeps. A segment whose footer is corrupt is skipped (its runs
    /// are then neither counted nor deleted, which only keeps more).
    async fn count_cutoffs(
        &self,
        records: &[Versioned<SegmentMeta>],
    ) -> Result<BTreeMap<String, String>, RetentionFailure> {
        let mut newest = NewestRuns::default();
        if !self.policy.counts_runs() {
            return Ok(newest.cutoffs());
        }
        for record in records {
            if let Some(footer) = self.footer(&record.value).await? {
                newest.observe(self.policy, &footer);
            }
        }
        Ok(newest.cutoffs())
    }

    /// The segments to compact this pass, oldest first.
    async fn plan(
        &self,
        records: &[Versioned<SegmentMeta>],
        cutoffs: &BTreeMap<String, String>,
        now: Time,
    ) -> Result<Vec<Compaction>, RetentionFailure> {
        // Without count limits, a segment newer than the shortest age limit holds no run
        // past any limit: its footer is not even read.
        let age_only_floor = match (self.policy.counts_runs(), self.policy.shortest_keep_for()) {
            (false, Some(d)) => chrono::Duration::from_std(d).ok().map(|d| now - d),
            _ => None,
        };
        let candidates = records
            .iter()
            .filter(|r| age_only_floor.is_none_or(|floor| r.value.created < floor));
        let mut plan = Vec::new();
        for record in candidates {
            let Some(footer) = self.footer(&record.value).await? else {
                continue;
            };
            let doomed: BTreeSet<String> = doomed_in_segment(self.policy, cutoffs, &footer, now)
                .into_iter()
                .map(|e| e.id.clone())
                .collect();
            if !doomed.is_empty() {
                plan.push(Compaction {
                    record: record.clone(),
                    footer,
                    doomed,
                });
                if plan.len() == MAX_COMPACTIONS_PER_PASS {
                    break;
                }
            }
        }
        Ok(plan)
    }

    /// The footer of a recorded segment; `None` (logged) when the object is not a valid
    /// segment or not the one recorded. Object-store failures are errors.
    async fn footer(&self, meta: &SegmentMeta) -> Result<Option<SegmentFooter>, RetentionFailure> {
        match segments::read_footer(self.blobs, &meta.key).await {
            Ok(f) if f.segment_id == meta.id && f.runs.len() == meta.runs => Ok(Some(f)),
            Ok(_) => {
                tracing::error!(segment = %meta.id, "segment footer does not match its record; skipped by retention");
                Ok(None)
            }
            Err(e) if e.is_corrupt() => {
                tracing::error!(segment = %meta.id, error = %e, "corrupt segment; skipped by retention");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Compacts one segment: new object, record swap, old object deleted. `None` when
    /// the record changed meanwhile (nothing done; the new object, if any, deleted) or
    /// no run is left to delete.
    async fn compact(&self, c: &Compaction) -> Result<Option<Rewritten>, RetentionFailure> {
        let old = &c.record.value;
        let (decoded, sha256) = segments::read_segment(self.blobs, &old.key).await?;
        if sha256 != old.sha256 || decoded.footer.segment_id != old.id {
            return Err(RetentionFailure::NotAsRecorded {
                id: old.id.clone(),
                what: "its SHA-256 or id",
            });
        }
        let doomed = self.not_in_store(&c.doomed).await?;
        if doomed.is_empty() {
            return Ok(None);
        }
        let rewritten = self
            .write_compacted(c.footer.created, decoded.runs, &doomed)
            .await?;
        if !self.swap(&c.record, &rewritten).await? {
            if let Some(new) = &rewritten.meta {
                segments::delete_segment(self.blobs, &new.id).await?;
            }
            return Ok(None);
        }
        if let Err(e) = segments::delete_segment(self.blobs, &old.id).await {
            tracing::warn!(segment = %old.id, error = %e, "deleting a compacted segment failed; housekeeping removes the orphan");
        }
        Ok(Some(rewritten))
    }

    /// The doomed runs that the store does not hold: a run found there (which the
    /// archiving transaction never allows) is kept, with an error log.
    async fn not_in_store(&self, doomed: &BTreeSet<String>) -> Result<BTreeSet<String>, DmError> {
        let ids: Vec<String> = doomed.iter().cloned().collect();
        let in_store: BTreeSet<String> = self
            .dm
            .runs(&ids)
            .await?
            .into_iter()
            .map(|r| r.value.id)
            .collect();
        for id in &in_store {
            tracing::error!(run_id = %id, "an archived run is also in the store; kept by retention");
        }
        Ok(doomed.difference(&in_store).cloned().collect())
    }

    /// Step one of a compaction: the segment's runs but `doomed` written into a new
    /// segment object (created at `created`, the old segment's time), not recorded yet.
    pub async fn write_compacted(
        &self,
        created: Time,
        runs: Vec<ArchivedRun>,
        doomed: &BTreeSet<String>,
    ) -> Result<Rewritten, RetentionFailure> {
        let (deleted, kept): (Vec<ArchivedRun>, Vec<ArchivedRun>) =
            runs.into_iter().partition(|a| doomed.contains(&a.run.id));
        if kept.is_empty() {
            return Ok(Rewritten {
                meta: None,
                deleted,
            });
        }
        let mut writer = SegmentWriter::new(SegmentLimits {
            max_runs: kept.len(),
            max_bytes: u64::MAX,
        });
        for run in &kept {
            writer.add(run)?;
        }
        let (bytes, meta) = writer.finish_with(created, rand::random())?;
        segments::put_segment(self.blobs, bytes, &meta).await?;
        Ok(Rewritten {
            meta: Some(meta),
            deleted,
        })
    }

    /// Step two: in one fenced transaction, only if the old record is unchanged, its
    /// record replaced by the new one's (or just deleted), and the `rs/last/<group>`
    /// pointers that name a deleted run deleted. False when the old record changed.
    pub async fn swap(
        &self,
        old: &Versioned<SegmentMeta>,
        new: &Rewritten,
    ) -> Result<bool, DmError> {
        let deleted: BTreeSet<&str> = new.deleted.iter().map(|a| a.run.id.as_str()).collect();
        let groups: BTreeSet<&str> = new.deleted.iter().map(|a| a.run.group.as_str()).collect();
        let mut watched = vec![keys::segment(&old.value.id)];
        if let Some(meta) = &new.meta {
            watched.push(keys::segment(&meta.id));
        }
        let lasts: Vec<String> = groups.iter().map(|g| keys::last(g)).collect();
        watched.extend(lasts.iter().cloned());
        let swapped = self
            .dm
            .update_keys("compacting a segment", watched, |current| {
                let old_there = current[0]
                    .as_ref()
                    .is_some_and(|kv| kv.mod_revision == old.mod_revision);
                let new_free = new.meta.is_none() || current[1].is_none();
                if !old_there || !new_free {
                    return Ok::<_, DmError>(None);
                }
                let mut ops = vec![delete(keys::segment(&old.value.id))];
                if let Some(meta) = &new.meta {
                    ops.push(put(keys::segment(&meta.id), encode(meta)));
                }
                let pointers = &current[current.len() - lasts.len()..];
                for (key, kv) in lasts.iter().zip(pointers) {
                    let names_deleted = kv
                        .as_ref()
                        .and_then(|kv| std::str::from_utf8(&kv.value).ok())
                        .is_some_and(|id| deleted.contains(id));
                    if names_deleted {
                        ops.push(delete(key.clone()));
                    }
                }
                Ok(Some((Write::ops(ops), ())))
            })
            .await?;
        Ok(swapped.is_some())
    }

    /// Deletes the logs and workspace archives of the `deleted` runs' tasks that no
    /// remaining run uses.
    async fn delete_unreferenced_tasks(
        &self,
        deleted: &[Run],
        report: &mut RetentionReport,
    ) -> Result<(), RetentionFailure> {
        let groups: BTreeSet<&str> = deleted.iter().map(|r| r.group.as_str()).collect();
        let in_use = self.tasks_in_use(&groups).await?;
        let (gone, kept) = in_use.split(deleted);
        report.tasks_kept += kept.len();
        let archives = ArchiveStore::new(self.blobs.clone());
        for task in &gone {
            let logs = self.logs.delete_task_logs(task).await;
            let tars = archives.delete_task(task).await;
            match (logs, tars) {
                (Ok(_), Ok(_)) => report.tasks_deleted += 1,
                (Err(e), _) => {
                    tracing::warn!(task_id = %task, error = %e, "deleting a task's logs failed")
                }
                (_, Err(e)) => tracing::warn!(
                    task_id = %task, error = %e, "deleting a task's workspace archives failed"
                ),
            }
        }
        Ok(())
    }

    /// The tasks every remaining run of `groups` uses, archived (read after the swaps)
    /// or in the store: a run restarted from another shares its kept tasks, older or
    /// newer, and only runs of the same group are restarts of each other.
    async fn tasks_in_use(&self, groups: &BTreeSet<&str>) -> Result<TasksInUse, RetentionFailure> {
        let mut in_use = TasksInUse::default();
        for record in self.dm.segment_records().await? {
            let Some(footer) = self.footer(&record.value).await? else {
                continue;
            };
            let members: Vec<&FooterEntry> = footer
                .runs
                .iter()
                .filter(|e| groups.contains(e.group.as_str()))
                .collect();
            for run in self.read_runs(&record.value, &members).await? {
                in_use.observe(&run);
            }
        }
        for group in groups {
            self.store_runs(group, &mut in_use).await?;
        }
        Ok(in_use)
    }

    /// The runs of `entries` in segment `meta`: by ranged reads when few, else the whole
    /// segment once.
    async fn read_runs(
        &self,
        meta: &SegmentMeta,
        entries: &[&FooterEntry],
    ) -> Result<Vec<Run>, RetentionFailure> {
        if entries.len() > RANGED_READS {
            let wanted: BTreeSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let (decoded, _) = segments::read_segment(self.blobs, &meta.key).await?;
            return Ok(decoded
                .runs
                .into_iter()
                .map(|a| a.run)
                .filter(|r| wanted.contains(r.id.as_str()))
                .collect());
        }
        let mut runs = Vec::with_capacity(entries.len());
        for entry in entries {
            runs.push(segments::read_run(self.blobs, &meta.key, entry).await?.run);
        }
        Ok(runs)
    }

    /// Every run of `group` in the store, observed.
    async fn store_runs(&self, group: &str, in_use: &mut TasksInUse) -> Result<(), DmError> {
        let mut cursor = None;
        loop {
            let page = self
                .dm
                .list_runs(&ListRunsQuery {
                    group: Some(group.to_string()),
                    cursor,
                    limit: Some(PAGE),
                    ..ListRunsQuery::default()
                })
                .await?;
            for run in page.runs.iter().filter(|r| r.group == group) {
                in_use.observe(run);
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }
}

impl SchedulerTask {
    /// The retention pass, when one is due (once per `retention_every`); logs its outcome.
    pub(super) async fn retention(&self, dm: &Datamanager) {
        let now = chrono::Utc::now();
        let config = &self.config;
        if config.retention.keeps_everything()
            || !policy::due(now, config.retention_every, config.housekeeping_every)
        {
            return;
        }
        let pass = Retention {
            dm,
            blobs: &self.blobs,
            logs: &self.logs,
            policy: &config.retention,
        };
        match pass.run(now).await {
            Ok(r) if r.runs_deleted > 0 => tracing::info!(
                runs = r.runs_deleted,
                segments_rewritten = r.segments_rewritten,
                segments_removed = r.segments_removed,
                tasks_deleted = r.tasks_deleted,
                tasks_kept = r.tasks_kept,
                "runs past retention deleted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use cairn_client::LogStep;
    use cairn_client::run::RunTask;
    use cairn_client::runconfig::RunConfig;
    use chrono::Utc;
    use store::PutRequest;

    use super::*;
    use crate::datamanager::archived::orphan_segments;
    use crate::datamanager::logs::LogId;
    use crate::datamanager::testing::{self, TestStore};
    use crate::runservice::retention::Limits;

    const A: &str = "/project/a/branch/main";
    const B: &str = "/project/b/branch/main";
    const C: &str = "/project/c/branch/main";

    struct Fixture {
        st: TestStore,
        dm: Datamanager,
        blobs: Blobs,
        logs: LogStore,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let st = TestStore::start().await;
            let dm = st.dm();
            let blobs = Blobs::open("memory:").expect("memory store");
            let logs = LogStore::new(blobs.clone());
            Fixture {
                st,
                dm,
                blobs,
                logs,
            }
        }

        /// A finished run of `group` with tasks `tasks`, each with a step log and a
        /// workspace archive in object storage.
        async fn run(&self, group: &str, tasks: &[&str]) -> (Versioned<Run>, RunConfig) {
            let (v, config) = testing::finished_run(&self.dm, group).await;
            let mut run = v.value.clone();
            run.tasks = tasks
                .iter()
                .map(|t| {
                    let task = RunTask {
                        id: t.to_string(),
                        ..RunTask::default()
                    };
                    (t.to_string(), task)
                })
                .collect();
            let rev = self.dm.update_run(&v, &run).await.expect("tasks set");
            for t in tasks {
                let id = LogId::new(*t, LogStep::Step(0));
                // A task shared by a restart already has its log.
                if self.logs.len(&id).await.expect("len") == 0 {
                    self.logs
                        .append(&id, 0, Bytes::from_static(b"log"))
                        .await
                        .expect("log");
                }
                let tar =
                    futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"tar"))]);
                ArchiveStore::new(self.blobs.clone())
                    .put(t, 0, tar)
                    .await
                    .expect("archive");
            }
            let run = Versioned {
                value: run,
                mod_revision: rev,
            };
            (run, config)
        }

        /// `runs` archived into one segment created at `created`, as the archiver does.
        async fn archive(
            &self,
            runs: &[&(Versioned<Run>, RunConfig)],
            created: Time,
        ) -> SegmentMeta {
            let mut writer = SegmentWriter::new(SegmentLimits::default());
            for (run, config) in runs {
                let archived = ArchivedRun {
                    run: run.value.clone(),
                    config: config.clone(),
                    events: vec![],
                };
                writer.add(&archived).expect("added");
            }
            let (bytes, meta) = writer
                .finish_with(created, rand::random())
                .expect("finished");
            segments::put_segment(&self.blobs, bytes, &meta)
                .await
                .expect("stored");
            let versioned: Vec<Versioned<Run>> = runs.iter().map(|(r, _)| r.clone()).collect();
            self.dm
                .commit_segment(&meta, &versioned)
                .await
                .expect("committed");
            meta
        }

        fn retention<'a>(&'a self, policy: &'a RetentionPolicy) -> Retention<'a> {
            Retention {
                dm: &self.dm,
                blobs: &self.blobs,
                logs: &self.logs,
                policy,
            }
        }

        /// The run ids a reader following the store's records finds, each run read back
        /// from its record (duplicates kept, sorted).
        async fn archived_ids(&self) -> Vec<String> {
            let mut ids = Vec::new();
            for record in self.dm.segment_records().await.expect("records") {
                let key = &record.value.key;
                let footer = segments::read_footer(&self.blobs, key)
                    .await
                    .expect("footer");
                for entry in &footer.runs {
                    let run = segments::read_run(&self.blobs, key, entry)
                        .await
                        .expect("run");
                    ids.push(run.run.id);
                }
            }
            ids.sort();
            ids
        }

        async fn has_log(&self, task: &str) -> bool {
            self.logs
                .len(&LogId::new(task, LogStep::Step(0)))
                .await
                .expect("len")
                > 0
        }

        async fn has_archive(&self, task: &str) -> bool {
            ArchiveStore::new(self.blobs.clone())
                .get(task, 0)
                .await
                .expect("get")
                .is_some()
        }

        async fn last(&self, group: &str) -> Option<String> {
            let kv = self
                .st
                .node
                .kv()
                .get(keys::last(group).into_bytes())
                .await
                .expect("read")?;
            Some(String::from_utf8(kv.value).expect("utf-8"))
        }
    }

    fn keep(keep_for: Option<Duration>, keep_runs: Option<usize>) -> RetentionPolicy {
        RetentionPolicy::new(
            Limits {
                keep_for,
                keep_runs,
            },
            vec![],
        )
        .expect("policy")
    }

    fn ids(runs: &[&(Versioned<Run>, RunConfig)]) -> Vec<String> {
        let mut ids: Vec<String> = runs.iter().map(|(r, _)| r.value.id.clone()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn keep_runs_deletes_the_older_runs_with_their_logs_and_archives_but_shared_tasks() {
        let f = Fixture::new().await;
        let a1 = f.run(A, &["a1-build"]).await;
        let a2 = f.run(A, &["a2-build", "a2-test"]).await;
        let b1 = f.run(B, &["b1-build"]).await;
        let a3 = f.run(A, &["a3-build"]).await;
        let b2 = f.run(B, &["b2-build"]).await;
        // A restart of a2 from its failed task: a2-build kept, a2-test re-run.
        let a4 = f.run(A, &["a2-build", "a4-test"]).await;
        let a5 = f.run(A, &["a5-build"]).await;
        let now = Utc::now();
        let first = f.archive(&[&a1, &a2, &b1], now).await;
        let second = f.archive(&[&a3, &b2, &a4, &a5], now).await;

        let policy = keep(None, Some(2));
        let report = f.retention(&policy).run(now).await.expect("pass");

        assert_eq!(report.runs_deleted, 3);
        assert_eq!(report.segments_rewritten, 2);
        assert_eq!(report.segments_removed, 0);
        assert_eq!(f.archived_ids().await, ids(&[&b1, &b2, &a4, &a5]));
        for gone in ["a1-build", "a2-test", "a3-build"] {
            assert!(!f.has_log(gone).await, "{gone}'s log is deleted");
            assert!(!f.has_archive(gone).await, "{gone}'s archive is deleted");
        }
        for kept in ["a2-build", "a4-test", "a5-build", "b1-build", "b2-build"] {
            assert!(f.has_log(kept).await, "{kept}'s log is kept");
            assert!(f.has_archive(kept).await, "{kept}'s archive is kept");
        }
        assert_eq!(report.tasks_deleted, 3);
        assert_eq!(report.tasks_kept, 1);
        // The compacted segments' objects are gone: only recorded segments remain.
        let stored: BTreeSet<String> = segments::list_segments(&f.blobs)
            .await
            .expect("list")
            .into_iter()
            .map(|s| s.id)
            .collect();
        let recorded: BTreeSet<String> =
            f.dm.segment_records()
                .await
                .expect("records")
                .into_iter()
                .map(|r| r.value.id)
                .collect();
        assert_eq!(stored, recorded);
        assert!(!recorded.contains(&first.id) && !recorded.contains(&second.id));
        // The rewritten segments keep their creation time, so ages do not restart.
        for record in f.dm.segment_records().await.expect("records") {
            assert_eq!(record.value.created, now);
        }
        assert_eq!(f.last(A).await, Some(a5.0.value.id.clone()));

        // A second pass finds nothing more to delete.
        let again = f.retention(&policy).run(now).await.expect("pass");
        assert_eq!(again, RetentionReport::default());
    }

    #[tokio::test]
    async fn keep_runs_for_removes_a_segment_left_empty_and_the_pointer_to_a_deleted_run() {
        let f = Fixture::new().await;
        let c1 = f.run(C, &["c1-build"]).await;
        let a1 = f.run(A, &["a1-build"]).await;
        let a2 = f.run(A, &["a2-build"]).await;
        // A live run of A, never archived: it is neither deleted nor counted.
        let live = f.run(A, &["live-build"]).await;
        let now = Utc::now();
        let old = f
            .archive(&[&c1, &a1], now - chrono::Duration::days(3))
            .await;
        f.archive(&[&a2], now - chrono::Duration::hours(1)).await;

        let policy = keep(Some(Duration::from_secs(86_400)), None);
        let report = f.retention(&policy).run(now).await.expect("pass");

        assert_eq!(report.runs_deleted, 2);
        assert_eq!(report.segments_removed, 1);
        assert_eq!(f.archived_ids().await, ids(&[&a2]));
        assert_eq!(f.dm.segment_record(&old.id).await.expect("read"), None);
        assert!(
            f.blobs.head(&old.key).await.expect("head").is_none(),
            "the emptied segment's object is deleted"
        );
        // c1 was the newest run of C: the pointer to it goes; A's names the live run.
        assert_eq!(f.last(C).await, None);
        assert_eq!(f.last(A).await, Some(live.0.value.id.clone()));
        assert_eq!(
            f.dm.run(&live.0.value.id)
                .await
                .expect("live run kept")
                .value,
            live.0.value
        );
        assert!(f.has_log("live-build").await && f.has_log("a2-build").await);
        assert!(!f.has_log("c1-build").await && !f.has_log("a1-build").await);
    }

    #[tokio::test]
    async fn a_run_also_found_in_the_store_is_never_deleted() {
        let f = Fixture::new().await;
        let a1 = f.run(A, &["a1-build"]).await;
        let a2 = f.run(A, &["a2-build"]).await;
        let now = Utc::now();
        f.archive(&[&a1, &a2], now).await;
        // An impossible state: a1's key back in the store.
        let put = PutRequest::new(
            keys::run(&a1.0.value.id).into_bytes(),
            crate::datamanager::encode(&a1.0.value),
        );
        f.st.node.kv().put(put).await.expect("put");

        let policy = keep(None, Some(1));
        let report = f.retention(&policy).run(now).await.expect("pass");

        // a1 is past the count but in the store: kept; there is nothing else to delete.
        assert_eq!(report.runs_deleted, 0);
        assert_eq!(f.archived_ids().await, ids(&[&a1, &a2]));
        assert!(f.has_log("a1-build").await);
    }

    #[tokio::test]
    async fn a_crash_before_the_record_swap_leaves_every_kept_run_readable_exactly_once() {
        let f = Fixture::new().await;
        let a1 = f.run(A, &["a1-build"]).await;
        let a2 = f.run(A, &["a2-build"]).await;
        let a3 = f.run(A, &["a3-build"]).await;
        let now = Utc::now();
        let meta = f.archive(&[&a1, &a2, &a3], now).await;
        let policy = keep(None, Some(2));
        let pass = f.retention(&policy);

        // Step one only: the compacted segment is written, then the scheduler dies.
        let (decoded, _) = segments::read_segment(&f.blobs, &meta.key)
            .await
            .expect("read");
        let doomed = BTreeSet::from([a1.0.value.id.clone()]);
        let written = pass
            .write_compacted(now, decoded.runs, &doomed)
            .await
            .expect("written");
        let orphan = written.meta.as_ref().expect("runs kept").clone();

        // Readers follow the records: the old segment, every run once (a1 too: it is
        // not deleted yet); the new object is an unrecorded orphan.
        assert_eq!(f.archived_ids().await, ids(&[&a1, &a2, &a3]));
        let stored: Vec<(String, Time)> = segments::list_segments(&f.blobs)
            .await
            .expect("list")
            .into_iter()
            .map(|s| (s.id, s.meta.last_modified))
            .collect();
        let recorded = BTreeSet::from([meta.id.clone()]);
        let later = Utc::now() + chrono::Duration::minutes(1);
        assert_eq!(
            orphan_segments(&stored, &recorded, later),
            vec![orphan.id.clone()]
        );

        // A swap against a record that changed since it was read writes nothing.
        let records = f.dm.segment_records().await.expect("records");
        let mut stale = records[0].clone();
        stale.mod_revision -= 1;
        assert!(!pass.swap(&stale, &written).await.expect("swap"));
        assert_eq!(f.archived_ids().await, ids(&[&a1, &a2, &a3]));

        // The next pass starts over and finishes; the orphan stays unrecorded.
        let report = pass.run(now).await.expect("pass");
        assert_eq!(report.runs_deleted, 1);
        assert_eq!(f.archived_ids().await, ids(&[&a2, &a3]));
        assert_eq!(f.dm.segment_record(&orphan.id).await.expect("read"), None);
        assert!(!f.has_log("a1-build").await);
        assert!(f.has_log("a2-build").await && f.has_log("a3-build").await);
    }
}

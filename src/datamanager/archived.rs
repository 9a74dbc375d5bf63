//! Runs that left the store for a segment in object storage (`segments/`): the store keeps
//! one small record per segment, `rs/segment/<id>` (its [`SegmentMeta`]), and none of the
//! archived runs' own keys.
//!
//! Archiving a batch is one transaction ([`Datamanager::commit_segment`]): the record is
//! written and every key of the batch's runs deleted — the run, its config, its listing
//! index entries, its active marker and its events — only if no run changed since it was
//! read and the segment is not recorded yet (and, through a fenced handle, only while the
//! scheduler holds its lock). The segment object is written before, so a crash leaves
//! either the runs in the store and an unrecorded segment ([`orphan_segments`], removed
//! on a later pass) or the record and no run key: a run is never in both places for a
//! reader of the store, and never in neither. `rs/last/<group>` is kept: it names the
//! group's newest run wherever that run lives.

use std::collections::BTreeSet;

use cairn_client::run::{Run, Time};
use store::{Compare, KeyRange, RangeRequest, RequestOp};

use super::segments::{ArchivedRun, SegmentMeta};
use super::{
    Datamanager, DmError, Versioned, absent, delete, delete_range, encode, put, unchanged,
};
use crate::datamanager::keys;

/// The store's writes that move `runs` into the segment `meta`: the compares (every run
/// as read, the segment not recorded yet) and the ops (the record put, each run's keys
/// deleted).
pub fn archive_ops(meta: &SegmentMeta, runs: &[Versioned<Run>]) -> (Vec<Compare>, Vec<RequestOp>) {
    let mut compare = vec![absent(keys::segment(&meta.id))];
    let mut ops = vec![put(keys::segment(&meta.id), encode(meta))];
    for run in runs {
        let id = &run.value.id;
        compare.push(unchanged(keys::run(id), run.mod_revision));
        ops.push(delete(keys::run(id)));
        ops.push(delete(keys::run_config(id)));
        ops.push(delete(keys::active(id)));
        ops.push(delete(keys::archived(id)));
        ops.extend(keys::index_keys(&run.value).into_iter().map(delete));
        ops.push(delete_range(&keys::events_of(id)));
    }
    (compare, ops)
}

/// The segments in object storage that no store record names and that were written
/// before `cutoff` (younger ones may belong to an archiving pass still under way): what
/// a crash between writing a segment and recording it left behind. Their runs are still
/// in the store and will be archived again, so they are deleted, not adopted.
pub fn orphan_segments(
    stored: &[(String, Time)],
    recorded: &BTreeSet<String>,
    cutoff: Time,
) -> Vec<String> {
    stored
        .iter()
        .filter(|(id, written)| !recorded.contains(id) && *written < cutoff)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The most runs one [`Datamanager::commit_segment`] moves: each costs about 20 ops of
/// one transaction, which must stay a reasonable Raft entry.
pub const MAX_RUNS_PER_COMMIT: usize = 1000;

/// A batch fits one transaction and is the segment its record describes: as many runs as
/// it says, in ascending id order from its first to its last id.
fn check_batch(meta: &SegmentMeta, runs: &[Versioned<Run>]) -> Result<(), DmError> {
    let invalid = |why: String| DmError::Invalid {
        what: "segment batch",
        why,
    };
    if runs.is_empty() || runs.len() > MAX_RUNS_PER_COMMIT {
        return Err(invalid(format!(
            "{} runs: a segment moves 1 to {MAX_RUNS_PER_COMMIT}",
            runs.len()
        )));
    }
    if runs.len() != meta.runs {
        return Err(invalid(format!(
            "segment {} holds {} runs, the batch {}",
            meta.id,
            meta.runs,
            runs.len()
        )));
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.value.id.as_str()).collect();
    let ascending = ids.windows(2).all(|w| w[0] < w[1]);
    if !ascending || ids[0] != meta.first_id || ids[ids.len() - 1] != meta.last_id {
        return Err(invalid(format!(
            "segment {} spans {}..={}, the batch is not those runs in ascending order",
            meta.id, meta.first_id, meta.last_id
        )));
    }
    Ok(())
}

impl Datamanager {
    /// Records segment `meta` and deletes the keys of `runs` (as read: each at its mod
    /// revision) in one transaction; [`DmError::Conflict`] and nothing written when a run
    /// changed meanwhile or the segment is recorded already. Returns the revision.
    pub async fn commit_segment(
        &self,
        meta: &SegmentMeta,
        runs: &[Versioned<Run>],
    ) -> Result<i64, DmError> {
        check_batch(meta, runs)?;
        let (compare, ops) = archive_ops(meta, runs);
        let resp = self.commit(compare, ops).await?;
        if !resp.succeeded {
            return Err(DmError::Conflict(format!(
                "segment {}: a run changed or the segment is recorded already",
                meta.id
            )));
        }
        Ok(resp.revision)
    }

    /// Records segment `meta` and nothing else, only if it is not recorded yet: for a
    /// segment whose runs are not in the store (an import writes archived runs straight
    /// into new segments). [`DmError::Conflict`] when it is recorded already. Returns the
    /// revision.
    pub async fn record_segment(&self, meta: &SegmentMeta) -> Result<i64, DmError> {
        let key = keys::segment(&meta.id);
        let resp = self
            .commit(vec![absent(key.clone())], vec![put(key, encode(meta))])
            .await?;
        if !resp.succeeded {
            return Err(DmError::Conflict(format!(
                "segment {}: recorded already",
                meta.id
            )));
        }
        Ok(resp.revision)
    }

    /// Up to `limit` ids of runs archived but still in the store (their `rs/archived/`
    /// markers), lowest id first: the segmenter's queue.
    pub async fn archived_run_ids(&self, limit: usize) -> Result<Vec<String>, DmError> {
        let prefix = keys::ARCHIVED.as_bytes().to_vec();
        let mut req = RangeRequest::new(KeyRange::prefix(prefix));
        req.limit = i64::try_from(limit).unwrap_or(i64::MAX);
        req.keys_only = true;
        let resp = self.kv().range(req).await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| keys::id_of(&kv.key, keys::ARCHIVED).map(str::to_string))
            .collect())
    }

    /// What would move into a segment for each of `ids`: the run as read (with its mod
    /// revision, for [`Datamanager::commit_segment`]'s compare), its config and its events
    /// in sequence order. Runs gone meanwhile are left out; a run whose config is missing
    /// is corrupt.
    pub async fn archived_batch(
        &self,
        ids: &[String],
    ) -> Result<Vec<(Versioned<Run>, ArchivedRun)>, DmError> {
        let runs = self.runs(ids).await?;
        let config_keys: Vec<String> = runs.iter().map(|r| keys::run_config(&r.value.id)).collect();
        let configs = self.get_many_json(&config_keys).await?;
        let mut out = Vec::with_capacity(runs.len());
        for (run, config) in runs.into_iter().zip(configs) {
            let id = run.value.id.clone();
            let config = config
                .ok_or_else(|| DmError::Corrupt {
                    key: keys::run_config(&id),
                    why: "the run exists without its config".into(),
                })?
                .value;
            let mut events = Vec::new();
            for kv in self.scan(&keys::events_of(&id), false).await? {
                events.push(super::events::event_from(
                    &kv.key,
                    &kv.value,
                    kv.mod_revision,
                )?);
            }
            events.sort_by_key(|e| e.sequence);
            let archived = ArchivedRun {
                run: run.value.clone(),
                config,
                events,
            };
            out.push((run, archived));
        }
        Ok(out)
    }

    /// Takes runs that cannot go into a segment off the segmenter's queue (their markers
    /// deleted): they stay in the store, archived, listed and read as before.
    pub async fn keep_in_store(&self, ids: &[String]) -> Result<(), DmError> {
        let ops = ids.iter().map(|id| delete(keys::archived(id))).collect();
        self.commit(vec![], ops).await?;
        Ok(())
    }

    /// Every recorded segment, in id order (= the order of their first run ids).
    pub async fn segment_records(&self) -> Result<Vec<Versioned<SegmentMeta>>, DmError> {
        Ok(self.segment_records_at().await?.0)
    }

    /// [`Datamanager::segment_records`], with the store revision they were read at.
    pub async fn segment_records_at(&self) -> Result<(Vec<Versioned<SegmentMeta>>, i64), DmError> {
        self.scan_json_at(keys::SEGMENT).await
    }

    /// How many segment records were written (created or changed) after `revision`:
    /// zero means an index that applied the records up to `revision` lacks none.
    pub async fn segments_written_after(&self, revision: i64) -> Result<i64, DmError> {
        let mut req = RangeRequest::new(KeyRange::prefix(keys::SEGMENT.as_bytes().to_vec()));
        req.min_mod_revision = revision.saturating_add(1);
        req.count_only = true;
        Ok(self.kv().range(req).await?.count)
    }

    /// One recorded segment.
    pub async fn segment_record(&self, id: &str) -> Result<Option<SegmentMeta>, DmError> {
        Ok(self
            .get_json(&keys::segment(id))
            .await?
            .map(|v: Versioned<SegmentMeta>| v.value))
    }
}

#[cfg(test)]
mod tests {
    use cairn_client::api::ListRunsQuery;
    use chrono::{Duration, Utc};

    use super::*;
    use crate::datamanager::testing::{self, TestStore};

    const GROUP: &str = "/project/a/branch/main";

    async fn finished_run(dm: &Datamanager) -> Versioned<Run> {
        testing::finished_run(dm, GROUP).await.0
    }

    fn meta_of(runs: &[Versioned<Run>]) -> SegmentMeta {
        let first = runs.first().expect("runs").value.id.clone();
        let last = runs.last().expect("runs").value.id.clone();
        let id = format!("{first}-{last}-0badcafe");
        SegmentMeta {
            key: format!("segments/{id}.seg"),
            id,
            created: Utc::now(),
            runs: runs.len(),
            bytes: 1234,
            sha256: "ab".repeat(32),
            first_id: first,
            last_id: last,
        }
    }

    async fn listed(dm: &Datamanager) -> Vec<String> {
        let page = dm
            .list_runs(&ListRunsQuery {
                group: Some(GROUP.to_string()),
                ..ListRunsQuery::default()
            })
            .await
            .expect("listing");
        page.runs.into_iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn a_committed_segment_takes_its_runs_keys_out_of_the_store_and_nothing_else() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let a = finished_run(&dm).await;
        let b = finished_run(&dm).await;
        let c = finished_run(&dm).await;
        let meta = meta_of(&[a.clone(), b.clone()]);
        dm.commit_segment(&meta, &[a.clone(), b.clone()])
            .await
            .expect("committed");

        for gone in [&a, &b] {
            let id = &gone.value.id;
            assert!(matches!(dm.run(id).await, Err(DmError::NotFound { .. })));
            assert!(matches!(
                dm.run_config(id).await,
                Err(DmError::NotFound { .. })
            ));
            for key in keys::index_keys(&gone.value) {
                assert!(
                    st.node
                        .kv()
                        .get(key.into_bytes())
                        .await
                        .expect("read")
                        .is_none()
                );
            }
            let events = dm.scan(&keys::events_of(id), true).await.expect("events");
            assert!(events.is_empty(), "run {id}'s events left the store");
        }
        assert_eq!(listed(&dm).await, vec![c.value.id.clone()]);
        assert_eq!(dm.run(&c.value.id).await.expect("c stays").value, c.value);
        assert_eq!(
            dm.segment_record(&meta.id).await.expect("read"),
            Some(meta.clone())
        );
        let records = dm.segment_records().await.expect("records");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value, meta);
        // The group's newest-run pointer still names its newest run.
        let last = st
            .node
            .kv()
            .get(keys::last(GROUP).into_bytes())
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(last.value, c.value.id.as_bytes());
    }

    #[tokio::test]
    async fn a_run_changed_since_it_was_read_makes_the_commit_write_nothing() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let a = finished_run(&dm).await;
        let b = finished_run(&dm).await;
        // b changes after the archiver read it.
        let mut annotated = b.value.clone();
        annotated.annotations.insert("late".into(), "write".into());
        dm.update_run(&b, &annotated).await.expect("written");
        let meta = meta_of(&[a.clone(), b.clone()]);
        let err = dm
            .commit_segment(&meta, &[a.clone(), b.clone()])
            .await
            .expect_err("b changed");
        assert!(matches!(err, DmError::Conflict(_)), "{err}");
        assert_eq!(dm.segment_record(&meta.id).await.expect("read"), None);
        assert_eq!(listed(&dm).await.len(), 2, "both runs are still listed");
        assert_eq!(dm.run(&a.value.id).await.expect("a stays").value, a.value);
    }

    #[tokio::test]
    async fn a_segment_is_recorded_once() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let a = finished_run(&dm).await;
        let meta = meta_of(std::slice::from_ref(&a));
        dm.commit_segment(&meta, std::slice::from_ref(&a))
            .await
            .expect("committed");
        let b = finished_run(&dm).await;
        // Another batch under the recorded segment's id.
        let mut reused = meta_of(std::slice::from_ref(&b));
        reused.id = meta.id.clone();
        let again = dm
            .commit_segment(&reused, std::slice::from_ref(&b))
            .await
            .expect_err("recorded already");
        assert!(matches!(again, DmError::Conflict(_)), "{again}");
        assert_eq!(dm.run(&b.value.id).await.expect("b stays").value, b.value);
    }

    #[tokio::test]
    async fn a_batch_that_is_not_its_segment_is_refused_before_anything_is_written() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let a = finished_run(&dm).await;
        let b = finished_run(&dm).await;
        let both = [a.clone(), b.clone()];
        let meta = meta_of(&both);
        let cases: [(&str, Vec<Versioned<Run>>, SegmentMeta); 4] = [
            ("empty", vec![], meta.clone()),
            ("fewer than recorded", vec![a.clone()], meta.clone()),
            ("out of order", vec![b.clone(), a.clone()], meta.clone()),
            (
                "the same run twice",
                vec![a.clone(), a.clone()],
                meta.clone(),
            ),
        ];
        for (case, runs, meta) in cases {
            let err = dm.commit_segment(&meta, &runs).await.expect_err(case);
            assert!(matches!(err, DmError::Invalid { .. }), "{case}: {err}");
        }
        let too_many: Vec<Versioned<Run>> = (0..=MAX_RUNS_PER_COMMIT).map(|_| a.clone()).collect();
        let err = dm
            .commit_segment(&meta, &too_many)
            .await
            .expect_err("too many");
        assert!(matches!(err, DmError::Invalid { .. }), "{err}");
        assert_eq!(dm.segment_record(&meta.id).await.expect("read"), None);
        assert_eq!(listed(&dm).await.len(), 2, "nothing left the store");
    }

    #[tokio::test]
    async fn a_recorded_only_segment_touches_no_run_and_is_recorded_once() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let a = finished_run(&dm).await;
        let meta = meta_of(std::slice::from_ref(&a));
        dm.record_segment(&meta).await.expect("recorded");
        assert_eq!(
            dm.segment_record(&meta.id).await.expect("read"),
            Some(meta.clone())
        );
        assert_eq!(dm.run(&a.value.id).await.expect("a stays").value, a.value);
        assert_eq!(listed(&dm).await, vec![a.value.id.clone()]);
        let mut changed = meta.clone();
        changed.bytes += 1;
        let again = dm.record_segment(&changed).await.expect_err("recorded");
        assert!(matches!(again, DmError::Conflict(_)), "{again}");
        assert_eq!(dm.segment_record(&meta.id).await.expect("read"), Some(meta));
    }

    #[test]
    fn only_old_unrecorded_segments_are_orphans() {
        let now = Utc::now();
        let old = now - Duration::hours(1);
        let stored = vec![
            ("recorded".to_string(), old),
            ("crashed".to_string(), old),
            ("in-flight".to_string(), now),
        ];
        let recorded: BTreeSet<String> = ["recorded".to_string()].into();
        let cutoff = now - Duration::minutes(10);
        assert_eq!(
            orphan_segments(&stored, &recorded, cutoff),
            vec!["crashed".to_string()]
        );
    }
}

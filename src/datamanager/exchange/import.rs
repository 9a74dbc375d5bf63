//! Import: replaces the datamanager's contents with a validated, spooled export.
//!
//! The spool is read line by line, never whole. Finished runs that were archived — the
//! export's archived runs, and its store runs with `archived` set — are written into new
//! segments (at most one segment's worth of runs in memory: [`SegmentWriter`] within
//! its [`SegmentLimits`], then [`segments::put_segment`], then one transaction recording it), not
//! as store keys; every other run goes back to the store as before, with its config,
//! events, index entries and markers. A store run with its config and events is found
//! by walking the spool's run, run config and event sections side by side (each in run-id
//! order), one line of each at a time.
//!
//! Everything is checked before the first write (the [`super::Validator`] while spooling,
//! then here that no run is both a store run and an archived one), so a failure past that
//! point is the store's or object storage's: `rs/importing` then stays, and maintenance
//! cannot end until an import succeeds.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_client::run::{ExecutorTaskPhase, Run, RunEvent, RunTaskStatus, Time};
use cairn_client::runconfig::RunConfig;

use super::spool::{ArchivedCursor, EntryCursor, Line, Sections, SpoolReader};
use super::{CLEARED, DmError, ExchangeError, invalid, keys, parse_u64};
use crate::datamanager::blobs::Blobs;
use crate::datamanager::segments::{self, ArchivedRun, SegmentError, SegmentLimits, SegmentWriter};
use crate::datamanager::{Datamanager, delete, delete_range, put};

/// What an import wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Lines of the export (store entries and archived runs).
    pub entries: u64,
    /// Runs, wherever they went.
    pub runs: u64,
    /// Of those, runs written into segments.
    pub archived: u64,
    /// Segments written.
    pub segments: u64,
}

/// Store writes per transaction.
const BATCH: usize = 256;

/// Whether an imported store run goes into a segment: archived, finished, with its run
/// config, and in a group of canonical form (what a segment requires of a run). Pure.
pub fn goes_to_segment(run: &Run, has_config: bool) -> bool {
    run.archived
        && run.phase.is_finished()
        && has_config
        && keys::normalize_group(&run.group).as_deref() == Some(run.group.as_str())
}

/// What the passes of one import share.
struct ImportState {
    now: Time,
    /// What must not go backwards: the counters and the run sequence before the import.
    floors: BTreeMap<String, u64>,
    /// The newest run of each group, written once at the end (a transaction may not put
    /// one key twice).
    last: BTreeMap<String, String>,
    summary: ImportSummary,
}

impl ImportState {
    fn saw_run(&mut self, group: &str, id: &str) {
        self.summary.runs += 1;
        match self.last.get_mut(group) {
            Some(newest) if newest.as_str() >= id => {}
            Some(newest) => *newest = id.to_string(),
            None => {
                self.last.insert(group.to_string(), id.to_string());
            }
        }
    }
}

impl Datamanager {
    /// Replaces the datamanager's contents with a validated export (see
    /// [`super::Validator`]), archived runs going into new segments in `blobs` within
    /// `limits`. The caller must hold maintenance mode. Run ids and counters never go
    /// backwards: the sequence and each counter become the larger of the imported and the
    /// current value. Runs that were active lose their executor tasks: their running tasks
    /// are failed ("lost in an import"), queued runs stay queued. The segments recorded
    /// before are forgotten, and their objects deleted once the import succeeded.
    pub async fn import(
        &self,
        blobs: &Blobs,
        spool: &Path,
        limits: SegmentLimits,
    ) -> Result<ImportSummary, ExchangeError> {
        let sections = Sections::find(spool)?;
        check_disjoint(spool, &sections)?;
        let mut st = ImportState {
            now: chrono::Utc::now(),
            floors: self.floors().await?,
            last: BTreeMap::new(),
            summary: ImportSummary::default(),
        };
        let replaced: Vec<String> = self
            .segment_records()
            .await?
            .into_iter()
            .map(|r| r.value.id)
            .collect();
        self.commit(vec![], vec![put(keys::IMPORTING, b"1".to_vec())])
            .await?;
        let clear: Vec<_> = CLEARED.iter().map(|p| delete_range(p)).collect();
        self.commit(vec![], clear).await?;

        let events = self.import_entries(spool, &sections, &mut st).await?;
        self.import_segments(blobs, spool, &sections, limits, &mut st)
            .await?;
        self.import_events(events).await?;
        self.import_last_and_floors(&mut st).await?;
        self.commit(vec![], vec![delete(keys::IMPORTING)]).await?;
        for id in replaced {
            if let Err(e) = segments::delete_segment(blobs, &id).await {
                tracing::warn!(segment = %id, error = %e, "a replaced segment was not deleted");
            }
        }
        Ok(st.summary)
    }

    async fn floors(&self) -> Result<BTreeMap<String, u64>, DmError> {
        let mut floors = BTreeMap::new();
        for kv in self.scan(keys::COUNTER, false).await? {
            let k = String::from_utf8_lossy(&kv.key).into_owned();
            floors.insert(k, parse_u64(&kv.value));
        }
        if let Some(kv) = self.kv().get(keys::RUN_SEQ.as_bytes().to_vec()).await? {
            floors.insert(keys::RUN_SEQ.to_string(), parse_u64(&kv.value));
        }
        Ok(floors)
    }

    /// The store entries, but those of runs that go into segments. Returns the events to
    /// write, in no order.
    async fn import_entries(
        &self,
        spool: &Path,
        sections: &Sections,
        st: &mut ImportState,
    ) -> Result<Vec<(Option<Time>, String, String)>, DmError> {
        let mut reader = SpoolReader::open(spool, sections.entries)?;
        let mut plan = PlanCursor::open(spool, sections)?;
        let mut section = "";
        let mut batch = Vec::new();
        let mut events = Vec::new();
        while let Some(Line::Entry(entry)) = reader.next_line()? {
            st.summary.entries += 1;
            // Each section walks the runs from the start again.
            let this = [keys::EVENT, keys::RUN, keys::RUN_CONFIG]
                .into_iter()
                .find(|p| entry.key.starts_with(p))
                .unwrap_or("");
            if this != section {
                plan = PlanCursor::open(spool, sections)?;
                section = this;
            }
            if let Some(id) = entry.key.strip_prefix(keys::RUN) {
                if !plan.goes_to_segment(id)? {
                    let run: Run = serde_json::from_str(&entry.value)
                        .map_err(|e| invalid(format!("run {id}: {e}")))?;
                    self.store_run(run, st, &mut batch);
                }
            } else if let Some(rest) = entry.key.strip_prefix(keys::EVENT) {
                let id = rest.split_once('/').map_or(rest, |(id, _)| id);
                if !plan.goes_to_segment(id)? {
                    let time = serde_json::from_str::<RunEvent>(&entry.value)
                        .ok()
                        .map(|e| e.time);
                    events.push((time, entry.key, entry.value));
                }
            } else if let Some(id) = entry.key.strip_prefix(keys::RUN_CONFIG) {
                if !plan.goes_to_segment(id)? {
                    batch.push(put(entry.key, entry.value.into_bytes()));
                }
            } else if entry.key.starts_with(keys::COUNTER) || entry.key == keys::RUN_SEQ {
                let floor = st.floors.remove(&entry.key).unwrap_or(0);
                let v = parse_u64(entry.value.as_bytes()).max(floor);
                batch.push(put(entry.key, v.to_string().into_bytes()));
            } else {
                batch.push(put(entry.key, entry.value.into_bytes()));
            }
            if batch.len() >= BATCH {
                self.commit(vec![], std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.commit(vec![], batch).await?;
        }
        Ok(events)
    }

    /// The writes of a run that stays in the store: the run, its index entries, and its
    /// marker (active, or archived: the segmenter then moves it, or keeps it in the store).
    fn store_run(&self, mut run: Run, st: &mut ImportState, batch: &mut Vec<store::RequestOp>) {
        lose_running_tasks(&mut run, st.now);
        st.saw_run(&run.group, &run.id);
        batch.push(put(
            keys::run(&run.id),
            serde_json::to_vec(&run).expect("runs serialize"),
        ));
        for k in keys::index_keys(&run) {
            batch.push(put(k, Vec::new()));
        }
        if run.archived {
            batch.push(put(keys::archived(&run.id), Vec::new()));
        } else {
            batch.push(put(keys::active(&run.id), Vec::new()));
        }
    }

    /// The archived runs, into new segments.
    async fn import_segments(
        &self,
        blobs: &Blobs,
        spool: &Path,
        sections: &Sections,
        limits: SegmentLimits,
        st: &mut ImportState,
    ) -> Result<(), ExchangeError> {
        let mut runs = SegmentRuns::open(spool, sections)?;
        let mut writer = SegmentWriter::new(limits);
        while let Some((run, from_line)) = runs.next()? {
            st.saw_run(&run.run.group, &run.run.id);
            st.summary.archived += 1;
            st.summary.entries += u64::from(from_line);
            match writer.add(&run) {
                Ok(()) => continue,
                Err(SegmentError::Full { .. }) => {}
                Err(e) => return Err(ExchangeError::segment(run.run.id, e)),
            }
            let full = std::mem::replace(&mut writer, SegmentWriter::new(limits));
            self.write_segment(blobs, full, st).await?;
            writer
                .add(&run)
                .map_err(|e| ExchangeError::segment(run.run.id.clone(), e))?;
        }
        if !writer.is_empty() {
            self.write_segment(blobs, writer, st).await?;
        }
        Ok(())
    }

    /// Stores a finished segment and records it.
    async fn write_segment(
        &self,
        blobs: &Blobs,
        writer: SegmentWriter,
        st: &mut ImportState,
    ) -> Result<(), ExchangeError> {
        let (bytes, meta) = writer
            .finish()
            .map_err(|e| ExchangeError::segment("(new)", e))?;
        segments::put_segment(blobs, bytes, &meta)
            .await
            .map_err(|e| ExchangeError::segment(meta.id.clone(), e))?;
        self.record_segment(&meta).await?;
        st.summary.segments += 1;
        Ok(())
    }

    /// An event's sequence is the revision that wrote it: one commit each (in the order
    /// they happened), so sequences stay unique and ordered.
    async fn import_events(
        &self,
        mut events: Vec<(Option<Time>, String, String)>,
    ) -> Result<(), DmError> {
        events.sort();
        for (_, key, value) in events {
            self.commit(vec![], vec![put(key, value.into_bytes())])
                .await?;
        }
        Ok(())
    }

    /// Each group's newest run, and the counters of roots the export does not know (they
    /// keep their values).
    async fn import_last_and_floors(&self, st: &mut ImportState) -> Result<(), DmError> {
        let mut batch = Vec::new();
        let last = std::mem::take(&mut st.last);
        let floors = std::mem::take(&mut st.floors);
        let ops = last
            .into_iter()
            .map(|(group, id)| put(keys::last(&group), id.into_bytes()))
            .chain(
                floors
                    .into_iter()
                    .map(|(k, v)| put(k, v.to_string().into_bytes())),
            );
        for op in ops {
            batch.push(op);
            if batch.len() >= BATCH {
                self.commit(vec![], std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.commit(vec![], batch).await?;
        }
        Ok(())
    }
}

/// The store runs of the spool with their run configs, side by side in id order: which
/// of them go into segments ([`goes_to_segment`]), and those runs themselves.
struct PlanCursor {
    runs: EntryCursor,
    configs: EntryCursor,
    /// The last run asked about and its answer.
    decided: Option<(String, bool)>,
}

impl PlanCursor {
    fn open(spool: &Path, sections: &Sections) -> Result<PlanCursor, DmError> {
        Ok(PlanCursor {
            runs: EntryCursor::open(spool, sections.runs, keys::RUN)?,
            configs: EntryCursor::open(spool, sections.configs, keys::RUN_CONFIG)?,
            decided: None,
        })
    }

    /// Whether run `id` is a store run of the export that goes into a segment. Ids asked
    /// about must not decrease.
    fn goes_to_segment(&mut self, id: &str) -> Result<bool, DmError> {
        if let Some((decided, answer)) = &self.decided
            && decided == id
        {
            return Ok(*answer);
        }
        while self.runs.peek_id().is_some_and(|r| r < id) {
            self.runs.take()?;
        }
        while self.configs.peek_id().is_some_and(|c| c < id) {
            self.configs.take()?;
        }
        let answer = match self.runs.peek() {
            Some(entry) if self.runs.peek_id() == Some(id) => {
                let run = parse_run(id, &entry.value)?;
                goes_to_segment(&run, self.configs.peek_id() == Some(id))
            }
            _ => false,
        };
        self.decided = Some((id.to_string(), answer));
        Ok(answer)
    }

    /// The next store run that goes into a segment, with its config.
    fn next_for_segment(&mut self) -> Result<Option<(Run, RunConfig)>, DmError> {
        while let Some(entry) = self.runs.take()? {
            let id = &entry.key[keys::RUN.len()..];
            let run = parse_run(id, &entry.value)?;
            while self.configs.peek_id().is_some_and(|c| c < id) {
                self.configs.take()?;
            }
            if !goes_to_segment(&run, self.configs.peek_id() == Some(id)) {
                continue;
            }
            let config = self
                .configs
                .take()?
                .ok_or_else(|| invalid(format!("run {id} has no config")))?;
            let config: RunConfig = serde_json::from_str(&config.value)
                .map_err(|e| invalid(format!("run config {id}: {e}")))?;
            return Ok(Some((run, config)));
        }
        Ok(None)
    }
}

fn parse_run(id: &str, value: &str) -> Result<Run, DmError> {
    serde_json::from_str(value).map_err(|e| invalid(format!("run {id}: {e}")))
}

/// Every run of the spool that goes into a segment, in id order: the store runs that do
/// ([`PlanCursor`], each with its events) merged with the export's archived runs.
struct SegmentRuns {
    plan: PlanCursor,
    events: EntryCursor,
    archived: ArchivedCursor,
    /// The next store run for a segment, read ahead.
    store: Option<ArchivedRun>,
}

impl SegmentRuns {
    fn open(spool: &Path, sections: &Sections) -> Result<SegmentRuns, DmError> {
        let mut runs = SegmentRuns {
            plan: PlanCursor::open(spool, sections)?,
            events: EntryCursor::open(spool, sections.events, keys::EVENT)?,
            archived: ArchivedCursor::open(spool, sections.archived)?,
            store: None,
        };
        runs.store = runs.next_store()?;
        Ok(runs)
    }

    /// The next run, and whether it was an archived-run line of the export.
    fn next(&mut self) -> Result<Option<(ArchivedRun, bool)>, DmError> {
        let take_store = match (&self.store, self.archived.peek_id()) {
            (None, None) => return Ok(None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(s), Some(a)) if s.run.id == a => {
                return Err(invalid(format!(
                    "run {a} is both a store run and an archived run"
                )));
            }
            (Some(s), Some(a)) => s.run.id.as_str() < a,
        };
        if take_store {
            let run = self.store.take();
            self.store = self.next_store()?;
            return Ok(run.map(|r| (r, false)));
        }
        Ok(self.archived.take()?.map(|a| (*a, true)))
    }

    /// The next store run for a segment, with its config and its events (by time).
    fn next_store(&mut self) -> Result<Option<ArchivedRun>, DmError> {
        let Some((run, config)) = self.plan.next_for_segment()? else {
            return Ok(None);
        };
        while self.events.peek_id().is_some_and(|e| e < run.id.as_str()) {
            self.events.take()?;
        }
        let mut events = Vec::new();
        while self.events.peek_id() == Some(run.id.as_str()) {
            let Some(e) = self.events.take()? else { break };
            let event: RunEvent = serde_json::from_str(&e.value)
                .map_err(|err| invalid(format!("event {}: {err}", e.key)))?;
            events.push(event);
        }
        events.sort_by_key(|e| e.time);
        Ok(Some(ArchivedRun {
            run,
            config,
            events,
        }))
    }
}

/// Refuses an export with a run that is both a store run and an archived run (it would
/// be in the store and in a segment): the run section and the archived section side by
/// side, both in id order.
fn check_disjoint(spool: &Path, sections: &Sections) -> Result<(), DmError> {
    if sections.runs.is_none() || sections.archived.is_none() {
        return Ok(());
    }
    let mut runs = EntryCursor::open(spool, sections.runs, keys::RUN)?;
    let mut archived = ArchivedCursor::open(spool, sections.archived)?;
    while let (Some(r), Some(a)) = (runs.peek_id(), archived.peek_id()) {
        match r.cmp(a) {
            std::cmp::Ordering::Less => drop(runs.take()?),
            std::cmp::Ordering::Greater => drop(archived.take()?),
            std::cmp::Ordering::Equal => {
                return Err(invalid(format!(
                    "run {r} is both a store run and an archived run"
                )));
            }
        }
    }
    Ok(())
}

/// A running task of an imported run has no executor task any more: it failed.
fn lose_running_tasks(run: &mut Run, now: Time) {
    if run.phase.is_finished() {
        return;
    }
    for t in run.tasks.values_mut() {
        if t.status == RunTaskStatus::Running {
            t.status = RunTaskStatus::Failed;
            t.fail_error = Some("lost in an import".into());
            t.end_time = Some(now);
            for s in std::iter::once(&mut t.setup_step).chain(t.steps.iter_mut()) {
                if s.phase == ExecutorTaskPhase::Running {
                    s.phase = ExecutorTaskPhase::Failed;
                    s.end_time = Some(now);
                }
            }
        }
    }
}

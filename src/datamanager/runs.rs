//! Runs and run configs: creation (run id and counter allocated atomically with the
//! objects), compare-and-swap updates that keep the listing indexes and run events in
//! the same transaction, and paged listings that cost O(page).

use std::collections::BTreeSet;

use cairn_client::api::{ListRunsQuery, RunsPage};
use cairn_client::run::{Run, RunEvent, RunPhase, root_group};
use cairn_client::runconfig::RunConfig;
use store::{KeyRange, RangeRequest, RequestOp, SortOrder};

use super::keys::{self, Selector};
use super::{Datamanager, DmError, Versioned, absent, delete, encode, put, unchanged};

/// Default and maximum page sizes of run listings.
pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 200;

/// A run and its config as created.
pub struct Created {
    pub run: Versioned<Run>,
    pub config: RunConfig,
}

impl Datamanager {
    /// Creates a run: allocates the next run id and the next counter of the group's
    /// root, then `make(id, counter)` builds the config and run, and everything (run,
    /// config, indexes, counter, sequence, creation event) is written in one
    /// transaction. Concurrent creations conflict on the sequence and retry, so ids and
    /// counters of one root both follow creation order.
    pub async fn create_run<F>(&self, group: &str, mut make: F) -> Result<Created, DmError>
    where
        F: FnMut(&str, u64) -> (RunConfig, Run),
    {
        let root = root_group(group).to_string();
        let counter_key = keys::counter(&root);
        for attempt in 0u32.. {
            let seq = self.kv().get(keys::RUN_SEQ.as_bytes().to_vec()).await?;
            let counter = self.kv().get(counter_key.as_bytes().to_vec()).await?;
            let next_seq = parse_u64(seq.as_ref().map(|kv| kv.value.as_slice()))? + 1;
            let next_counter = parse_u64(counter.as_ref().map(|kv| kv.value.as_slice()))? + 1;
            let id = keys::run_id(next_seq);
            let (config, run) = make(&id, next_counter);
            let mut compare = vec![
                unchanged(keys::RUN_SEQ, seq.as_ref().map_or(0, |kv| kv.mod_revision)),
                unchanged(
                    counter_key.clone(),
                    counter.as_ref().map_or(0, |kv| kv.mod_revision),
                ),
                absent(keys::run(&id)),
            ];
            compare.shrink_to_fit();
            let mut ops = vec![
                put(keys::RUN_SEQ, next_seq.to_string().into_bytes()),
                put(counter_key.clone(), next_counter.to_string().into_bytes()),
                put(keys::run_config(&id), encode(&config)),
            ];
            ops.extend(run_write_ops(None, &run));
            let resp = self.commit(compare, ops).await?;
            if resp.succeeded {
                return Ok(Created {
                    run: Versioned {
                        value: run,
                        mod_revision: resp.revision,
                    },
                    config,
                });
            }
            // Someone else created a run meanwhile; back off a little and retry.
            let jitter = u64::from(attempt.min(8)) * 2 + (next_seq % 3);
            tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
        }
        unreachable!("the retry loop only ends by returning")
    }

    pub async fn run(&self, id: &str) -> Result<Versioned<Run>, DmError> {
        self.get_json(&keys::run(id))
            .await?
            .ok_or_else(|| DmError::not_found("run", id))
    }

    pub async fn run_config(&self, id: &str) -> Result<RunConfig, DmError> {
        self.get_json(&keys::run_config(id))
            .await?
            .map(|v| v.value)
            .ok_or_else(|| DmError::not_found("run config", id))
    }

    /// Writes `run` if it is still at `prev_revision`, with its index, event and
    /// active-set changes. Returns the new revision.
    pub async fn update_run(&self, prev: &Versioned<Run>, run: &Run) -> Result<i64, DmError> {
        let ops = run_write_ops(Some(&prev.value), run);
        let resp = self
            .commit(vec![unchanged(keys::run(&run.id), prev.mod_revision)], ops)
            .await?;
        if !resp.succeeded {
            return Err(DmError::Conflict(format!("run {}", run.id)));
        }
        Ok(resp.revision)
    }

    /// Ids of runs not archived yet, in id order.
    pub async fn active_run_ids(&self) -> Result<Vec<String>, DmError> {
        Ok(self
            .scan(keys::ACTIVE, true)
            .await?
            .iter()
            .filter_map(|kv| keys::id_of(&kv.key, keys::ACTIVE).map(str::to_string))
            .collect())
    }

    /// Several runs read at one revision; missing ones are left out.
    pub async fn runs(&self, ids: &[String]) -> Result<Vec<Versioned<Run>>, DmError> {
        let keys: Vec<String> = ids.iter().map(|id| keys::run(id)).collect();
        Ok(self
            .get_many_json(&keys)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Ids of up to `limit` runs of one index stream, after `cursor`, oldest first
    /// or newest first.
    async fn index_page(
        &self,
        group: &str,
        sel: Selector,
        cursor: Option<&str>,
        asc: bool,
        limit: usize,
    ) -> Result<Vec<String>, DmError> {
        let prefix = keys::index_prefix(group, sel);
        let end = store::prefix_end(prefix.as_bytes());
        let (start, end) = match (cursor, asc) {
            (Some(c), true) => (format!("{prefix}{c}\0").into_bytes(), end),
            (Some(c), false) => (
                prefix.clone().into_bytes(),
                format!("{prefix}{c}").into_bytes(),
            ),
            (None, _) => (prefix.clone().into_bytes(), end),
        };
        let mut req = RangeRequest::new(KeyRange::interval(start, end));
        req.limit = limit as i64;
        req.keys_only = true;
        req.page_only = true;
        if !asc {
            req.sort_order = SortOrder::Descend;
        }
        let resp = self.kv().range(req).await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| keys::id_of(&kv.key, &prefix).map(str::to_string))
            .collect())
    }

    /// The oldest queued run of exactly this group, if any.
    pub async fn first_queued(&self, group: &str) -> Result<Option<String>, DmError> {
        Ok(self
            .index_page(group, Selector::Phase(RunPhase::Queued), None, true, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Running runs under exactly this group (at most `limit`).
    pub async fn running_in(&self, group: &str, limit: usize) -> Result<Vec<String>, DmError> {
        self.index_page(group, Selector::Phase(RunPhase::Running), None, true, limit)
            .await
    }

    /// Runs by group prefix, phase and result, newest first by default, one page at a
    /// time. Cost: O(limit × selectors), whatever the number of runs stored.
    pub async fn list_runs(&self, q: &ListRunsQuery) -> Result<RunsPage, DmError> {
        let group = match &q.group {
            Some(g) => keys::normalize_group(g).ok_or_else(|| DmError::Invalid {
                what: "group",
                why: format!("{g:?} is not a group path"),
            })?,
            None => "/".to_string(),
        };
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        if q.last_run {
            return self.list_last_runs(&group, q, limit).await;
        }
        // One index stream per selector; with both phases and results, phases drive the
        // scan and results filter.
        let sels: Vec<Selector> = if !q.phase.is_empty() {
            q.phase.iter().map(|p| Selector::Phase(*p)).collect()
        } else if !q.result.is_empty() {
            q.result.iter().map(|r| Selector::Result(*r)).collect()
        } else {
            vec![Selector::All]
        };
        let filter_results = !q.phase.is_empty() && !q.result.is_empty();
        let mut cursor = q.cursor.clone();
        let mut runs = Vec::new();
        loop {
            let mut ids = BTreeSet::new();
            for sel in &sels {
                ids.extend(
                    self.index_page(&group, *sel, cursor.as_deref(), q.asc, limit + 1)
                        .await?,
                );
            }
            let mut ids: Vec<String> = ids.into_iter().collect();
            if !q.asc {
                ids.reverse();
            }
            let exhausted = ids.len() <= limit;
            ids.truncate(limit + 1);
            let page: Vec<String> = ids.iter().take(limit).cloned().collect();
            let fetched = self.runs(&page).await?;
            for r in fetched {
                if !filter_results || q.result.contains(&r.value.result) {
                    runs.push(r.value);
                }
            }
            if runs.len() >= limit || exhausted {
                let next = if exhausted && runs.len() <= limit {
                    None
                } else {
                    runs.truncate(limit);
                    runs.last().map(|r| r.id.clone())
                };
                return Ok(RunsPage { runs, next });
            }
            cursor = page.last().cloned();
        }
    }

    /// The newest run of every group under `group`, paged by group path.
    async fn list_last_runs(
        &self,
        group: &str,
        q: &ListRunsQuery,
        limit: usize,
    ) -> Result<RunsPage, DmError> {
        let exact = keys::last(group);
        let sub = if group == "/" {
            keys::last("/")
        } else {
            keys::last(&format!("{group}/"))
        };
        let end = store::prefix_end(sub.as_bytes());
        let start = match &q.cursor {
            Some(c) => format!("{}\0", keys::last(c)).into_bytes(),
            None => exact.clone().into_bytes(),
        };
        let mut req = RangeRequest::new(KeyRange::interval(start, end));
        req.limit = limit as i64;
        req.page_only = true;
        let resp = self.kv().range(req).await?;
        let mut pairs = Vec::new();
        for kv in &resp.kvs {
            let g = keys::id_of(&kv.key, keys::LAST)
                .unwrap_or_default()
                .to_string();
            if g != group && !g.starts_with(&format!("{}/", group.trim_end_matches('/'))) {
                continue;
            }
            pairs.push((g, String::from_utf8_lossy(&kv.value).into_owned()));
        }
        let ids: Vec<String> = pairs.iter().map(|(_, id)| id.clone()).collect();
        let mut runs: Vec<Run> = self
            .runs(&ids)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        runs.retain(|r| {
            (q.phase.is_empty() || q.phase.contains(&r.phase))
                && (q.result.is_empty() || q.result.contains(&r.result))
        });
        let next = if resp.more {
            pairs.last().map(|(g, _)| g.clone())
        } else {
            None
        };
        Ok(RunsPage { runs, next })
    }
}

/// The ops that write `run` over `prev` (None: a new run): the run itself, index keys
/// added and removed, the last-run pointer, the active marker and, when the phase or
/// result changed, a run event.
pub(super) fn run_write_ops(prev: Option<&Run>, run: &Run) -> Vec<RequestOp> {
    let mut ops = vec![put(keys::run(&run.id), encode(run))];
    let old: BTreeSet<String> = prev
        .map(keys::index_keys)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new: BTreeSet<String> = keys::index_keys(run).into_iter().collect();
    for k in old.difference(&new) {
        ops.push(delete(k.clone()));
    }
    for k in new.difference(&old) {
        ops.push(put(k.clone(), Vec::new()));
    }
    match prev {
        None => {
            ops.push(put(keys::last(&run.group), run.id.clone().into_bytes()));
            ops.push(put(keys::active(&run.id), Vec::new()));
        }
        Some(p) if p.archived != run.archived && run.archived => {
            ops.push(delete(keys::active(&run.id)));
        }
        Some(_) => {}
    }
    if prev.is_none_or(|p| p.phase != run.phase || p.result != run.result) {
        let event = RunEvent {
            sequence: 0,
            run_id: run.id.clone(),
            group: run.group.clone(),
            phase: run.phase,
            result: run.result,
            time: chrono::Utc::now(),
        };
        // A run passes each (phase, result) pair at most once, so the key is unique.
        let key = format!(
            "{}{}.{}",
            keys::events_of(&run.id),
            run.phase.as_str(),
            run.result.as_str()
        );
        ops.push(put(key, encode(&event)));
    }
    ops
}

fn parse_u64(value: Option<&[u8]>) -> Result<u64, DmError> {
    match value {
        None => Ok(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| DmError::Corrupt {
                key: "sequence".into(),
                why: format!("not a number: {:?}", String::from_utf8_lossy(v)),
            }),
    }
}

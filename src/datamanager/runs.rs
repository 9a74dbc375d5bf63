//! Runs and run configs: creation (run id and counter allocated atomically with the
//! objects), compare-and-swap updates that keep the listing indexes and run events in
//! the same transaction, and paged listings that cost O(page).

use std::collections::BTreeSet;

use cairn_client::api::{ListRunsQuery, RunsPage};
use cairn_client::run::{Run, RunEvent, RunPhase, root_group};
use cairn_client::runconfig::RunConfig;
use store::{KeyRange, RangeRequest, RequestOp, SortOrder, WatchRequest, WatchStream};

use super::create_once::{CreateOnce, CreateRecord, earlier_run};
use super::keys::{self, Selector};
use raft::Write;

use super::{Datamanager, DmError, Versioned, absent, decode, delete, encode, put, unchanged};

/// Default and maximum page sizes of run listings.
pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 200;

/// A run and its config as created.
pub struct Created {
    pub run: Versioned<Run>,
    pub config: RunConfig,
}

/// What a creation under an idempotency key did.
pub enum Creation {
    Made(Box<Created>),
    /// The request was made before: the id of the run it made.
    Earlier(String),
}

impl Datamanager {
    /// Creates a run: allocates the next run id and the next counter of the group's
    /// root, then `make(id, counter)` builds the config and run, and everything (run,
    /// config, indexes, counter, sequence, creation event) is written in one
    /// transaction. Concurrent creations conflict on the sequence and are retried within
    /// the handle's context, so ids and counters of one root both follow creation order.
    pub async fn create_run<F>(&self, group: &str, make: F) -> Result<Created, DmError>
    where
        F: FnMut(&str, u64) -> (RunConfig, Run),
    {
        match self.create_run_once(group, None, make).await? {
            Creation::Made(created) => Ok(*created),
            Creation::Earlier(id) => unreachable!("no record without a key: {id}"),
        }
    }

    /// [`Datamanager::create_run`] as the `n`-th run of a request under an idempotency
    /// key (`once`): its record is read in the same transaction, so the request sent again,
    /// or twice at once, makes the run once and then gets [`Creation::Earlier`]; the same
    /// key with another request is [`DmError::Refused`].
    pub async fn create_run_once<F>(
        &self,
        group: &str,
        once: Option<(&CreateOnce, usize)>,
        mut make: F,
    ) -> Result<Creation, DmError>
    where
        F: FnMut(&str, u64) -> (RunConfig, Run),
    {
        let root = root_group(group).to_string();
        let counter_key = keys::counter(&root);
        let record_key = once.map(|(once, n)| once.record_key(n));
        let mut read = vec![keys::RUN_SEQ.to_string(), counter_key.clone()];
        read.extend(record_key.clone());
        let mut earlier = None;
        let created = self
            .update_keys("creating a run", read, |current| {
                if let (Some((once, _)), Some(key), Some(Some(kv))) =
                    (once, &record_key, current.get(2))
                {
                    earlier = Some(earlier_run(once, key, &kv.value)?);
                    return Ok(None);
                }
                let next_seq = parse_u64(current[0].as_ref().map(|kv| kv.value.as_slice()))? + 1;
                let next_counter =
                    parse_u64(current[1].as_ref().map(|kv| kv.value.as_slice()))? + 1;
                let id = keys::run_id(next_seq);
                let (config, run) = make(&id, next_counter);
                let mut ops = vec![
                    put(keys::RUN_SEQ, next_seq.to_string().into_bytes()),
                    put(counter_key.clone(), next_counter.to_string().into_bytes()),
                    put(keys::run_config(&id), encode(&config)),
                ];
                if let (Some((once, _)), Some(key)) = (once, &record_key) {
                    let record = CreateRecord {
                        fingerprint: once.fingerprint.clone(),
                        run_id: id.clone(),
                        created_at: once.at,
                    };
                    ops.push(put(key.clone(), encode(&record)));
                }
                ops.extend(run_write_ops(None, &run));
                let write = Write {
                    compare: vec![absent(keys::run(&id))],
                    ops,
                };
                Ok::<_, DmError>(Some((write, (config, run))))
            })
            .await?;
        let Some(((config, run), revision)) = created else {
            let id = earlier.expect("no write only when an earlier run was found");
            return Ok(Creation::Earlier(id));
        };
        Ok(Creation::Made(Box::new(Created {
            run: Versioned {
                value: run,
                mod_revision: revision,
            },
            config,
        })))
    }

    /// Applies `f` to run `id` and writes the result back (with its index, event and
    /// active-set changes), re-reading and re-applying on concurrent changes until the
    /// handle's context expires. Nothing is written when `f` leaves the run as it was.
    /// Returns the run as written (or as read, when unchanged).
    pub async fn update_run_with<E, F>(&self, id: &str, mut f: F) -> Result<Versioned<Run>, E>
    where
        F: FnMut(&mut Run) -> Result<(), E>,
        E: From<DmError>,
    {
        let key = keys::run(id);
        let mut unchanged_run = None;
        let written = self
            .update_keys(
                &format!("updating run {id}"),
                vec![key.clone()],
                |current| {
                    let Some(kv) = &current[0] else {
                        return Err(E::from(DmError::not_found("run", id)));
                    };
                    let prev: Run = decode(&key, &kv.value)?;
                    let mut run = prev.clone();
                    f(&mut run)?;
                    if run == prev {
                        unchanged_run = Some(Versioned {
                            value: prev,
                            mod_revision: kv.mod_revision,
                        });
                        return Ok(None);
                    }
                    let write = Write::ops(run_write_ops(Some(&prev), &run));
                    Ok(Some((write, run)))
                },
            )
            .await?;
        match written {
            Some((run, revision)) => Ok(Versioned {
                value: run,
                mod_revision: revision,
            }),
            None => Ok(unchanged_run.expect("set when nothing was written")),
        }
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

    /// Changes to one run (its own key) from revision `from` on.
    pub fn watch_run(&self, id: &str, from: i64) -> WatchStream {
        self.kv().watch(WatchRequest {
            range: KeyRange::key(keys::run(id).into_bytes()),
            start_revision: from,
            prev_kv: false,
            progress_notify: false,
            filter_put: false,
            filter_delete: false,
        })
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

    /// How many runs the store holds in `phase` (every group; runs moved into segments
    /// are not counted). Counts the root's index stream in memory without copying it:
    /// O(runs in that phase still in the store), for `/metrics`.
    pub async fn count_runs(&self, phase: RunPhase) -> Result<u64, DmError> {
        let prefix = keys::index_prefix("/", Selector::Phase(phase));
        let mut req = RangeRequest::new(KeyRange::prefix(prefix.into_bytes()));
        // A limit with keys only takes the store's fast path: the rest is counted, not copied.
        req.limit = 1;
        req.keys_only = true;
        let ctx = self.ctx();
        let resp = ctx
            .read(self.kv().range(req))
            .await
            .map_err(|e| Self::kv_error(&ctx, "counting runs", e))?;
        Ok(u64::try_from(resp.count).unwrap_or(0))
    }

    /// The oldest queued run of exactly this group, if any.
    pub async fn first_queued(&self, group: &str) -> Result<Option<String>, DmError> {
        Ok(self
            .index_page(group, Selector::Phase(RunPhase::Queued), None, true, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Whether some node's scheduler holds (or is queued for) the scheduler lock: its
    /// lock prefix has a key. No key: no scheduler is active (every node in maintenance,
    /// or the holder's session just ended and no other has taken over yet).
    pub async fn scheduler_held(&self) -> Result<bool, DmError> {
        let ctx = self.ctx();
        let mut req = store::RangeRequest::new(store::KeyRange::prefix(
            keys::SCHEDULER_LOCK.as_bytes().to_vec(),
        ));
        req.count_only = true;
        // Local and possibly a little stale, without a quorum round: this only words a
        // pending reason, asked on every read of a queued or running run.
        req.serializable = true;
        let resp = ctx
            .read(self.kv.range(req))
            .await
            .map_err(|e| Self::kv_error(&ctx, "reading the scheduler lock", e))?;
        Ok(resp.count > 0)
    }

    /// Running runs under exactly this group (at most `limit`).
    pub async fn running_in(&self, group: &str, limit: usize) -> Result<Vec<String>, DmError> {
        self.index_page(group, Selector::Phase(RunPhase::Running), None, true, limit)
            .await
    }

    /// Runs by group prefix, phase and result, newest first by default, one page at a
    /// time. Cost: O(limit × selectors), whatever the number of runs stored.
    pub async fn list_runs(&self, q: &ListRunsQuery) -> Result<RunsPage, DmError> {
        let (group, limit) = listing_scope(q)?;
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

    /// The newest run of every group under `group`, paged by group path; only those in
    /// the store (see `history` for archived ones).
    async fn list_last_runs(
        &self,
        group: &str,
        q: &ListRunsQuery,
        limit: usize,
    ) -> Result<RunsPage, DmError> {
        let (ids, next) = self.last_run_ids(group, q.cursor.as_deref(), limit).await?;
        let mut runs: Vec<Run> = self
            .runs(&ids)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        runs.retain(|r| last_run_matches(r, q));
        Ok(RunsPage { runs, next })
    }

    /// The ids of the newest run of every group under `group` (`rs/last/`, wherever
    /// the run lives), in group path order after `cursor` (a group path), at most
    /// `limit`, and the cursor of the next page.
    pub async fn last_run_ids(
        &self,
        group: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), DmError> {
        let exact = keys::last(group);
        let sub = if group == "/" {
            keys::last("/")
        } else {
            keys::last(&format!("{group}/"))
        };
        let end = store::prefix_end(sub.as_bytes());
        let start = match cursor {
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
        let next = if resp.more {
            pairs.last().map(|(g, _)| g.clone())
        } else {
            None
        };
        Ok((pairs.into_iter().map(|(_, id)| id).collect(), next))
    }
}

/// The group (canonical; `/` when none) and page size a listing asks for.
pub fn listing_scope(q: &ListRunsQuery) -> Result<(String, usize), DmError> {
    let group = match &q.group {
        Some(g) => keys::normalize_group(g).ok_or_else(|| DmError::Invalid {
            what: "group",
            why: format!("{g:?} is not a group path"),
        })?,
        None => "/".to_string(),
    };
    Ok((group, q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)))
}

/// Whether a last run passes the phase and result filters of `q`.
pub fn last_run_matches(r: &Run, q: &ListRunsQuery) -> bool {
    (q.phase.is_empty() || q.phase.contains(&r.phase))
        && (q.result.is_empty() || q.result.contains(&r.result))
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
            ops.push(put(keys::archived(&run.id), Vec::new()));
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

#[cfg(test)]
mod tests {
    use cairn_client::api::ListRunsQuery;
    use cairn_client::run::{RunPhase, RunResult};
    use cairn_client::runconfig::RunConfig;

    use super::*;
    use crate::datamanager::testing::TestStore;

    async fn create(dm: &Datamanager, group: &str) -> Versioned<Run> {
        dm.create_run(group, |id, counter| {
            let config = RunConfig {
                id: id.to_string(),
                name: "ci".into(),
                group: group.to_string(),
                ..RunConfig::default()
            };
            let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
            (config, run)
        })
        .await
        .expect("create")
        .run
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_meeting_a_conflicting_writer_re_reads_and_applies_to_the_new_run() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let id = create(&dm, "/project/a/branch/main").await.value.id;
        let mut calls = 0;
        let written = dm
            .with_ctx(raft::Ctx::timeout(std::time::Duration::from_secs(30)))
            .update_run_with(&id, |run| {
                calls += 1;
                if calls == 1 {
                    // Another writer changes the run between this read and its write.
                    let other = dm.clone();
                    let id = run.id.clone();
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async move {
                            let prev = other.run(&id).await.expect("run");
                            let mut next = prev.value.clone();
                            next.annotations.insert("other".into(), "wrote".into());
                            other.update_run(&prev, &next).await.expect("other write");
                        })
                    });
                }
                run.annotations.insert("mine".into(), calls.to_string());
                Ok::<_, DmError>(())
            })
            .await
            .expect("retried and written");
        assert_eq!(calls, 2, "the conflict made it re-read once");
        let stored = dm.run(&id).await.expect("run");
        assert_eq!(stored, written);
        assert_eq!(stored.value.annotations["other"], "wrote", "not lost");
        assert_eq!(stored.value.annotations["mine"], "2");
    }

    #[tokio::test]
    async fn an_update_past_the_callers_deadline_is_a_timeout_and_writes_nothing() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let prev = create(&dm, "/project/a/branch/main").await;
        let id = prev.value.id.clone();
        let expired = raft::Ctx::timeout(std::time::Duration::ZERO);
        let err = dm
            .with_ctx(expired.clone())
            .update_run_with(&id, |run| {
                run.stop = true;
                Ok::<_, DmError>(())
            })
            .await
            .expect_err("past its deadline");
        assert!(
            matches!(
                err,
                DmError::Timeout {
                    outcome_unknown: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("deadline exceeded"), "{err}");
        let err = dm
            .with_ctx(expired)
            .create_run("/project/a/branch/main", |_, _| unreachable!("never read"))
            .await
            .err()
            .expect("past its deadline");
        assert!(matches!(err, DmError::Timeout { .. }), "{err:?}");
        assert_eq!(dm.run(&id).await.expect("run"), prev, "nothing written");
    }

    #[tokio::test]
    async fn a_cancelled_caller_ends_its_update() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let id = create(&dm, "/project/a/branch/main").await.value.id;
        let ctx = raft::Ctx::timeout(std::time::Duration::from_secs(30));
        ctx.cancel.cancel();
        let err = dm
            .with_ctx(ctx)
            .update_run_with(&id, |_| Ok::<_, DmError>(()))
            .await
            .expect_err("cancelled");
        assert!(
            matches!(err, DmError::Kv(raft::KvError::Cancelled)),
            "{err:?}"
        );
    }

    fn ids(page: &RunsPage) -> Vec<String> {
        page.runs.iter().map(|r| r.id.clone()).collect()
    }

    #[tokio::test]
    async fn counters_are_per_root_group_and_ids_global() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let a1 = create(&dm, "/project/a/branch/main").await;
        let a2 = create(&dm, "/project/a/branch/dev").await;
        let b1 = create(&dm, "/project/b/branch/main").await;
        assert_eq!(
            (a1.value.counter, a2.value.counter, b1.value.counter),
            (1, 2, 1)
        );
        assert!(a1.value.id < a2.value.id && a2.value.id < b1.value.id);
        assert_eq!(
            dm.run_config(&b1.value.id).await.expect("config").group,
            "/project/b/branch/main"
        );
    }

    #[tokio::test]
    async fn concurrent_creations_get_unique_counters_in_id_order() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let mut handles = Vec::new();
        for _ in 0..12 {
            let dm = dm.clone();
            handles.push(tokio::spawn(async move {
                create(&dm, "/user/u/branch/main").await
            }));
        }
        let mut runs = Vec::new();
        for h in handles {
            runs.push(h.await.expect("join").value);
        }
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        let counters: Vec<u64> = runs.iter().map(|r| r.counter).collect();
        assert_eq!(counters, (1..=12).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn listing_by_group_never_matches_a_sibling_with_a_longer_name() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let p1 = create(&dm, "/project/p1/branch/main").await;
        create(&dm, "/project/p10/branch/main").await;
        let q = ListRunsQuery {
            group: Some("/project/p1".into()),
            ..ListRunsQuery::default()
        };
        assert_eq!(
            ids(&dm.list_runs(&q).await.expect("list")),
            vec![p1.value.id]
        );
    }

    #[tokio::test]
    async fn pages_walk_every_run_once_in_both_directions() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let mut all = Vec::new();
        for i in 0..7 {
            let g = if i % 2 == 0 {
                "/project/p/branch/a"
            } else {
                "/project/p/branch/b"
            };
            all.push(create(&dm, g).await.value.id);
        }
        for asc in [true, false] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let q = ListRunsQuery {
                    group: Some("/project/p".into()),
                    limit: Some(3),
                    cursor: cursor.clone(),
                    asc,
                    ..ListRunsQuery::default()
                };
                let page = dm.list_runs(&q).await.expect("list");
                assert!(page.runs.len() <= 3);
                seen.extend(ids(&page));
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut want = all.clone();
            if !asc {
                want.reverse();
            }
            assert_eq!(seen, want, "asc={asc}");
        }
    }

    #[tokio::test]
    async fn phase_and_result_indexes_follow_updates() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let r = create(&dm, "/project/p/branch/a").await;
        let other = create(&dm, "/project/p/branch/b").await;
        let mut next = r.value.clone();
        crate::runservice::start(&mut next, chrono::Utc::now()).expect("start");
        next.result = RunResult::Failed;
        dm.update_run(&r, &next).await.expect("update");
        let by = |phase: Vec<RunPhase>, result: Vec<RunResult>| ListRunsQuery {
            phase,
            result,
            ..ListRunsQuery::default()
        };
        let running = dm
            .list_runs(&by(vec![RunPhase::Running], vec![]))
            .await
            .expect("list");
        assert_eq!(ids(&running), vec![r.value.id.clone()]);
        let queued = dm
            .list_runs(&by(vec![RunPhase::Queued], vec![]))
            .await
            .expect("list");
        assert_eq!(ids(&queued), vec![other.value.id.clone()]);
        let failed = dm
            .list_runs(&by(vec![], vec![RunResult::Failed]))
            .await
            .expect("list");
        assert_eq!(ids(&failed), vec![r.value.id.clone()]);
        let both = dm
            .list_runs(&by(
                vec![RunPhase::Queued, RunPhase::Running],
                vec![RunResult::Failed],
            ))
            .await
            .expect("list");
        assert_eq!(ids(&both), vec![r.value.id.clone()]);
        assert_eq!(
            dm.first_queued("/project/p/branch/b").await.expect("q"),
            Some(other.value.id)
        );
        assert_eq!(
            dm.running_in("/project/p/branch/a", 5).await.expect("r"),
            vec![r.value.id]
        );
    }

    #[tokio::test]
    async fn a_stale_write_is_a_conflict_and_changes_nothing() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let r = create(&dm, "/project/p/branch/a").await;
        let mut a = r.value.clone();
        a.stop = true;
        dm.update_run(&r, &a).await.expect("first write");
        let mut b = r.value.clone();
        b.annotations.insert("k".into(), "v".into());
        assert!(matches!(
            dm.update_run(&r, &b).await,
            Err(DmError::Conflict(_))
        ));
        let now = dm.run(&r.value.id).await.expect("read").value;
        assert!(now.stop && now.annotations.is_empty());
    }

    #[tokio::test]
    async fn last_run_lists_the_newest_run_of_each_group() {
        let st = TestStore::start().await;
        let dm = st.dm();
        create(&dm, "/project/p/branch/a").await;
        let a2 = create(&dm, "/project/p/branch/a").await;
        let b1 = create(&dm, "/project/p/branch/b").await;
        let q = ListRunsQuery {
            group: Some("/project/p".into()),
            last_run: true,
            ..ListRunsQuery::default()
        };
        let mut got = ids(&dm.list_runs(&q).await.expect("list"));
        got.sort();
        assert_eq!(got, vec![a2.value.id, b1.value.id]);
    }

    #[tokio::test]
    async fn events_resume_after_a_sequence_without_gaps() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let r = create(&dm, "/project/p/branch/a").await;
        let mut next = r.value.clone();
        crate::runservice::start(&mut next, chrono::Utc::now()).expect("start");
        dm.update_run(&r, &next).await.expect("update");
        let (all, _) = dm.events_after(0).await.expect("events");
        let phases: Vec<RunPhase> = all.iter().map(|e| e.phase).collect();
        assert_eq!(phases, vec![RunPhase::Queued, RunPhase::Running]);
        let (rest, _) = dm.events_after(all[0].sequence).await.expect("events");
        assert_eq!(rest, all[1..].to_vec());
    }
}

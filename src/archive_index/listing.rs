//! Listing archived runs one page at a time, with the store listing's order and cursor
//! semantics (`Datamanager::list_runs`), so the two can be merged: runs by id, newest
//! first unless `asc`, strictly after the cursor (a run id), `next` set to the last id of
//! a page when more runs match. Cost: O(page) whatever the number of runs indexed, except
//! phases combined with results, which skip the runs of those phases with other results.
//!
//! `plan` and `merge_page` are pure; `ArchiveIndex::list` reads the streams in one read
//! transaction.

use std::ops::Bound;

use cairn_client::api::{ListRunsQuery, RunsPage};
use cairn_client::run::RunResult;
use redb::ReadableDatabase;

use super::tables::{self, IndexedRun, LISTING, RUNS};
use super::{ArchiveIndex, IndexError};
use crate::datamanager::keys::{self, Selector};
use crate::datamanager::runs::{DEFAULT_LIMIT, MAX_LIMIT};

/// What one listing reads: which streams, which filter, which page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPlan {
    /// The group every run listed is in or under (canonical form).
    pub group: String,
    /// One stream per selector, merged; a run is in at most one of them.
    pub selectors: Vec<Selector>,
    /// With both phases and results, phases drive the scan and results filter.
    pub results: Vec<RunResult>,
    pub cursor: Option<String>,
    pub asc: bool,
    pub limit: usize,
}

/// The plan of a query, with the store listing's defaults (group `/`, limit
/// `DEFAULT_LIMIT` clamped to `1..=MAX_LIMIT`). `last_run` is not an archive question
/// (the index keeps no per-group newest run), so it is refused.
pub fn plan(q: &ListRunsQuery) -> Result<ListPlan, IndexError> {
    if q.last_run {
        return Err(IndexError::Invalid {
            what: "query",
            why: "the archive index does not answer last-run listings".into(),
        });
    }
    let group = match &q.group {
        Some(g) => keys::normalize_group(g).ok_or_else(|| IndexError::Invalid {
            what: "group",
            why: format!("{g:?} is not a group path"),
        })?,
        None => "/".to_string(),
    };
    let (selectors, results) = if !q.phase.is_empty() {
        let sels = q.phase.iter().map(|p| Selector::Phase(*p)).collect();
        (sels, q.result.clone())
    } else if !q.result.is_empty() {
        (
            q.result.iter().map(|r| Selector::Result(*r)).collect(),
            vec![],
        )
    } else {
        (vec![Selector::All], vec![])
    };
    Ok(ListPlan {
        group,
        selectors,
        results,
        cursor: q.cursor.clone(),
        asc: q.asc,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
    })
}

/// Up to `limit` ids from `streams` (each sorted in the listing's direction: ascending
/// when `asc`, else descending), merged in that direction without duplicates, skipping
/// the ids `keep` refuses. The flag tells whether a kept id follows the page.
pub fn merge_page<I, E>(
    streams: Vec<I>,
    asc: bool,
    limit: usize,
    mut keep: impl FnMut(&str) -> Result<bool, E>,
) -> Result<(Vec<String>, bool), E>
where
    I: Iterator<Item = Result<String, E>>,
{
    let mut streams = streams;
    let mut heads = Vec::with_capacity(streams.len());
    for s in &mut streams {
        heads.push(s.next().transpose()?);
    }
    let mut page = Vec::new();
    loop {
        let best = heads
            .iter()
            .flatten()
            .fold(None::<&String>, |best, id| match best {
                Some(b) if (asc && b <= id) || (!asc && b >= id) => Some(b),
                _ => Some(id),
            })
            .cloned();
        let Some(id) = best else {
            return Ok((page, false));
        };
        for (head, stream) in heads.iter_mut().zip(&mut streams) {
            if head.as_ref() == Some(&id) {
                *head = stream.next().transpose()?;
            }
        }
        if keep(&id)? {
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push(id);
        }
    }
}

type IdStream<'a> = Box<dyn Iterator<Item = Result<String, IndexError>> + 'a>;

impl ArchiveIndex {
    /// One page of archived runs for `q` (see the module doc for the semantics).
    pub fn list(&self, q: &ListRunsQuery) -> Result<RunsPage, IndexError> {
        let plan = plan(q)?;
        let txn = self.db.begin_read()?;
        let listing = txn.open_table(LISTING)?;
        let runs = txn.open_table(RUNS)?;
        let mut streams: Vec<IdStream> = Vec::new();
        for sel in &plan.selectors {
            let prefix = tables::listing_prefix(&plan.group, *sel);
            let (lo, hi) = tables::stream_bounds(&prefix, plan.cursor.as_deref(), plan.asc);
            let range = listing.range::<&str>((as_str(&lo), as_str(&hi)))?;
            let ids = range.map(move |entry| {
                let (key, _) = entry?;
                let key = key.value();
                key.strip_prefix(prefix.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        IndexError::inconsistent(format!("listing key {key:?} outside its range"))
                    })
            });
            streams.push(if plan.asc {
                Box::new(ids)
            } else {
                Box::new(ids.rev())
            });
        }
        let result_prefixes: Vec<String> = plan
            .results
            .iter()
            .map(|r| tables::listing_prefix(&plan.group, Selector::Result(*r)))
            .collect();
        let keep = |id: &str| -> Result<bool, IndexError> {
            if result_prefixes.is_empty() {
                return Ok(true);
            }
            for p in &result_prefixes {
                if listing.get(format!("{p}{id}").as_str())?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let (ids, more) = merge_page(streams, plan.asc, plan.limit, keep)?;
        let mut page = Vec::with_capacity(ids.len());
        for id in &ids {
            let value = runs.get(id.as_str())?.ok_or_else(|| {
                IndexError::inconsistent(format!("run {id} is listed but not indexed"))
            })?;
            let indexed: IndexedRun = serde_json::from_slice(value.value())
                .map_err(|e| IndexError::undecodable("run", id, e))?;
            page.push(indexed.run);
        }
        let next = if more {
            page.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(RunsPage { runs: page, next })
    }
}

fn as_str(b: &Bound<String>) -> Bound<&str> {
    match b {
        Bound::Included(s) => Bound::Included(s.as_str()),
        Bound::Excluded(s) => Bound::Excluded(s.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use cairn_client::run::RunPhase;

    use super::*;

    fn stream(ids: &[&str]) -> std::vec::IntoIter<Result<String, ()>> {
        ids.iter()
            .map(|s| Ok(s.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn merged_streams_come_out_in_order_once() {
        let (page, more) = merge_page(
            vec![stream(&["1", "4", "6"]), stream(&["2", "4", "5"])],
            true,
            10,
            |_| Ok::<_, ()>(true),
        )
        .expect("merge");
        assert_eq!(page, ["1", "2", "4", "5", "6"]);
        assert!(!more);
        let (page, more) = merge_page(
            vec![stream(&["6", "4", "1"]), stream(&["5", "2"])],
            false,
            3,
            |_| Ok::<_, ()>(true),
        )
        .expect("merge");
        assert_eq!(page, ["6", "5", "4"]);
        assert!(more);
    }

    #[test]
    fn more_is_set_only_when_a_kept_id_follows() {
        let odd = |id: &str| Ok::<_, ()>(id.parse::<u32>().expect("number") % 2 == 1);
        let (page, more) =
            merge_page(vec![stream(&["1", "2", "3", "4"])], true, 2, odd).expect("merge");
        assert_eq!(
            (page, more),
            (vec!["1".to_string(), "3".to_string()], false)
        );
        let (page, more) =
            merge_page(vec![stream(&["1", "2", "3", "5"])], true, 2, odd).expect("merge");
        assert_eq!((page, more), (vec!["1".to_string(), "3".to_string()], true));
    }

    #[test]
    fn a_stream_error_ends_the_page() {
        let broken = vec![Ok("1".to_string()), Err("disk")].into_iter();
        let err = merge_page(vec![broken], true, 5, |_| Ok(true)).expect_err("error");
        assert_eq!(err, "disk");
    }

    #[test]
    fn plans_follow_the_store_listing() {
        let q = ListRunsQuery {
            group: Some("project/p//".into()),
            phase: vec![RunPhase::Finished],
            result: vec![RunResult::Failed],
            limit: Some(10_000),
            ..ListRunsQuery::default()
        };
        let p = plan(&q).expect("plan");
        assert_eq!(p.group, "/project/p");
        assert_eq!(p.selectors, vec![Selector::Phase(RunPhase::Finished)]);
        assert_eq!(p.results, vec![RunResult::Failed]);
        assert_eq!(p.limit, MAX_LIMIT);
        let p = plan(&ListRunsQuery::default()).expect("plan");
        assert_eq!((p.group.as_str(), p.limit), ("/", DEFAULT_LIMIT));
        assert_eq!(p.selectors, vec![Selector::All]);
        let bad = ListRunsQuery {
            group: Some("/a/../b".into()),
            ..ListRunsQuery::default()
        };
        assert!(matches!(plan(&bad), Err(IndexError::Invalid { .. })));
        let last = ListRunsQuery {
            last_run: true,
            ..ListRunsQuery::default()
        };
        assert!(matches!(plan(&last), Err(IndexError::Invalid { .. })));
    }
}

//! Listings over live and archived runs: the store's page and the index's page for the
//! same query (same order, same id cursor) merged into one ([`merge_pages`], pure), and
//! the last run of each group looked up wherever it lives.

use std::collections::BTreeMap;

use cairn_client::api::{ListRunsQuery, RunsPage};
use cairn_client::run::Run;

use super::{History, HistoryError};
use crate::datamanager::runs::{last_run_matches, listing_scope};

/// One page of `q` from both sources. The store is read first; the index is read once
/// it holds every segment recorded up to the revision the store was read at, so a run
/// that moved meanwhile is in at least one page (and shown once).
pub(super) async fn list(h: &History, q: &ListRunsQuery) -> Result<RunsPage, HistoryError> {
    let (group, limit) = listing_scope(q)?;
    if q.last_run {
        return last_runs(h, &group, q, limit).await;
    }
    let live = h.dm.list_runs(q).await?;
    h.ensure_indexed(h.dm.kv().header().revision).await?;
    let archived = h.index.list_async(q.clone()).await?;
    Ok(merge_pages(live, archived, q.asc, limit))
}

/// Two pages of one query, each in the query's order and cut after `limit` runs with a
/// `next` when more follow, merged: the first `limit` runs of both in order, a run in
/// both once (the first page's copy), and a `next` when either page had more or runs
/// were left over.
pub fn merge_pages(first: RunsPage, second: RunsPage, asc: bool, limit: usize) -> RunsPage {
    let more = first.next.is_some() || second.next.is_some();
    let mut merged: Vec<Run> = Vec::with_capacity(first.runs.len() + second.runs.len());
    let mut a = first.runs.into_iter().peekable();
    let mut b = second.runs.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => {
                if x.id == y.id {
                    b.next();
                    true
                } else {
                    (x.id < y.id) == asc
                }
            }
        };
        let next = if take_a { a.next() } else { b.next() };
        merged.extend(next);
    }
    let cut = merged.len() > limit;
    merged.truncate(limit);
    let next = if cut || more {
        merged.last().map(|r| r.id.clone())
    } else {
        None
    };
    RunsPage { runs: merged, next }
}

/// The newest run of each group under `group`: ids from the store's `rs/last/`
/// pointers, runs from the store or, for archived ones, the index.
async fn last_runs(
    h: &History,
    group: &str,
    q: &ListRunsQuery,
    limit: usize,
) -> Result<RunsPage, HistoryError> {
    let (ids, next) = h.dm.last_run_ids(group, q.cursor.as_deref(), limit).await?;
    let mut found: BTreeMap<String, Run> =
        h.dm.runs(&ids)
            .await?
            .into_iter()
            .map(|v| (v.value.id.clone(), v.value))
            .collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        h.ensure_indexed(h.dm.kv().header().revision).await?;
        let index = h.index.clone();
        let archived = index
            .call(move |i| {
                let mut out = Vec::new();
                for id in &missing {
                    out.extend(i.get(id)?.map(|e| e.run));
                }
                Ok(out)
            })
            .await?;
        found.extend(archived.into_iter().map(|r| (r.id.clone(), r)));
    }
    let runs = ids
        .iter()
        .filter_map(|id| found.remove(id))
        .filter(|r| last_run_matches(r, q))
        .collect();
    Ok(RunsPage { runs, next })
}

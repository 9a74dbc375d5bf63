//! Compaction: dropping the events of revisions below a compact revision and every version
//! that no read at or above it can see, and sizing automatic compaction's steps.

use std::collections::HashSet;

use super::{Batch, Mvcc, SCAN_PAGE, State, for_each_pair};
use crate::codec::{be, decode, from_be};
use crate::engine::{Cf, Scan};
use crate::error::StoreError;
use crate::history::{history_key, history_prefix};
use crate::kv::*;

impl Mvcc {
    /// Where a compaction from the current compact revision towards `target` should stop
    /// so that it drops about `budget` bytes of stored events at most, but at least one
    /// revision's: automatic compaction goes in such steps, each its own apply, so that no
    /// single apply holds the state machine for long (after a bulk write, say).
    pub fn compaction_step(&self, target: i64, budget: usize) -> Result<i64, StoreError> {
        let from = self.compact_revision().max(1);
        if target <= from {
            return Ok(target);
        }
        let mut bytes = 0usize;
        let mut start = be(from).to_vec();
        let stop = be(target);
        loop {
            let page = self
                .engine
                .scan(Cf::Events, &start, Some(&stop), SCAN_PAGE, false)?;
            let Some((last, _)) = page.last() else {
                return Ok(target);
            };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                bytes += v.len();
                if bytes > budget {
                    // `Compact { revision }` drops the events of revisions below it.
                    return Ok((from_be(k)? + 1).min(target));
                }
            }
        }
    }

    pub(super) fn compact(
        &self,
        st: &mut State,
        b: &mut Batch,
        revision: i64,
    ) -> Result<(), StoreError> {
        if revision <= st.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: st.compact_revision,
            });
        }
        if revision > st.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: st.revision,
            });
        }
        // Every revision in [compact_revision, revision) loses its events: first those in
        // the engine, then those applied earlier in this batch (not in the engine yet).
        // The engine is read through one view where it has one (two history lookups per
        // event; a read transaction each would dominate a big compaction). Both see the
        // same thing: what earlier batches wrote, not this one.
        let view = self.engine.view()?;
        let reader: &dyn Scan = match &view {
            Some(v) => v.as_ref(),
            None => self.engine.as_ref(),
        };
        let mut seen = HashSet::new();
        let from = be(st.compact_revision.max(1)).to_vec();
        let to = be(revision);
        for_each_pair(
            self.engine.as_ref(),
            Cf::Events,
            from,
            Some(&to),
            |rk, rv| {
                let events: Vec<Event> = decode(&rv)?;
                compact_revision_events(reader, b, &mut seen, from_be(&rk)?, &events, revision)
            },
        )?;
        let pending: Vec<(i64, Vec<Event>)> = b
            .revisions
            .iter()
            .filter(|(r, _)| *r >= st.compact_revision && *r < revision)
            .cloned()
            .collect();
        for (r, events) in &pending {
            compact_revision_events(reader, b, &mut seen, *r, events, revision)?;
        }
        st.compact_revision = revision;
        Ok(())
    }
}

/// Compacts the events of revision `r` < `revision`. Each version `r` wrote is dropped
/// when a newer version at or below `revision` exists, or when it is a deletion. The
/// first time this compaction meets a key, its versions older than `r` go too: they are
/// what an earlier compaction kept as the key's latest, and their events are gone, so
/// nothing else would ever drop them (and a deleted key would come back in reads).
fn compact_revision_events(
    reader: &dyn Scan,
    b: &mut Batch,
    seen: &mut HashSet<Vec<u8>>,
    r: i64,
    events: &[Event],
    revision: i64,
) -> Result<(), StoreError> {
    for ev in events {
        let key = &ev.kv.key;
        if seen.insert(key.clone()) {
            let older = reader.scan(
                Cf::History,
                &history_prefix(key),
                Some(&history_key(key, r)),
                usize::MAX,
                false,
            )?;
            for (k, _) in older {
                b.writes.delete(Cf::History, k);
            }
        }
        let superseded = match next_version_after(reader, b, key, r)? {
            Some(next) => next <= revision,
            None => false,
        };
        if superseded || ev.kind == EventKind::Delete {
            b.writes.delete(Cf::History, history_key(key, r));
        }
    }
    b.writes.delete(Cf::Events, be(r).to_vec());
    Ok(())
}

/// The first revision after `r` at which `key` has a version, on disk or in this batch.
fn next_version_after(
    reader: &dyn Scan,
    b: &Batch,
    key: &[u8],
    r: i64,
) -> Result<Option<i64>, StoreError> {
    let start = history_key(key, r + 1);
    let end = crate::kv::prefix_end(&history_prefix(key));
    let on_disk = match reader
        .scan(Cf::History, &start, Some(&end), 1, false)?
        .first()
    {
        Some((k, _)) => Some(from_be(&k[k.len() - 8..])?),
        None => None,
    };
    let pending = b
        .pending_history
        .get(key)
        .and_then(|revs| revs.iter().copied().filter(|&x| x > r).min());
    Ok(match (on_disk, pending) {
        (Some(a), Some(p)) => Some(a.min(p)),
        (a, p) => a.or(p),
    })
}

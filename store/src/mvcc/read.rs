//! The read path: ranges of the current index (with etcd's filters, sorts and limits, and a
//! paging fast path), reads at a past revision from the history family, txn compares, and
//! read-only txns.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::live::{Live, materialize, materialize_many};
use super::{Mvcc, State, for_each_pair};
use crate::codec::{decode, from_be};
use crate::engine::{Cf, Engine};
use crate::error::StoreError;
use crate::history::{Version, history_prefix};
use crate::kv::*;

pub(super) fn range_iter<'a>(
    current: &'a BTreeMap<Vec<u8>, Live>,
    range: &KeyRange,
) -> Box<dyn Iterator<Item = &'a Live> + 'a> {
    if range.is_single() {
        return Box::new(current.get(&range.key).into_iter());
    }
    let end = match range.end_bound() {
        Some(e) if e.as_slice() <= range.key.as_slice() => return Box::new(std::iter::empty()),
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    Box::new(
        current
            .range::<Vec<u8>, _>((Bound::Included(range.key.clone()), end))
            .map(|(_, v)| v),
    )
}

fn compare_holds(kv: Option<&KeyValue>, c: &Compare) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match (&c.target, kv) {
        (CompareTarget::Version(v), kv) => kv.map_or(0, |k| k.version).cmp(v),
        (CompareTarget::Create(v), kv) => kv.map_or(0, |k| k.create_revision).cmp(v),
        (CompareTarget::Mod(v), kv) => kv.map_or(0, |k| k.mod_revision).cmp(v),
        (CompareTarget::Lease(v), kv) => kv.map_or(0, |k| k.lease).cmp(v),
        // etcd: a value compare against an absent key is false whatever the operator.
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(k)) => k.value.as_slice().cmp(v.as_slice()),
    };
    match c.op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Less => ord == Ordering::Less,
        CompareOp::Greater => ord == Ordering::Greater,
    }
}

/// Whether compare `c` holds for live key `live` (a value compare reads a spilled value).
fn live_compare_holds(engine: &dyn Engine, live: &Live, c: &Compare) -> Result<bool, StoreError> {
    if matches!(c.target, CompareTarget::Value(_)) {
        let kv = materialize(engine, live, true)?;
        Ok(compare_holds(Some(&kv), c))
    } else {
        Ok(compare_holds(Some(&live.kv), c))
    }
}

/// Whether every compare of a txn holds. A compare over a range holds when it holds for
/// every key in it; an empty range compares like an absent key (etcd's applyCompare).
pub(super) fn compares_hold(
    engine: &dyn Engine,
    st: &State,
    compares: &[Compare],
) -> Result<bool, StoreError> {
    for c in compares {
        let holds = if c.range.is_single() {
            match st.current.get(&c.range.key) {
                None => compare_holds(None, c),
                Some(live) => live_compare_holds(engine, live, c)?,
            }
        } else {
            let mut lives = range_iter(&st.current, &c.range).peekable();
            if lives.peek().is_none() {
                compare_holds(None, c)
            } else {
                let mut all = true;
                for live in lives {
                    if !live_compare_holds(engine, live, c)? {
                        all = false;
                        break;
                    }
                }
                all
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The whole `KeyValue`s of `lives` (values read where spilled, unless `value` is false,
/// in one engine call).
pub(super) fn materialize_all<'a>(
    engine: &dyn Engine,
    lives: impl Iterator<Item = &'a Live>,
    value: bool,
) -> Result<Vec<KeyValue>, StoreError> {
    let lives: Vec<&Live> = lives.collect();
    materialize_many(engine, &lives, value)
}

pub(super) fn finish_range(
    mut kvs: Vec<KeyValue>,
    req: &RangeRequest,
    revision: i64,
) -> RangeResponse {
    kvs.retain(|kv| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    });
    let count = kvs.len() as i64;
    if req.sort_order != SortOrder::None {
        let key = |kv: &KeyValue| -> (i64, Vec<u8>) {
            match req.sort_target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, Vec::new()),
                SortTarget::Create => (kv.create_revision, Vec::new()),
                SortTarget::Mod => (kv.mod_revision, Vec::new()),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        kvs.sort_by_key(key);
        if req.sort_order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.count_only {
        kvs.clear();
    } else if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        kvs,
        more,
        count,
        revision,
    }
}

impl Mvcc {
    /// Evaluates a transaction whose branches only read, without creating a revision:
    /// compares and ranges all see the same state.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let st = self.read();
        let engine = self.engine.as_ref();
        let succeeded = compares_hold(engine, &st, &req.compare)?;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let RequestOp::Range(rr) = op else {
                return Err(StoreError::InvalidArgument("read_txn given a write".into()));
            };
            let resp = if rr.revision > 0 {
                self.range_at(&st, rr, &[])?
            } else {
                finish_range(
                    materialize_all(engine, range_iter(&st.current, &rr.range), !rr.keys_only)?,
                    rr,
                    st.revision,
                )
            };
            responses.push(ResponseOp::Range(RangeResponse {
                revision: st.revision,
                ..resp
            }));
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision: st.revision,
        })
    }

    /// A read of the current state or, with `req.revision > 0`, of a past revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        let st = self.read();
        if req.revision > 0 && req.revision < st.revision {
            return self.range_at(&st, req, &[]);
        }
        if req.revision > st.revision {
            return Err(StoreError::FutureRevision {
                requested: req.revision,
                current: st.revision,
            });
        }
        if req.page_only
            && req.limit > 0
            && !req.count_only
            && no_filters(req)
            && req.sort_target == SortTarget::Key
            && !req.range.is_single()
        {
            return page(self.engine.as_ref(), &st.current, req, st.revision);
        }
        if req.sort_order == SortOrder::None && !req.count_only && req.limit > 0 && no_filters(req)
        {
            // Fast path: stop copying at the limit, count the rest without cloning.
            let mut it = range_iter(&st.current, &req.range);
            let mut kvs = materialize_all(
                self.engine.as_ref(),
                it.by_ref().take(req.limit as usize),
                !req.keys_only,
            )?;
            let rest = it.count();
            if req.keys_only {
                kvs.iter_mut().for_each(|kv| kv.value.clear());
            }
            let count = (kvs.len() + rest) as i64;
            return Ok(RangeResponse {
                kvs,
                more: rest > 0,
                count,
                revision: st.revision,
            });
        }
        // A sort by value needs the values even when only keys are returned.
        let values = !req.keys_only || req.sort_target == SortTarget::Value;
        let kvs = materialize_all(
            self.engine.as_ref(),
            range_iter(&st.current, &req.range),
            values,
        )?;
        Ok(finish_range(kvs, req, st.revision))
    }

    /// About how many bytes of keys and values `range(req)` would return at the current
    /// revision, found without copying any: the first `limit` matches, or with a sort
    /// and a limit at most `limit` times the largest match. Filters are ignored (an
    /// upper bound). Reads at a past revision and `count_only` reads count 0.
    pub fn range_size(&self, req: &RangeRequest) -> usize {
        let st = self.read();
        if req.count_only || (req.revision > 0 && req.revision < st.revision) {
            return 0;
        }
        let size = |live: &Live| live.kv.key.len() + if req.keys_only { 0 } else { live.value_len };
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        if req.limit > 0 && req.sort_order == SortOrder::None {
            return range_iter(&st.current, &req.range)
                .take(limit)
                .map(size)
                .sum();
        }
        let (mut total, mut largest) = (0usize, 0usize);
        for live in range_iter(&st.current, &req.range) {
            let n = size(live);
            total = total.saturating_add(n);
            largest = largest.max(n);
        }
        if req.limit > 0 {
            total.min(largest.saturating_mul(limit))
        } else {
            total
        }
    }

    /// A read at `req.revision` from the history family. `pending` are the revisions that
    /// the `apply` in progress has made but not yet written to the engine.
    pub(super) fn range_at(
        &self,
        st: &State,
        req: &RangeRequest,
        pending: &[(i64, Vec<Event>)],
    ) -> Result<RangeResponse, StoreError> {
        let at = req.revision;
        if at < st.compact_revision {
            return Err(StoreError::Compacted {
                requested: at,
                compact_revision: st.compact_revision,
            });
        }
        if at > st.revision {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: st.revision,
            });
        }
        let start = crate::codec::escape(&req.range.key);
        let end = if req.range.is_single() {
            Some(crate::kv::prefix_end(&history_prefix(&req.range.key)))
        } else {
            req.range.end_bound().map(|e| crate::codec::escape(&e))
        };
        if let Some(e) = &end
            && e.as_slice() <= start.as_slice()
        {
            return Ok(finish_range(Vec::new(), req, st.revision));
        }
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut latest: Option<Version> = None;
        for_each_pair(
            self.engine.as_ref(),
            Cf::History,
            start,
            end.as_deref(),
            |k, v| {
                let rev = from_be(&k[k.len() - 8..])?;
                if rev > at {
                    return Ok(());
                }
                let ver: Version = decode(&v)?;
                if let Some(prev) = latest.take()
                    && prev.kv.key != ver.kv.key
                    && !prev.tombstone
                {
                    kvs.push(prev.kv);
                }
                latest = Some(ver);
                Ok(())
            },
        )?;
        if let Some(prev) = latest
            && !prev.tombstone
        {
            kvs.push(prev.kv);
        }
        // Pending revisions are newer than anything in the engine: replay those up to `at`.
        let mut newer = pending
            .iter()
            .filter(|(rev, _)| *rev <= at)
            .flat_map(|(_, events)| events)
            .filter(|e| req.range.contains(&e.kv.key))
            .peekable();
        if newer.peek().is_some() {
            let mut by_key: BTreeMap<Vec<u8>, KeyValue> =
                kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            for e in newer {
                match e.kind {
                    EventKind::Put => by_key.insert(e.kv.key.clone(), e.kv.clone()),
                    EventKind::Delete => by_key.remove(&e.kv.key),
                };
            }
            kvs = by_key.into_values().collect();
        }
        // History holds every key of the range in key order, so kvs is sorted by key.
        Ok(finish_range(kvs, req, st.revision))
    }
}

/// One page of a key-ordered range (either direction) without counting the rest.
fn page(
    engine: &dyn Engine,
    current: &BTreeMap<Vec<u8>, Live>,
    req: &RangeRequest,
    revision: i64,
) -> Result<RangeResponse, StoreError> {
    let end = match req.range.end_bound() {
        Some(e) if e.as_slice() <= req.range.key.as_slice() => {
            return Ok(RangeResponse {
                revision,
                ..RangeResponse::default()
            });
        }
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    let it = current.range::<Vec<u8>, _>((Bound::Included(req.range.key.clone()), end));
    let take = req.limit as usize + 1;
    let mut lives: Vec<&Live> = if req.sort_order == SortOrder::Descend {
        it.rev().take(take).map(|(_, v)| v).collect()
    } else {
        it.take(take).map(|(_, v)| v).collect()
    };
    let more = lives.len() > req.limit as usize;
    lives.truncate(req.limit as usize);
    let mut kvs = materialize_all(engine, lives.into_iter(), !req.keys_only)?;
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse {
        count: kvs.len() as i64 + i64::from(more),
        kvs,
        more,
        revision,
    })
}

fn no_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision == 0
        && req.max_mod_revision == 0
        && req.min_create_revision == 0
        && req.max_create_revision == 0
}

//! The write path: one command's revision ([`Rev`] records each put and deletion in the
//! current index, the history family and the revision's events), txns with etcd's
//! validation rules, and lease grant, revoke, expiry and checkpoints.

use std::collections::BTreeSet;

use super::live::{Live, materialize};
use super::read::{compares_hold, finish_range, materialize_all, range_iter};
use super::{Batch, LeaseState, Mvcc, State};
use crate::codec::{be, encode};
use crate::command::{Command, CommandResult};
use crate::engine::Cf;
use crate::error::StoreError;
use crate::history::{Version, history_key};
use crate::kv::*;

/// The writes of one revision in progress.
struct Rev<'a> {
    st: &'a mut State,
    b: &'a mut Batch,
    rev: i64,
    events: Vec<Event>,
}

impl<'a> Rev<'a> {
    /// Opens the revision after the store's current one.
    fn new(st: &'a mut State, b: &'a mut Batch) -> Self {
        let rev = st.revision + 1;
        Self {
            st,
            b,
            rev,
            events: Vec::new(),
        }
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        let prev = match self.st.current.get(&req.key) {
            Some(live) => Some(materialize(self.b.engine.as_ref(), live, true)?),
            None => None,
        };
        let value = if req.ignore_value {
            prev.as_ref().ok_or(StoreError::KeyNotFound)?.value.clone()
        } else {
            req.value.clone()
        };
        let lease = if req.ignore_lease {
            prev.as_ref().ok_or(StoreError::KeyNotFound)?.lease
        } else {
            req.lease
        };
        if lease != 0 && !self.st.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let kv = KeyValue {
            key: req.key.clone(),
            value,
            create_revision: prev.as_ref().map_or(self.rev, |p| p.create_revision),
            mod_revision: self.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        if let Some(p) = &prev
            && p.lease != 0
            && p.lease != lease
            && let Some(l) = self.st.leases.get_mut(&p.lease)
        {
            l.keys.remove(&req.key);
        }
        if lease != 0
            && let Some(l) = self.st.leases.get_mut(&lease)
        {
            l.keys.insert(req.key.clone());
        }
        self.record(kv.clone(), false, prev.clone());
        self.st.current.insert(req.key.clone(), Live::fresh(kv));
        self.b.fresh.push(req.key.clone());
        Ok(PutResponse {
            revision: self.rev,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let doomed = materialize_all(
            self.b.engine.as_ref(),
            range_iter(&self.st.current, &req.range),
            true,
        )?;
        for prev in &doomed {
            self.delete_key(prev.clone());
        }
        Ok(DeleteRangeResponse {
            revision: if doomed.is_empty() {
                self.rev - 1
            } else {
                self.rev
            },
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    fn delete_key(&mut self, prev: KeyValue) {
        self.st.current.remove(&prev.key);
        if prev.lease != 0
            && let Some(l) = self.st.leases.get_mut(&prev.lease)
        {
            l.keys.remove(&prev.key);
        }
        let kv = KeyValue {
            key: prev.key.clone(),
            mod_revision: self.rev,
            ..KeyValue::default()
        };
        self.record(kv, true, Some(prev));
    }

    fn record(&mut self, kv: KeyValue, tombstone: bool, prev: Option<KeyValue>) {
        let key = kv.key.clone();
        match (&tombstone, self.st.current.get(&key)) {
            (false, _) => self.b.writes.put(Cf::Current, key.clone(), encode(&kv)),
            (true, _) => self.b.writes.delete(Cf::Current, key.clone()),
        }
        let version = Version {
            kv: kv.clone(),
            tombstone,
        };
        self.b
            .writes
            .put(Cf::History, history_key(&key, self.rev), encode(&version));
        self.b
            .pending_history
            .entry(key)
            .or_default()
            .push(self.rev);
        let kind = if tombstone {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        self.events.push(Event {
            kind,
            kv,
            prev_kv: prev,
        });
    }

    /// Closes the revision: returns the revision the store is at afterwards.
    fn finish(self) -> i64 {
        if self.events.is_empty() {
            return self.rev - 1;
        }
        self.st.revision = self.rev;
        self.b
            .writes
            .put(Cf::Events, be(self.rev).to_vec(), encode(&self.events));
        self.b.revisions.push((self.rev, self.events));
        self.rev
    }
}

impl Mvcc {
    pub(super) fn apply_one(
        &self,
        st: &mut State,
        b: &mut Batch,
        cmd: Command,
    ) -> Result<CommandResult, StoreError> {
        Ok(match cmd {
            Command::Put(req) => {
                let mut r = Rev::new(st, b);
                let resp = r.put(&req)?;
                r.finish();
                CommandResult::Put(resp)
            }
            Command::DeleteRange(req) => {
                let mut r = Rev::new(st, b);
                let mut resp = r.delete_range(&req)?;
                resp.revision = r.finish();
                CommandResult::DeleteRange(resp)
            }
            Command::Txn(req) => CommandResult::Txn(self.txn(st, b, req)?),
            Command::Alarm { action, member } => super::set_alarm(st, b, action, member),
            Command::Compact { revision } => {
                self.compact(st, b, revision)?;
                CommandResult::Compact {
                    revision: st.revision,
                }
            }
            Command::LeaseGrant { id, ttl } => {
                if ttl <= 0 {
                    return Err(StoreError::InvalidArgument(format!(
                        "lease TTL must be positive, got {ttl}"
                    )));
                }
                if ttl > crate::command::MAX_LEASE_TTL {
                    return Err(StoreError::LeaseTtlTooLarge {
                        ttl,
                        max: crate::command::MAX_LEASE_TTL,
                    });
                }
                let id = if id == 0 {
                    let mut next = st.next_lease_id.max(1);
                    while st.leases.contains_key(&next) {
                        next += 1;
                    }
                    st.next_lease_id = next + 1;
                    next
                } else if id < 0 {
                    return Err(StoreError::InvalidArgument(format!(
                        "lease id must be positive, got {id}"
                    )));
                } else if st.leases.contains_key(&id) {
                    return Err(StoreError::LeaseExists(id));
                } else {
                    id
                };
                st.leases.insert(
                    id,
                    LeaseState {
                        ttl,
                        remaining_ttl: None,
                        keys: BTreeSet::new(),
                    },
                );
                let rec = LeaseRecord {
                    id,
                    ttl,
                    remaining_ttl: None,
                };
                b.writes.put(Cf::Lease, be(id).to_vec(), encode(&rec));
                CommandResult::LeaseGrant {
                    id,
                    ttl,
                    revision: st.revision,
                }
            }
            Command::LeaseRevoke { id } => {
                if !st.leases.contains_key(&id) {
                    return Err(StoreError::LeaseNotFound(id));
                }
                revoke(st, b, id)?;
                CommandResult::LeaseRevoke {
                    revision: st.revision,
                }
            }
            Command::LeaseExpire { ids } => {
                let mut expired = Vec::new();
                for id in ids {
                    if st.leases.contains_key(&id) {
                        revoke(st, b, id)?;
                        expired.push(id);
                    }
                }
                CommandResult::LeaseExpire {
                    revision: st.revision,
                    expired,
                }
            }
            Command::LeaseCheckpoint { checkpoints } => {
                for (id, remaining) in checkpoints {
                    checkpoint(st, b, id, remaining);
                }
                CommandResult::LeaseCheckpoint {
                    revision: st.revision,
                }
            }
            Command::Batch(_) => {
                return Err(StoreError::InvalidArgument("batches do not nest".into()));
            }
            Command::Incr { key, delta } => {
                let current = match st.current.get(&key) {
                    None => None,
                    Some(live) => Some(materialize(b.engine.as_ref(), live, true)?),
                };
                let (current, lease) = match current {
                    None => (0u64, 0),
                    Some(kv) => {
                        let n = std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .ok_or_else(|| StoreError::NotANumber {
                                key: String::from_utf8_lossy(&key).into_owned(),
                            })?;
                        (n, kv.lease)
                    }
                };
                let value = current.saturating_add(delta);
                let mut r = Rev::new(st, b);
                let req = PutRequest {
                    key,
                    value: value.to_string().into_bytes(),
                    lease,
                    ..PutRequest::default()
                };
                r.put(&req)?;
                let revision = r.finish();
                CommandResult::Incr { value, revision }
            }
        })
    }

    fn txn(
        &self,
        st: &mut State,
        b: &mut Batch,
        req: TxnRequest,
    ) -> Result<TxnResponse, StoreError> {
        let succeeded = compares_hold(self.engine.as_ref(), st, &req.compare)?;
        let ops = if succeeded { req.success } else { req.failure };
        validate_txn_ops(st, &ops)?;
        let mut r = Rev::new(st, b);
        let rev = r.rev;
        let mut responses = Vec::with_capacity(ops.len());
        for op in &ops {
            responses.push(match op {
                RequestOp::Range(rr) => {
                    if rr.revision > 0 {
                        ResponseOp::Range(self.range_at(r.st, rr, &r.b.revisions)?)
                    } else {
                        let values = !rr.keys_only || rr.sort_target == SortTarget::Value;
                        let kvs = materialize_all(
                            r.b.engine.as_ref(),
                            range_iter(&r.st.current, &rr.range),
                            values,
                        )?;
                        ResponseOp::Range(finish_range(kvs, rr, rev))
                    }
                }
                RequestOp::Put(p) => ResponseOp::Put(r.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(r.delete_range(d)?),
            });
        }
        let revision = r.finish();
        // Every op of a txn reports the txn's final revision, as etcd does.
        for resp in &mut responses {
            match resp {
                ResponseOp::Range(x) => x.revision = revision,
                ResponseOp::Put(x) => x.revision = revision,
                ResponseOp::DeleteRange(x) => x.revision = revision,
            }
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision,
        })
    }
}

/// Records a lease's checkpointed remaining TTL, in memory and in the lease family (so a
/// restart or a snapshot keeps it). A remaining TTL at or above the granted one (a
/// renewal) clears it; a negative one counts as 0; an unknown lease is skipped. No
/// revision: the key-value state does not change.
fn checkpoint(st: &mut State, b: &mut Batch, id: i64, remaining: i64) {
    let Some(lease) = st.leases.get_mut(&id) else {
        return;
    };
    let remaining_ttl = (remaining < lease.ttl).then_some(remaining.max(0));
    if lease.remaining_ttl == remaining_ttl {
        return;
    }
    lease.remaining_ttl = remaining_ttl;
    let rec = LeaseRecord {
        id,
        ttl: lease.ttl,
        remaining_ttl,
    };
    b.writes.put(Cf::Lease, be(id).to_vec(), encode(&rec));
}

fn revoke(st: &mut State, b: &mut Batch, id: i64) -> Result<(), StoreError> {
    let keys: Vec<Vec<u8>> = st
        .leases
        .get(&id)
        .map(|l| l.keys.iter().cloned().collect())
        .unwrap_or_default();
    let mut r = Rev::new(st, b);
    for k in keys {
        let prev = match r.st.current.get(&k) {
            Some(live) => materialize(r.b.engine.as_ref(), live, true)?,
            None => continue,
        };
        r.delete_key(prev);
    }
    r.finish();
    st.leases.remove(&id);
    b.writes.delete(Cf::Lease, be(id).to_vec());
    Ok(())
}

/// etcd's txn rules: no key is written twice in one branch, puts need their lease and,
/// with `ignore_*`, their key, and reads at a past revision need that revision. As in etcd,
/// the writes are checked against each other before anything is checked against the state.
fn validate_txn_ops(st: &State, ops: &[RequestOp]) -> Result<(), StoreError> {
    // Both checks are O(log n) per op: a branch of many puts and deletions is not quadratic.
    let deleted = DeletedRanges::of(ops);
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        if let RequestOp::Put(p) = op
            && (!puts.insert(&p.key) || deleted.contains(&p.key))
        {
            return Err(StoreError::DuplicateKey(
                String::from_utf8_lossy(&p.key).into_owned(),
            ));
        }
    }
    for op in ops {
        match op {
            RequestOp::Put(p) => {
                let existing = st.current.get(&p.key);
                if (p.ignore_value || p.ignore_lease) && existing.is_none() {
                    return Err(StoreError::KeyNotFound);
                }
                if !p.ignore_lease && p.lease != 0 && !st.leases.contains_key(&p.lease) {
                    return Err(StoreError::LeaseNotFound(p.lease));
                }
            }
            // A read at a past revision must be possible before anything is written: failing
            // half-way through the ops would leave the earlier ones applied.
            RequestOp::Range(r) if r.revision > 0 => {
                if r.revision < st.compact_revision {
                    return Err(StoreError::Compacted {
                        requested: r.revision,
                        compact_revision: st.compact_revision,
                    });
                }
                if r.revision > st.revision {
                    return Err(StoreError::FutureRevision {
                        requested: r.revision,
                        current: st.revision,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The union of one branch's delete ranges, answering "does the branch delete this key" in
/// O(log n): the ranges sorted by start, each with the farthest end among it and every range
/// that starts before it. A key is deleted exactly when the farthest end among the ranges
/// starting at or before it lies beyond it.
struct DeletedRanges<'a> {
    starts: Vec<&'a [u8]>,
    /// `reach[i]`: the largest exclusive end of ranges `0..=i`; `None` is "no upper bound".
    reach: Vec<Option<Vec<u8>>>,
}

impl<'a> DeletedRanges<'a> {
    fn of(ops: &'a [RequestOp]) -> Self {
        let mut ranges: Vec<(&[u8], Option<Vec<u8>>)> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::DeleteRange(d) => Some((d.range.key.as_slice(), d.range.end_bound())),
                _ => None,
            })
            .collect();
        ranges.sort_by(|a, b| a.0.cmp(b.0));
        let mut reach: Vec<Option<Vec<u8>>> = Vec::with_capacity(ranges.len());
        let mut starts = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            let farthest = match (reach.last(), end) {
                (None, end) => end,
                (Some(None), _) | (Some(Some(_)), None) => None,
                (Some(Some(before)), Some(end)) => Some(end.max(before.clone())),
            };
            starts.push(start);
            reach.push(farthest);
        }
        Self { starts, reach }
    }

    fn contains(&self, key: &[u8]) -> bool {
        let before = self.starts.partition_point(|s| *s <= key);
        match before.checked_sub(1).map(|i| &self.reach[i]) {
            None => false,
            Some(None) => true,
            Some(Some(end)) => key < end.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(key: &[u8], range_end: &[u8]) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::interval(key.to_vec(), range_end.to_vec()),
            ..Default::default()
        })
    }

    /// Against the plain definition (some range contains the key), over every small key
    /// and every branch of up to three ranges drawn from a small alphabet.
    #[test]
    fn deleted_ranges_agree_with_each_ranges_contains() {
        let bounds: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            b"a".to_vec(),
            b"b".to_vec(),
            b"bb".to_vec(),
            b"c".to_vec(),
        ];
        let keys: Vec<Vec<u8>> = [&b""[..], b"a", b"a\0", b"b", b"ba", b"bb", b"c", b"d"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        let mut ranges = Vec::new();
        for k in &bounds {
            for e in &bounds {
                ranges.push(delete(k, e));
            }
        }
        let mut checked = 0;
        for a in &ranges {
            for b in &ranges {
                for c in ranges.iter().step_by(5) {
                    let ops = vec![
                        a.clone(),
                        RequestOp::Put(PutRequest::default()),
                        b.clone(),
                        c.clone(),
                    ];
                    let union = DeletedRanges::of(&ops);
                    for key in &keys {
                        let want = ops.iter().any(
                            |o| matches!(o, RequestOp::DeleteRange(d) if d.range.contains(key)),
                        );
                        assert_eq!(union.contains(key), want, "key {key:?} in {ops:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
    }
}

//! The MVCC key-value state machine: etcd v3's data model over an [`Engine`].
//!
//! The current value of every key and the lease table live in memory (rebuilt from the
//! engine on open) so current reads never touch the disk; every version of every key and
//! the events of every revision live in the engine until compacted, for reads at a past
//! revision and for watch catch-up. [`Mvcc::apply`] applies a batch of commands as one
//! atomic engine write that also carries the caller's metadata (the Raft applied log id),
//! then publishes the new revisions to the [`WatchHub`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::codec::{be, decode, encode, from_be, history_key, history_prefix};
use crate::command::{Command, CommandResult};
use crate::engine::{Cf, Durability, Engine, Scan, WriteBatch};
use crate::error::StoreError;
use crate::kv::*;
use crate::snapshot::{SnapshotReader, SnapshotWriter};
use crate::watch::WatchHub;

const META_REVISION: &[u8] = b"revision";
const META_COMPACT: &[u8] = b"compact_revision";
const META_NEXT_LEASE: &[u8] = b"next_lease_id";
const SCAN_PAGE: usize = 1024;

/// A record of the history family: one version of a key, or its deletion.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Version {
    kv: KeyValue,
    tombstone: bool,
}

#[derive(Clone, Debug, Default)]
struct LeaseState {
    ttl: i64,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Default)]
struct State {
    current: BTreeMap<Vec<u8>, KeyValue>,
    revision: i64,
    compact_revision: i64,
    next_lease_id: i64,
    leases: BTreeMap<i64, LeaseState>,
}

/// The state machine. Cheap to share behind an `Arc`; reads take a shared lock, `apply`
/// an exclusive one.
pub struct Mvcc {
    engine: Arc<dyn Engine>,
    state: RwLock<State>,
    hub: WatchHub,
}

/// Collects the writes and events of one `apply` call.
struct Batch {
    writes: WriteBatch,
    /// (revision, events) in revision order, for the watch hub.
    revisions: Vec<(i64, Vec<Event>)>,
    /// History versions written by this batch (not yet in the engine), per key.
    pending_history: HashMap<Vec<u8>, Vec<i64>>,
}

/// The writes of one revision in progress.
struct Rev<'a> {
    st: &'a mut State,
    b: &'a mut Batch,
    rev: i64,
    events: Vec<Event>,
}

impl Rev<'_> {
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        let prev = self.st.current.get(&req.key).cloned();
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
        self.st.current.insert(req.key.clone(), kv);
        Ok(PutResponse {
            revision: self.rev,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = range_iter(&self.st.current, &req.range).cloned().collect();
        for prev in &doomed {
            self.delete_key(prev.clone());
        }
        DeleteRangeResponse {
            revision: if doomed.is_empty() {
                self.rev - 1
            } else {
                self.rev
            },
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        }
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

fn range_iter<'a>(
    current: &'a BTreeMap<Vec<u8>, KeyValue>,
    range: &KeyRange,
) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
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

/// Whether every compare of a txn holds. A compare over a range holds when it holds for
/// every key in it; an empty range compares like an absent key (etcd's applyCompare).
fn compares_hold(st: &State, compares: &[Compare]) -> bool {
    compares.iter().all(|c| {
        if c.range.is_single() {
            return compare_holds(st.current.get(&c.range.key), c);
        }
        let mut kvs = range_iter(&st.current, &c.range).peekable();
        if kvs.peek().is_none() {
            compare_holds(None, c)
        } else {
            kvs.all(|kv| compare_holds(Some(kv), c))
        }
    })
}

fn finish_range(mut kvs: Vec<KeyValue>, req: &RangeRequest, revision: i64) -> RangeResponse {
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
    /// Opens the state machine over `engine`, loading the current index and lease table.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self, StoreError> {
        let state = load_state(engine.as_ref())?;
        let hub = WatchHub::new(engine.clone(), state.revision, state.compact_revision);
        Ok(Self {
            engine,
            state: RwLock::new(state),
            hub,
        })
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves the state as the panicking apply left it;
        // the apply path does not panic on data, so recover the guard.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    /// The revision below which history is gone.
    pub fn compact_revision(&self) -> i64 {
        self.read().compact_revision
    }

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

    /// Number of live keys.
    pub fn key_count(&self) -> usize {
        self.read().current.len()
    }

    /// Applies commands in order as one atomic engine write, together with `extra` (the
    /// caller's metadata, such as the Raft applied log id). `None` items are entries with
    /// nothing to apply. Deterministic rejections (unknown lease, …) become
    /// [`CommandResult::Error`]; an `Err` is a storage failure and leaves this replica unusable.
    pub fn apply(
        &self,
        commands: Vec<Option<Command>>,
        extra: WriteBatch,
    ) -> Result<Vec<CommandResult>, StoreError> {
        let mut st = self.write();
        let mut b = Batch {
            writes: WriteBatch::new(),
            revisions: Vec::new(),
            pending_history: HashMap::new(),
        };
        let mut results = Vec::with_capacity(commands.len());
        for cmd in commands {
            let r = match cmd {
                None => CommandResult::None {
                    revision: st.revision,
                },
                Some(Command::Batch(cmds)) => CommandResult::Batch(
                    cmds.into_iter()
                        .map(|cmd| self.apply_or_reject(&mut st, &mut b, cmd))
                        .collect(),
                ),
                Some(cmd) => self.apply_or_reject(&mut st, &mut b, cmd),
            };
            results.push(r);
        }
        b.writes
            .put(Cf::Meta, META_REVISION, be(st.revision).to_vec());
        b.writes
            .put(Cf::Meta, META_COMPACT, be(st.compact_revision).to_vec());
        b.writes
            .put(Cf::Meta, META_NEXT_LEASE, be(st.next_lease_id).to_vec());
        b.writes.extend(extra);
        self.engine.write(b.writes, Durability::Buffered)?;
        self.hub
            .publish(b.revisions, st.revision, st.compact_revision);
        Ok(results)
    }

    fn apply_or_reject(&self, st: &mut State, b: &mut Batch, cmd: Command) -> CommandResult {
        self.apply_one(st, b, cmd)
            .unwrap_or_else(CommandResult::Error)
    }

    fn apply_one(
        &self,
        st: &mut State,
        b: &mut Batch,
        cmd: Command,
    ) -> Result<CommandResult, StoreError> {
        let rev = st.revision + 1;
        Ok(match cmd {
            Command::Put(req) => {
                let mut r = Rev {
                    st,
                    b,
                    rev,
                    events: Vec::new(),
                };
                let resp = r.put(&req)?;
                r.finish();
                CommandResult::Put(resp)
            }
            Command::DeleteRange(req) => {
                let mut r = Rev {
                    st,
                    b,
                    rev,
                    events: Vec::new(),
                };
                let mut resp = r.delete_range(&req);
                resp.revision = r.finish();
                CommandResult::DeleteRange(resp)
            }
            Command::Txn(req) => CommandResult::Txn(self.txn(st, b, req)?),
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
                        keys: BTreeSet::new(),
                    },
                );
                b.writes
                    .put(Cf::Lease, be(id).to_vec(), encode(&LeaseRecord { id, ttl }));
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
                revoke(st, b, id);
                CommandResult::LeaseRevoke {
                    revision: st.revision,
                }
            }
            Command::LeaseExpire { ids } => {
                let mut expired = Vec::new();
                for id in ids {
                    if st.leases.contains_key(&id) {
                        revoke(st, b, id);
                        expired.push(id);
                    }
                }
                CommandResult::LeaseExpire {
                    revision: st.revision,
                    expired,
                }
            }
            Command::Batch(_) => {
                return Err(StoreError::InvalidArgument("batches do not nest".into()));
            }
            Command::Incr { key, delta } => {
                let (current, lease) = match st.current.get(&key) {
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
                let mut r = Rev {
                    st,
                    b,
                    rev,
                    events: Vec::new(),
                };
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
        let succeeded = compares_hold(st, &req.compare);
        let ops = if succeeded { req.success } else { req.failure };
        validate_txn_ops(st, &ops)?;
        let rev = st.revision + 1;
        let mut r = Rev {
            st,
            b,
            rev,
            events: Vec::new(),
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in &ops {
            responses.push(match op {
                RequestOp::Range(rr) => {
                    if rr.revision > 0 {
                        ResponseOp::Range(self.range_at(r.st, rr, &r.b.revisions)?)
                    } else {
                        let kvs = range_iter(&r.st.current, &rr.range).cloned().collect();
                        ResponseOp::Range(finish_range(kvs, rr, rev))
                    }
                }
                RequestOp::Put(p) => ResponseOp::Put(r.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(r.delete_range(d)),
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

    /// Evaluates a transaction whose branches only read, without creating a revision:
    /// compares and ranges all see the same state.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let st = self.read();
        let succeeded = compares_hold(&st, &req.compare);
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
                    range_iter(&st.current, &rr.range).cloned().collect(),
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

    fn compact(&self, st: &mut State, b: &mut Batch, revision: i64) -> Result<(), StoreError> {
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
            return Ok(page(&st.current, req, st.revision));
        }
        if req.sort_order == SortOrder::None && !req.count_only && req.limit > 0 && no_filters(req)
        {
            // Fast path: stop copying at the limit, count the rest without cloning.
            let mut it = range_iter(&st.current, &req.range);
            let mut kvs: Vec<KeyValue> = it.by_ref().take(req.limit as usize).cloned().collect();
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
        let kvs = range_iter(&st.current, &req.range).cloned().collect();
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
        let size = |kv: &KeyValue| kv.key.len() + if req.keys_only { 0 } else { kv.value.len() };
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        if req.limit > 0 && req.sort_order == SortOrder::None {
            return range_iter(&st.current, &req.range)
                .take(limit)
                .map(size)
                .sum();
        }
        let (mut total, mut largest) = (0usize, 0usize);
        for kv in range_iter(&st.current, &req.range) {
            let n = size(kv);
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
    fn range_at(
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

    /// Granted TTL and attached keys of a lease.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        let st = self.read();
        st.leases.get(&id).map(|l| LeaseInfo {
            id,
            granted_ttl: l.ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// Every lease as (id, granted TTL).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.read()
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl))
            .collect()
    }

    /// Reads a metadata record another layer stored through `apply`'s `extra` batch.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.engine.get(Cf::Meta, key)?)
    }

    /// Writes a consistent point-in-time copy of the whole state machine (no concurrent
    /// apply can interleave: the state lock is held while copying).
    pub fn dump(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        self.snapshot()?.write_to(out)
    }

    /// Fixes the state as of now for a later [`StateSnapshot::write_to`]. Where the engine
    /// has a point-in-time view this is cheap and applies go on while the dump is written;
    /// otherwise the dump is written to memory here, holding applies up for its duration.
    pub fn snapshot(&self) -> Result<StateSnapshot, StoreError> {
        let _st = self.read();
        if let Some(view) = self.engine.view()? {
            return Ok(StateSnapshot(Fixed::View(view)));
        }
        let mut dumped = Vec::new();
        write_dump(self.engine.as_ref(), &mut dumped)?;
        Ok(StateSnapshot(Fixed::Dumped(dumped)))
    }

    /// Replaces the whole state machine with a dump, atomically (one synced engine write),
    /// then reloads the in-memory state. `extra` is written in the same batch. Watchers are
    /// moved back to catch-up so they see the installed history, or are cancelled as
    /// compacted when it no longer reaches them.
    pub fn restore(&self, input: &mut dyn Read, extra: WriteBatch) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        for cf in Cf::STATE_MACHINE {
            batch.delete_range(cf, Vec::new(), None);
        }
        let mut r = SnapshotReader::new(input)?;
        while let Some((cf, k, v)) = r.next_record()? {
            if !Cf::STATE_MACHINE.contains(&cf) {
                return Err(StoreError::corrupt(format!(
                    "snapshot holds a record of {cf:?}"
                )));
            }
            batch.put(cf, k, v);
        }
        batch.extend(extra);
        let mut st = self.write();
        self.engine.write(batch, Durability::Sync)?;
        *st = load_state(self.engine.as_ref())?;
        self.hub.reset(st.revision, st.compact_revision);
        Ok(())
    }
}

/// The state machine as of one moment (see [`Mvcc::snapshot`]).
pub struct StateSnapshot(Fixed);

enum Fixed {
    View(Box<dyn Scan>),
    Dumped(Vec<u8>),
}

impl StateSnapshot {
    /// Writes the dump [`Mvcc::restore`] reads.
    pub fn write_to(self, out: &mut dyn Write) -> Result<(), StoreError> {
        match self.0 {
            Fixed::View(view) => write_dump(view.as_ref(), out),
            Fixed::Dumped(bytes) => out
                .write_all(&bytes)
                .map_err(|e| StoreError::Storage(format!("writing a snapshot: {e}"))),
        }
    }
}

/// Writes every state-machine family of `from` as a snapshot dump.
fn write_dump(from: &dyn Scan, out: &mut dyn Write) -> Result<(), StoreError> {
    let mut w = SnapshotWriter::new(out)?;
    for cf in Cf::STATE_MACHINE {
        for_each_pair(from, cf, Vec::new(), None, |k, v| w.record(cf, &k, &v))?;
    }
    w.finish()
}

/// One page of a key-ordered range (either direction) without counting the rest.
fn page(current: &BTreeMap<Vec<u8>, KeyValue>, req: &RangeRequest, revision: i64) -> RangeResponse {
    let end = match req.range.end_bound() {
        Some(e) if e.as_slice() <= req.range.key.as_slice() => {
            return RangeResponse {
                revision,
                ..RangeResponse::default()
            };
        }
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    let it = current.range::<Vec<u8>, _>((Bound::Included(req.range.key.clone()), end));
    let take = req.limit as usize + 1;
    let mut kvs: Vec<KeyValue> = if req.sort_order == SortOrder::Descend {
        it.rev().take(take).map(|(_, v)| v.clone()).collect()
    } else {
        it.take(take).map(|(_, v)| v.clone()).collect()
    };
    let more = kvs.len() > req.limit as usize;
    kvs.truncate(req.limit as usize);
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    RangeResponse {
        count: kvs.len() as i64 + i64::from(more),
        kvs,
        more,
        revision,
    }
}

fn no_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision == 0
        && req.max_mod_revision == 0
        && req.min_create_revision == 0
        && req.max_create_revision == 0
}

fn revoke(st: &mut State, b: &mut Batch, id: i64) {
    let keys: Vec<Vec<u8>> = st
        .leases
        .get(&id)
        .map(|l| l.keys.iter().cloned().collect())
        .unwrap_or_default();
    let rev = st.revision + 1;
    let mut r = Rev {
        st,
        b,
        rev,
        events: Vec::new(),
    };
    for k in keys {
        if let Some(kv) = r.st.current.get(&k).cloned() {
            r.delete_key(kv);
        }
    }
    r.finish();
    st.leases.remove(&id);
    b.writes.delete(Cf::Lease, be(id).to_vec());
}

/// etcd's txn rules: no key is written twice in one branch, puts need their lease and,
/// with `ignore_*`, their key, and reads at a past revision need that revision.
fn validate_txn_ops(st: &State, ops: &[RequestOp]) -> Result<(), StoreError> {
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        match op {
            RequestOp::Put(p) => {
                if !puts.insert(&p.key) {
                    return Err(StoreError::DuplicateKey(
                        String::from_utf8_lossy(&p.key).into_owned(),
                    ));
                }
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
    for op in ops {
        if let RequestOp::DeleteRange(d) = op
            && let Some(k) = puts.iter().find(|k| d.range.contains(k))
        {
            return Err(StoreError::DuplicateKey(
                String::from_utf8_lossy(k).into_owned(),
            ));
        }
    }
    Ok(())
}

fn load_state(engine: &dyn Engine) -> Result<State, StoreError> {
    let meta = |k: &[u8]| -> Result<Option<i64>, StoreError> {
        engine.get(Cf::Meta, k)?.map(|v| from_be(&v)).transpose()
    };
    let mut st = State {
        revision: meta(META_REVISION)?.unwrap_or(1),
        compact_revision: meta(META_COMPACT)?.unwrap_or(0),
        next_lease_id: meta(META_NEXT_LEASE)?.unwrap_or(1),
        ..State::default()
    };
    for_each_pair(engine, Cf::Lease, Vec::new(), None, |_, v| {
        let rec: LeaseRecord = decode(&v)?;
        let lease = LeaseState {
            ttl: rec.ttl,
            keys: BTreeSet::new(),
        };
        st.leases.insert(rec.id, lease);
        Ok(())
    })?;
    for_each_pair(engine, Cf::Current, Vec::new(), None, |k, v| {
        let kv: KeyValue = decode(&v)?;
        if kv.lease != 0
            && let Some(l) = st.leases.get_mut(&kv.lease)
        {
            l.keys.insert(k.clone());
        }
        st.current.insert(k, kv);
        Ok(())
    })?;
    Ok(st)
}

/// Visits every pair of `[start, end)` in `cf` in key order, a page at a time, so a large
/// family is never read into memory at once.
fn for_each_pair(
    engine: &dyn Scan,
    cf: Cf,
    start: Vec<u8>,
    end: Option<&[u8]>,
    mut f: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut from = start;
    loop {
        let page = engine.scan(cf, &from, end, SCAN_PAGE, false)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        from = last.clone();
        from.push(0);
        for (k, v) in page {
            f(k, v)?;
        }
    }
}

/// Reads the events of revisions `[from, to]` (at most `limit` revisions) from the engine.
pub(crate) fn read_events(
    engine: &dyn Engine,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<(i64, Vec<Event>)>, StoreError> {
    if from > to {
        return Ok(Vec::new());
    }
    let page = engine.scan(Cf::Events, &be(from), Some(&be(to + 1)), limit, false)?;
    page.iter()
        .map(|(k, v)| Ok((from_be(k)?, decode(v)?)))
        .collect()
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

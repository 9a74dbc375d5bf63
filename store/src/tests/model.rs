//! Randomized comparison of [`Mvcc`] against a reference model of etcd's semantics: a
//! `BTreeMap` of live keys, a revision counter and the whole map at every revision (for
//! past reads). Random sequences of puts, deletes, txns with compares, leases, compactions
//! and sequences are applied to both; after each step the results, the current state and
//! a read at a random past revision must agree. The same commands are then applied to a
//! second store in random batches (as a Raft replica that applies several entries at once
//! would): results and state must not depend on batching. Watchers check that the events
//! delivered are exactly the model's history.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::command::{Command, CommandResult};
use crate::engine::{EngineKind, WriteBatch};
use crate::error::StoreError;
use crate::kv::*;
use crate::mvcc::Mvcc;
use crate::watch::{WatchMessage, WatchRequest, WatchStream};

use super::{TestEngine, on_disk, open_engine};

const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "p/a", "p/b", "p/c"];
const VALUES: [&str; 5] = ["", "x", "1", "7", "10"];
const PREFIX: &str = "p/";

// ---------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------

type State = BTreeMap<Vec<u8>, KeyValue>;

#[derive(Clone, Debug)]
struct Model {
    rev: i64,
    compact: i64,
    kv: State,
    /// Lease id -> granted TTL. A lease's keys are the live keys that name it.
    leases: BTreeMap<i64, i64>,
    /// Lease id -> checkpointed remaining TTL (below the granted TTL).
    checkpoints: BTreeMap<i64, i64>,
    next_lease: i64,
    /// `history[r]` is the key space right after revision `r` (index 0 unused).
    history: Vec<State>,
    /// The events of every revision, in order.
    events: Vec<(i64, Vec<Event>)>,
}

fn in_range(r: &KeyRange, k: &[u8]) -> bool {
    if r.range_end.is_empty() {
        k == r.key.as_slice()
    } else {
        k >= r.key.as_slice() && (r.range_end == [0] || k < r.range_end.as_slice())
    }
}

fn lossy(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

fn compare_kv(kv: &KeyValue, c: &Compare) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.cmp(v),
    };
    match c.op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::NotEqual => !ord.is_eq(),
        CompareOp::Less => ord.is_lt(),
        CompareOp::Greater => ord.is_gt(),
    }
}

/// The read part of a range request over one state of the key space.
fn finish(state: &State, req: &RangeRequest, revision: i64) -> RangeResponse {
    let mut kvs: Vec<KeyValue> = state
        .values()
        .filter(|kv| in_range(&req.range, &kv.key))
        .filter(|kv| req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        .filter(|kv| req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        .filter(|kv| req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        .filter(|kv| req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        .cloned()
        .collect();
    let count = kvs.len() as i64;
    assert!(req.sort_order == SortOrder::None || req.sort_target == SortTarget::Key);
    if req.sort_order == SortOrder::Descend {
        kvs.reverse();
    }
    let more = req.limit > 0 && count > req.limit;
    if more {
        kvs.truncate(req.limit as usize);
    }
    if req.count_only {
        kvs.clear();
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    RangeResponse {
        kvs,
        more,
        count,
        revision,
    }
}

impl Model {
    fn new() -> Self {
        Self {
            rev: 1,
            compact: 0,
            kv: State::new(),
            leases: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            next_lease: 1,
            history: vec![State::new(), State::new()],
            events: Vec::new(),
        }
    }

    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.kv
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect()
    }

    /// A top-level read.
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        if req.revision > 0 && req.revision < self.compact {
            return Err(StoreError::Compacted {
                requested: req.revision,
                compact_revision: self.compact,
            });
        }
        if req.revision > self.rev {
            return Err(StoreError::FutureRevision {
                requested: req.revision,
                current: self.rev,
            });
        }
        let state = if req.revision == 0 {
            &self.kv
        } else {
            &self.history[req.revision as usize]
        };
        Ok(finish(state, req, self.rev))
    }

    /// Closes a revision: only one that changed something counts.
    fn commit(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.rev += 1;
        self.history.push(self.kv.clone());
        assert_eq!(self.history.len() as i64, self.rev + 1);
        self.events.push((self.rev, events));
    }

    fn put(
        &mut self,
        req: &PutRequest,
        events: &mut Vec<Event>,
    ) -> Result<Option<KeyValue>, StoreError> {
        let rev = self.rev + 1;
        let prev = self.kv.get(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(StoreError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let kv = KeyValue {
            key: req.key.clone(),
            value,
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        events.push(Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev_kv: prev.clone(),
        });
        self.kv.insert(req.key.clone(), kv);
        Ok(prev)
    }

    fn delete(&mut self, range: &KeyRange, events: &mut Vec<Event>) -> Vec<KeyValue> {
        let rev = self.rev + 1;
        let doomed: Vec<KeyValue> = self
            .kv
            .values()
            .filter(|kv| in_range(range, &kv.key))
            .cloned()
            .collect();
        for prev in &doomed {
            self.kv.remove(&prev.key);
            events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: prev.key.clone(),
                    mod_revision: rev,
                    ..KeyValue::default()
                },
                prev_kv: Some(prev.clone()),
            });
        }
        doomed
    }

    fn revoke(&mut self, id: i64) {
        let keys = self.lease_keys(id);
        let mut events = Vec::new();
        for k in keys {
            self.delete(&KeyRange::key(k), &mut events);
        }
        self.commit(events);
        self.leases.remove(&id);
        self.checkpoints.remove(&id);
    }

    /// etcd's applyCompare: over every key of the range; an empty range is an absent key.
    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .kv
            .values()
            .filter(|kv| in_range(&c.range, &kv.key))
            .collect();
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_))
                && compare_kv(&KeyValue::default(), c);
        }
        kvs.into_iter().all(|kv| compare_kv(kv, c))
    }

    /// etcd's refusals of a txn branch, written from etcd's rules (not from `Mvcc`), in
    /// etcd's order. First what etcd's API checks before anything is applied
    /// (`checkIntervals`): a key is written at most once, by one put, and no put writes a key
    /// that a delete range of the branch covers; overlapping deletes are fine. etcd names no
    /// key; the model names the first put, in op order, that breaks the rule. (etcd checks
    /// both branches; Cairn, per its reference, only the one taken.) Then what etcd's applier
    /// checks op by op against the state before the txn (`checkRequests`): a put keeping the
    /// value or lease needs its key, a put's lease must exist (with `ignore_lease` the lease
    /// it names is ignored: etcd's API refuses such a put, Cairn's store ignores the field),
    /// and a read at a revision needs it to be neither in the future nor compacted away.
    /// Nested txns, which etcd also checks, do not exist here.
    fn validate_txn(&self, ops: &[RequestOp]) -> Result<(), StoreError> {
        let mut written: Vec<&[u8]> = Vec::new();
        for op in ops {
            if let RequestOp::Put(p) = op {
                let deleted = ops.iter().any(|other| match other {
                    RequestOp::DeleteRange(d) => in_range(&d.range, &p.key),
                    _ => false,
                });
                if written.contains(&p.key.as_slice()) || deleted {
                    return Err(StoreError::DuplicateKey(lossy(&p.key)));
                }
                written.push(&p.key);
            }
        }
        for op in ops {
            match op {
                RequestOp::Put(p) => {
                    let exists = self.kv.contains_key(&p.key);
                    if !exists && (p.ignore_value || p.ignore_lease) {
                        return Err(StoreError::KeyNotFound);
                    }
                    let lease = if p.ignore_lease { 0 } else { p.lease };
                    if lease != 0 && !self.leases.contains_key(&lease) {
                        return Err(StoreError::LeaseNotFound(lease));
                    }
                }
                RequestOp::Range(r) if r.revision > self.rev => {
                    return Err(StoreError::FutureRevision {
                        requested: r.revision,
                        current: self.rev,
                    });
                }
                RequestOp::Range(r) if r.revision > 0 && r.revision < self.compact => {
                    return Err(StoreError::Compacted {
                        requested: r.revision,
                        compact_revision: self.compact,
                    });
                }
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            // Group commit: each command stands alone, with its own revision and result.
            Command::Batch(cmds) => {
                CommandResult::Batch(cmds.iter().map(|c| self.apply_one(c)).collect())
            }
            cmd => self.apply_one(cmd),
        }
    }

    fn apply_one(&mut self, cmd: &Command) -> CommandResult {
        let saved = self.clone();
        match self.apply_inner(cmd) {
            Ok(r) => r,
            Err(e) => {
                // A rejected command changes nothing.
                *self = saved;
                CommandResult::Error(e)
            }
        }
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<CommandResult, StoreError> {
        Ok(match cmd {
            Command::Batch(_) => {
                return Err(StoreError::InvalidArgument("batches do not nest".into()));
            }
            // Alarms have tests of their own (`mvcc/alarms.rs`); the generator makes none.
            Command::Alarm { .. } => panic!("the model does not generate alarm commands"),
            Command::Put(req) => {
                let mut events = Vec::new();
                let prev = self.put(req, &mut events)?;
                self.commit(events);
                CommandResult::Put(PutResponse {
                    revision: self.rev,
                    prev_kv: if req.prev_kv { prev } else { None },
                })
            }
            Command::DeleteRange(req) => {
                let mut events = Vec::new();
                let doomed = self.delete(&req.range, &mut events);
                self.commit(events);
                CommandResult::DeleteRange(DeleteRangeResponse {
                    revision: self.rev,
                    deleted: doomed.len() as i64,
                    prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
                })
            }
            Command::Txn(req) => {
                let succeeded = req.compare.iter().all(|c| self.compare(c));
                let ops = if succeeded {
                    &req.success
                } else {
                    &req.failure
                };
                self.validate_txn(ops)?;
                let mut events = Vec::new();
                let mut responses = Vec::new();
                for op in ops {
                    responses.push(match op {
                        RequestOp::Range(r) if r.revision == 0 => {
                            ResponseOp::Range(finish(&self.kv, r, 0))
                        }
                        RequestOp::Range(r) => {
                            ResponseOp::Range(finish(&self.history[r.revision as usize], r, 0))
                        }
                        RequestOp::Put(p) => {
                            let prev = self.put(p, &mut events)?;
                            ResponseOp::Put(PutResponse {
                                revision: 0,
                                prev_kv: if p.prev_kv { prev } else { None },
                            })
                        }
                        RequestOp::DeleteRange(d) => {
                            let doomed = self.delete(&d.range, &mut events);
                            ResponseOp::DeleteRange(DeleteRangeResponse {
                                revision: 0,
                                deleted: doomed.len() as i64,
                                prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
                            })
                        }
                    });
                }
                self.commit(events);
                for r in &mut responses {
                    match r {
                        ResponseOp::Range(x) => x.revision = self.rev,
                        ResponseOp::Put(x) => x.revision = self.rev,
                        ResponseOp::DeleteRange(x) => x.revision = self.rev,
                    }
                }
                CommandResult::Txn(TxnResponse {
                    succeeded,
                    responses,
                    revision: self.rev,
                })
            }
            Command::Compact { revision } => {
                if *revision <= self.compact {
                    return Err(StoreError::Compacted {
                        requested: *revision,
                        compact_revision: self.compact,
                    });
                }
                if *revision > self.rev {
                    return Err(StoreError::FutureRevision {
                        requested: *revision,
                        current: self.rev,
                    });
                }
                self.compact = *revision;
                CommandResult::Compact { revision: self.rev }
            }
            Command::LeaseGrant { id, ttl } => {
                if *ttl <= 0 || *id < 0 {
                    return Err(StoreError::InvalidArgument(String::new()));
                }
                let id = if *id == 0 {
                    let mut next = self.next_lease.max(1);
                    while self.leases.contains_key(&next) {
                        next += 1;
                    }
                    self.next_lease = next + 1;
                    next
                } else if self.leases.contains_key(id) {
                    return Err(StoreError::LeaseExists(*id));
                } else {
                    *id
                };
                self.leases.insert(id, *ttl);
                CommandResult::LeaseGrant {
                    id,
                    ttl: *ttl,
                    revision: self.rev,
                }
            }
            Command::LeaseRevoke { id } => {
                if !self.leases.contains_key(id) {
                    return Err(StoreError::LeaseNotFound(*id));
                }
                self.revoke(*id);
                CommandResult::LeaseRevoke { revision: self.rev }
            }
            Command::LeaseCheckpoint { checkpoints } => {
                for &(id, remaining) in checkpoints {
                    let Some(&ttl) = self.leases.get(&id) else {
                        continue;
                    };
                    if remaining < ttl {
                        self.checkpoints.insert(id, remaining.max(0));
                    } else {
                        self.checkpoints.remove(&id);
                    }
                }
                CommandResult::LeaseCheckpoint { revision: self.rev }
            }
            Command::LeaseExpire { ids } => {
                let mut expired = Vec::new();
                for id in ids {
                    if self.leases.contains_key(id) {
                        self.revoke(*id);
                        expired.push(*id);
                    }
                }
                CommandResult::LeaseExpire {
                    revision: self.rev,
                    expired,
                }
            }
            Command::Incr { key, delta } => {
                let (n, lease) = match self.kv.get(key) {
                    None => (0u64, 0),
                    Some(kv) => {
                        let n = std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .ok_or_else(|| StoreError::NotANumber { key: lossy(key) })?;
                        (n, kv.lease)
                    }
                };
                let value = n.saturating_add(*delta);
                let mut events = Vec::new();
                self.put(
                    &PutRequest {
                        key: key.clone(),
                        value: value.to_string().into_bytes(),
                        lease,
                        ..PutRequest::default()
                    },
                    &mut events,
                )?;
                self.commit(events);
                CommandResult::Incr {
                    value,
                    revision: self.rev,
                }
            }
        })
    }
}

/// Error messages of `InvalidArgument` are prose; compare only the kind.
fn normalize(r: CommandResult) -> CommandResult {
    match r {
        CommandResult::Error(StoreError::InvalidArgument(_)) => {
            CommandResult::Error(StoreError::InvalidArgument(String::new()))
        }
        CommandResult::Batch(rs) => CommandResult::Batch(rs.into_iter().map(normalize).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Generated operations, resolved into concrete commands against the model's state
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum RangeSpec {
    Key(usize),
    Prefix,
    All,
    Interval(usize, usize),
    From(usize),
}

impl RangeSpec {
    fn to_range(&self) -> KeyRange {
        match self {
            RangeSpec::Key(i) => KeyRange::key(KEYS[*i]),
            RangeSpec::Prefix => KeyRange::prefix(PREFIX),
            RangeSpec::All => KeyRange::prefix(""),
            RangeSpec::Interval(a, b) => KeyRange::interval(KEYS[*a], KEYS[*b]),
            RangeSpec::From(a) => KeyRange::interval(KEYS[*a], vec![0]),
        }
    }
}

#[derive(Clone, Debug)]
enum RevSpec {
    Current,
    Back(i64),
    Compacted,
    Future,
}

impl RevSpec {
    fn resolve(&self, m: &Model) -> i64 {
        match self {
            RevSpec::Current => 0,
            RevSpec::Back(n) => (m.rev - n).max(m.compact).max(1),
            RevSpec::Compacted if m.compact >= 2 => m.compact - 1,
            RevSpec::Compacted => 0,
            RevSpec::Future => m.rev + 1,
        }
    }
}

#[derive(Clone, Debug)]
struct RangeGen {
    spec: RangeSpec,
    rev: RevSpec,
    limit: i64,
    keys_only: bool,
    count_only: bool,
    sort: u8,
    min_mod: Option<i64>,
    max_create: Option<i64>,
}

impl RangeGen {
    fn resolve(&self, m: &Model) -> RangeRequest {
        let back = |n: &Option<i64>| n.map_or(0, |n| (m.rev - n).max(1));
        RangeRequest {
            range: self.spec.to_range(),
            revision: self.rev.resolve(m),
            limit: self.limit,
            keys_only: self.keys_only,
            count_only: self.count_only,
            sort_order: match self.sort {
                0 => SortOrder::None,
                1 => SortOrder::Ascend,
                _ => SortOrder::Descend,
            },
            sort_target: SortTarget::Key,
            min_mod_revision: back(&self.min_mod),
            max_create_revision: back(&self.max_create),
            ..RangeRequest::default()
        }
    }
}

#[derive(Clone, Debug)]
struct PutGen {
    key: usize,
    value: usize,
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

impl PutGen {
    fn resolve(&self) -> PutRequest {
        PutRequest {
            key: KEYS[self.key].into(),
            value: VALUES[self.value].into(),
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

#[derive(Clone, Debug)]
enum TargetGen {
    Version(i64),
    Create(Option<i64>),
    Mod(Option<i64>),
    Value(usize),
    Lease(i64),
}

#[derive(Clone, Debug)]
enum TxnOpGen {
    Range(RangeGen),
    Put(PutGen),
    Delete(RangeSpec, bool),
}

impl TxnOpGen {
    fn resolve(&self, m: &Model) -> RequestOp {
        match self {
            TxnOpGen::Range(r) => RequestOp::Range(r.resolve(m)),
            TxnOpGen::Put(p) => RequestOp::Put(p.resolve()),
            TxnOpGen::Delete(spec, prev_kv) => RequestOp::DeleteRange(DeleteRangeRequest {
                range: spec.to_range(),
                prev_kv: *prev_kv,
            }),
        }
    }
}

#[derive(Clone, Debug)]
enum CompactGen {
    /// A valid revision (when there is one): this fraction of the way from the
    /// compaction point to the current revision.
    Valid(u8),
    AtCompactionPoint,
    Future,
}

#[derive(Clone, Debug)]
enum Step {
    Put(PutGen),
    Delete(RangeSpec, bool),
    Txn(
        Vec<(RangeSpec, u8, TargetGen)>,
        Vec<TxnOpGen>,
        Vec<TxnOpGen>,
    ),
    Grant(i64, i64),
    Revoke(i64),
    Expire(Vec<i64>),
    Checkpoint(Vec<(i64, i64)>),
    Compact(CompactGen),
    Incr(usize, u64),
    /// A group commit of these steps (resolved together, as concurrent requests would be),
    /// optionally with a nested batch, which must be rejected.
    Batch(Vec<Step>, bool),
}

impl Step {
    fn resolve(&self, m: &Model) -> Command {
        let back = |n: &Option<i64>| n.map_or(0, |n| (m.rev - n).max(0));
        match self {
            Step::Put(p) => Command::Put(p.resolve()),
            Step::Delete(spec, prev_kv) => Command::DeleteRange(DeleteRangeRequest {
                range: spec.to_range(),
                prev_kv: *prev_kv,
            }),
            Step::Txn(compares, success, failure) => Command::Txn(TxnRequest {
                compare: compares
                    .iter()
                    .map(|(spec, op, target)| Compare {
                        range: spec.to_range(),
                        op: match op {
                            0 => CompareOp::Equal,
                            1 => CompareOp::NotEqual,
                            2 => CompareOp::Less,
                            _ => CompareOp::Greater,
                        },
                        target: match target {
                            TargetGen::Version(v) => CompareTarget::Version(*v),
                            TargetGen::Create(n) => CompareTarget::Create(back(n)),
                            TargetGen::Mod(n) => CompareTarget::Mod(back(n)),
                            TargetGen::Value(i) => CompareTarget::Value(VALUES[*i].into()),
                            TargetGen::Lease(l) => CompareTarget::Lease(*l),
                        },
                    })
                    .collect(),
                success: success.iter().map(|o| o.resolve(m)).collect(),
                failure: failure.iter().map(|o| o.resolve(m)).collect(),
            }),
            Step::Grant(id, ttl) => Command::LeaseGrant { id: *id, ttl: *ttl },
            Step::Revoke(id) => Command::LeaseRevoke { id: *id },
            Step::Expire(ids) => Command::LeaseExpire { ids: ids.clone() },
            Step::Checkpoint(cps) => Command::LeaseCheckpoint {
                checkpoints: cps.clone(),
            },
            Step::Compact(c) => Command::Compact {
                revision: match c {
                    CompactGen::Valid(f) if m.rev > m.compact => {
                        m.compact + 1 + (m.rev - m.compact - 1) * i64::from(*f) / 255
                    }
                    CompactGen::Valid(_) | CompactGen::AtCompactionPoint => m.compact,
                    CompactGen::Future => m.rev + 1,
                },
            },
            Step::Batch(steps, nested) => {
                let mut cmds: Vec<Command> = steps.iter().map(|s| s.resolve(m)).collect();
                if *nested {
                    let at = cmds.len() / 2;
                    cmds.insert(
                        at,
                        Command::Batch(vec![Command::Incr {
                            key: b"n".to_vec(),
                            delta: 1,
                        }]),
                    );
                }
                Command::Batch(cmds)
            }
            Step::Incr(k, delta) => Command::Incr {
                key: KEYS[*k].into(),
                delta: *delta,
            },
        }
    }
}

fn key_idx() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    prop_oneof![
        4 => key_idx().prop_map(RangeSpec::Key),
        2 => Just(RangeSpec::Prefix),
        1 => Just(RangeSpec::All),
        2 => (key_idx(), key_idx()).prop_map(|(a, b)| RangeSpec::Interval(a, b)),
        1 => key_idx().prop_map(RangeSpec::From),
    ]
}

fn rev_spec() -> impl Strategy<Value = RevSpec> {
    prop_oneof![
        3 => Just(RevSpec::Current),
        // Recent revisions: in the batched replay, often made earlier in the same batch.
        4 => (0i64..3).prop_map(RevSpec::Back),
        2 => (3i64..8).prop_map(RevSpec::Back),
        1 => Just(RevSpec::Compacted),
        1 => Just(RevSpec::Future),
    ]
}

fn range_gen() -> impl Strategy<Value = RangeGen> {
    (
        range_spec(),
        rev_spec(),
        0i64..4,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        0u8..3,
        prop::option::weighted(0.2, 0i64..6),
        prop::option::weighted(0.2, 0i64..6),
    )
        .prop_map(
            |(spec, rev, limit, keys_only, count_only, sort, min_mod, max_create)| RangeGen {
                spec,
                rev,
                limit,
                keys_only,
                count_only,
                sort,
                min_mod,
                max_create,
            },
        )
}

fn put_gen() -> impl Strategy<Value = PutGen> {
    (
        key_idx(),
        0..VALUES.len(),
        prop_oneof![3 => Just(0i64), 2 => 1i64..=4],
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutGen {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn target_gen() -> impl Strategy<Value = TargetGen> {
    prop_oneof![
        (0i64..4).prop_map(TargetGen::Version),
        prop::option::of(0i64..6).prop_map(TargetGen::Create),
        prop::option::of(0i64..6).prop_map(TargetGen::Mod),
        (0..VALUES.len()).prop_map(TargetGen::Value),
        (0i64..=4).prop_map(TargetGen::Lease),
    ]
}

fn txn_op_gen() -> impl Strategy<Value = TxnOpGen> {
    prop_oneof![
        2 => range_gen().prop_map(TxnOpGen::Range),
        3 => put_gen().prop_map(TxnOpGen::Put),
        1 => (range_spec(), any::<bool>()).prop_map(|(s, p)| TxnOpGen::Delete(s, p)),
    ]
}

fn step_gen() -> impl Strategy<Value = Step> {
    prop_oneof![
        90 => single_step_gen(),
        6 => (vec(single_step_gen(), 0..5), prop::bool::weighted(0.15))
            .prop_map(|(steps, nested)| Step::Batch(steps, nested)),
    ]
}

fn single_step_gen() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => put_gen().prop_map(Step::Put),
        8 => (range_spec(), any::<bool>()).prop_map(|(s, p)| Step::Delete(s, p)),
        20 => (
            vec((range_spec(), 0u8..4, target_gen()), 0..3),
            vec(txn_op_gen(), 0..4),
            vec(txn_op_gen(), 0..3),
        )
            .prop_map(|(c, s, f)| Step::Txn(c, s, f)),
        6 => (0i64..=4, 0i64..4).prop_map(|(id, ttl)| Step::Grant(id, ttl)),
        4 => (1i64..=5).prop_map(Step::Revoke),
        2 => vec(1i64..=5, 0..4).prop_map(Step::Expire),
        3 => vec((1i64..=5, -1i64..5), 0..4).prop_map(Step::Checkpoint),
        7 => prop_oneof![
            6 => any::<u8>().prop_map(CompactGen::Valid),
            1 => Just(CompactGen::AtCompactionPoint),
            1 => Just(CompactGen::Future),
        ]
        .prop_map(Step::Compact),
        8 => (key_idx(), 0u64..3).prop_map(|(k, d)| Step::Incr(k, d)),
    ]
}

/// A case: steps, each with a read to check at a random readable past revision; and the
/// batch sizes for the batched replay.
fn case(max_steps: usize) -> impl Strategy<Value = (Vec<(Step, RangeGen, i64)>, Vec<usize>)> {
    (
        vec((step_gen(), range_gen(), 0i64..10), 1..=max_steps),
        vec(1usize..=8, 1..10),
    )
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

fn all_keys() -> RangeRequest {
    RangeRequest::new(KeyRange::prefix(""))
}

/// Compares everything observable of `m` with the model: revisions, current state,
/// every past revision (readable or compacted) and the lease table.
fn check_state(m: &Mvcc, model: &Model, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.revision(), model.rev, "{}: revision", what);
    prop_assert_eq!(
        m.compact_revision(),
        model.compact,
        "{}: compact revision",
        what
    );
    prop_assert_eq!(
        m.range(&all_keys()),
        model.range(&all_keys()),
        "{}: current state",
        what
    );
    for r in 1..=model.rev + 1 {
        let req = RangeRequest {
            revision: r,
            ..all_keys()
        };
        prop_assert_eq!(
            m.range(&req),
            model.range(&req),
            "{}: everything at revision {}",
            what,
            r
        );
    }
    check_leases(m, model, what)
}

fn check_leases(m: &Mvcc, model: &Model, what: &str) -> Result<(), TestCaseError> {
    let expected: Vec<(i64, i64)> = model.leases.iter().map(|(id, ttl)| (*id, *ttl)).collect();
    prop_assert_eq!(m.leases(), expected, "{}: leases", what);
    let checkpoints: BTreeMap<i64, i64> = m
        .lease_records()
        .into_iter()
        .filter_map(|r| Some((r.id, r.remaining_ttl?)))
        .collect();
    prop_assert_eq!(
        &checkpoints,
        &model.checkpoints,
        "{}: lease checkpoints",
        what
    );
    for id in model.leases.keys() {
        let keys = m.lease(*id).map(|l| l.keys);
        prop_assert_eq!(
            keys,
            Some(model.lease_keys(*id)),
            "{}: keys of lease {}",
            what,
            id
        );
    }
    Ok(())
}

/// Drains a watch stream and checks it delivered exactly `expected`, nothing more.
async fn check_watch(
    w: &mut WatchStream,
    expected: Vec<(i64, Vec<Event>)>,
    what: &str,
) -> Result<(), TestCaseError> {
    for (revision, events) in expected {
        let got = tokio::time::timeout(Duration::from_secs(10), w.recv()).await;
        let expected = Some(WatchMessage::Events { revision, events });
        prop_assert!(
            got.is_ok(),
            "{}: timed out waiting for revision {}",
            what,
            revision
        );
        prop_assert_eq!(got.unwrap(), expected, "{}", what);
    }
    let extra = tokio::time::timeout(Duration::from_millis(20), w.recv()).await;
    prop_assert!(extra.is_err(), "{}: unexpected message {:?}", what, extra);
    Ok(())
}

fn filtered(model: &Model, from: i64, req: &WatchRequest) -> Vec<(i64, Vec<Event>)> {
    model
        .events
        .iter()
        .filter(|(r, _)| *r >= from)
        .filter_map(|(r, evs)| {
            let evs: Vec<Event> = evs
                .iter()
                .filter(|e| in_range(&req.range, &e.kv.key))
                .filter(|e| match e.kind {
                    EventKind::Put => !req.filter_put,
                    EventKind::Delete => !req.filter_delete,
                })
                .map(|e| Event {
                    prev_kv: if req.prev_kv { e.prev_kv.clone() } else { None },
                    ..e.clone()
                })
                .collect();
            (!evs.is_empty()).then_some((*r, evs))
        })
        .collect()
}

fn run_case(
    kind: EngineKind,
    steps: &[(Step, RangeGen, i64)],
    batches: &[usize],
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let t: TestEngine = open_engine(kind);
    let m = Mvcc::open(t.engine.clone()).unwrap();
    let mut model = Model::new();

    let watch_all = WatchRequest {
        range: KeyRange::prefix(""),
        prev_kv: true,
        ..WatchRequest::default()
    };
    let watch_prefix = WatchRequest {
        range: KeyRange::prefix(PREFIX),
        filter_delete: true,
        ..WatchRequest::default()
    };
    let mut w_all = m.hub().watch(watch_all.clone());
    let mut w_prefix = m.hub().watch(watch_prefix.clone());

    // One command at a time, against the model.
    let mut commands = Vec::new();
    let mut results = Vec::new();
    for (i, (step, probe, back)) in steps.iter().enumerate() {
        let cmd = step.resolve(&model);
        let expected = normalize(model.apply(&cmd));
        let got = m.apply(vec![Some(cmd.clone())], WriteBatch::new()).unwrap();
        prop_assert_eq!(got.len(), 1);
        let got = normalize(got.into_iter().next().unwrap());
        let what = format!("step {i}: {cmd:?}");
        prop_assert_eq!(&got, &expected, "{}", what);
        prop_assert_eq!(m.revision(), model.rev, "{}", what);
        prop_assert_eq!(m.compact_revision(), model.compact, "{}", what);
        prop_assert_eq!(
            m.range(&all_keys()),
            model.range(&all_keys()),
            "{}: current state",
            what
        );
        // A read at a readable past revision (or the current one).
        let mut req = probe.resolve(&model);
        req.revision = (model.rev - back).max(model.compact).max(1);
        prop_assert_eq!(m.range(&req), model.range(&req), "{}: read {:?}", what, req);
        // And the read as generated (possibly compacted or in the future).
        let req = probe.resolve(&model);
        prop_assert_eq!(m.range(&req), model.range(&req), "{}: read {:?}", what, req);
        check_leases(&m, &model, &what)?;
        commands.push(cmd);
        results.push(expected);
    }
    check_state(&m, &model, "after all steps")?;

    rt.block_on(async {
        check_watch(
            &mut w_all,
            filtered(&model, 0, &watch_all),
            "watch everything",
        )
        .await?;
        check_watch(
            &mut w_prefix,
            filtered(&model, 0, &watch_prefix),
            "watch p/ puts",
        )
        .await?;
        // A new watcher from the oldest readable revision catches up from the engine.
        let from = model.compact.max(1);
        let req = WatchRequest {
            start_revision: from,
            ..watch_all.clone()
        };
        let mut w = m.hub().watch(req.clone());
        check_watch(&mut w, filtered(&model, from, &req), "catch-up watch").await
    })?;
    drop((w_all, w_prefix));

    // The state machine reopened over the same engine is the same.
    drop(m);
    let m = Mvcc::open(t.engine.clone()).unwrap();
    check_state(&m, &model, "after reopen")?;

    // The same commands applied in batches, as another replica might.
    let t2 = open_engine(kind);
    let m2 = Mvcc::open(t2.engine.clone()).unwrap();
    let mut got = Vec::new();
    let mut rest = &commands[..];
    for size in batches.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        rest = tail;
        let rs = m2
            .apply(batch.iter().cloned().map(Some).collect(), WriteBatch::new())
            .unwrap();
        got.extend(rs.into_iter().map(normalize));
    }
    for (i, (g, e)) in got.iter().zip(&results).enumerate() {
        prop_assert_eq!(g, e, "batched replay, command {}: {:?}", i, commands[i]);
    }
    check_state(&m2, &model, "batched replay")
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep the source tree clean: no regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mvcc_matches_the_model_on_mem((steps, batches) in case(40)) {
        run_case(EngineKind::Mem, &steps, &batches)?;
    }
}

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn mvcc_matches_the_model_on_disk((steps, batches) in case(30)) {
        for kind in EngineKind::all().into_iter().filter(|k| on_disk(*k)) {
            run_case(kind, &steps, &batches)?;
        }
    }
}

//! Semantic tests of [`Mvcc`] against every engine: etcd v3's revision, version, range,
//! txn, lease, compaction and sequence rules, persistence (reopen, dump/restore), and the
//! watch hub's delivery guarantees. One file per topic; this one holds the helpers they
//! share.
#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;

use crate::codec::be;
use crate::command::{Command, CommandResult};
use crate::engine::{Cf, Engine, EngineKind, WriteBatch};
use crate::error::StoreError;
use crate::history::history_prefix;
use crate::kv::*;
use crate::mvcc::Mvcc;
use crate::snapshot::SnapshotWriter;
use crate::watch::{CancelReason, WATCH_BUFFER, WatchMessage, WatchRequest, WatchStream};

use super::{TestEngine, all_engines, open_engine};

mod alarms;
mod compaction;
mod leases;
mod live_values;
mod persistence;
mod ranges;
mod revisions;
mod sequences;
mod txn;
mod watch;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn open(t: &TestEngine) -> Mvcc {
    Mvcc::open(t.engine.clone()).unwrap()
}

/// Every engine kind with a fresh state machine over it.
fn stores() -> Vec<(TestEngine, Mvcc)> {
    all_engines()
        .into_iter()
        .map(|t| {
            let m = open(&t);
            (t, m)
        })
        .collect()
}

fn apply(m: &Mvcc, cmd: Command) -> CommandResult {
    let mut r = m.apply(vec![Some(cmd)], WriteBatch::new()).unwrap();
    assert_eq!(r.len(), 1);
    r.pop().unwrap()
}

fn put(m: &Mvcc, k: &str, v: &str) -> PutResponse {
    put_req(m, PutRequest::new(k, v))
}

fn put_req(m: &Mvcc, req: PutRequest) -> PutResponse {
    match apply(m, Command::Put(req)) {
        CommandResult::Put(r) => r,
        other => panic!("put failed: {other:?}"),
    }
}

fn put_lease(m: &Mvcc, k: &str, v: &str, lease: i64) -> PutResponse {
    put_req(
        m,
        PutRequest {
            lease,
            ..PutRequest::new(k, v)
        },
    )
}

fn delete(m: &Mvcc, range: KeyRange) -> DeleteRangeResponse {
    match apply(
        m,
        Command::DeleteRange(DeleteRangeRequest {
            range,
            prev_kv: true,
        }),
    ) {
        CommandResult::DeleteRange(r) => r,
        other => panic!("delete failed: {other:?}"),
    }
}

fn txn(m: &Mvcc, req: TxnRequest) -> TxnResponse {
    match apply(m, Command::Txn(req)) {
        CommandResult::Txn(r) => r,
        other => panic!("txn failed: {other:?}"),
    }
}

fn grant(m: &Mvcc, id: i64, ttl: i64) -> i64 {
    match apply(m, Command::LeaseGrant { id, ttl }) {
        CommandResult::LeaseGrant { id, .. } => id,
        other => panic!("grant failed: {other:?}"),
    }
}

fn compact(m: &Mvcc, revision: i64) {
    match apply(m, Command::Compact { revision }) {
        CommandResult::Compact { .. } => {}
        other => panic!("compact failed: {other:?}"),
    }
}

fn err(r: CommandResult) -> StoreError {
    match r {
        CommandResult::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn get(m: &Mvcc, k: &str) -> Option<KeyValue> {
    let mut r = m.range(&RangeRequest::new(KeyRange::key(k))).unwrap();
    assert!(r.kvs.len() <= 1);
    r.kvs.pop()
}

fn get_at(m: &Mvcc, k: &str, revision: i64) -> Option<KeyValue> {
    let mut r = m
        .range(&RangeRequest {
            revision,
            ..RangeRequest::new(KeyRange::key(k))
        })
        .unwrap();
    r.kvs.pop()
}

fn value_of(kv: &Option<KeyValue>) -> Option<&str> {
    kv.as_ref()
        .map(|kv| std::str::from_utf8(&kv.value).unwrap())
}

fn keys_of(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn everything() -> KeyRange {
    KeyRange::prefix(Vec::new())
}

fn range_all(m: &Mvcc, revision: i64) -> Result<RangeResponse, StoreError> {
    m.range(&RangeRequest {
        revision,
        ..RangeRequest::new(everything())
    })
}

fn rq(range: KeyRange) -> RangeRequest {
    RangeRequest::new(range)
}

fn cmp(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare::new(key, op, target)
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(k, v))
}

fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        lease,
    }
}

/// Everything observable about a state machine: revisions, every key at every readable
/// revision, and the lease table.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: i64,
    compact_revision: i64,
    ranges: Vec<(i64, Result<RangeResponse, StoreError>)>,
    leases: Vec<(i64, i64, Vec<Vec<u8>>)>,
}

fn observe(m: &Mvcc) -> Observed {
    let revision = m.revision();
    let compact_revision = m.compact_revision();
    let ranges = (0..=revision + 1).map(|r| (r, range_all(m, r))).collect();
    let leases = m
        .leases()
        .into_iter()
        .map(|(id, ttl)| (id, ttl, m.lease(id).unwrap().keys))
        .collect();
    Observed {
        revision,
        compact_revision,
        ranges,
        leases,
    }
}

/// History records left for `key` in the engine.
fn history_versions(e: &dyn Engine, key: &str) -> usize {
    let start = history_prefix(key.as_bytes());
    let end = prefix_end(&start);
    e.scan(Cf::History, &start, Some(&end), usize::MAX, false)
        .unwrap()
        .len()
}

/// Revisions that still have an events record in the engine.
fn event_revisions(e: &dyn Engine) -> Vec<i64> {
    e.scan(Cf::Events, &[], None, usize::MAX, false)
        .unwrap()
        .iter()
        .map(|(k, _)| crate::codec::from_be(k).unwrap())
        .collect()
}

/// A dump of the whole state machine.
fn dump(m: &Mvcc) -> Vec<u8> {
    let mut out = Vec::new();
    m.dump(&mut out).unwrap();
    out
}

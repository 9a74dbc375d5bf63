//! Semantic tests of [`Mvcc`] against every engine: etcd v3's revision, version, range,
//! txn, lease, compaction and sequence rules, persistence (reopen, dump/restore), and the
//! watch hub's delivery guarantees.
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

// ---------------------------------------------------------------------------------------
// Revisions, versions
// ---------------------------------------------------------------------------------------

#[test]
fn revision_starts_at_one_and_each_put_adds_one() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        assert_eq!(m.revision(), 1, "{name}");
        assert_eq!(m.compact_revision(), 0, "{name}");
        assert_eq!(range_all(&m, 0).unwrap().revision, 1, "{name}");
        assert_eq!(put(&m, "a", "1").revision, 2, "{name}");
        assert_eq!(m.revision(), 2, "{name}");
        assert_eq!(put(&m, "a", "2").revision, 3, "{name}");
        assert_eq!(put(&m, "b", "1").revision, 4, "{name}");
        assert_eq!(m.key_count(), 2, "{name}");
        // Results of a batch report the revision after each command.
        let rs = m
            .apply(
                vec![
                    Some(Command::Put(PutRequest::new("c", "1"))),
                    None,
                    Some(Command::Put(PutRequest::new("d", "1"))),
                ],
                WriteBatch::new(),
            )
            .unwrap();
        let revs: Vec<_> = rs.iter().map(|r| r.revision()).collect();
        assert_eq!(revs, vec![Some(5), Some(5), Some(6)], "{name}");
    }
}

#[test]
fn a_txn_with_several_writes_is_one_revision() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "gone", "x");
        let r = txn(
            &m,
            TxnRequest {
                compare: vec![],
                success: vec![
                    op_put("a", "1"),
                    op_put("b", "2"),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::key("gone"),
                        prev_kv: false,
                    }),
                    op_put("c", "3"),
                    RequestOp::Range(rq(KeyRange::prefix(""))),
                ],
                failure: vec![],
            },
        );
        assert!(r.succeeded, "{name}");
        assert_eq!(r.revision, 3, "{name}");
        assert_eq!(m.revision(), 3, "{name}");
        for k in ["a", "b", "c"] {
            let kv = get(&m, k).unwrap();
            assert_eq!(
                (kv.create_revision, kv.mod_revision, kv.version),
                (3, 3, 1),
                "{name} {k}"
            );
        }
        assert_eq!(get(&m, "gone"), None, "{name}");
        // Every op response carries the txn's revision; a range sees the txn's own writes.
        assert_eq!(r.responses.len(), 5, "{name}");
        match &r.responses[4] {
            ResponseOp::Range(rr) => {
                assert_eq!(rr.revision, 3, "{name}");
                assert_eq!(keys_of(rr), vec!["a", "b", "c"], "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        match &r.responses[2] {
            ResponseOp::DeleteRange(d) => assert_eq!((d.revision, d.deleted), (3, 1), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(get_at(&m, "a", 2), None, "{name}");
        assert_eq!(
            get_at(&m, "gone", 2).unwrap().value,
            b"x".to_vec(),
            "{name}"
        );
    }
}

#[test]
fn reads_failed_compares_and_no_op_requests_do_not_move_the_revision() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1");
        assert_eq!(m.revision(), 2);

        // A read-only txn.
        let r = txn(
            &m,
            TxnRequest {
                compare: vec![cmp(
                    "a",
                    CompareOp::Equal,
                    CompareTarget::Value(b"1".to_vec()),
                )],
                success: vec![RequestOp::Range(rq(KeyRange::key("a")))],
                failure: vec![],
            },
        );
        assert!(r.succeeded, "{name}");
        assert_eq!((r.revision, m.revision()), (2, 2), "{name}");

        // A failed compare with an empty else branch.
        let r = txn(
            &m,
            TxnRequest {
                compare: vec![cmp(
                    "a",
                    CompareOp::Equal,
                    CompareTarget::Value(b"2".to_vec()),
                )],
                success: vec![op_put("a", "3")],
                failure: vec![],
            },
        );
        assert!(!r.succeeded, "{name}");
        assert!(r.responses.is_empty(), "{name}");
        assert_eq!((r.revision, m.revision()), (2, 2), "{name}");
        assert_eq!(value_of(&get(&m, "a")), Some("1"), "{name}");

        // An empty txn.
        let r = txn(&m, TxnRequest::default());
        assert!(r.succeeded && r.revision == 2, "{name}");

        // Deleting nothing, alone or in a txn.
        let d = delete(&m, KeyRange::key("missing"));
        assert_eq!((d.revision, d.deleted), (2, 0), "{name}");
        assert!(d.prev_kvs.is_empty(), "{name}");
        let d = delete(&m, KeyRange::prefix("nothing/"));
        assert_eq!((d.revision, d.deleted), (2, 0), "{name}");
        let r = txn(
            &m,
            TxnRequest {
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::prefix("zz"),
                    prev_kv: true,
                })],
                ..TxnRequest::default()
            },
        );
        assert_eq!(r.revision, 2, "{name}");

        // Lease grant, revoking a lease without keys, blank entries, compaction.
        assert_eq!(
            apply(&m, Command::LeaseGrant { id: 5, ttl: 10 }),
            CommandResult::LeaseGrant {
                id: 5,
                ttl: 10,
                revision: 2
            },
            "{name}"
        );
        assert_eq!(
            apply(&m, Command::LeaseRevoke { id: 5 }),
            CommandResult::LeaseRevoke { revision: 2 },
            "{name}"
        );
        assert_eq!(
            m.apply(vec![None, None], WriteBatch::new()).unwrap(),
            vec![
                CommandResult::None { revision: 2 },
                CommandResult::None { revision: 2 }
            ],
            "{name}"
        );
        assert_eq!(
            apply(&m, Command::Compact { revision: 2 }),
            CommandResult::Compact { revision: 2 },
            "{name}"
        );
        // Errors do not move it either.
        let e = err(apply(
            &m,
            Command::Put(PutRequest {
                lease: 77,
                ..PutRequest::new("b", "1")
            }),
        ));
        assert_eq!(e, StoreError::LeaseNotFound(77), "{name}");
        assert_eq!(m.revision(), 2, "{name}");
        assert_eq!(event_revisions(t.engine.as_ref()), vec![2], "{name}");
    }
}

#[test]
fn create_mod_revision_and_version_follow_etcd() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let r = put_req(
            &m,
            PutRequest {
                prev_kv: true,
                ..PutRequest::new("a", "1")
            },
        );
        assert_eq!(r.prev_kv, None, "{name}");
        assert_eq!(get(&m, "a"), Some(kv("a", "1", 2, 2, 1, 0)), "{name}");
        let r = put_req(
            &m,
            PutRequest {
                prev_kv: true,
                ..PutRequest::new("a", "2")
            },
        );
        assert_eq!(r.prev_kv, Some(kv("a", "1", 2, 2, 1, 0)), "{name}");
        put(&m, "other", "x");
        put(&m, "a", "3");
        assert_eq!(get(&m, "a"), Some(kv("a", "3", 2, 5, 3, 0)), "{name}");
        // prev_kv is only returned when asked for.
        assert_eq!(put(&m, "a", "4").prev_kv, None, "{name}");

        let d = delete(&m, KeyRange::key("a"));
        assert_eq!(d.revision, 7, "{name}");
        assert_eq!(d.deleted, 1, "{name}");
        assert_eq!(d.prev_kvs, vec![kv("a", "4", 2, 6, 4, 0)], "{name}");
        assert_eq!(get(&m, "a"), None, "{name}");

        // Re-creation starts over: new create revision, version 1.
        put(&m, "a", "again");
        assert_eq!(get(&m, "a"), Some(kv("a", "again", 8, 8, 1, 0)), "{name}");
        // The history keeps every version.
        assert_eq!(get_at(&m, "a", 3), Some(kv("a", "2", 2, 3, 2, 0)), "{name}");
        assert_eq!(get_at(&m, "a", 7), None, "{name}");
        assert_eq!(get_at(&m, "a", 1), None, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------------------

fn fill_range_keys(m: &Mvcc) {
    for k in ["a", "a/1", "a/2", "a0", "b", "c", "c\x00", "\u{7f}"] {
        put(m, k, &format!("v-{k}"));
    }
}

#[test]
fn range_by_key_prefix_interval_and_to_the_end() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        fill_range_keys(&m);
        for revision in [0, m.revision()] {
            let r = |range: KeyRange| -> Vec<String> {
                keys_of(
                    &m.range(&RangeRequest {
                        revision,
                        ..rq(range)
                    })
                    .unwrap(),
                )
            };
            assert_eq!(r(KeyRange::key("a")), vec!["a"], "{name}");
            assert_eq!(r(KeyRange::key("a/")), Vec::<String>::new(), "{name}");
            assert_eq!(r(KeyRange::key("c\x00")), vec!["c\x00"], "{name}");
            assert_eq!(r(KeyRange::prefix("a/")), vec!["a/1", "a/2"], "{name}");
            assert_eq!(
                r(KeyRange::prefix("a")),
                vec!["a", "a/1", "a/2", "a0"],
                "{name}"
            );
            assert_eq!(r(KeyRange::prefix("c")), vec!["c", "c\x00"], "{name}");
            assert_eq!(
                r(KeyRange::interval("a/", "b")),
                vec!["a/1", "a/2", "a0"],
                "{name}"
            );
            assert_eq!(
                r(KeyRange::interval("a/2", "c\x00")),
                vec!["a/2", "a0", "b", "c"],
                "{name}"
            );
            assert_eq!(
                r(KeyRange::interval("b", vec![0])),
                vec!["b", "c", "c\x00", "\u{7f}"],
                "{name}"
            );
            assert_eq!(r(KeyRange::interval("", vec![0])).len(), 8, "{name}");
            assert_eq!(r(KeyRange::prefix("")).len(), 8, "{name}");
            assert_eq!(
                r(KeyRange::interval("c", "b")),
                Vec::<String>::new(),
                "{name}"
            );
            assert_eq!(
                r(KeyRange::interval("b", "b")),
                Vec::<String>::new(),
                "{name}"
            );
            let full = m
                .range(&RangeRequest {
                    revision,
                    ..rq(KeyRange::key("b"))
                })
                .unwrap();
            assert_eq!(full.kvs, vec![kv("b", "v-b", 6, 6, 1, 0)], "{name}");
            assert_eq!(full.revision, 9, "{name}");
        }
    }
}

#[test]
fn range_limit_more_count_keys_only_and_count_only() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        for k in ["k1", "k2", "k3", "k4", "k5"] {
            put(&m, k, "value");
        }
        put(&m, "other", "x");
        let rev = m.revision();
        for revision in [0, rev, rev - 1] {
            let base = RangeRequest {
                revision,
                ..rq(KeyRange::prefix("k"))
            };
            let r = m
                .range(&RangeRequest {
                    limit: 2,
                    ..base.clone()
                })
                .unwrap();
            assert_eq!(keys_of(&r), vec!["k1", "k2"], "{name}@{revision}");
            assert!(r.more, "{name}@{revision}");
            assert_eq!((r.count, r.revision), (5, rev), "{name}@{revision}");

            let r = m
                .range(&RangeRequest {
                    limit: 5,
                    ..base.clone()
                })
                .unwrap();
            assert_eq!(
                (r.kvs.len(), r.more, r.count),
                (5, false, 5),
                "{name}@{revision}"
            );
            let r = m
                .range(&RangeRequest {
                    limit: 9,
                    ..base.clone()
                })
                .unwrap();
            assert_eq!(
                (r.kvs.len(), r.more, r.count),
                (5, false, 5),
                "{name}@{revision}"
            );
            let r = m.range(&base).unwrap();
            assert_eq!(
                (r.kvs.len(), r.more, r.count),
                (5, false, 5),
                "{name}@{revision}"
            );

            let r = m
                .range(&RangeRequest {
                    limit: 2,
                    sort_order: SortOrder::Descend,
                    sort_target: SortTarget::Key,
                    ..base.clone()
                })
                .unwrap();
            assert_eq!(keys_of(&r), vec!["k5", "k4"], "{name}@{revision}");
            assert!(r.more && r.count == 5, "{name}@{revision}");

            let r = m
                .range(&RangeRequest {
                    count_only: true,
                    ..base.clone()
                })
                .unwrap();
            assert!(r.kvs.is_empty(), "{name}@{revision}");
            assert_eq!(r.count, 5, "{name}@{revision}");

            let r = m
                .range(&RangeRequest {
                    keys_only: true,
                    limit: 3,
                    ..base.clone()
                })
                .unwrap();
            assert_eq!(keys_of(&r), vec!["k1", "k2", "k3"], "{name}@{revision}");
            assert!(
                r.kvs.iter().all(|kv| kv.value.is_empty()),
                "{name}@{revision}"
            );
            assert_eq!(r.kvs[0], kv("k1", "", 2, 2, 1, 0), "{name}@{revision}");
            assert!(r.more && r.count == 5, "{name}@{revision}");

            // Filters on create/mod revision count only what passes.
            let r = m
                .range(&RangeRequest {
                    max_create_revision: 4,
                    min_mod_revision: 3,
                    ..base.clone()
                })
                .unwrap();
            assert_eq!(keys_of(&r), vec!["k2", "k3"], "{name}@{revision}");
            assert_eq!(r.count, 2, "{name}@{revision}");
        }
    }
}

#[test]
fn range_at_a_past_revision_sees_that_revision() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1"); // 2
        put(&m, "a", "2"); // 3
        put(&m, "b", "1"); // 4
        delete(&m, KeyRange::key("a")); // 5
        put(&m, "a", "3"); // 6
        delete(&m, KeyRange::key("b")); // 7
        let at = |rev: i64| -> Vec<(String, String)> {
            range_all(&m, rev)
                .unwrap()
                .kvs
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key.clone()).unwrap(),
                        String::from_utf8(kv.value.clone()).unwrap(),
                    )
                })
                .collect()
        };
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(at(1), s(&[]), "{name}");
        assert_eq!(at(2), s(&[("a", "1")]), "{name}");
        assert_eq!(at(3), s(&[("a", "2")]), "{name}");
        assert_eq!(at(4), s(&[("a", "2"), ("b", "1")]), "{name}");
        assert_eq!(at(5), s(&[("b", "1")]), "{name}");
        assert_eq!(at(6), s(&[("a", "3"), ("b", "1")]), "{name}");
        assert_eq!(at(7), s(&[("a", "3")]), "{name}");
        assert_eq!(at(0), at(7), "{name}");
        // Full records, and the header revision is the current one.
        let r = m
            .range(&RangeRequest {
                revision: 4,
                ..rq(KeyRange::key("a"))
            })
            .unwrap();
        assert_eq!(r.kvs, vec![kv("a", "2", 2, 3, 2, 0)], "{name}");
        assert_eq!(r.revision, 7, "{name}");
        let r = m
            .range(&RangeRequest {
                revision: 6,
                ..rq(KeyRange::key("a"))
            })
            .unwrap();
        assert_eq!(r.kvs, vec![kv("a", "3", 6, 6, 1, 0)], "{name}");
    }
}

#[test]
fn reading_a_future_revision_fails() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1");
        assert_eq!(
            range_all(&m, 3),
            Err(StoreError::FutureRevision {
                requested: 3,
                current: 2
            }),
            "{name}"
        );
        assert!(range_all(&m, 2).is_ok(), "{name}");
        // Inside a txn too, without applying anything.
        let e = err(apply(
            &m,
            Command::Txn(TxnRequest {
                success: vec![
                    op_put("b", "1"),
                    RequestOp::Range(RangeRequest {
                        revision: 9,
                        ..rq(everything())
                    }),
                ],
                ..TxnRequest::default()
            }),
        ));
        assert_eq!(
            e,
            StoreError::FutureRevision {
                requested: 9,
                current: 2
            },
            "{name}"
        );
        assert_eq!((m.revision(), get(&m, "b")), (2, None), "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------

#[test]
fn compaction_drops_old_revisions_and_keeps_what_is_readable() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1"); // 2
        put(&m, "a", "2"); // 3
        put(&m, "b", "1"); // 4
        put(&m, "gone", "x"); // 5
        delete(&m, KeyRange::key("gone")); // 6
        put(&m, "a", "3"); // 7
        put(&m, "c", "1"); // 8
        let before: Vec<_> = (6..=8).map(|r| range_all(&m, r).unwrap()).collect();

        compact(&m, 6);
        assert_eq!(m.compact_revision(), 6, "{name}");
        assert_eq!(m.revision(), 8, "{name}");
        for r in 1..6 {
            assert_eq!(
                range_all(&m, r),
                Err(StoreError::Compacted {
                    requested: r,
                    compact_revision: 6
                }),
                "{name}@{r}"
            );
        }
        let after: Vec<_> = (6..=8).map(|r| range_all(&m, r).unwrap()).collect();
        assert_eq!(
            before, after,
            "{name}: reads at and after the compact revision are unchanged"
        );
        assert_eq!(
            keys_of(&range_all(&m, 6).unwrap()),
            vec!["a", "b"],
            "{name}"
        );
        assert_eq!(get(&m, "a"), Some(kv("a", "3", 2, 7, 3, 0)), "{name}");
        assert_eq!(get(&m, "b"), Some(kv("b", "1", 4, 4, 1, 0)), "{name}");

        // Compacting again at or below the compaction point, or in the future, fails.
        for r in [0, 3, 6] {
            assert_eq!(
                err(apply(&m, Command::Compact { revision: r })),
                StoreError::Compacted {
                    requested: r,
                    compact_revision: 6
                },
                "{name}"
            );
        }
        assert_eq!(
            err(apply(&m, Command::Compact { revision: 9 })),
            StoreError::FutureRevision {
                requested: 9,
                current: 8
            },
            "{name}"
        );
        // Compacting up to the current revision keeps the current state readable.
        compact(&m, 8);
        assert_eq!(range_all(&m, 8).unwrap(), after[2], "{name}");
        assert_eq!(range_all(&m, 0).unwrap(), after[2], "{name}");
        // Events below the compaction point are gone.
        assert_eq!(event_revisions(t.engine.as_ref()), vec![8], "{name}");
    }
}

#[test]
fn repeated_compactions_never_resurrect_deleted_keys() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "x", "1"); // 2
        put(&m, "y", "1"); // 3
        compact(&m, 3); // x@2 is x's latest version at 3: it stays, its events go
        delete(&m, KeyRange::key("x")); // 4
        put(&m, "z", "1"); // 5
        compact(&m, 5);
        put(&m, "later", "1"); // 6: so that reads at 5 come from the history
        for r in [5, 6, 0] {
            assert_eq!(get_at(&m, "x", r), None, "{name}@{r}");
        }
        assert_eq!(
            keys_of(&range_all(&m, 5).unwrap()),
            vec!["y", "z"],
            "{name}"
        );
        // The same with a key overwritten across compactions.
        put(&m, "y", "2"); // 7
        put(&m, "filler", "1"); // 8
        compact(&m, 8);
        delete(&m, KeyRange::key("y")); // 9
        put(&m, "w", "1"); // 10
        compact(&m, 10);
        put(&m, "later", "2"); // 11
        assert_eq!(
            keys_of(&range_all(&m, 10).unwrap()),
            vec!["filler", "later", "w", "z"],
            "{name}"
        );
        assert_eq!(get_at(&m, "y", 10), None, "{name}");
    }
}

#[test]
fn compaction_removes_superseded_history_records() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let e = t.engine.as_ref();
        // Each time, the key's latest version is older than the compact revision, so its
        // events go while the version stays.
        for v in ["1", "2", "3"] {
            put(&m, "k", v);
        }
        put(&m, "other", "1");
        assert_eq!(history_versions(e, "k"), 3, "{name}");
        compact(&m, m.revision());
        assert_eq!(
            history_versions(e, "k"),
            1,
            "{name}: only the version readable at the compact revision"
        );

        put(&m, "k", "4");
        put(&m, "k", "5");
        put(&m, "other", "2");
        compact(&m, m.revision());
        assert_eq!(
            history_versions(e, "k"),
            1,
            "{name}: the version kept by the last compaction goes too"
        );

        delete(&m, KeyRange::key("k"));
        put(&m, "other", "3");
        compact(&m, m.revision());
        assert_eq!(
            history_versions(e, "k"),
            0,
            "{name}: a deleted key leaves nothing"
        );
        assert_eq!(history_versions(e, "other"), 1, "{name}");
        assert_eq!(event_revisions(e), vec![m.revision()], "{name}");

        // Compaction inside the same apply batch as the writes it drops.
        let rev = m.revision();
        let rs = m
            .apply(
                vec![
                    Some(Command::Put(PutRequest::new("b", "1"))),
                    Some(Command::Put(PutRequest::new("b", "2"))),
                    Some(Command::Put(PutRequest::new("d", "1"))),
                    Some(Command::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::key("d"),
                        prev_kv: false,
                    })),
                    Some(Command::Put(PutRequest::new("b", "3"))),
                    Some(Command::Compact { revision: rev + 5 }),
                ],
                WriteBatch::new(),
            )
            .unwrap();
        assert!(
            rs.iter().all(|r| !matches!(r, CommandResult::Error(_))),
            "{name}: {rs:?}"
        );
        assert_eq!(m.compact_revision(), rev + 5, "{name}");
        assert_eq!(history_versions(e, "b"), 1, "{name}");
        assert_eq!(history_versions(e, "d"), 0, "{name}");
        assert_eq!(event_revisions(e), vec![rev + 5], "{name}");
        assert_eq!(
            keys_of(&range_all(&m, rev + 5).unwrap()),
            vec!["b", "other"],
            "{name}"
        );
        assert_eq!(value_of(&get(&m, "b")), Some("3"), "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Txn
// ---------------------------------------------------------------------------------------

fn check(m: &Mvcc, compare: Vec<Compare>) -> bool {
    let r = txn(
        m,
        TxnRequest {
            compare,
            success: vec![RequestOp::Range(rq(KeyRange::key("probe-then")))],
            failure: vec![RequestOp::Range(rq(KeyRange::key("probe-else")))],
        },
    );
    assert_eq!(r.responses.len(), 1);
    r.succeeded
}

#[test]
fn txn_compares_every_target_with_every_operator() {
    use CompareOp::*;
    use CompareTarget as T;
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let lease = grant(&m, 42, 60);
        put(&m, "a", "m"); // 2
        put(&m, "filler", "x"); // 3
        put_lease(&m, "a", "m", lease); // 4: a has create 2, mod 4, version 2, lease 42
        let rev = m.revision();

        // (target below, equal to, above the key's field)
        let cases: Vec<(T, T, T)> = vec![
            (
                T::Value(b"l".to_vec()),
                T::Value(b"m".to_vec()),
                T::Value(b"n".to_vec()),
            ),
            (T::Version(1), T::Version(2), T::Version(3)),
            (T::Create(1), T::Create(2), T::Create(3)),
            (T::Mod(3), T::Mod(4), T::Mod(5)),
            (T::Lease(41), T::Lease(42), T::Lease(43)),
        ];
        for (below, equal, above) in cases {
            let c = |op, target: &T| check(&m, vec![cmp("a", op, target.clone())]);
            assert!(
                c(Equal, &equal) && !c(Equal, &below) && !c(Equal, &above),
                "{name} = {equal:?}"
            );
            assert!(
                !c(NotEqual, &equal) && c(NotEqual, &below) && c(NotEqual, &above),
                "{name} != {equal:?}"
            );
            // The key's field compared with the target: field > below, field < above.
            assert!(
                c(Greater, &below) && !c(Greater, &equal) && !c(Greater, &above),
                "{name} > {equal:?}"
            );
            assert!(
                c(Less, &above) && !c(Less, &equal) && !c(Less, &below),
                "{name} < {equal:?}"
            );
        }

        // An absent key has version, create, mod and lease 0; a value compare on it fails.
        let absent = |op, target| check(&m, vec![cmp("nope", op, target)]);
        assert!(absent(Equal, T::Version(0)), "{name}");
        assert!(absent(Equal, T::Create(0)), "{name}");
        assert!(absent(Equal, T::Mod(0)), "{name}");
        assert!(absent(Equal, T::Lease(0)), "{name}");
        assert!(absent(Less, T::Version(1)), "{name}");
        assert!(!absent(Greater, T::Version(0)), "{name}");
        for op in [Equal, NotEqual, Less, Greater] {
            assert!(!absent(op, T::Value(Vec::new())), "{name} {op:?}");
            assert!(!absent(op, T::Value(b"x".to_vec())), "{name} {op:?}");
        }

        // All compares must hold.
        assert!(
            check(
                &m,
                vec![
                    cmp("a", Equal, T::Version(2)),
                    cmp("nope", Equal, T::Create(0))
                ]
            ),
            "{name}"
        );
        assert!(
            !check(
                &m,
                vec![
                    cmp("a", Equal, T::Version(2)),
                    cmp("nope", Greater, T::Create(0))
                ]
            ),
            "{name}"
        );
        assert!(check(&m, vec![]), "{name}");

        // A compare over a range holds when it holds for every key in it...
        put(&m, "r/1", "v");
        put(&m, "r/2", "v");
        let over = |range: KeyRange, op, target| check(&m, vec![Compare { range, op, target }]);
        assert!(
            over(KeyRange::prefix("r/"), Equal, T::Value(b"v".to_vec())),
            "{name}"
        );
        assert!(over(KeyRange::prefix("r/"), Equal, T::Version(1)), "{name}");
        assert!(
            !over(KeyRange::prefix("r/"), Less, T::Mod(rev + 2)),
            "{name}"
        );
        assert!(
            over(KeyRange::prefix("r/"), Less, T::Mod(rev + 3)),
            "{name}"
        );
        // ...and an empty range compares like an absent key (etcd's applyCompare).
        assert!(
            over(KeyRange::prefix("empty/"), Equal, T::Create(0)),
            "{name}"
        );
        assert!(
            !over(KeyRange::prefix("empty/"), Greater, T::Version(0)),
            "{name}"
        );
        assert!(
            !over(KeyRange::prefix("empty/"), Equal, T::Version(3)),
            "{name}"
        );
        assert!(
            !over(
                KeyRange::prefix("empty/"),
                NotEqual,
                T::Value(b"v".to_vec())
            ),
            "{name}"
        );

        // Then / else run the right branch, and a range in a branch sees the txn's writes.
        let cas = |expected_mod: i64, v: &str| {
            txn(
                &m,
                TxnRequest {
                    compare: vec![cmp("a", Equal, T::Mod(expected_mod))],
                    success: vec![op_put("a", v), RequestOp::Range(rq(KeyRange::key("a")))],
                    failure: vec![RequestOp::Range(rq(KeyRange::key("a")))],
                },
            )
        };
        let r = cas(3, "lost");
        assert!(!r.succeeded, "{name}");
        match &r.responses[..] {
            [ResponseOp::Range(rr)] => assert_eq!(rr.kvs[0].value, b"m".to_vec(), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        let r = cas(4, "won");
        assert!(r.succeeded, "{name}");
        match &r.responses[..] {
            [ResponseOp::Put(p), ResponseOp::Range(rr)] => {
                assert_eq!(p.revision, r.revision, "{name}");
                assert_eq!(rr.kvs[0].value, b"won".to_vec(), "{name}");
                assert_eq!(rr.kvs[0].mod_revision, r.revision, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(value_of(&get(&m, "a")), Some("won"), "{name}");
    }
}

#[test]
fn txn_rejects_writing_a_key_twice_and_leaves_state_unchanged() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "0");
        put(&m, "p/x", "0");
        let before = observe(&m);
        let dup = |success: Vec<RequestOp>| {
            err(apply(
                &m,
                Command::Txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                }),
            ))
        };
        assert_eq!(
            dup(vec![op_put("a", "1"), op_put("b", "1"), op_put("a", "2")]),
            StoreError::DuplicateKey("a".into()),
            "{name}"
        );
        assert_eq!(
            dup(vec![
                op_put("p/y", "1"),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::prefix("p/"),
                    prev_kv: false
                }),
            ]),
            StoreError::DuplicateKey("p/y".into()),
            "{name}"
        );
        assert_eq!(
            dup(vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::key("a"),
                    prev_kv: false
                }),
                op_put("a", "1"),
            ]),
            StoreError::DuplicateKey("a".into()),
            "{name}"
        );
        // Only the chosen branch counts.
        let r = txn(
            &m,
            TxnRequest {
                compare: vec![cmp("a", CompareOp::Equal, CompareTarget::Version(99))],
                success: vec![op_put("a", "1"), op_put("a", "2")],
                failure: vec![],
            },
        );
        assert!(!r.succeeded, "{name}");
        assert_eq!(observe(&m), before, "{name}");

        // Overlapping deletes are fine.
        let r = txn(
            &m,
            TxnRequest {
                success: vec![
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::prefix("p/"),
                        prev_kv: false,
                    }),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::key("p/x"),
                        prev_kv: false,
                    }),
                ],
                ..TxnRequest::default()
            },
        );
        assert_eq!(r.revision, before.revision + 1, "{name}");
        match &r.responses[..] {
            [ResponseOp::DeleteRange(d1), ResponseOp::DeleteRange(d2)] => {
                assert_eq!((d1.deleted, d2.deleted), (1, 0), "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_failing_txn_op_applies_nothing() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1"); // 2
        put(&m, "a", "2"); // 3
        put(&m, "b", "1"); // 4
        compact(&m, 3);
        let before = observe(&m);
        let failing = |success: Vec<RequestOp>| {
            err(apply(
                &m,
                Command::Txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                }),
            ))
        };
        assert_eq!(
            failing(vec![
                op_put("c", "1"),
                RequestOp::Range(RangeRequest {
                    revision: 2,
                    ..rq(everything())
                })
            ]),
            StoreError::Compacted {
                requested: 2,
                compact_revision: 3
            },
            "{name}"
        );
        assert_eq!(
            failing(vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::key("a"),
                    prev_kv: false
                }),
                RequestOp::Range(RangeRequest {
                    revision: 5,
                    ..rq(everything())
                }),
            ]),
            StoreError::FutureRevision {
                requested: 5,
                current: 4
            },
            "{name}"
        );
        assert_eq!(
            failing(vec![
                op_put("c", "1"),
                RequestOp::Put(PutRequest {
                    lease: 9,
                    ..PutRequest::new("d", "1")
                })
            ]),
            StoreError::LeaseNotFound(9),
            "{name}"
        );
        assert_eq!(
            failing(vec![
                op_put("c", "1"),
                RequestOp::Put(PutRequest {
                    ignore_value: true,
                    ..PutRequest::new("d", "")
                })
            ]),
            StoreError::KeyNotFound,
            "{name}"
        );
        assert_eq!(observe(&m), before, "{name}");
        // The next write gets the next revision, and nothing of the failed txns shows up.
        assert_eq!(put(&m, "e", "1").revision, 5, "{name}");
        assert_eq!(
            keys_of(&range_all(&m, 0).unwrap()),
            vec!["a", "b", "e"],
            "{name}"
        );
        assert_eq!(history_versions(t.engine.as_ref(), "c"), 0, "{name}");
    }
}

#[test]
fn txn_reads_at_a_revision_written_earlier_in_the_same_batch() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "0"); // 2, on disk before the batch
        let read_at = |revision: i64| {
            RequestOp::Range(RangeRequest {
                revision,
                ..rq(everything())
            })
        };
        let rs = m
            .apply(
                vec![
                    Some(Command::Put(PutRequest::new("a", "1"))), // 3
                    Some(Command::Put(PutRequest::new("b", "1"))), // 4
                    Some(Command::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::key("a"),
                        prev_kv: false,
                    })), // 5
                    Some(Command::Txn(TxnRequest {
                        success: vec![
                            read_at(2),
                            read_at(3),
                            read_at(4),
                            read_at(5),
                            op_put("c", "1"),
                        ],
                        ..TxnRequest::default()
                    })), // 6
                ],
                WriteBatch::new(),
            )
            .unwrap();
        let CommandResult::Txn(r) = &rs[3] else {
            panic!("{name}: {rs:?}")
        };
        let seen: Vec<Vec<(String, String)>> = r.responses[..4]
            .iter()
            .map(|resp| match resp {
                ResponseOp::Range(rr) => {
                    assert_eq!(rr.revision, 6, "{name}");
                    rr.kvs
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8(kv.key.clone()).unwrap(),
                                String::from_utf8(kv.value.clone()).unwrap(),
                            )
                        })
                        .collect()
                }
                other => panic!("{name}: {other:?}"),
            })
            .collect();
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            seen,
            vec![
                s(&[("a", "0")]),
                s(&[("a", "1")]),
                s(&[("a", "1"), ("b", "1")]),
                s(&[("b", "1")]),
            ],
            "{name}: the same reads as when the commands are applied one by one"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------

#[test]
fn put_with_an_unknown_lease_fails() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        assert_eq!(
            err(apply(
                &m,
                Command::Put(PutRequest {
                    lease: 5,
                    ..PutRequest::new("a", "1")
                })
            )),
            StoreError::LeaseNotFound(5),
            "{name}"
        );
        assert_eq!((m.revision(), get(&m, "a")), (1, None), "{name}");
        grant(&m, 5, 10);
        assert_eq!(put_lease(&m, "a", "1", 5).revision, 2, "{name}");
        assert_eq!(get(&m, "a").unwrap().lease, 5, "{name}");
    }
}

/// M6 (security.md): the gateway refuses a range whose answer would be too large before
/// copying it; `range_size` is the estimate it uses.
#[test]
fn range_size_counts_keys_and_values_within_the_limit() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1234");
        put(&m, "b", "12");
        put(&m, "c", "123456");
        let all = KeyRange {
            key: b"a".to_vec(),
            range_end: b"d".to_vec(),
        };
        let mut req = rq(all);
        assert_eq!(m.range_size(&req), 3 + 12, "{name}");
        req.keys_only = true;
        assert_eq!(m.range_size(&req), 3, "{name}");
        req.keys_only = false;
        req.limit = 2;
        assert_eq!(m.range_size(&req), 2 + 6, "{name}");
        req.sort_order = SortOrder::Descend;
        assert_eq!(
            m.range_size(&req),
            2 * 7,
            "{name}: at most limit times the largest"
        );
        req.count_only = true;
        assert_eq!(m.range_size(&req), 0, "{name}");
    }
}

/// H3 (security.md): a TTL above etcd's `MaxLeaseTTL` is refused by the state machine
/// itself, so no replicated command can bring one into the lease table.
#[test]
fn a_lease_ttl_above_the_maximum_is_refused() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        for ttl in [i64::MAX, crate::command::MAX_LEASE_TTL + 1] {
            assert_eq!(
                err(apply(&m, Command::LeaseGrant { id: 0, ttl })),
                StoreError::LeaseTtlTooLarge {
                    ttl,
                    max: crate::command::MAX_LEASE_TTL
                },
                "{name}"
            );
        }
        assert_eq!(m.leases(), vec![], "{name}");
        let id = grant(&m, 0, crate::command::MAX_LEASE_TTL);
        assert_eq!(
            m.leases(),
            vec![(id, crate::command::MAX_LEASE_TTL)],
            "{name}"
        );
    }
}

#[test]
fn lease_grant_and_revoke_delete_all_attached_keys_in_one_revision() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        assert_eq!(
            grant(&m, 0, 10),
            1,
            "{name}: the state machine picks ids from 1"
        );
        assert_eq!(grant(&m, 7, 20), 7, "{name}");
        assert_eq!(grant(&m, 0, 10), 2, "{name}");
        assert_eq!(
            err(apply(&m, Command::LeaseGrant { id: 7, ttl: 5 })),
            StoreError::LeaseExists(7),
            "{name}"
        );
        assert!(
            matches!(
                err(apply(&m, Command::LeaseGrant { id: 0, ttl: 0 })),
                StoreError::InvalidArgument(_)
            ),
            "{name}"
        );
        assert!(
            matches!(
                err(apply(&m, Command::LeaseGrant { id: -3, ttl: 5 })),
                StoreError::InvalidArgument(_)
            ),
            "{name}"
        );
        assert_eq!(m.leases(), vec![(1, 10), (2, 10), (7, 20)], "{name}");

        put_lease(&m, "a", "1", 1); // 2
        put_lease(&m, "b", "1", 1); // 3
        put_lease(&m, "c", "1", 7); // 4
        put(&m, "d", "1"); // 5
        put_lease(&m, "moved", "1", 1); // 6
        put_lease(&m, "moved", "2", 7); // 7: now on lease 7 only
        put_lease(&m, "detached", "1", 1); // 8
        put(&m, "detached", "2"); // 9: no lease any more
        let info = m.lease(1).unwrap();
        assert_eq!(info.granted_ttl, 10, "{name}");
        assert_eq!(info.keys, vec![b"a".to_vec(), b"b".to_vec()], "{name}");
        assert_eq!(
            m.lease(7).unwrap().keys,
            vec![b"c".to_vec(), b"moved".to_vec()],
            "{name}"
        );

        assert_eq!(
            apply(&m, Command::LeaseRevoke { id: 1 }),
            CommandResult::LeaseRevoke { revision: 10 },
            "{name}"
        );
        assert_eq!(m.revision(), 10, "{name}");
        assert_eq!(m.lease(1), None, "{name}");
        assert_eq!(
            keys_of(&range_all(&m, 0).unwrap()),
            vec!["c", "d", "detached", "moved"],
            "{name}"
        );
        assert_eq!(keys_of(&range_all(&m, 9).unwrap()).len(), 6, "{name}");
        // One events record for the revoke, holding both deletions.
        let events: Vec<Event> =
            crate::codec::decode(&t.engine.get(Cf::Events, &be(10)).unwrap().unwrap()).unwrap();
        assert_eq!(events.len(), 2, "{name}");
        assert!(
            events
                .iter()
                .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 10),
            "{name}"
        );
        assert_eq!(
            err(apply(&m, Command::LeaseRevoke { id: 1 })),
            StoreError::LeaseNotFound(1),
            "{name}"
        );
        // A revoked lease can no longer be attached.
        assert_eq!(
            err(apply(
                &m,
                Command::Put(PutRequest {
                    lease: 1,
                    ..PutRequest::new("a", "1")
                })
            )),
            StoreError::LeaseNotFound(1),
            "{name}"
        );
        assert_eq!(m.revision(), 10, "{name}");
    }
}

#[test]
fn lease_expire_revokes_known_leases_and_skips_unknown_ones() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        for id in [1, 2, 3] {
            grant(&m, id, 10);
        }
        put_lease(&m, "a", "1", 1); // 2
        put_lease(&m, "b", "1", 2); // 3
        put_lease(&m, "c", "1", 2); // 4
        let r = apply(
            &m,
            Command::LeaseExpire {
                ids: vec![2, 99, 1, 3, 2],
            },
        );
        assert_eq!(
            r,
            CommandResult::LeaseExpire {
                revision: 6,
                expired: vec![2, 1, 3]
            },
            "{name}: each revoke with keys is a revision; one without keys is not"
        );
        assert!(m.leases().is_empty(), "{name}");
        assert_eq!(m.key_count(), 0, "{name}");
        assert_eq!(
            keys_of(&range_all(&m, 5).unwrap()),
            vec!["a"],
            "{name}: lease 2 went first"
        );
        assert_eq!(
            apply(&m, Command::LeaseExpire { ids: vec![1] }),
            CommandResult::LeaseExpire {
                revision: 6,
                expired: vec![]
            },
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sequences, ignore_value / ignore_lease
// ---------------------------------------------------------------------------------------

#[test]
fn incr_is_a_sequence() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let incr = |key: &str, delta| {
            apply(
                &m,
                Command::Incr {
                    key: key.into(),
                    delta,
                },
            )
        };
        assert_eq!(
            incr("seq", 1),
            CommandResult::Incr {
                value: 1,
                revision: 2
            },
            "{name}: absent counts as 0"
        );
        assert_eq!(
            incr("seq", 1),
            CommandResult::Incr {
                value: 2,
                revision: 3
            },
            "{name}"
        );
        assert_eq!(
            incr("seq", 40),
            CommandResult::Incr {
                value: 42,
                revision: 4
            },
            "{name}"
        );
        assert_eq!(get(&m, "seq"), Some(kv("seq", "42", 2, 4, 3, 0)), "{name}");
        assert_eq!(
            incr("zero", 0),
            CommandResult::Incr {
                value: 0,
                revision: 5
            },
            "{name}"
        );
        assert_eq!(value_of(&get(&m, "zero")), Some("0"), "{name}");

        put(&m, "text", "abc"); // 6
        assert_eq!(
            err(incr("text", 1)),
            StoreError::NotANumber { key: "text".into() },
            "{name}"
        );
        put(&m, "neg", "-1"); // 7
        assert!(
            matches!(err(incr("neg", 1)), StoreError::NotANumber { .. }),
            "{name}"
        );
        assert_eq!(m.revision(), 7, "{name}");

        // A counter keeps its lease.
        grant(&m, 3, 10);
        put_lease(&m, "leased", "9", 3); // 8
        assert_eq!(
            incr("leased", 1),
            CommandResult::Incr {
                value: 10,
                revision: 9
            },
            "{name}"
        );
        assert_eq!(get(&m, "leased").unwrap().lease, 3, "{name}");
        // And saturates instead of wrapping.
        put(&m, "big", &u64::MAX.to_string());
        assert_eq!(
            incr("big", 5),
            CommandResult::Incr {
                value: u64::MAX,
                revision: 11
            },
            "{name}"
        );
    }
}

#[test]
fn put_can_keep_the_current_value_or_lease() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        grant(&m, 1, 10);
        grant(&m, 2, 10);
        put_lease(&m, "a", "orig", 1); // 2

        put_req(
            &m,
            PutRequest {
                ignore_value: true,
                lease: 2,
                ..PutRequest::new("a", "ignored")
            },
        ); // 3
        assert_eq!(get(&m, "a"), Some(kv("a", "orig", 2, 3, 2, 2)), "{name}");
        put_req(
            &m,
            PutRequest {
                ignore_lease: true,
                lease: 1,
                ..PutRequest::new("a", "new")
            },
        ); // 4
        assert_eq!(get(&m, "a"), Some(kv("a", "new", 2, 4, 3, 2)), "{name}");
        put_req(
            &m,
            PutRequest {
                ignore_value: true,
                ignore_lease: true,
                ..PutRequest::new("a", "")
            },
        ); // 5
        assert_eq!(get(&m, "a"), Some(kv("a", "new", 2, 5, 4, 2)), "{name}");
        assert_eq!(m.lease(2).unwrap().keys, vec![b"a".to_vec()], "{name}");
        assert!(m.lease(1).unwrap().keys.is_empty(), "{name}");

        for req in [
            PutRequest {
                ignore_value: true,
                ..PutRequest::new("missing", "")
            },
            PutRequest {
                ignore_lease: true,
                ..PutRequest::new("missing", "v")
            },
        ] {
            assert_eq!(
                err(apply(&m, Command::Put(req.clone()))),
                StoreError::KeyNotFound,
                "{name}"
            );
            assert_eq!(
                err(apply(
                    &m,
                    Command::Txn(TxnRequest {
                        success: vec![RequestOp::Put(req)],
                        ..TxnRequest::default()
                    })
                )),
                StoreError::KeyNotFound,
                "{name}"
            );
        }
        assert_eq!(m.revision(), 5, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Persistence: reopen, dump / restore
// ---------------------------------------------------------------------------------------

/// A history with every kind of record: versions, deletions, leases, compaction.
fn build_history(m: &Mvcc) {
    grant(m, 1, 30);
    grant(m, 2, 60);
    put(m, "a", "1");
    put(m, "b", "1");
    put_lease(m, "l/1", "x", 1);
    put_lease(m, "l/2", "x", 1);
    put_lease(m, "l/3", "x", 2);
    put(m, "a", "2");
    delete(m, KeyRange::key("b"));
    compact(m, 4);
    apply(
        m,
        Command::Incr {
            key: "seq".into(),
            delta: 3,
        },
    );
    put(m, "a", "3");
    put(m, "b", "again");
    delete(m, KeyRange::key("l/2"));
    put(m, "bin\x00\u{ff}", "\x00");
}

#[test]
fn reopening_the_state_machine_restores_the_same_state() {
    for (mut t, m) in stores() {
        let name = t.kind.as_str();
        build_history(&m);
        let extra = {
            let mut b = WriteBatch::new();
            b.put(Cf::Meta, "applied", "log-17");
            b
        };
        m.apply(vec![None], extra).unwrap();
        let before = observe(&m);
        assert_eq!(before.compact_revision, 4);
        drop(m);

        // Over the same engine instance (every kind).
        let m = open(&t);
        assert_eq!(observe(&m), before, "{name}");
        assert_eq!(
            m.meta(b"applied").unwrap(),
            Some(b"log-17".to_vec()),
            "{name}"
        );
        drop(m);

        // Over a reopened engine (on-disk kinds).
        if t.on_disk() {
            t.reopen();
            let m = open(&t);
            assert_eq!(observe(&m), before, "{name}: after reopening the engine");
            assert_eq!(
                m.meta(b"applied").unwrap(),
                Some(b"log-17".to_vec()),
                "{name}"
            );
            // And it carries on from there.
            assert_eq!(
                put(&m, "after", "1").revision,
                before.revision + 1,
                "{name}"
            );
            assert_eq!(grant(&m, 0, 5), 3, "{name}: lease ids are not reused");
            apply(&m, Command::LeaseRevoke { id: 1 });
            assert_eq!(
                get(&m, "l/1"),
                None,
                "{name}: reloaded leases still own their keys"
            );
        }
    }
}

fn dump(m: &Mvcc) -> Vec<u8> {
    let mut out = Vec::new();
    m.dump(&mut out).unwrap();
    out
}

#[test]
fn compaction_steps_bound_the_events_they_drop_and_always_progress() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        // Revisions 2..=41: 40 puts of 1 KiB values.
        for i in 0..40 {
            put(&m, &format!("k/{}", i % 7), &"v".repeat(1024));
        }
        let target = m.revision();
        // Nothing to drop yet beyond the budget: the whole way in one step.
        assert_eq!(
            m.compaction_step(target, usize::MAX).unwrap(),
            target,
            "{name}"
        );
        // A 10 KiB budget: a few revisions' events per step (a record holds one event).
        let mut steps = 0;
        let mut from = m.compact_revision();
        while m.compact_revision() < target {
            let step = m.compaction_step(target, 10 * 1024).unwrap();
            assert!(
                step > from.max(1) && step <= target,
                "{name}: step {step} after {from}"
            );
            assert!(
                step - from.max(1) <= 11,
                "{name}: step {step} after {from} is too big"
            );
            compact(&m, step);
            from = step;
            steps += 1;
        }
        // At most 11 revisions a step (so at least 4 steps), and several revisions a step
        // (a record holds ~1–2 KiB here).
        assert!((4..=10).contains(&steps), "{name}: {steps} steps");
        // A budget smaller than one revision still moves one revision on.
        put(&m, "k/last", "x");
        let next = m.revision();
        assert_eq!(m.compaction_step(next, 0).unwrap(), target + 1, "{name}");
        // The steps left the same readable state a single compaction would.
        assert_eq!(
            get(&m, "k/3").map(|kv| kv.value.len()),
            Some(1024),
            "{name}"
        );
    }
}

#[test]
fn a_snapshot_is_fixed_when_taken_and_later_writes_stay_out_of_its_dump() {
    for (t, src) in stores() {
        let name = t.kind.as_str();
        build_history(&src);
        let expected = observe(&src);
        let fixed = src.snapshot().unwrap();
        // Writes, deletes and a compaction after the snapshot was fixed (a snapshot build
        // does not hold applies up on engines with a point-in-time view).
        put(&src, "after/1", "x");
        put(&src, "a", "changed");
        compact(&src, src.revision());
        assert_ne!(observe(&src), expected, "{name}: the source moved on");
        let mut bytes = Vec::new();
        fixed.write_to(&mut bytes).unwrap();
        let dst_t = open_engine(EngineKind::Mem);
        let dst = open(&dst_t);
        dst.restore(&mut Cursor::new(&bytes), WriteBatch::new())
            .unwrap();
        assert_eq!(observe(&dst), expected, "{name}");
    }
}

#[test]
fn dump_then_restore_reproduces_the_state_on_every_engine() {
    for (src_t, src) in stores() {
        build_history(&src);
        let expected = observe(&src);
        let bytes = dump(&src);
        for kind in EngineKind::all() {
            let name = format!("{} -> {}", src_t.kind.as_str(), kind.as_str());
            let t = open_engine(kind);
            let dst = open(&t);
            // The target had its own, different state; the restore replaces all of it.
            for i in 0..30 {
                put(&dst, &format!("old/{i}"), "x");
            }
            grant(&dst, 9, 9);
            let mut extra = WriteBatch::new();
            extra.put(Cf::Meta, "applied", "snap-1");
            extra.put(Cf::RaftMeta, "vote", "kept-with-it");
            dst.restore(&mut Cursor::new(&bytes), extra).unwrap();
            assert_eq!(observe(&dst), expected, "{name}");
            assert_eq!(
                dst.meta(b"applied").unwrap(),
                Some(b"snap-1".to_vec()),
                "{name}"
            );
            assert_eq!(
                t.engine.get(Cf::RaftMeta, b"vote").unwrap(),
                Some(b"kept-with-it".to_vec()),
                "{name}"
            );
            let again = Mvcc::open(t.engine.clone()).unwrap();
            assert_eq!(observe(&again), expected, "{name}: after reopen");
            // The restored store carries on from the restored revision.
            let next = expected.revision + 1;
            let keys_before = dst.key_count();
            assert_eq!(put(&dst, "next", "1").revision, next, "{name}");
            assert_eq!(
                get(&dst, "next"),
                Some(kv("next", "1", next, next, 1, 0)),
                "{name}"
            );
            assert_eq!(dst.key_count(), keys_before + 1, "{name}");
        }
    }
}

#[test]
fn a_corrupt_or_truncated_dump_is_refused_and_changes_nothing() {
    let src_t = open_engine(EngineKind::Mem);
    let src = open(&src_t);
    build_history(&src);
    let good = dump(&src);

    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    for len in [
        0,
        4,
        8,
        9,
        20,
        good.len() / 2,
        good.len() - 5,
        good.len() - 1,
    ] {
        bad.push((format!("truncated to {len}"), good[..len].to_vec()));
    }
    for pos in [
        0,
        8,
        9,
        12,
        good.len() / 3,
        good.len() / 2,
        good.len() - 5,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[pos] ^= 0x5a;
        bad.push((format!("byte {pos} flipped"), b));
    }
    // Well-formed, correctly checksummed, but holding a Raft log record.
    let mut foreign = Vec::new();
    {
        let mut w = SnapshotWriter::new(&mut foreign).unwrap();
        w.record(Cf::Current, b"k", b"v").unwrap();
        w.record(Cf::RaftLog, b"\x00", b"entry").unwrap();
        w.finish().unwrap();
    }
    bad.push(("a Raft log record".into(), foreign));
    let mut trailing_garbage_in_len = good.clone();
    trailing_garbage_in_len.truncate(good.len() - 4);
    trailing_garbage_in_len.extend_from_slice(&[0, 0, 0]);
    bad.push(("short checksum".into(), trailing_garbage_in_len));

    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "mine", "1");
        grant(&m, 4, 4);
        put_lease(&m, "leased", "1", 4);
        compact(&m, 2);
        let before = observe(&m);
        let raw_before = dump(&m);
        for (what, bytes) in &bad {
            let mut extra = WriteBatch::new();
            extra.put(Cf::Meta, "applied", "must-not-appear");
            let r = m.restore(&mut Cursor::new(bytes), extra);
            assert!(r.is_err(), "{name}: {what} was accepted");
            assert_eq!(observe(&m), before, "{name}: {what}");
            assert_eq!(dump(&m), raw_before, "{name}: {what}");
            assert_eq!(m.meta(b"applied").unwrap(), None, "{name}: {what}");
        }
        // The good one still works afterwards.
        m.restore(&mut Cursor::new(&good), WriteBatch::new())
            .unwrap();
        assert_eq!(observe(&m), observe(&src), "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------

const WAIT: Duration = Duration::from_secs(10);

async fn next_msg(s: &mut WatchStream) -> WatchMessage {
    timeout(WAIT, s.recv())
        .await
        .expect("timed out waiting for a watch message")
        .expect("the watch stream ended")
}

/// The next message, which must be events; returns (revision, events).
async fn next_events(s: &mut WatchStream) -> (i64, Vec<Event>) {
    match next_msg(s).await {
        WatchMessage::Events { revision, events } => (revision, events),
        other => panic!("expected events, got {other:?}"),
    }
}

/// Asserts nothing is delivered within a short grace period.
async fn assert_quiet(s: &mut WatchStream) {
    if let Ok(m) = timeout(Duration::from_millis(50), s.recv()).await {
        panic!("expected no message, got {m:?}");
    }
}

fn watch_all(m: &Mvcc, start_revision: i64) -> WatchStream {
    m.hub().watch(WatchRequest {
        range: everything(),
        start_revision,
        ..WatchRequest::default()
    })
}

fn event_keys(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.kv.key.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn watch_from_now_sees_new_changes_in_order() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "before", "x");
        let mut w = watch_all(&m, 0);
        assert_eq!(m.hub().watcher_count(), 1, "{name}");
        put(&m, "a", "1"); // 3
        put(&m, "b", "1"); // 4
        put(&m, "a", "2"); // 5
        delete(&m, KeyRange::key("a")); // 6
        txn(
            &m,
            TxnRequest {
                success: vec![op_put("x", "1"), op_put("y", "1")],
                ..TxnRequest::default()
            },
        ); // 7

        let (r, ev) = next_events(&mut w).await;
        assert_eq!(r, 3, "{name}");
        assert_eq!(
            ev,
            vec![Event {
                kind: EventKind::Put,
                kv: kv("a", "1", 3, 3, 1, 0),
                prev_kv: None
            }],
            "{name}"
        );
        let (r, ev) = next_events(&mut w).await;
        assert_eq!((r, event_keys(&ev)), (4, vec!["b".to_string()]), "{name}");
        let (r, ev) = next_events(&mut w).await;
        assert_eq!(
            (r, ev[0].kv.clone()),
            (5, kv("a", "2", 3, 5, 2, 0)),
            "{name}"
        );
        let (r, ev) = next_events(&mut w).await;
        assert_eq!(r, 6, "{name}");
        assert_eq!(
            ev,
            vec![Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: b"a".to_vec(),
                    mod_revision: 6,
                    ..KeyValue::default()
                },
                prev_kv: None
            }],
            "{name}"
        );
        // A txn is delivered whole, in one message.
        let (r, ev) = next_events(&mut w).await;
        assert_eq!(
            (r, event_keys(&ev)),
            (7, vec!["x".to_string(), "y".to_string()]),
            "{name}"
        );
        assert_quiet(&mut w).await;
        drop(w);
        assert_eq!(
            m.hub().watcher_count(),
            0,
            "{name}: dropping the stream unregisters it"
        );
    }
}

#[tokio::test]
async fn watch_from_revision_one_replays_the_whole_history() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        // On an empty store: nothing yet, then live events.
        let mut early = watch_all(&m, 1);
        put(&m, "a", "1");
        put(&m, "b", "1");
        let mut late = watch_all(&m, 1);
        for w in [&mut early, &mut late] {
            assert_eq!(next_events(w).await.0, 2, "{name}");
            assert_eq!(next_events(w).await.0, 3, "{name}");
        }
        put(&m, "c", "1");
        assert_eq!(next_events(&mut early).await.0, 4, "{name}");
        assert_eq!(next_events(&mut late).await.0, 4, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_the_past_catches_up_then_continues_live_without_gap_or_duplicate() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let m = Arc::new(m);
        for i in 0..600 {
            put(&m, &format!("k{}", i % 7), &i.to_string());
        }
        let start = 3;
        let mut w = watch_all(&m, start);
        // Keep writing while the watcher catches up.
        let writer = {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    put(&m, &format!("live{}", i % 5), &i.to_string());
                }
            })
        };
        let mut expected = start;
        let final_rev = 601 + 300;
        while expected <= final_rev {
            let (r, ev) = next_events(&mut w).await;
            assert_eq!(r, expected, "{name}: ordered, gap-free, no duplicates");
            assert_eq!(ev.len(), 1, "{name}");
            assert_eq!(ev[0].kv.mod_revision, r, "{name}");
            expected += 1;
        }
        writer.join().unwrap();
        assert_eq!(m.revision(), final_rev, "{name}");
        assert_quiet(&mut w).await;
        put(&m, "after", "1");
        assert_eq!(next_events(&mut w).await.0, final_rev + 1, "{name}");
    }
}

#[tokio::test]
async fn watch_filters_by_range_and_event_kind_and_carries_prev_kv() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let watch = |range: KeyRange, prev_kv, filter_put, filter_delete| {
            m.hub().watch(WatchRequest {
                range,
                prev_kv,
                filter_put,
                filter_delete,
                ..WatchRequest::default()
            })
        };
        let mut prefix = watch(KeyRange::prefix("p/"), false, false, false);
        let mut single = watch(KeyRange::key("p/a"), true, false, false);
        let mut no_puts = watch(everything(), true, true, false);
        let mut no_deletes = watch(everything(), false, false, true);

        put(&m, "p/a", "1"); // 2
        put(&m, "q", "1"); // 3
        txn(
            &m,
            TxnRequest {
                success: vec![op_put("q", "2"), op_put("p/b", "1"), op_put("p/a", "2")],
                ..TxnRequest::default()
            },
        ); // 4
        delete(&m, KeyRange::prefix("p/")); // 5
        delete(&m, KeyRange::key("q")); // 6

        // Prefix: only p/ keys, and a revision without any is not sent at all.
        let (r, ev) = next_events(&mut prefix).await;
        assert_eq!((r, event_keys(&ev)), (2, vec!["p/a".to_string()]), "{name}");
        let (r, ev) = next_events(&mut prefix).await;
        assert_eq!(
            (r, event_keys(&ev)),
            (4, vec!["p/b".to_string(), "p/a".to_string()]),
            "{name}"
        );
        assert!(ev.iter().all(|e| e.prev_kv.is_none()), "{name}");
        let (r, ev) = next_events(&mut prefix).await;
        assert_eq!(
            (r, event_keys(&ev)),
            (5, vec!["p/a".to_string(), "p/b".to_string()]),
            "{name}"
        );
        assert!(ev.iter().all(|e| e.kind == EventKind::Delete), "{name}");
        assert_quiet(&mut prefix).await;

        // Single key with prev_kv.
        let (r, ev) = next_events(&mut single).await;
        assert_eq!((r, ev[0].prev_kv.clone()), (2, None), "{name}");
        let (r, ev) = next_events(&mut single).await;
        assert_eq!(r, 4, "{name}");
        assert_eq!(ev.len(), 1, "{name}");
        assert_eq!(ev[0].prev_kv, Some(kv("p/a", "1", 2, 2, 1, 0)), "{name}");
        let (r, ev) = next_events(&mut single).await;
        assert_eq!(r, 5, "{name}");
        assert_eq!(ev[0].kind, EventKind::Delete, "{name}");
        assert_eq!(ev[0].prev_kv, Some(kv("p/a", "2", 2, 4, 2, 0)), "{name}");
        assert_quiet(&mut single).await;

        // Deletes only, with prev_kv.
        let (r, ev) = next_events(&mut no_puts).await;
        assert_eq!((r, ev.len()), (5, 2), "{name}");
        assert_eq!(ev[1].prev_kv, Some(kv("p/b", "1", 4, 4, 1, 0)), "{name}");
        let (r, ev) = next_events(&mut no_puts).await;
        assert_eq!((r, event_keys(&ev)), (6, vec!["q".to_string()]), "{name}");
        assert_eq!(
            ev[0].prev_kv.as_ref().map(|p| p.value.clone()),
            Some(b"2".to_vec()),
            "{name}"
        );
        assert_quiet(&mut no_puts).await;

        // Puts only.
        let revs: Vec<(i64, usize)> = [
            next_events(&mut no_deletes).await,
            next_events(&mut no_deletes).await,
            next_events(&mut no_deletes).await,
        ]
        .iter()
        .map(|(r, ev)| (*r, ev.len()))
        .collect();
        assert_eq!(revs, vec![(2, 1), (3, 1), (4, 3)], "{name}");
        assert_quiet(&mut no_deletes).await;
    }
}

#[tokio::test]
async fn filters_apply_during_catch_up_too() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "p/a", "1"); // 2
        put(&m, "q", "1"); // 3
        delete(&m, KeyRange::key("p/a")); // 4
        let mut w = m.hub().watch(WatchRequest {
            range: KeyRange::prefix("p/"),
            start_revision: 2,
            prev_kv: true,
            filter_put: true,
            ..WatchRequest::default()
        });
        let (r, ev) = next_events(&mut w).await;
        assert_eq!(r, 4, "{name}");
        assert_eq!(ev[0].prev_kv, Some(kv("p/a", "1", 2, 2, 1, 0)), "{name}");
        assert_quiet(&mut w).await;
    }
}

#[tokio::test]
async fn watching_below_the_compaction_point_is_cancelled() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        for i in 0..6 {
            put(&m, "k", &i.to_string()); // 2..=7
        }
        compact(&m, 5);
        let mut w = watch_all(&m, 3);
        assert_eq!(
            next_msg(&mut w).await,
            WatchMessage::Canceled(CancelReason::Compacted {
                compact_revision: 5
            }),
            "{name}"
        );
        assert_eq!(
            timeout(WAIT, w.recv()).await.unwrap(),
            None,
            "{name}: nothing after a cancel"
        );
        assert_eq!(m.hub().watcher_count(), 0, "{name}");

        // From the compaction point itself, everything is still there.
        let mut w = watch_all(&m, 5);
        for r in 5..=7 {
            assert_eq!(next_events(&mut w).await.0, r, "{name}");
        }
    }
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_cancelled_not_silently_truncated() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        let mut slow = watch_all(&m, 0);
        let mut fine = watch_all(&m, 0);
        let n = WATCH_BUFFER + 10;
        let mut delivered_to_fine = 0;
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let cmds = chunk
                .iter()
                .map(|i| Some(Command::Put(PutRequest::new(format!("k{i}"), "v"))))
                .collect();
            m.apply(cmds, WriteBatch::new()).unwrap();
            // This one keeps up.
            for _ in chunk {
                let (r, _) = next_events(&mut fine).await;
                delivered_to_fine += 1;
                assert_eq!(r, 1 + delivered_to_fine, "{name}");
            }
        }
        assert_eq!(
            m.hub().watcher_count(),
            1,
            "{name}: the slow watcher is gone"
        );
        for i in 0..WATCH_BUFFER {
            let (r, _) = next_events(&mut slow).await;
            assert_eq!(
                r,
                2 + i as i64,
                "{name}: what was buffered is delivered in order"
            );
        }
        assert_eq!(
            next_msg(&mut slow).await,
            WatchMessage::Canceled(CancelReason::SlowConsumer),
            "{name}"
        );
        assert_eq!(timeout(WAIT, slow.recv()).await.unwrap(), None, "{name}");
        assert_quiet(&mut fine).await;
    }
}

#[tokio::test]
async fn progress_notifications_carry_the_current_revision() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1");
        let mut wants = m.hub().watch(WatchRequest {
            range: KeyRange::prefix("p/"),
            progress_notify: true,
            ..WatchRequest::default()
        });
        let mut silent = m.hub().watch(WatchRequest {
            range: KeyRange::prefix("p/"),
            ..WatchRequest::default()
        });
        // Writes outside the range move the revision without sending anything.
        put(&m, "a", "2");
        put(&m, "b", "1");
        m.hub().progress_tick(Duration::ZERO);
        assert_eq!(
            next_msg(&mut wants).await,
            WatchMessage::Progress { revision: 4 },
            "{name}"
        );
        assert_quiet(&mut silent).await;
        // Not idle long enough: nothing.
        m.hub().progress_tick(Duration::from_secs(3600));
        assert_quiet(&mut wants).await;
        // On request, even without progress_notify.
        silent.request_progress();
        assert_eq!(
            next_msg(&mut silent).await,
            WatchMessage::Progress { revision: 4 },
            "{name}"
        );
        // After events, the progress revision follows them.
        put(&m, "p/x", "1");
        assert_eq!(next_events(&mut wants).await.0, 5, "{name}");
        put(&m, "c", "1");
        m.hub().progress_tick(Duration::ZERO);
        assert_eq!(
            next_msg(&mut wants).await,
            WatchMessage::Progress { revision: 6 },
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_lease_revoke_is_one_watch_message() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        grant(&m, 1, 10);
        for k in ["s/1", "s/2", "s/3"] {
            put_lease(&m, k, "x", 1);
        }
        let mut w = m.hub().watch(WatchRequest {
            range: everything(),
            prev_kv: true,
            ..WatchRequest::default()
        });
        apply(&m, Command::LeaseRevoke { id: 1 });
        let (r, ev) = next_events(&mut w).await;
        assert_eq!(r, 5, "{name}");
        assert_eq!(event_keys(&ev), vec!["s/1", "s/2", "s/3"], "{name}");
        assert!(
            ev.iter()
                .all(|e| e.kind == EventKind::Delete
                    && e.prev_kv.as_ref().is_some_and(|p| p.lease == 1)),
            "{name}"
        );
        assert_quiet(&mut w).await;
    }
}

#[tokio::test]
async fn a_restore_moves_watchers_to_the_restored_history() {
    let src_t = open_engine(EngineKind::Mem);
    let src = open(&src_t);
    for i in 0..5 {
        put(&src, "k", &i.to_string()); // 2..=6
    }
    let bytes = dump(&src);
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "mine", "1"); // 2
        let mut w = watch_all(&m, 0); // wants 3 onwards
        m.restore(&mut Cursor::new(&bytes), WriteBatch::new())
            .unwrap();
        for r in 3..=6 {
            let (rev, ev) = next_events(&mut w).await;
            assert_eq!(rev, r, "{name}");
            assert_eq!(ev[0].kv.key, b"k".to_vec(), "{name}");
        }
        put(&m, "after", "1");
        assert_eq!(next_events(&mut w).await.0, 7, "{name}");
    }
}

#[test]
fn page_only_ranges_return_one_page_in_either_direction_with_more_set() {
    for (_t, m) in stores() {
        for k in ["p/a", "p/b", "p/c", "p/d", "q/a"] {
            put(&m, k, "v");
        }
        let mut req = RangeRequest::new(KeyRange::prefix("p/"));
        req.limit = 2;
        req.page_only = true;
        req.keys_only = true;
        let fwd = m.range(&req).unwrap();
        let keys: Vec<&[u8]> = fwd.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, vec![b"p/a".as_slice(), b"p/b"]);
        assert!(fwd.more);
        assert_eq!(
            fwd.count, 3,
            "a page counts itself plus one when there is more"
        );
        assert!(fwd.kvs.iter().all(|kv| kv.value.is_empty()));
        req.sort_order = SortOrder::Descend;
        let back = m.range(&req).unwrap();
        let keys: Vec<&[u8]> = back.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, vec![b"p/d".as_slice(), b"p/c"]);
        req.limit = 10;
        let all = m.range(&req).unwrap();
        assert_eq!(all.kvs.len(), 4);
        assert!(!all.more);
    }
}

//! Revisions and versions: each write adds one revision, a txn is one revision, reads and
//! no-op requests add none, and create/mod revision and version follow etcd.

use super::*;

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

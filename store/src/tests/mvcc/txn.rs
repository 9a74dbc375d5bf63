//! Txns: compares of every target and operator, etcd's rules on keys written twice, all or
//! nothing on failure, and reads at revisions written earlier in the same batch.

use super::*;

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

/// etcd checks a branch's writes against each other (`checkIntervals`) before it checks any
/// op against the state, so a key written twice is the error even when an op would also
/// fail on its own: the model oracle found this order reversed.
#[test]
fn a_key_written_twice_is_refused_before_any_check_against_the_state() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "0");
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
        // The put alone would be KeyNotFound (it keeps the lease of a key that is absent).
        let keeps_lease = RequestOp::Put(PutRequest {
            key: b"e".to_vec(),
            ignore_lease: true,
            ..PutRequest::default()
        });
        let delete_all = RequestOp::DeleteRange(DeleteRangeRequest {
            range: everything(),
            prev_kv: false,
        });
        assert_eq!(
            dup(vec![keeps_lease, delete_all]),
            StoreError::DuplicateKey("e".into()),
            "{name}"
        );
        // The first put alone would be LeaseNotFound.
        let unknown_lease = RequestOp::Put(PutRequest {
            key: b"x".to_vec(),
            lease: 99,
            ..PutRequest::default()
        });
        assert_eq!(
            dup(vec![unknown_lease, op_put("x", "1")]),
            StoreError::DuplicateKey("x".into()),
            "{name}"
        );
        // The read alone would be FutureRevision.
        let future_read = RequestOp::Range(RangeRequest {
            revision: 1000,
            ..rq(KeyRange::key("a"))
        });
        assert_eq!(
            dup(vec![future_read, op_put("a", "1"), op_put("a", "2")]),
            StoreError::DuplicateKey("a".into()),
            "{name}"
        );
        assert_eq!(observe(&m), before, "{name}: a refused txn changes nothing");
    }
}

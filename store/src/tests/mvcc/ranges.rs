//! Ranges: key, prefix, interval and open-ended ranges, limits and counts, paging, the size
//! estimate, and reads at past and future revisions.

use super::*;

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

/// M6 (security review): the gateway refuses a range whose answer would be too large before
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

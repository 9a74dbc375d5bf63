//! Large live values are kept on disk, not in memory (`mvcc/live.rs`): what reads, writes,
//! compares and lease revocations see is unchanged, the memory held for values is not
//! their size, and a reopened store spills them again. The whole suite above also passes
//! with every value spilled (`INLINE_VALUE_MAX = 0`, checked by hand when it changed).

use super::*;
use crate::mvcc::INLINE_VALUE_MAX;

/// A value of `n` bytes unique to `tag`.
fn big(tag: &str, n: usize) -> String {
    let mut v = format!("{tag}:");
    while v.len() < n {
        v.push_str(tag);
    }
    v.truncate(n);
    v
}

#[test]
fn large_values_are_read_whole_but_not_held_in_memory() {
    for (t, m) in stores() {
        let name = t.kind;
        let small = "x".repeat(INLINE_VALUE_MAX);
        for i in 0..200 {
            put(&m, &format!("runs/{i:03}"), &big(&format!("run{i}"), 4096));
        }
        put(&m, "small", &small);
        // Only the small value is held.
        assert_eq!(m.held_value_bytes(), small.len(), "{name:?}");

        // Point reads, pages both ways, the limit fast path, keys only, sort by value.
        assert_eq!(
            value_of(&get(&m, "runs/007")),
            Some(big("run7", 4096).as_str()),
            "{name:?}"
        );
        let page = m
            .range(&RangeRequest {
                limit: 3,
                page_only: true,
                sort_order: SortOrder::Descend,
                ..rq(KeyRange::prefix("runs/"))
            })
            .unwrap();
        assert_eq!(
            keys_of(&page),
            ["runs/199", "runs/198", "runs/197"],
            "{name:?}"
        );
        assert_eq!(
            page.kvs[0].value,
            big("run199", 4096).into_bytes(),
            "{name:?}"
        );
        let limited = m
            .range(&RangeRequest {
                limit: 2,
                ..rq(KeyRange::prefix("runs/"))
            })
            .unwrap();
        assert_eq!(limited.count, 200, "{name:?}");
        assert_eq!(
            limited.kvs[1].value,
            big("run1", 4096).into_bytes(),
            "{name:?}"
        );
        let keys = m
            .range(&RangeRequest {
                keys_only: true,
                ..rq(KeyRange::prefix("runs/"))
            })
            .unwrap();
        assert!(keys.kvs.iter().all(|kv| kv.value.is_empty()), "{name:?}");
        let by_value = m
            .range(&RangeRequest {
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Value,
                limit: 1,
                ..rq(KeyRange::prefix("runs/"))
            })
            .unwrap();
        let largest = (0..200)
            .max_by_key(|i| big(&format!("run{i}"), 4096))
            .unwrap();
        assert_eq!(
            keys_of(&by_value),
            [format!("runs/{largest:03}")],
            "{name:?}"
        );
        assert_eq!(
            m.range_size(&rq(KeyRange::key("runs/000"))),
            "runs/000".len() + 4096,
            "{name:?}"
        );

        // Reopened: the same answers, the values spilled again.
        drop(m);
        let m = open(&t);
        assert_eq!(m.held_value_bytes(), small.len(), "{name:?}");
        assert_eq!(
            value_of(&get(&m, "runs/150")),
            Some(big("run150", 4096).as_str()),
            "{name:?}"
        );
    }
}

#[test]
fn writes_over_spilled_values_see_them_whole() {
    for (t, m) in stores() {
        let name = t.kind;
        let first = big("first", 1000);
        let second = big("second", 1000);
        put(&m, "k", &first);
        // The previous value of a put, a value compare, a delete's previous values.
        let resp = put_req(
            &m,
            PutRequest {
                prev_kv: true,
                ..PutRequest::new("k", second.as_str())
            },
        );
        assert_eq!(
            resp.prev_kv.map(|kv| kv.value),
            Some(first.clone().into_bytes()),
            "{name:?}"
        );
        let compared = |v: &str| {
            txn(
                &m,
                TxnRequest {
                    compare: vec![cmp("k", CompareOp::Equal, CompareTarget::Value(v.into()))],
                    success: vec![],
                    failure: vec![],
                },
            )
            .succeeded
        };
        assert!(compared(&second), "{name:?}");
        assert!(!compared(&first), "{name:?}");
        // A put that keeps the value keeps the spilled one.
        put_req(
            &m,
            PutRequest {
                ignore_value: true,
                ..PutRequest::new("k", "")
            },
        );
        assert_eq!(value_of(&get(&m, "k")), Some(second.as_str()), "{name:?}");
        let deleted = delete(&m, KeyRange::key("k"));
        assert_eq!(deleted.prev_kvs.len(), 1, "{name:?}");
        assert_eq!(
            deleted.prev_kvs[0].value,
            second.clone().into_bytes(),
            "{name:?}"
        );

        // A lease revoked takes its spilled keys; the events carry their last values.
        let lease = grant(&m, 0, 60);
        put_lease(&m, "leased", &big("leased", 500), lease);
        let before = m.revision();
        match apply(&m, Command::LeaseRevoke { id: lease }) {
            CommandResult::LeaseRevoke { .. } => {}
            other => panic!("{name:?}: revoke failed: {other:?}"),
        }
        assert_eq!(get(&m, "leased"), None, "{name:?}");
        assert_eq!(
            get_at(&m, "leased", before).map(|kv| kv.value.len()),
            Some(500),
            "{name:?}"
        );
        assert_eq!(m.held_value_bytes(), 0, "{name:?}");
    }
}

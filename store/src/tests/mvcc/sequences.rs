//! Native sequences (`Incr`) and puts that keep the current value or lease (`ignore_value`,
//! `ignore_lease`).

use super::*;

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

//! Leases: unknown leases refused, the TTL cap, grant/revoke deleting every attached key in
//! one revision, and expiry.

use super::*;

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

/// H3 (security review): a TTL above etcd's `MaxLeaseTTL` is refused by the state machine
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

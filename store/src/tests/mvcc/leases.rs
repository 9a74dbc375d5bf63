//! Leases: unknown leases refused, the TTL cap, grant/revoke deleting every attached key in
//! one revision, expiry, and checkpoints of the remaining TTL.

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

fn checkpoints_of(m: &Mvcc) -> Vec<(i64, Option<i64>)> {
    m.lease_records()
        .into_iter()
        .map(|r| (r.id, r.remaining_ttl))
        .collect()
}

/// A checkpoint records the remaining TTL on known leases (skipping unknown ones) without
/// a revision or an event; a value at or above the TTL clears it; it survives a reopen
/// and a dump/restore (the snapshot path), and goes away with its lease.
#[test]
fn lease_checkpoints_are_stored_without_a_revision_and_kept_by_reopen_and_restore() {
    for (mut t, m) in stores() {
        let name = t.kind.as_str();
        grant(&m, 1, 30);
        grant(&m, 2, 30);
        grant(&m, 3, 30);
        put_lease(&m, "a", "1", 1); // 2
        let r = apply(
            &m,
            Command::LeaseCheckpoint {
                checkpoints: vec![(1, 12), (99, 5), (2, -4), (3, 30)],
            },
        );
        assert_eq!(r, CommandResult::LeaseCheckpoint { revision: 2 }, "{name}");
        assert_eq!(r.revision(), Some(2), "{name}");
        assert_eq!(m.revision(), 2, "{name}: a checkpoint is not a revision");
        assert_eq!(
            checkpoints_of(&m),
            vec![(1, Some(12)), (2, Some(0)), (3, None)],
            "{name}: unknown ids skipped, negative as 0, a whole TTL is no checkpoint"
        );
        assert_eq!(
            event_revisions(t.engine.as_ref()),
            vec![2],
            "{name}: a checkpoint stores no event"
        );

        // Also inside a group commit, and a renewal (remaining = TTL) clears it.
        let r = apply(
            &m,
            Command::Batch(vec![Command::LeaseCheckpoint {
                checkpoints: vec![(2, 30), (3, 7)],
            }]),
        );
        assert_eq!(r.revision(), Some(2), "{name}");
        let expected = vec![(1, Some(12)), (2, None), (3, Some(7))];
        assert_eq!(checkpoints_of(&m), expected, "{name}");
        let bytes = dump(&m);
        drop(m);

        let m = open(&t);
        assert_eq!(checkpoints_of(&m), expected, "{name}: after reopen");
        drop(m);
        if t.on_disk() {
            t.reopen();
            let m = open(&t);
            assert_eq!(checkpoints_of(&m), expected, "{name}: reopened engine");
        }

        for kind in EngineKind::all() {
            let dst = open(&open_engine(kind));
            dst.restore(&mut Cursor::new(&bytes), WriteBatch::new())
                .unwrap();
            assert_eq!(
                checkpoints_of(&dst),
                expected,
                "{name} -> {}: after restore",
                kind.as_str()
            );
            assert_eq!(dst.revision(), 2);
            apply(&dst, Command::LeaseRevoke { id: 1 });
            grant(&dst, 1, 30);
            assert_eq!(
                checkpoints_of(&dst)[0],
                (1, None),
                "a lease granted again under the same id has no checkpoint"
            );
        }
    }
}

/// A lease stored before checkpoints existed (no `remaining_ttl` in its record, in the
/// engine or in a snapshot) still loads, with no checkpoint.
#[test]
fn a_lease_stored_before_checkpoints_loads_without_one() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        drop(m);
        // LeaseRecord { id: 4, ttl: 30 } as the older code encoded it.
        let mut b = WriteBatch::new();
        b.put(Cf::Lease, be(4).to_vec(), vec![8, 60]);
        t.engine.write(b, crate::engine::Durability::Sync).unwrap();
        let m = open(&t);
        assert_eq!(m.leases(), vec![(4, 30)], "{name}");
        assert_eq!(checkpoints_of(&m), vec![(4, None)], "{name}");
        let bytes = dump(&m);
        let dst = open(&open_engine(t.kind));
        dst.restore(&mut Cursor::new(&bytes), WriteBatch::new())
            .unwrap();
        assert_eq!(checkpoints_of(&dst), vec![(4, None)], "{name}: restored");
    }
}

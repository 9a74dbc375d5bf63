//! Compaction: what stays readable, no resurrected deletions, no history records left
//! behind, and the bounded steps of automatic compaction.

use super::*;

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

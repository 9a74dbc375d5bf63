//! The watch hub's delivery guarantees: order, catch-up without gap or duplicate, filters,
//! cancellation on compaction or a slow consumer, progress notifications and restores.

use super::*;

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

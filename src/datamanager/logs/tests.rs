//! Tests of [`LogStore`] against every blob backend: appends at the current length only,
//! reads and follows across chunks and the archive, archiving under live readers, and the
//! follower's re-check backoff.

use super::super::blobs::testing::{backends, collect};
use super::reader::recheck_after;
use super::*;
use tokio::sync::mpsc;

const WITHIN: Duration = Duration::from_secs(20);

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn step0() -> LogId {
    LogId::new("task-1", LogStep::Step(0))
}

fn failed<T>(result: Result<T, LogError>, what: &str) -> LogError {
    match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

/// Everything `read` returns now.
async fn read_all(logs: &LogStore, id: &LogId, offset: u64) -> Vec<u8> {
    collect(logs.read(id, offset).await.expect("read")).await
}

/// Everything `follow` delivers until it ends (bounded, so a hang fails the test).
async fn follow_all(logs: &LogStore, id: &LogId, offset: u64) -> Vec<u8> {
    tokio::time::timeout(WITHIN, collect(logs.follow(id, offset)))
        .await
        .expect("follow ends")
}

#[test]
fn idle_rechecks_space_out_up_to_a_bound() {
    let first = Duration::from_millis(500);
    assert_eq!(recheck_after(first, 0), first);
    assert_eq!(recheck_after(first, 1), first * 2);
    assert_eq!(recheck_after(first, 3), first * 8);
    assert_eq!(recheck_after(first, 4), first * 16);
    assert_eq!(recheck_after(first, u32::MAX), first * 16);
}

#[test]
fn steps_display_as_setup_or_their_number_and_parse_back() {
    assert_eq!(LogStep::Setup.to_string(), "setup");
    assert_eq!(LogStep::Step(3).to_string(), "3");
    assert_eq!("setup".parse::<LogStep>().expect("setup"), LogStep::Setup);
    assert_eq!("12".parse::<LogStep>().expect("12"), LogStep::Step(12));
    assert!(matches!(
        "x".parse::<LogStep>(),
        Err(cairn_client::api::BadLogStep { .. })
    ));
    assert_eq!(
        LogId::new("t", LogStep::Step(2)).chunk_key(7),
        "logs/t/2/chunks/00000000000000000007"
    );
    assert_eq!(
        LogId::new("t", LogStep::Setup).archive_key(),
        "logs/t/data/setup.log"
    );
}

#[tokio::test]
async fn appends_at_the_current_length_grow_the_log() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        assert_eq!(logs.len(&id).await.expect("len"), 0);
        assert_eq!(logs.append(&id, 0, b("hello ")).await.expect("append"), 6);
        assert_eq!(logs.append(&id, 6, b("world")).await.expect("append"), 11);
        assert_eq!(logs.len(&id).await.expect("len"), 11, "{}", be.name);
        assert!(!logs.is_complete(&id).await.expect("complete"));
        assert_eq!(read_all(&logs, &id, 0).await, b"hello world");
    }
}

#[tokio::test]
async fn an_append_at_the_wrong_offset_is_refused_with_the_length_to_resume_from() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("abc")).await.expect("append");
        for offset in [0, 2, 4, 100] {
            let err = failed(logs.append(&id, offset, b("zz")).await, "wrong offset");
            assert!(
                matches!(err, LogError::OffsetMismatch { expected: 3 }),
                "{}: offset {offset}: {err}",
                be.name
            );
        }
        assert_eq!(read_all(&logs, &id, 0).await, b"abc");
    }
}

#[tokio::test]
async fn an_exact_retry_of_the_last_chunk_succeeds_without_storing_twice() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("one ")).await.expect("append");
        logs.append(&id, 4, b("two")).await.expect("append");
        assert_eq!(
            logs.append(&id, 4, b("two")).await.expect("retry"),
            7,
            "{}",
            be.name
        );
        // Not a retry: other bytes at that offset, or an older chunk again.
        let err = failed(logs.append(&id, 4, b("TWO")).await, "other bytes");
        assert!(
            matches!(err, LogError::OffsetMismatch { expected: 7 }),
            "{err}"
        );
        let err = failed(logs.append(&id, 0, b("one ")).await, "older chunk");
        assert!(
            matches!(err, LogError::OffsetMismatch { expected: 7 }),
            "{err}"
        );
        assert_eq!(read_all(&logs, &id, 0).await, b"one two");
    }
}

#[tokio::test]
async fn an_empty_append_changes_nothing() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        assert_eq!(logs.append(&id, 0, Bytes::new()).await.expect("empty"), 0);
        logs.append(&id, 0, b("x")).await.expect("append");
        assert_eq!(logs.append(&id, 1, Bytes::new()).await.expect("empty"), 1);
        assert_eq!(read_all(&logs, &id, 0).await, b"x", "{}", be.name);
    }
}

#[tokio::test]
async fn a_finished_log_refuses_appends_but_accepts_the_retry_of_its_last_chunk() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("done")).await.expect("append");
        assert_eq!(logs.finish(&id).await.expect("finish"), 4);
        assert_eq!(logs.finish(&id).await.expect("finish twice"), 4);
        assert!(logs.is_complete(&id).await.expect("complete"));
        let err = failed(logs.append(&id, 4, b("late")).await, "after finish");
        assert!(
            matches!(err, LogError::Finished { len: 4, .. }),
            "{}: {err}",
            be.name
        );
        assert_eq!(logs.append(&id, 0, b("done")).await.expect("retry"), 4);
    }
}

#[tokio::test]
async fn read_starts_anywhere_up_to_the_end_and_refuses_past_it() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("abc")).await.expect("append");
        logs.append(&id, 3, b("defg")).await.expect("append");
        assert_eq!(read_all(&logs, &id, 1).await, b"bcdefg", "{}", be.name);
        assert_eq!(read_all(&logs, &id, 3).await, b"defg");
        assert_eq!(read_all(&logs, &id, 5).await, b"fg");
        assert!(read_all(&logs, &id, 7).await.is_empty());
        let err = failed(logs.read(&id, 8).await, "past end");
        assert!(
            matches!(err, LogError::OffsetPastEnd { len: 7, .. }),
            "{err}"
        );
        // A log nobody wrote reads as empty.
        let other = LogId::new("task-1", LogStep::Setup);
        assert!(read_all(&logs, &other, 0).await.is_empty());
    }
}

/// Appends `parts` from another task, each only after the follower reported the
/// previous one, then finishes the log.
fn drive_appends(
    logs: &LogStore,
    id: &LogId,
    start: u64,
    parts: Vec<&'static str>,
    mut received: mpsc::UnboundedReceiver<usize>,
) -> tokio::task::JoinHandle<()> {
    let logs = logs.clone();
    let id = id.clone();
    tokio::spawn(async move {
        let mut offset = start;
        let mut seen = 0;
        for part in parts {
            offset = logs.append(&id, offset, b(part)).await.expect("append");
            // Wait until the follower has everything so far: it is now waiting live.
            while seen < offset as usize {
                seen = received.recv().await.expect("follower alive");
            }
        }
        logs.finish(&id).await.expect("finish");
    })
}

/// Follows `id` from `offset`, reporting progress to the writer, until the stream ends.
async fn follow_reporting(
    logs: &LogStore,
    id: &LogId,
    offset: u64,
    report: mpsc::UnboundedSender<usize>,
) -> Vec<u8> {
    let mut stream = logs.follow(id, offset);
    let mut got = Vec::new();
    let follow = async {
        while let Some(bytes) = stream.next().await {
            got.extend_from_slice(&bytes.expect("follow item"));
            // Report the absolute end of what was delivered.
            let _ = report.send(offset as usize + got.len());
        }
    };
    tokio::time::timeout(WITHIN, follow)
        .await
        .expect("follow ends");
    got
}

#[tokio::test]
async fn follow_from_zero_receives_live_appends_and_ends_after_finish() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        let (report, received) = mpsc::unbounded_channel();
        let writer = drive_appends(&logs, &id, 0, vec!["a", "bb", "ccc"], received);
        let got = follow_reporting(&logs, &id, 0, report).await;
        writer.await.expect("writer");
        assert_eq!(got, b"abbccc", "{}", be.name);
    }
}

#[tokio::test]
async fn follow_from_the_middle_of_a_chunk_receives_the_rest_and_new_data() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("01234")).await.expect("append");
        let (report, received) = mpsc::unbounded_channel();
        let writer = drive_appends(&logs, &id, 5, vec!["56", "789"], received);
        let got = follow_reporting(&logs, &id, 3, report).await;
        writer.await.expect("writer");
        assert_eq!(got, b"3456789", "{}", be.name);
    }
}

#[tokio::test]
async fn follow_from_past_the_current_end_waits_for_the_data() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("ab")).await.expect("append");
        let follower = tokio::spawn({
            let logs = logs.clone();
            let id = id.clone();
            async move { follow_all(&logs, &id, 4).await }
        });
        logs.append(&id, 2, b("cdef")).await.expect("append");
        logs.finish(&id).await.expect("finish");
        assert_eq!(follower.await.expect("follower"), b"ef", "{}", be.name);
    }
}

#[tokio::test]
async fn follow_from_the_current_end_receives_only_new_data() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("old ")).await.expect("append");
        let (report, received) = mpsc::unbounded_channel();
        let writer = drive_appends(&logs, &id, 4, vec!["new ", "newer"], received);
        let got = follow_reporting(&logs, &id, 4, report).await;
        writer.await.expect("writer");
        assert_eq!(got, b"new newer", "{}", be.name);
    }
}

#[tokio::test]
async fn following_a_finished_empty_log_ends_at_once_with_nothing() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = LogId::new("quiet", LogStep::Setup);
        logs.finish(&id).await.expect("finish");
        assert!(follow_all(&logs, &id, 0).await.is_empty(), "{}", be.name);
        logs.archive(&id).await.expect("archive");
        assert!(follow_all(&logs, &id, 0).await.is_empty());
        assert!(read_all(&logs, &id, 0).await.is_empty());
    }
}

#[tokio::test]
async fn following_a_finished_log_delivers_everything_then_ends() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("all ")).await.expect("append");
        logs.append(&id, 4, b("there")).await.expect("append");
        logs.finish(&id).await.expect("finish");
        assert_eq!(follow_all(&logs, &id, 0).await, b"all there", "{}", be.name);
        assert_eq!(follow_all(&logs, &id, 9).await, b"");
        let err = collect_err(logs.follow(&id, 10)).await;
        assert!(
            matches!(err, LogError::OffsetPastEnd { len: 9, .. }),
            "{err}"
        );
    }
}

async fn collect_err(mut stream: LogStream) -> LogError {
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return e;
        }
    }
    panic!("the stream ended without an error");
}

#[tokio::test]
async fn archive_keeps_the_content_byte_identical_and_removes_the_chunks() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        let mut offset = 0;
        for piece in big.chunks(700_000) {
            offset = logs
                .append(&id, offset, Bytes::copy_from_slice(piece))
                .await
                .expect("append");
        }
        assert_eq!(logs.archive(&id).await.expect("archive"), big.len() as u64);
        assert_eq!(
            logs.archive(&id).await.expect("archive twice"),
            big.len() as u64
        );
        let left = be.blobs.list(&id.live_prefix()).await.expect("list");
        assert!(left.is_empty(), "{}: {left:?}", be.name);
        let stored = be
            .blobs
            .get_bytes(&id.archive_key())
            .await
            .expect("archive");
        assert!(stored[..] == big[..], "{}: archive differs", be.name);
        assert!(
            read_all(&logs, &id, 0).await == big,
            "{}: read differs",
            be.name
        );
        assert_eq!(read_all(&logs, &id, 1_000_001).await[..], big[1_000_001..]);
        assert_eq!(logs.len(&id).await.expect("len"), big.len() as u64);
        assert!(logs.is_complete(&id).await.expect("complete"));
        // Seen from a fresh process too.
        let fresh = LogStore::new(be.blobs.clone());
        assert_eq!(fresh.len(&id).await.expect("len"), big.len() as u64);
        assert!(fresh.is_complete(&id).await.expect("complete"));
        let err = failed(
            fresh.append(&id, big.len() as u64, b("x")).await,
            "archived",
        );
        assert!(matches!(err, LogError::Finished { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_follower_carries_on_across_the_switch_to_the_archive() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        logs.append(&id, 0, b("first ")).await.expect("append");
        logs.append(&id, 6, b("second ")).await.expect("append");
        let mut stream = logs.follow(&id, 0);
        let first = stream.next().await.expect("an item").expect("bytes");
        assert_eq!(&first[..], b"first ");
        // The rest moves to the archive (chunks deleted) while the follower is mid-log.
        logs.append(&id, 13, b("third")).await.expect("append");
        logs.archive(&id).await.expect("archive");
        let rest = tokio::time::timeout(WITHIN, collect(stream))
            .await
            .expect("ends");
        assert_eq!(rest, b"second third", "{}", be.name);
    }
}

#[tokio::test]
async fn a_live_follower_sees_no_gap_when_the_log_is_archived_under_it() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let id = step0();
        let (report, mut received) = mpsc::unbounded_channel();
        let writer = tokio::spawn({
            let logs = logs.clone();
            let id = id.clone();
            async move {
                let mut offset = 0;
                for part in ["x1 ", "x2 ", "x3"] {
                    offset = logs.append(&id, offset, b(part)).await.expect("append");
                }
                // Archive as soon as the follower has the first chunk only.
                while received.recv().await.expect("follower alive") < 3 {}
                logs.archive(&id).await.expect("archive");
            }
        });
        let got = follow_reporting(&logs, &id, 0, report).await;
        writer.await.expect("writer");
        assert_eq!(got, b"x1 x2 x3", "{}", be.name);
    }
}

#[tokio::test]
async fn the_length_is_rebuilt_from_the_store_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let id = step0();
    let setup = LogId::new("task-1", LogStep::Setup);
    {
        let logs = LogStore::new(Blobs::open(&url).expect("open"));
        logs.append(&id, 0, b("before ")).await.expect("append");
        logs.append(&id, 7, b("restart")).await.expect("append");
        logs.append(&setup, 0, b("pulled")).await.expect("append");
        logs.finish(&setup).await.expect("finish");
    }
    let logs = LogStore::new(Blobs::open(&url).expect("reopen"));
    assert_eq!(logs.len(&id).await.expect("len"), 14);
    assert!(!logs.is_complete(&id).await.expect("complete"));
    assert!(logs.is_complete(&setup).await.expect("complete"));
    let err = failed(logs.append(&id, 7, b("x")).await, "stale offset");
    assert!(
        matches!(err, LogError::OffsetMismatch { expected: 14 }),
        "{err}"
    );
    assert_eq!(logs.append(&id, 14, b("!")).await.expect("append"), 15);
    assert_eq!(read_all(&logs, &id, 0).await, b"before restart!");
}

#[tokio::test]
async fn nodes_sharing_a_store_extend_one_log_without_overlap() {
    for be in backends() {
        let node_a = LogStore::new(be.blobs.clone());
        let node_b = LogStore::new(be.blobs.clone());
        let id = step0();
        node_a.append(&id, 0, b("a")).await.expect("a");
        assert_eq!(node_b.append(&id, 1, b("b")).await.expect("b"), 2);
        // Node A's cache says 1; the store says 2.
        assert_eq!(node_a.append(&id, 2, b("c")).await.expect("a again"), 3);
        let err = failed(node_b.append(&id, 2, b("X")).await, "taken offset");
        assert!(
            matches!(err, LogError::OffsetMismatch { expected: 3 }),
            "{err}"
        );
        node_b.finish(&id).await.expect("finish");
        assert_eq!(follow_all(&node_a, &id, 0).await, b"abc", "{}", be.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_at_one_offset_from_two_nodes_have_one_winner() {
    for be in backends() {
        let id = step0();
        let attempts: Vec<_> = (0..2)
            .map(|i| {
                let logs = LogStore::new(be.blobs.clone());
                let id = id.clone();
                tokio::spawn(
                    async move { logs.append(&id, 0, Bytes::from(format!("node {i}"))).await },
                )
            })
            .collect();
        let mut won = 0;
        for attempt in attempts {
            match attempt.await.expect("task") {
                Ok(len) => {
                    assert_eq!(len, 6);
                    won += 1;
                }
                Err(LogError::OffsetMismatch { expected: 6 }) => {}
                Err(e) => panic!("{}: unexpected {e}", be.name),
            }
        }
        assert_eq!(won, 1, "{}", be.name);
    }
}

#[tokio::test]
async fn a_follower_notices_appends_made_through_another_node_by_rechecking() {
    let blobs = Blobs::open("memory:").expect("memory");
    let here = LogStore::with_recheck(blobs.clone(), Duration::from_millis(5));
    let elsewhere = LogStore::new(blobs);
    let id = step0();
    let follower = tokio::spawn({
        let here = here.clone();
        let id = id.clone();
        async move { follow_all(&here, &id, 0).await }
    });
    // No in-process wake-up reaches `here`: only its periodic re-check can see these.
    elsewhere
        .append(&id, 0, b("remote "))
        .await
        .expect("append");
    elsewhere.append(&id, 7, b("data")).await.expect("append");
    elsewhere.finish(&id).await.expect("finish");
    assert_eq!(follower.await.expect("follower"), b"remote data");
}

#[tokio::test]
async fn deleting_a_tasks_logs_removes_live_and_archived_logs() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let live = LogId::new("gone", LogStep::Step(1));
        let archived = LogId::new("gone", LogStep::Setup);
        let kept = LogId::new("gone-not", LogStep::Setup);
        logs.append(&live, 0, b("live")).await.expect("append");
        logs.append(&archived, 0, b("old")).await.expect("append");
        logs.archive(&archived).await.expect("archive");
        logs.append(&kept, 0, b("kept")).await.expect("append");
        assert_eq!(logs.delete_task_logs("gone").await.expect("delete"), 2);
        assert_eq!(logs.len(&live).await.expect("len"), 0, "{}", be.name);
        assert_eq!(logs.len(&archived).await.expect("len"), 0);
        assert!(!logs.is_complete(&archived).await.expect("complete"));
        assert_eq!(read_all(&logs, &kept, 0).await, b"kept");
    }
}

#[tokio::test]
async fn task_ids_with_path_characters_stay_inside_their_own_directory() {
    for be in backends() {
        let logs = LogStore::new(be.blobs.clone());
        let odd = LogId::new("../a/b#1", LogStep::Step(0));
        logs.append(&odd, 0, b("odd")).await.expect("append");
        let keys = be.blobs.list("logs/").await.expect("list");
        assert_eq!(keys.len(), 1, "{}", be.name);
        assert!(
            keys[0].0.starts_with("logs/..%2Fa%2Fb%231/0/chunks/"),
            "{keys:?}"
        );
        assert_eq!(read_all(&logs, &odd, 0).await, b"odd");
    }
}

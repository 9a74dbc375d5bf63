//! The archive index against its spec: round trips, listings with the store's order and
//! cursors, idempotent changes, reopening, corrupt and foreign files, and 100k runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_client::api::ListRunsQuery;
use cairn_client::run::{Run, RunPhase, RunResult};

use super::tables::{META, RUNS, VERSION_KEY};
use super::*;
use crate::datamanager::keys;

fn run(seq: u64, group: &str, phase: RunPhase, result: RunResult) -> Run {
    Run {
        id: keys::run_id(seq),
        name: format!("run {seq}"),
        counter: seq,
        group: group.into(),
        annotations: BTreeMap::from([("k".to_string(), seq.to_string())]),
        phase,
        result,
        stop: false,
        cancel: false,
        tasks: BTreeMap::new(),
        enqueue_time: None,
        start_time: None,
        end_time: None,
        archived: true,
    }
}

fn meta(runs: usize) -> IndexedSegment {
    IndexedSegment {
        runs: runs as u32,
        bytes: 1000 * runs as u64,
        sha256: format!("{:064x}", runs),
    }
}

/// Entries with consecutive 100-byte records.
fn entries(runs: &[Run]) -> Vec<SegmentEntry> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| SegmentEntry {
            run: r.clone(),
            offset: 100 * i as u64,
            len: 100,
            events: Vec::new(),
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    index: ArchiveIndex,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index").join("archive.redb");
    let index = ArchiveIndex::open(&path).expect("open");
    Fixture {
        _dir: dir,
        path,
        index,
    }
}

fn ids(runs: &[Run]) -> Vec<String> {
    runs.iter().map(|r| r.id.clone()).collect()
}

fn query(group: &str) -> ListRunsQuery {
    ListRunsQuery {
        group: Some(group.into()),
        ..ListRunsQuery::default()
    }
}

const GROUPS: [&str; 5] = [
    "/project/a/branch/main",
    "/project/a/branch/dev",
    "/project/a1/branch/main",
    "/project/b/pull/7",
    "/user/u/branch/x",
];
const PHASES: [RunPhase; 3] = [
    RunPhase::Finished,
    RunPhase::Cancelled,
    RunPhase::SetupError,
];
const RESULTS: [RunResult; 4] = [
    RunResult::Success,
    RunResult::Failed,
    RunResult::Stopped,
    RunResult::Unknown,
];

/// `n` runs spread over groups, phases and results.
fn mixed_runs(n: u64) -> Vec<Run> {
    (1..=n)
        .map(|i| {
            run(
                i,
                GROUPS[(i % 5) as usize],
                PHASES[(i % 3) as usize],
                RESULTS[((i / 2) % 4) as usize],
            )
        })
        .collect()
}

fn add_in_segments(index: &ArchiveIndex, runs: &[Run], per_segment: usize) {
    for (n, chunk) in runs.chunks(per_segment).enumerate() {
        let added = index
            .add_segment(&format!("seg-{n:06}"), &meta(chunk.len()), entries(chunk))
            .expect("add");
        assert!(added);
    }
}

/// Every page of `q` from the first, checking each page's size and cursor.
fn walk(index: &ArchiveIndex, q: &ListRunsQuery) -> Vec<String> {
    let limit = q.limit.expect("walks set a limit");
    let mut seen = Vec::new();
    let mut q = q.clone();
    loop {
        let page = index.list(&q).expect("list");
        assert!(page.runs.len() <= limit);
        seen.extend(ids(&page.runs));
        match page.next {
            Some(next) => {
                assert_eq!(page.runs.len(), limit, "only a full page has a next");
                assert_eq!(Some(&next), seen.last(), "the cursor is the last id");
                q.cursor = Some(next);
            }
            None => return seen,
        }
    }
}

#[test]
fn added_runs_read_back_by_id_and_list_newest_first() {
    let f = fixture();
    let runs = mixed_runs(3);
    assert!(f.index.is_empty().expect("empty"));
    assert!(
        f.index
            .add_segment("seg-1", &meta(3), entries(&runs))
            .expect("add")
    );
    let got = f.index.get(&runs[1].id).expect("get").expect("indexed");
    assert_eq!(
        got,
        IndexedRun {
            segment: "seg-1".into(),
            offset: 100,
            len: 100,
            run: runs[1].clone(),
        }
    );
    assert_eq!(f.index.get(&keys::run_id(99)).expect("get"), None);
    let page = f.index.list(&ListRunsQuery::default()).expect("list");
    let mut want = ids(&runs);
    want.reverse();
    assert_eq!(ids(&page.runs), want);
    assert_eq!(page.runs[0], runs[2], "whole runs, not only ids");
    assert_eq!(page.next, None);
    assert_eq!(f.index.len().expect("len"), 3);
    assert!(f.index.has_segment("seg-1").expect("has"));
    assert!(!f.index.has_segment("seg-2").expect("has"));
    assert_eq!(
        f.index.segments().expect("segments"),
        vec![("seg-1".to_string(), meta(3))]
    );
}

#[test]
fn pages_by_ancestor_phase_and_result_walk_every_matching_run_once_in_both_orders() {
    let f = fixture();
    let runs = mixed_runs(97);
    add_in_segments(&f.index, &runs, 10);
    let groups = [
        "/",
        "/project",
        "/project/a",
        "/project/a/branch/main",
        "/project/a1",
        "/user/u",
        "/nobody",
    ];
    let filters: Vec<(Vec<RunPhase>, Vec<RunResult>)> = vec![
        (vec![], vec![]),
        (vec![RunPhase::Finished], vec![]),
        (vec![RunPhase::Cancelled, RunPhase::SetupError], vec![]),
        (vec![], vec![RunResult::Failed]),
        (vec![], vec![RunResult::Success, RunResult::Stopped]),
        (vec![RunPhase::Finished], vec![RunResult::Failed]),
        (
            vec![RunPhase::Finished, RunPhase::Cancelled],
            vec![RunResult::Success, RunResult::Unknown],
        ),
    ];
    let mut checked = 0;
    for group in groups {
        for (phase, result) in &filters {
            let matching: Vec<String> = runs
                .iter()
                .filter(|r| keys::ancestors(&r.group).iter().any(|a| a == group))
                .filter(|r| phase.is_empty() || phase.contains(&r.phase))
                .filter(|r| result.is_empty() || result.contains(&r.result))
                .map(|r| r.id.clone())
                .collect();
            for asc in [true, false] {
                for limit in [1, 4, 200] {
                    let q = ListRunsQuery {
                        group: Some(group.into()),
                        phase: phase.clone(),
                        result: result.clone(),
                        limit: Some(limit),
                        asc,
                        ..ListRunsQuery::default()
                    };
                    let mut want = matching.clone();
                    if !asc {
                        want.reverse();
                    }
                    assert_eq!(walk(&f.index, &q), want, "{q:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 7 * 2 * 3);
}

#[test]
fn a_cursor_between_pages_continues_after_it_whatever_was_added_meanwhile() {
    // The store listing's cursor is a run id, so a page asked for after more runs were
    // archived continues strictly after it: nothing shown twice, nothing older skipped.
    let f = fixture();
    let runs = mixed_runs(20);
    add_in_segments(&f.index, &runs[..10], 10);
    let q = ListRunsQuery {
        limit: Some(4),
        ..ListRunsQuery::default()
    };
    let first = f.index.list(&q).expect("list");
    assert_eq!(
        ids(&first.runs),
        ids(&[
            runs[9].clone(),
            runs[8].clone(),
            runs[7].clone(),
            runs[6].clone()
        ])
    );
    f.index
        .add_segment("later", &meta(10), entries(&runs[10..]))
        .expect("add");
    let rest = walk(
        &f.index,
        &ListRunsQuery {
            cursor: first.next,
            ..q
        },
    );
    assert_eq!(rest, ids(&runs[..6]).into_iter().rev().collect::<Vec<_>>());
}

#[test]
fn adding_a_segment_twice_changes_nothing_and_other_metadata_is_a_conflict() {
    let f = fixture();
    let runs = mixed_runs(5);
    assert!(
        f.index
            .add_segment("s", &meta(5), entries(&runs))
            .expect("add")
    );
    let before = f.index.list(&ListRunsQuery::default()).expect("list");
    // The same id again, even with other entries: nothing is written.
    assert!(
        !f.index
            .add_segment("s", &meta(5), entries(&runs[..2]))
            .expect("add again")
    );
    assert_eq!(
        f.index.list(&ListRunsQuery::default()).expect("list"),
        before
    );
    assert_eq!(f.index.len().expect("len"), 5);
    let other = IndexedSegment {
        sha256: "ff".repeat(32),
        ..meta(5)
    };
    let err = f
        .index
        .add_segment("s", &other, entries(&runs))
        .expect_err("conflict");
    assert!(matches!(err, IndexError::SegmentConflict { .. }), "{err:?}");
    assert!(!err.needs_rebuild());
}

#[test]
fn removing_a_segment_removes_its_runs_and_listing_entries_once() {
    let f = fixture();
    let runs = mixed_runs(12);
    add_in_segments(&f.index, &runs, 4);
    assert!(f.index.remove_segment("seg-000001").expect("remove"));
    assert!(!f.index.remove_segment("seg-000001").expect("again"));
    assert!(!f.index.remove_segment("never").expect("unknown"));
    assert!(!f.index.has_segment("seg-000001").expect("has"));
    assert_eq!(f.index.len().expect("len"), 8);
    assert_eq!(f.index.get(&runs[5].id).expect("get"), None);
    let kept: Vec<Run> = runs[..4].iter().chain(&runs[8..]).cloned().collect();
    for group in ["/", "/project/a", "/user/u"] {
        for asc in [true, false] {
            let q = ListRunsQuery {
                limit: Some(3),
                asc,
                ..query(group)
            };
            let mut want: Vec<String> = kept
                .iter()
                .filter(|r| keys::ancestors(&r.group).iter().any(|a| a == group))
                .map(|r| r.id.clone())
                .collect();
            if !asc {
                want.reverse();
            }
            assert_eq!(walk(&f.index, &q), want);
        }
    }
    // Removing every segment leaves an empty index, listing keys included.
    for (id, _) in f.index.segments().expect("segments") {
        f.index.remove_segment(&id).expect("remove");
    }
    assert!(f.index.is_empty().expect("empty"));
    assert_eq!(
        f.index.list(&ListRunsQuery::default()).expect("list").runs,
        vec![]
    );
}

#[test]
fn a_run_taken_over_by_a_later_segment_survives_the_removal_of_the_older_one() {
    // Compaction writes runs of old segments into a new one, indexes it, then removes
    // the old ones.
    let f = fixture();
    let runs = mixed_runs(6);
    f.index
        .add_segment("old", &meta(6), entries(&runs))
        .expect("add old");
    let mut moved = runs[2].clone();
    moved.annotations.insert("moved".into(), "yes".into());
    f.index
        .add_segment(
            "new",
            &meta(1),
            vec![SegmentEntry {
                run: moved.clone(),
                offset: 7,
                len: 9,
                events: Vec::new(),
            }],
        )
        .expect("add new");
    assert_eq!(f.index.len().expect("len"), 6, "moved, not duplicated");
    f.index.remove_segment("old").expect("remove old");
    let got = f.index.get(&moved.id).expect("get").expect("kept");
    assert_eq!((got.segment.as_str(), got.offset, got.len), ("new", 7, 9));
    assert_eq!(got.run, moved);
    let page = f.index.list(&ListRunsQuery::default()).expect("list");
    assert_eq!(page.runs, vec![moved]);
}

#[test]
fn a_moved_run_is_listed_by_its_new_state_only() {
    let f = fixture();
    let before = run(
        1,
        "/project/a/branch/main",
        RunPhase::Finished,
        RunResult::Failed,
    );
    f.index
        .add_segment("s1", &meta(1), entries(std::slice::from_ref(&before)))
        .expect("add");
    let mut after = before.clone();
    after.result = RunResult::Success;
    f.index
        .add_segment("s2", &meta(1), entries(std::slice::from_ref(&after)))
        .expect("add");
    let by = |r| ListRunsQuery {
        result: vec![r],
        ..ListRunsQuery::default()
    };
    assert!(
        f.index
            .list(&by(RunResult::Failed))
            .expect("list")
            .runs
            .is_empty()
    );
    assert_eq!(
        f.index.list(&by(RunResult::Success)).expect("list").runs,
        vec![after]
    );
}

#[test]
fn removing_a_run_unlists_it_once() {
    let f = fixture();
    let runs = mixed_runs(4);
    f.index
        .add_segment("s", &meta(4), entries(&runs))
        .expect("add");
    assert!(f.index.remove_run(&runs[1].id).expect("remove"));
    assert!(!f.index.remove_run(&runs[1].id).expect("again"));
    assert_eq!(f.index.get(&runs[1].id).expect("get"), None);
    let q = ListRunsQuery {
        asc: true,
        ..query(&runs[1].group)
    };
    assert!(!ids(&f.index.list(&q).expect("list").runs).contains(&runs[1].id));
    assert_eq!(f.index.len().expect("len"), 3);
    // Its segment still holds the others; removing the segment later is fine.
    assert!(f.index.remove_segment("s").expect("remove segment"));
    assert!(f.index.is_empty().expect("empty"));
}

#[test]
fn the_applied_revision_only_moves_forward() {
    let f = fixture();
    assert_eq!(f.index.applied().expect("applied"), None);
    assert_eq!(f.index.set_applied(10).expect("set"), 10);
    assert_eq!(f.index.set_applied(7).expect("set"), 10);
    assert_eq!(f.index.applied().expect("applied"), Some(10));
}

#[test]
fn reopening_after_drop_keeps_everything() {
    let f = fixture();
    let runs = mixed_runs(9);
    add_in_segments(&f.index, &runs, 4);
    f.index.set_applied(42).expect("set");
    let before = f.index.list(&ListRunsQuery::default()).expect("list");
    let Fixture { _dir, path, index } = f;
    drop(index);
    let index = ArchiveIndex::open(&path).expect("reopen");
    assert_eq!(index.list(&ListRunsQuery::default()).expect("list"), before);
    assert_eq!(index.len().expect("len"), 9);
    assert_eq!(index.segments().expect("segments").len(), 3);
    assert_eq!(index.applied().expect("applied"), Some(42));
    assert_eq!(
        index.get(&runs[8].id).expect("get").map(|i| i.run),
        Some(runs[8].clone())
    );
}

fn open_err(path: &Path) -> IndexError {
    match ArchiveIndex::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn a_file_of_garbage_is_reported_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("archive.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write");
    let err = open_err(&path);
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err:?}");
    assert!(err.needs_rebuild());
    // Deleting the file and opening again is the rebuild's first step.
    std::fs::remove_file(&path).expect("delete");
    let index = ArchiveIndex::open(&path).expect("fresh");
    assert!(index.is_empty().expect("empty"));
}

#[test]
fn another_programs_database_is_not_taken_for_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        let kv: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");
        txn.open_table(kv)
            .expect("table")
            .insert(b"k".as_slice(), b"v".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = open_err(&path);
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err:?}");
}

#[test]
fn an_index_of_another_format_version_asks_for_a_rebuild() {
    let f = fixture();
    let Fixture { _dir, path, index } = f;
    drop(index);
    {
        let db = redb::Database::create(&path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert(VERSION_KEY, FORMAT_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = open_err(&path);
    assert!(
        matches!(err, IndexError::WrongVersion { found, expected }
            if found == FORMAT_VERSION + 1 && expected == FORMAT_VERSION),
        "{err:?}"
    );
    assert!(err.needs_rebuild());
}

#[test]
fn an_entry_that_does_not_decode_is_corrupt() {
    let f = fixture();
    let runs = mixed_runs(2);
    f.index
        .add_segment("s", &meta(2), entries(&runs))
        .expect("add");
    let Fixture { _dir, path, index } = f;
    drop(index);
    {
        let db = redb::Database::create(&path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(RUNS)
            .expect("runs")
            .insert(runs[0].id.as_str(), b"{not json".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let index = ArchiveIndex::open(&path).expect("opens: the damage is in one value");
    let err = index.get(&runs[0].id).expect_err("undecodable");
    assert!(err.needs_rebuild(), "{err:?}");
    let err = index
        .list(&ListRunsQuery::default())
        .expect_err("undecodable");
    assert!(err.needs_rebuild(), "{err:?}");
    assert!(index.get(&runs[1].id).expect("the other run").is_some());
}

#[test]
fn a_second_open_of_the_same_file_is_locked() {
    let f = fixture();
    let err = open_err(&f.path);
    assert!(matches!(err, IndexError::Locked(_)), "{err:?}");
    assert!(!err.needs_rebuild());
}

#[test]
fn malformed_segments_are_refused_before_writing() {
    let f = fixture();
    let good = run(
        1,
        "/project/a/branch/main",
        RunPhase::Finished,
        RunResult::Success,
    );
    let twice = entries(&[good.clone(), good.clone()]);
    let mut unnormal = good.clone();
    unnormal.group = "project//a".into();
    let mut empty_id = good.clone();
    empty_id.id = String::new();
    for (segment, e) in [
        ("s", twice),
        ("s", entries(&[unnormal])),
        ("s", entries(&[empty_id])),
        ("", entries(&[good])),
    ] {
        let err = f
            .index
            .add_segment(segment, &meta(1), e)
            .expect_err("refused");
        assert!(matches!(err, IndexError::Invalid { .. }), "{err:?}");
    }
    assert!(f.index.is_empty().expect("empty"));
    assert!(f.index.segments().expect("segments").is_empty());
}

#[tokio::test]
async fn the_async_wrappers_answer_like_the_blocking_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = ArchiveIndex::open_async(dir.path().join("a.redb"))
        .await
        .expect("open");
    let runs = mixed_runs(5);
    assert!(
        index
            .add_segment_async("s".into(), meta(5), entries(&runs))
            .await
            .expect("add")
    );
    assert!(index.has_segment_async("s".into()).await.expect("has"));
    let page = index
        .list_async(ListRunsQuery {
            asc: true,
            ..ListRunsQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(page.runs, runs);
    let got = index.get_async(runs[0].id.clone()).await.expect("get");
    assert_eq!(got.map(|i| i.run), Some(runs[0].clone()));
    assert!(
        index
            .remove_run_async(runs[0].id.clone())
            .await
            .expect("rm")
    );
    assert!(index.remove_segment_async("s".into()).await.expect("rm"));
    assert_eq!(index.set_applied_async(3).await.expect("applied"), 3);
    assert_eq!(index.call(|i| i.len()).await.expect("len"), 0);
}

#[test]
fn a_page_of_the_newest_runs_among_100k_is_exact() {
    let f = fixture();
    let total = 100_000u64;
    let runs = mixed_runs(total);
    add_in_segments(&f.index, &runs, 1_000);
    assert_eq!(f.index.len().expect("len"), total);
    assert_eq!(f.index.segments().expect("segments").len(), 100);
    let newest = f
        .index
        .list(&ListRunsQuery {
            limit: Some(25),
            ..ListRunsQuery::default()
        })
        .expect("list");
    let want: Vec<String> = (total - 24..=total).rev().map(keys::run_id).collect();
    assert_eq!(ids(&newest.runs), want);
    assert_eq!(newest.next, Some(keys::run_id(total - 24)));
    // By group and by result, against a brute-force filter of the same runs.
    let q = ListRunsQuery {
        result: vec![RunResult::Failed],
        limit: Some(25),
        ..query("/project/a")
    };
    let want: Vec<String> = runs
        .iter()
        .rev()
        .filter(|r| r.group.starts_with("/project/a/") && r.result == RunResult::Failed)
        .take(25)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids(&f.index.list(&q).expect("list").runs), want);
    // The page after a cursor deep in history.
    let q = ListRunsQuery {
        cursor: Some(keys::run_id(50_000)),
        limit: Some(3),
        ..ListRunsQuery::default()
    };
    assert_eq!(
        ids(&f.index.list(&q).expect("list").runs),
        [49_999, 49_998, 49_997].map(keys::run_id)
    );
}

#[test]
fn archived_runs_events_are_kept_by_sequence_up_to_the_cap() {
    use cairn_client::run::RunEvent;
    let f = fixture();
    let event = |run: &Run, sequence: u64| RunEvent {
        sequence,
        run_id: run.id.clone(),
        group: run.group.clone(),
        phase: RunPhase::Finished,
        result: RunResult::Success,
        time: chrono::Utc::now(),
    };
    // Two runs whose events interleave: the index orders them by sequence.
    let runs = vec![
        run(1, "/a", RunPhase::Finished, RunResult::Success),
        run(2, "/a", RunPhase::Finished, RunResult::Success),
    ];
    let mut with_events = entries(&runs);
    with_events[0].events = vec![event(&runs[0], 10), event(&runs[0], 30)];
    with_events[1].events = vec![event(&runs[1], 20)];
    f.index
        .add_segment("one", &meta(2), with_events)
        .expect("add");
    let seqs = |after| -> Vec<u64> {
        f.index
            .events_after(after, 100)
            .expect("events")
            .iter()
            .map(|e| e.sequence)
            .collect()
    };
    assert_eq!(seqs(0), [10, 20, 30]);
    assert_eq!(seqs(10), [20, 30]);
    assert_eq!(seqs(30), Vec::<u64>::new());
    assert_eq!(
        f.index.events_after(0, 2).expect("events").len(),
        2,
        "the limit"
    );

    // Past the cap, the oldest go.
    let many: Vec<Run> = vec![run(3, "/b", RunPhase::Finished, RunResult::Success)];
    let mut big = entries(&many);
    big[0].events = (1000..1000 + EVENTS_KEPT)
        .map(|s| event(&many[0], s))
        .collect();
    f.index.add_segment("two", &meta(1), big).expect("add");
    let kept = f.index.events_after(0, usize::MAX).expect("events");
    assert_eq!(kept.len() as u64, EVENTS_KEPT);
    assert_eq!(kept[0].sequence, 1000, "10, 20 and 30 went first");
}

#[test]
fn a_segment_indexed_in_batches_is_partial_until_completed_and_can_be_redone_or_dropped() {
    let f = fixture();
    let runs = mixed_runs(9);
    assert!(f.index.begin_segment("s", &meta(9)).expect("begin"));
    f.index
        .add_segment_runs("s", entries(&runs[..5]))
        .expect("first batch");
    // A crash here: the segment is partial, not indexed; its runs so far are listed.
    assert_eq!(f.index.partial_segments().expect("partial"), vec!["s"]);
    assert!(!f.index.has_segment("s").expect("has"));
    assert_eq!(f.index.len().expect("len"), 5);

    // Indexed again from the start (as a sync does): the runs are replaced, not doubled.
    assert!(f.index.begin_segment("s", &meta(9)).expect("begin again"));
    f.index
        .add_segment_runs("s", entries(&runs[..5]))
        .expect("first batch again");
    f.index
        .add_segment_runs("s", entries(&runs[5..]))
        .expect("second batch");
    f.index.complete_segment("s", &meta(9)).expect("complete");
    assert!(f.index.partial_segments().expect("partial").is_empty());
    assert!(f.index.has_segment("s").expect("has"));
    assert_eq!(f.index.len().expect("len"), 9);
    let listed: Vec<String> = f
        .index
        .list(&ListRunsQuery::default())
        .expect("list")
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ids(&runs).into_iter().rev().collect::<Vec<_>>());
    // Complete: beginning it again is a no-op; other metadata is a conflict.
    assert!(!f.index.begin_segment("s", &meta(9)).expect("done"));
    let other = IndexedSegment {
        sha256: "ff".repeat(32),
        ..meta(9)
    };
    assert!(matches!(
        f.index.begin_segment("s", &other),
        Err(IndexError::SegmentConflict { .. })
    ));
    // Runs cannot be added to a segment that is not being indexed.
    assert!(matches!(
        f.index.add_segment_runs("s", entries(&runs[..1])),
        Err(IndexError::Invalid { .. })
    ));

    // A partial segment the store no longer records is dropped with its runs.
    let more = mixed_runs(12);
    assert!(f.index.begin_segment("t", &meta(3)).expect("begin"));
    f.index
        .add_segment_runs("t", entries(&more[9..]))
        .expect("batch");
    assert!(f.index.remove_segment("t").expect("removed"));
    assert!(f.index.partial_segments().expect("partial").is_empty());
    assert_eq!(f.index.len().expect("len"), 9);
    assert!(!f.index.remove_segment("t").expect("gone already"));
}

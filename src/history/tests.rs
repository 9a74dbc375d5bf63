//! The merged view over a real store, a memory object store and a redb index kept by the
//! real follower: archived runs read by id with their configs, listings merged in order
//! across the boundary with cursors, a run moved between two pages shown once, reads
//! that wait for a lagging index (or give up at once, by their origin), and a deleted
//! index rebuilt to the same answers.

use std::time::Duration;

use cairn_client::api::{ListRunsQuery, RunsPage};
use cairn_client::run::{RunPhase, RunResult};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::datamanager::testing::{self, TestStore};

const GROUP: &str = "/project/a/branch/main";

struct Fixture {
    st: TestStore,
    blobs: Blobs,
    dir: tempfile::TempDir,
    follower: Option<IndexFollower>,
    history: Option<History>,
}

impl Fixture {
    async fn start() -> Fixture {
        let st = TestStore::start().await;
        let blobs = Blobs::open("memory:").expect("memory blobs");
        let dir = tempfile::tempdir().expect("tempdir");
        let (follower, history) = follow(&st, &blobs, &dir);
        Fixture {
            st,
            blobs,
            dir,
            follower: Some(follower),
            history: Some(history),
        }
    }

    fn history(&self) -> &History {
        self.history.as_ref().expect("a history")
    }

    async fn restart_index(&mut self, delete: bool) {
        // Every handle on the file closes before it is deleted and opened again.
        if let Some(f) = self.follower.take() {
            f.stop().await;
        }
        self.history = None;
        if delete {
            std::fs::remove_file(self.dir.path().join("index.redb")).expect("deleted");
        }
        let (follower, history) = follow(&self.st, &self.blobs, &self.dir);
        self.follower = Some(follower);
        self.history = Some(history);
    }

    async fn page(&self, q: &ListRunsQuery) -> RunsPage {
        self.history().list(q).await.expect("listing")
    }

    /// Every run of `q`, page by page.
    async fn all(&self, q: &ListRunsQuery) -> Vec<String> {
        let mut q = q.clone();
        let mut ids = Vec::new();
        loop {
            let page = self.page(&q).await;
            ids.extend(page.runs.into_iter().map(|r| r.id));
            match page.next {
                Some(next) => q.cursor = Some(next),
                None => return ids,
            }
        }
    }
}

fn follow(st: &TestStore, blobs: &Blobs, dir: &tempfile::TempDir) -> (IndexFollower, History) {
    let index = ArchiveIndex::open(&dir.path().join("index.redb")).expect("index");
    let (publisher, indexed) = IndexedRevision::channel();
    let follower = IndexFollower::spawn(
        index.clone(),
        st.dm(),
        blobs.clone(),
        publisher,
        CancellationToken::new(),
    );
    let history = History::new(
        st.dm(),
        index,
        blobs.clone(),
        RecordCache::new(1 << 20),
        indexed,
    );
    (follower, history)
}

fn query(limit: usize, asc: bool) -> ListRunsQuery {
    ListRunsQuery {
        group: Some(GROUP.to_string()),
        limit: Some(limit),
        asc,
        ..ListRunsQuery::default()
    }
}

/// `n` archived runs queued for a segment; their ids.
async fn archived(dm: &Datamanager, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(testing::archived_run(dm, GROUP).await.value.id);
    }
    ids
}

#[tokio::test]
async fn an_archived_run_reads_as_before_with_its_config_and_only_its_flag_tells() {
    let f = Fixture::start().await;
    let dm = f.st.dm();
    let ids = archived(&dm, 3).await;
    let before = f.history().run(&ids[1]).await.expect("live").value;
    let config_before = f.history().run_config(&ids[1]).await.expect("live config");

    let meta = testing::segment_waiting(&dm, &f.blobs, 10).await;
    assert_eq!(meta.runs, 3);
    assert!(
        matches!(dm.run(&ids[1]).await, Err(DmError::NotFound { .. })),
        "the run left the store"
    );

    let (run, config) = f.history().run_and_config(&ids[1]).await.expect("archived");
    assert_eq!(run.value, before, "the same run, archived flag and all");
    assert!(run.value.archived);
    assert_eq!(*config, *config_before);
    assert!(matches!(
        f.history().run("0000000000009999").await,
        Err(HistoryError::Store(DmError::NotFound { .. }))
    ));
}

#[tokio::test]
async fn listings_merge_live_and_archived_runs_in_order_with_cursors() {
    let f = Fixture::start().await;
    let dm = f.st.dm();
    let mut all = archived(&dm, 5).await;
    testing::segment_waiting(&dm, &f.blobs, 3).await; // the 3 oldest move
    all.extend(archived(&dm, 2).await); // archived, still in the store
    for _ in 0..2 {
        all.push(testing::finished_run(&dm, GROUP).await.0.value.id); // not archived yet
    }
    testing::segment_waiting(&dm, &f.blobs, 3).await; // 2 of the first 5 + 1 more

    let mut newest_first = all.clone();
    newest_first.reverse();
    for limit in [1, 2, 3, 4, 25] {
        assert_eq!(
            f.all(&query(limit, true)).await,
            all,
            "ascending, limit {limit}"
        );
        assert_eq!(
            f.all(&query(limit, false)).await,
            newest_first,
            "newest first, limit {limit}"
        );
    }
    let by_result = ListRunsQuery {
        result: vec![RunResult::Success],
        ..query(4, false)
    };
    assert_eq!(f.all(&by_result).await, newest_first);
    let by_phase = ListRunsQuery {
        phase: vec![RunPhase::Running],
        ..query(4, false)
    };
    assert!(f.all(&by_phase).await.is_empty());
    let last = ListRunsQuery {
        last_run: true,
        ..ListRunsQuery::default()
    };
    let page = f.page(&last).await;
    assert_eq!(
        page.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![all.last().expect("runs").as_str()]
    );
}

#[tokio::test]
async fn a_run_archived_between_two_pages_is_listed_exactly_once() {
    let f = Fixture::start().await;
    let dm = f.st.dm();
    let ids = archived(&dm, 6).await;
    let first = f.page(&query(3, true)).await;
    assert_eq!(
        first.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids[..3]
    );
    // All six move into a segment between the two pages.
    testing::segment_waiting(&dm, &f.blobs, 10).await;
    let second = f
        .page(&ListRunsQuery {
            cursor: first.next.clone(),
            ..query(3, true)
        })
        .await;
    assert_eq!(
        second.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids[3..]
    );
    assert_eq!(second.next, None);
}

#[tokio::test]
async fn a_deleted_index_is_rebuilt_and_answers_identically() {
    let mut f = Fixture::start().await;
    let dm = f.st.dm();
    archived(&dm, 4).await;
    testing::segment_waiting(&dm, &f.blobs, 2).await;
    testing::segment_waiting(&dm, &f.blobs, 2).await;
    let before = f.all(&query(3, false)).await;
    assert_eq!(before.len(), 4);

    f.restart_index(true).await;
    assert_eq!(f.all(&query(3, false)).await, before);
    let (_, config) = f.history().run_and_config(&before[0]).await.expect("read");
    assert_eq!(config.group, GROUP);
}

#[tokio::test]
async fn a_read_waits_for_a_lagging_index_and_fails_clearly_when_it_stays_behind() {
    let f = Fixture::start().await;
    let dm = f.st.dm();
    let ids = archived(&dm, 2).await;
    testing::segment_waiting(&dm, &f.blobs, 2).await;

    // The follower applies the new record: the read waits for it, then finds the run.
    let run = f.history().run(&ids[0]).await.expect("found once indexed");
    assert_eq!(run.value.id, ids[0]);

    // An index that never catches up: a clear error, not a wrongly missing run.
    let stuck = History::new(
        dm.clone(),
        ArchiveIndex::open(&f.dir.path().join("empty.redb")).expect("index"),
        f.blobs.clone(),
        RecordCache::new(1 << 20),
        IndexedRevision::fixed(Some(1)),
    );
    let started = std::time::Instant::now();
    let err = stuck.run(&ids[0]).await.expect_err("behind");
    assert!(
        matches!(err, HistoryError::IndexBehind { indexed: 1, .. }),
        "{err}"
    );
    assert!(started.elapsed() >= INDEX_WAIT - Duration::from_millis(50));
    // A listing waits the same way, and says so.
    assert!(matches!(
        stuck.list(&query(5, false)).await,
        Err(HistoryError::IndexBehind { .. })
    ));
}

#[test]
fn merging_two_pages_keeps_order_drops_duplicates_and_cuts_at_the_limit() {
    fn page(ids: &[&str], next: bool) -> RunsPage {
        let cfg = crate::runservice::fixture::config(vec![]);
        RunsPage {
            runs: ids
                .iter()
                .map(|id| {
                    let mut r = crate::runservice::new_run(&cfg, 1, chrono::Utc::now());
                    r.id = id.to_string();
                    r
                })
                .collect(),
            next: next.then(|| ids.last().expect("ids").to_string()),
        }
    }
    let ids = |p: &RunsPage| p.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let m = listing::merge_pages(page(&["1", "4"], false), page(&["2", "3"], false), true, 3);
    assert_eq!(ids(&m), ["1", "2", "3"]);
    assert_eq!(m.next.as_deref(), Some("3"), "4 was left over");

    let m = listing::merge_pages(page(&["4", "1"], false), page(&["3", "2"], false), false, 5);
    assert_eq!(ids(&m), ["4", "3", "2", "1"]);
    assert_eq!(m.next, None);

    let m = listing::merge_pages(page(&["2", "3"], false), page(&["3", "5"], true), true, 5);
    assert_eq!(ids(&m), ["2", "3", "5"], "3 once");
    assert_eq!(m.next.as_deref(), Some("5"), "the second page had more");

    let m = listing::merge_pages(page(&[], false), page(&[], false), true, 5);
    assert!(m.runs.is_empty() && m.next.is_none());
}

#[tokio::test]
async fn run_events_read_the_same_before_and_after_their_runs_move_into_a_segment() {
    let f = Fixture::start().await;
    let dm = f.st.dm();
    archived(&dm, 3).await;
    let (before, _) = f.history().events_after(0).await.expect("events");
    assert!(
        before.len() >= 6,
        "each run was created and finished: {before:?}"
    );

    testing::segment_waiting(&dm, &f.blobs, 10).await;
    let (in_store, _) = dm.events_after(0).await.expect("store events");
    assert!(
        in_store.is_empty(),
        "the events left the store with their runs"
    );
    let (after, _) = f.history().events_after(0).await.expect("events");
    assert_eq!(after, before, "the same events, same sequences, same order");
    let middle = before[2].sequence;
    let (tail, _) = f.history().events_after(middle).await.expect("events");
    assert_eq!(tail, before[3..]);
}

#[tokio::test]
async fn a_rebuilding_index_fails_a_forwardable_read_at_once_and_a_forwarded_read_never_waits() {
    let f = Fixture::start().await;
    let dm = f.st.dm();
    let ids = archived(&dm, 2).await;
    testing::segment_waiting(&dm, &f.blobs, 2).await;
    let in_store = testing::archived_run(&dm, GROUP).await.value.id;
    let stuck_at = |indexed: Option<i64>| {
        History::new(
            dm.clone(),
            ArchiveIndex::open(&f.dir.path().join(format!("stuck-{indexed:?}.redb")))
                .expect("index"),
            f.blobs.clone(),
            RecordCache::new(1 << 20),
            IndexedRevision::fixed(indexed),
        )
    };
    let at_once = |started: std::time::Instant| started.elapsed() < INDEX_WAIT / 2;

    // Rebuilding (the first sync not finished): no wait unless nobody else can answer.
    let rebuilding = stuck_at(None);
    for origin in [ReadOrigin::Forwardable, ReadOrigin::Forwarded] {
        let started = std::time::Instant::now();
        let err = rebuilding
            .reading_for(origin)
            .run(&ids[0])
            .await
            .expect_err("behind");
        assert!(
            matches!(err, HistoryError::IndexBehind { indexed: -1, .. }),
            "{err}"
        );
        let listed = rebuilding.reading_for(origin).list(&query(5, false)).await;
        assert!(matches!(listed, Err(HistoryError::IndexBehind { .. })));
        assert!(at_once(started), "{origin:?} waited");
    }
    // A run still in the store needs no index.
    let run = rebuilding
        .reading_for(ReadOrigin::Forwarded)
        .run(&in_store)
        .await
        .expect("a run in the store");
    assert_eq!(run.value.id, in_store);

    // Slightly behind: a forwarded read still answers at once.
    let behind = stuck_at(Some(1)).reading_for(ReadOrigin::Forwarded);
    let started = std::time::Instant::now();
    assert!(matches!(
        behind.run(&ids[0]).await,
        Err(HistoryError::IndexBehind { indexed: 1, .. })
    ));
    assert!(at_once(started), "a forwarded read waited");
}

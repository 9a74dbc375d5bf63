//! openraft's storage conformance suite (`openraft::testing::Suite`) over [`LogStore`] and
//! [`StateMachine`], once per engine of this build.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use store::{EngineKind, Mvcc};
use tempfile::TempDir;

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::{StorageError, TypeConfig};

/// Builds a fresh log store and state machine over a new engine of `kind` in a temp dir
/// (the dir is the guard: dropped after the test case).
struct Builder {
    kind: EngineKind,
}

fn io_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(io_err)?;
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).map_err(io_err)?;
        let engine = store::engine::open(self.kind, &db).map_err(io_err)?;
        let mvcc = Arc::new(Mvcc::open(engine.clone()).map_err(io_err)?);
        let sm = StateMachine::open(mvcc, dir.path().join("snapshot"))?;
        Ok((dir, LogStore::new(engine), sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_every_engine() {
    let kinds = EngineKind::all();
    assert!(kinds.contains(&EngineKind::Mem) && kinds.contains(&EngineKind::Sled));
    // The suite sleeps a second in several cases: run the engines side by side.
    std::thread::scope(|s| {
        let runs: Vec<_> = kinds
            .into_iter()
            .map(|kind| {
                let run = s.spawn(move || {
                    let started = std::time::Instant::now();
                    Suite::test_all(Builder { kind }).map(|()| started.elapsed())
                });
                (kind, run)
            })
            .collect();
        for (kind, run) in runs {
            match run.join() {
                Ok(Ok(took)) => println!(
                    "openraft storage suite passed on engine {} in {took:?}",
                    kind.as_str()
                ),
                Ok(Err(e)) => panic!("storage suite failed on engine {}: {e}", kind.as_str()),
                Err(_) => panic!("storage suite panicked on engine {}", kind.as_str()),
            }
        }
    });
}

/// openraft finishes a snapshot build on a task of its own, so a build of an older state can
/// finish while the state machine installs a newer snapshot received from the leader. Both
/// must succeed, and the newer snapshot must stay the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_build_racing_an_install_keeps_the_newer_snapshot() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};
    use store::{Command, PutRequest};

    let normal = |index: u64| Entry::<TypeConfig> {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command::Put(PutRequest::new(
            format!("k/{index:04}"),
            vec![7u8; 4096],
        ))),
    };
    let builder = Builder {
        kind: EngineKind::Mem,
    };
    let (_gl, _ll, mut leader) = builder.build().await.unwrap();
    let (_gf, _lf, mut follower) = builder.build().await.unwrap();
    let mut index = 0;
    for round in 0..20 {
        // The follower applies a little and starts building; the leader is further ahead.
        index += 1;
        follower.apply([normal(index)]).await.unwrap();
        leader.apply([normal(index)]).await.unwrap();
        let mut slow_build = follower.get_snapshot_builder().await;
        index += 1;
        leader.apply([normal(index)]).await.unwrap();
        // A built snapshot is sent from the saved file, as openraft does.
        leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let newer = leader.get_current_snapshot().await.unwrap().unwrap();
        let sent = Box::new(newer.snapshot.try_clone().await.unwrap());

        let (built, installed) = tokio::join!(
            slow_build.build_snapshot(),
            follower.install_snapshot(&newer.meta, sent)
        );
        built.unwrap_or_else(|e| panic!("round {round}: build failed: {e}"));
        installed.unwrap_or_else(|e| panic!("round {round}: install failed: {e}"));
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(
            current.meta, newer.meta,
            "round {round}: an older build replaced the installed snapshot"
        );
        assert_eq!(
            contents(current.snapshot).await,
            contents(newer.snapshot).await
        );
    }
}

/// The whole of a (small, test) snapshot file.
async fn contents(mut f: Box<tokio::fs::File>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    f.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut out = Vec::new();
    f.read_to_end(&mut out).await.unwrap();
    out
}

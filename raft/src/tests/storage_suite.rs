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
    for kind in kinds {
        println!("openraft storage suite on engine {}", kind.as_str());
        if let Err(e) = Suite::test_all(Builder { kind }) {
            panic!("storage suite failed on engine {}: {e}", kind.as_str());
        }
    }
}

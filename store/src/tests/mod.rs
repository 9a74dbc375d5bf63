//! The store crate's test suites: engine conformance, MVCC semantics (with watch), and a
//! randomized comparison against a reference model. Every suite runs against every engine
//! this build has ([`EngineKind::all`]).
#![allow(clippy::unwrap_used)]

mod conformance;
mod model;
mod mvcc;

use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;

use crate::engine::{self, Engine, EngineKind};

/// An engine opened for a test, with the directory that backs it (kept alive as long as
/// the engine; unused by `mem`).
pub(crate) struct TestEngine {
    pub kind: EngineKind,
    pub dir: TempDir,
    pub engine: Arc<dyn Engine>,
}

impl TestEngine {
    /// Whether the engine keeps its data in `dir`, so it survives being dropped and reopened.
    pub fn on_disk(&self) -> bool {
        on_disk(self.kind)
    }

    /// Drops the engine and opens a new one over the same directory. Only meaningful for
    /// on-disk engines: a `mem` engine comes back empty.
    pub fn reopen(&mut self) {
        let fresh: Arc<dyn Engine> = Arc::new(engine::MemEngine::new());
        let old = std::mem::replace(&mut self.engine, fresh);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "{}: the engine is still shared, it cannot be closed",
            self.kind.as_str()
        );
        drop(old);
        self.engine = open_at(self.kind, self.dir.path());
    }
}

pub(crate) fn on_disk(kind: EngineKind) -> bool {
    kind != EngineKind::Mem
}

pub(crate) fn open_at(kind: EngineKind, dir: &Path) -> Arc<dyn Engine> {
    engine::open(kind, dir)
        .unwrap_or_else(|e| panic!("opening {} at {}: {e}", kind.as_str(), dir.display()))
}

/// Opens a fresh engine of `kind` in a new temporary directory.
pub(crate) fn open_engine(kind: EngineKind) -> TestEngine {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_at(kind, dir.path());
    TestEngine { kind, dir, engine }
}

/// One fresh engine of every kind this build has.
pub(crate) fn all_engines() -> Vec<TestEngine> {
    EngineKind::all().into_iter().map(open_engine).collect()
}

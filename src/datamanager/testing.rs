//! Test support shared by the unit tests of the datamanager, the API and the scheduler: a
//! one-node in-process store (memory engine, simulated network) and the run configs they
//! create runs from.

use std::sync::Arc;
use std::time::Duration;

use raft::network::sim::SimNetwork;
use raft::{Node, NodeConfig, Timing};
use store::engine::MemEngine;

use super::Datamanager;

/// A config with one run, `ci`, of one single-step task, `build`.
pub const ONE_TASK: &str = r#"runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
"#;

/// A config with one run, `ci`, of tasks `a` (one step) and `b` (two steps), where `a`
/// depends on `b`.
pub const CHAIN: &str = r#"runs:
  - name: ci
    tasks:
      - name: a
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make test } ]
        depends: [ b ]
      - name: b
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make }, { run: make lint } ]
"#;

/// A started single-node store; the node stops when this drops.
pub struct TestStore {
    pub node: Node,
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub async fn start() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = SimNetwork::new();
        let addr = "sim://dm";
        let cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            engine: store::EngineKind::Mem,
            addr: addr.to_string(),
            timing: Timing::test(),
        };
        let node = Node::open_with_engine(cfg, Arc::new(MemEngine::new()), net.transport(addr))
            .await
            .expect("open node");
        net.register(addr, node.handler());
        node.initialize().await.expect("initialize");
        node.wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
        TestStore { node, _dir: dir }
    }

    pub fn dm(&self) -> Datamanager {
        Datamanager::new(self.node.kv())
    }
}

/// A new run of a one-config group `group`, finished with success, as read back (with
/// its config).
pub async fn finished_run(
    dm: &Datamanager,
    group: &str,
) -> (
    super::Versioned<cairn_client::run::Run>,
    cairn_client::runconfig::RunConfig,
) {
    use cairn_client::run::{RunPhase, RunResult};
    let created = dm
        .create_run(group, |id, counter| {
            let config = cairn_client::runconfig::RunConfig {
                id: id.to_string(),
                name: "ci".into(),
                group: group.to_string(),
                ..Default::default()
            };
            let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
            (config, run)
        })
        .await
        .expect("create");
    let mut done = created.run.value.clone();
    done.phase = RunPhase::Finished;
    done.result = RunResult::Success;
    let rev = dm.update_run(&created.run, &done).await.expect("finished");
    let run = super::Versioned {
        value: done,
        mod_revision: rev,
    };
    (run, created.config)
}

/// An error of a read-modify-write in tests: the datamanager's, or the function's.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through Debug, in failed assertions
pub enum TestError {
    Dm(super::DmError),
    Rejected(crate::runservice::RunServiceError),
}

impl From<super::DmError> for TestError {
    fn from(e: super::DmError) -> Self {
        TestError::Dm(e)
    }
}

impl From<crate::runservice::RunServiceError> for TestError {
    fn from(e: crate::runservice::RunServiceError) -> Self {
        TestError::Rejected(e)
    }
}

/// A finished run of group `group` marked archived (so queued for a segment), as read
/// back; it ended `ago`.
pub async fn archived_run_ended(
    dm: &Datamanager,
    group: &str,
    ago: chrono::Duration,
) -> super::Versioned<cairn_client::run::Run> {
    let (run, _) = finished_run(dm, group).await;
    let mut archived = run.value.clone();
    archived.archived = true;
    archived.end_time = Some(chrono::Utc::now() - ago);
    let rev = dm.update_run(&run, &archived).await.expect("archived");
    super::Versioned {
        value: archived,
        mod_revision: rev,
    }
}

/// A finished run of group `group` that ended now, marked archived.
pub async fn archived_run(
    dm: &Datamanager,
    group: &str,
) -> super::Versioned<cairn_client::run::Run> {
    archived_run_ended(dm, group, chrono::Duration::zero()).await
}

/// Moves up to `max` archived runs waiting in the store into one segment, as the
/// segmenter does, and returns its record.
pub async fn segment_waiting(
    dm: &Datamanager,
    blobs: &super::blobs::Blobs,
    max: usize,
) -> super::segments::SegmentMeta {
    let ids = dm.archived_run_ids(max).await.expect("queue");
    let batch = dm.archived_batch(&ids).await.expect("batch");
    let limits = super::segments::SegmentLimits {
        max_runs: max,
        ..Default::default()
    };
    super::segmenting::move_into_segment(dm, blobs, batch, limits)
        .await
        .expect("segmented")
        .segment
        .expect("a segment was written")
}

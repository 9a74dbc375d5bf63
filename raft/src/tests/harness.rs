//! An in-process cluster over [`SimNetwork`]: every node runs on the mem engine, whose
//! `Arc` the harness keeps so a crashed node restarts over the same data (its snapshot
//! dir lives in a temp dir). Waits poll Raft metrics with a deadline; nothing sleeps to
//! synchronise.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use store::engine::MemEngine;
use store::{Engine, EngineKind, KeyRange, KeyValue, RangeRequest};
use tempfile::TempDir;

use crate::kv::Kv;
use crate::network::sim::SimNetwork;
use crate::node::{Node, NodeConfig};
use crate::timing::Timing;
use crate::types::{NodeId, RaftMetrics};

/// Default bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A snapshot of a node's Raft metrics.
pub fn metrics(node: &Node) -> RaftMetrics {
    node.raft().metrics().borrow().clone()
}

/// Test timings with a shorter request deadline, so a request to a minority fails fast.
pub fn fast_timing() -> Timing {
    Timing {
        request_timeout: Duration::from_secs(3),
        ..Timing::test()
    }
}

struct Slot {
    addr: String,
    data_dir: PathBuf,
    engine: Arc<dyn Engine>,
    id: NodeId,
    node: Mutex<Option<Node>>,
}

/// N nodes over one simulated network.
pub struct Cluster {
    pub net: SimNetwork,
    pub timing: Timing,
    slots: Vec<Slot>,
    _dir: TempDir,
}

impl Cluster {
    /// Starts `n` nodes: the first initializes the cluster, the others join through it.
    /// Returns once every node sees the same leader and the membership has `n` voters.
    pub async fn start(n: usize, timing: Timing) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let net = SimNetwork::new();
        let mut slots = Vec::new();
        for i in 0..n {
            let addr = format!("sim://node{}", i + 1);
            let data_dir = dir.path().join(format!("node{}", i + 1));
            let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
            let node = open(&net, &timing, &addr, &data_dir, engine.clone()).await;
            slots.push(Slot {
                addr,
                data_dir,
                engine,
                id: node.id(),
                node: Mutex::new(Some(node)),
            });
        }
        let c = Cluster {
            net,
            timing,
            slots,
            _dir: dir,
        };
        let first = c.node(0);
        first.initialize().await.unwrap();
        first.wait_for_leader(WAIT).await.unwrap();
        for i in 1..n {
            c.node(i).join(&c.slots[0].addr, WAIT).await.unwrap();
        }
        let all: Vec<usize> = (0..n).collect();
        let leader = c.wait_leader(&all, WAIT).await;
        let l = c.node(leader);
        eventually(WAIT, "every node to be a voter", || {
            (metrics(&l)
                .membership_config
                .membership()
                .voter_ids()
                .count()
                == n)
                .then_some(())
        })
        .await;
        c.wait_converged(WAIT).await;
        c
    }

    /// Starts one more node and joins it through node `via`; returns its index.
    pub async fn add_node(&mut self, via: usize) -> usize {
        let i = self.open_node().await;
        self.node(i)
            .join(&self.slots[via].addr, WAIT)
            .await
            .unwrap();
        i
    }

    /// Starts one more node, not joined to anything yet; returns its index.
    pub async fn open_node(&mut self) -> usize {
        let i = self.slots.len();
        let addr = format!("sim://node{}", i + 1);
        let data_dir = self._dir.path().join(format!("node{}", i + 1));
        let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
        let node = open(&self.net, &self.timing, &addr, &data_dir, engine.clone()).await;
        self.slots.push(Slot {
            addr,
            data_dir,
            engine,
            id: node.id(),
            node: Mutex::new(Some(node)),
        });
        i
    }

    /// The address other nodes reach node `i` at.
    pub fn addr(&self, i: usize) -> &str {
        &self.slots[i].addr
    }

    /// Node `i`'s data directory (its snapshot files live under `snapshot/`).
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        &self.slots[i].data_dir
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.slots[i].id
    }

    /// The running node `i`, or `None` when it is crashed.
    pub fn try_node(&self, i: usize) -> Option<Node> {
        self.slots[i]
            .node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The running node `i` (panics when it is crashed).
    pub fn node(&self, i: usize) -> Node {
        self.try_node(i)
            .unwrap_or_else(|| panic!("node {} is down", i + 1))
    }

    pub fn kv(&self, i: usize) -> Kv {
        self.node(i).kv()
    }

    /// Indices of the running nodes.
    pub fn up(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.try_node(i).is_some())
            .collect()
    }

    /// Stops node `i` as a crash would: off the network, tasks and Raft stopped. Its engine
    /// (the data it had synced) is kept for [`Cluster::restart`].
    pub async fn crash(&self, i: usize) {
        let node = self.slots[i]
            .node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| panic!("node {} is already down", i + 1));
        self.net.unregister(&self.slots[i].addr);
        node.shutdown().await;
        // openraft does not join its state-machine worker on shutdown: wait until it has
        // dropped the state machine (its `Mvcc` clone), as a dead process would have, so no
        // apply of this incarnation lands after the restart has loaded the engine.
        eventually(WAIT, "the crashed node's state machine to stop", || {
            (Arc::strong_count(node.mvcc()) == 1).then_some(())
        })
        .await;
    }

    /// Starts node `i` again over the engine it had.
    pub async fn restart(&self, i: usize) {
        let s = &self.slots[i];
        assert!(self.try_node(i).is_none(), "node {} is running", i + 1);
        let node = open(
            &self.net,
            &self.timing,
            &s.addr,
            &s.data_dir,
            s.engine.clone(),
        )
        .await;
        assert_eq!(node.id(), s.id, "a restarted node keeps its id");
        *s.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node);
    }

    /// Cuts every link between node `i` and the others (running or not).
    pub fn isolate(&self, i: usize) {
        for j in 0..self.len() {
            if j != i {
                self.net.cut(&self.slots[i].addr, &self.slots[j].addr);
                self.net.cut(&self.slots[j].addr, &self.slots[i].addr);
            }
        }
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// Waits until one node of `among` is leader and every node of `among` follows it.
    pub async fn wait_leader(&self, among: &[usize], timeout: Duration) -> usize {
        eventually(timeout, "a leader all given nodes agree on", || {
            let ms: Vec<(usize, RaftMetrics)> = among
                .iter()
                .map(|&i| self.try_node(i).map(|n| (i, metrics(&n))))
                .collect::<Option<_>>()?;
            let (leader, lm) = ms.iter().find(|(_, m)| m.state == ServerState::Leader)?;
            let agreed = ms
                .iter()
                .all(|(_, m)| m.current_leader == Some(lm.id) && m.current_term == lm.current_term);
            agreed.then_some(*leader)
        })
        .await
    }

    /// Waits until every running node has applied every entry of the leader's log, and
    /// all of them are at the same revision.
    pub async fn wait_converged(&self, timeout: Duration) {
        let up = self.up();
        let leader = self.wait_leader(&up, timeout).await;
        let converged = || {
            let last = metrics(&self.try_node(leader)?).last_log_index;
            let mut revs = Vec::new();
            for &i in &up {
                let n = self.try_node(i)?;
                if metrics(&n).last_applied.map(|l| l.index) != last {
                    return None;
                }
                revs.push(n.mvcc().revision());
            }
            revs.windows(2).all(|w| w[0] == w[1]).then_some(())
        };
        let deadline = Instant::now() + timeout;
        while converged().is_none() {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for every replica to apply the \
                     leader's log:\n{}",
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One line of Raft state per node, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            let line = match self.try_node(i) {
                None => format!("node {} (id {}): down", i + 1, self.id(i)),
                Some(n) => {
                    let m = metrics(&n);
                    format!(
                        "node {} (id {}): {:?} term {} leader {:?} last_log {:?} applied {:?} \
                         snapshot {:?} purged {:?} revision {} running {:?}",
                        i + 1,
                        m.id,
                        m.state,
                        m.current_term,
                        m.current_leader,
                        m.last_log_index,
                        m.last_applied.map(|l| l.index),
                        m.snapshot.map(|l| l.index),
                        m.purged.map(|l| l.index),
                        n.mvcc().revision(),
                        m.running_state,
                    )
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Node `i`'s revision and every key it holds (a serializable read).
    pub async fn dump(&self, i: usize) -> (i64, Vec<KeyValue>) {
        let req = RangeRequest {
            serializable: true,
            ..RangeRequest::new(KeyRange::prefix(""))
        };
        let resp = self.kv(i).range(req).await.unwrap();
        (resp.revision, resp.kvs)
    }

    /// Asserts that every running node holds the same revision and the same keys.
    pub async fn assert_replicas_equal(&self) {
        let up = self.up();
        let (rev0, kvs0) = self.dump(up[0]).await;
        for &i in &up[1..] {
            let (rev, kvs) = self.dump(i).await;
            assert_eq!(
                rev,
                rev0,
                "node {} and node {} disagree on the revision",
                i + 1,
                up[0] + 1
            );
            assert_eq!(
                kvs,
                kvs0,
                "node {} and node {} hold different data",
                i + 1,
                up[0] + 1
            );
        }
    }

    /// Stops every running node.
    pub async fn shutdown(&self) {
        for i in self.up() {
            self.crash(i).await;
        }
    }
}

async fn open(
    net: &SimNetwork,
    timing: &Timing,
    addr: &str,
    data_dir: &std::path::Path,
    engine: Arc<dyn Engine>,
) -> Node {
    let cfg = NodeConfig {
        data_dir: data_dir.to_path_buf(),
        engine: EngineKind::Mem,
        addr: addr.to_string(),
        timing: timing.clone(),
    };
    let node = Node::open_with_engine(cfg, engine, net.transport(addr))
        .await
        .unwrap();
    net.register(addr, node.handler());
    node
}

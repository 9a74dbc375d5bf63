//! A replica: the openraft instance over this node's engine, its state machine, the
//! lessor and the background tasks it owns, plus the answers to peer requests.
//!
//! Lifecycle: [`Node::open`] loads (or creates) the node's identity from its data dir;
//! then exactly one of [`Node::initialize`] (first node of a new cluster; refused when the
//! data dir already belongs to one), [`Node::join`] (ask any member to add this node as a
//! learner, wait for catch-up, promote it) or nothing (a restart). Node IDs are random
//! 53-bit numbers persisted in the data dir and never reused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use rand::Rng;
use store::{Cf, Command, Durability, Engine, EngineKind, Mvcc, WriteBatch};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{KvError, NodeError};
use crate::kv::Kv;
use crate::lessor::Lessor;
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, PeerHandler, Transport, TransportError};
use crate::proposer::{ProposerHandle, proposer_loop};
use crate::rpc::{JoinResponse, NodeStatus, PeerRequest, PeerResponse};
use crate::snapshot_intake::SnapshotIntake;
use crate::state_machine::StateMachine;
use crate::stats::RaftStats;
use crate::timing::Timing;
use crate::types::{NodeAddr, NodeId, Raft, RaftMetrics, decode, encode};

pub(crate) const NODE_ID: &[u8] = b"node_id";
pub(crate) const CLUSTER_ID: &[u8] = b"cluster_id";
use crate::log_store::VOTE;

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub engine: EngineKind,
    /// The base URL other nodes and clients reach this node at.
    pub addr: String,
    pub timing: Timing,
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) raft: Raft,
    pub(crate) mvcc: Arc<Mvcc>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) lessor: Lessor,
    pub(crate) proposer: ProposerHandle,
    pub(crate) timing: Timing,
    cluster_id: AtomicU64,
    membership_lock: AsyncMutex<()>,
    /// Checks on the snapshot chunks received, held while openraft takes each one.
    snapshot_intake: AsyncMutex<SnapshotIntake>,
    cancel: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Storage quota in bytes on disk, 0 = none (`crate::alarms`).
    pub(crate) quota_bytes: AtomicU64,
    /// Set once the engine failed a write for lack of space (`crate::space`).
    pub(crate) disk_full: Arc<std::sync::atomic::AtomicBool>,
    /// Counters and durations for the binary's metrics.
    stats: Arc<RaftStats>,
    /// The leases of this process's live [`crate::concurrency::Session`]s.
    pub(crate) sessions: std::sync::Mutex<std::collections::BTreeSet<i64>>,
}

/// A running replica. Clones share it.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl Node {
    /// Opens the engine at `cfg.data_dir` and starts the replica.
    pub async fn open(cfg: NodeConfig, transport: Arc<dyn Transport>) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(NodeError::storage)?;
        let engine = store::engine::open(cfg.engine, &cfg.data_dir)?;
        Self::open_with_engine(cfg, engine, transport).await
    }

    /// Starts the replica over an already open engine (the simulated cluster restarts a
    /// node over the same in-memory engine).
    pub async fn open_with_engine(
        cfg: NodeConfig,
        engine: Arc<dyn Engine>,
        transport: Arc<dyn Transport>,
    ) -> Result<Node, NodeError> {
        let watch = crate::space::SpaceWatch::new(engine);
        let disk_full = watch.full();
        let engine: Arc<dyn Engine> = Arc::new(watch);
        let id = match engine.get(Cf::RaftMeta, NODE_ID)? {
            Some(b) => decode::<u64>(&b)?,
            None => {
                let id = rand::thread_rng().gen_range(1..(1u64 << 53));
                let mut b = WriteBatch::new();
                b.put(Cf::RaftMeta, NODE_ID, encode(&id));
                engine.write(b, Durability::Sync)?;
                id
            }
        };
        let cluster_id = match engine.get(Cf::RaftMeta, CLUSTER_ID)? {
            Some(b) => decode::<u64>(&b)?,
            None => 0,
        };
        let mvcc = Arc::new(Mvcc::open(engine.clone())?);
        let stats = Arc::new(RaftStats::default());
        let sm = StateMachine::open(mvcc.clone(), cfg.data_dir.join("snapshot"))
            .map_err(NodeError::raft)?
            .with_stats(stats.clone());
        let log = LogStore::new(engine.clone()).with_stats(stats.clone());
        let config = Arc::new(
            cfg.timing
                .raft_config("cairn")
                .validate()
                .map_err(NodeError::raft)?,
        );
        let raft = Raft::new(
            id,
            config,
            NetworkFactory::new(transport.clone(), cfg.timing.append_patience()),
            log,
            sm,
        )
        .await
        .map_err(NodeError::raft)?;
        let (proposer, proposals) = ProposerHandle::new();
        let inner = Arc::new(NodeInner {
            id,
            addr: cfg.addr.clone(),
            data_dir: cfg.data_dir.clone(),
            raft,
            mvcc,
            engine,
            transport,
            lessor: Lessor::default(),
            timing: cfg.timing.clone(),
            cluster_id: AtomicU64::new(cluster_id),
            membership_lock: AsyncMutex::new(()),
            snapshot_intake: AsyncMutex::new(SnapshotIntake::default()),
            proposer,
            cancel: CancellationToken::new(),
            tasks: std::sync::Mutex::new(Vec::new()),
            quota_bytes: AtomicU64::new(0),
            disk_full,
            stats: stats.clone(),
            sessions: Default::default(),
        });
        let node = Node { inner };
        node.spawn(
            "proposer",
            proposer_loop(
                node.inner.raft.clone(),
                proposals,
                cfg.timing.request_timeout,
                stats.clone(),
            ),
        );
        node.spawn(
            "leader-changes",
            count_leader_changes(node.inner.raft.clone(), stats),
        );
        let inner = node.inner.clone();
        node.spawn(
            "lessor",
            supervised("lessor", RESTART_PAUSE, move || lessor_loop(inner.clone())),
        );
        let inner = node.inner.clone();
        node.spawn(
            "watch-progress",
            supervised("watch-progress", RESTART_PAUSE, move || {
                progress_loop(inner.clone())
            }),
        );
        let inner = node.inner.clone();
        node.spawn(
            "alarm-check",
            supervised("alarm-check", RESTART_PAUSE, move || {
                crate::alarms::alarm_loop(inner.clone())
            }),
        );
        let inner = node.inner.clone();
        node.spawn(
            "auto-compaction",
            supervised("auto-compaction", RESTART_PAUSE, move || {
                compaction_loop(inner.clone())
            }),
        );
        Ok(node)
    }

    fn spawn(
        &self,
        name: &'static str,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let cancel = self.inner.cancel.clone();
        let span = tracing::info_span!("task", name, node = self.inner.id);
        let handle = tokio::spawn(tracing::Instrument::instrument(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = fut => {}
                }
            },
            span,
        ));
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id.load(Ordering::SeqCst)
    }

    /// The client handle.
    pub fn kv(&self) -> Kv {
        Kv {
            n: self.inner.clone(),
        }
    }

    /// The peer-request handler, to serve over a transport.
    pub fn handler(&self) -> Arc<dyn PeerHandler> {
        Arc::new(self.clone())
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This node's counters (failed proposals, leader changes, fsync and apply
    /// durations, snapshots built); openraft's own metrics are [`Node::raft`]'s.
    pub fn stats(&self) -> &RaftStats {
        &self.inner.stats
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.inner.mvcc
    }

    /// Whether the data dir already belongs to a cluster (an id, a vote or log entries).
    pub fn is_member(&self) -> Result<bool, NodeError> {
        let e = &self.inner.engine;
        Ok(self.cluster_id() != 0
            || e.get(Cf::RaftMeta, VOTE)?.is_some()
            || !e.scan(Cf::RaftLog, &[], None, 1, false)?.is_empty())
    }

    fn set_cluster_id(&self, id: u64) -> Result<(), NodeError> {
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, CLUSTER_ID, encode(&id));
        self.inner.engine.write(b, Durability::Sync)?;
        self.inner.cluster_id.store(id, Ordering::SeqCst);
        Ok(())
    }

    /// Makes this node the single voter of a new cluster. Refused when the data dir
    /// already belongs to a cluster.
    pub async fn initialize(&self) -> Result<u64, NodeError> {
        if self.is_member()? {
            return Err(NodeError::AlreadyInitialized(
                self.inner.data_dir.display().to_string(),
            ));
        }
        let cluster_id = rand::thread_rng().gen_range(1..(1u64 << 53));
        self.set_cluster_id(cluster_id)?;
        let mut members = BTreeMap::new();
        members.insert(
            self.inner.id,
            NodeAddr {
                addr: self.inner.addr.clone(),
            },
        );
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(NodeError::raft)?;
        if self.inner.mvcc.revision() > 1 {
            self.seal_existing_state().await?;
        }
        Ok(cluster_id)
    }

    /// A cluster initialized over a state machine that already holds data (a restored
    /// backup, a survivor of `cairn store recover`) has a log that starts after that data:
    /// replayed from index 0, it would give a joining node the new cluster's entries
    /// without the data under them. So the state is snapshotted and the log purged up to
    /// it at once; a joiner then starts from the snapshot.
    async fn seal_existing_state(&self) -> Result<(), NodeError> {
        const SEAL_WAIT: Duration = Duration::from_secs(30);
        self.inner
            .raft
            .wait(Some(SEAL_WAIT))
            .metrics(
                |m| m.current_leader == Some(self.inner.id) && m.last_applied.is_some(),
                "this node leading and applying",
            )
            .await
            .map_err(NodeError::raft)?;
        let snapshot = self.snapshot_and_purge(SEAL_WAIT).await?.index;
        tracing::info!(
            snapshot,
            revision = self.inner.mvcc.revision(),
            "the existing state is snapshotted; joining nodes start from it"
        );
        Ok(())
    }

    /// Joins the cluster that `seed` (any member's address) belongs to: the leader adds
    /// this node as a learner, waits for it to catch up, then makes it a voter. A node
    /// that is already a member returns at once.
    pub async fn join(&self, seed: &str, timeout: Duration) -> Result<JoinResponse, NodeError> {
        self.join_with(seed, timeout, false).await
    }

    /// Joins as a learner (`--join --learner`): a non-voting member that replicates the
    /// log and serves reads but never counts toward quorum, until promoted.
    pub async fn join_as_learner(
        &self,
        seed: &str,
        timeout: Duration,
    ) -> Result<JoinResponse, NodeError> {
        self.join_with(seed, timeout, true).await
    }

    async fn join_with(
        &self,
        seed: &str,
        timeout: Duration,
        learner: bool,
    ) -> Result<JoinResponse, NodeError> {
        if self.cluster_id() != 0 {
            return Err(NodeError::Join(
                "this data dir already belongs to a cluster; restart without --join".into(),
            ));
        }
        let req = PeerRequest::Join {
            node_id: self.inner.id,
            addr: NodeAddr {
                addr: self.inner.addr.clone(),
            },
            learner,
        };
        let resp = self
            .inner
            .transport
            .send(
                &NodeAddr {
                    addr: seed.to_string(),
                },
                req,
                timeout,
            )
            .await
            .map_err(|e| match e {
                TransportError::Incompatible(why) => {
                    NodeError::Incompatible(format!("joining through {seed}: {why}"))
                }
                e => NodeError::Join(format!("{seed}: {e}")),
            })?;
        match resp {
            PeerResponse::Join(Ok(j)) => {
                self.set_cluster_id(j.cluster_id)?;
                Ok(j)
            }
            PeerResponse::Join(Err(e)) => Err(NodeError::Join(e.to_string())),
            other => Err(NodeError::Join(format!("unexpected answer {other:?}"))),
        }
    }

    /// Asks every other member for its status, at once: refused when one answers that
    /// it speaks another peer protocol, so a restarted node of an incompatible build
    /// stops with the reason instead of running beside peers that refuse it. A member
    /// that refuses the connection is not waited for (it may be down); one that does not
    /// answer in `timeout` is asked again, for up to five rounds.
    pub async fn check_peer_protocols(&self, timeout: Duration) -> Result<(), NodeError> {
        // The applied membership, read from the state machine: right after opening,
        // openraft may not have published its metrics (and their membership) yet.
        let applied =
            crate::state_machine::applied_membership(&self.inner.mvcc).map_err(NodeError::raft)?;
        let mut pending: Vec<(NodeId, String)> = applied
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .chain(self.members().voters)
            .chain(self.members().learners)
            .filter(|(id, _)| *id != self.inner.id)
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        for _round in 0..5 {
            if pending.is_empty() {
                break;
            }
            let asks = pending.iter().cloned().map(|(id, addr)| {
                let transport = self.inner.transport.clone();
                async move {
                    let r = transport
                        .send(
                            &NodeAddr { addr: addr.clone() },
                            PeerRequest::Status,
                            timeout,
                        )
                        .await;
                    (id, addr, r)
                }
            });
            let mut again = Vec::new();
            for (id, addr, r) in futures::future::join_all(asks).await {
                match r {
                    Err(TransportError::Incompatible(why)) => {
                        return Err(NodeError::Incompatible(format!(
                            "member {id:x} at {addr}: {why}"
                        )));
                    }
                    Err(TransportError::Timeout(_)) => again.push((id, addr)),
                    _ => {}
                }
            }
            pending = again;
        }
        Ok(())
    }

    /// Builds a snapshot of everything this node has applied and purges its log up to it,
    /// within `timeout`; the snapshot's last log id.
    pub(crate) async fn snapshot_and_purge(
        &self,
        timeout: Duration,
    ) -> Result<crate::types::LogId, NodeError> {
        let raft = &self.inner.raft;
        let applied = metrics(&self.inner).last_applied.map_or(0, |l| l.index);
        let deadline = Instant::now() + timeout;
        let snapshot = loop {
            // An automatic build may be under way: trigger again until one covers it.
            raft.trigger().snapshot().await.map_err(NodeError::raft)?;
            let built = raft
                .wait(Some(Duration::from_secs(2)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "a snapshot of everything applied",
                )
                .await;
            match built.map(|m| m.snapshot) {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) if Instant::now() >= deadline => return Err(NodeError::raft(e)),
                Err(_) => {}
            }
        };
        raft.trigger()
            .purge_log(snapshot.index)
            .await
            .map_err(NodeError::raft)?;
        raft.wait(Some(timeout))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= snapshot.index),
                "the log purged up to the snapshot",
            )
            .await
            .map_err(NodeError::raft)?;
        Ok(snapshot)
    }

    /// Waits until some node is leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, NodeError> {
        let m = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(NodeError::raft)?;
        m.current_leader.ok_or_else(|| NodeError::raft("no leader"))
    }

    pub fn status(&self) -> NodeStatus {
        status(&self.inner)
    }

    /// This node's view of the membership: voters and learners with their addresses. The
    /// part of [`Node::status`] a per-request caller needs, without its storage reads.
    pub fn members(&self) -> Members {
        members_of(&metrics(&self.inner))
    }

    /// Makes learner `node_id` a voter (through the leader).
    pub async fn promote(&self, node_id: NodeId) -> Result<(), KvError> {
        self.kv()
            .call_leader(
                |_| PeerRequest::Promote { node_id },
                |r| match r {
                    PeerResponse::Promote(r) => Some(r),
                    _ => None,
                },
                self.inner.timing.request_timeout * 6,
            )
            .await
    }

    /// Makes voter `node_id` a learner (through the leader).
    pub async fn demote(&self, node_id: NodeId) -> Result<(), KvError> {
        self.kv()
            .call_leader(
                |_| PeerRequest::Demote { node_id },
                |r| match r {
                    PeerResponse::Demote(r) => Some(r),
                    _ => None,
                },
                self.inner.timing.request_timeout * 3,
            )
            .await
    }

    /// Removes a node from the cluster (through the leader).
    pub async fn remove(&self, node_id: NodeId) -> Result<(), KvError> {
        self.kv()
            .call_leader(
                |_| PeerRequest::Remove { node_id },
                |r| match r {
                    PeerResponse::Remove(r) => Some(r),
                    _ => None,
                },
                self.inner.timing.request_timeout * 3,
            )
            .await
    }

    /// Stops background tasks and the Raft node. In-flight requests fail.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            if let Err(e) = t.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "a background task of the node panicked");
            }
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

impl NodeInner {
    pub(crate) fn cluster_id_value(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }
}

/// The members of a cluster as one node sees them (see [`Node::members`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
}

pub(crate) fn metrics(inner: &NodeInner) -> RaftMetrics {
    // Clone and drop the borrow at once: holding it blocks RaftCore.
    inner.raft.metrics().borrow().clone()
}

/// The voters and the learners of the membership in `m`, with their addresses.
fn members_of(m: &RaftMetrics) -> Members {
    let mem = m.membership_config.membership();
    let voter_ids: BTreeSet<NodeId> = mem.voter_ids().collect();
    let mut members = Members::default();
    for (id, node) in mem.nodes() {
        if voter_ids.contains(id) {
            members.voters.push((*id, node.addr.clone()));
        } else {
            members.learners.push((*id, node.addr.clone()));
        }
    }
    members
}

fn status(inner: &NodeInner) -> NodeStatus {
    let m = metrics(inner);
    let mem = m.membership_config.membership();
    let Members { voters, learners } = members_of(&m);
    let applied = m.last_applied.map(|l| l.index);
    let committed = match &m.replication {
        Some(matched) => {
            quorum_matched(mem.get_joint_config(), matched, m.current_term).or(applied)
        }
        None => applied,
    };
    NodeStatus {
        node_id: inner.id,
        cluster_id: inner.cluster_id.load(Ordering::SeqCst),
        addr: inner.addr.clone(),
        state: m.state.into(),
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        committed,
        applied,
        revision: inner.mvcc.revision(),
        compact_revision: inner.mvcc.compact_revision(),
        voters,
        learners,
        engine: inner.engine.name().to_string(),
        db_size: inner.engine.size_on_disk(),
        keys: inner.mvcc.key_count(),
    }
}

impl PeerHandler for Node {
    fn handle(&self, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        let node = self.clone();
        async move { node.answer(req).await }.boxed()
    }
}

impl Node {
    /// Whether `id` is a voter or learner of this node's effective membership (the
    /// latest in its log, as the metrics show it) or of the last applied one: while a
    /// config that drops the leader is appended but not yet committed here, the leader
    /// must still reach us to commit it. A node with neither (one waiting to join) says
    /// yes to everyone: its first leader is not known to it yet.
    fn peer_is_member(&self, mem: &openraft::Membership<NodeId, NodeAddr>, id: NodeId) -> bool {
        if mem.nodes().any(|(n, _)| *n == id) {
            return true;
        }
        match crate::state_machine::applied_membership(&self.inner.mvcc) {
            Ok(applied) => {
                let applied = applied.membership();
                applied.nodes().any(|(n, _)| *n == id)
                    || (mem.nodes().next().is_none() && applied.nodes().next().is_none())
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the applied membership");
                false
            }
        }
    }

    /// Hands a snapshot chunk to openraft once [`SnapshotIntake`] admitted it, one chunk
    /// at a time (openraft writes it at its offset and installs the snapshot when done).
    async fn receive_snapshot_chunk(
        &self,
        r: openraft::raft::InstallSnapshotRequest<crate::types::TypeConfig>,
    ) -> PeerResponse {
        let mut intake = self.inner.snapshot_intake.lock().await;
        if let Err(why) = intake.admit(&r) {
            tracing::warn!(refused = %why, "snapshot chunk refused");
            return PeerResponse::Refused(why.into());
        }
        PeerResponse::Snapshot(self.inner.raft.install_snapshot(r).await)
    }

    /// Snapshot chunks this node refused since it started.
    pub async fn snapshot_chunks_refused(&self) -> u64 {
        self.inner.snapshot_intake.lock().await.refused()
    }

    async fn answer(&self, req: PeerRequest) -> PeerResponse {
        let inner = &self.inner;
        let m = metrics(inner);
        let mem = m.membership_config.membership();
        if let Err(why) = crate::rpc::admit(&req, m.current_term, |id| self.peer_is_member(mem, id))
        {
            tracing::warn!(refused = %why, "peer request refused");
            return PeerResponse::Refused(why);
        }
        match req {
            PeerRequest::Append(r) => PeerResponse::Append(inner.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(inner.raft.vote(r).await),
            PeerRequest::Snapshot(r) => self.receive_snapshot_chunk(r).await,
            PeerRequest::Propose { cmd, .. } => {
                PeerResponse::Propose(self.kv().propose_local(cmd).await)
            }
            PeerRequest::ReadIndex => {
                PeerResponse::ReadIndex(match inner.raft.ensure_linearizable().await {
                    Ok(read) => Ok(read),
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                        Err(KvError::NotLeader {
                            leader: f.leader_id,
                        })
                    }
                    Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                        Err(KvError::Unavailable(q.to_string()))
                    }
                    Err(RaftError::Fatal(f)) => Err(KvError::Stopped(f.to_string())),
                })
            }
            PeerRequest::KeepAlive(id) => {
                PeerResponse::KeepAlive(self.kv().keepalive_local(id).await)
            }
            PeerRequest::LeaseRemaining(id) => {
                PeerResponse::LeaseRemaining(self.kv().remaining_local(id))
            }
            PeerRequest::Join {
                node_id,
                addr,
                learner,
            } => PeerResponse::Join(self.join_local(node_id, addr, learner).await),
            PeerRequest::Promote { node_id } => {
                PeerResponse::Promote(self.promote_local(node_id).await)
            }
            PeerRequest::Demote { node_id } => {
                PeerResponse::Demote(self.demote_local(node_id).await)
            }
            PeerRequest::Remove { node_id } => {
                PeerResponse::Remove(self.remove_local(node_id).await)
            }
            PeerRequest::Status => PeerResponse::Status(status(inner)),
            PeerRequest::HoldsSession(lease) => PeerResponse::HoldsSession(
                inner
                    .sessions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(&lease),
            ),
        }
    }

    async fn join_local(
        &self,
        node_id: NodeId,
        addr: NodeAddr,
        learner: bool,
    ) -> Result<JoinResponse, KvError> {
        let inner = &self.inner;
        let m = metrics(inner);
        if m.current_leader != Some(inner.id) {
            // Not the leader: pass the request on.
            let timeout = inner.timing.request_timeout * 6;
            return self
                .kv()
                .call_leader(
                    move |_| PeerRequest::Join {
                        node_id,
                        addr: addr.clone(),
                        learner,
                    },
                    |r| match r {
                        PeerResponse::Join(r) => Some(r),
                        _ => None,
                    },
                    timeout,
                )
                .await;
        }
        let _guard = inner.membership_lock.lock().await;
        let mem = metrics(inner).membership_config.membership().clone();
        if mem.voter_ids().any(|v| v == node_id) {
            return Err(KvError::Membership(format!(
                "node {node_id} is already a voter"
            )));
        }
        if mem.nodes().any(|(_, n)| n.addr == addr.addr)
            && !mem.nodes().any(|(id, _)| *id == node_id)
        {
            return Err(KvError::Membership(format!(
                "address {} belongs to another node; remove it first",
                addr.addr
            )));
        }
        tracing::info!(node_id, addr = %addr.addr, "adding learner");
        inner
            .raft
            .add_learner(node_id, addr, true)
            .await
            .map_err(membership_err)?;
        if learner {
            tracing::info!(node_id, "learner caught up; it stays a learner");
        } else {
            tracing::info!(node_id, "learner caught up; promoting to voter");
            inner
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
                .await
                .map_err(membership_err)?;
        }
        let m = metrics(inner);
        Ok(JoinResponse {
            cluster_id: inner.cluster_id.load(Ordering::SeqCst),
            leader: inner.id,
            voters: m.membership_config.membership().voter_ids().collect(),
        })
    }

    /// The leader's side of [`Node::promote`]: waits (within the change's own timeout)
    /// for the learner to catch up, as a join does, then makes it a voter.
    async fn promote_local(&self, node_id: NodeId) -> Result<(), KvError> {
        let inner = &self.inner;
        let _guard = inner.membership_lock.lock().await;
        let mem = metrics(inner).membership_config.membership().clone();
        match membership_role(&mem, node_id) {
            None => return Err(KvError::UnknownNode(node_id)),
            Some(true) => {
                return Err(KvError::Membership(format!(
                    "node {node_id:x} is already a voter"
                )));
            }
            Some(false) => {}
        }
        let addr = mem
            .get_node(&node_id)
            .cloned()
            .ok_or(KvError::UnknownNode(node_id))?;
        // Blocks until the learner's log is close to the leader's.
        inner
            .raft
            .add_learner(node_id, addr, true)
            .await
            .map_err(membership_err)?;
        tracing::info!(node_id, "promoting a learner to voter");
        inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(membership_err)?;
        Ok(())
    }

    /// The leader's side of [`Node::demote`]: the voter becomes a learner. The last
    /// voter cannot be demoted.
    async fn demote_local(&self, node_id: NodeId) -> Result<(), KvError> {
        let inner = &self.inner;
        let _guard = inner.membership_lock.lock().await;
        let mem = metrics(inner).membership_config.membership().clone();
        match membership_role(&mem, node_id) {
            None => return Err(KvError::UnknownNode(node_id)),
            Some(false) => {
                return Err(KvError::Membership(format!(
                    "node {node_id:x} is a learner, not a voter"
                )));
            }
            Some(true) => {}
        }
        if mem.voter_ids().count() == 1 {
            return Err(KvError::Membership("cannot demote the last voter".into()));
        }
        tracing::info!(node_id, "demoting a voter to learner");
        inner
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), true)
            .await
            .map_err(membership_err)?;
        Ok(())
    }

    async fn remove_local(&self, node_id: NodeId) -> Result<(), KvError> {
        let inner = &self.inner;
        if metrics(inner).current_leader != Some(inner.id) {
            return Err(KvError::NotLeader {
                leader: metrics(inner).current_leader,
            });
        }
        let _guard = inner.membership_lock.lock().await;
        let mem = metrics(inner).membership_config.membership().clone();
        if !mem.nodes().any(|(id, _)| *id == node_id) {
            return Err(KvError::UnknownNode(node_id));
        }
        let is_voter = mem.voter_ids().any(|v| v == node_id);
        if is_voter && mem.voter_ids().count() == 1 {
            return Err(KvError::Membership("cannot remove the last voter".into()));
        }
        let ids = BTreeSet::from([node_id]);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        inner
            .raft
            .change_membership(change, false)
            .await
            .map_err(membership_err)?;
        if is_voter {
            // A voter is removed in two steps (joint config); also drop it as a learner.
            let still_there = metrics(inner)
                .membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == node_id);
            if still_there
                && let Err(e) = inner
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                    .await
            {
                // It is no voter any more: removal succeeded, a learner entry stays
                // until another `remove` drops it.
                tracing::warn!(
                    node_id,
                    error = %membership_err(e),
                    "removed as a voter, but still a learner"
                );
            }
        }
        Ok(())
    }
}

/// Whether `id` is a voter (`Some(true)`), a learner (`Some(false)`) or no member of
/// `mem`.
fn membership_role(mem: &openraft::Membership<NodeId, NodeAddr>, id: NodeId) -> Option<bool> {
    if mem.voter_ids().any(|v| v == id) {
        Some(true)
    } else if mem.nodes().any(|(n, _)| *n == id) {
        Some(false)
    } else {
        None
    }
}

/// A refused or failed membership change (`add_learner`, `change_membership`) as the
/// caller sees it.
fn membership_err(e: RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>) -> KvError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => KvError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            KvError::Membership(c.to_string())
        }
        RaftError::Fatal(f) => KvError::Stopped(f.to_string()),
    }
}

/// The log index a quorum of every voter config in `configs` (one, or two while joint)
/// has matched, as the leader's replication metrics (`matched`, which include the leader
/// itself) show; `None` when that log id is not of `term`: a leader commits entries of
/// earlier terms only through one of its own.
fn quorum_matched(
    configs: &[BTreeSet<NodeId>],
    matched: &BTreeMap<NodeId, Option<crate::types::LogId>>,
    term: u64,
) -> Option<u64> {
    let per_config = configs.iter().map(|voters| {
        let mut ids: Vec<Option<crate::types::LogId>> = voters
            .iter()
            .map(|v| matched.get(v).copied().flatten())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        // The (n/2 + 1)-th highest is held by a majority.
        ids.get(voters.len() / 2).copied().flatten()
    });
    let least = per_config.min()??;
    (least.leader_id.term == term).then_some(least.index)
}

impl From<TransportError> for KvError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unreachable(s) | TransportError::Incompatible(s) => {
                KvError::Unavailable(s)
            }
            TransportError::Unauthorized => KvError::Unauthorized,
            TransportError::Timeout(s) | TransportError::Protocol(s) => KvError::OutcomeUnknown(s),
        }
    }
}

/// Pause before a panicked background loop is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Runs the loop `make()` builds, and when it panics logs the panic at error level and
/// starts a new one after `pause`, so a bug in a loop (the lessor's TTL
/// overflow of the security review's H3 was one) is loud and never leaves it silently
/// dead. A loop that returns is not restarted. Cancelled with the node's other tasks by [`Node::spawn`].
async fn supervised<F, Fut>(name: &'static str, pause: Duration, mut make: F)
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = ()> + Send,
{
    loop {
        match std::panic::AssertUnwindSafe(make()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                tracing::error!(task = name, panic = %what, "background loop panicked; restarting it");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Follows leadership: promotes/demotes the lessor and, while leader, proposes the expiry
/// of leases whose deadline passed and the checkpoints of their remaining TTLs (see
/// [`crate::lessor`]).
async fn lessor_loop(inner: Arc<NodeInner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = false;
    loop {
        tick.tick().await;
        let m = metrics(&inner);
        let leader = m.state == ServerState::Leader && m.current_leader == Some(inner.id);
        if leader && !was_leader {
            // Wait until this leader's term is applied locally, so the lease table it
            // extends (with every checkpoint of the previous leaders) is complete.
            if inner.raft.ensure_linearizable().await.is_err() {
                continue;
            }
            let leases = inner.mvcc.lease_records();
            inner
                .lessor
                .promote(&leases, Instant::now(), inner.timing.election_max);
            tracing::info!(
                node = inner.id,
                leases = leases.len(),
                checkpointed = leases.iter().filter(|l| l.remaining_ttl.is_some()).count(),
                "became leader: lease deadlines restored from their checkpoints"
            );
        } else if !leader && was_leader {
            inner.lessor.demote();
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        expire_leases(&inner).await;
        checkpoint_leases(&inner).await;
    }
}

/// Proposes the expiry of the leases whose deadline passed (one bounded batch).
async fn expire_leases(inner: &NodeInner) {
    let expired = inner
        .lessor
        .take_expired(&inner.mvcc.lease_records(), Instant::now());
    if expired.is_empty() {
        return;
    }
    tracing::info!(leases = ?expired, "expiring leases");
    if let Err(e) = inner
        .raft
        .client_write(Command::LeaseExpire { ids: expired })
        .await
    {
        tracing::warn!(error = %e, "lease expiry proposal failed; retried after another TTL");
    }
}

/// Proposes the lease checkpoints that are due (one bounded batch), holding the lessor's
/// checkpoint gate from the decision until the entry is applied, so a keepalive's reset
/// of a checkpoint is never overtaken by a checkpoint taken before it.
async fn checkpoint_leases(inner: &NodeInner) {
    let _gate = inner.lessor.checkpoint_gate().lock().await;
    let due = inner
        .lessor
        .take_checkpoints(&inner.mvcc.lease_records(), Instant::now());
    if due.is_empty() {
        return;
    }
    tracing::debug!(checkpoints = ?due, "checkpointing lease TTLs");
    let cmd = Command::LeaseCheckpoint { checkpoints: due };
    if let Err(e) = inner
        .proposer
        .propose(cmd, inner.timing.request_timeout)
        .await
    {
        tracing::warn!(error = %e, "lease checkpoint proposal failed; retried at the next tick");
    }
}

/// History kept by automatic compaction, in revisions.
pub const KEEP_REVISIONS: i64 = 10_000;

/// About how many bytes of stored events one automatic compaction step drops.
const COMPACTION_STEP_BYTES: usize = 4 << 20;

/// The revision automatic compaction should compact to, if any: keep the last
/// `keep` revisions, and only act once another tenth of that has accumulated so the
/// leader does not propose a compaction for every write.
pub fn auto_compact_target(revision: i64, compact_revision: i64, keep: i64) -> Option<i64> {
    let target = revision - keep;
    (target > compact_revision + keep / 10).then_some(target)
}

/// On the leader, compacts history older than [`KEEP_REVISIONS`] every 30 s, in steps of
/// [`COMPACTION_STEP_BYTES`] (see `Mvcc::compaction_step`).
async fn compaction_loop(inner: Arc<NodeInner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !inner.lessor.is_primary() {
            continue;
        }
        let (rev, compacted) = (inner.mvcc.revision(), inner.mvcc.compact_revision());
        let Some(target) = auto_compact_target(rev, compacted, KEEP_REVISIONS) else {
            continue;
        };
        // In steps of about COMPACTION_STEP_BYTES of events, each its own apply.
        let mut steps = 0;
        loop {
            let step = match inner.mvcc.compaction_step(target, COMPACTION_STEP_BYTES) {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(error = %e, "automatic compaction failed; retried at the next tick");
                    break;
                }
            };
            if let Err(e) = inner
                .raft
                .client_write(Command::Compact { revision: step })
                .await
            {
                tracing::warn!(error = %e, "automatic compaction failed; retried at the next tick");
                break;
            }
            steps += 1;
            if step >= target {
                tracing::info!(revision = target, steps, "compacted history");
                break;
            }
            if !inner.lessor.is_primary() {
                break;
            }
        }
    }
}

/// Counts every leader this node learns of (etcd's `leader_changes_seen`): openraft's
/// `current_leader` becoming a node other than the one before (none, during an election,
/// is not counted; the same leader again after one is).
async fn count_leader_changes(raft: crate::types::Raft, stats: Arc<RaftStats>) {
    let mut metrics = raft.metrics();
    let mut last = metrics.borrow_and_update().current_leader;
    if last.is_some() {
        RaftStats::add(&stats.leader_changes, 1);
    }
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow_and_update().current_leader;
        if now.is_some() && now != last {
            RaftStats::add(&stats.leader_changes, 1);
        }
        last = now;
    }
}

/// Sends idle watchers their progress notifications.
async fn progress_loop(inner: Arc<NodeInner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        inner.mvcc.hub().progress_tick(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod supervision_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::supervised;

    #[tokio::test]
    async fn a_panicking_loop_is_restarted_and_a_returning_one_is_not() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        supervised("test", std::time::Duration::ZERO, move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        })
        .await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two panics, then a clean return"
        );
    }
}

#[cfg(test)]
mod committed_tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::quorum_matched;
    use crate::types::{CommittedLeaderId, LogId};

    fn at(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn committed_is_what_a_quorum_of_each_config_matched_in_this_term() {
        let three = BTreeSet::from([1, 2, 3]);
        let matched = BTreeMap::from([(1, at(2, 9)), (2, at(2, 7)), (3, None)]);
        assert_eq!(
            quorum_matched(std::slice::from_ref(&three), &matched, 2),
            Some(7)
        );
        // A quorum holds only entries of an earlier term: nothing known committed.
        let old = BTreeMap::from([(1, at(2, 9)), (2, at(1, 5)), (3, at(1, 4))]);
        assert_eq!(quorum_matched(std::slice::from_ref(&three), &old, 2), None);
        // Joint config: the lower of the two quorums.
        let five = BTreeSet::from([1, 2, 3, 4, 5]);
        let joint = BTreeMap::from([
            (1, at(3, 20)),
            (2, at(3, 18)),
            (3, at(3, 12)),
            (4, at(3, 11)),
            (5, None),
        ]);
        assert_eq!(quorum_matched(&[three, five], &joint, 3), Some(12));
        let one = BTreeSet::from([1]);
        assert_eq!(quorum_matched(&[one], &matched, 2), Some(9));
    }
}

#[cfg(test)]
mod auto_compaction_tests {
    use super::auto_compact_target;

    #[test]
    fn compacts_only_once_a_tenth_more_than_the_kept_history_accumulated() {
        assert_eq!(auto_compact_target(5_000, 0, 10_000), None);
        assert_eq!(auto_compact_target(11_000, 0, 10_000), None);
        assert_eq!(auto_compact_target(11_001, 0, 10_000), Some(1_001));
        assert_eq!(auto_compact_target(12_000, 1_001, 10_000), None);
        assert_eq!(auto_compact_target(12_002, 1_001, 10_000), Some(2_002));
    }
}

//! Quorum-loss recovery (`cairn store recover`, etcd's `--force-new-cluster`): turns the
//! data dir of one surviving node into the only member of a new cluster, offline.
//!
//! What the survivor keeps: everything its state machine applied, plus every entry its
//! log holds after that, applied here first. etcd keeps only the entries up to the
//! commit index it recorded; Cairn's commit pointer (like its applied state) is written
//! without an fsync, made durable by the next log append, so after a kill -9 it lags:
//! the last entries a leader committed, applied and acknowledged before it died are past
//! it (issue 14: the recovery drill lost an acknowledged run that way). Keeping the whole
//! log keeps everything acknowledged; an entry that was never committed was never
//! acknowledged either (its client got an error whose outcome is unknown), so applying it
//! breaks no promise. The count of entries past the recorded commit point is reported.
//! Then the old
//! cluster's Raft state goes: the log, the vote, the commit and purge pointers, the
//! applied membership, the cluster id and the snapshots (a snapshot of the old cluster
//! carries its membership and log ids and must never reach a new member). Last, the node
//! initializes a one-voter cluster over the kept state with a new cluster id, exactly as
//! `--init` does, and is stopped again; `serve` then starts it as usual.
//!
//! The node keeps its id, so the dead members' ids stay retired; they rejoin with fresh
//! data dirs (`--join`). The old members' own data dirs belong to the old cluster id,
//! which no node of the new cluster answers to.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use openraft::storage::{RaftLogReader, RaftStateMachine};
use store::{Cf, Durability, EngineKind, Mvcc, WriteBatch};

use crate::error::NodeError;
use crate::log_store::{self as log_keys, LogStore};
use crate::network::{Transport, TransportError};
use crate::node::{self as node_keys, Node, NodeConfig};
use crate::rpc::{PeerRequest, PeerResponse};
use crate::state_machine::{self as sm_keys, StateMachine, applied_membership};
use crate::timing::Timing;
use crate::types::{LogId, NodeAddr, NodeId, decode};

/// What a recovery did, for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub node_id: NodeId,
    pub old_cluster_id: u64,
    pub new_cluster_id: u64,
    /// The address the node now has in the new membership.
    pub addr: String,
    /// The members of the old cluster that are gone (id, address).
    pub dropped_members: Vec<(NodeId, String)>,
    /// Log entries the node held but had not applied: applied now.
    pub applied_from_log: u64,
    /// Of those, the entries past the commit index the node had recorded (perhaps
    /// committed and acknowledged after the pointer's last durable write).
    pub past_recorded_commit: u64,
    /// The store revision the new cluster starts from.
    pub revision: i64,
}

/// The log entries to apply before the log goes: every one after `applied` up to the
/// `last` the log holds, and how many of them lie past the recorded `committed` index.
pub fn entries_to_apply(
    applied: Option<LogId>,
    committed: Option<LogId>,
    last: Option<LogId>,
) -> (Option<RangeInclusive<u64>>, u64) {
    let start = applied.map_or(0, |a| a.index + 1);
    let Some(end) = last.map(|l| l.index).filter(|end| *end >= start) else {
        return (None, 0);
    };
    let known = committed.map(|c| c.index + 1).unwrap_or(0).max(start);
    (Some(start..=end), (end + 1).saturating_sub(known))
}

/// Turns the stopped node in `data_dir` into the single voter of a new cluster. `addr`
/// replaces the address the node had in the old membership (a survivor moved to a new
/// machine); without it the old one is kept.
pub async fn recover(
    data_dir: &Path,
    engine_kind: EngineKind,
    addr: Option<String>,
    timing: Timing,
) -> Result<Recovered, NodeError> {
    let reset = reset_raft_state(data_dir, engine_kind).await?;
    let addr = match addr.or(reset.old_addr.clone()) {
        Some(a) => a,
        None => {
            return Err(NodeError::storage(
                "this node is not in its own last membership; give its address with --advertise",
            ));
        }
    };
    let cfg = NodeConfig {
        data_dir: data_dir.to_path_buf(),
        engine: engine_kind,
        addr: addr.clone(),
        timing,
    };
    let node = Node::open(cfg, Arc::new(NoPeers)).await?;
    let initialized = async {
        let new_cluster_id = node.initialize().await?;
        node.wait_for_leader(Duration::from_secs(30)).await?;
        Ok::<_, NodeError>(new_cluster_id)
    }
    .await;
    let revision = node.mvcc().revision();
    node.shutdown().await;
    let new_cluster_id = initialized?;
    Ok(Recovered {
        node_id: reset.node_id,
        old_cluster_id: reset.old_cluster_id,
        new_cluster_id,
        addr,
        dropped_members: reset.dropped_members,
        applied_from_log: reset.applied_from_log,
        past_recorded_commit: reset.past_recorded_commit,
        revision,
    })
}

/// What [`reset_raft_state`] found and did.
struct Reset {
    node_id: NodeId,
    old_cluster_id: u64,
    old_addr: Option<String>,
    dropped_members: Vec<(NodeId, String)>,
    applied_from_log: u64,
    past_recorded_commit: u64,
}

/// Applies the committed tail of the log, then removes the old cluster's Raft state.
async fn reset_raft_state(data_dir: &Path, engine_kind: EngineKind) -> Result<Reset, NodeError> {
    if !data_dir.is_dir() {
        return Err(NodeError::storage(format!(
            "no data dir at {}",
            data_dir.display()
        )));
    }
    let engine = store::engine::open(engine_kind, data_dir)?;
    let meta =
        |key: &[u8]| -> Result<Option<Vec<u8>>, NodeError> { Ok(engine.get(Cf::RaftMeta, key)?) };
    let node_id: NodeId = match meta(node_keys::NODE_ID)? {
        Some(b) => decode(&b)?,
        None => return Err(NodeError::NotInitialized(data_dir.display().to_string())),
    };
    let old_cluster_id: u64 = match meta(node_keys::CLUSTER_ID)? {
        Some(b) => decode(&b)?,
        None => 0,
    };
    if old_cluster_id == 0 {
        return Err(NodeError::NotInitialized(data_dir.display().to_string()));
    }
    let committed: Option<LogId> = match meta(log_keys::COMMITTED)? {
        Some(b) => decode::<Option<LogId>>(&b)?,
        None => None,
    };
    let mvcc = Arc::new(Mvcc::open(engine.clone())?);
    let membership = applied_membership(&mvcc).map_err(NodeError::storage)?;
    let mut sm =
        StateMachine::open(mvcc.clone(), snapshot_dir(data_dir)).map_err(NodeError::storage)?;
    let (applied, _) = sm.applied_state().await.map_err(NodeError::storage)?;
    let mut log = LogStore::new(engine.clone());
    let last = log.last_entry_id().map_err(NodeError::storage)?;
    let (range, past_recorded_commit) = entries_to_apply(applied, committed, last);
    let mut applied_from_log = 0;
    if let Some(range) = range {
        let entries = log
            .try_get_log_entries(range.clone())
            .await
            .map_err(NodeError::storage)?;
        let expected = range.end() - range.start() + 1;
        if entries.len() as u64 != expected {
            return Err(NodeError::storage(format!(
                "the log should hold the entries {}..={} but has {} of them",
                range.start(),
                range.end(),
                entries.len()
            )));
        }
        applied_from_log = expected;
        sm.apply(entries).await.map_err(NodeError::storage)?;
    }
    let mut old_addr = None;
    let mut dropped_members = Vec::new();
    for (id, n) in membership.membership().nodes() {
        if *id == node_id {
            old_addr = Some(n.addr.clone());
        } else {
            dropped_members.push((*id, n.addr.clone()));
        }
    }
    // The engine must be closed before the node opens it again.
    drop((sm, mvcc, log));
    let mut b = WriteBatch::new();
    b.delete_range(Cf::RaftLog, Vec::new(), None);
    for key in [
        log_keys::VOTE,
        log_keys::PURGED,
        log_keys::COMMITTED,
        node_keys::CLUSTER_ID,
    ] {
        b.delete(Cf::RaftMeta, key.to_vec());
    }
    for key in [sm_keys::APPLIED, sm_keys::MEMBERSHIP] {
        b.delete(Cf::Meta, key.to_vec());
    }
    engine.write(b, Durability::Sync)?;
    drop(engine);
    remove_snapshots(&snapshot_dir(data_dir))?;
    Ok(Reset {
        node_id,
        old_cluster_id,
        old_addr,
        dropped_members,
        applied_from_log,
        past_recorded_commit,
    })
}

fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshot")
}

fn remove_snapshots(dir: &Path) -> Result<(), NodeError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NodeError::storage(format!(
            "removing the old cluster's snapshots in {}: {e}",
            dir.display()
        ))),
    }
}

/// The transport of a node that must not talk to anyone while it is recovered.
struct NoPeers;

impl Transport for NoPeers {
    fn send(
        &self,
        target: &NodeAddr,
        _req: PeerRequest,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
        let target = target.addr.clone();
        async move {
            Err(TransportError::Unreachable(format!(
                "{target}: a node being recovered talks to no peer"
            )))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::CommittedLeaderId;

    fn id(index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(3, 1), index))
    }

    #[test]
    fn every_entry_after_the_applied_one_is_kept_and_those_past_the_commit_are_counted() {
        assert_eq!(entries_to_apply(id(10), id(14), id(20)), (Some(11..=20), 6));
        assert_eq!(entries_to_apply(id(10), id(20), id(20)), (Some(11..=20), 0));
    }

    /// The drill's case: the commit pointer and the applied state are written without a
    /// sync, so after a kill -9 both lag the log, whose appends are synced.
    #[test]
    fn a_lagging_commit_pointer_loses_nothing_the_log_holds() {
        assert_eq!(entries_to_apply(id(10), id(7), id(12)), (Some(11..=12), 2));
        assert_eq!(entries_to_apply(id(10), None, id(10)), (None, 0));
        assert_eq!(entries_to_apply(id(10), id(10), id(10)), (None, 0));
    }

    #[test]
    fn a_node_that_applied_nothing_applies_its_whole_log() {
        assert_eq!(entries_to_apply(None, id(3), id(5)), (Some(0..=5), 2));
        assert_eq!(entries_to_apply(None, None, id(5)), (Some(0..=5), 6));
        assert_eq!(entries_to_apply(None, None, None), (None, 0));
    }
}

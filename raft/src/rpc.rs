//! The peer protocol: one request/response enum pair, carried as bincode bodies over
//! any [`Transport`](crate::network::Transport) (HTTP between processes, direct calls in
//! the simulated network). Raft's own RPCs travel here next to the store's: forwarded
//! proposals, read-index requests, lease keepalives and membership requests.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use store::{Command, CommandResult};

use crate::error::KvError;
use crate::types::{LogId, NodeAddr, NodeId, TypeConfig};

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Propose a command on the leader.
    Propose(Command),
    /// The leader's read point for a linearizable read on a follower.
    ReadIndex,
    /// Refresh a lease on the leader; answers the TTL.
    KeepAlive(i64),
    /// Remaining seconds of a lease, measured by the leader.
    LeaseRemaining(i64),
    /// Add a node (as learner, then voter) to the cluster.
    Join {
        node_id: NodeId,
        addr: NodeAddr,
    },
    /// Remove a node from the cluster.
    Remove {
        node_id: NodeId,
    },
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(Result<CommandResult, KvError>),
    ReadIndex(Result<Option<LogId>, KvError>),
    KeepAlive(Result<i64, KvError>),
    LeaseRemaining(Result<i64, KvError>),
    Join(Result<JoinResponse, KvError>),
    Remove(Result<(), KvError>),
    Status(NodeStatus),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub cluster_id: u64,
    pub leader: NodeId,
    pub voters: Vec<NodeId>,
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub addr: String,
    /// leader, follower, candidate or learner.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub revision: i64,
    pub compact_revision: i64,
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
    pub engine: String,
    pub db_size: u64,
    pub keys: usize,
}

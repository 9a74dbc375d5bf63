//! The openraft type configuration: what a log entry carries (a [`store::Command`]),
//! what applying it returns, how nodes are addressed, and what a snapshot is: an open
//! file ([`crate::snapshot_file`]), which openraft reads chunk by chunk to send it and
//! writes chunk by chunk as it arrives, so a snapshot is never whole in memory.

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// How to reach a node: the base URL of its HTTP port (peer RPC and client API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub addr: String,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// Cairn's Raft types.
    pub TypeConfig:
        D = store::Command,
        R = store::CommandResult,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeAddr>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type CommittedLeaderId = openraft::CommittedLeaderId<NodeId>;

/// Encodes a value with the bincode configuration used on disk and on the wire.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    store::codec::encode(v)
}

/// Decodes bytes written by [`encode`].
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, store::StoreError> {
    store::codec::decode(b)
}

//! Errors of the replicated store, as callers of [`crate::Kv`] and [`crate::Node`] see them.

use serde::{Deserialize, Serialize};
use store::StoreError;

use crate::types::NodeId;

/// Why a replicated operation failed. Serializable so that a leader's answer to a
/// forwarded request reaches the caller as the same variant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    /// The state machine rejected the request (compacted revision, unknown lease, …).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No leader could be reached before the deadline; nothing was written.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed after the request may have been proposed: it may or may not
    /// have taken effect.
    #[error("request timed out, outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The deadline passed before anything was proposed.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("request cancelled")]
    Cancelled,
    /// This node is not the leader (internal: the handle forwards or retries).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("wrong cluster token")]
    Unauthorized,
    /// The lock this write was fenced on is no longer held by the caller.
    #[error("lock {key} is no longer held (fencing token {token})")]
    LockLost { key: String, token: i64 },
    /// The local Raft node stopped (shutdown or a fatal storage error).
    #[error("raft node stopped: {0}")]
    Stopped(String),
    /// An alarm was not disarmed: what raised it is still true (`crate::alarms`).
    #[error("alarm not disarmed: {0}")]
    AlarmCause(String),
}

/// A boxed underlying error, kept as the source of a [`NodeError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors starting, initializing or joining a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data dir, the engine or the state machine failed (the source says how).
    #[error("storage: {0}")]
    Storage(#[source] BoxError),
    #[error(
        "data dir {0} already belongs to a cluster; refusing to initialize it again (restart without --init, or use a new --data-dir)"
    )]
    AlreadyInitialized(String),
    #[error("data directory {0} holds no cluster: start it with --init or --join")]
    NotInitialized(String),
    #[error("join failed: {0}")]
    Join(String),
    /// A peer speaks a peer protocol this build does not (see [`crate::rpc::speaks`]).
    #[error("{0}")]
    Incompatible(String),
    /// openraft refused or failed (its error is the source).
    #[error("raft: {0}")]
    Raft(#[source] BoxError),
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl NodeError {
    /// A storage failure caused by `e`.
    pub fn storage(e: impl Into<BoxError>) -> Self {
        NodeError::Storage(e.into())
    }

    /// An openraft failure caused by `e`.
    pub fn raft(e: impl Into<BoxError>) -> Self {
        NodeError::Raft(e.into())
    }
}

impl From<store::EngineError> for NodeError {
    fn from(e: store::EngineError) -> Self {
        NodeError::storage(e)
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::storage(e)
    }
}

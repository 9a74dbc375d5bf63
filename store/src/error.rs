//! Errors of the key-value state machine.

use serde::{Deserialize, Serialize};

use crate::engine::EngineError;

/// Why a request to the store failed. Variants are what callers branch on; those decided
/// while applying a command (unknown lease, duplicate key, …) travel through Raft as
/// [`CommandResult::Error`](crate::CommandResult::Error), so every replica agrees on them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    #[error(
        "required revision {requested} has been compacted (compact revision {compact_revision})"
    )]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("requested lease {0} not found")]
    LeaseNotFound(i64),
    #[error("lease {0} already exists")]
    LeaseExists(i64),
    #[error("lease TTL {ttl}s is below the minimum of {min}s")]
    LeaseTtlTooSmall { ttl: i64, min: i64 },
    /// Above [`MAX_LEASE_TTL`](crate::command::MAX_LEASE_TTL) (etcd's `MaxLeaseTTL`).
    #[error("too large lease TTL: {ttl}s is above the maximum of {max}s")]
    LeaseTtlTooLarge { ttl: i64, max: i64 },
    #[error("duplicate key given in txn request: {0}")]
    DuplicateKey(String),
    #[error("key not found (ignore_value/ignore_lease need an existing key)")]
    KeyNotFound,
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("value of key {key} is not a number for incr")]
    NotANumber { key: String },
    #[error("request is too large: {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("storage error: {0}")]
    Storage(String),
    /// A `NOSPACE` alarm is active (etcd's `ErrNoSpace`): the request may grow the
    /// database and is refused until the alarm is disarmed (see [`crate::alarm`]).
    #[error(
        "database space exceeded: a NOSPACE alarm is active; free space (delete keys, compact), then `cairn store alarm disarm`"
    )]
    NoSpace,
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl StoreError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        StoreError::Storage(format!("corrupt record: {what}"))
    }
}

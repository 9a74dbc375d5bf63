//! The replicated commands: what a Raft log entry carries and what applying it returns.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::kv::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

/// The largest lease TTL granted, in seconds: etcd's `MaxLeaseTTL` (9,000,000,000 s,
/// about 285 years). Larger grants are refused where they enter (the etcd API) and again
/// by the state machine, so no replicated command carries one; every deadline computed
/// from a TTL up to this fits an `Instant` (and the lessor saturates anyway).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A mutating request, applied identically on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// Drop history older than `revision`.
    Compact {
        revision: i64,
    },
    /// Create a lease; `id = 0` lets the state machine choose one.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revoke a lease and delete its keys in one revision.
    LeaseRevoke {
        id: i64,
    },
    /// Leases the leader found expired; each is revoked (unknown ids are skipped).
    LeaseExpire {
        ids: Vec<i64>,
    },
    /// Add `delta` to the decimal counter at `key` (absent = 0) and return the new value.
    Incr {
        key: Vec<u8>,
        delta: u64,
    },
    /// Several independent requests in one Raft entry (group commit). Each is applied as
    /// if it were its own entry, in order, with its own revision and its own result.
    /// Batches do not nest, and decoding refuses a nested one: a peer could otherwise
    /// nest thousands in a few KiB, each level a stack frame and a preallocated vector.
    Batch(#[serde(deserialize_with = "flat_batch")] Vec<Command>),
}

thread_local! {
    /// Set while the commands of a batch are being decoded on this thread.
    static IN_BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Decodes a batch's commands, refusing a batch inside them.
fn flat_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_BATCH.with(|b| b.set(false));
        }
    }
    if IN_BATCH.with(|b| b.replace(true)) {
        return Err(serde::de::Error::custom("batches do not nest"));
    }
    let _reset = Reset;
    Vec::<Command>::deserialize(d)
}

/// The outcome of applying one [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
        revision: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    LeaseExpire {
        revision: i64,
        expired: Vec<i64>,
    },
    Incr {
        value: u64,
        revision: i64,
    },
    /// Nothing to apply (Raft blank or membership entries).
    None {
        revision: i64,
    },
    /// The command was rejected deterministically (e.g. unknown lease); state unchanged.
    Error(StoreError),
    /// One result per command of a [`Command::Batch`].
    Batch(Vec<CommandResult>),
}

impl CommandResult {
    /// The store revision after this command.
    pub fn revision(&self) -> Option<i64> {
        match self {
            CommandResult::Put(r) => Some(r.revision),
            CommandResult::DeleteRange(r) => Some(r.revision),
            CommandResult::Txn(r) => Some(r.revision),
            CommandResult::Compact { revision }
            | CommandResult::LeaseGrant { revision, .. }
            | CommandResult::LeaseRevoke { revision }
            | CommandResult::LeaseExpire { revision, .. }
            | CommandResult::Incr { revision, .. }
            | CommandResult::None { revision } => Some(*revision),
            CommandResult::Error(_) => None,
            CommandResult::Batch(rs) => rs.iter().rev().find_map(CommandResult::revision),
        }
    }
}

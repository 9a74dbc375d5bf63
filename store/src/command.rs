//! The replicated commands: what a Raft log entry carries and what applying it returns.

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmAction, AlarmMember};
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
    /// The leader's lease checkpoints (etcd's `LeaseCheckpoint`): each `(lease id,
    /// remaining TTL in seconds)` is recorded on the lease, so a later leader starts the
    /// lease from what remained rather than from its whole TTL. A remaining TTL at or
    /// above the granted one clears the checkpoint (a renewal). Unknown ids are skipped;
    /// no revision is created (a checkpoint is not a key-value change).
    ///
    /// Added after every older variant, so logs and snapshots written before it decode
    /// unchanged.
    LeaseCheckpoint {
        checkpoints: Vec<(i64, i64)>,
    },

    // ---- alarms (crate::alarm); appended, so older log entries decode unchanged ----
    /// Raise or clear a member's alarm (etcd's `AlarmRequest` through Raft): while a
    /// `NOSPACE` alarm is active every replica refuses what may grow the database.
    Alarm {
        action: AlarmAction,
        member: AlarmMember,
    },
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
    /// A [`Command::LeaseCheckpoint`] was recorded; `revision` is unchanged by it.
    LeaseCheckpoint {
        revision: i64,
    },

    // ---- alarms ----
    /// The alarms active after a [`Command::Alarm`].
    Alarm {
        alarms: Vec<AlarmMember>,
        revision: i64,
    },
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
            | CommandResult::None { revision }
            | CommandResult::LeaseCheckpoint { revision }
            | CommandResult::Alarm { revision, .. } => Some(*revision),
            CommandResult::Error(_) => None,
            CommandResult::Batch(rs) => rs.iter().rev().find_map(CommandResult::revision),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    /// Lease checkpoints came after the other commands: entries written before them (these
    /// are bincode bytes as the older code wrote them) decode to the same commands.
    #[test]
    fn commands_encoded_before_lease_checkpoints_still_decode() {
        // Variant 4 (LeaseGrant), id 5 and ttl 10 as zigzag varints.
        assert_eq!(
            decode::<Command>(&[4, 10, 20]).unwrap(),
            Command::LeaseGrant { id: 5, ttl: 10 }
        );
        // Variant 6 (LeaseExpire) with ids [1, 2].
        assert_eq!(
            decode::<Command>(&[6, 2, 2, 4]).unwrap(),
            Command::LeaseExpire { ids: vec![1, 2] }
        );
        // Variant 8 (Batch) holding one LeaseRevoke (variant 5) of lease 3.
        assert_eq!(
            decode::<Command>(&[8, 1, 5, 6]).unwrap(),
            Command::Batch(vec![Command::LeaseRevoke { id: 3 }])
        );
        let cp = Command::LeaseCheckpoint {
            checkpoints: vec![(1, 7)],
        };
        assert_eq!(encode(&cp), vec![9, 1, 2, 14]);
        assert_eq!(decode::<Command>(&encode(&cp)).unwrap(), cp);
    }
}

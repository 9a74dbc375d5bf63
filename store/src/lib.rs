//! `store`: the local half of Cairn's embedded key-value store.
//!
//! It owns the storage engines ([`engine`]: `mem`, `redb`, `sled`, `rocksdb`) and the MVCC state
//! machine with etcd v3's semantics ([`Mvcc`]): revisions, ranges at past revisions,
//! put/delete/txn, leases, compaction, native sequences and the [`WatchHub`]. It is
//! deterministic and local: it never sees openraft, the network or HTTP. The `raft` crate
//! replicates [`Command`]s and calls [`Mvcc::apply`] with them on every node.

pub mod alarm;
pub mod codec;
pub mod command;
pub mod engine;
pub mod error;
mod history;
pub mod kv;
pub mod mvcc;
pub mod snapshot;
pub mod watch;

pub use alarm::{AlarmAction, AlarmMember, AlarmType};
pub use command::{Command, CommandResult, MAX_LEASE_TTL};
pub use engine::{Cf, Durability, Engine, EngineError, EngineKind, Scan, WriteBatch};
pub use error::StoreError;
pub use kv::*;
pub use mvcc::{Mvcc, StateSnapshot};
pub use watch::{CancelReason, WatchHub, WatchMessage, WatchRequest, WatchStream};

#[cfg(test)]
mod tests;

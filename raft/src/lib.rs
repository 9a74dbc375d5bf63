//! `raft`: replication of the `store` state machine with openraft (the only crate that
//! sees openraft).
//!
//! - [`log_store`] and [`state_machine`]: openraft's storage traits over one engine per node.
//!   Snapshots are files ([`snapshot_file`] is their format), sent and received chunk by
//!   chunk; [`snapshot_intake`] checks every received chunk before openraft writes it.
//! - [`network`]: the peer [`Transport`](network::Transport) (implemented over HTTP by
//!   the binary, which owns every HTTP concern; a simulated network with faults in tests),
//!   openraft's network factory over it, and [`network::answer`], a node's transport-neutral
//!   answer to an encoded peer request.
//! - [`node`]: a replica's lifecycle (initialize, join, remove, status, shutdown) and its
//!   answers to peer requests; [`lessor`] keeps lease deadlines on the leader.
//! - [`kv`]: the [`Kv`] client handle with etcd's API (linearizable reads, forwarding);
//!   [`concurrency`]: sessions and a fenced mutex. [`backup`]: snapshot save and restore.
//! - [`alarms`]: the storage quota and etcd's `NOSPACE` alarm (raise, refuse, disarm).
//! - [`stats`]: a node's counters and duration histograms (plain atomics, no metrics format).

// openraft's storage traits fix `StorageError` (224 bytes) as the error type; boxing it
// at every private helper would only add allocations on the error path.
#![allow(clippy::result_large_err)]

pub mod alarms;
pub mod backup;
pub mod concurrency;
pub mod error;
pub mod kv;
pub mod lessor;
pub mod log_store;
pub mod network;
pub mod node;
pub mod proposer;
pub mod recover;
pub mod rpc;
pub mod snapshot_file;
pub mod snapshot_intake;
pub mod space;
pub mod state_machine;
pub mod stats;
pub mod timing;
pub mod types;

#[cfg(test)]
mod tests;

pub use concurrency::{Fence, Mutex, Session};
pub use error::{KvError, NodeError};
pub use kv::{Ctx, Header, Kv, LeaseTtl, Updated, Write};
pub use node::{Members, Node, NodeConfig};
pub use rpc::{NodeState, NodeStatus};
pub use timing::Timing;
pub use types::NodeId;

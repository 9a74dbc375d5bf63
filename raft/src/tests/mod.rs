//! Crate tests of the replication layer: openraft's storage conformance suite over every
//! engine, and an in-process cluster over the simulated network (elections, partitions,
//! crash/restart, learners, snapshots, leases and their checkpoints across leader changes, the fenced
//! mutex, watches and seeded fault schedules), snapshots sent as files, and (ignored) the
//! memory an install takes.

mod alarms;
mod cluster;
mod harness;
mod learners;
mod lease_checkpoint;
mod lock_preemption;
mod snapshot_memory;
mod snapshot_transfer;
mod storage_suite;

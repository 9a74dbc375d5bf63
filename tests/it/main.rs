//! The one integration-test binary: real `cairn` processes on loopback.

#![allow(clippy::unwrap_used)]

mod support;

mod archive;
mod chaos;
mod cli;
mod cli_embedded;
mod cli_run;
mod config_eval;
mod dist;
mod durability;
mod etcd_api;
mod executor_docker;
mod executor_e2e;
mod failover;
mod ha_ops;
mod leases;
mod lifecycle;
mod maintenance;
mod metrics;
mod nospace;
mod operations;
mod partition;
mod peer_reads;
mod run_references;
mod runs_api;
mod runs_flow;
#[cfg(feature = "s3")]
mod s3;
mod scheduling;
mod security;
mod settings;
mod ui;

//! `cairn`: the CI/CD run service binary and its library.
//!
//! Codemap (dependencies point down; see ARCHITECTURE.md):
//! - [`service`]: the composition root of `cairn serve` (store node, API, scheduler).
//! - [`api`]: HTTP front ends, the only place that knows status codes: the run-service
//!   API (`/api/v1`), the store's etcd v3 JSON API, peers, health.
//! - [`executor`]: the agent that runs tasks, and its drivers.
//! - [`history`]: one view of live (store) and archived (index, segments) runs, and the
//!   task that keeps this node's index in line with the store.
//! - [`scheduler`]: the loop that advances runs and hands tasks to executors, and the
//!   segmenter that moves archived runs into segments.
//! - [`runservice`]: run and task state machines as pure functions.
//! - [`configfile`]: the run config format: parse, validate, expand.
//! - [`datamanager`]: typed collections over the store, and object storage.
//! - [`archive_index`]: each node's local on-disk index of archived runs.
//! - [`store_node`]: starting a store node and serving it until shutdown (the accept loop:
//!   connection cap, header-read timeout, TLS).
//! - [`tls`]: TLS of the HTTP port (certificates from files, reloaded; peer certificates).
//! - [`cli`]: the command line (clap tree, `cairn run`, run and store commands); it talks
//!   to servers only through `cairn-client`.
//! - [`crash_point`]: points where the kill -9 tests make the process abort.
//! - [`log_limit`]: openraft's repeated warnings and errors, rate-limited.
//! - [`metrics`]: the node's Prometheus metrics (event counters and histograms, gauges
//!   read at the scrape), served as `GET /metrics` by `api::metrics`.
//! - [`mode_switch`]: each node's maintenance switch, [`mode_switch::ModeSwitch`] (follows
//!   the store's maintenance key; the scheduler stops while it is on).

pub mod api;
pub mod archive_index;
pub mod cli;
pub mod configfile;
pub mod crash_point;
pub mod datamanager;
pub mod executor;
pub mod history;
pub mod log_limit;
pub mod metrics;
pub mod mode_switch;
pub mod runservice;
pub mod scheduler;
pub mod service;
pub mod store_node;
pub mod tls;

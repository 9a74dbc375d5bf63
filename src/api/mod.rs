//! HTTP front ends; the only place that knows HTTP status codes.
//!
//! - [`etcd`]: the store's client port, etcd v3's JSON API (etcd 3.4 gateway shapes).
//! - [`server`]: the node's HTTP server: the etcd API, the Raft peer endpoint and health.

pub mod etcd;
pub mod server;

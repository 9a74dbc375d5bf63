//! `cairn-client`: the types and HTTP clients of Cairn's public APIs. It depends on no
//! internal crate, so other programs can use it as they are.
//!
//! - [`etcd`]: the store's etcd v3 JSON API (the shapes of etcd 3.4's gRPC gateway) and
//!   [`etcd::EtcdClient`], a small async client for it used by the CLI and the benchmarks.
//! - [`error`]: the stable error body `{code, message, details}` of the run-service API.

pub mod error;
pub mod etcd;

pub use error::ApiError;

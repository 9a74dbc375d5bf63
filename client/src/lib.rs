//! `cairn-client`: the types and HTTP clients of Cairn's public APIs. It depends on no
//! internal crate, so other programs can use it as they are.
//!
//! - [`runconfig`], [`run`], [`executor`]: the run service's objects, as the API shows
//!   them and as the service stores them.
//! - [`api`]: request and response bodies of `/api/v1`; [`http::RunClient`] calls every
//!   endpoint (with failover across a cluster's nodes); [`logs`], [`events`] and
//!   [`run_watch`] are its resumable streams (a step's log, run events, one run as it
//!   goes), [`sse`] parses their server-sent events.
//! - [`ids`]: the exact formats of task, run and executor ids (never paths).
//! - [`error`]: the stable error body `{code, message, details}` of the run-service API,
//!   and [`ClientError`], what a call of [`RunClient`] can fail with.
//! - [`etcd`]: the store's etcd v3 JSON API (the shapes of etcd 3.4's gRPC gateway) and
//!   [`etcd::EtcdClient`], a small async client for it used by the CLI and the benchmarks.
//! - [`tls`]: the CA file and client certificate of `https://` servers.

pub mod api;
pub mod error;
pub mod etcd;
pub mod events;
pub mod executor;
pub mod http;
pub mod ids;
pub mod logs;
mod reopen;
pub mod run;
pub mod run_watch;
pub mod runconfig;
pub mod sse;
pub mod tls;

pub use api::LogStep;
pub use error::{ApiError, ClientError, ErrorCode};
pub use http::RunClient;
pub use tls::ClientTls;

//! HTTP front ends; the only place that knows HTTP status codes.
//!
//! - [`auth`]: credentials and roles (who may call what), the constant-time compare.
//! - [`v1`]: the run-service API router (`/api/v1`), with [`runs`], [`run_watch`],
//!   [`executors`], [`blobs`] and [`cluster`] handlers and [`error`], the mapping of every failure to
//!   `{code, message, details}`.
//! - [`openapi`]: the OpenAPI 3.1 document of `/api/v1`, generated from the wire types and
//!   the handlers, served at `/api/v1/openapi.json`.
//! - [`etcd`]: the store's client port, etcd v3's JSON API (etcd 3.4 gateway shapes).
//! - [`server`]: the node's HTTP server: the etcd API, the Raft peer endpoint and health.
//! - [`peer`]: the Raft peer wire over HTTP, both ends (the route and the transport).
//! - [`streams`]: per-credential and global caps on watches, SSE streams, log follows
//!   and long polls.
//! - [`forward`]: run reads answered by a peer while this node's archive index is behind.
//! - [`metrics`]: `GET /metrics` (metrics or admin token) and the request-counting
//!   middleware of the whole port.
//! - [`ui`]: the web page at `/` and its embedded assets under `/ui/` (no token).

pub mod auth;
pub mod blobs;
pub mod cluster;
pub mod error;
pub mod etcd;
pub mod executors;
pub mod forward;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod peer;
pub mod run_watch;
pub mod runs;
pub mod server;
pub mod streams;
pub mod ui;
pub mod v1;

/// How long a request's datamanager writes may take, conflicts retried included, before
/// it answers with a timeout (a client that disconnects earlier drops the handler, which
/// ends its work at once).
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The context of one request's datamanager work, given once (see
/// [`crate::datamanager::Datamanager::with_ctx`]).
pub(crate) fn request_ctx() -> raft::Ctx {
    raft::Ctx::timeout(REQUEST_DEADLINE)
}

#[cfg(test)]
mod tests;

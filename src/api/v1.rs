//! The run-service API router (`/api/v1`): shared state, authentication and roles
//! (`super::auth`), the maintenance gate, body limits.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::http::Method;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use cairn_client::ErrorCode;
use raft::Node;

use super::auth::{self, Authenticator};
use super::error::{Failure, api_error_body, json_errors};
use super::{blobs, cluster, executors, maintenance, run_watch, runs};
use crate::datamanager::Datamanager;
use crate::datamanager::blobs::Blobs;
use crate::datamanager::caches::CacheStore;
use crate::datamanager::logs::LogStore;

/// Where the router is mounted.
pub const PREFIX: &str = "/api/v1";

/// Limit of JSON request bodies.
pub const MAX_JSON_BYTES: usize = 2 << 20;
/// Limit of uploaded blobs (log chunks, archives, caches, sources).
pub const MAX_BLOB_BYTES: usize = 4 << 30;

/// Everything a handler may use.
#[derive(Clone)]
pub struct ApiState {
    pub node: Node,
    pub dm: Datamanager,
    /// Live and archived runs as one, for every read of runs.
    pub history: crate::history::History,
    /// Asks peers for the runs this node cannot read while its index is behind.
    pub peer_reads: super::forward::PeerReads,
    pub blobs: Blobs,
    pub logs: LogStore,
    pub caches: CacheStore,
    /// Whether this node's scheduler is the active one.
    pub scheduler_active: Arc<AtomicBool>,
    /// How long an executor's registration lives without a heartbeat, in seconds.
    pub executor_ttl_secs: i64,
    /// This node's maintenance mode.
    pub maintenance: tokio::sync::watch::Receiver<bool>,
    /// Pull-request refs of run requests that bring no patterns of their own.
    pub pull_request_refs: crate::runservice::reference::PullRequestRefs,
    /// Caps on SSE streams, log follows and long polls.
    pub streams: super::streams::StreamCaps,
    /// The HMAC key of exports (derived from the admin secret).
    pub export_key: Arc<[u8]>,
    /// The node's metrics (log bytes appended are counted here).
    pub metrics: crate::metrics::Metrics,
}

/// Whether `method path` (relative to `/api/v1`) answers in maintenance mode: the
/// maintenance endpoint, export, import and executor heartbeats, matched as exact routes
/// (not by suffix: `POST /caches/import` is a cache write, refused); pure.
pub fn allowed_in_maintenance(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["maintenance"] => true,
        ["export"] => *method == Method::GET,
        ["import"] => *method == Method::POST,
        // Executor heartbeats go on, so that registrations (and the tasks they hold)
        // outlive a long maintenance; executors get no tasks meanwhile.
        ["executors", id] => *method == Method::POST && !id.is_empty(),
        _ => false,
    }
}

/// In maintenance, only the routes of [`allowed_in_maintenance`] answer.
async fn gate(
    State(mode): State<tokio::sync::watch::Receiver<bool>>,
    req: Request,
    next: Next,
) -> Response {
    if *mode.borrow() && !allowed_in_maintenance(req.method(), req.uri().path()) {
        return Failure::new(
            ErrorCode::Unavailable,
            "the service is in maintenance mode: only /maintenance, /export and /import answer",
        )
        .into_response();
    }
    next.run(req).await
}

/// Identifies the bearer (401 for no one), checks its role allows the route (403), and
/// hands the [`Caller`] to the handlers as an extension.
async fn authenticate(State(auth): State<Authenticator>, mut req: Request, next: Next) -> Response {
    let caller = match auth::bearer(req.headers()) {
        None => None,
        Some(token) => match auth.identify(token).await {
            Ok(c) => c,
            Err(e) => return Failure::from(e).into_response(),
        },
    };
    let Some(caller) = caller else {
        return Failure::new(ErrorCode::Unauthorized, "missing or wrong bearer token")
            .into_response();
    };
    let path = req.uri().path().to_string();
    if !auth::permits(&caller, &auth::need(req.method(), &path)) {
        return auth::forbidden(&caller, req.method(), &path).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// `/api/v1/*`, authenticated by `auth` (see [`super::auth`] for the roles).
pub fn router(state: ApiState, auth: Authenticator) -> Router {
    let json = Router::new()
        .route("/runs", post(runs::create).get(runs::list))
        .route("/runs/events", get(runs::events))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/watch", get(run_watch::watch))
        .route("/runs/{id}/restart", post(runs::restart))
        .route("/runs/{id}/actions", put(runs::action))
        .route("/runs/{id}/tasks/{task_id}/actions", put(runs::task_action))
        .route("/runs/{id}/tasks/{task_id}/logs", get(blobs::logs))
        .route("/executors", get(executors::list))
        .route(
            "/executors/{id}",
            post(executors::heartbeat).delete(executors::delete),
        )
        .route(
            "/executors/{id}/credential",
            delete(executors::revoke_credential),
        )
        .route("/executors/{id}/tasks", get(executors::tasks))
        .route("/executors/{id}/tasks/{task_id}", get(executors::task))
        .route(
            "/executors/{id}/tasks/{task_id}/status",
            put(executors::status),
        )
        .route("/cluster", get(cluster::cluster))
        .route(
            "/maintenance",
            get(maintenance::status)
                .put(maintenance::enable)
                .delete(maintenance::disable),
        )
        .route("/export", get(maintenance::export))
        .route("/tokens", post(auth::create_token).get(auth::list_tokens))
        .route("/tokens/{id}", delete(auth::revoke_token))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES));
    let uploads = Router::new()
        .route(
            "/executors/{id}/tasks/{task_id}/logs",
            post(blobs::append_log),
        )
        .route(
            "/executors/{id}/tasks/{task_id}/archives/{step}",
            put(blobs::upload_archive),
        )
        .route("/archives/{task_id}/{step}", get(blobs::download_archive))
        .route(
            "/caches/{key}",
            get(blobs::get_cache)
                .head(blobs::head_cache)
                .post(blobs::put_cache),
        )
        .route("/sources", post(blobs::upload_source))
        .route("/import", post(maintenance::import))
        .route("/sources/{object}", get(blobs::download_source))
        .layer(DefaultBodyLimit::max(MAX_BLOB_BYTES));
    let mode = state.maintenance.clone();
    let api = json
        .merge(uploads)
        .fallback(|| async { Failure::not_found("no such endpoint") })
        .with_state(state)
        .layer(middleware::from_fn_with_state(mode, gate))
        .layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::map_response(|r| json_errors(r, api_error_body)));
    Router::new().nest(PREFIX, api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_lets_through_exact_routes_only() {
        let (g, p) = (Method::GET, Method::POST);
        assert!(allowed_in_maintenance(&g, "/api/v1/maintenance"));
        assert!(allowed_in_maintenance(&Method::DELETE, "/maintenance"));
        assert!(allowed_in_maintenance(&g, "/export"));
        assert!(allowed_in_maintenance(&p, "/import"));
        assert!(allowed_in_maintenance(&p, "/executors/e1"));
        assert!(!allowed_in_maintenance(&p, "/caches/import"));
        assert!(!allowed_in_maintenance(&g, "/caches/export"));
        assert!(!allowed_in_maintenance(&g, "/runs/maintenance"));
        assert!(!allowed_in_maintenance(&p, "/export"));
        assert!(!allowed_in_maintenance(&Method::DELETE, "/executors/e1"));
        assert!(!allowed_in_maintenance(&g, "/executors/e1/tasks"));
        assert!(!allowed_in_maintenance(&p, "/runs"));
    }
}

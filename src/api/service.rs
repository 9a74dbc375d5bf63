//! The run-service API router (`/api/v1`): shared state, bearer-token auth, body limits.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use cairn_client::ErrorCode;
use raft::Node;

use super::error::{Failure, json_errors};
use super::{blobs, executors, maintenance, runs};
use crate::datamanager::Datamanager;
use crate::datamanager::blobs::Blobs;
use crate::datamanager::caches::CacheStore;
use crate::datamanager::logs::LogStore;

/// Limit of JSON request bodies.
pub const MAX_JSON_BYTES: usize = 2 << 20;
/// Limit of uploaded blobs (log chunks, archives, caches, sources).
pub const MAX_BLOB_BYTES: usize = 4 << 30;

/// Everything a handler may use.
#[derive(Clone)]
pub struct ApiState {
    pub node: Node,
    pub dm: Datamanager,
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
}

/// In maintenance, only the maintenance, export and import endpoints (and executor
/// heartbeats) answer.
async fn gate(
    State(mode): State<tokio::sync::watch::Receiver<bool>>,
    req: Request,
    next: Next,
) -> Response {
    if *mode.borrow() {
        let path = req.uri().path();
        // Executor heartbeats go on, so that registrations (and the tasks they hold)
        // outlive a long maintenance; executors get no tasks meanwhile.
        let heartbeat = req.method() == axum::http::Method::POST
            && path
                .trim_start_matches("/api/v1")
                .strip_prefix("/executors/")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        let allowed = heartbeat
            || ["/maintenance", "/export", "/import"]
                .iter()
                .any(|p| path.ends_with(p));
        if !allowed {
            return Failure::new(
                ErrorCode::Unavailable,
                "the service is in maintenance mode: only /maintenance, /export and /import answer",
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[derive(Clone)]
struct Token(Arc<str>);

async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.0.as_bytes()));
    if !ok {
        return Failure::new(ErrorCode::Unauthorized, "missing or wrong bearer token")
            .into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `/api/v1/*`, authenticated with `token`.
pub fn router(state: ApiState, token: &str) -> Router {
    let json = Router::new()
        .route("/runs", post(runs::create).get(runs::list))
        .route("/runs/events", get(runs::events))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/restart", post(runs::restart))
        .route("/runs/{id}/actions", put(runs::action))
        .route("/runs/{id}/tasks/{task_id}/actions", put(runs::task_action))
        .route("/runs/{id}/tasks/{task_id}/logs", get(blobs::logs))
        .route("/executors", get(executors::list))
        .route(
            "/executors/{id}",
            post(executors::heartbeat).delete(executors::delete),
        )
        .route("/executors/{id}/tasks", get(executors::tasks))
        .route("/executors/{id}/tasks/{task_id}", get(executors::task))
        .route(
            "/executors/{id}/tasks/{task_id}/status",
            put(executors::status),
        )
        .route("/cluster", get(executors::cluster))
        .route(
            "/maintenance",
            get(maintenance::status)
                .put(maintenance::enable)
                .delete(maintenance::disable),
        )
        .route("/export", get(maintenance::export))
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
        .layer(middleware::from_fn_with_state(
            Token(token.into()),
            require_token,
        ))
        .layer(middleware::map_response(json_errors));
    Router::new().nest("/api/v1", api)
}

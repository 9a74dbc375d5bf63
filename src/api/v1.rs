//! The run-service API router (`/api/v1`): its routes (listed: [`routes`]), shared state,
//! authentication and roles (`super::auth`), the maintenance gate, body limits.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::http::Method;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
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

/// One route of `/api/v1`: its method and its path relative to [`PREFIX`], in axum's
/// `{param}` syntax (a `GET` route answers `HEAD` too).
pub type Route = (Method, &'static str);

/// A router that lists the routes it is given, so that the list is the router's own: the
/// OpenAPI document is checked against it (`super::openapi`), and a test sends each of
/// them to the real router. Every `/api/v1` route is added through [`Listed::at`].
struct Listed {
    router: Router<ApiState>,
    routes: Vec<Route>,
}

impl Listed {
    fn new() -> Listed {
        Listed {
            router: Router::new(),
            routes: Vec::new(),
        }
    }

    /// Routes `method path` to `handler`.
    fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Listed
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .expect("every method of the table is one axum routes");
        self.router = self.router.route(path, on(filter, handler));
        self.routes.push((method, path));
        self
    }

    /// The routes of `self` and `other`, each behind its own layers.
    fn merge(mut self, other: Listed) -> Listed {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }
}

/// The routes of `/api/v1` (relative to [`PREFIX`]) and their handlers, behind their body
/// limits: JSON bodies up to [`MAX_JSON_BYTES`], uploads up to [`MAX_BLOB_BYTES`].
fn listed() -> Listed {
    use Method as M;
    let mut json = Listed::new()
        .at(M::POST, "/runs", runs::create)
        .at(M::GET, "/runs", runs::list)
        .at(M::GET, "/runs/events", runs::events)
        .at(M::GET, "/runs/{id}", runs::get)
        .at(M::GET, "/runs/{id}/watch", run_watch::watch)
        .at(M::POST, "/runs/{id}/restart", runs::restart)
        .at(M::PUT, "/runs/{id}/actions", runs::action)
        .at(
            M::PUT,
            "/runs/{id}/tasks/{task_id}/actions",
            runs::task_action,
        )
        .at(M::GET, "/runs/{id}/tasks/{task_id}/logs", blobs::logs)
        .at(M::GET, "/executors", executors::list)
        .at(M::POST, "/executors/{id}", executors::heartbeat)
        .at(M::DELETE, "/executors/{id}", executors::delete)
        .at(
            M::DELETE,
            "/executors/{id}/credential",
            executors::revoke_credential,
        )
        .at(M::GET, "/executors/{id}/tasks", executors::tasks)
        .at(M::GET, "/executors/{id}/tasks/{task_id}", executors::task)
        .at(
            M::PUT,
            "/executors/{id}/tasks/{task_id}/status",
            executors::status,
        )
        .at(M::GET, "/cluster", cluster::cluster)
        .at(M::GET, "/maintenance", maintenance::status)
        .at(M::PUT, "/maintenance", maintenance::enable)
        .at(M::DELETE, "/maintenance", maintenance::disable)
        .at(M::GET, "/export", maintenance::export)
        .at(M::POST, "/tokens", auth::create_token)
        .at(M::GET, "/tokens", auth::list_tokens)
        .at(M::DELETE, "/tokens/{id}", auth::revoke_token)
        .at(M::GET, "/whoami", auth::whoami);
    json.router = json.router.layer(DefaultBodyLimit::max(MAX_JSON_BYTES));
    let mut uploads = Listed::new()
        .at(
            M::POST,
            "/executors/{id}/tasks/{task_id}/logs",
            blobs::append_log,
        )
        .at(
            M::PUT,
            "/executors/{id}/tasks/{task_id}/archives/{step}",
            blobs::upload_archive,
        )
        .at(
            M::GET,
            "/archives/{task_id}/{step}",
            blobs::download_archive,
        )
        .at(M::GET, "/caches/{key}", blobs::get_cache)
        .at(M::HEAD, "/caches/{key}", blobs::head_cache)
        .at(M::POST, "/caches/{key}", blobs::put_cache)
        .at(M::POST, "/sources", blobs::upload_source)
        .at(M::POST, "/import", maintenance::import)
        .at(M::GET, "/sources/{object}", blobs::download_source);
    uploads.router = uploads.router.layer(DefaultBodyLimit::max(MAX_BLOB_BYTES));
    json.merge(uploads)
}

/// Every route [`router`] serves, relative to [`PREFIX`]: those of the authenticated API
/// and the public OpenAPI document ([`super::openapi::OPENAPI_PATH`]).
pub fn routes() -> Vec<Route> {
    let mut routes = listed().routes;
    routes.push((Method::GET, super::openapi::OPENAPI_PATH));
    routes
}

/// `/api/v1/*`, authenticated by `auth` (see [`super::auth`] for the roles), and the
/// OpenAPI document `/api/v1/openapi.json`, which needs no token.
pub fn router(state: ApiState, auth: Authenticator) -> Router {
    let mode = state.maintenance.clone();
    let api = listed()
        .router
        .fallback(|| async { Failure::not_found("no such endpoint") })
        .with_state(state)
        .layer(middleware::from_fn_with_state(mode, gate))
        .layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::map_response(|r| json_errors(r, api_error_body)));
    let document = Router::new()
        .route(
            &format!("{PREFIX}{}", super::openapi::OPENAPI_PATH),
            get(super::openapi::serve),
        )
        .layer(middleware::map_response(|r| json_errors(r, api_error_body)));
    document.nest(PREFIX, api)
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

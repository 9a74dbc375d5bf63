//! `GET /metrics` on the node's port, and the middleware that counts every request of
//! the port ([`crate::metrics::HttpMetrics`]).
//!
//! `/metrics` takes a bearer credential like `/api/v1`: a token of the `metrics` role
//! (`cairn token create --role metrics`), which opens nothing else, or an admin token.
//! No token, or an unknown one: 401; any other credential: 403.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_client::ErrorCode;
use raft::Node;

use super::auth::{self, Authenticator, Need};
use super::error::{Failure, api_error_body, json_errors};
use crate::datamanager::Datamanager;
use crate::metrics::{HttpMetrics, Metrics, Scrape};

/// Where the metrics are served.
pub const PATH: &str = "/metrics";

#[derive(Clone)]
struct Scraper {
    node: Node,
    dm: Datamanager,
    metrics: Metrics,
}

/// The `/metrics` route, behind `auth`.
pub fn router(node: Node, dm: Datamanager, metrics: Metrics, auth: Authenticator) -> Router {
    Router::new()
        .route(PATH, get(scrape))
        .with_state(Scraper { node, dm, metrics })
        .layer(middleware::from_fn_with_state(auth, authorize))
        .layer(middleware::map_response(|r| json_errors(r, api_error_body)))
}

async fn authorize(State(auth): State<Authenticator>, req: Request, next: Next) -> Response {
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
    if !auth::permits(&caller, &Need::Metrics) {
        return auth::forbidden(&caller, req.method(), PATH).into_response();
    }
    next.run(req).await
}

async fn scrape(State(s): State<Scraper>) -> Response {
    let gathered = Scrape::gather(&s.node, &s.dm).await;
    let body = s.metrics.encode(gathered);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// Counts a request of the port by method, matched route template and status, with its
/// latency to the response head (a streamed body's duration is not included).
pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let resp = next.run(req).await;
    m.observe(
        method.as_str(),
        route.as_deref(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// `app` with every request counted into `m`.
pub fn tracked(app: Router, m: HttpMetrics) -> Router {
    app.layer(middleware::from_fn_with_state(m, track))
}

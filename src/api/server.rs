//! The node's HTTP server: one port for clients (etcd JSON API, bearer token unless
//! turned off; on `cairn serve` the admin token) and peers (`/raft/rpc`, the peer
//! secret, which is never a client token), plus `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use raft::Node;

use super::etcd::{self, EtcdError};

/// Limit of a client request body (etcd's default `--max-request-bytes`, plus framing).
pub const MAX_REQUEST_BYTES: usize = 2 << 20;

#[derive(Clone)]
struct Auth {
    token: Option<Arc<str>>,
}

async fn require_token(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    if auth.token.is_none()
        && let Err(why) = loopback_only(req.headers())
    {
        return EtcdError::new(StatusCode::FORBIDDEN, 7, why).into_response();
    }
    if let Some(token) = &auth.token {
        // Constant time (security.md L1); on `cairn serve` only the admin token passes.
        let ok = super::auth::bearer(req.headers())
            .is_some_and(|t| super::auth::same_secret(t.as_bytes(), token.as_bytes()));
        if !ok {
            return EtcdError::unauthenticated().into_response();
        }
    }
    next.run(req).await
}

/// With client auth off (loopback only), a web page in a local browser must not reach
/// the API (security.md L5): a request must name a loopback `Host` (a DNS-rebound name
/// is not one) and carry no `Origin` other than `http://<that host>` (a cross-origin
/// "simple request" from a browser always carries one). curl and the CLI send neither.
fn loopback_only(headers: &axum::http::HeaderMap) -> Result<(), &'static str> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err("etcdserver: without client auth, only loopback Host names are served");
    }
    match headers.get(header::ORIGIN) {
        None => Ok(()),
        Some(o) if o.as_bytes() == format!("http://{host}").as_bytes() => Ok(()),
        Some(_) => Err("etcdserver: cross-origin requests are refused without client auth"),
    }
}

/// Rewrites the plain-text errors axum itself produces (body too large, wrong method)
/// into etcd's JSON error body, so every client error has the same shape.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 3,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::NOT_FOUND => 5,
        s if s.is_server_error() => 13,
        _ => 3,
    };
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("etcdserver: request is too large (limit {MAX_REQUEST_BYTES} bytes)")
    } else {
        format!("etcdserver: {reason}")
    };
    EtcdError::new(status, code, message).into_response()
}

/// The whole router of a store node. `client_token = None` turns client auth off.
pub fn router(
    node: Node,
    cluster_token: &str,
    client_token: Option<String>,
    streams: super::streams::StreamCaps,
) -> Router {
    let auth = Auth {
        token: client_token.map(Into::into),
    };
    let client = etcd::router(node.clone(), streams)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .layer(middleware::map_response(json_errors));
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(node.clone());
    super::peer::router(node.handler(), cluster_token)
        .merge(client)
        .merge(health)
        .fallback(|| async {
            EtcdError::new(StatusCode::NOT_FOUND, 5, "no such endpoint").into_response()
        })
}

async fn readyz(State(node): State<Node>) -> Response {
    let st = node.status();
    if st.leader.is_some() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader").into_response()
    }
}

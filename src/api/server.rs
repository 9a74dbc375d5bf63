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

use super::error::json_errors;
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
        // Constant time (security review L1); on `cairn serve` only the admin token passes.
        let ok = super::auth::bearer(req.headers())
            .is_some_and(|t| super::auth::same_secret(t.as_bytes(), token.as_bytes()));
        if !ok {
            return EtcdError::unauthenticated().into_response();
        }
    }
    next.run(req).await
}

/// With client auth off (loopback only), a web page in a local browser must not reach
/// the API (security review L5): a request must name a loopback `Host` (a DNS-rebound name
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

/// The etcd shape of an error axum produced (body too large, wrong method; see
/// [`json_errors`]): etcd's JSON error body with the gRPC code of the status.
fn etcd_error_body(status: StatusCode, _text: &str) -> Response {
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

/// The whole router of a store node. `client_token = None` turns client auth off; the
/// peer route answers peers of `peer_protocol` ([`raft::rpc::PEER_PROTOCOL`] but in tests).
pub fn router(
    node: Node,
    cluster_token: &str,
    client_token: Option<String>,
    streams: super::streams::StreamCaps,
    peer_protocol: u32,
) -> Router {
    let client = client_port(etcd::router(node.clone(), streams), client_token);
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(node.clone());
    super::peer::router_speaking(node.handler(), cluster_token, peer_protocol)
        .merge(client)
        .merge(health)
        .fallback(|| async {
            EtcdError::new(StatusCode::NOT_FOUND, 5, "no such endpoint").into_response()
        })
}

/// The client routes behind the etcd port's body limit, token check and error shape.
fn client_port(routes: Router, client_token: Option<String>) -> Router {
    let auth = Auth {
        token: client_token.map(Into::into),
    };
    routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .layer(middleware::map_response(|r| {
            json_errors(r, etcd_error_body)
        }))
}

async fn readyz(State(node): State<Node>) -> Response {
    let st = node.status();
    if st.leader.is_some() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader").into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;

    use super::*;

    async fn call(port: &Router, authorization: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut req =
            axum::http::Request::post("/v3/kv/range").header(header::HOST, "127.0.0.1:2379");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req.body(Body::from("{}")).expect("a valid request");
        let svc = hyper_util::service::TowerToHyperService::new(port.clone());
        let resp = hyper::service::Service::call(&svc, req)
            .await
            .expect("the router answers");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    #[tokio::test]
    async fn the_etcd_port_refuses_a_wrong_token() {
        let routes = Router::new().route(
            "/v3/kv/range",
            post(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        );
        let port = client_port(routes, Some("the-admin-token".into()));
        for wrong in [
            None,
            Some("Bearer the-admin-tokeN"),
            Some("Bearer the-admin-token2"),
            Some("Bearer the-admin"),
            Some("Bearer "),
            Some("the-admin-token"),
            Some("Basic the-admin-token"),
        ] {
            let (status, body) = call(&port, wrong).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
            assert_eq!(body["code"], 16, "{wrong:?}: {body}");
            assert_eq!(
                body["message"], "etcdserver: invalid auth token",
                "{wrong:?}"
            );
        }
        let (status, body) = call(&port, Some("Bearer the-admin-token")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["ok"], true);
    }
}

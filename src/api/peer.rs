//! The Raft peer wire over HTTP, both ends: a peer request is a `POST /raft/rpc` with a
//! bincode body and the peer secret as a bearer token. [`router`] serves it (the node
//! answers through [`raft::network::answer`], which knows no HTTP; this file maps its
//! errors to statuses); [`HttpTransport`] sends it, with one pooled reqwest client per
//! node that keeps connections alive (no per-call handshake, `TCP_NODELAY` on) and, over
//! `https://`, trusts the cluster CA and presents the node's certificate (mutual TLS), as
//! the node's composition root sets it up.
//!
//! Every request carries the sender's peer protocol version in [`PROTOCOL_HEADER`]; a node
//! answers only versions it speaks ([`raft::rpc::speaks`]) and refuses the others with a
//! 409 and the reason, before reading the body. The sender turns that into
//! [`TransportError::Incompatible`]: a join fails with the message, and a node whose
//! peers all refuse it stops at start (`store_node.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::FutureExt;
use futures::future::BoxFuture;
use raft::network::{PeerError, PeerHandler, Transport, TransportError};
use raft::rpc::{PeerRequest, PeerResponse};
use raft::types::{NodeAddr, decode, encode};

use super::auth;

/// Path of the peer endpoint on every node's HTTP port.
pub const RPC_PATH: &str = "/raft/rpc";
/// The header carrying the sender's peer protocol version ([`raft::rpc::PEER_PROTOCOL`]).
pub const PROTOCOL_HEADER: &str = "cairn-peer-protocol";
/// Largest peer request accepted (snapshot chunks are 3 MiB by default).
pub const MAX_RPC_BODY: usize = 64 << 20;

/// The sending end: delivers peer requests to other nodes' [`RPC_PATH`].
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    secret: Arc<str>,
    protocol: u32,
}

impl HttpTransport {
    pub fn new(secret: &str) -> Self {
        let client = Self::client_builder()
            .build()
            .expect("a reqwest client with static settings builds");
        Self::with_client(secret, client)
    }

    /// The pooled client's settings, for a caller to add TLS roots and the node's client
    /// certificate to (then [`HttpTransport::with_client`]). Idle connections are dropped
    /// before a server's default idle timeout (10 s) would close them under a request.
    pub fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(2))
    }

    /// A transport over `client` (built from [`HttpTransport::client_builder`]).
    pub fn with_client(secret: &str, client: reqwest::Client) -> Self {
        Self {
            client,
            secret: secret.into(),
            protocol: raft::rpc::PEER_PROTOCOL,
        }
    }

    /// The same transport announcing peer protocol `version` instead of this build's
    /// (tests of version skew).
    pub fn speaking(mut self, version: u32) -> Self {
        self.protocol = version;
        self
    }
}

impl Transport for HttpTransport {
    fn send(
        &self,
        target: &NodeAddr,
        req: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
        let url = format!("{}{}", target.addr.trim_end_matches('/'), RPC_PATH);
        let body = encode(&req);
        let call = self
            .client
            .post(url)
            .bearer_auth(&*self.secret)
            .header(PROTOCOL_HEADER, self.protocol)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .timeout(timeout);
        async move {
            let resp = call.send().await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Unreachable(e.to_string())
                } else {
                    TransportError::Timeout(e.to_string())
                }
            })?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::UNAUTHORIZED => return Err(TransportError::Unauthorized),
                StatusCode::CONFLICT => {
                    let why = resp.text().await.unwrap_or_default();
                    return Err(TransportError::Incompatible(why));
                }
                s => return Err(TransportError::Protocol(format!("HTTP {s}"))),
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| TransportError::Timeout(e.to_string()))?;
            decode(&bytes).map_err(|e| TransportError::Protocol(e.to_string()))
        }
        .boxed()
    }
}

#[derive(Clone)]
struct PeerState {
    handler: Arc<dyn PeerHandler>,
    secret: Arc<str>,
    protocol: u32,
}

/// The receiving end: the route of the peer endpoint, to merge into the node's HTTP
/// server. Only `secret` (the peer secret) opens it.
pub fn router(handler: Arc<dyn PeerHandler>, secret: &str) -> Router {
    router_speaking(handler, secret, raft::rpc::PEER_PROTOCOL)
}

/// [`router`] for a node that speaks only peer protocol `version` (tests of version
/// skew; [`raft::rpc::speaks`] decides for a real build).
pub fn router_speaking(handler: Arc<dyn PeerHandler>, secret: &str, version: u32) -> Router {
    Router::new()
        .route(RPC_PATH, post(rpc))
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .with_state(PeerState {
            handler,
            secret: secret.into(),
            protocol: version,
        })
}

/// The peer protocol version a request announces (0: none, or not a number).
fn announced_protocol(headers: &axum::http::HeaderMap) -> u32 {
    headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether a node speaking `ours` answers a peer announcing `theirs`: this build's range
/// when `ours` is this build's version, else exactly `ours`.
fn answers(ours: u32, theirs: u32) -> bool {
    if ours == raft::rpc::PEER_PROTOCOL {
        raft::rpc::speaks(theirs)
    } else {
        theirs == ours
    }
}

/// The peer endpoint. The secret is checked (with [`auth::same_secret`]) before a byte of
/// the body is read, so an unauthenticated request is answered at once and its body
/// never buffered; the body is then read up to [`MAX_RPC_BODY`] and decoded with
/// bincode's size limit (see [`store::codec::decode`]): a short body with a huge length
/// prefix is a 400, never an allocation (security review H2). A request the node refuses (a
/// sender that is not a member, an absurd term: [`raft::rpc::admit`]) is a 403.
async fn rpc(State(st): State<PeerState>, req: Request) -> Response {
    let ok = auth::bearer(req.headers())
        .is_some_and(|t| auth::same_secret(t.as_bytes(), st.secret.as_bytes()));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "wrong cluster token").into_response();
    }
    let theirs = announced_protocol(req.headers());
    if !answers(st.protocol, theirs) {
        let why = raft::rpc::incompatible(theirs, st.protocol);
        tracing::error!(peer_protocol = theirs, "refused a peer request: {why}");
        return (StatusCode::CONFLICT, why).into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_RPC_BODY as u64) {
        return too_large();
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_RPC_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unreadable peer request body (at most {MAX_RPC_BODY} bytes): {e}"),
            )
                .into_response();
        }
    };
    match raft::network::answer(&*st.handler, &body).await {
        Ok(resp) => ([(header::CONTENT_TYPE, "application/octet-stream")], resp).into_response(),
        Err(e) => (status_of(&e), e.to_string()).into_response(),
    }
}

/// The status of a peer request the node did not answer.
fn status_of(e: &PeerError) -> StatusCode {
    match e {
        PeerError::BadRequest(_) => StatusCode::BAD_REQUEST,
        PeerError::Refused(_) => StatusCode::FORBIDDEN,
    }
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("peer request body over {MAX_RPC_BODY} bytes"),
    )
        .into_response()
}

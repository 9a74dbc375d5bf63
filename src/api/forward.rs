//! Run reads answered by a peer while this node's index of archived runs is behind (issue
//! 13: a node that joins, or rebuilds its index, answers archived listings through a
//! peer whose index is complete, never wrongly empty, and without making every read wait
//! for [`crate::history::INDEX_WAIT`] first).
//!
//! A plain run read (`GET /runs`, `GET /runs/{id}`, a step log read without `follow`)
//! takes a [`PeerRead`]. The handler reads through [`PeerRead::history`], whose
//! [`ReadOrigin`] says whether the read waits for a lagging index (`history/lag.rs`: a
//! node rebuilding its index, or far behind, does not wait); a read that still fails
//! with `HistoryError::IndexBehind` goes to [`PeerRead::or_forward`], which sends the
//! same request to the other members in turn (voters, then learners; never this node):
//! method GET, the same path and query, the caller's own `Authorization` (the peer
//! authenticates and authorizes the caller again; this node adds no credential of its
//! own) and [`FORWARDED_HEADER`] naming this node. The first answer that is not a 503 or
//! a failure to connect is relayed: status, `Content-Type` (and the log-complete header),
//! body. When no peer answers, the node gives its own 503.
//!
//! A forwarded read is answered at once by the peer (a 503 when its own index is behind
//! too) and never forwarded again, so a request makes at most one hop and no loop.
//! Streams (run watches, the run-event stream, log follows) are not forwarded: they keep
//! the 503, which the client's failover handles.
//!
//! Bounds: [`FORWARD_TIMEOUT`] for all the peers asked, together; at most
//! [`MAX_RELAYED_BYTES`] of an answer held (a larger one is a 502). The client
//! ([`PeerReads`]) is built from the node's peer client
//! (`store_node::ServeNet::peer_client_builder`): over `https://` it trusts the cluster
//! CA and presents the node's certificate, which opens nothing on `/api/v1` (only the
//! Raft peer route).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_client::api::LOG_COMPLETE_HEADER;
use cairn_client::{ApiError, ErrorCode};
use raft::types::NodeId;
use tokio::time::Instant;

use super::error::ApiResult;
use super::v1::{ApiState, PREFIX};
use crate::history::{History, HistoryError, ReadOrigin};

/// The header of a forwarded read; its value is the id of the node that forwarded it.
pub const FORWARDED_HEADER: &str = "x-cairn-forwarded";
/// How long a node spends asking its peers for one read, all of them together.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer a node relays (listings and runs are far smaller; a log read may
/// not be: a larger answer is a 502, and the client may ask another node directly).
pub const MAX_RELAYED_BYTES: usize = 16 << 20;

/// Asks peers for the answer to a read (cheap to clone).
#[derive(Clone)]
pub struct PeerReads {
    client: reqwest::Client,
}

/// Why no peer's answer is relayed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Every peer answered 503, could not be reached, or ran out of time.
    #[error("no peer answered in this node's place ({})", .0.join("; "))]
    NoAnswer(Vec<String>),
    /// A peer's answer is larger than [`MAX_RELAYED_BYTES`].
    #[error(
        "the answer of peer {peer} is over {MAX_RELAYED_BYTES} bytes, more than this node relays; ask another node"
    )]
    TooLarge { peer: String },
}

/// A peer's answer, to relay.
#[derive(Debug)]
pub struct Relayed {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl IntoResponse for Relayed {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body).into_response();
        resp.headers_mut().extend(self.headers);
        resp
    }
}

/// A request to ask peers for.
struct Outgoing {
    /// Path (from `/api/v1`) and query, as the caller sent them.
    path_and_query: String,
    authorization: Option<HeaderValue>,
    from: NodeId,
}

impl PeerReads {
    /// A client from `builder` (the node's peer client builder), bounded by
    /// [`FORWARD_TIMEOUT`].
    pub fn new(builder: reqwest::ClientBuilder) -> Result<PeerReads, reqwest::Error> {
        Ok(PeerReads {
            client: builder.timeout(FORWARD_TIMEOUT).build()?,
        })
    }

    /// The first answer of `peers` (base URLs, in order) that is not a 503 or a failure
    /// to connect, within [`FORWARD_TIMEOUT`] for all of them.
    async fn forward(&self, peers: &[String], req: &Outgoing) -> Result<Relayed, ForwardError> {
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        let mut missed = Vec::new();
        for peer in peers {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                missed.push(format!("{peer}: not asked, out of time"));
                continue;
            }
            match self.ask(peer, req, left).await {
                Ok(relayed) => return Ok(relayed),
                Err(Miss::TooLarge) => return Err(ForwardError::TooLarge { peer: peer.clone() }),
                Err(Miss::Next(why)) => missed.push(format!("{peer}: {why}")),
            }
        }
        Err(ForwardError::NoAnswer(missed))
    }

    async fn ask(&self, peer: &str, req: &Outgoing, timeout: Duration) -> Result<Relayed, Miss> {
        let url = format!(
            "{}{PREFIX}{}",
            peer.trim_end_matches('/'),
            req.path_and_query
        );
        let mut call = self
            .client
            .get(url)
            .header(FORWARDED_HEADER, req.from.to_string())
            .timeout(timeout);
        if let Some(auth) = &req.authorization {
            call = call.header(header::AUTHORIZATION, auth.clone());
        }
        let mut resp = call.send().await.map_err(|e| Miss::Next(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(Miss::Next(
                "503 (its index is behind too, or it cannot serve)".to_string(),
            ));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RELAYED_BYTES as u64)
        {
            return Err(Miss::TooLarge);
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Miss::Next(e.to_string()))? {
            if body.len() + chunk.len() > MAX_RELAYED_BYTES {
                return Err(Miss::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let mut headers = HeaderMap::new();
        for name in [
            header::CONTENT_TYPE,
            HeaderName::from_static(LOG_COMPLETE_HEADER),
        ] {
            if let Some(v) = resp.headers().get(&name) {
                headers.insert(name, v.clone());
            }
        }
        Ok(Relayed {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

/// Why one peer's answer is not relayed.
enum Miss {
    /// Ask the next peer.
    Next(String),
    TooLarge,
}

/// The base URLs of the members to ask in this node's place, in order: voters, then
/// learners (a learner is likely still catching up); never `me`.
pub fn peers_to_ask(
    me: NodeId,
    voters: &[(NodeId, String)],
    learners: &[(NodeId, String)],
) -> Vec<String> {
    voters
        .iter()
        .chain(learners)
        .filter(|(id, _)| *id != me)
        .map(|(_, addr)| addr.clone())
        .collect()
}

/// A plain run read that a peer may answer in this node's place (an extractor): how it
/// reads, and what forwarding it takes.
pub struct PeerRead {
    origin: ReadOrigin,
    peers: Vec<String>,
    req: Outgoing,
}

impl FromRequestParts<ApiState> for PeerRead {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, Infallible> {
        // A client may send the header itself: that only takes the forwarding (and the
        // wait for a lagging index) away from its own read, which then gets a 503 sooner
        // where it would have got a peer's answer. Harmless, so it is not refused.
        let forwarded = parts.headers.contains_key(FORWARDED_HEADER);
        // Only the membership (a metrics read): this runs on every plain run read.
        let me = st.node.id();
        let members = st.node.members();
        let peers = peers_to_ask(me, &members.voters, &members.learners);
        let origin = if forwarded {
            ReadOrigin::Forwarded
        } else if peers.is_empty() {
            ReadOrigin::Local
        } else {
            ReadOrigin::Forwardable
        };
        // Inside the `/api/v1` router the URI is relative to it.
        let path_and_query = parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        Ok(PeerRead {
            origin,
            peers,
            req: Outgoing {
                path_and_query,
                authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
                from: me,
            },
        })
    }
}

impl PeerRead {
    /// The history to read through: waiting for a lagging index, or not, by the read's
    /// origin.
    pub fn history(&self, st: &ApiState) -> History {
        st.history.reading_for(self.origin)
    }

    /// This read as one only this node answers (a stream): it waits for a lagging index
    /// as before and is never forwarded.
    pub fn local(mut self) -> PeerRead {
        if self.origin == ReadOrigin::Forwardable {
            self.origin = ReadOrigin::Local;
        }
        self
    }

    /// The answer of a read that failed with `e`: a peer's, when this node's index was
    /// behind and the read may be forwarded and a peer answers; else `e`'s own failure
    /// (a 503 when the index was behind), or a 502 for a peer's answer too large to relay.
    pub async fn or_forward(self, st: &ApiState, e: HistoryError) -> ApiResult<Response> {
        if !matches!(e, HistoryError::IndexBehind { .. }) || self.origin != ReadOrigin::Forwardable
        {
            return Err(e.into());
        }
        match st.peer_reads.forward(&self.peers, &self.req).await {
            Ok(relayed) => {
                tracing::debug!(path = %self.req.path_and_query, status = %relayed.status, "a read relayed from a peer: this node's archive index is behind");
                Ok(relayed.into_response())
            }
            Err(f @ ForwardError::NoAnswer(_)) => {
                tracing::info!(path = %self.req.path_and_query, error = %f, "this node's archive index is behind and no peer answered");
                Err(e.into())
            }
            Err(f @ ForwardError::TooLarge { .. }) => {
                tracing::warn!(path = %self.req.path_and_query, error = %f, "a peer's answer not relayed");
                Ok(bad_gateway(&f))
            }
        }
    }
}

/// A 502 with the API's error body.
fn bad_gateway(e: &ForwardError) -> Response {
    let body = ApiError {
        code: ErrorCode::Internal,
        message: e.to_string(),
        details: None,
    };
    (StatusCode::BAD_GATEWAY, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::Request;

    use super::*;

    /// A peer on a loopback port answering every `GET` with `answer`; its base URL and
    /// how many requests it got.
    async fn peer(answer: fn(&Request) -> Response) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let app = Router::new().fallback(move |req: Request| {
            count.fetch_add(1, Ordering::SeqCst);
            std::future::ready(answer(&req))
        });
        // Ends with the test's runtime.
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    fn unavailable(_: &Request) -> Response {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"code": "unavailable", "message": "behind"})),
        )
            .into_response()
    }

    /// Echoes what a forwarded request carries.
    fn echo(req: &Request) -> Response {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let body = serde_json::json!({
            "uri": req.uri().to_string(),
            "authorization": header("authorization"),
            "forwarded": header(FORWARDED_HEADER),
        });
        ([(LOG_COMPLETE_HEADER, "true")], Json(body)).into_response()
    }

    fn huge(_: &Request) -> Response {
        vec![b'x'; MAX_RELAYED_BYTES + 1].into_response()
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            path_and_query: "/runs?group=%2Fp&limit=2".to_string(),
            authorization: Some(HeaderValue::from_static("Bearer the-callers-token")),
            from: 7,
        }
    }

    fn reads() -> PeerReads {
        PeerReads::new(super::super::peer::HttpTransport::client_builder()).expect("client")
    }

    /// A base URL nothing listens on.
    async fn closed_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        url
    }

    #[tokio::test]
    async fn the_first_answer_not_a_503_is_relayed_with_the_callers_own_credential() {
        let (busy, busy_asked) = peer(unavailable).await;
        let (good, _) = peer(echo).await;
        let (last, last_asked) = peer(echo).await;
        let peers = [closed_port().await, busy, good, last];
        let relayed = reads().forward(&peers, &outgoing()).await.expect("relayed");
        assert_eq!(relayed.status, StatusCode::OK);
        assert_eq!(busy_asked.load(Ordering::SeqCst), 1);
        assert_eq!(
            last_asked.load(Ordering::SeqCst),
            0,
            "asked after an answer"
        );
        let resp = relayed.into_response();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()[LOG_COMPLETE_HEADER], "true");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "uri": "/api/v1/runs?group=%2Fp&limit=2",
                "authorization": "Bearer the-callers-token",
                "forwarded": "7",
            })
        );
    }

    #[tokio::test]
    async fn no_answer_when_every_peer_is_unavailable_or_unreachable() {
        let (busy, _) = peer(unavailable).await;
        let peers = [busy, closed_port().await];
        match reads().forward(&peers, &outgoing()).await {
            Err(ForwardError::NoAnswer(missed)) => assert_eq!(missed.len(), 2, "{missed:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reads().forward(&[], &outgoing()).await,
            Err(ForwardError::NoAnswer(_))
        ));
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_not_relayed() {
        let (big, _) = peer(huge).await;
        let (good, good_asked) = peer(echo).await;
        let err = reads()
            .forward(&[big.clone(), good], &outgoing())
            .await
            .expect_err("too large");
        assert!(
            matches!(&err, ForwardError::TooLarge { peer } if *peer == big),
            "{err}"
        );
        assert_eq!(good_asked.load(Ordering::SeqCst), 0);
    }

    fn members(ids: &[NodeId]) -> Vec<(NodeId, String)> {
        ids.iter().map(|i| (*i, format!("http://n{i}"))).collect()
    }

    #[test]
    fn peers_are_the_other_voters_then_the_learners() {
        let peers = peers_to_ask(2, &members(&[1, 2, 3]), &members(&[4]));
        assert_eq!(peers, ["http://n1", "http://n3", "http://n4"]);
        assert!(peers_to_ask(1, &members(&[1]), &[]).is_empty());
    }

    #[test]
    fn an_answer_too_large_to_relay_is_a_502_with_the_api_error_body() {
        let resp = bad_gateway(&ForwardError::TooLarge {
            peer: "http://n1".into(),
        });
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
        );
    }
}

//! How nodes reach each other. A [`Transport`] delivers a [`PeerRequest`] to a node and
//! returns its [`PeerResponse`]; [`NetworkFactory`] adapts any transport to openraft. On
//! the receiving side, [`answer`] turns an encoded request into an encoded response for
//! a byte-carrying transport. Implementations: [`sim`] (in-process, with a fault matrix)
//! here; the HTTP one (bincode bodies at `/raft/rpc`, the peer secret, pooled keep-alive
//! connections) lives in the binary's `api::peer`, so that this crate knows no HTTP.
//!
//! A snapshot travels as openraft sends it: one `InstallSnapshot` request per chunk of
//! at most [`crate::timing::SNAPSHOT_CHUNK`] bytes, read from the leader's snapshot file,
//! so a transport holds one chunk at a time, never a whole snapshot. A request the peer
//! refused ([`PeerResponse::Refused`], e.g. a snapshot chunk that failed its checks) is a
//! network error naming the refusal.
//!
//! An `AppendEntries` of several entries that gets no answer in time is reported to
//! openraft as too large (half as many entries next time), not as a plain timeout.
//! openraft gives an `AppendEntries` one heartbeat interval (100 ms on `lan`) and, not
//! knowing a new leader's match on a follower, first sends from the middle of its log to
//! the end (up to `max_payload_entries`); on a loaded machine such a batch of a few
//! hundred entries cannot make it in 100 ms, and openraft would resend the same batch
//! forever while every late delivery refreshes the followers' leader lease, so no
//! election ends it either: the leader commits nothing (issue 14's partition chaos).

pub mod sim;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::AnyError;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::rpc::{PeerRequest, PeerResponse, Refusal};
use crate::types::{NodeAddr, NodeId, TypeConfig, decode, encode};

#[derive(Clone, Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached: nothing was delivered.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The request may have been delivered, but no answer came in time.
    #[error("peer did not answer: {0}")]
    Timeout(String),
    /// The peer refused the cluster token.
    #[error("peer refused the cluster token")]
    Unauthorized,
    /// The peer answered something that is not a peer response.
    #[error("bad peer response: {0}")]
    Protocol(String),
    /// The peer speaks another peer protocol version
    /// ([`PEER_PROTOCOL`](crate::rpc::PEER_PROTOCOL)): it refused the request unread.
    #[error("{0}")]
    Incompatible(String),
}

/// Delivers peer requests. Object-safe so nodes hold an `Arc<dyn Transport>`.
pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        target: &NodeAddr,
        req: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>>;
}

/// The receiving side: a node that answers peer requests.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, req: PeerRequest) -> BoxFuture<'static, PeerResponse>;
}

/// Why a node gave no answer to an encoded peer request (see [`answer`]); a transport
/// tells the sender in its own way (over HTTP: 400 and 403).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The bytes are not a peer request (bincode decodes with a size limit, so a huge
    /// length prefix is this error, never an allocation).
    #[error("bad peer request: {0}")]
    BadRequest(#[source] store::StoreError),
    /// The node refused the request before it reached Raft ([`crate::rpc::admit`]).
    #[error("peer request refused: {0}")]
    Refused(#[source] Refusal),
}

/// Answers one encoded peer request with its encoded response, transport-neutral: the
/// transport authenticates the sender and bounds the body before calling this.
pub async fn answer(handler: &dyn PeerHandler, body: &[u8]) -> Result<Vec<u8>, PeerError> {
    let req: PeerRequest = decode(body).map_err(PeerError::BadRequest)?;
    match handler.handle(req).await {
        PeerResponse::Refused(why) => Err(PeerError::Refused(why)),
        resp => Ok(encode(&resp)),
    }
}

/// openraft's network factory over a [`Transport`].
#[derive(Clone)]
pub struct NetworkFactory {
    transport: Arc<dyn Transport>,
}

impl NetworkFactory {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self { transport }
    }
}

impl openraft::RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Connection {
        Connection {
            target,
            addr: node.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// A lazy client for one peer (connections are pooled by the transport).
pub struct Connection {
    target: NodeId,
    addr: NodeAddr,
    transport: Arc<dyn Transport>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>;

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let sent = self
            .transport
            .send(&self.addr, req, option.soft_ttl())
            .await;
        self.checked(sent)
    }

    /// openraft's view of what the transport returned.
    fn checked<E: std::error::Error>(
        &self,
        sent: Result<PeerResponse, TransportError>,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let resp = sent.map_err(|e| match e {
            TransportError::Unreachable(_) | TransportError::Incompatible(_) => {
                RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
            }
            other => RPCError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
        })?;
        match resp {
            PeerResponse::Refused(why) => Err(RPCError::Network(NetworkError::new(
                &AnyError::error(format!("node {} refused the request: {why}", self.target)),
            ))),
            resp => Ok(resp),
        }
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.addr.clone(),
            e,
        ))
    }

    fn unexpected<E: std::error::Error>(&self, what: &str) -> RpcErr<E> {
        RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "unexpected peer response to {what}"
        ))))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let entries = rpc.entries.len() as u64;
        let ttl = option.soft_ttl();
        // The whole call, encoding included, within the soft TTL: openraft's own timeout
        // (the hard TTL, from before this call) would otherwise end it first, as a plain
        // timeout.
        let deadline = tokio::time::Instant::now() + ttl;
        let send = async {
            self.transport
                .send(&self.addr, PeerRequest::Append(rpc), ttl)
                .await
        };
        let sent = tokio::time::timeout_at(deadline, send)
            .await
            .unwrap_or_else(|_| Err(TransportError::Timeout(format!("no answer in {ttl:?}"))));
        if let (Err(TransportError::Timeout(_)), 2..) = (&sent, entries) {
            // Too many entries for the time openraft gives an append (see the module
            // docs): half as many next time, down to one.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        match self.checked(sent)? {
            PeerResponse::Append(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected("append")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(PeerRequest::Snapshot(rpc), &option).await? {
            PeerResponse::Snapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected("install_snapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected("vote")),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::rpc::Refusal;

    /// Refuses proposals, answers everything else with an error-free keepalive.
    struct Fake;

    impl PeerHandler for Fake {
        fn handle(&self, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
            let resp = match req {
                PeerRequest::Propose { from, .. } => {
                    PeerResponse::Refused(Refusal::NotAMember(from))
                }
                _ => PeerResponse::KeepAlive(Ok(7)),
            };
            async move { resp }.boxed()
        }
    }

    /// Answers nothing in time.
    struct Silent;

    impl Transport for Silent {
        fn send(
            &self,
            _target: &NodeAddr,
            _req: PeerRequest,
            timeout: Duration,
        ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
            async move { Err(TransportError::Timeout(format!("no answer in {timeout:?}"))) }.boxed()
        }
    }

    /// Never answers (a peer too slow for the request's time).
    struct Hanging;

    impl Transport for Hanging {
        fn send(
            &self,
            _target: &NodeAddr,
            _req: PeerRequest,
            _timeout: Duration,
        ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
            futures::future::pending().boxed()
        }
    }

    fn append_of(entries: u64) -> AppendEntriesRequest<TypeConfig> {
        let leader = openraft::CommittedLeaderId::new(1, 1);
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: (1..=entries)
                .map(|i| openraft::Entry {
                    log_id: openraft::LogId::new(leader, i),
                    payload: openraft::EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// Issue 14: a new leader's first append to a follower can carry hundreds of entries;
    /// when it gets no answer within the heartbeat interval, openraft must be told to
    /// send fewer (it resent the same batch forever otherwise), down to one entry, which
    /// times out as any other request. The connection's own deadline is the soft TTL,
    /// so its answer comes before openraft's timeout (the hard TTL) would end the call.
    #[tokio::test]
    async fn an_append_of_several_entries_that_times_out_asks_for_half_as_many() {
        let transports: [Arc<dyn Transport>; 2] = [Arc::new(Silent), Arc::new(Hanging)];
        for transport in transports {
            let mut conn = Connection {
                target: 2,
                addr: NodeAddr {
                    addr: "http://n2".into(),
                },
                transport,
            };
            let option = RPCOption::new(Duration::from_millis(100));
            for (sent, hint) in [(300, 150), (3, 1), (2, 1)] {
                let call = conn.append_entries(append_of(sent), option.clone());
                match tokio::time::timeout(option.hard_ttl(), call).await {
                    Ok(Err(RPCError::PayloadTooLarge(too_large))) => {
                        assert_eq!(too_large.entries_hint(), hint, "{sent} entries")
                    }
                    other => panic!("{sent} entries: {other:?}"),
                }
            }
            for sent in [1, 0] {
                let got = conn.append_entries(append_of(sent), option.clone()).await;
                assert!(matches!(got, Err(RPCError::Network(_))), "{sent}: {got:?}");
            }
        }
    }

    #[tokio::test]
    async fn answer_encodes_the_response_and_reports_what_it_did_not_answer() {
        let ok = answer(&Fake, &encode(&PeerRequest::KeepAlive(1)))
            .await
            .expect("answered");
        assert!(matches!(
            decode::<PeerResponse>(&ok),
            Ok(PeerResponse::KeepAlive(Ok(7)))
        ));

        let propose = PeerRequest::Propose {
            from: 9,
            cmd: store::Command::LeaseRevoke { id: 1 },
        };
        let refused = answer(&Fake, &encode(&propose)).await;
        assert!(
            matches!(refused, Err(PeerError::Refused(Refusal::NotAMember(9)))),
            "{refused:?}"
        );

        let bad = answer(&Fake, &[0xff; 16]).await;
        assert!(matches!(bad, Err(PeerError::BadRequest(_))), "{bad:?}");
    }
}

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
//! An `AppendEntries` outlives its caller's deadline. openraft gives each one the
//! heartbeat interval (100 ms under `lan`) and drops it when that passes, then sends the
//! same entries again; but the follower still applies the first (its Raft core has it
//! queued). On a loaded machine a batch of entries can take longer than that every time,
//! and each resend adds a copy to the follower's queue, so heartbeats and votes wait
//! behind ever more duplicates: a livelock that no election ends (the chaos test saw a
//! leader that could commit nothing for minutes). So a [`Connection`] keeps sending an
//! `AppendEntries` that carries entries in the background after its caller gave up
//! (`InFlight`, bounded by [`crate::timing::Timing::append_patience`]), sends no other
//! entries to that peer until it is answered, and gives its answer to the next request it
//! covers (same vote and previous entry, no entries past what it carried). Heartbeats
//! (no entries) are cheap and go at once, as before, so a slow batch never keeps a
//! follower from hearing its leader.

pub mod sim;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::AnyError;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::rpc::{PeerRequest, PeerResponse, Refusal};
use crate::types::{LogId, NodeAddr, NodeId, TypeConfig, Vote, decode, encode};

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
    append_patience: Duration,
}

impl NetworkFactory {
    /// `append_patience`: how long an `AppendEntries` whose caller gave up is still
    /// waited for.
    pub fn new(transport: Arc<dyn Transport>, append_patience: Duration) -> Self {
        Self {
            transport,
            append_patience,
        }
    }
}

impl openraft::RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Connection {
        Connection {
            target,
            addr: node.clone(),
            transport: self.transport.clone(),
            append_patience: self.append_patience,
            in_flight: None,
        }
    }
}

/// A lazy client for one peer (connections are pooled by the transport).
pub struct Connection {
    target: NodeId,
    addr: NodeAddr,
    transport: Arc<dyn Transport>,
    append_patience: Duration,
    /// The `AppendEntries` still being sent, if any (owned: aborted on drop).
    in_flight: Option<InFlight>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(f) = self.in_flight.take() {
            f.reply.abort();
        }
    }
}

/// An `AppendEntries` on its way, by what it carried.
struct InFlight {
    vote: Vote,
    prev: Option<LogId>,
    /// Its last entry (`prev` when it carried none).
    last: Option<LogId>,
    reply: tokio::task::JoinHandle<Result<PeerResponse, TransportError>>,
}

impl InFlight {
    /// Whether its answer is a true answer to `rpc`: the same leader and previous entry,
    /// and every entry of `rpc` among those it carried (the entries of one leader at one
    /// index are the same entries). A success then means the follower holds all of
    /// `rpc`'s; a conflict is about the same previous entry.
    fn covers(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        self.vote == rpc.vote && self.prev == rpc.prev_log_id && last_of(rpc) <= self.last
    }
}

/// The last entry an `AppendEntries` carries, or its previous entry when it is empty.
fn last_of(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<LogId> {
    rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>;

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let ttl = option.soft_ttl();
        let resp = self.transport.send(&self.addr, req, ttl).await;
        self.response(resp)
    }

    /// An `AppendEntries` answer (or failure) as openraft takes it.
    fn append_response(
        &self,
        resp: Result<PeerResponse, TransportError>,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.response(resp)? {
            PeerResponse::Append(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected("append")),
        }
    }

    fn response<E: std::error::Error>(
        &self,
        resp: Result<PeerResponse, TransportError>,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let resp = resp.map_err(|e| match e {
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
    /// Cancel-safe: dropped at its caller's deadline, the request goes on in the
    /// background and its answer serves the next request it covers (see the module doc).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        if rpc.entries.is_empty() {
            let resp = self
                .transport
                .send(&self.addr, PeerRequest::Append(rpc), option.soft_ttl())
                .await;
            return self.append_response(resp);
        }
        if let Some(f) = self.in_flight.as_mut() {
            // Nothing else goes to this peer until the earlier one is answered.
            let earlier = (&mut f.reply).await;
            let f = self.in_flight.take().expect("checked above");
            if f.covers(&rpc)
                && let Ok(Ok(resp)) = earlier
            {
                return self.append_response(Ok(resp));
            }
        }
        let transport = self.transport.clone();
        let addr = self.addr.clone();
        let patience = self.append_patience;
        let (vote, prev, last) = (rpc.vote, rpc.prev_log_id, last_of(&rpc));
        let reply = tokio::spawn(async move {
            transport
                .send(&addr, PeerRequest::Append(rpc), patience)
                .await
        });
        let f = self.in_flight.insert(InFlight {
            vote,
            prev,
            last,
            reply,
        });
        let answered = (&mut f.reply).await;
        self.in_flight = None;
        let answered = answered.unwrap_or_else(|e| {
            Err(TransportError::Timeout(format!(
                "the append task ended without an answer: {e}"
            )))
        });
        self.append_response(answered)
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

    /// Answers appends only when the test releases a permit; counts what it was sent.
    #[derive(Clone)]
    struct Gated {
        appends: Arc<std::sync::Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Default for Gated {
        fn default() -> Self {
            Gated {
                appends: Default::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(0)),
            }
        }
    }

    impl Transport for Gated {
        fn send(
            &self,
            _target: &NodeAddr,
            req: PeerRequest,
            _timeout: Duration,
        ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
            let this = self.clone();
            async move {
                let PeerRequest::Append(rpc) = req else {
                    return Err(TransportError::Protocol("not an append".into()));
                };
                this.appends.lock().expect("lock").push(rpc.entries.len());
                if !rpc.entries.is_empty() {
                    this.gate.acquire().await.expect("open").forget();
                }
                Ok(PeerResponse::Append(Ok(AppendEntriesResponse::Success)))
            }
            .boxed()
        }
    }

    fn append(prev: u64, entries: u64) -> AppendEntriesRequest<TypeConfig> {
        let id = |i| LogId::new(openraft::CommittedLeaderId::new(2, 1), i);
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(id(prev)),
            leader_commit: None,
            entries: (prev + 1..=prev + entries)
                .map(|i| crate::types::Entry {
                    log_id: id(i),
                    payload: openraft::EntryPayload::Blank,
                })
                .collect(),
        }
    }

    async fn connection(transport: &Gated) -> Connection {
        use openraft::RaftNetworkFactory;
        NetworkFactory::new(Arc::new(transport.clone()), Duration::from_secs(60))
            .new_client(
                2,
                &NodeAddr {
                    addr: "peer".into(),
                },
            )
            .await
    }

    /// The chaos test's livelock: a batch slower than openraft's deadline was sent again
    /// and again, each copy queued at the follower. Now it is sent once and its answer
    /// serves the retry; heartbeats go meanwhile.
    #[tokio::test]
    async fn an_append_past_its_deadline_is_sent_once_and_answers_the_retry() {
        let transport = Gated::default();
        let mut c = connection(&transport).await;
        let opt = || RPCOption::new(Duration::from_millis(20));
        let first = tokio::time::timeout(
            Duration::from_millis(20),
            c.append_entries(append(10, 5), opt()),
        )
        .await;
        assert!(first.is_err(), "the follower has not answered yet");
        let beat = c.append_entries(append(10, 0), opt()).await;
        assert!(
            matches!(beat, Ok(AppendEntriesResponse::Success)),
            "{beat:?}"
        );
        // openraft retries with the same entries, or fewer: not sent again.
        let again = tokio::time::timeout(
            Duration::from_millis(20),
            c.append_entries(append(10, 3), opt()),
        )
        .await;
        assert!(again.is_err());
        assert_eq!(*transport.appends.lock().expect("lock"), vec![5, 0]);
        transport.gate.add_permits(1);
        let answered = c.append_entries(append(10, 5), opt()).await;
        assert!(
            matches!(answered, Ok(AppendEntriesResponse::Success)),
            "{answered:?}"
        );
        assert_eq!(*transport.appends.lock().expect("lock"), vec![5, 0]);
    }

    #[tokio::test]
    async fn an_append_with_more_entries_than_the_earlier_one_is_sent_after_it() {
        let transport = Gated::default();
        let mut c = connection(&transport).await;
        let opt = || RPCOption::new(Duration::from_millis(20));
        let first = tokio::time::timeout(
            Duration::from_millis(20),
            c.append_entries(append(10, 2), opt()),
        )
        .await;
        assert!(first.is_err());
        transport.gate.add_permits(2);
        let more = c.append_entries(append(10, 4), opt()).await;
        assert!(
            matches!(more, Ok(AppendEntriesResponse::Success)),
            "{more:?}"
        );
        assert_eq!(*transport.appends.lock().expect("lock"), vec![2, 4]);
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

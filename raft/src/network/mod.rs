//! How nodes reach each other. A [`Transport`] delivers a [`PeerRequest`] to a node and
//! returns its [`PeerResponse`]; [`NetworkFactory`] adapts any transport to openraft.
//! Implementations: [`http`] (reqwest to the peer's `/raft/rpc`, bincode bodies, cluster
//! token, pooled keep-alive connections) and [`sim`] (in-process, with a fault matrix).

pub mod http;
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

use crate::rpc::{PeerRequest, PeerResponse};
use crate::types::{NodeAddr, NodeId, TypeConfig};

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
        let ttl = option.soft_ttl();
        self.transport
            .send(&self.addr, req, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(_) => {
                    RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
                }
                other => RPCError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
            })
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
        match self.call(PeerRequest::Append(rpc), &option).await? {
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

//! The composition root of a store node: open the replica, bind the HTTP port, then
//! initialize, join or restart, and serve until the shutdown token fires.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use raft::network::http::HttpTransport;
use raft::{Node, NodeConfig, Timing};
use store::EngineKind;
use tokio_util::sync::CancellationToken;

/// How to start a store node.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// URL other nodes reach this one at; defaults to `http://<listen>`.
    pub advertise: Option<String>,
    pub engine: EngineKind,
    pub timing: Timing,
    pub init: bool,
    /// Initialize a new single-node cluster when the data dir holds none (and no join
    /// is asked); restart otherwise.
    pub init_if_new: bool,
    pub join: Option<String>,
    pub cluster_token: String,
    /// `None` turns client auth off (allowed on loopback only).
    pub client_token: Option<String>,
    /// Caps on concurrent long-lived requests (watches here; the run service shares them).
    pub streams: crate::api::streams::StreamCaps,
}

/// A running store node and its server task.
pub struct StoreServer {
    pub node: Node,
    pub addr: SocketAddr,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl StoreServer {
    /// Opens the node, binds the port and brings the node into its cluster.
    pub async fn start(opts: StoreOptions) -> anyhow::Result<StoreServer> {
        Self::start_with(opts, |_| axum::Router::new()).await
    }

    /// Like [`StoreServer::start`], serving `extra(node)` on the same port too.
    pub async fn start_with<F>(opts: StoreOptions, extra: F) -> anyhow::Result<StoreServer>
    where
        F: FnOnce(&Node) -> axum::Router,
    {
        if opts.client_token.is_none() && !opts.listen.ip().is_loopback() {
            bail!(
                "client auth can only be turned off on a loopback address (listening on {})",
                opts.listen
            );
        }
        if opts.cluster_token.is_empty() {
            bail!("a cluster token is required (--token)");
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let url = opts
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let transport = Arc::new(HttpTransport::new(&opts.cluster_token));
        let cfg = NodeConfig {
            data_dir: opts.data_dir.clone(),
            engine: opts.engine,
            addr: url.clone(),
            timing: opts.timing.clone(),
        };
        let node = Node::open(cfg, transport)
            .await
            .with_context(|| format!("opening data dir {}", opts.data_dir.display()))?;
        let app = extra(&node).merge(crate::api::server::router(
            node.clone(),
            &opts.cluster_token,
            opts.client_token.clone(),
            opts.streams.clone(),
        ));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        let srv = StoreServer {
            node,
            addr,
            url,
            server,
            shutdown,
        };
        if let Err(e) = srv.bring_up(&opts).await {
            srv.stop().await;
            return Err(e);
        }
        Ok(srv)
    }

    async fn bring_up(&self, opts: &StoreOptions) -> anyhow::Result<()> {
        let node = &self.node;
        match (&opts.init, &opts.join) {
            (true, Some(_)) => bail!("--init and --join exclude each other"),
            (true, None) => {
                let id = node.initialize().await?;
                tracing::info!(
                    cluster_id = id,
                    node_id = node.id(),
                    "initialized a new cluster"
                );
            }
            (false, Some(seed)) if !node.is_member()? => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match node.join(seed, opts.timing.request_timeout * 6).await {
                        Ok(j) => {
                            tracing::info!(cluster_id = j.cluster_id, voters = ?j.voters, "joined the cluster");
                            break;
                        }
                        Err(e) if attempt < 5 => {
                            tracing::warn!(error = %e, attempt, "join failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            (false, None) if opts.init_if_new && !node.is_member()? => {
                let id = node.initialize().await?;
                tracing::info!(
                    cluster_id = id,
                    node_id = node.id(),
                    "initialized a new single-node cluster"
                );
            }
            (false, _) => {
                if !node.is_member()? {
                    bail!(
                        "data dir {} holds no cluster: start the first node with --init, the others with --join URL",
                        opts.data_dir.display()
                    );
                }
                tracing::info!(node_id = node.id(), "restarted from the data dir");
            }
        }
        Ok(())
    }

    /// Stops serving and shuts the node down.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.node.shutdown().await;
    }
}

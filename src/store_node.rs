//! The composition root of a store node: open the replica, bind the HTTP port, then
//! initialize, join or restart, and serve until the shutdown token fires.
//!
//! The HTTP port has its own accept loop (security review H5): at most
//! [`ServeNet::max_connections`] connections are served at once (the rest wait in the
//! kernel's accept queue: a slot frees as soon as a connection ends), every connection
//! must send a request head within [`ServeNet::header_read_timeout`], and the same timer
//! closes a kept-alive connection that sends no next request (hyper starts it whenever it
//! waits for a head). A connection with a response in flight (watch, SSE, log follow,
//! long poll) is not waiting for a head, so long-lived streams are not cut. The soft
//! `RLIMIT_NOFILE` is raised to the hard one at startup, and the cap is kept below it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use raft::{Node, NodeConfig, Timing};
use store::EngineKind;
use tokio_util::sync::CancellationToken;

use crate::api::peer::HttpTransport;
use crate::tls::ConnPeer;

/// How to start a store node.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// URL other nodes reach this one at; defaults to `http://<listen>`.
    pub advertise: Option<String>,
    pub engine: EngineKind,
    pub timing: Timing,
    /// Storage quota in bytes on disk, 0 = none (`raft::alarms`).
    pub quota_bytes: u64,
    pub init: bool,
    /// Initialize a new single-node cluster when the data dir holds none (and no join
    /// is asked); restart otherwise.
    pub init_if_new: bool,
    pub join: Option<String>,
    /// Join as a learner (with `join`).
    pub learner: bool,
    pub cluster_token: String,
    /// `None` turns client auth off (allowed on loopback only).
    pub client_token: Option<String>,
    /// Caps on concurrent long-lived requests (watches here; the run service shares them).
    pub streams: crate::api::streams::StreamCaps,
    /// Connection limits and TLS of the HTTP port.
    pub net: ServeNet,
    /// Every request of the port is counted here (`None`: not counted).
    pub http_metrics: Option<crate::metrics::HttpMetrics>,
}

/// How the HTTP port accepts and keeps connections.
#[derive(Clone, Debug)]
pub struct ServeNet {
    /// Most connections served at once (kept below the open-file limit).
    pub max_connections: usize,
    /// A connection that sends no complete request head for this long is closed; the same
    /// timer is the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Serve https only, with these files (see [`crate::tls`]).
    pub tls: Option<crate::tls::TlsFiles>,
    /// A TLS handshake that takes longer is dropped.
    pub tls_handshake_timeout: Duration,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure_plaintext: bool,
}

/// The peer protocol this node speaks: this build's ([`raft::rpc::PEER_PROTOCOL`]), or
/// `CAIRN_TEST_PEER_PROTOCOL`, a test hook that makes a node of this build announce and
/// answer another version (the version-skew tests start such a node).
fn peer_protocol() -> u32 {
    std::env::var("CAIRN_TEST_PEER_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(raft::rpc::PEER_PROTOCOL)
}

/// How long a restarting node waits for each peer's answer when it checks their peer
/// protocol (five rounds at most): a status answer is small, and a silent peer (frozen,
/// cut off) must not hold the start up for five request timeouts.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The default connection cap of the HTTP port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The default header-read (and keep-alive idle) timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept out of the connection cap: storage files, outgoing connections
/// (peers, executors, object storage), task processes.
const RESERVED_FDS: u64 = 256;
/// How long a stopping server lets open connections finish their responses.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ServeNet {
    fn default() -> Self {
        ServeNet {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            insecure_plaintext: false,
        }
    }
}

impl ServeNet {
    /// How this node's own clients (its in-process executor) reach its `https://` URL:
    /// trusting the cluster CA (`--tls-client-ca`).
    pub fn self_client_tls(&self) -> cairn_client::ClientTls {
        cairn_client::ClientTls {
            ca_file: self.tls.as_ref().and_then(|t| t.client_ca.clone()),
            ..Default::default()
        }
    }

    /// The builder of this node's clients of its peers (the Raft transport, reads
    /// forwarded to a peer): [`HttpTransport::client_builder`]'s settings, and over
    /// `https://` the cluster CA and the node's certificate (`peer_client_tls`).
    pub fn peer_client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let builder = HttpTransport::client_builder();
        Ok(match self.peer_client_tls() {
            Some(tls) => tls.apply(builder)?,
            None => builder,
        })
    }

    /// How this node dials its peers: trusting the cluster CA, presenting its own
    /// certificate (a node certificate is valid for client authentication too).
    fn peer_client_tls(&self) -> Option<cairn_client::ClientTls> {
        self.tls.as_ref().map(|t| cairn_client::ClientTls {
            ca_file: t.client_ca.clone(),
            cert_file: Some(t.cert.clone()),
            key_file: Some(t.key.clone()),
        })
    }
}

/// Why the HTTP port must not start, if it must not: plain HTTP on a non-loopback
/// address without `--insecure-plaintext`.
pub fn plaintext_refusal(listen: SocketAddr, net: &ServeNet) -> Option<String> {
    (net.tls.is_none() && !listen.ip().is_loopback() && !net.insecure_plaintext).then(|| {
        format!(
            "refusing to serve plain HTTP on {listen}: give --tls-cert and --tls-key (see `cairn cert`), or --insecure-plaintext"
        )
    })
}

/// The connection cap actually used: the configured one, kept `RESERVED_FDS` below the
/// open-file limit (and at least 16).
pub fn connection_cap(configured: usize, nofile_soft: u64) -> usize {
    let room = nofile_soft.saturating_sub(RESERVED_FDS).max(16);
    configured
        .max(1)
        .min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Raises the soft open-file limit to the hard one; returns the soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            1024
        }
    }
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
        if let Some(why) = plaintext_refusal(opts.listen, &opts.net) {
            bail!(why);
        }
        let tls = match &opts.net.tls {
            Some(files) => Some(Arc::new(crate::tls::ReloadingTls::load(files.clone())?)),
            None => None,
        };
        if tls.is_some() && opts.net.tls.as_ref().is_some_and(|t| t.client_ca.is_none()) {
            tracing::warn!(
                "TLS without --tls-client-ca: peers cannot authenticate, the peer route is closed"
            );
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = opts
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let client = opts
            .net
            .peer_client_builder()?
            .build()
            .context("the peer client")?;
        let protocol = peer_protocol();
        let transport =
            Arc::new(HttpTransport::with_client(&opts.cluster_token, client).speaking(protocol));
        let cfg = NodeConfig {
            data_dir: opts.data_dir.clone(),
            engine: opts.engine,
            addr: url.clone(),
            timing: opts.timing.clone(),
        };
        let node = Node::open(cfg, transport)
            .await
            .with_context(|| format!("opening data dir {}", opts.data_dir.display()))?;
        node.set_quota_bytes(opts.quota_bytes);
        let mut app = extra(&node).merge(crate::api::server::router(
            node.clone(),
            &opts.cluster_token,
            opts.client_token.clone(),
            opts.streams.clone(),
            protocol,
        ));
        if let Some(m) = &opts.http_metrics {
            app = crate::api::metrics::tracked(app, m.clone());
        }
        let shutdown = CancellationToken::new();
        let cap = connection_cap(opts.net.max_connections, raise_nofile_limit());
        tracing::info!(
            max_connections = cap,
            header_read_timeout = ?opts.net.header_read_timeout,
            "serving HTTP"
        );
        // The accept loop: owned by this server, ended by `shutdown` (see `stop`).
        let server = tokio::spawn(accept_loop(
            listener,
            app,
            cap,
            opts.net.clone(),
            tls,
            shutdown.clone(),
        ));
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
                    let timeout = opts.timing.request_timeout * 6;
                    let joined = if opts.learner {
                        node.join_as_learner(seed, timeout).await
                    } else {
                        node.join(seed, timeout).await
                    };
                    match joined {
                        Ok(j) => {
                            tracing::info!(cluster_id = j.cluster_id, voters = ?j.voters, "joined the cluster");
                            break;
                        }
                        Err(e @ raft::NodeError::Incompatible(_)) => return Err(e.into()),
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
                node.check_peer_protocols(PEER_CHECK_TIMEOUT).await?;
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

/// Accepts connections while fewer than `cap` are open, serving each on a task of its
/// own, until `stop` fires; then lets open connections finish for [`DRAIN_TIMEOUT`].
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cap: usize,
    net: ServeNet,
    tls: Option<Arc<crate::tls::ReloadingTls>>,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        // Wait for a free slot before accepting: excess connections stay queued in the
        // kernel (their clients see a slow connect, not an error).
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, _peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (app, net, stop, tls) = (app.clone(), net.clone(), stop.clone(), tls.clone());
        conns.spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                serve_connection(tcp, app, ConnPeer::default(), &net, stop).await;
                return;
            };
            // Reloads the files first if they changed.
            let (acceptor, roots) = tls.acceptor();
            let stream =
                match tokio::time::timeout(net.tls_handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
            let node_cert = match (&roots, stream.get_ref().1.peer_certificates()) {
                (Some(roots), Some(chain)) => crate::tls::is_node_cert(chain, roots),
                _ => false,
            };
            let conn = ConnPeer {
                tls: true,
                node_cert,
            };
            serve_connection(stream, app, conn, &net, stop).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "connections still open after the drain timeout; closing them"
        );
        conns.shutdown().await;
    }
}

/// Serves HTTP/1 on one connection until the peer closes it, a timeout fires, or `stop`
/// (then the response in flight is finished first).
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    conn: ConnPeer,
    net: &ServeNet,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = ConnService { app, conn };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(net.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The router for one connection: refuses what the connection may not ask for
/// ([`crate::tls::peer_route_refusal`]) and hands the rest, with the [`ConnPeer`] as a
/// request extension, to the router.
#[derive(Clone)]
struct ConnService {
    app: axum::Router,
    conn: ConnPeer,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(why) = crate::tls::peer_route_refusal(req.uri().path(), self.conn) {
            use axum::response::IntoResponse;
            let resp = crate::api::error::Failure::new(cairn_client::ErrorCode::Forbidden, why)
                .into_response();
            return Box::pin(std::future::ready(Ok(resp)));
        }
        req.extensions_mut().insert(self.conn);
        let svc = hyper_util::service::TowerToHyperService::new(self.app.clone());
        Box::pin(hyper::service::Service::call(&svc, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 768);
        assert_eq!(connection_cap(4096, 100), 16);
        assert_eq!(connection_cap(0, 1024), 1);
    }
}

//! The arguments several commands share, and what they open: [`ServerArgs`] (where the
//! run-service client commands find a server) and its `Connection`, [`TlsClientArgs`]
//! (how a client reaches `https://` servers), [`NodeArgs`] and [`NetArgs`] (the node and
//! HTTP port options of `cairn serve` and `cairn store serve`), [`ConfigArgs`] (their
//! `--config FILE`), and [`token_from`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use cairn_client::RunClient;
use clap::{Args, ValueEnum};

use super::direct::default_data_dir;
use super::embedded::{Embedded, running_node};

/// Where the commands find a server.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Server URLs (comma separated); default: the embedded node of `cairn run`.
    #[arg(long, env = "CAIRN_SERVER", value_delimiter = ',', global = true)]
    pub server: Vec<String>,
    /// The server's API token (prefer --token-file or CAIRN_TOKEN: the command line is
    /// visible to every local user).
    #[arg(long, env = "CAIRN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the server's API token.
    #[arg(long, env = "CAIRN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Data directory of the embedded node (without --server).
    #[arg(long, env = "CAIRN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Output format of listings.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// How listings print: a table for people, JSON for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// A connected client and, without `--server`, the embedded node behind it: the one
/// another `cairn` runs over the data dir, or one opened here.
pub(crate) struct Connection {
    pub(crate) client: RunClient,
    embedded: Option<Embedded>,
}

impl Connection {
    pub(crate) async fn open(args: &ServerArgs) -> anyhow::Result<Connection> {
        if !args.server.is_empty() {
            let token = token_from(args.token.clone(), args.token_file.as_deref())?
                .ok_or_else(|| anyhow!("--server needs --token-file (or CAIRN_TOKEN)"))?;
            return Ok(Connection {
                client: RunClient::with_tls(&args.server, Some(token), &args.tls.client_tls())?,
                embedded: None,
            });
        }
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        if !data_dir.join("token").exists() {
            return Err(anyhow!(
                "no embedded node in {} yet (run `cairn run` first, or pass --server)",
                data_dir.display()
            ));
        }
        // A `cairn run` holding the node: talk to it over its loopback port.
        if let Some(client) = running_node(&data_dir).await {
            return Ok(Connection {
                client,
                embedded: None,
            });
        }
        let node = Embedded::start(&data_dir, None)
            .await
            .map_err(|e| anyhow!("opening the embedded node in {}: {e:#}", data_dir.display()))?;
        Ok(Connection {
            client: node.client()?,
            embedded: Some(node),
        })
    }

    pub(crate) async fn close(self) {
        if let Some(s) = self.embedded {
            s.stop().await;
        }
    }
}

/// How a client reaches `https://` servers.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsClientArgs {
    /// PEM file of the CA that signs the servers' certificates (`cairn cert init`'s
    /// ca.pem); needed for https:// URLs.
    #[arg(long, env = "CAIRN_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for servers that ask for one (with --client-key).
    #[arg(long, env = "CAIRN_CLIENT_CERT", global = true)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, env = "CAIRN_CLIENT_KEY", global = true)]
    pub client_key: Option<PathBuf>,
}

impl TlsClientArgs {
    pub fn client_tls(&self) -> cairn_client::ClientTls {
        cairn_client::ClientTls {
            ca_file: self.ca_file.clone(),
            cert_file: self.client_cert.clone(),
            key_file: self.client_key.clone(),
        }
    }
}

/// How the HTTP port accepts connections.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// PEM certificate chain of the HTTP port: it serves https only (with --tls-key);
    /// the files are read again when they change.
    #[arg(long, env = "CAIRN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "CAIRN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA of client certificates (the cluster CA): clients may present one, peers
    /// must present a node certificate it signed, and this node dials its peers with its
    /// own certificate, trusting this CA.
    #[arg(long, env = "CAIRN_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (the token and secrets cross the
    /// network in clear).
    #[arg(long, env = "CAIRN_INSECURE_PLAINTEXT", conflicts_with = "tls_cert")]
    pub insecure_plaintext: bool,
    /// Milliseconds a TLS handshake may take.
    #[arg(long, env = "CAIRN_TLS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub tls_handshake_timeout_ms: u64,
    /// Most connections served at once (kept below the open-file limit; more wait).
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS", default_value_t = crate::store_node::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds a connection may take to send a request head, and may stay idle
    /// between requests.
    #[arg(long, env = "CAIRN_HEADER_READ_TIMEOUT_MS", default_value_t = crate::store_node::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
}

impl NetArgs {
    pub fn serve_net(&self) -> crate::store_node::ServeNet {
        crate::store_node::ServeNet {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms.max(1)),
            insecure_plaintext: self.insecure_plaintext,
        }
    }
}

/// The `--timing` profile named `s` (clap's value parser).
fn timing_profile(s: &str) -> Result<raft::Timing, String> {
    raft::Timing::parse(s).ok_or_else(|| format!("unknown timing profile {s:?} (lan or edge)"))
}

/// The options of a node that `cairn store serve` and `cairn serve` share. The help texts
/// are the store node's; `cairn serve` rewords some of them ([`super::RunServeArgs`]).
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Data directory (Raft log and state machine).
    #[arg(long, env = "CAIRN_DATA_DIR", default_value = "cairn-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP port (clients and peers).
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:2379")]
    pub listen: SocketAddr,
    /// URL other nodes reach this node at (default: http://LISTEN).
    #[arg(long, env = "CAIRN_ADVERTISE")]
    pub advertise: Option<String>,
    /// Storage engine: redb (default), sled, mem, rocksdb (with the rocksdb feature).
    #[arg(long, env = "CAIRN_ENGINE", default_value = "redb")]
    pub engine: store::EngineKind,
    /// Timing profile: lan or edge.
    #[arg(long, env = "CAIRN_TIMING", default_value = "lan", value_parser = timing_profile)]
    pub timing: raft::Timing,
    /// Start a new cluster with this node as its only member.
    #[arg(long, env = "CAIRN_INIT", conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster of the node at URL.
    #[arg(long, env = "CAIRN_JOIN")]
    pub join: Option<String>,
    /// With --join: join as a learner, a non-voting member that replicates everything
    /// and serves reads but never counts toward quorum (edge sites, read scaling, a safe
    /// catch-up before `cairn store cluster promote`).
    #[arg(long, env = "CAIRN_LEARNER", requires = "join")]
    pub learner: bool,
    /// Storage quota in bytes of the store's size on disk (etcd's --quota-backend-bytes;
    /// 0 = none). A write that would go over it raises the NOSPACE alarm: every member
    /// then refuses writes that may grow the store (reads, deletes and compaction go on)
    /// until `cairn store alarm disarm`, which needs the size under the quota. The node
    /// raises the same alarm when its data dir's file system has under 32 MiB free.
    #[arg(long, env = "CAIRN_QUOTA_BYTES", default_value_t = raft::alarms::DEFAULT_QUOTA_BYTES)]
    pub quota_bytes: u64,
}

/// The `--config FILE` of the long-running commands (`cairn serve`, `cairn executor`,
/// `cairn store serve`); [`super::settings`] reads it.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A TOML file of settings, its keys the long flag names (data-dir = "/var/lib/cairn",
    /// label = ["os=linux"], no-executor = true); the command line and each flag's
    /// CAIRN_* variable override it.
    #[arg(long, env = "CAIRN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A token given by `--token` (or `CAIRN_TOKEN`) or read from `--token-file` (trimmed).
pub fn token_from(token: Option<String>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(t) = token {
        return Ok(Some(t));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let t = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("reading the token file {}: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        anyhow::bail!("the token file {} is empty", path.display());
    }
    Ok(Some(t.to_string()))
}

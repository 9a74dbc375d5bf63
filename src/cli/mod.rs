//! The command line: `cairn run`, `cairn serve`, `cairn executor`, and
//! `cairn store serve|get|put|range|del|watch|cluster|snapshot`.
//! Client commands talk to a node's etcd JSON API through [`cairn_client::etcd`] only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `println!` that returns the write's error instead of panicking: a closed pipe
/// (`cairn … | head`) ends the command quietly (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod admin;
pub mod cert;
pub mod direct;
pub mod embedded;
pub mod runs;
pub mod snapshot;
pub mod terminal;
pub mod token;

use crate::service::DriverKind;
use anyhow::{Context, anyhow, bail};
use cairn_client::etcd::{self as wire, B64Bytes, EtcdClient, I64};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a CI/CD run service over an embedded Raft store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the pipeline of a directory now, streaming its logs (an embedded node unless
    /// --server).
    Run(direct::RunArgs),
    /// Runs: list, show, logs, stop, cancel, approve, restart.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
        #[command(flatten)]
        server: runs::ServerArgs,
    },
    /// Executors: list, delete.
    Executors {
        #[command(subcommand)]
        command: runs::ExecutorsCommand,
        #[command(flatten)]
        server: runs::ServerArgs,
    },
    /// Maintenance mode: on, off, status.
    Maintenance {
        #[command(subcommand)]
        command: admin::MaintenanceCommand,
        #[command(flatten)]
        server: runs::ServerArgs,
    },
    /// Write the run service's data (run configs, runs, counters, events) to stdout.
    Export {
        /// Keep secrets (run environment values, registry credentials); they are
        /// replaced by `***` otherwise, and such an export cannot be imported.
        #[arg(long)]
        include_secrets: bool,
        #[command(flatten)]
        server: runs::ServerArgs,
    },
    /// Replace the run service's data with an export (maintenance mode only).
    Import {
        file: PathBuf,
        #[command(flatten)]
        server: runs::ServerArgs,
    },
    /// API tokens (admin): create with a role, list, revoke.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
        #[command(flatten)]
        server: runs::ServerArgs,
    },
    /// Check a directory's pipeline config (errors with file, line and field).
    Validate {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run the service: store, API, scheduler and an executor (a fresh single node
    /// initializes itself).
    Serve(Box<RunServeArgs>),
    /// Run an executor against remote servers (it only dials out).
    Executor(ExecutorArgs),
    /// Certificates for TLS: a cluster CA, and node, executor and client certificates.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// The embedded key-value store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Store endpoints (comma separated base URLs).
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Bearer token of the store's client port.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: Option<String>,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<EtcdClient> {
        self.client_to(self.endpoints.clone(), Duration::from_secs(self.timeout))
    }

    fn client_to(&self, endpoints: Vec<String>, timeout: Duration) -> anyhow::Result<EtcdClient> {
        Ok(EtcdClient::with_tls(
            endpoints,
            self.token.clone(),
            timeout,
            &self.tls.client_tls(),
        )?)
    }
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Run a store node.
    Serve(ServeArgs),
    /// Print a key (or every key under a prefix).
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Read at this past revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Serve from the contacted node without a linearizability barrier.
        #[arg(long)]
        serializable: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Attach to this lease id.
        #[arg(long, default_value_t = 0)]
        lease: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print every key in [START, END) (END "\0" = to the end).
    Range {
        start: String,
        end: String,
        #[arg(long, default_value_t = 0)]
        limit: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key (or every key under a prefix).
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stream changes of a key (or prefix) as lines.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (default: changes from now on).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Backups.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members and each one's status.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a member by id (hex as printed by status, or decimal).
    Remove {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent, checksummed backup of the store to FILE.
    Save {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Restore FILE into a new data dir (offline); start it with `serve --init`.
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "redb")]
        engine: store::EngineKind,
    },
}

/// The `--timing` profile named `s` (clap's value parser).
fn timing_profile(s: &str) -> Result<raft::Timing, String> {
    raft::Timing::parse(s).ok_or_else(|| format!("unknown timing profile {s:?} (lan or edge)"))
}

/// The options of a node that `cairn store serve` and `cairn serve` share. The help texts
/// are the store node's; `cairn serve` rewords some of them ([`RunServeArgs`]).
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Data directory (Raft log and state machine).
    #[arg(long, default_value = "cairn-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP port (clients and peers).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub listen: SocketAddr,
    /// URL other nodes reach this node at (default: http://LISTEN).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Storage engine: redb (default), sled, mem, rocksdb (with the rocksdb feature).
    #[arg(long, default_value = "redb")]
    pub engine: store::EngineKind,
    /// Timing profile: lan or edge.
    #[arg(long, default_value = "lan", value_parser = timing_profile)]
    pub timing: raft::Timing,
    /// Start a new cluster with this node as its only member.
    #[arg(long, conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster of the node at URL.
    #[arg(long)]
    pub join: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Cluster token: authenticates clients (unless --no-client-auth). Peers present the
    /// peer secret instead, derived from this token unless --peer-token-file.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: String,
    /// A file holding the peer secret, which only nodes hold and present on /raft/rpc
    /// (default: DATA_DIR/peer-token, else derived from --token and kept there).
    #[arg(long, env = "CAIRN_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// Serve clients without a token (loopback addresses only).
    #[arg(long)]
    pub no_client_auth: bool,
    #[command(flatten)]
    pub net: NetArgs,
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
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_plaintext: bool,
    /// Milliseconds a TLS handshake may take.
    #[arg(long, default_value_t = 10_000)]
    pub tls_handshake_timeout_ms: u64,
    /// Most connections served at once (kept below the open-file limit; more wait).
    #[arg(long, default_value_t = crate::store_node::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds a connection may take to send a request head, and may stay idle
    /// between requests.
    #[arg(long, default_value_t = crate::store_node::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
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

/// `cairn serve`: a [`NodeArgs`] node (its help reworded for the service, its port
/// 7070) with the API, scheduler and executor on top.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("data_dir", |a| a.help("Data directory (store, token, and by default object storage)")),
    mut_arg("listen", |a| a
        .default_value("127.0.0.1:7070")
        .help("Address of the HTTP port (API, etcd API and peers); port 0 picks a free one")),
    mut_arg("advertise", |a| a.help(
        "URL other nodes and executors reach this node at (default: http://LISTEN)")),
    mut_arg("init", |a| a.help(
        "Start a new cluster with this node as its only member (the default for a fresh data dir without --join)")),
    mut_arg("join", |a| a.help(
        "Join the cluster of the node at URL (needs that cluster's admin token, and its peer secret when that is not derived from the admin token: --peer-token-file)")),
)]
pub struct RunServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The admin token (default: the one in DATA_DIR/token, made on first start). Prefer
    /// --token-file or CAIRN_TOKEN: the command line is visible to every local user.
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token.
    #[arg(long, env = "CAIRN_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// A file holding the peer secret, which only nodes hold and present on /raft/rpc
    /// (default: DATA_DIR/peer-token, else derived from the admin token and kept there).
    #[arg(long, env = "CAIRN_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// Object storage: a directory, file:///dir, memory:, or s3://bucket/prefix (with the
    /// s3 feature). Default: DATA_DIR/objects; a cluster's nodes must share one (required
    /// with --join).
    #[arg(long)]
    pub objects: Option<String>,
    /// Seconds an executor stays registered without a heartbeat; its unfinished tasks
    /// are failed once it is gone.
    #[arg(long, default_value_t = 15)]
    pub executor_ttl: i64,
    /// Do not run the in-process executor (tasks then wait for remote executors).
    #[arg(long)]
    pub no_executor: bool,
    /// A regular expression of pull-request refs, its first group the pull request id
    /// (repeatable; default Agola's refs/pull/(\d+)/head and
    /// refs/merge-requests/(\d+)/head), for run requests that bring none.
    #[arg(long = "pull-request-ref-regexes")]
    pub pull_request_ref_regexes: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorTuning,
    #[command(flatten)]
    pub streams: StreamTuning,
    /// Caches, workspace archives and source snapshots (once no run still to be
    /// archived uses them) older than this many seconds are deleted.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub blob_ttl_secs: u64,
    /// How often expiry and compaction run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub housekeeping_secs: u64,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Caps on long-lived requests (watches, run-event streams, log follows, long polls).
#[derive(Args, Debug, Clone)]
pub struct StreamTuning {
    /// Concurrent requests of each long-lived kind one credential may hold (beyond: 429).
    #[arg(long, default_value_t = crate::api::streams::DEFAULT_PER_CREDENTIAL)]
    pub max_streams_per_credential: usize,
    /// Concurrent requests of each long-lived kind on this node (beyond: 429).
    #[arg(long, default_value_t = crate::api::streams::DEFAULT_GLOBAL)]
    pub max_streams: usize,
    /// Longest log follow, in seconds; the client resumes a cut follow where it was.
    #[arg(long, default_value_t = crate::api::streams::DEFAULT_MAX_FOLLOW.as_secs())]
    pub max_follow_secs: u64,
}

impl StreamTuning {
    pub fn limits(&self) -> crate::api::streams::StreamLimits {
        crate::api::streams::StreamLimits {
            per_credential: self.max_streams_per_credential.max(1),
            global: self.max_streams.max(1),
            max_follow: std::time::Duration::from_secs(self.max_follow_secs.max(1)),
        }
    }
}

/// A token given by `--token` (or `CAIRN_TOKEN`) or read from `--token-file` (trimmed).
pub fn token_from(
    token: Option<String>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
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

/// How an executor runs tasks.
#[derive(Args, Debug, Clone)]
pub struct ExecutorTuning {
    /// Where tasks run: docker (containers; the default when a Docker Engine answers) or
    /// local (host processes as this user: trusted code only).
    #[arg(long)]
    pub driver: Option<DriverKind>,
    /// The Docker (or Podman) Engine's socket, unix:///path (default: DOCKER_HOST, else
    /// unix:///var/run/docker.sock).
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Docker: each container's memory limit in bytes, or with a k, m or g suffix
    /// (0 = none).
    #[arg(long, default_value = "4g")]
    pub pod_memory: String,
    /// Docker: each container's CPU limit in CPUs (0 = none; default: 2, or the host's
    /// count if smaller).
    #[arg(long)]
    pub pod_cpus: Option<f64>,
    /// Docker: each container's limit on processes and threads (0 = none).
    #[arg(long, default_value_t = 4096)]
    pub pod_pids_limit: i64,
    /// Local driver: where task directories go (default: DATA_DIR-tasks, beside the data
    /// dir, never inside it).
    #[arg(long)]
    pub tasks_dir: Option<PathBuf>,
    /// Local driver: run steps as this user (the executor must run as root).
    #[arg(long)]
    pub run_as: Option<String>,
    /// Labels tasks can require (k=v, repeatable or comma separated).
    #[arg(long = "label", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Most tasks run at once (0 = no limit).
    #[arg(long, default_value_t = 2)]
    pub active_tasks_limit: u32,
    /// Allow tasks with privileged containers.
    #[arg(long)]
    pub allow_privileged: bool,
}

impl ExecutorTuning {
    /// The options of an executor with data dir `data_dir` whose task directories go by
    /// default to `tasks_default`: the driver asked for, else docker when its Engine
    /// answers, else an error naming the flags (and `alternative`); a startup warning on
    /// stderr with the local driver.
    pub async fn options(
        &self,
        data_dir: PathBuf,
        tasks_default: PathBuf,
        alternative: &str,
    ) -> anyhow::Result<crate::service::ExecutorOptions> {
        use crate::executor::driver::docker;
        use crate::service::{PodLimits, choose_driver, local_driver_warning};
        let asked = self.driver;
        let ping = match asked {
            None => Some(docker::ping(self.docker_host.as_deref()).await),
            Some(_) => None,
        };
        let driver = choose_driver(
            asked,
            || ping.unwrap_or(Ok(())).map_err(|e| e.to_string()),
            alternative,
        )?;
        if driver == DriverKind::Local {
            eprintln!("{}", local_driver_warning(self.run_as.as_deref()));
        }
        let defaults = PodLimits::defaults();
        let pod_limits = PodLimits {
            memory_bytes: docker::parse_size(&self.pod_memory)
                .map_err(|e| anyhow!("--pod-memory: {e}"))?,
            nano_cpus: match self.pod_cpus {
                Some(cpus) => docker::nano_cpus(cpus).map_err(|e| anyhow!("--pod-cpus: {e}"))?,
                None => defaults.nano_cpus,
            },
            pids: self.pod_pids_limit.max(0),
        };
        Ok(crate::service::ExecutorOptions {
            data_dir,
            driver,
            labels: self.label_map()?,
            active_tasks_limit: self.active_tasks_limit,
            allow_privileged: self.allow_privileged,
            docker_host: self.docker_host.clone(),
            pod_limits,
            tasks_dir: Some(self.tasks_dir.clone().unwrap_or(tasks_default)),
            run_as: self.run_as.clone(),
        })
    }

    /// The labels as a map; `k=v` only.
    pub fn label_map(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        self.labels
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| anyhow!("label {l:?} is not k=v"))
            })
            .collect()
    }
}

#[derive(Args, Debug, Clone)]
pub struct ExecutorArgs {
    /// Server URLs (comma separated; the executor fails over between them).
    #[arg(long, env = "CAIRN_SERVER", value_delimiter = ',', required = true)]
    pub server: Vec<String>,
    /// A registration (or admin) token, exchanged at registration for this executor's
    /// own credential (kept in DATA_DIR/credential). Prefer --token-file or CAIRN_TOKEN:
    /// the command line is visible to every local user.
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the registration token.
    #[arg(long, env = "CAIRN_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Data directory (executor id, credential, task directories).
    #[arg(long, default_value = "cairn-executor")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub executor: ExecutorTuning,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

fn b64(s: &str) -> B64Bytes {
    B64Bytes(s.as_bytes().to_vec())
}

fn show(b: &B64Bytes) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

/// The range end for a key, or for every key under it with `--prefix`.
fn range_end_for(key: &str, prefix: bool) -> B64Bytes {
    if prefix {
        B64Bytes(wire::prefix_end(key.as_bytes()))
    } else {
        B64Bytes::default()
    }
}

/// Key and value on lines of their own, as etcdctl prints them.
fn print_kvs(kvs: &[wire::KeyValue]) -> std::io::Result<()> {
    for kv in kvs {
        outln!("{}\n{}", show(&kv.key), show(&kv.value))?;
    }
    Ok(())
}

fn remote(e: wire::EtcdError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Streams a backup into `tmp` and checks that it is one: its header (a few dozen bytes at
/// the front) must parse. Returns the header and the backup's length.
async fn save_snapshot(
    client: &EtcdClient,
    tmp: &std::path::Path,
) -> anyhow::Result<(raft::backup::BackupHeader, u64)> {
    use std::io::Read as _;

    let writing = || format!("writing {}", tmp.display());
    let mut out =
        tokio::io::BufWriter::new(tokio::fs::File::create(tmp).await.with_context(writing)?);
    let len = client.snapshot(&mut out).await.map_err(remote)?;
    out.into_inner().sync_all().await.with_context(writing)?;
    let mut front = Vec::new();
    std::fs::File::open(tmp)
        .with_context(|| format!("reading {}", tmp.display()))?
        .take(64 << 10)
        .read_to_end(&mut front)
        .with_context(|| format!("reading {}", tmp.display()))?;
    let (h, _) = raft::backup::header(&front)?;
    Ok((h, len))
}

/// Runs a client command; output goes to stdout.
pub async fn run_store_client(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Serve(_) => unreachable!("serve is handled by main"),
        StoreCommand::Get {
            key,
            prefix,
            rev,
            serializable,
            client,
        } => {
            let range_end = range_end_for(&key, prefix);
            let req = wire::RangeRequest {
                key: b64(&key),
                range_end,
                revision: I64(rev),
                serializable,
                ..Default::default()
            };
            let resp = client.client()?.range(&req).await.map_err(remote)?;
            print_kvs(&resp.kvs)?;
        }
        StoreCommand::Put {
            key,
            value,
            lease,
            client,
        } => {
            let req = wire::PutRequest {
                key: b64(&key),
                value: b64(&value),
                lease: I64(lease),
                ..Default::default()
            };
            let resp = client.client()?.put(&req).await.map_err(remote)?;
            outln!("OK (revision {})", resp.header.revision.0)?;
        }
        StoreCommand::Range {
            start,
            end,
            limit,
            client,
        } => {
            let end = if end == "\\0" {
                vec![0]
            } else {
                end.into_bytes()
            };
            let req = wire::RangeRequest {
                key: b64(&start),
                range_end: B64Bytes(end),
                limit: I64(limit),
                ..Default::default()
            };
            let resp = client.client()?.range(&req).await.map_err(remote)?;
            print_kvs(&resp.kvs)?;
        }
        StoreCommand::Del {
            key,
            prefix,
            client,
        } => {
            let range_end = range_end_for(&key, prefix);
            let req = wire::DeleteRangeRequest {
                key: b64(&key),
                range_end,
                prev_kv: false,
            };
            let resp = client.client()?.delete_range(&req).await.map_err(remote)?;
            outln!("{}", resp.deleted.0)?;
        }
        StoreCommand::Watch {
            key,
            prefix,
            rev,
            client,
        } => {
            let range_end = range_end_for(&key, prefix);
            let req = wire::WatchCreateRequest {
                key: b64(&key),
                range_end,
                start_revision: I64(rev),
                ..Default::default()
            };
            let mut stream = client.client()?.watch(&req).await.map_err(remote)?;
            while let Some(msg) = stream.next().await.map_err(remote)? {
                if msg.canceled {
                    bail!("watch cancelled: {}", msg.cancel_reason);
                }
                for ev in msg.events {
                    outln!(
                        "{} {} {} (revision {})",
                        ev.kind.as_str(),
                        show(&ev.kv.key),
                        show(&ev.kv.value),
                        msg.header.revision.0
                    )?;
                }
            }
        }
        StoreCommand::Cluster {
            command: ClusterCommand::Status { client },
        } => {
            let c = client.client()?;
            let members = c.member_list().await.map_err(remote)?;
            outln!(
                "{:<16} {:<8} {:<28} {:>8} {:>10} {:>10}",
                "ID",
                "ROLE",
                "URL",
                "TERM",
                "APPLIED",
                "REVISION"
            )?;
            for m in members.members {
                let url = m.client_urls.first().cloned().unwrap_or_default();
                let one = client.client_to(vec![url.clone()], Duration::from_secs(3))?;
                match one.status().await {
                    Ok(st) => {
                        let role = if st.leader.0 == m.id.0 {
                            "leader"
                        } else if m.is_learner {
                            "learner"
                        } else {
                            "follower"
                        };
                        outln!(
                            "{:<16x} {:<8} {:<28} {:>8} {:>10} {:>10}",
                            m.id.0,
                            role,
                            url,
                            st.raft_term.0,
                            st.raft_applied_index.0,
                            st.header.revision.0
                        )?;
                    }
                    Err(e) => outln!("{:<16x} {:<8} {:<28} unreachable: {e}", m.id.0, "?", url)?,
                }
            }
        }
        StoreCommand::Cluster {
            command: ClusterCommand::Remove { id, client },
        } => {
            let parsed = u64::from_str_radix(id.trim_start_matches("0x"), 16)
                .or_else(|_| id.parse::<u64>())
                .map_err(|_| {
                    anyhow!(
                        "invalid member id {id:?} (expected hex as printed by `cluster status`)"
                    )
                })?;
            let req = wire::MemberRemoveRequest {
                id: I64(parsed as i64),
            };
            client.client()?.member_remove(&req).await.map_err(remote)?;
            outln!("removed member {parsed:x}")?;
        }
        StoreCommand::Snapshot {
            command: SnapshotCommand::Save { file, client },
        } => {
            let tmp = file.with_extension("part");
            let (h, len) = save_snapshot(&client.client()?, &tmp)
                .await
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })?;
            std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
            outln!(
                "saved revision {} ({} bytes) to {}",
                h.revision,
                len,
                file.display()
            )?;
        }
        StoreCommand::Snapshot {
            command:
                SnapshotCommand::Restore {
                    file,
                    data_dir,
                    engine,
                },
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let h = raft::backup::restore(&bytes, &data_dir, engine)?;
            outln!(
                "restored revision {} into {}; start it with `cairn store serve --init --data-dir {}`",
                h.revision,
                data_dir.display(),
                data_dir.display()
            )?;
        }
    }
    Ok(())
}

//! The command line: the clap tree ([`Cli`], [`Command`]) and the options of the
//! long-running commands, `cairn serve` ([`RunServeArgs`]) and `cairn executor`
//! ([`ExecutorArgs`]). Each other command lives in its own file: `direct` (`cairn run`),
//! `runs`, `executors`, `validate`, `admin` (maintenance, export, import), `token`,
//! `cert`, `store` (`cairn store …`) and `manual` (completions and man pages); the
//! arguments several share are in `args`, and `settings` reads the `--config FILE` of
//! the long-running commands.

use std::path::PathBuf;

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
pub mod args;
pub mod cert;
pub mod cluster;
pub mod direct;
pub mod embedded;
pub mod executors;
pub mod manual;
pub mod retention;
pub mod runs;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod terminal;
pub mod token;
mod user;
pub mod validate;

pub use args::{ConfigArgs, NetArgs, NodeArgs, Output, ServerArgs, TlsClientArgs, token_from};

use crate::service::DriverKind;
use anyhow::anyhow;
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
        server: ServerArgs,
    },
    /// Executors: list, delete.
    Executors {
        #[command(subcommand)]
        command: executors::ExecutorsCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Maintenance mode: on, off, status.
    Maintenance {
        #[command(subcommand)]
        command: admin::MaintenanceCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The whole cluster at a glance: nodes, roles, leader, lag, scheduler, executors,
    /// alarms, versions.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write the run service's data (run configs, runs, counters, events) to stdout.
    Export {
        /// Keep secrets (run environment values, registry credentials); they are
        /// replaced by `***` otherwise, and such an export cannot be imported.
        #[arg(long)]
        include_secrets: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replace the run service's data with an export (maintenance mode only).
    Import {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// API tokens (admin): create with a role, list, revoke.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
        #[command(flatten)]
        server: ServerArgs,
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
        command: store::StoreCommand,
    },
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
    /// Write a man page for cairn and each of its subcommands (cairn-serve.1, …) into
    /// DIR.
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
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
    pub config: ConfigArgs,
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
    #[arg(long, env = "CAIRN_OBJECTS")]
    pub objects: Option<String>,
    /// An option of the object store, KEY=VALUE (repeatable), for s3:// the endpoint,
    /// region and credentials (aws_endpoint, aws_region, aws_access_key_id,
    /// aws_secret_access_key, aws_allow_http, …) and the request bounds (timeout,
    /// max_retries, retry_timeout). The command line is visible to every local user.
    #[arg(long = "objects-option", env = "CAIRN_OBJECTS_OPTION", hide_env_values = true, value_name = "KEY=VALUE", value_parser = parse_option)]
    pub objects_options: Vec<(String, String)>,
    /// Seconds an executor stays registered without a heartbeat; its unfinished tasks
    /// are failed once it is gone.
    #[arg(long, env = "CAIRN_EXECUTOR_TTL", default_value_t = 15)]
    pub executor_ttl: i64,
    /// Do not run the in-process executor (tasks then wait for remote executors).
    #[arg(long, env = "CAIRN_NO_EXECUTOR")]
    pub no_executor: bool,
    /// A regular expression of pull-request refs, its first group the pull request id
    /// (repeatable; default Agola's refs/pull/(\d+)/head and
    /// refs/merge-requests/(\d+)/head), for run requests that bring none.
    #[arg(
        long = "pull-request-ref-regexes",
        env = "CAIRN_PULL_REQUEST_REF_REGEXES"
    )]
    pub pull_request_ref_regexes: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorTuning,
    #[command(flatten)]
    pub streams: StreamTuning,
    /// Caches, workspace archives and source snapshots (once no run still to be
    /// archived uses them) older than this many seconds are deleted, unless
    /// --cache-ttl, --archive-ttl or --source-ttl says otherwise.
    #[arg(long, env = "CAIRN_BLOB_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub blob_ttl_secs: u64,
    #[command(flatten)]
    pub retention: retention::RetentionArgs,
    /// How often expiry and compaction run, in seconds.
    #[arg(long, env = "CAIRN_HOUSEKEEPING_SECS", default_value_t = 60)]
    pub housekeeping_secs: u64,
    /// Archived runs move out of the store into a segment in object storage in batches
    /// of this many (1 to 1000)...
    #[arg(long, env = "CAIRN_SEGMENT_RUNS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub segment_runs: u64,
    /// ... or once the oldest of them finished this many seconds ago.
    #[arg(long, env = "CAIRN_SEGMENT_WAIT_SECS", default_value_t = 600)]
    pub segment_wait_secs: u64,
    /// How many times a task lost with its executor (killed, restarted, stopped, out of
    /// contact) runs again on another executor, unless its config's `retry_lost_tasks`
    /// says; 0 fails it at once. A task whose steps failed is never run again.
    #[arg(long, env = "CAIRN_RETRY_LOST_TASKS", default_value_t = crate::scheduler::DEFAULT_RETRY_LOST_TASKS, value_parser = clap::value_parser!(u32).range(0..=cairn_client::runconfig::MAX_RETRY_LOST as i64))]
    pub retry_lost_tasks: u32,
    #[command(flatten)]
    pub net: NetArgs,
}

/// A `KEY=VALUE` option (the value may hold `=`).
fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Caps on long-lived requests (watches, run-event streams, log follows, long polls).
#[derive(Args, Debug, Clone)]
pub struct StreamTuning {
    /// Concurrent requests of each long-lived kind one credential may hold (beyond: 429).
    #[arg(long, env = "CAIRN_MAX_STREAMS_PER_CREDENTIAL", default_value_t = crate::api::streams::DEFAULT_PER_CREDENTIAL)]
    pub max_streams_per_credential: usize,
    /// Concurrent requests of each long-lived kind on this node (beyond: 429).
    #[arg(long, env = "CAIRN_MAX_STREAMS", default_value_t = crate::api::streams::DEFAULT_GLOBAL)]
    pub max_streams: usize,
    /// Longest log follow, in seconds; the client resumes a cut follow where it was.
    #[arg(long, env = "CAIRN_MAX_FOLLOW_SECS", default_value_t = crate::api::streams::DEFAULT_MAX_FOLLOW.as_secs())]
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

/// How an executor runs tasks.
#[derive(Args, Debug, Clone)]
pub struct ExecutorTuning {
    /// Where tasks run: docker (containers; the default when a Docker Engine answers) or
    /// local (host processes as this user: trusted code only).
    #[arg(long, env = "CAIRN_DRIVER")]
    pub driver: Option<DriverKind>,
    /// The Docker (or Podman) Engine's socket, unix:///path (default: DOCKER_HOST, else
    /// unix:///var/run/docker.sock).
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Docker: each container's memory limit in bytes, or with a k, m or g suffix
    /// (0 = none).
    #[arg(long, env = "CAIRN_POD_MEMORY", default_value = "4g")]
    pub pod_memory: String,
    /// Docker: each container's CPU limit in CPUs (0 = none; default: 2, or the host's
    /// count if smaller).
    #[arg(long, env = "CAIRN_POD_CPUS")]
    pub pod_cpus: Option<f64>,
    /// Docker: each container's limit on processes and threads (0 = none).
    #[arg(long, env = "CAIRN_POD_PIDS_LIMIT", default_value_t = 4096)]
    pub pod_pids_limit: i64,
    /// Local driver: where task directories go (default: DATA_DIR-tasks, beside the data
    /// dir, never inside it).
    #[arg(long, env = "CAIRN_TASKS_DIR")]
    pub tasks_dir: Option<PathBuf>,
    /// Local driver: run steps as this user (the executor must run as root).
    #[arg(long, env = "CAIRN_RUN_AS")]
    pub run_as: Option<String>,
    /// Labels tasks can require (k=v, repeatable or comma separated).
    #[arg(long = "label", env = "CAIRN_LABEL", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Most tasks run at once (0 = no limit).
    #[arg(long, env = "CAIRN_ACTIVE_TASKS_LIMIT", default_value_t = 2)]
    pub active_tasks_limit: u32,
    /// Allow tasks with privileged containers.
    #[arg(long, env = "CAIRN_ALLOW_PRIVILEGED")]
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
            labels: self.label_map()?,
            active_tasks_limit: self.active_tasks_limit,
            allow_privileged: self.allow_privileged,
            docker_host: self.docker_host.clone(),
            pod_limits,
            tasks_dir: Some(self.tasks_dir.clone().unwrap_or(tasks_default)),
            run_as: self.run_as.clone(),
            lifeline: crate::executor::lifeline::this_program(),
            ..crate::service::ExecutorOptions::new(data_dir, driver)
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
    #[command(flatten)]
    pub config: ConfigArgs,
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
    #[arg(long, env = "CAIRN_DATA_DIR", default_value = "cairn-executor")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub executor: ExecutorTuning,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

//! The composition root of `cairn serve`: the store node, the run-service API on the same
//! port, object storage, the scheduler (one active in the cluster) and, by default, an
//! in-process executor. Owns their lifetimes: [`Service::stop`] stops the executor and
//! the scheduler, then stops serving and the node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::datamanager::Datamanager;
use crate::datamanager::blobs::Blobs;
use crate::datamanager::caches::CacheStore;
use crate::datamanager::logs::LogStore;
use crate::executor::agent::{Agent, AgentConfig};
use crate::executor::driver::Driver;
pub use crate::executor::driver::docker::PodLimits;
use crate::executor::driver::docker::{DockerDriver, DockerOptions};
use crate::executor::driver::local::{LocalDriver, LocalOptions, RunAs as LocalRunAs};
use crate::executor::lifeline::WatchedDriver;
use crate::mode_switch::ModeSwitch;
use crate::scheduler::{ModeSignals, Scheduler, SchedulerConfig};
use crate::store_node::{StoreOptions, StoreServer};

/// How to start a run-service node.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub engine: store::EngineKind,
    pub timing: raft::Timing,
    /// Storage quota in bytes on disk, 0 = none (`raft::alarms`).
    pub quota_bytes: u64,
    pub init: bool,
    pub join: Option<String>,
    /// Join as a learner (with `join`).
    pub learner: bool,
    /// The admin token (API, `/v3`); `None` = the one kept in the data dir (made on
    /// first start).
    pub token: Option<String>,
    /// The peer secret (`/raft/rpc` only); `None` = the one kept in the data dir, else
    /// one derived from the admin token (so nodes given the same admin token can join
    /// each other without another file).
    pub peer_token: Option<String>,
    /// Object storage URL; `None` = `<data_dir>/objects`.
    pub objects: Option<String>,
    /// The object store's options (`Blobs::open_with`), for S3 its endpoint and credentials.
    pub objects_options: Vec<(String, String)>,
    pub scheduler: SchedulerConfig,
    /// Executor registrations live this long without a heartbeat (seconds; raised to
    /// the store's minimum lease TTL).
    pub executor_ttl_secs: i64,
    /// The in-process executor; `None` runs none.
    pub executor: Option<ExecutorOptions>,
    /// Patterns of pull-request refs for runs that bring none (empty = Agola's).
    pub pull_request_ref_regexes: Vec<String>,
    /// Caps on watches, run-event streams, log follows and long polls.
    pub streams: crate::api::streams::StreamLimits,
    /// Connection limits and TLS of the HTTP port.
    pub net: crate::store_node::ServeNet,
}

/// Which driver an executor runs tasks with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    Local,
    Docker,
}

impl DriverKind {
    pub fn parse(s: &str) -> anyhow::Result<DriverKind> {
        match s {
            "local" => Ok(DriverKind::Local),
            "docker" => Ok(DriverKind::Docker),
            other => anyhow::bail!("unknown driver {other:?} (local or docker)"),
        }
    }
}

impl std::str::FromStr for DriverKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<DriverKind> {
        DriverKind::parse(s)
    }
}

/// How an executor (in-process or standalone) is set up.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    pub data_dir: PathBuf,
    pub driver: DriverKind,
    pub labels: std::collections::BTreeMap<String, String>,
    pub active_tasks_limit: u32,
    pub allow_privileged: bool,
    /// The Engine's `unix://` address (`None`: `DOCKER_HOST`, else the default socket).
    pub docker_host: Option<String>,
    /// Each docker container's limits.
    pub pod_limits: PodLimits,
    /// Where task directories go (`None`: `<data_dir>/tasks`, as `cairn run` keeps them).
    pub tasks_dir: Option<PathBuf>,
    /// Local driver: the user steps run as.
    pub run_as: Option<String>,
    /// This binary, started again as the agent's lifeline watchdog so that steps die with
    /// the executor ([`crate::executor::lifeline`]); `None`: no watchdog (an agent in a
    /// test process).
    pub lifeline: Option<PathBuf>,
}

/// The task directories of a server or executor with data dir `data_dir`: beside it
/// (`<data_dir>-tasks`), never inside it, so a step's paths do not lead into it.
pub fn default_tasks_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.as_os_str().to_owned();
    name.push("-tasks");
    PathBuf::from(name)
}

/// The driver of `cairn serve` and `cairn executor`: the one `asked` for, else docker
/// when `engine` (a ping of the Docker Engine) succeeded; with neither, an error saying
/// what to pass (`alternative`: what else the command accepts, like `--no-executor`).
pub fn choose_driver(
    asked: Option<DriverKind>,
    engine: impl FnOnce() -> Result<(), String>,
    alternative: &str,
) -> anyhow::Result<DriverKind> {
    if let Some(asked) = asked {
        return Ok(asked);
    }
    match engine() {
        Ok(()) => Ok(DriverKind::Docker),
        Err(why) => anyhow::bail!(
            "no Docker Engine for the executor ({why}): pass --driver docker (with --docker-host unix://PATH), --driver local (steps run as this user on this host){alternative}"
        ),
    }
}

/// The one-line startup warning of the local driver on a server or executor.
pub fn local_driver_warning(run_as: Option<&str>) -> String {
    match run_as {
        Some(user) => format!(
            "cairn: warning: --driver local runs every step as a process on this host, as user {user}: use it for trusted code only, or --driver docker"
        ),
        None => {
            let uid = nix::unistd::geteuid();
            let who = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(
                || format!("uid {uid}"),
                |u| format!("{} (uid {uid})", u.name),
            );
            format!(
                "cairn: warning: --driver local runs every step as a process on this host as this user, {who}, able to read and write what it can: use it for trusted code only, or --driver docker{}",
                if uid.is_root() {
                    ", or --run-as USER"
                } else {
                    ""
                }
            )
        }
    }
}

impl ExecutorOptions {
    /// An executor with data dir `data_dir` and `driver`, and the defaults of the other
    /// options: no labels, no limit on tasks, no privileged containers, the default Engine
    /// socket and pod limits, task directories in `<data_dir>/tasks`, steps run as this
    /// user. Callers change what they set with struct update syntax.
    pub fn new(data_dir: PathBuf, driver: DriverKind) -> ExecutorOptions {
        ExecutorOptions {
            data_dir,
            driver,
            labels: Default::default(),
            active_tasks_limit: 0,
            allow_privileged: false,
            docker_host: None,
            pod_limits: PodLimits::defaults(),
            tasks_dir: None,
            run_as: None,
            lifeline: None,
        }
    }

    /// Starts an executor agent against `servers`.
    pub async fn start(
        &self,
        servers: Vec<String>,
        token: Option<String>,
        tls: cairn_client::ClientTls,
    ) -> anyhow::Result<Agent> {
        // Absolute, so that step working directories never depend on the process's.
        let data_dir = std::path::absolute(&self.data_dir)
            .with_context(|| format!("resolving {}", self.data_dir.display()))?;
        let tasks_dir = match &self.tasks_dir {
            Some(dir) => {
                std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?
            }
            None => data_dir.join("tasks"),
        };
        let run_as = match (&self.run_as, self.driver) {
            (None, _) => None,
            (Some(user), DriverKind::Local) => Some(LocalRunAs::lookup(user)?),
            (Some(_), DriverKind::Docker) => {
                anyhow::bail!(
                    "--run-as is for the local driver (containers run as their image's user)"
                )
            }
        };
        make_tasks_dir(&tasks_dir, run_as.is_some())?;
        let driver: Arc<dyn Driver> = match self.driver {
            DriverKind::Local => Arc::new(LocalDriver::with_options(
                tasks_dir.clone(),
                LocalOptions { run_as },
            )),
            DriverKind::Docker => Arc::new(
                DockerDriver::connect(DockerOptions {
                    allow_privileged: self.allow_privileged,
                    network: None,
                    host: self.docker_host.clone(),
                    limits: self.pod_limits,
                    private_images: Some(data_dir.join("docker-private-images")),
                })
                .await
                .context("connecting to the Docker Engine")?,
            ),
        };
        let lifeline = self.lifeline.clone().map(|program| {
            let driver = match self.driver {
                DriverKind::Local => WatchedDriver::Local {
                    tasks_dir: tasks_dir.clone(),
                },
                DriverKind::Docker => WatchedDriver::Docker {
                    host: self.docker_host.clone(),
                },
            };
            (program, driver)
        });
        Agent::start(AgentConfig {
            lifeline,
            tasks_dir,
            data_dir,
            servers,
            token,
            tls,
            labels: self.labels.clone(),
            active_tasks_limit: self.active_tasks_limit,
            allow_privileged: self.allow_privileged,
            driver,
        })
    }
}

/// Creates the task directories' root, readable by this user only (and traversable by
/// the `--run-as` user, who must reach its tasks' homes, but cannot list the others).
fn make_tasks_dir(dir: &Path, traversable: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = if traversable { 0o711 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the permissions of {}", dir.display()))
}

/// A running run-service node.
pub struct Service {
    pub store: StoreServer,
    pub token_file: PathBuf,
    /// The admin token.
    pub token: String,
    scheduler: Scheduler,
    agent: Option<Agent>,
    switch: ModeSwitch,
    /// Keeps this node's index of archived runs in line with the store.
    follower: crate::history::IndexFollower,
}

/// The token file of a data dir.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// The peer-secret file of a data dir.
pub fn peer_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("peer-token")
}

/// The peer secret derived from an admin token: only a holder of the admin token (who
/// may do everything, member changes included) can compute it, and it is never equal to
/// a client token, so no client token passes `/raft/rpc`.
pub fn derive_peer_token(admin_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("cairn peer secret\0{admin_token}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The peer secret: `given` (kept in the data dir so that a restart needs no flag), else
/// the data dir's, else derived from `admin_token` (and kept).
pub fn load_or_make_peer_token(
    data_dir: &Path,
    given: Option<&str>,
    admin_token: &str,
) -> anyhow::Result<String> {
    let path = peer_token_file(data_dir);
    let given = given.map(str::trim).filter(|t| !t.is_empty());
    if given.is_none() {
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    let token = match given {
        Some(t) => t.to_string(),
        None => derive_peer_token(admin_token),
    };
    if token == admin_token {
        anyhow::bail!("the peer secret must differ from the admin token");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let tmp = path.with_extension("tmp");
    write_private(&tmp, token.as_bytes())?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Reads the data dir's token, making one on first start.
fn load_or_make_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension("tmp");
    write_private(&tmp, token.as_bytes())?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The pull-request patterns of `opts`, once the options are known to make a service.
fn check_options(
    opts: &ServiceOptions,
) -> anyhow::Result<crate::runservice::reference::PullRequestRefs> {
    if opts.join.is_some() && opts.objects.is_none() {
        anyhow::bail!(
            "a cluster needs object storage all its nodes share (logs written through one node are archived by the scheduler on another): pass --objects s3://bucket/prefix, or a directory every node mounts, on every node"
        );
    }
    Ok(if opts.pull_request_ref_regexes.is_empty() {
        crate::runservice::reference::PullRequestRefs::agola_default()
    } else {
        crate::runservice::reference::PullRequestRefs::new(&opts.pull_request_ref_regexes)?
    })
}

/// The admin token and the peer secret, read from (or first written to) the data dir,
/// which only this user may enter (steps of `--run-as` users cannot).
fn credentials(opts: &ServiceOptions) -> anyhow::Result<(String, String)> {
    let token = match &opts.token {
        Some(t) if !t.is_empty() => {
            // Kept so that a restart needs no --token.
            let path = token_file(&opts.data_dir);
            if !path.exists() {
                std::fs::create_dir_all(&opts.data_dir)
                    .with_context(|| format!("creating {}", opts.data_dir.display()))?;
                write_private(&path, t.as_bytes())?;
            }
            t.clone()
        }
        _ => load_or_make_token(&opts.data_dir)?,
    };
    let peer_token = load_or_make_peer_token(&opts.data_dir, opts.peer_token.as_deref(), &token)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the permissions of {}", opts.data_dir.display()))?;
    }
    Ok((token, peer_token))
}

/// Starts the in-process executor, if `opts` has one (`id`: its id). It gets its own
/// credential directly: it never holds the admin token.
async fn start_executor(
    opts: &ServiceOptions,
    store: &StoreServer,
    id: Option<&str>,
) -> anyhow::Result<Option<Agent>> {
    let (Some(ex), Some(id)) = (&opts.executor, id) else {
        return Ok(None);
    };
    let credential = Datamanager::new(store.node.kv())
        .issue_executor_credential(id)
        .await
        .context("issuing the in-process executor's credential")?;
    let agent = ex
        .start(
            vec![store.url.clone()],
            Some(credential),
            opts.net.self_client_tls(),
        )
        .await?;
    Ok(Some(agent))
}

impl Service {
    pub async fn start(opts: ServiceOptions) -> anyhow::Result<Service> {
        let pull_request_refs = check_options(&opts)?;
        let (token, peer_token) = credentials(&opts)?;
        let objects = match &opts.objects {
            Some(url) => url.clone(),
            None => opts.data_dir.join("objects").display().to_string(),
        };
        let blobs = Blobs::open_with(
            &objects,
            opts.objects_options.iter().map(|(k, v)| (k, v.clone())),
        )
        .with_context(|| format!("opening object storage {objects}"))?;
        let logs = LogStore::new(blobs.clone());
        let caches = CacheStore::new(blobs.clone());
        let index_path = opts.data_dir.join(crate::history::INDEX_FILE);
        let index = crate::history::open_index(index_path.clone())
            .await
            .with_context(|| format!("opening the archive index {}", index_path.display()))?;
        let (publisher, indexed) = crate::history::IndexedRevision::channel();
        let record_cache = crate::history::RecordCache::new(crate::history::cache::DEFAULT_BUDGET);
        // One registry per node, handed to what counts (HTTP, scheduler, log appends).
        let metrics = crate::metrics::Metrics::new();
        let api_metrics = metrics.clone();
        let store_opts = StoreOptions {
            data_dir: opts.data_dir.clone(),
            listen: opts.listen,
            advertise: opts.advertise.clone(),
            engine: opts.engine,
            timing: opts.timing.clone(),
            quota_bytes: opts.quota_bytes,
            init: opts.init,
            // A fresh single node initializes itself; a joining node never does.
            init_if_new: opts.join.is_none(),
            join: opts.join.clone(),
            learner: opts.learner,
            // Separate credentials (security review H1, H2): peers present the peer secret
            // on /raft/rpc only; /v3 takes the admin token only.
            cluster_token: peer_token,
            client_token: Some(token.clone()),
            streams: crate::api::streams::StreamCaps::new(opts.streams),
            net: opts.net.clone(),
            http_metrics: Some(metrics.http().clone()),
        };
        let streams = store_opts.streams.clone();
        let export_key: Arc<[u8]> =
            crate::datamanager::exchange::export_key(token.as_bytes()).into();
        let active = Arc::new(AtomicBool::new(false));
        let (mode_tx, mode_rx) = tokio::sync::watch::channel(false);
        let api_mode = mode_rx.clone();
        let api_token = token.clone();
        let in_process_executor = match &opts.executor {
            Some(ex) => Some(
                crate::executor::agent::load_or_make_id(&ex.data_dir).with_context(|| {
                    format!("reading the executor id in {}", ex.data_dir.display())
                })?,
            ),
            None => None,
        };
        let (b, l, c, a) = (blobs.clone(), logs.clone(), caches.clone(), active.clone());
        let idx = index.clone();
        let executor_ttl = opts.executor_ttl_secs;
        let peer_reads = crate::api::forward::PeerReads::new(opts.net.peer_client_builder()?)
            .context("the client of reads forwarded to peers")?;
        let store = StoreServer::start_with(store_opts, move |node| {
            let dm = Datamanager::new(node.kv());
            let history =
                crate::history::History::new(dm.clone(), idx, b.clone(), record_cache, indexed);
            let state = crate::api::v1::ApiState {
                node: node.clone(),
                dm,
                history,
                peer_reads,
                blobs: b,
                logs: l,
                caches: c,
                scheduler_active: a,
                executor_ttl_secs: executor_ttl,
                maintenance: api_mode,
                pull_request_refs: pull_request_refs.clone(),
                streams: streams.clone(),
                export_key: export_key.clone(),
                metrics: api_metrics.clone(),
            };
            let auth = crate::api::auth::Authenticator::new(&api_token, state.dm.clone());
            let scrapes = crate::api::metrics::router(
                node.clone(),
                state.dm.clone(),
                api_metrics,
                auth.clone(),
            );
            crate::api::v1::router(state, auth)
                .merge(scrapes)
                .merge(crate::api::ui::router())
        })
        .await?;
        let follower = crate::history::IndexFollower::spawn(
            index,
            Datamanager::new(store.node.kv()),
            blobs.clone(),
            publisher,
            CancellationToken::new(),
        );
        let (quiet_tx, quiet_rx) = tokio::sync::watch::channel(false);
        let switch = ModeSwitch::spawn(store.node.kv(), store.node.id(), mode_tx, quiet_rx);
        let scheduler = Scheduler::spawn(
            store.node.kv(),
            logs,
            blobs,
            opts.scheduler.clone(),
            active,
            ModeSignals {
                mode: mode_rx,
                quiet: quiet_tx,
            },
            metrics.scheduler().clone(),
            CancellationToken::new(),
        );
        let agent = match start_executor(&opts, &store, in_process_executor.as_deref()).await {
            Ok(agent) => agent,
            Err(e) => {
                scheduler.stop().await;
                switch.stop().await;
                follower.stop().await;
                store.stop().await;
                return Err(e);
            }
        };
        Ok(Service {
            store,
            follower,
            token_file: token_file(&opts.data_dir),
            token,
            scheduler,
            agent,
            switch,
        })
    }

    pub fn url(&self) -> &str {
        &self.store.url
    }

    pub fn scheduler_active(&self) -> bool {
        self.scheduler.is_active()
    }

    /// The in-process executor's id, if it runs one.
    pub fn executor_id(&self) -> Option<&str> {
        self.agent.as_ref().map(|a| a.id.as_str())
    }

    /// Stops the executor (handing its tasks back), the scheduler (handing its lock on),
    /// the maintenance switch and the index follower at once, each bounded in time so a
    /// node whose peers are gone still stops in seconds; then the API and the node.
    pub async fn stop(self) {
        let started = std::time::Instant::now();
        let timed = |part: &'static str| {
            move || tracing::debug!(part, ms = started.elapsed().as_millis(), "stopped")
        };
        let agent = async {
            if let Some(a) = self.agent {
                a.stop().await;
            }
            timed("executor")();
        };
        let scheduler = async {
            self.scheduler.stop().await;
            timed("scheduler")();
        };
        let switch = async {
            self.switch.stop().await;
            timed("maintenance switch")();
        };
        let follower = async {
            self.follower.stop().await;
            timed("index follower")();
        };
        tokio::join!(agent, scheduler, switch, follower);
        self.store.stop().await;
        timed("store")();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 (C1): a server runs host processes only when asked to.
    #[test]
    fn the_driver_is_docker_when_an_engine_answers_and_otherwise_must_be_named() {
        let answers = || Ok(());
        let silent = || Err("no socket".to_string());
        assert_eq!(
            choose_driver(None, answers, "").expect("ok"),
            DriverKind::Docker
        );
        assert_eq!(
            choose_driver(Some("local".parse().expect("local")), silent, "").expect("ok"),
            DriverKind::Local
        );
        assert_eq!(
            choose_driver(Some("docker".parse().expect("docker")), silent, "").expect("ok"),
            DriverKind::Docker
        );
        let err = choose_driver(None, silent, ", or --no-executor")
            .expect_err("an error")
            .to_string();
        assert!(
            err.contains("no socket") && err.contains("--no-executor"),
            "{err}"
        );
        // `--driver vm` is refused by the parser, before a driver is chosen.
        assert!("vm".parse::<DriverKind>().is_err());
    }

    #[test]
    fn task_directories_are_beside_the_data_dir() {
        assert_eq!(
            default_tasks_dir(Path::new("/var/lib/cairn")),
            Path::new("/var/lib/cairn-tasks")
        );
        assert!(!default_tasks_dir(Path::new("d")).starts_with("d"));
    }
}

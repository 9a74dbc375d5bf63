//! The docker driver: a task's pod is a set of containers on the Docker Engine (through
//! bollard, over the local unix socket), container 0 running the steps and the others
//! services sharing its network namespace, so they are reached on `localhost`.
//!
//! - Images are pulled only when missing, with the task's credentials for the image's
//!   registry host; pull progress goes to the setup log.
//! - Containers carry the labels `cairn.executor`, `cairn.task`, `cairn.pod` and
//!   `cairn.index`: orphans of a crashed executor are found by label and removed.
//! - Container 0 idles with [`IDLE_COMMAND`] (unless the task gives an entrypoint): a plain
//!   `sh` loop, so nothing is injected into the image; steps run by `docker exec` in it.
//! - Files move through the Engine's archive API, so images need no `tar`; the archives are
//!   rewritten on the fly by `TarRewriter` (entry names relative to the path asked for,
//!   owners set to the step's user).
//! - Cancelling an exec kills container 0 (SIGKILL to its init process takes every process
//!   of its PID namespace with it): docker has no "kill this exec", and a second exec would
//!   need tools in the image. The pod can no longer exec afterwards; its archives can
//!   still be read.
//!
//! This file must not know about steps, logs or the run service: it only implements
//! [`Driver`] and [`Pod`].

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use base64::Engine as _;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use cairn_client::runconfig::{Arch, Container, RegistryAuth, RegistryAuthType};
use futures::{StreamExt, TryStreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::{ByteStream, Driver, DriverError, ExecRequest, LogSink, Pod, PodSpec};

/// Where the Engine listens when `DOCKER_HOST` is not set.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Container 0's command when the task gives no entrypoint: idles until stopped, exits at
/// once on SIGTERM, and (as PID 1) reaps the children its `wait` sees. Needs only `sh` and
/// `sleep`, which busybox and Debian-based images both have.
pub const IDLE_COMMAND: &str = r#"trap "exit 0" TERM; while :; do sleep 3600 & wait; done"#;

const LABEL_EXECUTOR: &str = "cairn.executor";
const LABEL_TASK: &str = "cairn.task";
const LABEL_POD: &str = "cairn.pod";
const LABEL_INDEX: &str = "cairn.index";

/// Seconds a stopped container gets before SIGKILL.
const STOP_GRACE_SECS: i32 = 1;
/// Seconds bollard waits for the Engine to answer a request (not for a stream to end).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The capabilities a pod's containers keep (all others are dropped): what package
/// managers and typical CI images need as root (own files, switch users as `apt` does,
/// signal their processes, bind ports below 1024). Docker's defaults add `NET_RAW`,
/// `MKNOD`, `SETFCAP`, `SETPCAP`, `SYS_CHROOT` and `AUDIT_WRITE`, which they do not need.
pub const CAPABILITIES: [&str; 8] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
];

/// Resource limits of each container of a pod (0 = none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// Memory (and memory plus swap: no swap beyond it), bytes.
    pub memory_bytes: i64,
    /// CPU, in billionths of a CPU.
    pub nano_cpus: i64,
    /// Processes and threads.
    pub pids: i64,
}

impl PodLimits {
    /// The executor's defaults: 4 GiB, 2 CPUs (or the host's count if smaller), 4096 pids.
    pub fn defaults() -> PodLimits {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        PodLimits {
            memory_bytes: 4 << 30,
            nano_cpus: i64::try_from(cpus).unwrap_or(1) * 1_000_000_000,
            pids: 4096,
        }
    }
}

/// A size in bytes: digits, optionally followed by k, m or g (powers of 1024).
pub fn parse_size(s: &str) -> Result<i64, DriverError> {
    let t = s.trim().to_ascii_lowercase();
    let (digits, shift) = match t.strip_suffix(['k', 'm', 'g']) {
        Some(d) if t.ends_with('k') => (d, 10),
        Some(d) if t.ends_with('m') => (d, 20),
        Some(d) => (d, 30),
        None => (t.as_str(), 0),
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n >= 0)
        .ok_or_else(|| DriverError::Refused(format!("{s:?} is not a size (like 512m or 4g)")))
}

/// CPUs as billionths of a CPU.
pub fn nano_cpus(cpus: f64) -> Result<i64, DriverError> {
    if !(0.0..=4096.0).contains(&cpus) {
        return Err(DriverError::Refused(format!("{cpus} is not a CPU count")));
    }
    // In range: 4096e9 fits an i64.
    Ok((cpus * 1e9).round() as i64)
}

/// How the executor lets the docker driver behave.
#[derive(Clone, Debug, Default)]
pub struct DockerOptions {
    /// Whether tasks may run privileged containers.
    pub allow_privileged: bool,
    /// The network container 0 joins (`None`: the Engine's default bridge).
    pub network: Option<String>,
    /// The Engine's address, `unix:///path` (`None`: `DOCKER_HOST`, else
    /// [`DEFAULT_SOCKET`]).
    pub host: Option<String>,
    /// Each container's limits.
    pub limits: PodLimits,
    /// Where the ids of images pulled with credentials are recorded (`None`: in memory
    /// only), so that a task without those credentials never reuses them.
    pub private_images: Option<std::path::PathBuf>,
}

/// Runs pods on the local Docker Engine.
pub struct DockerDriver {
    docker: Docker,
    options: DockerOptions,
    /// Ids of images pulled with a task's credentials (see [`pull_decision`]).
    private: std::sync::Mutex<BTreeSet<String>>,
}

/// What to do about a task's image before starting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Present and public as far as this executor knows: use it.
    UseLocal,
    /// Pull (or re-pull) with the task's credentials: the registry checks them.
    WithCredentials,
    /// Pull anonymously: missing, or present only because a task with credentials
    /// pulled it (the registry then decides whether it is public).
    Anonymously,
}

/// Whether to pull: a task with credentials for the image's registry always pulls
/// with them; one without uses a present image only if no task with credentials pulled
/// it (`present` is the local image's id).
pub fn pull_decision(
    present: Option<&str>,
    has_credentials: bool,
    private: &BTreeSet<String>,
) -> Pull {
    match (present, has_credentials) {
        (_, true) => Pull::WithCredentials,
        (Some(id), false) if !private.contains(id) => Pull::UseLocal,
        _ => Pull::Anonymously,
    }
}

/// The Engine socket's path for `host` (`unix:///path`), else `DOCKER_HOST`'s, else
/// [`DEFAULT_SOCKET`].
pub fn socket_path(host: Option<&str>) -> Result<String, DriverError> {
    let env = std::env::var("DOCKER_HOST").ok();
    match host.or(env.as_deref()) {
        None | Some("") => Ok(DEFAULT_SOCKET.to_string()),
        Some(h) => h
            .strip_prefix("unix://")
            .map(str::to_string)
            .ok_or_else(|| {
                DriverError::Refused(format!(
                    "Docker host {h}: only unix:// sockets are supported"
                ))
            }),
    }
}

/// Connects to the Engine at `socket` and agrees on the API version with it (a ping).
async fn connect_engine(socket: &str) -> Result<Docker, DriverError> {
    let unreachable = |e: bollard::errors::Error| {
        DriverError::Engine(format!(
            "cannot reach the Docker Engine at unix://{socket}: {e}"
        ))
    };
    let docker =
        Docker::connect_with_unix(socket, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Whether an Engine answers at `host` (see [`socket_path`]); the error says why not.
pub async fn ping(host: Option<&str>) -> Result<(), DriverError> {
    let socket = socket_path(host)?;
    let probe = connect_engine(&socket);
    match tokio::time::timeout(std::time::Duration::from_secs(10), probe).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(DriverError::Engine(format!(
            "the Docker Engine at unix://{socket} did not answer within 10 s"
        ))),
    }
}

impl DockerDriver {
    /// Connects to the Engine at [`DockerOptions::host`] (see [`socket_path`]), and agrees
    /// on the API version with it.
    pub async fn connect(options: DockerOptions) -> Result<DockerDriver, DriverError> {
        let socket = socket_path(options.host.as_deref())?;
        let docker = connect_engine(&socket).await?;
        let private = match &options.private_images {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
                Err(e) => return Err(DriverError::Io(e)),
            },
            None => BTreeSet::new(),
        };
        Ok(DockerDriver {
            docker,
            options,
            private: std::sync::Mutex::new(private),
        })
    }

    /// The id of the local image `image`, `None` when it is missing.
    async fn image_id(&self, image: &str) -> Result<Option<String>, DriverError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect.id.unwrap_or_default())),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine(e)),
        }
    }

    /// Records (or forgets) `id` as an image pulled with credentials, on disk too.
    fn mark_private(&self, id: &str, private: bool) -> Result<(), DriverError> {
        let mut set = self.private.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if private {
            set.insert(id.to_string())
        } else {
            set.remove(id)
        };
        if let (true, Some(path)) = (changed, &self.options.private_images) {
            let text: String = set.iter().map(|i| format!("{i}\n")).collect();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }

    /// Makes sure `image` is present and that this task may use it (see
    /// [`pull_decision`]): pulled with the task's credentials for its registry whenever
    /// the task has some, else used as found unless a task with credentials pulled it.
    async fn ensure_image(
        &self,
        image: &str,
        spec: &PodSpec,
        setup_log: &mut dyn LogSink,
    ) -> Result<(), DriverError> {
        let host = registry_host(image);
        let credentials = registry_credentials(&spec.registry_auth, host)?;
        let present = self.image_id(image).await?;
        let decision = {
            let private = self.private.lock().unwrap_or_else(|p| p.into_inner());
            pull_decision(present.as_deref(), credentials.is_some(), &private)
        };
        if decision == Pull::UseLocal {
            return Ok(());
        }
        if present.is_some() && decision == Pull::Anonymously {
            setup_log
                .write(Bytes::from(format!(
                    "image {image} was pulled with another task's credentials: pulling it again without any\n"
                )))
                .await;
        }
        self.pull(image, credentials, setup_log).await?;
        if let Some(id) = self.image_id(image).await? {
            self.mark_private(&id, decision == Pull::WithCredentials)?;
        }
        Ok(())
    }

    /// Pulls `image`, writing progress to `setup_log`.
    async fn pull(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
        setup_log: &mut dyn LogSink,
    ) -> Result<(), DriverError> {
        let (name, tag) = split_reference(image);
        setup_log
            .write(Bytes::from(format!("pulling image {image}\n")))
            .await;
        let options = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        let refused =
            |why: String| DriverError::Refused(format!("cannot pull image {image}: {why}"));
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| refused(e.to_string()))?;
            if let Some(detail) = info.error_detail {
                return Err(refused(detail.message.unwrap_or_default()));
            }
            let progress = info
                .progress_detail
                .and_then(|p| match (p.current, p.total) {
                    (Some(current), Some(total)) => Some(format!("{current}/{total}")),
                    _ => None,
                });
            let line = [info.id, info.status, progress]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if !line.is_empty() {
                setup_log.write(Bytes::from(line + "\n")).await;
            }
        }
        Ok(())
    }

    /// Creates and starts container `index` of the pod, pushing its id to `ids` as soon as
    /// it exists (so a failure later can remove it).
    async fn start_container(
        &self,
        spec: &PodSpec,
        pod_id: &str,
        index: usize,
        ids: &mut Vec<String>,
    ) -> Result<(), DriverError> {
        let container = &spec.containers[index];
        let labels = HashMap::from([
            (LABEL_EXECUTOR.to_string(), spec.executor_id.clone()),
            (LABEL_TASK.to_string(), spec.task_id.clone()),
            (LABEL_POD.to_string(), pod_id.to_string()),
            (LABEL_INDEX.to_string(), index.to_string()),
        ]);
        let network_mode = match ids.first() {
            Some(first) if index > 0 => Some(format!("container:{first}")),
            _ => self.options.network.clone(),
        };
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            env: Some(env_list(container.environment.iter())),
            user: non_empty(&container.user),
            entrypoint: entrypoint(container, index),
            labels: Some(labels),
            tty: Some(false),
            host_config: Some(host_config(
                container,
                network_mode,
                self.options.limits,
                super::volume::docker_mounts(container)?,
            )),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None, body)
            .await
            .map_err(|e| DriverError::Start {
                what: format!("container {index} ({})", container.image),
                why: e.to_string(),
            })?;
        ids.push(created.id.clone());
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| DriverError::Start {
                what: format!("container {index} ({})", container.image),
                why: e.to_string(),
            })
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn archs(&self) -> Vec<Arch> {
        Arch::host().into_iter().collect()
    }

    async fn create_pod(
        &self,
        spec: &PodSpec,
        setup_log: &mut dyn LogSink,
    ) -> Result<Box<dyn Pod>, DriverError> {
        if spec.containers.is_empty() {
            return Err(DriverError::Refused("a task needs a container".into()));
        }
        if !self.options.allow_privileged
            && let Some(c) = spec.containers.iter().find(|c| c.privileged)
        {
            return Err(DriverError::Refused(format!(
                "privileged container {} not allowed on this executor",
                c.image
            )));
        }
        for container in &spec.containers {
            self.ensure_image(&container.image, spec, setup_log).await?;
        }
        let pod_id = uuid::Uuid::new_v4().simple().to_string();
        let mut ids = Vec::with_capacity(spec.containers.len());
        let mut started = Ok(());
        for index in 0..spec.containers.len() {
            started = self.start_container(spec, &pod_id, index, &mut ids).await;
            if started.is_err() {
                break;
            }
        }
        let pod = DockerPod {
            docker: self.docker.clone(),
            containers: ids,
            default_user: String::new(),
        };
        if let Err(e) = started {
            pod.remove().await;
            return Err(e);
        }
        let default_user = match self
            .docker
            .inspect_container(&pod.containers[0], None)
            .await
        {
            Ok(inspect) => inspect.config.and_then(|c| c.user).unwrap_or_default(),
            Err(e) => {
                pod.remove().await;
                return Err(engine(e));
            }
        };
        Ok(Box::new(DockerPod {
            default_user,
            ..pod
        }))
    }

    async fn remove_orphans(
        &self,
        executor_id: &str,
        keep: &[String],
    ) -> Result<usize, DriverError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_EXECUTOR}={executor_id}")],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(engine)?;
        let mut pods = BTreeSet::new();
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            let task = labels
                .get(LABEL_TASK)
                .map(String::as_str)
                .unwrap_or_default();
            if keep.iter().any(|k| k == task) {
                continue;
            }
            let Some(id) = container.id else { continue };
            remove_container(&self.docker, &id).await?;
            pods.insert(labels.get(LABEL_POD).cloned().unwrap_or(id));
        }
        Ok(pods.len())
    }
}

/// A task's containers; `containers[0]` runs the steps.
struct DockerPod {
    docker: Docker,
    containers: Vec<String>,
    /// Container 0's user as the Engine reports it (empty: root).
    default_user: String,
}

impl DockerPod {
    fn main(&self) -> &str {
        &self.containers[0]
    }

    /// The user a request runs as: its own, else container 0's, else root.
    fn user_or_default<'a>(&'a self, user: &'a str) -> &'a str {
        match (user, self.default_user.as_str()) {
            ("", "") => "root",
            ("", default) => default,
            (user, _) => user,
        }
    }

    /// Container 0's `/etc/passwd` (empty when it has none).
    async fn passwd(&self) -> Result<String, DriverError> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path("/etc/passwd")
            .build();
        let archive: Vec<u8> = match self
            .docker
            .download_from_container(self.main(), Some(options))
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
        {
            Ok(archive) => archive,
            Err(e) if status(&e) == Some(404) => return Ok(String::new()),
            Err(e) => return Err(engine(e)),
        };
        Ok(first_file(&archive)
            .map(|data| String::from_utf8_lossy(data).into_owned())
            .unwrap_or_default())
    }

    /// Whether `path` exists in container 0.
    async fn exists(&self, path: &str) -> Result<bool, DriverError> {
        let options = ContainerArchiveInfoOptionsBuilder::new().path(path).build();
        match self
            .docker
            .get_container_archive_info(self.main(), Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }

    /// Creates the directory `dest` and its missing parents, owned by `owner`, leaving
    /// existing directories untouched.
    async fn make_dir(&self, dest: &str, owner: Owner) -> Result<(), DriverError> {
        let mut missing = Vec::new();
        let mut existing = dest.trim_end_matches('/');
        while !existing.is_empty() && !self.exists(existing).await? {
            let (parent, name) = existing.rsplit_once('/').unwrap_or(("", existing));
            missing.push(name);
            existing = parent;
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.reverse();
        let archive = directory_archive(&missing, owner);
        let parent = if existing.is_empty() { "/" } else { existing };
        self.upload(parent, stream::iter([Ok(Bytes::from(archive))]).boxed())
            .await
    }

    async fn upload(&self, dest: &str, tar: ByteStream) -> Result<(), DriverError> {
        let options = UploadToContainerOptionsBuilder::new().path(dest).build();
        let body = bollard::body_try_stream(tar.map_err(std::io::Error::other));
        self.docker
            .upload_to_container(self.main(), Some(options), body)
            .await
            .map_err(|e| match status(&e) {
                Some(404) => DriverError::NotFound(dest.to_string()),
                _ => engine(e),
            })
    }

    /// The exit code of a finished exec. Docker may report the exec as running for a
    /// moment after its output ended, so this asks again a few times.
    async fn exit_code(&self, exec_id: &str) -> Result<Option<i32>, DriverError> {
        for _ in 0..100 {
            let inspect = self.docker.inspect_exec(exec_id).await.map_err(engine)?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code.map(|c| i32::try_from(c).unwrap_or(-1)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(DriverError::Engine(format!(
            "exec {exec_id} still running after its output ended"
        )))
    }

    /// Kills every process of container 0 (see the module doc).
    async fn kill_main(&self) {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(e) = self.docker.kill_container(self.main(), Some(options)).await
            && !matches!(status(&e), Some(404 | 409))
        {
            tracing::warn!(container = self.main(), error = %e, "cannot kill container");
        }
    }
}

#[async_trait]
impl Pod for DockerPod {
    async fn exec(
        &self,
        req: &ExecRequest,
        out: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Option<i32>, DriverError> {
        let what = || req.cmd.join(" ");
        if req.cmd.is_empty() {
            return Err(DriverError::Start {
                what: "exec".into(),
                why: "empty command".into(),
            });
        }
        let working_dir = if req.working_dir.starts_with('/') {
            req.working_dir.clone()
        } else {
            let home = self.home(&req.user).await?;
            join_path(&home, &req.working_dir)
        };
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env_list(req.env.iter())),
            cmd: Some(req.cmd.clone()),
            user: non_empty(&req.user),
            working_dir: Some(working_dir),
            ..Default::default()
        };
        let start_error = |e: bollard::errors::Error| DriverError::Start {
            what: what(),
            why: e.to_string(),
        };
        let created = self
            .docker
            .create_exec(self.main(), config)
            .await
            .map_err(start_error)?;
        let started = self
            .docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(start_error)?;
        let StartExecResults::Attached { mut output, .. } = started else {
            return Err(DriverError::Engine("exec started detached".into()));
        };
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.kill_main().await;
                    return Ok(None);
                }
                item = output.next() => match item {
                    Some(Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    )) => out.write(message).await,
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => return Err(engine(e)),
                    None => break,
                },
            }
        }
        self.exit_code(&created.id).await
    }

    async fn home(&self, user: &str) -> Result<String, DriverError> {
        let user = self.user_or_default(user);
        let passwd = self.passwd().await?;
        Ok(passwd_entry(&passwd, user_name(user))
            .map(|entry| entry.home)
            .unwrap_or_else(|| default_home(user_name(user)).to_string()))
    }

    async fn put_archive(
        &self,
        dest: &str,
        user: &str,
        tar: ByteStream,
    ) -> Result<(), DriverError> {
        if !dest.starts_with('/') {
            return Err(DriverError::Refused(format!(
                "{dest} is not an absolute path"
            )));
        }
        let user = self.user_or_default(user);
        let passwd = self.passwd().await?;
        let owner = resolve_owner(&passwd, user)
            .ok_or_else(|| DriverError::Refused(format!("unknown user {user}")))?;
        self.make_dir(dest, owner).await?;
        let rewrite = Rewrite {
            strip_root: false,
            owner: Some(owner),
        };
        // Refuses escaping entries and drops setuid/setgid bits before the Engine sees
        // the archive (security review M4).
        let refusal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = refusal.clone();
        let tar = crate::executor::archive::hardened_stream(tar)
            .inspect_err(move |e| {
                if let Ok(mut slot) = seen.lock() {
                    slot.get_or_insert_with(|| e.to_string());
                }
            })
            .boxed();
        let uploaded = self.upload(dest, rewrite_stream(tar, rewrite)).await;
        match refusal.lock().ok().and_then(|mut slot| slot.take()) {
            Some(why) => Err(DriverError::Refused(why)),
            None => uploaded,
        }
    }

    async fn get_archive(&self, path: &str) -> Result<ByteStream, DriverError> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut archive = self
            .docker
            .download_from_container(self.main(), Some(options))
            .boxed();
        // The Engine's answer (a 404 for a missing path) comes with the first poll.
        let first = match archive.next().await {
            Some(Err(e)) if status(&e) == Some(404) => {
                return Err(DriverError::NotFound(path.to_string()));
            }
            first => first.map(|r| r.map_err(engine)),
        };
        let archive = stream::iter(first).chain(archive.map_err(engine)).boxed();
        let rewrite = Rewrite {
            strip_root: true,
            owner: None,
        };
        Ok(rewrite_stream(archive, rewrite))
    }

    async fn stop(&self) {
        let options = StopContainerOptionsBuilder::new()
            .t(STOP_GRACE_SECS)
            .build();
        for id in self.containers.iter().rev() {
            if let Err(e) = self.docker.stop_container(id, Some(options.clone())).await
                && !matches!(status(&e), Some(304 | 404))
            {
                tracing::warn!(container = %id, error = %e, "cannot stop container");
            }
        }
    }

    async fn remove(&self) {
        for id in self.containers.iter().rev() {
            if let Err(e) = remove_container(&self.docker, id).await {
                tracing::warn!(container = %id, error = %e, "cannot remove container");
            }
        }
    }
}

/// Force-removes a container and its anonymous volumes; a missing one is fine.
async fn remove_container(docker: &Docker, id: &str) -> Result<(), DriverError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        // 409: a removal of this container is already in progress.
        Err(e) if status(&e) == Some(409) => Ok(()),
        Err(e) => Err(engine(e)),
    }
}

/// A container's host configuration: its network, its mounts, the executor's limits and,
/// unless it is privileged (which an executor must allow), every capability dropped
/// but [`CAPABILITIES`] and no new privileges (setuid binaries do not raise them).
fn host_config(
    container: &Container,
    network_mode: Option<String>,
    limits: PodLimits,
    mounts: Option<Vec<bollard::models::Mount>>,
) -> HostConfig {
    let limit = |n: i64| (n > 0).then_some(n);
    let hardened = !container.privileged;
    HostConfig {
        network_mode,
        privileged: Some(container.privileged),
        mounts,
        memory: limit(limits.memory_bytes),
        memory_swap: limit(limits.memory_bytes),
        nano_cpus: limit(limits.nano_cpus),
        pids_limit: limit(limits.pids),
        cap_drop: hardened.then(|| vec!["ALL".to_string()]),
        cap_add: hardened.then(|| CAPABILITIES.iter().map(|c| c.to_string()).collect()),
        security_opt: hardened.then(|| vec!["no-new-privileges".to_string()]),
        ..Default::default()
    }
}

fn engine(e: bollard::errors::Error) -> DriverError {
    DriverError::Engine(e.to_string())
}

/// The HTTP status of an Engine error answer.
fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn env_list<'a>(env: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<String> {
    env.map(|(k, v)| format!("{k}={v}")).collect()
}

/// Container 0 idles unless given an entrypoint; services keep their image's command
/// unless given one. An entrypoint is split on whitespace and replaces the image's
/// entrypoint and command.
fn entrypoint(container: &Container, index: usize) -> Option<Vec<String>> {
    let words: Vec<String> = container
        .entrypoint
        .split_whitespace()
        .map(str::to_string)
        .collect();
    match (words.is_empty(), index) {
        (false, _) => Some(words),
        (true, 0) => Some(vec!["/bin/sh".into(), "-c".into(), IDLE_COMMAND.into()]),
        (true, _) => None,
    }
}

/// `base/rel`, or `base` when `rel` is empty.
fn join_path(base: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches("./");
    match (base.trim_end_matches('/'), rel) {
        ("", "" | ".") => "/".into(),
        (base, "" | ".") => base.into(),
        (base, rel) => format!("{base}/{rel}"),
    }
}

/// The registry host of an image reference (`docker.io` when it names none).
fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The repository and the tag (or digest) to pull; `latest` when the reference has none.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// The credentials for `host` among the task's registry auths (Docker Hub answers to
/// several names).
fn registry_credentials(
    auths: &std::collections::BTreeMap<String, RegistryAuth>,
    host: &str,
) -> Result<Option<DockerCredentials>, DriverError> {
    let aliases: &[&str] = if host == "docker.io" {
        &[
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ]
    } else {
        &[host]
    };
    let Some(auth) = aliases.iter().find_map(|h| auths.get(*h)) else {
        return Ok(None);
    };
    let (username, password) = match auth.kind {
        RegistryAuthType::Basic => (auth.username.clone(), auth.password.clone()),
        RegistryAuthType::Encodedauth => {
            let invalid =
                || DriverError::Refused(format!("registry auth for {host}: invalid encoded auth"));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.auth.trim())
                .map_err(|_| invalid())?;
            let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (u, p) = decoded.split_once(':').ok_or_else(invalid)?;
            (u.to_string(), p.to_string())
        }
    };
    Ok(Some(DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    }))
}

/// A line of `/etc/passwd`.
#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry {
    uid: u64,
    gid: u64,
    home: String,
}

/// The entry of `user` (a name or a numeric uid) in a passwd file.
fn passwd_entry(passwd: &str, user: &str) -> Option<PasswdEntry> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
            return None;
        };
        if *name != user && *uid != user {
            return None;
        }
        Some(PasswdEntry {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
            home: (*home).to_string(),
        })
    })
}

/// The user part of a `user[:group]` spec.
fn user_name(user: &str) -> &str {
    user.split_once(':').map_or(user, |(u, _)| u)
}

/// The home of a user the passwd file does not know.
fn default_home(user: &str) -> &'static str {
    match user {
        "" | "root" | "0" => "/root",
        _ => "/",
    }
}

/// Numeric owner of files, `(uid, gid)`.
type Owner = (u64, u64);

/// The owner for a `user[:group]` spec: names through the passwd file, numbers as they
/// are (a numeric user unknown to passwd gets group 0, as with docker). `None` for an
/// unknown name.
fn resolve_owner(passwd: &str, user: &str) -> Option<Owner> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd_entry(passwd, name);
    let (uid, gid) = match (entry, name.parse::<u64>()) {
        (Some(e), _) => (e.uid, e.gid),
        (None, Ok(uid)) => (uid, 0),
        (None, Err(_)) if name == "root" => (0, 0),
        (None, Err(_)) => return None,
    };
    let gid = match group.map(str::parse::<u64>) {
        Some(Ok(g)) => g,
        _ => gid,
    };
    Some((uid, gid))
}

/// Applies a [`TarRewriter`] to a stream of tar bytes.
fn rewrite_stream(input: ByteStream, rewrite: Rewrite) -> ByteStream {
    let rewriter = TarRewriter::new(rewrite);
    stream::unfold(Some((input, rewriter)), |state| async move {
        let (mut input, mut rewriter) = state?;
        match input.next().await {
            Some(Ok(chunk)) => match rewriter.push(&chunk) {
                Ok(out) => Some((Ok(Bytes::from(out)), Some((input, rewriter)))),
                Err(e) => Some((Err(e.into()), None)),
            },
            Some(Err(e)) => Some((Err(e), None)),
            None => rewriter.finish().err().map(|e| (Err(e.into()), None)),
        }
    })
    .try_filter(|chunk| futures::future::ready(!chunk.is_empty()))
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Tar archives, as far as this driver needs them: a streaming rewriter of entry names and
// owners (ustar, PAX and GNU long names), a directory-entries writer and a one-file
// reader. Pure code over bytes, no I/O.
//
// TODO(lead): this section wants its own file (e.g. `driver/tar.rs`) once the local
// driver's archive code lands; it stays here because this task owns only docker.rs.

const BLOCK: usize = 512;

/// A malformed tar archive.
#[derive(Debug, thiserror::Error)]
#[error("malformed tar archive: {0}")]
struct TarError(String);

impl From<TarError> for DriverError {
    fn from(e: TarError) -> Self {
        DriverError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// What [`TarRewriter`] changes in each entry.
#[derive(Clone, Copy, Debug, Default)]
struct Rewrite {
    /// When the first entry is a directory, drop it and make the others' names (and hard
    /// link targets) relative to it. The Engine's archive of `/a/b` holds `b/`, `b/x`…
    strip_root: bool,
    /// Set every entry's numeric owner (and clear owner names).
    owner: Option<Owner>,
}

enum TarState {
    /// Expecting a header block.
    Header,
    /// Copying this many bytes of entry data (padding included).
    Copy(u64),
    /// Dropping this many bytes.
    Skip(u64),
    /// Collecting the data of a PAX (`x`) or GNU long name/link (`L`/`K`) header.
    Extended {
        kind: u8,
        size: usize,
        padded: usize,
    },
    /// After the end-of-archive block: everything passes through.
    Trailer,
}

/// What extended headers said about the next entry.
#[derive(Default)]
struct Pending {
    pax: PaxRecords,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Rewrites a tar archive fed in arbitrary chunks, without holding more than one entry's
/// headers in memory.
struct TarRewriter {
    rewrite: Rewrite,
    state: TarState,
    buf: Vec<u8>,
    pending: Pending,
    /// `None` until the first entry; then the directory prefix to strip, if any.
    root: Option<Option<Vec<u8>>>,
}

impl TarRewriter {
    fn new(rewrite: Rewrite) -> Self {
        TarRewriter {
            rewrite,
            state: TarState::Header,
            buf: Vec::new(),
            pending: Pending::default(),
            root: None,
        }
    }

    /// Feeds the next chunk; returns the rewritten bytes ready so far.
    fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, TarError> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::with_capacity(self.buf.len() + BLOCK);
        let mut pos = 0;
        loop {
            let available = self.buf.len() - pos;
            match self.state {
                TarState::Trailer => {
                    out.extend_from_slice(&self.buf[pos..]);
                    pos = self.buf.len();
                    break;
                }
                TarState::Copy(left) | TarState::Skip(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(available);
                    if matches!(self.state, TarState::Copy(_)) {
                        out.extend_from_slice(&self.buf[pos..pos + n]);
                    }
                    pos += n;
                    let left = left - n as u64;
                    self.state = match (left, &self.state) {
                        (0, _) => TarState::Header,
                        (_, TarState::Copy(_)) => TarState::Copy(left),
                        _ => TarState::Skip(left),
                    };
                    if left > 0 {
                        break;
                    }
                }
                TarState::Extended { kind, size, padded } => {
                    if available < padded {
                        break;
                    }
                    let data = &self.buf[pos..pos + size];
                    match kind {
                        b'x' => self.pending.pax.extend(parse_pax(data)?),
                        b'L' => self.pending.long_name = Some(c_string(data).to_vec()),
                        _ => self.pending.long_link = Some(c_string(data).to_vec()),
                    }
                    pos += padded;
                    self.state = TarState::Header;
                }
                TarState::Header => {
                    if available < BLOCK {
                        break;
                    }
                    let mut block = [0u8; BLOCK];
                    block.copy_from_slice(&self.buf[pos..pos + BLOCK]);
                    pos += BLOCK;
                    self.header(block, &mut out)?;
                }
            }
        }
        self.buf.drain(..pos);
        Ok(out)
    }

    /// Checks the archive did not stop in the middle of an entry.
    fn finish(&self) -> Result<(), TarError> {
        match self.state {
            TarState::Header | TarState::Trailer if self.buf.is_empty() => Ok(()),
            _ => Err(TarError("archive ends in the middle of an entry".into())),
        }
    }

    fn header(&mut self, mut block: [u8; BLOCK], out: &mut Vec<u8>) -> Result<(), TarError> {
        if block.iter().all(|b| *b == 0) {
            out.extend_from_slice(&block);
            self.state = TarState::Trailer;
            return Ok(());
        }
        let kind = block[156];
        let mut size = parse_number(&block[124..136])?;
        if !matches!(kind, b'x' | b'L' | b'K' | b'g')
            && let Some(v) = pax_value(&self.pending.pax, b"size")
        {
            size = parse_decimal(v)?;
        }
        let padded = padded(size);
        match kind {
            b'x' | b'L' | b'K' => {
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| *s <= 1 << 20)
                    .ok_or_else(|| TarError("extended header over 1 MiB".into()))?;
                self.state = TarState::Extended {
                    kind,
                    size,
                    padded: padded as usize,
                };
                return Ok(());
            }
            b'g' => {
                out.extend_from_slice(&block);
                self.state = TarState::Copy(padded);
                return Ok(());
            }
            _ => {}
        }
        let pending = std::mem::take(&mut self.pending);
        let mut name = match (pax_value(&pending.pax, b"path"), &pending.long_name) {
            (Some(p), _) => p.to_vec(),
            (None, Some(l)) => l.clone(),
            (None, None) => ustar_name(&block),
        };
        let mut link = match (pax_value(&pending.pax, b"linkpath"), &pending.long_link) {
            (Some(p), _) => p.to_vec(),
            (None, Some(l)) => l.clone(),
            (None, None) => c_string(&block[157..257]).to_vec(),
        };
        let root = self.root.get_or_insert_with(|| {
            (self.rewrite.strip_root && kind == b'5').then(|| trim_slashes(&name).to_vec())
        });
        if let Some(root) = root {
            let relative = strip_prefix(&name, root);
            if relative.is_empty() {
                self.state = TarState::Skip(padded);
                return Ok(());
            }
            name = relative.to_vec();
            if kind == b'1' {
                link = strip_prefix(&link, root).to_vec();
            }
        }
        let mut records: PaxRecords = pending
            .pax
            .into_iter()
            .filter(|(k, _)| {
                let owner_key = matches!(k.as_slice(), b"uid" | b"gid" | b"uname" | b"gname");
                !matches!(k.as_slice(), b"path" | b"linkpath")
                    && (!owner_key || self.rewrite.owner.is_none())
            })
            .collect();
        if let Some((uid, gid)) = self.rewrite.owner {
            for (field, id, key) in [(108..116, uid, b"uid"), (116..124, gid, b"gid")] {
                if !write_octal(&mut block[field], id) {
                    records.push((key.to_vec(), id.to_string().into_bytes()));
                }
            }
            block[265..329].fill(0);
        }
        if name.len() > 100 {
            records.push((b"path".to_vec(), name.clone()));
        }
        if link.len() > 100 {
            records.push((b"linkpath".to_vec(), link.clone()));
        }
        set_field(&mut block[0..100], &name);
        set_field(&mut block[157..257], &link);
        if &block[257..263] == b"ustar\0" {
            block[345..500].fill(0);
        }
        if !records.is_empty() {
            out.extend_from_slice(&pax_header(&records));
        }
        set_checksum(&mut block);
        out.extend_from_slice(&block);
        self.state = TarState::Copy(padded);
        Ok(())
    }
}

/// A tar of directory entries (`a/`, `a/b/`… for `["a", "b"]`), mode 0755, owned by
/// `owner`, followed by the end-of-archive blocks.
fn directory_archive(components: &[&str], owner: Owner) -> Vec<u8> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = Vec::new();
    let mut path = String::new();
    for component in components {
        path.push_str(component);
        path.push('/');
        let mut block = new_header(path.as_bytes(), b'5', 0o755, 0, mtime);
        let mut records = Vec::new();
        if path.len() > 100 {
            records.push((b"path".to_vec(), path.as_bytes().to_vec()));
        }
        for (field, id, key) in [(108..116, owner.0, b"uid"), (116..124, owner.1, b"gid")] {
            if !write_octal(&mut block[field], id) {
                records.push((key.to_vec(), id.to_string().into_bytes()));
            }
        }
        if !records.is_empty() {
            out.extend_from_slice(&pax_header(&records));
        }
        set_checksum(&mut block);
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

/// The data of the first regular file in a complete tar archive.
fn first_file(archive: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while pos + BLOCK <= archive.len() {
        let block = &archive[pos..pos + BLOCK];
        if block.iter().all(|b| *b == 0) {
            return None;
        }
        let size = usize::try_from(parse_number(&block[124..136]).ok()?).ok()?;
        let data = pos + BLOCK;
        if matches!(block[156], b'0' | 0) {
            return archive.get(data..data + size);
        }
        pos = data + padded(size as u64) as usize;
    }
    None
}

/// A header block (checksum not yet set) with ustar magic.
fn new_header(name: &[u8], kind: u8, mode: u64, size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    set_field(&mut block[0..100], name);
    write_octal(&mut block[100..108], mode);
    write_octal(&mut block[108..116], 0);
    write_octal(&mut block[116..124], 0);
    write_octal(&mut block[124..136], size);
    write_octal(&mut block[136..148], mtime);
    block[156] = kind;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block
}

/// A PAX extended header (header block and padded records) for the next entry.
fn pax_header(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n", where <len> counts its own digits.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} ").as_bytes());
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut block = new_header(b"././@PaxHeader", b'x', 0o644, data.len() as u64, 0);
    set_checksum(&mut block);
    let mut out = block.to_vec();
    out.extend_from_slice(&data);
    out.resize(BLOCK + padded(data.len() as u64) as usize, 0);
    out
}

/// PAX `key=value` records, in order.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(data: &[u8]) -> Result<PaxRecords, TarError> {
    let bad = || TarError("bad PAX record".into());
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|len| *len > space + 1 && *len <= rest.len())
            .ok_or_else(bad)?;
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").ok_or_else(bad)?;
        let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

/// The last value of `key` (later records win).
fn pax_value<'a>(records: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn parse_decimal(v: &[u8]) -> Result<u64, TarError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TarError("bad PAX size".into()))
}

/// A numeric header field: octal text, or base-256 when its top bit is set.
fn parse_number(field: &[u8]) -> Result<u64, TarError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Ok(field[1..]
            .iter()
            .fold(u64::from(field[0] & 0x7f), |n, b| (n << 8) | u64::from(*b)));
    }
    let text = std::str::from_utf8(field).map_err(|_| TarError("bad number".into()))?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError(format!("bad number {text:?}")))
}

/// Writes `n` as zero-padded octal with a NUL; false when it does not fit.
fn write_octal(field: &mut [u8], n: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{n:0digits$o}");
    if text.len() > digits {
        field.fill(0);
        field[..digits].fill(b'0');
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// The entry name of a ustar (or older) header: `prefix/name` when the prefix is set.
fn ustar_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = c_string(&block[0..100]);
    let prefix = c_string(&block[345..500]);
    if &block[257..263] == b"ustar\0" && !prefix.is_empty() {
        [prefix, b"/", name].concat()
    } else {
        name.to_vec()
    }
}

/// The bytes before the first NUL.
fn c_string(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|b| *b == 0)
        .map_or(field, |end| &field[..end])
}

fn trim_slashes(name: &[u8]) -> &[u8] {
    let mut name = name;
    while let Some(rest) = name.strip_prefix(b"./") {
        name = rest;
    }
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    name
}

/// `name` relative to the directory `root` (empty for `root` itself); unchanged when not
/// under it.
fn strip_prefix<'a>(name: &'a [u8], root: &[u8]) -> &'a [u8] {
    let trimmed = {
        let mut n = name;
        while let Some(rest) = n.strip_prefix(b"./") {
            n = rest;
        }
        n
    };
    if trim_slashes(trimmed) == root {
        return &[];
    }
    match trimmed.strip_prefix(root) {
        Some(rest) if rest.starts_with(b"/") => &rest[1..],
        _ => name,
    }
}

/// `size` rounded up to whole blocks.
fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 (L6): a private image pulled with one task's credentials is not reused
    /// by a task without them.
    #[test]
    fn an_image_pulled_with_credentials_is_pulled_again_without_them() {
        let private = BTreeSet::from(["sha256:private".to_string()]);
        assert_eq!(
            pull_decision(Some("sha256:public"), false, &private),
            Pull::UseLocal
        );
        assert_eq!(
            pull_decision(Some("sha256:private"), false, &private),
            Pull::Anonymously
        );
        assert_eq!(pull_decision(None, false, &private), Pull::Anonymously);
        assert_eq!(
            pull_decision(Some("sha256:public"), true, &private),
            Pull::WithCredentials
        );
        assert_eq!(pull_decision(None, true, &private), Pull::WithCredentials);
    }

    /// Issue 11 (L6): limits, dropped capabilities and no new privileges, unless the
    /// container is privileged (which the executor must allow).
    #[test]
    fn containers_are_limited_and_lose_capabilities() {
        let limits = PodLimits {
            memory_bytes: 1 << 30,
            nano_cpus: 1_500_000_000,
            pids: 100,
        };
        let c = Container {
            image: "busybox".into(),
            ..Default::default()
        };
        let h = host_config(&c, None, limits, None);
        assert_eq!((h.memory, h.memory_swap), (Some(1 << 30), Some(1 << 30)));
        assert_eq!(
            (h.nano_cpus, h.pids_limit),
            (Some(1_500_000_000), Some(100))
        );
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.cap_add.as_ref().map(Vec::len), Some(CAPABILITIES.len()));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
        let none = host_config(&c, None, PodLimits::default(), None);
        assert_eq!(
            (none.memory, none.nano_cpus, none.pids_limit),
            (None, None, None)
        );
        let privileged = Container {
            privileged: true,
            ..c
        };
        let p = host_config(&privileged, None, limits, None);
        assert_eq!((p.cap_drop, p.security_opt), (None, None));
        assert_eq!(p.pids_limit, Some(100));
    }

    #[test]
    fn sizes_and_cpus_parse() {
        assert_eq!(parse_size("512m").expect("ok"), 512 << 20);
        assert_eq!(parse_size("4G").expect("ok"), 4 << 30);
        assert_eq!(parse_size("1000").expect("ok"), 1000);
        assert_eq!(parse_size("0").expect("ok"), 0);
        for bad in ["", "g", "-1", "1t", "99999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(nano_cpus(1.5).expect("ok"), 1_500_000_000);
        assert!(nano_cpus(-1.0).is_err() && nano_cpus(f64::NAN).is_err());
    }
    use crate::executor::driver::Discard;

    // ---- pure parts: tar rewriting, users, image references ---------------------------

    /// A tar entry as the tests see it.
    #[derive(Debug, PartialEq, Eq)]
    struct Entry {
        name: String,
        kind: u8,
        uid: u64,
        gid: u64,
        link: String,
        data: Vec<u8>,
    }

    /// Reads a whole archive, applying PAX `path`/`linkpath`/`uid`/`gid` records.
    fn entries(archive: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pax = Vec::new();
        let mut pos = 0;
        while pos + BLOCK <= archive.len() {
            let block: &[u8; BLOCK] = archive[pos..pos + BLOCK].try_into().expect("a block");
            if block.iter().all(|b| *b == 0) {
                break;
            }
            let size = parse_number(&block[124..136]).expect("size") as usize;
            let data = archive[pos + BLOCK..pos + BLOCK + size].to_vec();
            pos += BLOCK + padded(size as u64) as usize;
            if block[156] == b'x' {
                pax = parse_pax(&data).expect("pax records");
                continue;
            }
            let text = |key: &[u8], default: Vec<u8>| {
                String::from_utf8(pax_value(&pax, key).map_or(default, <[u8]>::to_vec))
                    .expect("utf-8")
            };
            let number = |key: &[u8], field: &[u8]| {
                pax_value(&pax, key)
                    .map_or_else(|| parse_number(field), parse_decimal)
                    .expect("a number")
            };
            out.push(Entry {
                name: text(b"path", ustar_name(block)),
                kind: block[156],
                uid: number(b"uid", &block[108..116]),
                gid: number(b"gid", &block[116..124]),
                link: text(b"linkpath", c_string(&block[157..257]).to_vec()),
                data,
            });
            pax.clear();
        }
        out
    }

    /// Builds an archive of `(name, kind, link, data)` entries owned by 1000:1000, names
    /// over 100 bytes through PAX.
    fn archive(items: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in items {
            let mode = if *kind == b'5' { 0o755 } else { 0o644 };
            let mut block = new_header(name.as_bytes(), *kind, mode, data.len() as u64, 1);
            write_octal(&mut block[108..116], 1000);
            write_octal(&mut block[116..124], 1000);
            set_field(&mut block[265..297], b"someone");
            set_field(&mut block[157..257], link.as_bytes());
            if name.len() > 100 {
                out.extend_from_slice(&pax_header(&[(b"path".to_vec(), name.as_bytes().to_vec())]));
            }
            set_checksum(&mut block);
            out.extend_from_slice(&block);
            out.extend_from_slice(data);
            out.resize(
                out.len() + (padded(data.len() as u64) as usize - data.len()),
                0,
            );
        }
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }

    /// Feeds `input` to a rewriter in chunks of `chunk` bytes.
    fn rewrite_in_chunks(input: &[u8], rewrite: Rewrite, chunk: usize) -> Vec<u8> {
        let mut rewriter = TarRewriter::new(rewrite);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            out.extend(rewriter.push(piece).expect("a valid archive"));
        }
        rewriter.finish().expect("a complete archive");
        out
    }

    fn long_name(root: &str) -> String {
        format!("{root}/{}/file.txt", "deep".repeat(30))
    }

    #[test]
    fn engine_archives_get_names_relative_to_the_path_asked_for() {
        let long = long_name("ws");
        let input = archive(&[
            ("ws/", b'5', "", b""),
            ("ws/a.txt", b'0', "", b"alpha"),
            ("ws/d/", b'5', "", b""),
            ("ws/d/b.txt", b'0', "", &[7u8; 1500]),
            ("ws/d/hard", b'1', "ws/a.txt", b""),
            ("ws/d/soft", b'2', "../a.txt", b""),
            (&long, b'0', "", b"deep"),
        ]);
        let rewrite = Rewrite {
            strip_root: true,
            owner: None,
        };
        for chunk in [1, 7, 511, 512, 513, 4096, input.len()] {
            let got = entries(&rewrite_in_chunks(&input, rewrite, chunk));
            let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "a.txt",
                    "d/",
                    "d/b.txt",
                    "d/hard",
                    "d/soft",
                    &long["ws/".len()..]
                ],
                "chunk {chunk}"
            );
            assert_eq!(got[0].data, b"alpha");
            assert_eq!(got[2].data, vec![7u8; 1500]);
            assert_eq!(got[3].link, "a.txt", "hard links point inside the archive");
            assert_eq!(got[4].link, "../a.txt", "symlink targets are left alone");
            assert_eq!(got[5].data, b"deep");
            assert_eq!(got[0].uid, 1000, "owners are kept unless asked");
        }
    }

    #[test]
    fn an_archive_of_a_single_file_keeps_its_name() {
        let input = archive(&[("passwd", b'0', "", b"root:x:0:0::/root:/bin/sh\n")]);
        let got = entries(&rewrite_in_chunks(
            &input,
            Rewrite {
                strip_root: true,
                owner: None,
            },
            100,
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "passwd");
    }

    #[test]
    fn gnu_long_names_become_pax_records() {
        let long = long_name("ws");
        let mut input = Vec::new();
        let mut block = new_header(b"././@LongLink", b'L', 0o644, long.len() as u64 + 1, 0);
        set_checksum(&mut block);
        input.extend_from_slice(&block);
        let mut name = long.clone().into_bytes();
        name.push(0);
        name.resize(padded(name.len() as u64) as usize, 0);
        input.extend_from_slice(&name);
        let rest = archive(&[(&long[..100], b'0', "", b"x")]);
        input.extend_from_slice(&rest);
        let mut with_root = archive(&[("ws/", b'5', "", b"")]);
        with_root.truncate(BLOCK);
        with_root.extend_from_slice(&input);

        let got = entries(&rewrite_in_chunks(
            &with_root,
            Rewrite {
                strip_root: true,
                owner: None,
            },
            64,
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, long["ws/".len()..]);
        assert_eq!(got[0].data, b"x");
    }

    #[test]
    fn uploaded_entries_get_the_owner_asked_for() {
        let input = archive(&[("a/", b'5', "", b""), ("a/f", b'0', "", b"f")]);
        let rewrite = Rewrite {
            strip_root: false,
            owner: Some((65534, 65534)),
        };
        let output = rewrite_in_chunks(&input, rewrite, 300);
        let got = entries(&output);
        assert_eq!(
            got.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a/", "a/f"]
        );
        assert!(got.iter().all(|e| (e.uid, e.gid) == (65534, 65534)));
        assert_eq!(c_string(&output[265..297]), b"", "owner names are cleared");

        let huge = Rewrite {
            strip_root: false,
            owner: Some((1 << 40, 5)),
        };
        let got = entries(&rewrite_in_chunks(&input, huge, 300));
        assert_eq!(
            (got[1].uid, got[1].gid),
            (1 << 40, 5),
            "ids too big for octal go to PAX"
        );
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let input = archive(&[("f", b'0', "", &[1u8; 2000])]);
        let mut rewriter = TarRewriter::new(Rewrite::default());
        rewriter.push(&input[..1000]).expect("a valid start");
        assert!(rewriter.finish().is_err());
    }

    #[test]
    fn directory_archives_create_each_missing_component() {
        let got = entries(&directory_archive(&["work", "ws"], (65534, 100)));
        assert_eq!(
            got.iter()
                .map(|e| (e.name.as_str(), e.kind, e.uid, e.gid))
                .collect::<Vec<_>>(),
            [("work/", b'5', 65534, 100), ("work/ws/", b'5', 65534, 100)]
        );
        let long = "x".repeat(120);
        let got = entries(&directory_archive(&[&long], (0, 0)));
        assert_eq!(got[0].name, format!("{long}/"));
    }

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        for len in 80..120 {
            let value = vec![b'v'; len];
            let header = pax_header(&[(b"path".to_vec(), value.clone())]);
            let size = parse_number(&header[124..136]).expect("size") as usize;
            let records = parse_pax(&header[BLOCK..BLOCK + size]).expect("valid records");
            assert_eq!(records, [(b"path".to_vec(), value)]);
        }
    }

    #[test]
    fn the_first_file_of_an_archive_is_read_through_pax_headers() {
        let mut input = pax_header(&[(b"mtime".to_vec(), b"1.5".to_vec())]);
        input.extend(archive(&[(
            "passwd",
            b'0',
            "",
            b"root:x:0:0::/root:/bin/sh\n",
        )]));
        assert_eq!(
            first_file(&input),
            Some(&b"root:x:0:0::/root:/bin/sh\n"[..])
        );
        assert_eq!(first_file(&archive(&[("d/", b'5', "", b"")])), None);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
                          dev:x:1000:1001::/home/dev:/bin/sh\n";

    #[test]
    fn users_resolve_through_passwd_by_name_or_uid() {
        assert_eq!(
            passwd_entry(PASSWD, "dev").map(|e| e.home),
            Some("/home/dev".into())
        );
        assert_eq!(passwd_entry(PASSWD, "1000").map(|e| e.gid), Some(1001));
        assert_eq!(passwd_entry(PASSWD, "ghost"), None);
        assert_eq!(resolve_owner(PASSWD, "nobody"), Some((65534, 65534)));
        assert_eq!(resolve_owner(PASSWD, "dev:50"), Some((1000, 50)));
        assert_eq!(resolve_owner(PASSWD, "4242"), Some((4242, 0)));
        assert_eq!(resolve_owner("", "root"), Some((0, 0)));
        assert_eq!(resolve_owner(PASSWD, "ghost"), None);
        assert_eq!(user_name("dev:50"), "dev");
        assert_eq!(default_home("root"), "/root");
        assert_eq!(default_home("4242"), "/");
    }

    #[test]
    fn working_dirs_are_joined_under_the_home() {
        assert_eq!(join_path("/root", ""), "/root");
        assert_eq!(join_path("/root/", "src/app"), "/root/src/app");
        assert_eq!(join_path("/", "./x"), "/x");
        assert_eq!(join_path("/", ""), "/");
    }

    #[test]
    fn image_references_give_their_registry_and_tag() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/debian:12"), "docker.io");
        assert_eq!(registry_host("ghcr.io/org/app:1"), "ghcr.io");
        assert_eq!(registry_host("localhost:5000/app"), "localhost:5000");
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("localhost:5000/app:1.2"),
            ("localhost:5000/app", "1.2")
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }

    #[test]
    fn registry_credentials_come_from_basic_or_encoded_auth() {
        let auths = std::collections::BTreeMap::from([
            (
                "index.docker.io".to_string(),
                RegistryAuth {
                    username: "u".into(),
                    password: "p".into(),
                    ..Default::default()
                },
            ),
            (
                "ghcr.io".to_string(),
                RegistryAuth {
                    kind: RegistryAuthType::Encodedauth,
                    auth: base64::engine::general_purpose::STANDARD.encode("me:se:cret"),
                    ..Default::default()
                },
            ),
            (
                "bad.io".to_string(),
                RegistryAuth {
                    kind: RegistryAuthType::Encodedauth,
                    auth: "!!".into(),
                    ..Default::default()
                },
            ),
        ]);
        let hub = registry_credentials(&auths, "docker.io")
            .expect("valid")
            .expect("found");
        assert_eq!(
            (hub.username.as_deref(), hub.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let ghcr = registry_credentials(&auths, "ghcr.io")
            .expect("valid")
            .expect("found");
        assert_eq!(
            (ghcr.username.as_deref(), ghcr.password.as_deref()),
            (Some("me"), Some("se:cret"))
        );
        assert!(
            registry_credentials(&auths, "quay.io")
                .expect("valid")
                .is_none()
        );
        assert!(matches!(
            registry_credentials(&auths, "bad.io"),
            Err(DriverError::Refused(_))
        ));
    }

    #[test]
    fn container_zero_idles_unless_given_an_entrypoint() {
        let plain = Container {
            image: "x".into(),
            ..Default::default()
        };
        let with = Container {
            entrypoint: "nc -l -p 8080".into(),
            ..plain.clone()
        };
        assert_eq!(
            entrypoint(&plain, 0),
            Some(vec![
                "/bin/sh".to_string(),
                "-c".into(),
                IDLE_COMMAND.into()
            ])
        );
        assert_eq!(
            entrypoint(&plain, 1),
            None,
            "services keep their image's command"
        );
        assert_eq!(
            entrypoint(&with, 1),
            Some(vec!["nc".into(), "-l".into(), "-p".into(), "8080".into()])
        );
    }

    // ---- against the machine's Docker Engine (CAIRN_DOCKER_TESTS=1) -------------------

    const TEST_IMAGE: &str = "cairn-test/busybox:latest";

    /// A driver for one test, with its own executor id; every container it labelled is
    /// removed on drop, pass or fail.
    struct Engine {
        driver: DockerDriver,
        executor_id: String,
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            let filter = format!("label={LABEL_EXECUTOR}={}", self.executor_id);
            let Ok(listed) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            else {
                return;
            };
            let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
    }

    /// `None` (the test is skipped) unless CAIRN_DOCKER_TESTS=1; then the Engine and the
    /// test image must be there.
    async fn engine(options: DockerOptions) -> Option<Engine> {
        if std::env::var("CAIRN_DOCKER_TESTS").as_deref() != Ok("1") {
            println!("skipped: set CAIRN_DOCKER_TESTS=1");
            return None;
        }
        let driver = DockerDriver::connect(options).await.unwrap_or_else(|e| {
            panic!(
                "the Docker Engine is needed ({e}); start it and run scripts/docker-test-image.sh"
            )
        });
        if let Err(e) = driver.docker.inspect_image(TEST_IMAGE).await {
            panic!("image {TEST_IMAGE} is missing ({e}): run scripts/docker-test-image.sh");
        }
        Some(Engine {
            driver,
            executor_id: format!("test-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    fn container(entrypoint: &str) -> Container {
        Container {
            image: TEST_IMAGE.into(),
            entrypoint: entrypoint.into(),
            environment: [("FROM_CONTAINER".to_string(), "yes".to_string())].into(),
            ..Default::default()
        }
    }

    impl Engine {
        fn spec(&self, task_id: &str, containers: Vec<Container>) -> PodSpec {
            PodSpec {
                task_id: task_id.into(),
                executor_id: self.executor_id.clone(),
                containers,
                registry_auth: Default::default(),
                task_dir: std::env::temp_dir(),
            }
        }

        async fn pod(&self, containers: Vec<Container>) -> Box<dyn Pod> {
            let spec = self.spec("task", containers);
            self.driver
                .create_pod(&spec, &mut Discard)
                .await
                .expect("a pod of the test image")
        }

        /// Ids of this engine's containers, optionally of one task.
        async fn containers(&self, task: Option<&str>) -> Vec<String> {
            let mut labels = vec![format!("{LABEL_EXECUTOR}={}", self.executor_id)];
            labels.extend(task.map(|t| format!("{LABEL_TASK}={t}")));
            let filters = HashMap::from([("label".to_string(), labels)]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            self.driver
                .docker
                .list_containers(Some(options))
                .await
                .expect("containers listed")
                .into_iter()
                .filter_map(|c| c.id)
                .collect()
        }
    }

    #[derive(Default)]
    struct Collect(Vec<u8>);

    #[async_trait]
    impl LogSink for Collect {
        async fn write(&mut self, data: Bytes) {
            self.0.extend_from_slice(&data);
        }
    }

    impl Collect {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0).into_owned()
        }
    }

    async fn run(pod: &dyn Pod, req: ExecRequest) -> (Option<i32>, String) {
        let mut out = Collect::default();
        let code = pod
            .exec(&req, &mut out, &CancellationToken::new())
            .await
            .expect("the exec runs");
        (code, out.text())
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn bytes_stream(data: Vec<u8>) -> ByteStream {
        stream::iter([Ok(Bytes::from(data))]).boxed()
    }

    async fn collect(stream: ByteStream) -> Vec<u8> {
        stream
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .expect("the archive streams")
    }

    #[tokio::test]
    async fn exec_runs_in_container_zero_with_env_working_dir_and_user() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;

        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh(r#"echo "$GREETING from $(pwd) as $(id -un) $FROM_CONTAINER"; echo oops >&2; exit 3"#),
                env: [("GREETING".to_string(), "hello".to_string())].into(),
                working_dir: "/tmp".into(),
                user: String::new(),
            },
        )
        .await;
        assert_eq!(code, Some(3));
        assert!(output.contains("hello from /tmp as root yes\n"), "{output}");
        assert!(
            output.contains("oops\n"),
            "stderr goes to the sink too: {output}"
        );

        assert_eq!(pod.home("").await.expect("home"), "/root");
        assert_eq!(pod.home("nobody").await.expect("home"), "/nonexistent");
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("id -un; id -u"),
                working_dir: "/tmp".into(),
                user: "nobody".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!((code, output.as_str()), (Some(0), "nobody\n65534\n"));

        // A relative working dir is under the home; put_archive makes it.
        pod.put_archive("/root/src/app", "", bytes_stream(archive(&[])))
            .await
            .expect("an empty archive creates the directory");
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: vec!["pwd".into()],
                working_dir: "src/app".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!((code, output.as_str()), (Some(0), "/root/src/app\n"));
        pod.remove().await;
    }

    /// Issue 10 (1): Agola's container `volumes` (tmpfs with a size) are mounted.
    #[tokio::test]
    async fn a_tmpfs_volume_is_mounted_at_its_path_with_its_size() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let mut c = container("");
        c.volumes = vec![cairn_client::runconfig::Volume {
            path: "/scratch".into(),
            tmpfs: Some(cairn_client::runconfig::TmpfsVolume {
                size_bytes: Some(8 * 1024 * 1024),
            }),
        }];
        let pod = engine.pod(vec![c]).await;
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("grep ' /scratch ' /proc/mounts; df -k /scratch | tail -n 1"),
                working_dir: "/".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(code, Some(0), "{output}");
        let mount = output.lines().next().unwrap_or_default();
        assert!(mount.starts_with("tmpfs /scratch tmpfs "), "{output}");
        assert!(mount.contains("size=8192k"), "{output}");
        let df: Vec<&str> = output
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(df.get(1), Some(&"8192"), "{output}");
        pod.remove().await;
    }

    #[tokio::test]
    async fn a_service_container_is_reached_on_localhost_from_container_zero() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine
            .pod(vec![container(""), container("httpd -f -p 8080 -h /etc")])
            .await;
        // The service may still be starting: ask until it answers (bounded).
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/passwd && exit 0; sleep 0.1; done; exit 1"),
                working_dir: "/".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(code, Some(0), "{output}");
        assert!(output.contains("nobody:x:65534"), "{output}");
        pod.remove().await;
        assert!(
            engine.containers(None).await.is_empty(),
            "remove takes every container"
        );
    }

    #[tokio::test]
    async fn workspace_and_cache_archives_round_trip() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;
        let long = long_name("d");
        let tree = archive(&[
            ("d/", b'5', "", b""),
            ("d/a.txt", b'0', "", b"alpha"),
            ("top.txt", b'0', "", &[9u8; 3000]),
            (&long, b'0', "", b"deep"),
        ]);
        pod.put_archive("/work/ws", "nobody", bytes_stream(tree))
            .await
            .expect("the workspace is restored");

        let got =
            entries(&collect(pod.get_archive("/work/ws").await.expect("the workspace")).await);
        let mut files: Vec<(&str, &[u8])> = got
            .iter()
            .filter(|e| e.kind == b'0')
            .map(|e| (e.name.as_str(), e.data.as_slice()))
            .collect();
        files.sort();
        let mut want: Vec<(&str, &[u8])> = vec![
            ("d/a.txt", b"alpha"),
            ("top.txt", &[9u8; 3000]),
            (&long, b"deep"),
        ];
        want.sort();
        assert_eq!(files, want);
        assert!(got.iter().any(|e| e.name == "d/" && e.kind == b'5'));
        // Entries of the archive get the user; parents it does not list (the long
        // name's) are made by the Engine as root.
        let owners: Vec<(&str, u64, u64)> = got
            .iter()
            .map(|e| (e.name.as_str(), e.uid, e.gid))
            .collect();
        assert!(
            got.iter()
                .filter(|e| e.kind == b'0' || e.name == "d/")
                .all(|e| (e.uid, e.gid) == (65534, 65534)),
            "owned by the user: {owners:?}"
        );

        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("stat -c '%U %a' /work /work/ws; echo more > /work/ws/d/a.txt"),
                working_dir: "/".into(),
                user: "nobody".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            (code, output.as_str()),
            (Some(0), "nobody 755\nnobody 755\n"),
            "the user owns and can write what was restored"
        );

        // A cache of one subdirectory.
        let cache =
            entries(&collect(pod.get_archive("/work/ws/d").await.expect("the cache")).await);
        let names: Vec<&str> = cache.iter().map(|e| e.name.as_str()).collect();
        assert!(
            names.contains(&"a.txt") && names.iter().all(|n| !n.starts_with("d/")),
            "{names:?}"
        );
        pod.remove().await;
    }

    #[tokio::test]
    async fn get_archive_of_a_missing_path_is_not_found() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;
        assert!(matches!(
            pod.get_archive("/no/such/dir").await,
            Err(DriverError::NotFound(p)) if p == "/no/such/dir"
        ));
        pod.remove().await;
    }

    /// Cancels its token when the command first writes.
    struct CancelOnOutput(CancellationToken);

    #[async_trait]
    impl LogSink for CancelOnOutput {
        async fn write(&mut self, _data: Bytes) {
            self.0.cancel();
        }
    }

    #[tokio::test]
    async fn cancel_kills_a_running_exec_and_returns_none() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;
        let cancel = CancellationToken::new();
        let started = std::time::Instant::now();
        let code = pod
            .exec(
                &ExecRequest {
                    cmd: sh("echo started; sleep 60"),
                    working_dir: "/".into(),
                    ..Default::default()
                },
                &mut CancelOnOutput(cancel.clone()),
                &cancel,
            )
            .await
            .expect("a cancelled exec is not an error");
        assert_eq!(code, None);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        pod.stop().await;
        pod.stop().await;
        pod.remove().await;
        pod.remove().await;
        assert!(engine.containers(None).await.is_empty());
    }

    #[tokio::test]
    async fn stop_ends_every_container_and_remove_deletes_them() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine
            .pod(vec![container(""), container("httpd -f -p 8081 -h /etc")])
            .await;
        let ids = engine.containers(None).await;
        assert_eq!(ids.len(), 2);
        pod.stop().await;
        for id in &ids {
            let state = engine
                .driver
                .docker
                .inspect_container(id, None)
                .await
                .expect("inspect")
                .state;
            assert_eq!(
                state.and_then(|s| s.running),
                Some(false),
                "container {id} stopped"
            );
        }
        pod.remove().await;
        assert!(engine.containers(None).await.is_empty());
    }

    #[tokio::test]
    async fn privileged_containers_are_refused_unless_allowed() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let privileged = Container {
            privileged: true,
            ..container("")
        };
        let spec = engine.spec("task", vec![container(""), privileged.clone()]);
        assert!(matches!(
            engine.driver.create_pod(&spec, &mut Discard).await,
            Err(DriverError::Refused(_))
        ));
        assert!(
            engine.containers(None).await.is_empty(),
            "nothing was created"
        );

        let Some(allowing) = self::engine(DockerOptions {
            allow_privileged: true,
            ..DockerOptions::default()
        })
        .await
        else {
            return;
        };
        let spec = allowing.spec("task", vec![privileged]);
        // Allowed by the driver; the Engine itself may still fail to start it where
        // it lacks the capabilities (as in an unprivileged sandbox).
        match allowing.driver.create_pod(&spec, &mut Discard).await {
            Ok(pod) => pod.remove().await,
            Err(e) => assert!(matches!(e, DriverError::Start { .. }), "{e}"),
        }
        assert!(allowing.containers(None).await.is_empty());
    }

    #[tokio::test]
    async fn orphans_of_a_dead_executor_are_removed() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        for task in ["lost", "kept"] {
            let spec = engine.spec(
                task,
                vec![container(""), container("httpd -f -p 8082 -h /etc")],
            );
            // The executor "dies": the pod is dropped without being removed.
            drop(
                engine
                    .driver
                    .create_pod(&spec, &mut Discard)
                    .await
                    .expect("a pod"),
            );
        }
        let removed = engine
            .driver
            .remove_orphans(&engine.executor_id, &["kept".to_string()])
            .await
            .expect("orphans removed");
        assert_eq!(removed, 1, "one pod");
        assert!(engine.containers(Some("lost")).await.is_empty());
        assert_eq!(engine.containers(Some("kept")).await.len(), 2);

        assert_eq!(
            engine
                .driver
                .remove_orphans(&engine.executor_id, &[])
                .await
                .expect("removed"),
            1
        );
        assert!(engine.containers(None).await.is_empty());
    }

    #[tokio::test]
    async fn present_images_are_not_pulled_and_missing_ones_are() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let mut log = Collect::default();
        let spec = engine.spec("task", vec![container("")]);
        let pod = engine
            .driver
            .create_pod(&spec, &mut log)
            .await
            .expect("no registry is needed");
        assert_eq!(log.text(), "", "nothing pulled");
        pod.remove().await;

        // No registry listens there: the pull is tried, fails, and nothing is left.
        let missing = Container {
            image: "127.0.0.1:9/cairn/missing:1".into(),
            ..container("")
        };
        let spec = engine.spec("task", vec![container(""), missing]);
        let mut log = Collect::default();
        let result = engine.driver.create_pod(&spec, &mut log).await;
        assert!(
            matches!(result, Err(DriverError::Refused(_))),
            "{:?}",
            result.err()
        );
        assert!(
            log.text()
                .contains("pulling image 127.0.0.1:9/cairn/missing:1"),
            "{}",
            log.text()
        );
        assert!(engine.containers(None).await.is_empty());
    }
}

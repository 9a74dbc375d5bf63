//! The docker driver: a task's pod is a set of containers on the Docker Engine (through
//! bollard, over the local unix socket), container 0 running the steps and the others
//! services sharing its network namespace, so they are reached on `localhost`.
//!
//! This file holds [`DockerDriver`]: connecting to the Engine, creating a pod's containers
//! (labelled, limited, capabilities dropped) and removing the orphans of a crashed
//! executor. The rest is in its submodules:
//!
//! - `pod`: the running pod (exec and its output stream, cancel, stop, remove);
//! - `transfer`: files in and out of container 0 through the Engine's archive API;
//! - `image`: image references, registry credentials and when to (re-)pull;
//! - `passwd`: users, homes and file owners from the container's `/etc/passwd`.
//!
//! - Images are pulled only when missing, with the task's credentials for the image's
//!   registry host; pull progress goes to the setup log.
//! - Containers carry the labels `cairn.executor`, `cairn.task`, `cairn.pod` and
//!   `cairn.index`: orphans of a crashed executor are found by label and removed.
//! - Container 0 idles with [`IDLE_COMMAND`] (unless the task gives an entrypoint): a plain
//!   `sh` loop, so nothing is injected into the image; steps run by `docker exec` in it.
//! - Files move through the Engine's archive API, so images need no `tar`; the archives are
//!   rewritten on the fly (entry names relative to the path asked for, owners set to the
//!   step's user).
//! - Cancelling an exec kills container 0 (SIGKILL to its init process takes every process
//!   of its PID namespace with it): docker has no "kill this exec", and a second exec would
//!   need tools in the image. The pod can no longer exec afterwards; its archives can
//!   still be read.
//!
//! This module must not know about steps, logs or the run service: it only implements
//! [`Driver`] and [`Pod`].

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use cairn_client::runconfig::{Arch, Container};

use super::{Driver, DriverError, LogSink, Pod, PodSpec};

mod image;
mod passwd;
mod pod;
#[cfg(test)]
mod testbed;
mod transfer;

pub use image::{Pull, pull_decision};
use pod::DockerPod;

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

/// The Engine socket's path for `host` (`unix:///path`), else `DOCKER_HOST`'s, else
/// [`DEFAULT_SOCKET`]. The serve and executor commands pass their `--docker-host` (which
/// clap already defaults to `DOCKER_HOST`); `cairn run`'s embedded executor passes none, so
/// the variable is read here too.
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
    let unreachable = |source| DriverError::Unreachable {
        socket: socket.to_string(),
        source,
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
    let secs = 10;
    match tokio::time::timeout(std::time::Duration::from_secs(secs), probe).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(DriverError::Unanswered { socket, secs }),
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
                return Err(DriverError::Engine(e));
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
            .map_err(DriverError::Engine)?;
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
        Err(e) => Err(DriverError::Engine(e)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::driver::Discard;
    use testbed::{container, engine};

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
}

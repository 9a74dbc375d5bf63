//! Drivers run a task's containers (or host processes) behind one interface: a driver
//! creates a [`Pod`] for a task; the pod runs commands in its first container (or in the
//! task's directory on the host), moves files in and out as tar archives, and is stopped
//! and removed when the task ends. Steps are written once over this interface.
//!
//! - [`local`]: steps are host processes in a per-task directory; no isolation.
//! - [`docker`]: a pod is a set of containers sharing container 0's network namespace,
//!   driven through the Docker Engine API; files move through its archive API.
//! - [`volume`]: container volumes (tmpfs) as docker mounts, and the local driver's notice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_client::ClientError;
use cairn_client::runconfig::{Arch, Container, Env, RegistryAuth};
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

pub mod docker;
pub mod local;
pub mod volume;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The task asks for something this executor or driver refuses (privileged
    /// containers when not allowed, an image that cannot be found…).
    #[error("{0}")]
    Refused(String),
    /// The command could not be started at all (missing shell, bad working dir…).
    #[error("cannot start {what}: {why}")]
    Start { what: String, why: String },
    /// A path asked for does not exist in the pod.
    #[error("{0} not found")]
    NotFound(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A request to the container engine failed.
    #[error("container engine: {0}")]
    Engine(#[from] bollard::errors::Error),
    /// The container engine at `socket` cannot be reached.
    #[error("container engine: cannot reach the Docker Engine at unix://{socket}: {source}")]
    Unreachable {
        socket: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The container engine at `socket` did not answer within `secs` seconds.
    #[error(
        "container engine: the Docker Engine at unix://{socket} did not answer within {secs} s"
    )]
    Unanswered { socket: String, secs: u64 },
    /// The container engine answered in a way the driver cannot use (an exec started
    /// detached, an exec still running after its output ended).
    #[error("container engine: {0}")]
    Unexpected(String),
    /// An archive put into a pod could not be downloaded from the server (`what`: which
    /// archive, like "the cache").
    #[error("downloading {what}: {source}")]
    Download {
        what: &'static str,
        #[source]
        source: ClientError,
    },
}

/// Where output goes: the step's live log. Writes must not block for long.
#[async_trait]
pub trait LogSink: Send {
    async fn write(&mut self, data: Bytes);
}

/// A sink that drops everything.
pub struct Discard;

#[async_trait]
impl LogSink for Discard {
    async fn write(&mut self, _data: Bytes) {}
}

/// What a pod is made of.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub task_id: String,
    pub executor_id: String,
    /// Container 0 runs the steps; the others are services sharing its network.
    pub containers: Vec<Container>,
    pub registry_auth: BTreeMap<String, RegistryAuth>,
    /// The executor's directory for this task (created and emptied by the agent).
    pub task_dir: PathBuf,
}

/// One command to run in a pod's first container.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// The complete environment of the command.
    pub env: Env,
    /// Absolute, or relative to the pod's home; empty = the home.
    pub working_dir: String,
    /// Empty = the container's (or the executor's) user.
    pub user: String,
}

/// A stream of bytes out of a pod (tar archives).
pub type ByteStream = BoxStream<'static, Result<Bytes, DriverError>>;

/// A task's running environment.
#[async_trait]
pub trait Pod: Send + Sync {
    /// Runs `req` to completion, streaming its combined stdout and stderr to `out`, and
    /// returns its exit code. Cancelling `cancel` kills it (and everything it started)
    /// and returns `Ok(None)`.
    async fn exec(
        &self,
        req: &ExecRequest,
        out: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Option<i32>, DriverError>;

    /// The user's home directory in container 0 (what `~` expands to).
    async fn home(&self, user: &str) -> Result<String, DriverError>;

    /// Extracts the tar archive `tar` under the absolute directory `dest`, creating it
    /// (owned by `user` when the driver can set owners; empty = the container's user).
    async fn put_archive(&self, dest: &str, user: &str, tar: ByteStream)
    -> Result<(), DriverError>;

    /// The files under the absolute path `path` as a tar archive whose entry names are
    /// relative to `path`. `NotFound` when it does not exist.
    async fn get_archive(&self, path: &str) -> Result<ByteStream, DriverError>;

    /// Stops everything running in the pod (idempotent).
    async fn stop(&self);

    /// Removes the pod's containers or processes and their data (idempotent).
    async fn remove(&self);
}

/// A way of running pods.
#[async_trait]
pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;

    /// Architectures this driver runs.
    fn archs(&self) -> Vec<Arch>;

    /// Creates and starts a pod, writing progress (image pulls…) to `setup_log`.
    async fn create_pod(
        &self,
        spec: &PodSpec,
        setup_log: &mut dyn LogSink,
    ) -> Result<Box<dyn Pod>, DriverError>;

    /// Removes pods of `executor_id` (or of executors that no longer exist) whose task is
    /// not in `keep`: the leftovers of a crashed executor. Returns how many.
    async fn remove_orphans(
        &self,
        executor_id: &str,
        keep: &[String],
    ) -> Result<usize, DriverError>;
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn engine_errors_keep_their_source_and_their_message() {
        let answer = || bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "no such container".into(),
        };
        let e = DriverError::from(answer());
        assert!(e.to_string().starts_with("container engine: "), "{e}");
        assert!(e.to_string().contains("no such container"), "{e}");
        assert!(e.source().is_some());
        let e = DriverError::Unreachable {
            socket: "/run/docker.sock".into(),
            source: answer(),
        };
        assert!(
            e.to_string().starts_with(
                "container engine: cannot reach the Docker Engine at unix:///run/docker.sock: "
            ),
            "{e}"
        );
        assert!(e.source().is_some());
        let e = DriverError::Unanswered {
            socket: "/run/docker.sock".into(),
            secs: 10,
        };
        assert_eq!(
            e.to_string(),
            "container engine: the Docker Engine at unix:///run/docker.sock did not answer within 10 s"
        );
    }
}

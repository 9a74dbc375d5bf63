//! The executor's lifeline: steps die with their executor.
//!
//! A step runs in its own process group (local driver) or container (docker driver), so
//! killing the executor with `-9`, or its crash, would leave it running, and a lost task
//! that the server runs again elsewhere ([`crate::runservice::retry`]) would then run twice
//! at once. So each agent starts a watchdog: the same binary started again as
//! `cairn __executor-lifeline` ([`CHILD_ARG`]) in a process group of its own (a Ctrl-C at
//! a terminal does not reach it), whose stdin is a pipe that only the executor's process
//! holds open. When that process ends, however it ends, the pipe closes; the watchdog then
//! removes what the executor's tasks left, with the driver's own orphan cleanup (every
//! process group recorded in the task directories, or every container labelled with the
//! executor's id), and exits.
//!
//! What it cannot cover: the watchdog itself killed with `-9` first (a `kill -9` of
//! every process of a service, as systemd's does, kills the steps' cgroup too), and a step
//! started in the instant between its spawn and the recording of its process group.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::driver::Driver;
use super::driver::docker::{DockerDriver, DockerOptions};
use super::driver::local::{LocalDriver, LocalOptions};

/// The first argument that makes the binary a lifeline watchdog.
pub const CHILD_ARG: &str = "__executor-lifeline";

/// What the watchdog cleans up after, passed as JSON in its second argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub executor_id: String,
    pub driver: WatchedDriver,
}

/// The driver whose leftovers the watchdog removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchedDriver {
    /// Process groups recorded under the task directories' root.
    Local { tasks_dir: PathBuf },
    /// Containers labelled with the executor's id, on the Engine at `host`.
    Docker { host: Option<String> },
}

/// The running watchdog of one agent: dropping it (the agent stopped) or the process ending
/// closes the pipe, and the watchdog cleans up and exits.
pub struct Lifeline {
    _child: tokio::process::Child,
}

/// This binary, to start as the watchdog: `/proc/self/exe`, which names the running
/// binary even after an upgrade replaced or deleted its file, else its path.
pub fn this_program() -> Option<PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Some(proc_exe.to_path_buf());
    }
    std::env::current_exe().ok()
}

/// Starts the watchdog `program` (this binary) for `watch`.
pub fn start(program: &Path, watch: &Watch) -> std::io::Result<Lifeline> {
    let arg = serde_json::to_string(watch).map_err(std::io::Error::other)?;
    let child = tokio::process::Command::new(program)
        .arg(CHILD_ARG)
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()?;
    Ok(Lifeline { _child: child })
}

/// The watchdog's side: when the process was started as a lifeline (first argument
/// [`CHILD_ARG`]), waits until its stdin closes, removes the executor's leftovers and
/// returns the exit code; `None` in any other process.
pub fn child_main() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(CHILD_ARG)) {
        return None;
    }
    let Some(watch) = args
        .next()
        .and_then(|a| serde_json::from_str::<Watch>(a.to_str()?).ok())
    else {
        return Some(2);
    };
    // Nothing is ever written: read returns 0 (end of file) once every holder of the
    // write end, the executor's process, is gone.
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Some(3);
    };
    match rt.block_on(clean_up(&watch)) {
        Ok(_) => Some(0),
        Err(_) => Some(1),
    }
}

/// Removes what the tasks of `watch.executor_id` left running; how many groups or pods.
pub async fn clean_up(watch: &Watch) -> Result<usize, super::driver::DriverError> {
    match &watch.driver {
        WatchedDriver::Local { tasks_dir } => {
            LocalDriver::with_options(tasks_dir.clone(), LocalOptions::default())
                .remove_orphans(&watch.executor_id, &[])
                .await
        }
        WatchedDriver::Docker { host } => {
            let driver = DockerDriver::connect(DockerOptions {
                host: host.clone(),
                ..DockerOptions::default()
            })
            .await?;
            driver.remove_orphans(&watch.executor_id, &[]).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_travels_as_json_both_ways() {
        for driver in [
            WatchedDriver::Local {
                tasks_dir: "/var/lib/cairn/ex-tasks".into(),
            },
            WatchedDriver::Docker {
                host: Some("unix:///run/docker.sock".into()),
            },
        ] {
            let watch = Watch {
                executor_id: "e1".into(),
                driver,
            };
            let text = serde_json::to_string(&watch).expect("json");
            assert_eq!(serde_json::from_str::<Watch>(&text).expect("back"), watch);
        }
    }
}

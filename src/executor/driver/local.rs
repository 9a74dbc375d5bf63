//! The local driver: a task's steps are processes on the executor's host, run in the
//! task's own directory (its home: `~` expands to it). Images are ignored: this is the
//! driver of `cairn run` and of small edge hosts, for trusted code only.
//!
//! What it isolates (SECURITY.md, "Step isolation"): a step's environment is cleared
//! and rebuilt from the task's own variables plus [`step_env`]'s short allow-list (PATH,
//! LANG, LC_*, TZ; HOME is the task's home), so the executor's token, cloud keys and
//! anything else in its environment never reach a step. With [`LocalOptions::run_as`]
//! (`--run-as USER`, when the executor runs as root) every step runs as that user
//! (uid, gid, no supplementary groups), and the driver's own file work in the task's
//! directory (creating directories, extracting and reading archives) runs with that
//! user's file-system identity (`setfsuid`), so a step cannot use the executor to read or
//! write what that user could not. Without `--run-as`, a step can do whatever the
//! executor's user can.
//!
//! The task's paths (working directory, step working directories, where archives are
//! restored and read) are a container's paths in Agola's configs: an absolute one outside
//! the task's directory (`working_dir: /go/src/app`, `restore_cache: {dest_dir:
//! /go/pkg/mod}`, `restore_workspace: {dest_dir: /}`) is taken under `<task dir>/root`,
//! the task's stand-in for a container's root, never the host's (see [`host_path`]). The
//! setup log says so. What a step's command does with absolute paths is its own business.
//!
//! Every command runs in a new process group; cancelling it (stop, timeout) kills the
//! whole group, so nothing a step started outlives it. The groups of each task are
//! recorded in `<task dir>/pgids`, so a restarted executor can kill the leftovers of a
//! crashed one ([`Driver::remove_orphans`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use cairn_client::runconfig::{Arch, Env};
use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::{ByteStream, Driver, DriverError, ExecRequest, LogSink, Pod, PodSpec};

/// Runs steps as host processes.
pub struct LocalDriver {
    /// Where task directories live (`--tasks-dir`).
    tasks_root: PathBuf,
    options: LocalOptions,
}

/// How the local driver runs steps.
#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    /// The user steps run as (`None`: the executor's own).
    pub run_as: Option<RunAs>,
}

/// A host user steps run as (`--run-as`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Looks `user` (a name) up in the host's user database. Needs root to be of use:
    /// refused when the executor does not run as root.
    pub fn lookup(user: &str) -> Result<RunAs, DriverError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(DriverError::Refused(format!(
                "--run-as {user} needs the executor to run as root"
            )));
        }
        let found = nix::unistd::User::from_name(user)
            .map_err(|e| DriverError::Refused(format!("looking up user {user}: {e}")))?
            .ok_or_else(|| DriverError::Refused(format!("no such user {user}")))?;
        if found.uid.is_root() {
            return Err(DriverError::Refused(format!(
                "--run-as {user}: that user is root"
            )));
        }
        Ok(RunAs {
            name: found.name,
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
        })
    }
}

impl LocalDriver {
    pub fn new(tasks_root: impl Into<PathBuf>) -> LocalDriver {
        LocalDriver::with_options(tasks_root, LocalOptions::default())
    }

    pub fn with_options(tasks_root: impl Into<PathBuf>, options: LocalOptions) -> LocalDriver {
        LocalDriver {
            tasks_root: tasks_root.into(),
            options,
        }
    }
}

/// The `PATH` of a step when the executor has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether the executor's variable `name` is passed on to steps: the locale, the time
/// zone and `PATH` only (and the user's name when steps run as the executor's user).
fn inherited(name: &str, same_user: bool) -> bool {
    matches!(name, "PATH" | "LANG" | "LANGUAGE" | "TZ")
        || name.starts_with("LC_")
        || (same_user && matches!(name, "USER" | "LOGNAME"))
}

/// The complete environment of a step: the allow-listed variables of the executor's
/// environment `host`, then the task's own `task` variables (which win), then `HOME`
/// (the task's home) and, with `run_as`, `USER` and `LOGNAME`. Nothing else of `host`
/// (tokens, cloud keys…) is ever passed on.
pub fn step_env(
    host: impl IntoIterator<Item = (String, String)>,
    task: &Env,
    home: &Path,
    run_as: Option<&RunAs>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = host
        .into_iter()
        .filter(|(k, _)| inherited(k, run_as.is_none()))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.extend(task.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("HOME".into(), home.display().to_string());
    if let Some(user) = run_as {
        env.insert("USER".into(), user.name.clone());
        env.insert("LOGNAME".into(), user.name.clone());
    }
    env
}

/// The executor's environment, its variables with UTF-8 names and values only.
fn host_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Runs `f` on this (blocking) thread with the file-system identity of `owner` (Linux
/// `setfsuid`/`setfsgid`, per thread): files it creates are that user's, and it can
/// read or write only what that user can. The thread's identity is restored after.
fn as_owner<T>(
    owner: Option<&RunAs>,
    f: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
    let Some(owner) = owner else { return f() };
    struct Restore(Uid, Gid);
    impl Drop for Restore {
        fn drop(&mut self) {
            // The uid first: back to root gives the capability to set the gid back.
            setfsuid(self.0);
            setfsgid(self.1);
        }
    }
    let previous_gid = setfsgid(Gid::from_raw(owner.gid));
    let previous_uid = setfsuid(Uid::from_raw(owner.uid));
    let _restore = Restore(previous_uid, previous_gid);
    f()
}

/// Creates `dir` with its missing parents on a blocking thread, as `owner`.
async fn make_dirs(dir: &Path, owner: Option<&RunAs>) -> Result<(), DriverError> {
    let dir = dir.to_path_buf();
    let owner = owner.cloned();
    tokio::task::spawn_blocking(move || as_owner(owner.as_ref(), || std::fs::create_dir_all(&dir)))
        .await
        .map_err(|e| DriverError::Io(std::io::Error::other(e)))??;
    Ok(())
}

#[async_trait]
impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    fn archs(&self) -> Vec<Arch> {
        Arch::host().into_iter().collect()
    }

    async fn create_pod(
        &self,
        spec: &PodSpec,
        setup_log: &mut dyn LogSink,
    ) -> Result<Box<dyn Pod>, DriverError> {
        let home = spec.task_dir.join("home");
        tokio::fs::create_dir_all(&home).await?;
        let root = spec.task_dir.join(ROOT);
        tokio::fs::create_dir_all(&root).await?;
        if let Some(user) = &self.options.run_as {
            // The task's directory stays the executor's (it holds `pgids`), traversable
            // but not listable; its home and root, made just now, are the user's.
            use std::os::unix::fs::PermissionsExt;
            let traverse = std::fs::Permissions::from_mode(0o711);
            tokio::fs::set_permissions(&spec.task_dir, traverse).await?;
            for dir in [&home, &root] {
                std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))?;
            }
            setup_log
                .write(Bytes::from(format!(
                    "local driver: steps run as user {} (uid {})\n",
                    user.name, user.uid
                )))
                .await;
        }
        let images: Vec<&str> = spec.containers.iter().map(|c| c.image.as_str()).collect();
        setup_log
            .write(Bytes::from(format!(
                "local driver: running on this host in {} (images {images:?} are not used)\n",
                home.display()
            )))
            .await;
        setup_log
            .write(Bytes::from(format!(
                "local driver: the task's absolute paths (working dir, restored and saved \
                 directories) are under {}\n",
                spec.task_dir.join(ROOT).display()
            )))
            .await;
        if let Some(notice) = super::volume::local_notice(&spec.containers) {
            setup_log.write(Bytes::from(notice)).await;
        }
        if spec.containers.len() > 1 {
            setup_log
                .write(Bytes::from_static(
                    b"local driver: service containers are not started\n",
                ))
                .await;
        }
        Ok(Box::new(LocalPod {
            home,
            task_dir: spec.task_dir.clone(),
            groups: Arc::default(),
            run_as: self.options.run_as.clone(),
        }))
    }

    async fn remove_orphans(
        &self,
        _executor_id: &str,
        keep: &[String],
    ) -> Result<usize, DriverError> {
        let mut removed = 0;
        let Ok(mut dir) = tokio::fs::read_dir(&self.tasks_root).await else {
            return Ok(0);
        };
        while let Some(entry) = dir.next_entry().await? {
            let task = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&task) {
                continue;
            }
            let pgids = tokio::fs::read_to_string(entry.path().join("pgids"))
                .await
                .unwrap_or_default();
            for pgid in pgids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// One task's directory and the process groups started in it.
struct LocalPod {
    home: PathBuf,
    task_dir: PathBuf,
    groups: Arc<Mutex<Vec<i32>>>,
    run_as: Option<RunAs>,
}

/// The directory of a task standing in for a container's root.
const ROOT: &str = "root";

/// Where the pod path `dir` of the task in `task_dir` (home `home`) is on the host: empty is
/// the home, relative is under the home; the result is normalized (`.` and `..` resolved
/// lexically) and, when it falls outside the task's directory, re-rooted under
/// `<task_dir>/root`, so no task path is ever the host's root or anything outside.
pub fn host_path(task_dir: &Path, home: &Path, dir: &str) -> PathBuf {
    if dir.is_empty() {
        return home.to_path_buf();
    }
    let joined = home.join(dir);
    let mut normal = PathBuf::from("/");
    for part in joined.components() {
        match part {
            Component::Normal(p) => normal.push(p),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if normal.starts_with(task_dir) {
        return normal;
    }
    let inside = normal.strip_prefix("/").unwrap_or(&normal);
    task_dir.join(ROOT).join(inside)
}

impl LocalPod {
    fn resolve(&self, dir: &str) -> PathBuf {
        host_path(&self.task_dir, &self.home, dir)
    }

    fn kill_all(&self) {
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for g in groups {
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
    }

    async fn record_group(&self, pgid: i32) {
        let list = {
            let mut g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            g.push(pgid);
            g.iter().map(|p| format!("{p}\n")).collect::<String>()
        };
        let _ = tokio::fs::write(self.task_dir.join("pgids"), list).await;
    }
}

/// Reads `r` to its end, sending each chunk to `tx`.
async fn pump(mut r: impl AsyncRead + Unpin, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl Pod for LocalPod {
    async fn exec(
        &self,
        req: &ExecRequest,
        out: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Option<i32>, DriverError> {
        let Some((program, args)) = req.cmd.split_first() else {
            return Err(DriverError::Start {
                what: "an empty command".into(),
                why: "no program".into(),
            });
        };
        let dir = self.resolve(&req.working_dir);
        make_dirs(&dir, self.run_as.as_ref()).await?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(&dir)
            .env_clear()
            .envs(step_env(
                host_env(),
                &req.env,
                &self.home,
                self.run_as.as_ref(),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(user) = &self.run_as {
            // As root, std also drops every supplementary group before `setuid`.
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd.spawn().map_err(|e| DriverError::Start {
            what: program.clone(),
            why: e.to_string(),
        })?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        if let Some(g) = pgid {
            self.record_group(g).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        if let Some(o) = child.stdout.take() {
            tokio::spawn(pump(o, tx.clone()));
        }
        if let Some(e) = child.stderr.take() {
            tokio::spawn(pump(e, tx.clone()));
        }
        drop(tx);
        let kill = |pgid: Option<i32>| {
            if let Some(g) = pgid {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
        };
        let mut status = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    kill(pgid);
                    let _ = child.wait().await;
                    return Ok(None);
                }
                s = child.wait(), if status.is_none() => {
                    status = Some(s?);
                    // Background processes the step left behind die with it, which
                    // also closes the pipes they held.
                    kill(pgid);
                }
                chunk = rx.recv() => match chunk {
                    Some(c) => out.write(c).await,
                    None if status.is_some() => break,
                    None => {
                        // Output closed before exit: just wait for the exit.
                        let s = tokio::select! {
                            _ = cancel.cancelled() => {
                                kill(pgid);
                                let _ = child.wait().await;
                                return Ok(None);
                            }
                            s = child.wait() => s?,
                        };
                        kill(pgid);
                        status = Some(s);
                        break;
                    }
                },
            }
        }
        let status = status.expect("the loop ends only with a status");
        Ok(Some(exit_code(status)))
    }

    async fn home(&self, _user: &str) -> Result<String, DriverError> {
        Ok(self.home.display().to_string())
    }

    async fn put_archive(
        &self,
        dest: &str,
        _user: &str,
        mut tar: ByteStream,
    ) -> Result<(), DriverError> {
        let dest = self.resolve(dest);
        make_dirs(&dest, self.run_as.as_ref()).await?;
        // Spool to a file, then extract off the runtime with the hardened extractor
        // (escaping entries refuse the archive; setuid/setgid bits are dropped).
        let spool = self
            .task_dir
            .join(format!("in-{}.tar", uuid::Uuid::new_v4()));
        {
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::File::create(&spool).await?;
            while let Some(chunk) = tar.next().await {
                f.write_all(&chunk?).await?;
            }
            f.flush().await?;
        }
        let s = spool.clone();
        // Extracted as the task's user (`--run-as`): the files are its own, and the
        // archive cannot write where that user could not.
        let owner = self.run_as.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), DriverError> {
            let f = std::fs::File::open(&s)?;
            as_owner(owner.as_ref(), || {
                Ok(crate::executor::archive::extract(
                    std::io::BufReader::new(f),
                    &dest,
                ))
            })?
            .map(|_| ())
            .map_err(|e| DriverError::Refused(e.to_string()))
        })
        .await
        .map_err(|e| DriverError::Io(std::io::Error::other(e)))?;
        let _ = tokio::fs::remove_file(&spool).await;
        result
    }

    async fn get_archive(&self, path: &str) -> Result<ByteStream, DriverError> {
        let src = self.resolve(path);
        let meta = tokio::fs::metadata(&src)
            .await
            .map_err(|_| DriverError::NotFound(path.to_string()))?;
        let spool = self
            .task_dir
            .join(format!("out-{}.tar", uuid::Uuid::new_v4()));
        let s = spool.clone();
        // Read as the task's user (`--run-as`): a step's symlinks cannot make the
        // executor archive what that user could not read.
        let owner = self.run_as.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let f = std::fs::File::create(&s)?;
            let f = as_owner(owner.as_ref(), move || {
                let mut b = tar::Builder::new(std::io::BufWriter::new(f));
                b.follow_symlinks(false);
                if meta.is_dir() {
                    b.append_dir_all(".", &src)?;
                } else {
                    let name = src.file_name().map(PathBuf::from).unwrap_or_default();
                    b.append_path_with_name(&src, name)?;
                }
                b.into_inner()?.into_inner().map_err(|e| e.into_error())
            })?;
            f.sync_all()
        })
        .await
        .map_err(|e| DriverError::Io(std::io::Error::other(e)))??;
        let file = tokio::fs::File::open(&spool).await?;
        // The spool is unlinked now; the open handle keeps its data readable.
        let _ = tokio::fs::remove_file(&spool).await;
        Ok(tokio_util::io::ReaderStream::new(file)
            .map(|r| r.map_err(DriverError::Io))
            .boxed())
    }

    async fn stop(&self) {
        self.kill_all();
    }

    async fn remove(&self) {
        self.kill_all();
        let _ = tokio::fs::remove_file(self.task_dir.join("pgids")).await;
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects output in memory.
    #[derive(Default)]
    struct Capture(Vec<u8>);

    #[async_trait]
    impl LogSink for Capture {
        async fn write(&mut self, data: Bytes) {
            self.0.extend_from_slice(&data);
        }
    }

    async fn pod(dir: &Path) -> Box<dyn Pod> {
        let driver = LocalDriver::new(dir.join("tasks"));
        let spec = PodSpec {
            task_id: "t1".into(),
            executor_id: "e1".into(),
            containers: vec![],
            registry_auth: Default::default(),
            task_dir: dir.join("tasks/t1"),
        };
        driver
            .create_pod(&spec, &mut super::super::Discard)
            .await
            .expect("pod")
    }

    fn sh(script: &str) -> ExecRequest {
        ExecRequest {
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..ExecRequest::default()
        }
    }

    #[tokio::test]
    async fn exec_streams_output_and_returns_the_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(dir.path()).await;
        let mut out = Capture::default();
        let mut req = sh("echo out; echo err >&2; echo $GREETING; pwd; exit 3");
        req.env.insert("GREETING".into(), "hi".into());
        req.working_dir = "sub".into();
        let code = pod
            .exec(&req, &mut out, &CancellationToken::new())
            .await
            .expect("exec");
        assert_eq!(code, Some(3));
        // stdout and stderr are two pipes: their relative order is not kept.
        let text = String::from_utf8(out.0).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        for want in ["out", "err", "hi"] {
            assert!(lines.contains(&want), "{want} missing from {text:?}");
        }
        assert!(lines.iter().any(|l| l.ends_with("/home/sub")), "{text:?}");
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(dir.path()).await;
        let pidfile = dir.path().join("child.pid");
        // The pid appears whole or not at all (written aside, then renamed): the canceller
        // below fires as soon as the file exists.
        let script = format!(
            "sleep 600 & echo $! > {p}.tmp && mv {p}.tmp {p}; wait",
            p = pidfile.display()
        );
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let pf = pidfile.clone();
        tokio::spawn(async move {
            while !pf.exists() {
                tokio::task::yield_now().await;
            }
            c.cancel();
        });
        let code = pod
            .exec(&sh(&script), &mut super::super::Discard, &cancel)
            .await
            .expect("exec");
        assert_eq!(code, None);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        // The background sleep dies (SIGKILL is delivered asynchronously; a dead child
        // may linger as a zombie until it is reaped).
        let alive = || {
            nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!alive(), "the step's background process survived");
    }

    #[tokio::test]
    async fn a_background_process_does_not_hold_the_step_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(dir.path()).await;
        let code = pod
            .exec(
                &sh("sleep 600 & echo started"),
                &mut super::super::Discard,
                &CancellationToken::new(),
            )
            .await
            .expect("exec");
        assert_eq!(code, Some(0));
    }

    #[tokio::test]
    async fn archives_round_trip_with_names_relative_to_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(dir.path()).await;
        pod.exec(
            &sh("mkdir -p src/a && echo one > src/a/1.txt && echo two > src/2.txt"),
            &mut super::super::Discard,
            &CancellationToken::new(),
        )
        .await
        .expect("exec");
        let home = pod.home("").await.expect("home");
        let tar = pod.get_archive(&format!("{home}/src")).await.expect("get");
        pod.put_archive(&format!("{home}/copy"), "", tar)
            .await
            .expect("put");
        let copied = std::fs::read_to_string(format!("{home}/copy/a/1.txt")).expect("copied");
        assert_eq!(copied, "one\n");
        assert!(matches!(
            pod.get_archive(&format!("{home}/missing")).await,
            Err(DriverError::NotFound(_))
        ));
    }

    #[test]
    fn task_paths_never_leave_the_task_directory() {
        let task = Path::new("/data/tasks/t1");
        let home = Path::new("/data/tasks/t1/home");
        let p = |dir: &str| host_path(task, home, dir);
        assert_eq!(p(""), home);
        assert_eq!(p("project/bin"), home.join("project/bin"));
        assert_eq!(p("/data/tasks/t1/home/project"), home.join("project"));
        assert_eq!(p("/data/tasks/t1/home/./a/../b"), home.join("b"));
        // Agola's container paths are under the task's root.
        assert_eq!(p("/"), task.join("root"));
        assert_eq!(p("/go/pkg/mod"), task.join("root/go/pkg/mod"));
        assert_eq!(p("/../../etc"), task.join("root/etc"));
        assert_eq!(p("../../../../etc"), task.join("root/etc"));
        assert_eq!(p("/data/tasks/t2"), task.join("root/data/tasks/t2"));
    }

    /// Issue 10 (1): `restore_workspace: {dest_dir: /}` must not write into the host's root.
    #[tokio::test]
    async fn an_archive_restored_into_slash_lands_in_the_tasks_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(dir.path()).await;
        let home = pod.home("").await.expect("home");
        pod.exec(
            &sh("mkdir -p src && echo one > src/marker-of-issue-10.txt"),
            &mut super::super::Discard,
            &CancellationToken::new(),
        )
        .await
        .expect("exec");
        let tar = pod.get_archive(&format!("{home}/src")).await.expect("get");
        pod.put_archive("/", "", tar).await.expect("put");
        assert!(!Path::new("/marker-of-issue-10.txt").exists());
        let root = dir.path().join("tasks/t1/root");
        assert_eq!(
            std::fs::read_to_string(root.join("marker-of-issue-10.txt")).expect("restored"),
            "one\n"
        );
        // A step working in `/` sees it there too, and reads it back by that path.
        let mut out = Capture::default();
        let req = ExecRequest {
            working_dir: "/".into(),
            ..sh("cat marker-of-issue-10.txt")
        };
        let code = pod
            .exec(&req, &mut out, &CancellationToken::new())
            .await
            .expect("exec");
        assert_eq!((code, out.0.as_slice()), (Some(0), &b"one\n"[..]));
        assert!(pod.get_archive("/marker-of-issue-10.txt").await.is_ok());
    }

    #[tokio::test]
    async fn the_setup_log_says_once_that_volumes_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = LocalDriver::new(dir.path().join("tasks"));
        let volume = cairn_client::runconfig::Volume {
            path: "/scratch".into(),
            tmpfs: Some(cairn_client::runconfig::TmpfsVolume {
                size_bytes: Some(1024),
            }),
        };
        let spec = PodSpec {
            task_id: "t1".into(),
            executor_id: "e1".into(),
            containers: vec![cairn_client::runconfig::Container {
                image: "busybox".into(),
                volumes: vec![volume],
                ..Default::default()
            }],
            registry_auth: Default::default(),
            task_dir: dir.path().join("tasks/t1"),
        };
        let mut log = Capture::default();
        driver.create_pod(&spec, &mut log).await.expect("pod");
        let text = String::from_utf8(log.0).expect("utf8");
        assert_eq!(text.matches("volumes are ignored").count(), 1, "{text:?}");
        assert!(text.contains("/scratch (tmpfs, 1024 bytes)"), "{text:?}");
    }

    /// Issue 11 (C1): a step's environment is the task's plus an allow-list, never the
    /// executor's token or keys.
    #[test]
    fn a_steps_environment_is_the_tasks_plus_the_allow_list() {
        let host = [
            ("PATH", "/host/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("USER", "ci"),
            ("CAIRN_TOKEN", "secret"),
            ("AWS_SECRET_ACCESS_KEY", "key"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let mut task = Env::new();
        task.insert("LANG".into(), "fr_FR.UTF-8".into());
        task.insert("GOFLAGS".into(), "-mod=vendor".into());
        let home = Path::new("/tasks/t1/home");
        let env = step_env(host.clone(), &task, home, None);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["GOFLAGS", "HOME", "LANG", "LC_ALL", "PATH", "USER"]);
        assert_eq!(env["LANG"], "fr_FR.UTF-8");
        assert_eq!(env["HOME"], "/tasks/t1/home");
        assert_eq!(env["PATH"], "/host/bin");
        let nobody = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        let env = step_env(
            host.into_iter().filter(|(k, _)| k != "PATH"),
            &Env::new(),
            home,
            Some(&nobody),
        );
        assert_eq!(env["USER"], "nobody");
        assert_eq!(env["LOGNAME"], "nobody");
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert!(!env.contains_key("CAIRN_TOKEN"));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_start_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(dir.path()).await;
        let req = ExecRequest {
            cmd: vec!["/no/such/program".into()],
            ..ExecRequest::default()
        };
        assert!(matches!(
            pod.exec(&req, &mut super::super::Discard, &CancellationToken::new())
                .await,
            Err(DriverError::Start { .. })
        ));
    }
}

//! Real `cairn serve` processes: start (ready once it prints its URL), kill -9, restart
//! over the same data dir and port, on loopback or, placed by [`Place`], in a network
//! namespace of `support::netns`, and 3-node clusters; `cairn serve` with its
//! in-process executor, and standalone `cairn executor` processes. Every child is killed
//! when its handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::RunClient;
use cairn_client::api::NodeInfo;

use super::process::{Place, TOKEN, cairn_bin, free_port, spawn_until_ready};

/// One `cairn serve` process.
pub struct ServiceProc {
    pub port: u16,
    pub data_dir: PathBuf,
    pub url: String,
    /// Where it listens (and, in a namespace, runs).
    place: Place,
    extra: Vec<String>,
    /// Runs its in-process executor (the harness passes `--no-executor` otherwise).
    executor: bool,
    /// Extra environment of the process (applied at each start).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl ServiceProc {
    /// A fresh single node WITH its in-process executor (data dir `<data_dir>/executor`,
    /// tasks in `<data_dir>-tasks`, `--driver local` unless `extra` names a driver), and extra `cairn serve`
    /// arguments (kept on restart). When the handle drops, step processes the executor
    /// left behind are killed too.
    pub fn with_executor(data_dir: &Path, extra: &[&str]) -> ServiceProc {
        let place = Place::loopback();
        let mut p = ServiceProc {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port: place.port,
            data_dir: data_dir.to_path_buf(),
            url: format!("http://{}:{}", place.ip, place.port),
            place,
            executor: true,
            env: Vec::new(),
            child: None,
        };
        p.spawn(false, None);
        p
    }

    /// A fresh single node that initializes itself.
    pub fn single(data_dir: &Path) -> ServiceProc {
        ServiceProc::start(data_dir, free_port(), false, None)
    }

    /// Like [`ServiceProc::single`] with extra `cairn serve` arguments (kept on restart).
    pub fn single_with(data_dir: &Path, extra: &[&str]) -> ServiceProc {
        ServiceProc::start_with(data_dir, free_port(), false, None, extra)
    }

    pub fn start(data_dir: &Path, port: u16, init: bool, join: Option<&str>) -> ServiceProc {
        ServiceProc::start_with(data_dir, port, init, join, &[])
    }

    /// Like [`ServiceProc::start`] with extra `cairn serve` arguments (kept on restart).
    pub fn start_with(
        data_dir: &Path,
        port: u16,
        init: bool,
        join: Option<&str>,
        extra: &[&str],
    ) -> ServiceProc {
        ServiceProc::start_with_env(data_dir, port, init, join, extra, &[])
    }

    /// Like [`ServiceProc::start_with`] with extra environment variables (kept on
    /// restart; `CAIRN_LOG` among them replaces the harness's).
    pub fn start_with_env(
        data_dir: &Path,
        port: u16,
        init: bool,
        join: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServiceProc {
        let place = Place {
            port,
            ..Place::loopback()
        };
        ServiceProc::start_at(data_dir, place, init, join, extra, env)
    }

    /// [`ServiceProc::start_with_env`] at `place`: in its namespace (through `ip netns
    /// exec`, which execs, so the child is the node itself), listening on its address.
    pub fn start_at(
        data_dir: &Path,
        place: Place,
        init: bool,
        join: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServiceProc {
        let mut p = ServiceProc {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port: place.port,
            data_dir: data_dir.to_path_buf(),
            url: format!("http://{}:{}", place.ip, place.port),
            place,
            executor: false,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        p.spawn(init, join);
        p
    }

    fn spawn(&mut self, init: bool, join: Option<&str>) {
        let mut cmd = match &self.place.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, cairn_bin()]);
                c
            }
            None => Command::new(cairn_bin()),
        };
        cmd.args(["serve", "--token", TOKEN]);
        if !self.executor {
            cmd.arg("--no-executor");
        } else if !self.extra.iter().any(|a| a == "--driver") {
            // `cairn serve` runs no host processes unless asked to.
            cmd.args(["--driver", "local"]);
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("{}:{}", self.place.ip, self.port)])
            .args(&self.extra)
            .env("CAIRN_LOG", "error,openraft=off")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if init {
            cmd.arg("--init");
        }
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let what = format!("cairn serve on {}:{}", self.place.ip, self.port);
        let (child, _) = spawn_until_ready(cmd, &what, |l| l.contains("serving on"));
        self.child = Some(child);
    }

    /// Restarts a stopped node over its data dir and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        self.spawn(false, None);
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `timeout` for the process to exit by itself; whether it did (then
    /// it counts as stopped and can be restarted).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("a running node");
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM (a clean stop), then waits up to `timeout` for the process to exit;
    /// whether it did (then it can be restarted).
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.signal("-TERM");
        self.wait_exit(timeout)
    }

    /// SIGSTOP: the process freezes (its sockets stay open) until [`ServiceProc::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`ServiceProc::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("a running node")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid}");
    }

    pub fn client(&self) -> RunClient {
        RunClient::new(std::slice::from_ref(&self.url), Some(TOKEN.to_string())).expect("client")
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running node").id()
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        self.kill9();
        if self.executor {
            kill_step_leftovers(&cairn::service::default_tasks_dir(&self.data_dir));
        }
    }
}

/// SIGKILLs the process groups the local driver recorded for the tasks under
/// `tasks_root` (`<task>/pgids`): what a killed executor's steps left running.
pub fn kill_step_leftovers(tasks_root: &Path) {
    let Ok(dir) = std::fs::read_dir(tasks_root) else {
        return;
    };
    for entry in dir.flatten() {
        let pgids = std::fs::read_to_string(entry.path().join("pgids")).unwrap_or_default();
        for pgid in pgids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether process `pid` is alive (`kill -0` succeeds on it) and not a zombie: a step
/// process killed after its executor died is reparented, and may stay a zombie until
/// whoever adopted it reaps it.
pub fn process_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_none_or(|rest| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// A standalone `cairn executor --server URL --token T --data-dir D` process (with
/// `--driver local` unless its extra arguments name a driver; tasks in `D-tasks`): start
/// (ready once it prints its id), kill -9, restart over the same data dir. The child is
/// killed when the handle drops, and so are the step processes it left behind.
pub struct ExecutorProc {
    /// The executor's id (kept in its data dir, so a restart keeps it).
    pub id: String,
    pub data_dir: PathBuf,
    server: String,
    /// The token it starts with (a registration token, or the admin one).
    token: String,
    extra: Vec<String>,
    child: Option<Child>,
}

impl ExecutorProc {
    /// Starts an executor of `server` with extra `cairn executor` arguments (kept on
    /// restart).
    pub fn start(server: &str, data_dir: &Path, extra: &[&str]) -> ExecutorProc {
        ExecutorProc::start_with_token(server, data_dir, TOKEN, extra)
    }

    /// [`ExecutorProc::start`] with `token` (e.g. a registration token) instead of the
    /// admin token.
    pub fn start_with_token(
        server: &str,
        data_dir: &Path,
        token: &str,
        extra: &[&str],
    ) -> ExecutorProc {
        let mut p = ExecutorProc {
            id: String::new(),
            data_dir: data_dir.to_path_buf(),
            server: server.to_string(),
            token: token.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["executor", "--server", &self.server, "--token", &self.token])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            .args(if self.extra.iter().any(|a| a == "--driver") {
                &[][..]
            } else {
                &["--driver", "local"][..]
            })
            .env("CAIRN_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // "cairn: executor <id> (<driver> driver) serving <urls>"
        let (child, line) =
            spawn_until_ready(cmd, "cairn executor", |l| l.starts_with("cairn: executor "));
        self.id = line
            .split_whitespace()
            .nth(2)
            .expect("the executor id on its ready line")
            .to_string();
        self.child = Some(child);
    }

    /// SIGKILL, no cleanup by the executor (its lifeline watchdog kills its steps).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a clean stop), then waits for the process to exit; how long it took.
    pub fn terminate(&mut self) -> std::time::Duration {
        let started = std::time::Instant::now();
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        started.elapsed()
    }

    /// Restarts a killed executor over its data dir (same id).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running executor");
        self.spawn();
    }
}

impl Drop for ExecutorProc {
    fn drop(&mut self) {
        self.kill9();
        kill_step_leftovers(&cairn::service::default_tasks_dir(&self.data_dir));
    }
}

/// Several `cairn serve` nodes forming one cluster.
pub struct ServiceCluster {
    pub nodes: Vec<ServiceProc>,
    _dir: tempfile::TempDir,
}

impl ServiceCluster {
    /// `n` nodes on one object storage directory (as a real cluster shares a bucket, and
    /// as `cairn serve --join` requires): logs appended through one node can be archived
    /// by the scheduler on another.
    pub fn start_sharing_objects(n: usize) -> ServiceCluster {
        ServiceCluster::start_sharing_objects_with(n, &[])
    }

    /// [`ServiceCluster::start_sharing_objects`] with extra `cairn serve` arguments on
    /// every node.
    pub fn start_sharing_objects_with(n: usize, more: &[&str]) -> ServiceCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = dir.path().join("objects").display().to_string();
        ServiceCluster::start_in(dir, n, &objects, more)
    }

    /// `n` nodes sharing the object store `objects` (an `s3://` bucket, say), with extra
    /// `cairn serve` arguments on every node, their data dirs in `dir`.
    pub fn start_in(
        dir: tempfile::TempDir,
        n: usize,
        objects: &str,
        more: &[&str],
    ) -> ServiceCluster {
        let mut extra = vec!["--objects", objects];
        extra.extend_from_slice(more);
        let mut nodes: Vec<ServiceProc> = Vec::new();
        for i in 0..n {
            let data = dir.path().join(format!("n{i}"));
            let join = nodes.first().map(|n| n.url.clone());
            nodes.push(ServiceProc::start_with(
                &data,
                free_port(),
                i == 0,
                join.as_deref(),
                &extra,
            ));
        }
        ServiceCluster { nodes, _dir: dir }
    }

    /// Every running node's `GET /api/v1/cluster`, by node index (a node that does not
    /// answer is left out).
    pub async fn views(&self) -> Vec<(usize, NodeInfo)> {
        let mut views = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() {
                continue;
            }
            if let Ok(info) = n.client().cluster().await {
                views.push((i, info));
            }
        }
        views
    }

    /// Index of the node whose scheduler is active, once every running node answers and
    /// exactly one of them says its scheduler is active.
    pub async fn scheduler_holder(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.nodes.iter().filter(|n| n.is_running()).count();
            let views = self.views().await;
            let active: Vec<usize> = views
                .iter()
                .filter(|(_, v)| v.scheduler_active)
                .map(|(i, _)| *i)
                .collect();
            if views.len() == running && active.len() == 1 {
                return active[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single active scheduler within {timeout:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Index of the Raft leader, once every running node answers and names the same
    /// leader, which is one of them.
    pub async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.nodes.iter().filter(|n| n.is_running()).count();
            let views = self.views().await;
            let leader = views.first().and_then(|(_, v)| v.leader_id);
            let agreed = views.len() == running && views.iter().all(|(_, v)| v.leader_id == leader);
            if agreed && let Some(&(i, _)) = views.iter().find(|(_, v)| Some(v.node_id) == leader) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.url.clone())
            .collect()
    }

    /// A client that fails over across the running nodes.
    pub fn client(&self) -> RunClient {
        RunClient::new(&self.urls(), Some(TOKEN.to_string())).expect("client")
    }
}

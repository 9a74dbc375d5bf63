//! Real `cairn store serve` processes on loopback: start, wait for readiness (the
//! process prints its URL once it has joined its cluster), kill -9, restart over the
//! same data dir and port. Every child is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_client::etcd::{EtcdClient, I64};

use crate::support::poll::wait_for;

pub const TOKEN: &str = "test-token";

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// A free loopback port (bound once, then released for the child to take).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Spawns `cmd` with stdout piped and waits (up to 60 s) for its first stdout line that
/// `ready` accepts; returns the child and that line. Panics, killing the child, naming
/// `what`, when it exits or stays silent instead.
pub fn spawn_until_ready(
    mut cmd: Command,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> (Child, String) {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if ready(&line) => return (child, line),
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!("{what} did not become ready (exit: {status:?})");
            }
        }
    }
}

/// One store node process.
pub struct StoreProc {
    pub port: u16,
    pub data_dir: PathBuf,
    pub engine: String,
    pub url: String,
    /// Extra `cairn store serve` arguments of the first start (not of restarts).
    first_start: Vec<String>,
    child: Option<Child>,
}

impl StoreProc {
    /// Like [`StoreProc::start`] with extra arguments for this first start only.
    pub fn start_with(
        data_dir: &Path,
        port: u16,
        engine: &str,
        join: Option<&str>,
        first_start: &[&str],
    ) -> StoreProc {
        let mut p = StoreProc {
            port,
            data_dir: data_dir.to_path_buf(),
            engine: engine.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            first_start: first_start.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        p.spawn(false, join);
        p.first_start.clear();
        p
    }

    /// Starts a node: `init` for the first node, `join` for the others, neither for a restart.
    pub fn start(
        data_dir: &Path,
        port: u16,
        engine: &str,
        init: bool,
        join: Option<&str>,
    ) -> StoreProc {
        let mut p = StoreProc {
            port,
            data_dir: data_dir.to_path_buf(),
            engine: engine.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            first_start: Vec::new(),
            child: None,
        };
        p.spawn(init, join);
        p
    }

    fn spawn(&mut self, init: bool, join: Option<&str>) {
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["store", "serve", "--token", TOKEN, "--engine", &self.engine])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.first_start)
            .env("CAIRN_LOG", "error,openraft=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if init {
            cmd.arg("--init");
        }
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let what = format!("node on port {}", self.port);
        let (child, _) = spawn_until_ready(cmd, &what, |l| l.contains("listening on"));
        self.child = Some(child);
    }

    /// Restarts a stopped node over its data dir.
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

    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(
            vec![self.url.clone()],
            Some(TOKEN.to_string()),
            Duration::from_secs(10),
        )
    }
}

impl Drop for StoreProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of store processes.
pub struct Cluster {
    pub nodes: Vec<StoreProc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize, engine: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<StoreProc> = Vec::new();
        for i in 0..n {
            let data = dir.path().join(format!("n{i}"));
            let join = nodes.first().map(|n| n.url.clone());
            nodes.push(StoreProc::start(
                &data,
                free_port(),
                engine,
                i == 0,
                join.as_deref(),
            ));
        }
        Cluster { nodes, _dir: dir }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// A client that tries every node in turn.
    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(
            self.urls(),
            Some(TOKEN.to_string()),
            Duration::from_secs(10),
        )
    }

    /// Index of the current leader: the leader named in the highest term any running
    /// node reports, once that node itself confirms it in the same term (a restarted
    /// old leader may still name itself from its persisted vote, with a stale term).
    pub async fn leader(&self, timeout: Duration) -> usize {
        wait_for(timeout, "a leader", || self.try_leader()).await
    }

    async fn try_leader(&self) -> Option<usize> {
        let members = self.client().member_list().await.ok()?.members;
        let mut views = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() {
                continue;
            }
            if let Ok(st) = n.client().status().await {
                views.push((i, st.raft_term, st.leader));
            }
        }
        let (_, term, leader) = *views.iter().max_by_key(|v| v.1)?;
        if leader == I64(0) {
            return None;
        }
        let url = members
            .iter()
            .find(|m| m.id == leader)?
            .client_urls
            .first()?
            .clone();
        let idx = self.nodes.iter().position(|n| n.url == url)?;
        let confirmed = views
            .iter()
            .any(|&(i, t, l)| i == idx && t == term && l == leader);
        confirmed.then_some(idx)
    }
}

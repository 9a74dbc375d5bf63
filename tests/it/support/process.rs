//! Real `cairn store serve` processes on loopback (or, placed by [`Place`], in a
//! network namespace of `support::netns`): start, wait for readiness (the process prints
//! its URL once it has joined its cluster), kill -9, restart over the same data dir and
//! port. Every child is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
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

/// Where a node listens: an address and port, and the network namespace its process
/// runs in (`None`: the test's own).
#[derive(Clone, Debug)]
pub struct Place {
    pub ip: IpAddr,
    pub port: u16,
    pub netns: Option<String>,
}

impl Place {
    /// A free port on loopback, in the test's own namespace.
    pub fn loopback() -> Place {
        Place {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: free_port(),
            netns: None,
        }
    }
}

/// The nodes' log filter: errors only, unless `CAIRN_TEST_NODE_LOG` gives one (to see
/// what the nodes did in a failing run, e.g. `info,openraft=info`).
fn node_log() -> String {
    std::env::var("CAIRN_TEST_NODE_LOG").unwrap_or_else(|_| "error,openraft=off".into())
}

/// One store node process.
pub struct StoreProc {
    pub port: u16,
    pub data_dir: PathBuf,
    pub engine: String,
    pub url: String,
    place: Place,
    /// Extra `cairn store serve` arguments of the first start (not of restarts).
    first_start: Vec<String>,
    child: Option<Child>,
}

impl StoreProc {
    /// Starts a node: `init` for the first node, `join` for the others, neither for a restart.
    pub fn start(
        data_dir: &Path,
        port: u16,
        engine: &str,
        init: bool,
        join: Option<&str>,
    ) -> StoreProc {
        let place = Place {
            port,
            ..Place::loopback()
        };
        StoreProc::start_at(data_dir, place, engine, init, join)
    }

    /// Like [`StoreProc::start`] with extra arguments for this first start only.
    pub fn start_with(
        data_dir: &Path,
        port: u16,
        engine: &str,
        join: Option<&str>,
        first_start: &[&str],
    ) -> StoreProc {
        let place = Place {
            port,
            ..Place::loopback()
        };
        let mut p = StoreProc::new(data_dir, place, engine);
        p.first_start = first_start.iter().map(|s| s.to_string()).collect();
        p.spawn(false, join);
        p.first_start.clear();
        p
    }

    /// [`StoreProc::start`] at `place`: in its namespace (through `ip netns exec`, which
    /// execs, so the child is the node itself), listening on its address.
    pub fn start_at(
        data_dir: &Path,
        place: Place,
        engine: &str,
        init: bool,
        join: Option<&str>,
    ) -> StoreProc {
        let mut p = StoreProc::new(data_dir, place, engine);
        p.spawn(init, join);
        p
    }

    /// A node not started yet.
    fn new(data_dir: &Path, place: Place, engine: &str) -> StoreProc {
        StoreProc {
            port: place.port,
            data_dir: data_dir.to_path_buf(),
            engine: engine.to_string(),
            url: format!("http://{}:{}", place.ip, place.port),
            place,
            first_start: Vec::new(),
            child: None,
        }
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
        cmd.args(["store", "serve", "--token", TOKEN, "--engine", &self.engine])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("{}:{}", self.place.ip, self.port)])
            .args(&self.first_start)
            .env("CAIRN_LOG", node_log())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !self.place.ip.is_loopback() {
            // Plain HTTP off loopback must be asked for: these are test networks.
            cmd.arg("--insecure-plaintext");
        }
        if init {
            cmd.arg("--init");
        }
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let what = format!("node at {}", self.url);
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

    /// The node process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn client(&self) -> EtcdClient {
        self.client_with_timeout(Duration::from_secs(10))
    }

    /// A client of this node alone whose requests give up after `timeout`.
    pub fn client_with_timeout(&self, timeout: Duration) -> EtcdClient {
        EtcdClient::new(vec![self.url.clone()], Some(TOKEN.to_string()), timeout)
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
        Cluster::start_at((0..n).map(|_| Place::loopback()).collect(), engine)
    }

    /// A cluster of one node at each place: the first initializes it, the others join it.
    pub fn start_at(places: Vec<Place>, engine: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<StoreProc> = Vec::new();
        for (i, place) in places.into_iter().enumerate() {
            let data = dir.path().join(format!("n{i}"));
            let join = nodes.first().map(|n| n.url.clone());
            nodes.push(StoreProc::start_at(
                &data,
                place,
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

    /// One round of [`Cluster::leader`]. Each node is asked with a short timeout, and
    /// the member list comes from the node with the highest term, so a frozen
    /// (SIGSTOPped) node delays a round by that timeout and never blocks it.
    pub async fn try_leader(&self) -> Option<usize> {
        const ASK: Duration = Duration::from_secs(2);
        let mut views = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() {
                continue;
            }
            if let Ok(st) = n.client_with_timeout(ASK).status().await {
                views.push((i, st.raft_term, st.leader));
            }
        }
        let (asked, term, leader) = *views.iter().max_by_key(|v| v.1)?;
        if leader == I64(0) {
            return None;
        }
        let members = self.nodes[asked]
            .client_with_timeout(ASK)
            .member_list()
            .await
            .ok()?
            .members;
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

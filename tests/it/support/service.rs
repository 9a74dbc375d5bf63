//! Real `cairn serve` processes: start (ready once it prints its URL), kill -9, restart
//! over the same data dir and port, and 3-node clusters. Every child is killed when its
//! handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_client::RunClient;

use super::process::{TOKEN, cairn_bin, free_port};

/// One `cairn serve` process.
pub struct ServiceProc {
    pub port: u16,
    pub data_dir: PathBuf,
    pub url: String,
    extra: Vec<String>,
    child: Option<Child>,
}

impl ServiceProc {
    /// A fresh single node that initializes itself.
    pub fn single(data_dir: &Path) -> ServiceProc {
        ServiceProc::start(data_dir, free_port(), false, None)
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
        let mut p = ServiceProc {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port,
            data_dir: data_dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        p.spawn(init, join);
        p
    }

    fn spawn(&mut self, init: bool, join: Option<&str>) {
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["serve", "--token", TOKEN])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra)
            .env("CAIRN_LOG", "error,openraft=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if init {
            cmd.arg("--init");
        }
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let mut child = cmd.spawn().expect("spawn cairn serve");
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
                Ok(line) if line.contains("serving on") => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "cairn serve on port {} did not become ready (exit: {status:?})",
                        self.port
                    );
                }
            }
        }
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

    pub fn client(&self) -> RunClient {
        RunClient::new(std::slice::from_ref(&self.url), Some(TOKEN.to_string())).expect("client")
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Several `cairn serve` nodes forming one cluster.
pub struct ServiceCluster {
    pub nodes: Vec<ServiceProc>,
    _dir: tempfile::TempDir,
}

impl ServiceCluster {
    pub fn start(n: usize) -> ServiceCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<ServiceProc> = Vec::new();
        for i in 0..n {
            let data = dir.path().join(format!("n{i}"));
            let join = nodes.first().map(|n| n.url.clone());
            nodes.push(ServiceProc::start(
                &data,
                free_port(),
                i == 0,
                join.as_deref(),
            ));
        }
        ServiceCluster { nodes, _dir: dir }
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

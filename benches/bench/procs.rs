//! Store processes for the benchmark: Cairn nodes and etcd members on loopback, each in
//! its own temp data dir, killed (SIGKILL) and reaped when their guard is dropped — also
//! while unwinding from a panic.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use cairn_client::etcd::{B64Bytes, EtcdClient, PutRequest, RangeRequest};

/// Which store a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Cairn,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Cairn => "cairn",
            System::Etcd => "etcd",
        }
    }
}

/// What the benchmark starts processes with.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub cairn: PathBuf,
    pub etcd: Option<PathBuf>,
    pub engine: String,
    /// Parent of the temp data dirs (default: the system temp dir).
    pub dir: Option<PathBuf>,
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}

/// One store process, restartable with its data dir. Dropping it kills the process.
pub struct Node {
    pub url: String,
    program: PathBuf,
    first_args: Vec<String>,
    restart_args: Vec<String>,
    log: PathBuf,
    /// Cairn prints a ready line on stdout; etcd members are polled instead.
    ready_line: bool,
    started: bool,
    child: Option<Child>,
}

impl Node {
    /// Starts the process; for Cairn, waits for its `listening on` line.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let args = if self.started {
            self.restart_args.clone()
        } else {
            self.first_args.clone()
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(log, "==== {} {}", self.program.display(), args.join(" "))?;
        let stdout = if self.ready_line {
            Stdio::piped()
        } else {
            Stdio::from(log.try_clone()?)
        };
        let mut child = Command::new(&self.program)
            .args(&args)
            .env("CAIRN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.started = true;
        let ready = child.stdout.take().map(|out| {
            let (tx, rx) = tokio::sync::oneshot::channel::<String>();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                // Keep draining after the ready line so the child never blocks on a pipe.
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.contains("listening on")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(line);
                    }
                }
            });
            rx
        });
        self.child = Some(child);
        if let Some(rx) = ready {
            match tokio::time::timeout(Duration::from_secs(90), rx).await {
                Ok(Ok(_line)) => {}
                Ok(Err(_)) => bail!(
                    "{} exited before it was ready:\n{}",
                    self.url,
                    self.log_tail()
                ),
                Err(_) => bail!("{} not ready within 90 s:\n{}", self.url, self.log_tail()),
            }
        }
        Ok(())
    }

    /// `kill -9` and reap; a no-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn client(&self, timeout: Duration) -> EtcdClient {
        EtcdClient::new(vec![self.url.clone()], None, timeout)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running cluster of one system. Nodes are dropped (killed) before the temp dir.
pub struct Cluster {
    pub system: System,
    pub nodes: Vec<Node>,
    marker: u64,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes and waits until they form a healthy cluster.
    pub async fn start(system: System, n: usize, bins: &Binaries) -> anyhow::Result<Cluster> {
        let prefix = format!("cairn-bench-{}-", system.name());
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix);
        let dir = match &bins.dir {
            Some(d) => b.tempdir_in(d),
            None => b.tempdir(),
        }
        .context("creating a temp dir")?;
        let mut nodes: Vec<Node> = Vec::new();
        match system {
            System::Cairn => {
                for i in 0..n {
                    let port = free_port()?;
                    let data = dir.path().join(format!("n{i}"));
                    let base = vec![
                        "store".to_string(),
                        "serve".into(),
                        "--data-dir".into(),
                        data.display().to_string(),
                        "--listen".into(),
                        format!("127.0.0.1:{port}"),
                        "--token".into(),
                        "cairn-bench-token".into(),
                        "--no-client-auth".into(),
                        "--engine".into(),
                        bins.engine.clone(),
                    ];
                    let mut first = base.clone();
                    match nodes.first() {
                        None => first.push("--init".into()),
                        Some(seed) => first.extend(["--join".to_string(), seed.url.clone()]),
                    }
                    nodes.push(node(&bins.cairn, dir.path(), i, port, first, base, true));
                    // Joins are membership changes: one at a time.
                    nodes[i].start().await?;
                }
            }
            System::Etcd => {
                let etcd = bins.etcd.clone().ok_or_else(|| anyhow!("no etcd binary"))?;
                let ports: Vec<(u16, u16)> = (0..n)
                    .map(|_| Ok((free_port()?, free_port()?)))
                    .collect::<anyhow::Result<_>>()?;
                let initial: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
                    .collect();
                for (i, (client, peer)) in ports.iter().enumerate() {
                    let args = vec![
                        "--name".to_string(),
                        format!("n{i}"),
                        "--data-dir".into(),
                        dir.path().join(format!("n{i}")).display().to_string(),
                        "--listen-client-urls".into(),
                        format!("http://127.0.0.1:{client}"),
                        "--advertise-client-urls".into(),
                        format!("http://127.0.0.1:{client}"),
                        "--listen-peer-urls".into(),
                        format!("http://127.0.0.1:{peer}"),
                        "--initial-advertise-peer-urls".into(),
                        format!("http://127.0.0.1:{peer}"),
                        "--initial-cluster".into(),
                        initial.join(","),
                        "--initial-cluster-token".into(),
                        "cairn-bench".into(),
                        "--initial-cluster-state".into(),
                        "new".into(),
                        "--logger".into(),
                        "zap".into(),
                        "--log-level".into(),
                        "warn".into(),
                    ];
                    nodes.push(node(
                        &etcd,
                        dir.path(),
                        i,
                        *client,
                        args.clone(),
                        args,
                        false,
                    ));
                }
                // Members wait for a quorum of their peers: start them all, then poll.
                for nd in &mut nodes {
                    nd.start().await?;
                }
            }
        }
        let mut c = Cluster {
            system,
            nodes,
            marker: 0,
            _dir: dir,
        };
        c.wait_healthy(Duration::from_secs(90)).await?;
        Ok(c)
    }

    /// Waits until every node answers, all agree on one leader, the member list has every
    /// node, and every node has applied a fresh write (read locally). Returns the leader's
    /// index in `nodes`.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {}\n{}", n.url, n.log_tail()))
                    .collect();
                bail!(
                    "{} cluster not healthy within {timeout:?}: {last}\n{}",
                    self.system.name(),
                    logs.join("\n")
                );
            }
            match self.check_healthy().await {
                Ok(leader) => return Ok(leader),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn check_healthy(&mut self) -> anyhow::Result<usize> {
        let t = Duration::from_secs(2);
        let mut leader_id = None;
        let mut leader = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let st = n.client(t).status().await.context(n.url.clone())?;
            if st.leader.0 == 0 {
                bail!("{} knows no leader", n.url);
            }
            if *leader_id.get_or_insert(st.leader.0) != st.leader.0 {
                bail!("nodes disagree on the leader");
            }
            if st.header.member_id == st.leader {
                leader = Some(i);
            }
        }
        let leader = leader.ok_or_else(|| anyhow!("the leader is not one of the nodes"))?;
        let lc = self.nodes[leader].client(Duration::from_secs(5));
        let members = lc.member_list().await?.members;
        if members.len() != self.nodes.len() || members.iter().any(|m| m.is_learner) {
            bail!(
                "{} members (want {} voters)",
                members.len(),
                self.nodes.len()
            );
        }
        self.marker += 1;
        let key = B64Bytes(format!("bench/health/{}", self.marker).into_bytes());
        lc.put(&PutRequest {
            key: key.clone(),
            value: B64Bytes(b"ok".to_vec()),
            ..Default::default()
        })
        .await?;
        for n in &self.nodes {
            let c = n.client(t);
            let mut seen = false;
            for _ in 0..50 {
                let r = c
                    .range(&RangeRequest {
                        key: key.clone(),
                        serializable: true,
                        ..Default::default()
                    })
                    .await?;
                if !r.kvs.is_empty() {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !seen {
                bail!("{} has not applied the latest write", n.url);
            }
        }
        Ok(leader)
    }
}

fn node(
    program: &Path,
    dir: &Path,
    i: usize,
    port: u16,
    first_args: Vec<String>,
    restart_args: Vec<String>,
    ready_line: bool,
) -> Node {
    Node {
        url: format!("http://127.0.0.1:{port}"),
        program: program.to_path_buf(),
        first_args,
        restart_args,
        log: dir.join(format!("n{i}.log")),
        ready_line,
        started: false,
        child: None,
    }
}

//! The memory bench of issue 11: the resident memory of one release `cairn serve`
//! (`--no-executor`, fresh data dir, loopback) under the attacks of the security review
//! that used to exhaust it, each against a fresh server so that its peak (`VmHWM` of
//! `/proc/<pid>/status`) is its own:
//!
//! 1. **`when` regexes** (H4.1): 500 patterns `\w{200}x<i>` in one config;
//! 2. **YAML alias bomb** (H4.2): an anchored 500 KB scalar nested through 8 levels of
//!    16 aliases each;
//! 3. **long chain** (H4.3): 16,000 tasks, each depending on the previous one;
//! 4. **idle connections** (H5): 1,100 TCP connections held open for
//!    `CAIRN_BENCH_ATTACK_HOLD_SECS` (10) seconds, half of them having sent an
//!    unfinished request head; then an authenticated probe.
//!
//! Each config attack is `CAIRN_BENCH_ATTACK_ROUNDS` (4) rounds of 8 concurrent
//! requests. Target: the peak stays under 100 MB. Environment: the store bench's
//! `CAIRN_BIN`, `CAIRN_BENCH_ENGINE` and `CAIRN_BENCH_DIR`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

use crate::env_num;
use crate::request::create_request;

const TOKEN: &str = "cairn-bench-token";
const TARGET_MB: f64 = 100.0;
const CONCURRENT: usize = 8;
const CONNECTIONS: usize = 1_100;

/// A `cairn serve --no-executor` child; killed (SIGKILL) and reaped when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(cairn: &Path, engine: &str, dir: &Path) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new(cairn)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", &addr.to_string(), "--token", TOKEN])
            .args(["--engine", engine, "--no-executor"])
            .env("CAIRN_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", cairn.display()))?;
        let out = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(out).lines();
        let server = Server { child, addr };
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("cairn: serving on") => break,
                Some(Ok(_)) => continue,
                _ => bail!("cairn serve exited before serving"),
            }
        }
        // Keep draining so that the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(server)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `VmRSS` and `VmHWM`, in MB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb * 1024.0 / 1e6)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    attack: String,
    body: usize,
    outcome: String,
    latency: Duration,
    rss: f64,
    hwm: f64,
}

fn regexes() -> String {
    let regexes: Vec<String> = (0..500).map(|i| format!("'/\\w{{200}}x{i}/'")).collect();
    format!(
        "runs:\n  - name: ci\n    when: {{ branch: [{}] }}\n    tasks:\n      - name: t\n        runtime: {{ containers: [ {{ image: busybox }} ] }}\n        steps: [ {{ run: make }} ]\n",
        regexes.join(", ")
    )
}

fn alias_bomb() -> String {
    let mut config = format!("a0: &a0 \"{}\"\n", "x".repeat(500_000));
    for level in 1..=8 {
        let refs = vec![format!("*a{}", level - 1); 16].join(", ");
        config.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    config.push_str("runs:\n  - name: ci\n    tasks: []\n");
    config
}

fn chain() -> String {
    let mut config = String::from("runs:\n  - name: ci\n    tasks:\n");
    for i in 0..16_000 {
        let depends = if i == 0 {
            String::new()
        } else {
            format!("t{}", i - 1)
        };
        config.push_str(&format!("      - {{ name: t{i}, depends: [{depends}] }}\n"));
    }
    config
}

/// `rounds` rounds of [`CONCURRENT`] `POST /runs` of `config`: the statuses seen and
/// the slowest request.
async fn hammer(url: &str, config: &str, rounds: usize) -> anyhow::Result<(String, Duration)> {
    let body = serde_json::to_vec(&create_request("/project/p1/branch/main", config))?;
    let http = reqwest::Client::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..rounds {
        let requests = (0..CONCURRENT).map(|_| {
            let (http, body) = (http.clone(), body.clone());
            let url = format!("{url}/api/v1/runs");
            async move {
                let started = Instant::now();
                let resp = http
                    .post(url)
                    .bearer_auth(TOKEN)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(300))
                    .send()
                    .await;
                let status = match resp {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                (status, started.elapsed())
            }
        });
        for (status, took) in futures::future::join_all(requests).await {
            *statuses.entry(status).or_default() += 1;
            slowest = slowest.max(took);
        }
    }
    let outcome = statuses
        .iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("{n}× failed")
            } else {
                format!("{n}× {s}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok((outcome, slowest))
}

/// [`CONNECTIONS`] idle sockets held for `hold`, then one authenticated probe (its
/// status and latency, while the sockets are still open).
async fn idle_connections(server: &Server, hold: Duration) -> anyhow::Result<(String, Duration)> {
    let mut sockets = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .with_context(|| format!("connection {i}"))?;
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        }
        sockets.push(s);
    }
    tokio::time::sleep(hold).await;
    let started = Instant::now();
    let probe = reqwest::Client::new()
        .get(format!("{}/api/v1/runs", server.url()))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let took = started.elapsed();
    let outcome = match probe {
        Ok(r) => format!("probe {}", r.status().as_u16()),
        Err(e) if e.is_timeout() => "probe timed out (5 s)".to_string(),
        Err(_) => "probe failed".to_string(),
    };
    drop(sockets);
    Ok((outcome, took))
}

/// Raises the soft limit on open files to the hard one: the bench holds 1,100 sockets
/// and the server, which inherits it, as many.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

pub async fn attacks_bench() -> anyhow::Result<()> {
    raise_nofile();
    let engine = std::env::var("CAIRN_BENCH_ENGINE").unwrap_or_else(|_| "redb".into());
    let cairn = crate::cairn_bin(&engine)?;
    let rounds = env_num("CAIRN_BENCH_ATTACK_ROUNDS", 4)?.max(1);
    let hold = Duration::from_secs(env_num("CAIRN_BENCH_ATTACK_HOLD_SECS", 10)? as u64);
    let mut b = tempfile::Builder::new();
    b.prefix("cairn-bench-attacks-");
    let tmp = match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .context("creating a temp dir")?;

    let mut rows = Vec::new();
    let configs: [(&str, String); 3] = [
        ("500 `when` regexes `\\w{200}`", regexes()),
        ("YAML alias bomb (500 KB × 16^8)", alias_bomb()),
        ("16,000-task chain", chain()),
    ];
    for (i, (attack, config)) in configs.iter().enumerate() {
        let server = Server::start(&cairn, &engine, &tmp.path().join(format!("s{i}")))?;
        let (_, before) = server.rss();
        eprintln!("bench: attacks: {attack}: {} requests", rounds * CONCURRENT);
        let (outcome, latency) = hammer(&server.url(), config, rounds).await?;
        let (rss, hwm) = server.rss();
        eprintln!(
            "bench: attacks: {attack}: {outcome}, slowest {latency:?}, RSS {rss:.1} MB, peak {hwm:.1} MB (idle peak {before:.1} MB)"
        );
        rows.push(Row {
            attack: attack.to_string(),
            body: config.len(),
            outcome,
            latency,
            rss,
            hwm,
        });
    }
    let server = Server::start(&cairn, &engine, &tmp.path().join("idle"))?;
    eprintln!("bench: attacks: {CONNECTIONS} idle connections for {hold:?}");
    let (outcome, latency) = idle_connections(&server, hold).await?;
    let (rss, hwm) = server.rss();
    eprintln!("bench: attacks: idle: {outcome} in {latency:?}, RSS {rss:.1} MB, peak {hwm:.1} MB");
    rows.push(Row {
        attack: format!("{CONNECTIONS} idle connections, {} s", hold.as_secs()),
        body: 0,
        outcome,
        latency,
        rss,
        hwm,
    });

    let mut out = format!(
        "### Memory under the config and connection attacks\n\n`cairn serve --no-executor --engine {engine}`, a fresh server per row; config attacks: {} rounds of {CONCURRENT} concurrent `POST /runs`.\n\n| attack | config bytes | outcome | slowest | VmRSS after (MB) | VmHWM peak (MB) | target < {TARGET_MB} MB |\n| --- | ---: | --- | ---: | ---: | ---: | --- |\n",
        rounds
    );
    let mut over = false;
    for r in &rows {
        let ok = r.hwm < TARGET_MB;
        over |= !ok;
        out += &format!(
            "| {} | {} | {} | {:.2} s | {:.1} | {:.1} | {} |\n",
            r.attack,
            if r.body == 0 {
                "–".to_string()
            } else {
                r.body.to_string()
            },
            r.outcome,
            r.latency.as_secs_f64(),
            r.rss,
            r.hwm,
            if ok { "met" } else { "**missed**" }
        );
    }
    println!("{out}");
    if over {
        bail!("a peak went over {TARGET_MB} MB");
    }
    Ok(())
}

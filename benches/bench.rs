//! Cairn's benchmarks. `store`: Cairn's store against etcd 3.4, as real processes on
//! loopback, through the same client ([`cairn_client::etcd::EtcdClient`]) over the same
//! etcd v3 JSON HTTP API — write throughput and latency at 1 and 64 clients, linearizable
//! and serializable read latency, and leader failover time on three nodes. `scheduler`:
//! the run service's scheduler through a `cairn serve` process and in-process executors —
//! task ready → handed latency, draining 1,000 queued runs, and whether the cost per
//! event stays flat as finished runs pile up (see `bench/scheduler.rs` for its knobs).
//! `e2e`: `cairn serve` with its in-process executor (local driver) — ready time, idle
//! RSS, submit → finished of a one-task run, and a step printing 200 MB: follower
//! first-byte latency and throughput to the archived log (see `bench/e2e.rs`).
//! `attacks`: `cairn serve`'s memory under the config and idle-connection attacks of
//! issue 11 (see `bench/attacks.rs`).
//!
//! Run `cargo bench --bench bench -- store` (or `scripts/bench-store.sh`), `cargo bench
//! --bench bench -- scheduler`, `cargo bench --bench bench -- e2e` and `cargo bench --bench
//! bench -- attacks`; no name runs them
//! all. BENCHMARKS.md has the results.
//! Environment:
//! - `CAIRN_BIN`: the `cairn` binary (default: the one cargo built for this bench);
//! - `CAIRN_BENCH_ENGINE`: sled (default), mem, or rocksdb (needs `--features rocksdb`);
//! - `ETCD_BIN`: etcd 3.4 (default `/usr/bin/etcd`); `CAIRN_BENCH_NO_ETCD=1` skips etcd;
//! - `CAIRN_BENCH_WRITES_1` (1000), `CAIRN_BENCH_WRITES_64` (5000), `CAIRN_BENCH_READS`
//!   (1000), `CAIRN_BENCH_TRIALS` (10), `CAIRN_BENCH_MAX_SECS` (20, per write phase);
//! - `CAIRN_BENCH_DIR`: where the temp data dirs go (default: the system temp dir);
//! - `CAIRN_BENCH_SCENARIOS`: comma-separated subset of cairn-1, etcd-1, cairn-3, etcd-3.

#[path = "bench/attacks.rs"]
mod attacks;
#[path = "bench/e2e.rs"]
mod e2e;
#[path = "../tests/it/support/heartbeat.rs"]
mod heartbeat;
#[path = "bench/import_fill.rs"]
mod import_fill;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/report.rs"]
mod report;
#[path = "../tests/it/support/request.rs"]
mod request;
#[path = "bench/scheduler.rs"]
mod scheduler;
#[path = "bench/tracker.rs"]
mod tracker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use procs::{Binaries, Cluster, System};
use report::{FailoverRow, ReadRow, Results, WriteRow};

struct Config {
    bins: Binaries,
    writes_1: usize,
    writes_64: usize,
    reads: usize,
    trials: usize,
    max_time: Duration,
    scenarios: Option<Vec<String>>,
}

fn env_num(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// The `cairn` binary: `CAIRN_BIN`, else the one cargo built next to this bench, else
/// build it.
fn cairn_bin(engine: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("CAIRN_BIN={} does not exist", p.display());
        }
        return Ok(p);
    }
    let mut candidates: Vec<PathBuf> = option_env!("CARGO_BIN_EXE_cairn")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    // target/release/deps/bench-HASH -> target/release/cairn
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.join("cairn"));
        if let Some(target) = profile_dir.parent() {
            candidates.push(target.join("release").join("cairn"));
        }
    }
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    eprintln!("bench: no cairn binary found; running cargo build --release --bin cairn");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--release", "--bin", "cairn"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if engine == "rocksdb" {
        cmd.args(["--features", "rocksdb"]);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build --release --bin cairn failed; build it, or set CAIRN_BIN");
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("cargo built cairn but it is not where expected; set CAIRN_BIN")
}

fn etcd_bin() -> Option<PathBuf> {
    if std::env::var("CAIRN_BENCH_NO_ETCD").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("bench: CAIRN_BENCH_NO_ETCD is set: skipping the etcd scenarios");
        return None;
    }
    let p = PathBuf::from(std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "bench: no etcd at {} (install Debian's etcd-server, or set ETCD_BIN): skipping the etcd scenarios",
            p.display()
        );
        None
    }
}

fn config() -> anyhow::Result<Config> {
    let engine = std::env::var("CAIRN_BENCH_ENGINE").unwrap_or_else(|_| "redb".into());
    Ok(Config {
        bins: Binaries {
            cairn: cairn_bin(&engine)?,
            etcd: etcd_bin(),
            engine,
            dir: std::env::var_os("CAIRN_BENCH_DIR").map(PathBuf::from),
        },
        writes_1: env_num("CAIRN_BENCH_WRITES_1", 1000)?,
        writes_64: env_num("CAIRN_BENCH_WRITES_64", 5000)?,
        reads: env_num("CAIRN_BENCH_READS", 1000)?,
        trials: env_num("CAIRN_BENCH_TRIALS", 10)?,
        max_time: Duration::from_secs(env_num("CAIRN_BENCH_MAX_SECS", 20)? as u64),
        scenarios: std::env::var("CAIRN_BENCH_SCENARIOS")
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect()),
    })
}

fn command_line(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Writes and reads on a running cluster; the leader gets the writes.
async fn measure(
    cfg: &Config,
    cluster: &mut Cluster,
    res: &mut Results,
    tag: &str,
) -> anyhow::Result<()> {
    let (system, n) = (cluster.system, cluster.nodes.len());
    let leader = cluster.wait_healthy(Duration::from_secs(60)).await?;
    let timeout = Duration::from_secs(30);
    let lc = cluster.nodes[leader].client(timeout);
    // Warm up: connections, the leader's pipeline, the engines' files.
    load::writes(&lc, &format!("bench/{tag}/warm"), 64, 500, cfg.max_time).await;
    for clients in [1, 64] {
        let total = if clients == 1 {
            cfg.writes_1
        } else {
            cfg.writes_64
        };
        let s = load::writes(
            &lc,
            &format!("bench/{tag}/w{clients}"),
            clients,
            total,
            cfg.max_time,
        )
        .await;
        eprintln!(
            "bench: {tag}: {clients} clients: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
            s.per_sec(),
            s.pct_ms(0.5),
            s.pct_ms(0.99),
            s.errors,
            s.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        );
        res.writes.push(WriteRow {
            system,
            nodes: n,
            clients,
            sample: s,
        });
    }
    let keys = cfg.writes_1.min(1000);
    let mut targets = vec![("leader", leader)];
    if n > 1 {
        targets.push(("follower", (leader + 1) % n));
    }
    for (via, i) in targets {
        let c = cluster.nodes[i].client(timeout);
        for serializable in [false, true] {
            let prefix = format!("bench/{tag}/w1");
            load::reads(&c, &prefix, keys, 50, serializable).await;
            let s = load::reads(&c, &prefix, keys, cfg.reads, serializable).await;
            eprintln!(
                "bench: {tag}: {} reads via {via}: p50 {:.2} ms, p99 {:.2} ms, {} errors",
                if serializable {
                    "serializable"
                } else {
                    "linearizable"
                },
                s.pct_ms(0.5),
                s.pct_ms(0.99),
                s.errors
            );
            res.reads.push(ReadRow {
                system,
                nodes: n,
                serializable,
                via,
                sample: s,
            });
        }
    }
    Ok(())
}

async fn failovers(cfg: &Config, cluster: &mut Cluster, res: &mut Results, tag: &str) {
    let mut row = FailoverRow {
        system: cluster.system,
        trials: Vec::new(),
        errors: Vec::new(),
    };
    for trial in 0..cfg.trials {
        match load::failover(cluster, trial).await {
            Ok(d) => {
                eprintln!(
                    "bench: {tag}: failover trial {trial}: {:.3} s",
                    d.as_secs_f64()
                );
                row.trials.push(d);
            }
            Err(e) => {
                eprintln!("bench: {tag}: failover trial {trial} failed: {e:#}");
                row.errors.push(format!("{e:#}"));
            }
        }
    }
    res.failovers.push(row);
}

async fn store_bench() -> anyhow::Result<()> {
    let started = Instant::now();
    let cfg = config()?;
    let mut systems = vec![System::Cairn];
    if cfg.bins.etcd.is_some() {
        systems.push(System::Etcd);
    }
    let etcd_version = cfg
        .bins
        .etcd
        .as_ref()
        .map_or("skipped".into(), |p| command_line(p, &["--version"]));
    let context = format!(
        "- date: {}\n- machine: {} CPUs ({}), temp dirs in {}\n- cairn: {} ({}), engine {}\n- etcd: {}\n- counts: {} writes at 1 client, {} at 64 clients (at most {} s each), {} reads per row, {} failover trials\n",
        command_line(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        command_line(Path::new("uname"), &["-srm"]),
        cfg.bins
            .dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .display(),
        cfg.bins.cairn.display(),
        command_line(&cfg.bins.cairn, &["--version"]),
        cfg.bins.engine,
        etcd_version,
        cfg.writes_1,
        cfg.writes_64,
        cfg.max_time.as_secs(),
        cfg.reads,
        cfg.trials,
    );
    eprintln!("bench: store\n{context}");
    let mut res = Results::default();
    // Alternate the systems so slow drifts in machine load hit both alike.
    for n in [1, 3] {
        for &system in &systems {
            let tag = format!("{}-{n}", system.name());
            if cfg.scenarios.as_ref().is_some_and(|s| !s.contains(&tag)) {
                continue;
            }
            eprintln!("bench: {tag}: starting {n} node(s)");
            let mut cluster = match Cluster::start(system, n, &cfg.bins).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("bench: {tag}: {e:#}");
                    res.failed.push(format!("{tag}: {e:#}"));
                    continue;
                }
            };
            if let Err(e) = measure(&cfg, &mut cluster, &mut res, &tag).await {
                eprintln!("bench: {tag}: {e:#}");
                res.failed.push(format!("{tag}: {e:#}"));
            }
            if n == 3 {
                failovers(&cfg, &mut cluster, &mut res, &tag).await;
            }
            drop(cluster);
        }
    }
    println!("{}", res.render(&context));
    eprintln!("bench: store took {:.0} s", started.elapsed().as_secs_f64());
    if !res.failed.is_empty() {
        bail!("{} scenario(s) failed", res.failed.len());
    }
    Ok(())
}

/// The benchmarks, by the name that selects them.
const BENCHMARKS: [&str; 4] = ["store", "scheduler", "e2e", "attacks"];

async fn run(name: &str) -> anyhow::Result<()> {
    match name {
        "store" => store_bench().await,
        "scheduler" => scheduler::scheduler_bench().await,
        "e2e" => e2e::e2e_bench().await,
        "attacks" => attacks::attacks_bench().await,
        _ => bail!("no benchmark {name:?}"),
    }
}

fn main() -> ExitCode {
    // cargo passes `--bench`; the other words filter benchmarks by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&str> = BENCHMARKS
        .into_iter()
        .filter(|b| filters.is_empty() || filters.iter().any(|f| b.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        println!("bench: no benchmark matches {filters:?} (benchmarks: {BENCHMARKS:?})");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for name in selected {
        // On Ctrl-C the bench future is dropped, and with it every process guard.
        let result = rt.block_on(async {
            tokio::select! {
                r = run(name) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        });
        if let Err(e) = result {
            eprintln!("bench: {name}: {e:#}");
            failed = true;
            if e.to_string() == "interrupted" {
                break;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

//! The end-to-end benchmark: one release `cairn serve` child process WITH its in-process
//! executor (local driver: steps are host processes), driven through [`RunClient`] as a
//! user would drive it. It measures:
//!
//! 1. **ready time**: from spawning `cairn serve` (fresh data dir, a free loopback port
//!    picked beforehand) to `GET /readyz` answering 200 (raw HTTP probes every 2 ms from
//!    the spawn on), to its `cairn: serving on` line, to the in-process executor being
//!    registered (`GET /executors` lists it) and to the scheduler being active; over
//!    `CAIRN_BENCH_E2E_STARTS` starts, the last of which serves the rest;
//! 2. **idle RSS** of the process (`VmRSS` and `VmHWM` of `/proc/<pid>/status`) after
//!    startup and after each scenario settles (every run archived, then 3 s idle);
//! 3. **a one-task run of `true`**: submit (`POST /runs`) → finished, as seen on the
//!    run-event stream (`GET /runs/events`, followed the whole time), sequential, after
//!    5 unmeasured warm-up runs; plus where the time goes from the run's own timestamps;
//! 4. **a step printing `CAIRN_BENCH_E2E_BULK_MB` MB** (`date +%s%N` first, then `yes |
//!    head -c`): a follower opens the step log (`follow`, offset 0) before the step's
//!    command starts (the command waits for a gate file the bench creates once the
//!    follow request is answered). First-byte latency = the follower receiving its first
//!    byte − the timestamp on the step's first line; throughput = log bytes / (archive
//!    complete − that timestamp), where "archive complete" is the step's `log_phase`
//!    turning `finished` in `GET /runs/{id}` (polled every 20 ms; the scheduler sets it
//!    once the archive object is written and the live chunks are deleted).
//!
//!    Then `CAIRN_BENCH_E2E_BULK_UNFOLLOWED` more such runs without a follower (their
//!    first line is read back from the archive afterwards), to show what following costs.
//!
//! Environment: `CAIRN_BENCH_E2E_STARTS` (3), `CAIRN_BENCH_E2E_RUNS` (100),
//! `CAIRN_BENCH_E2E_BULK_MB` (200), `CAIRN_BENCH_E2E_BULK_RUNS` (3, followed),
//! `CAIRN_BENCH_E2E_BULK_UNFOLLOWED` (2), plus the store
//! bench's `CAIRN_BIN`, `CAIRN_BENCH_ENGINE` and `CAIRN_BENCH_DIR`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cairn_client::run::{FetchPhase, Run, RunResult};
use cairn_client::{LogStep, RunClient};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::load::Sample;
use crate::request::create_request;
use crate::tracker::{AbortOnDrop, Tracker};
use crate::{command_line, env_num};

const TOKEN: &str = "cairn-bench-token";
/// A run that takes longer than this fails the bench.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const WARMUP_RUNS: usize = 5;

struct Config {
    cairn: PathBuf,
    engine: String,
    dir: Option<PathBuf>,
    starts: usize,
    runs: usize,
    bulk_mb: u64,
    bulk_runs: usize,
    bulk_unfollowed: usize,
}

fn config() -> anyhow::Result<Config> {
    let engine = std::env::var("CAIRN_BENCH_ENGINE").unwrap_or_else(|_| "redb".into());
    Ok(Config {
        cairn: crate::cairn_bin(&engine)?,
        engine,
        dir: std::env::var_os("CAIRN_BENCH_DIR").map(PathBuf::from),
        starts: env_num("CAIRN_BENCH_E2E_STARTS", 3)?.max(1),
        runs: env_num("CAIRN_BENCH_E2E_RUNS", 100)?.max(1),
        bulk_mb: env_num("CAIRN_BENCH_E2E_BULK_MB", 200)?.max(1) as u64,
        bulk_runs: env_num("CAIRN_BENCH_E2E_BULK_RUNS", 3)?,
        bulk_unfollowed: env_num("CAIRN_BENCH_E2E_BULK_UNFOLLOWED", 2)?,
    })
}

// --- the service ----------------------------------------------------------------------

/// A `cairn serve` child process with its executor; killed (SIGKILL) and reaped when
/// dropped.
struct ServiceChild {
    url: String,
    log: PathBuf,
    child: Child,
    spawned: Instant,
    /// When its `cairn: serving on` line arrived.
    line: oneshot::Receiver<Instant>,
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
    Ok(l.local_addr()?.port())
}

impl ServiceChild {
    fn spawn(cfg: &Config, dir: &Path, addr: SocketAddr) -> anyhow::Result<ServiceChild> {
        let log = dir.join("serve.log");
        let spawned = Instant::now();
        let mut child = Command::new(&cfg.cairn)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", &addr.to_string(), "--token", TOKEN])
            .args(["--engine", &cfg.engine])
            .env("CAIRN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .with_context(|| format!("starting {}", cfg.cairn.display()))?;
        let out = child.stdout.take().context("piped stdout")?;
        let (tx, line) = oneshot::channel::<Instant>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining after the ready line so the child never blocks on a pipe.
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if l.starts_with("cairn: serving on")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(Instant::now());
                }
            }
        });
        Ok(ServiceChild {
            url: format!("http://{addr}"),
            log,
            child,
            spawned,
            line,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw `GET /readyz` (no client-side retries, so every probe is one attempt).
async fn readyz(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        while buf.len() < 12 {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(buf.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// From the spawn, to each of the service's readiness points.
struct Ready {
    readyz: Duration,
    line: Duration,
    executor: Duration,
    scheduler: Duration,
}

async fn start(cfg: &Config, dir: &Path) -> anyhow::Result<(ServiceChild, RunClient, Ready)> {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut svc = ServiceChild::spawn(cfg, dir, addr)?;
    let deadline = svc.spawned + Duration::from_secs(90);
    let late = |svc: &ServiceChild, what: &str| {
        anyhow::anyhow!("{what} not within 90 s:\n{}", svc.log_tail())
    };
    while !readyz(addr).await {
        if Instant::now() > deadline {
            return Err(late(&svc, "/readyz 200"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let readyz = svc.spawned.elapsed();
    let line = match tokio::time::timeout_at(deadline.into(), &mut svc.line).await {
        Ok(Ok(at)) => at.duration_since(svc.spawned),
        _ => return Err(late(&svc, "the `serving on` line")),
    };
    let client = RunClient::new(std::slice::from_ref(&svc.url), Some(TOKEN.to_string()))?;
    let (mut executor, mut scheduler) = (None, None);
    while executor.is_none() || scheduler.is_none() {
        if Instant::now() > deadline {
            return Err(late(&svc, "a registered executor and an active scheduler"));
        }
        if executor.is_none()
            && client
                .executors()
                .await
                .is_ok_and(|e| !e.executors.is_empty())
        {
            executor = Some(svc.spawned.elapsed());
        }
        if scheduler.is_none() && client.cluster().await.is_ok_and(|c| c.scheduler_active) {
            scheduler = Some(svc.spawned.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready = Ready {
        readyz,
        line,
        executor: executor.unwrap_or_default(),
        scheduler: scheduler.unwrap_or_default(),
    };
    Ok((svc, client, ready))
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct RssRow {
    when: String,
    rss: f64,
    hwm: f64,
}

/// The process's memory after `idle` with nothing to do.
async fn idle_rss(pid: u32, when: &str, idle: Duration) -> RssRow {
    tokio::time::sleep(idle).await;
    let (rss, hwm) = rss_mib(pid);
    eprintln!("bench: e2e: RSS {when}: {rss:.1} MiB (peak {hwm:.1} MiB)");
    RssRow {
        when: when.to_string(),
        rss,
        hwm,
    }
}

// --- runs -----------------------------------------------------------------------------

/// A one-task run whose one step runs `command` (a YAML single-quoted scalar).
fn one_step_config(command: &str) -> String {
    format!(
        "runs:\n  - name: e2e\n    tasks:\n      - name: job\n        runtime: {{ containers: [ {{ image: busybox }} ] }}\n        steps: [ {{ run: '{}' }} ]\n",
        command.replace('\'', "''")
    )
}

/// Creates a run; its id and its one task's id.
async fn create(
    client: &RunClient,
    group: &str,
    config: String,
) -> anyhow::Result<(String, String)> {
    let resp = client
        .create_run(&create_request(group, &config))
        .await
        .with_context(|| format!("creating a run in {group}"))?;
    let run = &resp.runs.first().context("no run created")?.run;
    let task = run.tasks.keys().next().context("the run has no task")?;
    Ok((run.id.clone(), task.clone()))
}

/// Polls `GET /runs/{id}` until `done` says so; the run, and when it was seen.
async fn poll_run(
    client: &RunClient,
    id: &str,
    every: Duration,
    done: impl Fn(&Run) -> bool,
) -> anyhow::Result<(Run, SystemTime)> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let run = client.run(id).await?.run;
        if done(&run) {
            return Ok((run, SystemTime::now()));
        }
        if Instant::now() > deadline {
            bail!("run {id}: condition not reached within {RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(every).await;
    }
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

fn chrono_time(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<SystemTime> {
    t.map(SystemTime::from)
}

fn sample(mut lats: Vec<Duration>, elapsed: Duration) -> Sample {
    lats.sort();
    Sample {
        lats,
        errors: 0,
        first_error: None,
        elapsed,
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// Submit → finished of sequential one-task `true` runs, and where the time goes.
struct TrueRuns {
    finished: Sample,
    created: Sample,
    to_task_start: Sample,
    task: Sample,
    task_end_to_seen: Sample,
    ids: Vec<String>,
}

async fn true_runs(
    cfg: &Config,
    client: &RunClient,
    tracker: &Tracker,
) -> anyhow::Result<TrueRuns> {
    let config = one_step_config("true");
    let group = "/project/e2e/branch/true";
    let mut ids = Vec::new();
    for _ in 0..WARMUP_RUNS {
        let (id, _) = create(client, group, config.clone()).await?;
        tracker.wait(&id, RUN_TIMEOUT).await?;
        ids.push(id);
    }
    let (mut finished, mut created) = (Vec::new(), Vec::new());
    let (mut to_start, mut task, mut to_seen) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..cfg.runs {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let (id, task_id) = create(client, group, config.clone()).await?;
        created.push(t0.elapsed());
        let (result, at) = tracker.wait(&id, RUN_TIMEOUT).await?;
        let seen = SystemTime::now() - at.elapsed();
        if result != RunResult::Success {
            bail!("run {id} ended {}", result.as_str());
        }
        finished.push(at.duration_since(t0));
        let run = client.run(&id).await?.run;
        ids.push(id);
        if let Some(t) = run.tasks.get(&task_id)
            && let (Some(s), Some(e)) = (chrono_time(t.start_time), chrono_time(t.end_time))
        {
            to_start.push(since(s, w0));
            task.push(since(e, s));
            to_seen.push(since(seen, e));
        }
    }
    let elapsed = started.elapsed();
    let r = TrueRuns {
        finished: sample(finished, elapsed),
        created: sample(created, elapsed),
        to_task_start: sample(to_start, elapsed),
        task: sample(task, elapsed),
        task_end_to_seen: sample(to_seen, elapsed),
        ids,
    };
    eprintln!(
        "bench: e2e: {} runs of `true`: submit → finished p50 {} ms, p99 {} ms (submit → task start p50 {} ms, task p50 {} ms, task end → seen p50 {} ms)",
        r.finished.lats.len(),
        ms(r.finished.pct_ms(0.5)),
        ms(r.finished.pct_ms(0.99)),
        ms(r.to_task_start.pct_ms(0.5)),
        ms(r.task.pct_ms(0.5)),
        ms(r.task_end_to_seen.pct_ms(0.5)),
    );
    Ok(r)
}

/// What the follower of a bulk step saw.
struct Followed {
    first_at: SystemTime,
    first_line: String,
    bytes: u64,
    end_at: SystemTime,
}

async fn follow_log(mut log: cairn_client::logs::LogStream) -> anyhow::Result<Followed> {
    let mut first_at = None;
    let mut head = Vec::new();
    let mut bytes = 0u64;
    while let Some(chunk) = log.next().await {
        let chunk = chunk.context("following the step log")?;
        first_at.get_or_insert_with(SystemTime::now);
        if !head.contains(&b'\n') && head.len() < 64 {
            head.extend_from_slice(&chunk[..chunk.len().min(64)]);
        }
        bytes += chunk.len() as u64;
    }
    let first_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Followed {
        first_at: first_at.context("the follower received nothing")?,
        first_line,
        bytes,
        end_at: SystemTime::now(),
    })
}

struct Bulk {
    log_bytes: u64,
    /// First line's timestamp → the follower's first byte (`None`: no follower).
    first_byte: Option<Duration>,
    /// First line's timestamp → the step's reported end.
    step: Duration,
    /// First line's timestamp → the follower's last byte.
    followed: Option<Duration>,
    /// First line's timestamp → the task's reported end (log closed, pod removed).
    task: Duration,
    /// First line's timestamp → the step's archive complete.
    archived: Duration,
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// The first line of a finished step log.
async fn first_line(client: &RunClient, id: &str, task_id: &str) -> anyhow::Result<String> {
    let mut log = client.logs(id, task_id, LogStep::Step(0), 0, false).await?;
    let mut head = Vec::new();
    while let Some(chunk) = log.next().await {
        head.extend_from_slice(&chunk?);
        if head.contains(&b'\n') || head.len() >= 64 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// One run printing `cfg.bulk_mb` MiB, with a follower from offset 0 when `follow`.
async fn bulk_run(
    cfg: &Config,
    client: &RunClient,
    dir: &Path,
    i: usize,
    follow: bool,
) -> anyhow::Result<Bulk> {
    let bytes = cfg.bulk_mb * 1024 * 1024;
    let gate = dir.join(format!("gate-{i}"));
    let command = format!(
        "while [ ! -e {gate} ]; do sleep 0.005; done; date +%s%N; yes | head -c {bytes}",
        gate = gate.display()
    );
    let (id, task_id) = create(
        client,
        "/project/e2e/branch/bulk",
        one_step_config(&command),
    )
    .await?;
    // The follower's request is answered before the command is let go.
    let mut follower = None;
    if follow {
        let log = client
            .logs(&id, &task_id, LogStep::Step(0), 0, true)
            .await
            .context("opening the follower")?;
        follower = Some(AbortOnDrop(tokio::spawn(follow_log(log))));
    }
    std::fs::write(&gate, b"").context("creating the gate file")?;
    let (run, archived_at) = poll_run(client, &id, Duration::from_millis(20), |r| {
        r.tasks.values().all(|t| {
            t.status.is_finished() && t.steps.iter().all(|s| s.log_phase == FetchPhase::Finished)
        })
    })
    .await?;
    if run.result != RunResult::Success {
        bail!("bulk run {id} ended {}", run.result.as_str());
    }
    let followed = match follower {
        Some(mut f) => Some((&mut f.0).await??),
        None => None,
    };
    let line = match &followed {
        Some(f) => f.first_line.clone(),
        None => first_line(client, &id, &task_id).await?,
    };
    let ts: u64 = line
        .trim()
        .parse()
        .with_context(|| format!("the first log line {line:?} is no timestamp"))?;
    let wrote = UNIX_EPOCH + Duration::from_nanos(ts);
    let log_bytes = line.len() as u64 + 1 + bytes;
    if let Some(f) = &followed
        && f.bytes != log_bytes
    {
        bail!("the follower got {} bytes, not {log_bytes}", f.bytes);
    }
    let rt = &run.tasks[&task_id];
    let step_end = chrono_time(rt.steps[0].end_time).context("no step end time")?;
    let task_end = chrono_time(rt.end_time).context("no task end time")?;
    let b = Bulk {
        task: since(task_end, wrote),
        log_bytes,
        first_byte: followed.as_ref().map(|f| since(f.first_at, wrote)),
        step: since(step_end, wrote),
        followed: followed.as_ref().map(|f| since(f.end_at, wrote)),
        archived: since(archived_at, wrote),
    };
    let of = |d: Option<Duration>, unit_ms: bool| match d {
        Some(d) if unit_ms => ms(d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.2}", d.as_secs_f64()),
        None => "-".into(),
    };
    eprintln!(
        "bench: e2e: bulk {i} ({}): {} bytes; first byte to the follower after {} ms; step done after {:.2} s ({:.0} MB/s), task done after {:.2} s, follower done after {} s, archive complete after {:.2} s ({:.0} MB/s)",
        if follow { "followed" } else { "no follower" },
        b.log_bytes,
        of(b.first_byte, true),
        b.step.as_secs_f64(),
        mb_per_s(b.log_bytes, b.step),
        b.task.as_secs_f64(),
        of(b.followed, false),
        b.archived.as_secs_f64(),
        mb_per_s(b.log_bytes, b.archived),
    );
    Ok(b)
}

/// Waits until every run is archived (nothing left for the scheduler or the executor).
async fn all_archived(client: &RunClient, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        poll_run(client, id, Duration::from_millis(50), |r| r.archived).await?;
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let v: Vec<&str> = s.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

pub async fn e2e_bench() -> anyhow::Result<()> {
    let begun = Instant::now();
    let cfg = config()?;
    let mut b = tempfile::Builder::new();
    b.prefix("cairn-bench-e2e-");
    let tmp = match &cfg.dir {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .context("creating a temp dir")?;
    let load_before = load_average();

    eprintln!("bench: e2e: 1. ready time over {} starts", cfg.starts);
    let mut readies = Vec::new();
    let mut last = None;
    for i in 0..cfg.starts {
        let dir = tmp.path().join(format!("start-{i}"));
        std::fs::create_dir_all(&dir)?;
        // The previous service is gone before the next one starts.
        drop(last.take());
        let (svc, client, ready) = start(&cfg, &dir).await?;
        eprintln!(
            "bench: e2e: start {i}: /readyz 200 after {} ms, serving line {} ms, executor registered {} ms, scheduler active {} ms",
            ms(ready.readyz.as_secs_f64() * 1e3),
            ms(ready.line.as_secs_f64() * 1e3),
            ms(ready.executor.as_secs_f64() * 1e3),
            ms(ready.scheduler.as_secs_f64() * 1e3),
        );
        readies.push(ready);
        last = Some((svc, client, dir));
    }
    let (svc, client, dir) = last.context("no start")?;
    let pid = svc.pid();
    let mut rss = vec![idle_rss(pid, "after startup (3 s idle)", Duration::from_secs(3)).await];

    let tracker = Arc::new(Tracker::default());
    let events = tracker.follow(&client, "e2e");
    let result = async {
        eprintln!("bench: e2e: 2. {} sequential runs of `true`", cfg.runs);
        let trues = true_runs(&cfg, &client, &tracker).await?;
        all_archived(&client, &trues.ids).await?;
        rss.push(
            idle_rss(
                pid,
                &format!(
                    "after {} `true` runs (archived, 3 s idle)",
                    cfg.runs + WARMUP_RUNS
                ),
                Duration::from_secs(3),
            )
            .await,
        );
        eprintln!(
            "bench: e2e: 3. {} runs printing {} MiB, followed",
            cfg.bulk_runs, cfg.bulk_mb
        );
        let mut bulks = Vec::new();
        for i in 0..cfg.bulk_runs {
            bulks.push(bulk_run(&cfg, &client, &dir, i, true).await?);
        }
        for i in 0..cfg.bulk_unfollowed {
            bulks.push(bulk_run(&cfg, &client, &dir, cfg.bulk_runs + i, false).await?);
        }
        rss.push(
            idle_rss(
                pid,
                &format!("after the {} MiB runs (archived, 3 s idle)", cfg.bulk_mb),
                Duration::from_secs(3),
            )
            .await,
        );
        anyhow::Ok((trues, bulks))
    }
    .await;
    drop(events);
    let (trues, bulks) = match result {
        Ok(r) => r,
        Err(e) => bail!("{e:#}\nserver log:\n{}", svc.log_tail()),
    };
    let context = format!(
        "- date: {}\n- machine: {} CPUs ({}), load average {load_before} before, {} after; temp dirs in {}\n- cairn: {} ({}), engine {}, one `cairn serve` child process with its in-process executor (local driver), object storage in its data dir\n- counts: {} starts; {} runs of `true` (after {WARMUP_RUNS} warm-up runs); {} runs printing {} MiB\n",
        command_line(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        command_line(Path::new("uname"), &["-srm"]),
        load_average(),
        tmp.path().display(),
        cfg.cairn.display(),
        command_line(&cfg.cairn, &["--version"]),
        cfg.engine,
        cfg.starts,
        cfg.runs,
        cfg.bulk_runs,
        cfg.bulk_mb,
    );
    println!("{}", render(&context, &readies, &rss, &trues, &bulks));
    drop(svc);
    eprintln!("bench: e2e took {:.0} s", begun.elapsed().as_secs_f64());
    Ok(())
}

fn render(
    context: &str,
    readies: &[Ready],
    rss: &[RssRow],
    t: &TrueRuns,
    bulks: &[Bulk],
) -> String {
    let mut out = String::from("\n---- markdown ----\n\n");
    out += context;
    out += "\n#### Ready time (from spawning `cairn serve`, fresh data dir)\n\n";
    out += "| start | `/readyz` 200 ms | `serving on` line ms | executor registered ms | scheduler active ms |\n";
    out += "| ---: | ---: | ---: | ---: | ---: |\n";
    let ms_of = |d: Duration| ms(d.as_secs_f64() * 1e3);
    for (i, r) in readies.iter().enumerate() {
        out += &format!(
            "| {i} | {} | {} | {} | {} |\n",
            ms_of(r.readyz),
            ms_of(r.line),
            ms_of(r.executor),
            ms_of(r.scheduler)
        );
    }
    out += "\n#### Idle memory of `cairn serve` with its executor\n\n";
    out += "| when | VmRSS MiB (MB) | VmHWM (peak) MiB | target |\n| --- | ---: | ---: | --- |\n";
    for r in rss {
        out += &format!(
            "| {} | {:.1} ({:.1} MB) | {:.1} | ≤ 50 MB {} |\n",
            r.when,
            r.rss,
            r.rss * 1.048_576,
            r.hwm,
            if r.rss * 1.048_576 <= 50.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    out += "\n#### One-task run of `true`, submit → finished (run-event stream), sequential\n\n";
    out += "| measure | runs | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n";
    for (what, s) in [
        ("**submit → finished seen**", &t.finished),
        ("`POST /runs` answered", &t.created),
        ("submit → task start (executor's clock)", &t.to_task_start),
        ("task start → task end (executor's report)", &t.task),
        ("task end → finished seen", &t.task_end_to_seen),
    ] {
        out += &format!(
            "| {what} | {} | {} | {} | {} |\n",
            s.lats.len(),
            ms(s.pct_ms(0.5)),
            ms(s.pct_ms(0.99)),
            ms(s.pct_ms(1.0))
        );
    }
    let p50 = t.finished.pct_ms(0.5);
    out += &format!(
        "\nTarget p50 ≤ 150 ms: {}.\n",
        if p50 <= 150.0 { "met" } else { "MISSED" }
    );
    out += "\n#### A step printing a lot, followed from offset 0\n\n";
    out += "Times from the timestamp on the step's first line.\n\n";
    out += "| trial | follower | log bytes | first byte to follower ms | step process done s (MB/s) | task done s | follower done s | archive complete s | **MB/s to archive** |\n";
    out += "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n";
    for (i, b) in bulks.iter().enumerate() {
        out += &format!(
            "| {i} | {} | {} | {} | {:.2} ({:.0}) | {:.2} | {} | {:.2} | {:.0} |\n",
            if b.first_byte.is_some() { "yes" } else { "no" },
            b.log_bytes,
            b.first_byte.map_or("-".into(), ms_of),
            b.step.as_secs_f64(),
            mb_per_s(b.log_bytes, b.step),
            b.task.as_secs_f64(),
            b.followed
                .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())),
            b.archived.as_secs_f64(),
            mb_per_s(b.log_bytes, b.archived),
        );
    }
    out
}

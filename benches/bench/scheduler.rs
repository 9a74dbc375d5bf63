//! The scheduler benchmark. One release `cairn serve` child process on loopback (its own
//! temp data dir, `--listen 127.0.0.1:0`, engine redb unless `CAIRN_BENCH_ENGINE` says
//! otherwise) is driven through [`RunClient`] by bench executors living in this process:
//! real clients of the executor protocol (register and heartbeat, long-poll
//! `GET /executors/{id}/tasks`, report `running` then `success`) whose tasks do nothing.
//! It measures:
//!
//! 1. **task ready → handed**: runs of a 20-task chain (t00 → t01 → … → t19), one at a
//!    time, one executor. For every task but the first, the time from the moment the
//!    executor sends its parent's `success` report (which makes the child ready) to the
//!    moment one of its long polls returns the child;
//! 2. **drain**: 1,000 one-task runs over 50 groups (20 each; one creator per group, all
//!    concurrent) with 4 executors: creation throughput, and the time until every run is
//!    finished (seen on the run-event stream);
//! 3. **flatness**: with ~1k, 10k (and, on request, 100k) finished and archived runs in
//!    the store, (1) again, plus `GET /runs?limit=25` and `GET /runs?phase=running&limit=25`.
//!    The runs are made through the API by 32 concurrent creators (each in its own group,
//!    creating its next run once its last one finished) and 4 executors, or imported.
//!
//! Two runs whose task never ends stay running the whole time, so the `phase=running`
//! page is not empty. Environment: `CAIRN_BENCH_SCHED_CHAIN_RUNS` (11: 209 hand-outs),
//! `CAIRN_BENCH_SCHED_RUNS` (1000), `CAIRN_BENCH_SCHED_GROUPS` (50),
//! `CAIRN_BENCH_SCHED_EXECUTORS` (4), `CAIRN_BENCH_SCHED_SCALES` (`1000,10000`; add
//! `100000` for the full run), `CAIRN_BENCH_SCHED_IN_FLIGHT` (32),
//! `CAIRN_BENCH_SCHED_PAGES` (200), `CAIRN_BENCH_SCHED_FILL` (`api`, or `import`: see
//! `import_fill`), `CAIRN_BENCH_SERVER_LOG` (`warn`), plus the store bench's `CAIRN_BIN`,
//! `CAIRN_BENCH_ENGINE` and `CAIRN_BENCH_DIR`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_client::RunClient;
use cairn_client::api::ListRunsQuery;
use cairn_client::executor::{AssignedTask, Executor, ExecutorTaskStatus, StepStatus};
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunResult};
use cairn_client::runconfig::Arch;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::heartbeat::spawn_heartbeat;
use crate::load::Sample;
use crate::request::create_request;
use crate::tracker::{AbortOnDrop, Tracker};
use crate::{command_line, env_num};

const TOKEN: &str = "cairn-bench-token";
const CHAIN_LEN: usize = 20;
/// Tasks with this name report `running` and never finish.
const HOLD: &str = "hold";
/// A run that takes longer than this to finish fails the bench.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

struct Config {
    cairn: PathBuf,
    engine: String,
    dir: Option<PathBuf>,
    chain_runs: usize,
    runs: usize,
    groups: usize,
    executors: usize,
    scales: Vec<usize>,
    in_flight: usize,
    pages: usize,
    /// Fill the store for the flatness points by import (`CAIRN_BENCH_SCHED_FILL=import`)
    /// rather than through the scheduler (`api`, the default).
    fill_by_import: bool,
}

fn config() -> anyhow::Result<Config> {
    let engine = std::env::var("CAIRN_BENCH_ENGINE").unwrap_or_else(|_| "redb".into());
    let scales = std::env::var("CAIRN_BENCH_SCHED_SCALES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("CAIRN_BENCH_SCHED_SCALES: {s:?} is not a number"))
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    Ok(Config {
        cairn: crate::cairn_bin(&engine)?,
        engine,
        dir: std::env::var_os("CAIRN_BENCH_DIR").map(PathBuf::from),
        chain_runs: env_num("CAIRN_BENCH_SCHED_CHAIN_RUNS", 11)?.max(1),
        runs: env_num("CAIRN_BENCH_SCHED_RUNS", 1000)?,
        groups: env_num("CAIRN_BENCH_SCHED_GROUPS", 50)?.max(1),
        executors: env_num("CAIRN_BENCH_SCHED_EXECUTORS", 4)?.max(1),
        scales,
        in_flight: env_num("CAIRN_BENCH_SCHED_IN_FLIGHT", 32)?.max(1),
        pages: env_num("CAIRN_BENCH_SCHED_PAGES", 200)?.max(1),
        fill_by_import: match std::env::var("CAIRN_BENCH_SCHED_FILL").as_deref() {
            Err(_) | Ok("api") => false,
            Ok("import") => true,
            Ok(other) => bail!("CAIRN_BENCH_SCHED_FILL: {other:?} is not api or import"),
        },
    })
}

// --- the service ----------------------------------------------------------------------

/// A `cairn serve` child process; killed (SIGKILL) and reaped when dropped.
struct ServiceChild {
    url: String,
    log: PathBuf,
    child: Child,
}

impl ServiceChild {
    async fn start(cfg: &Config, dir: &Path) -> anyhow::Result<ServiceChild> {
        let log = dir.join("serve.log");
        let mut child = Command::new(&cfg.cairn)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN, "--no-executor"])
            .args(["--engine", &cfg.engine])
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .with_context(|| format!("starting {}", cfg.cairn.display()))?;
        let out = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining after the ready line so the child never blocks on a pipe.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("cairn: serving on")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let mut svc = ServiceChild {
            url: String::new(),
            log,
            child,
        };
        // "cairn: serving on http://127.0.0.1:PORT node …"
        let line = match tokio::time::timeout(Duration::from_secs(90), rx).await {
            Ok(Ok(line)) => line,
            _ => bail!("cairn serve was not ready within 90 s:\n{}", svc.log_tail()),
        };
        svc.url = line
            .split_whitespace()
            .nth(3)
            .context("no URL in the ready line")?
            .to_string();
        Ok(svc)
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

// --- run configs ----------------------------------------------------------------------

fn task_yaml(name: &str, parent: Option<&str>) -> String {
    let depends = parent.map_or(String::new(), |p| format!("        depends: [ {p} ]\n"));
    format!(
        "      - name: {name}\n        runtime: {{ containers: [ {{ image: busybox }} ] }}\n{depends}        steps: [ {{ run: \"true\" }} ]\n"
    )
}

fn chain_config() -> String {
    let mut s = String::from("runs:\n  - name: chain\n    tasks:\n");
    for i in 0..CHAIN_LEN {
        let parent = (i > 0).then(|| format!("t{:02}", i - 1));
        s += &task_yaml(&format!("t{i:02}"), parent.as_deref());
    }
    s
}

fn one_task_config(name: &str) -> String {
    format!(
        "runs:\n  - name: one\n    tasks:\n{}",
        task_yaml(name, None)
    )
}

/// Whether a task's success makes a chain child ready (every chain task but the last).
fn has_chain_child(task_name: &str) -> bool {
    task_name.starts_with('t') && task_name != format!("t{:02}", CHAIN_LEN - 1)
}

async fn create(client: &RunClient, group: &str, config: &str) -> anyhow::Result<String> {
    let resp = client
        .create_run(&create_request(group, config))
        .await
        .with_context(|| format!("creating a run in {group}"))?;
    Ok(resp.runs.first().context("no run created")?.run.id.clone())
}

// --- bench executors -------------------------------------------------------------------

/// What the executors measure, shared by all of them.
#[derive(Default)]
struct Probe {
    /// Run id → when the `success` report that makes its next chain task ready was sent.
    ready_at: Mutex<HashMap<String, Instant>>,
    /// Ready → handed, per chain task.
    handed: Mutex<Vec<Duration>>,
    /// Round trips of those `success` reports.
    reports: Mutex<Vec<Duration>>,
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Probe {
    fn error(&self, what: String) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first_error.lock().expect("probe lock") = Some(what);
        }
    }

    /// The samples so far, and forget them.
    fn take(&self) -> (Vec<Duration>, Vec<Duration>) {
        self.ready_at.lock().expect("probe lock").clear();
        (
            std::mem::take(&mut *self.handed.lock().expect("probe lock")),
            std::mem::take(&mut *self.reports.lock().expect("probe lock")),
        )
    }
}

/// An executor whose tasks report `running` and then `success` at once (tasks named
/// [`HOLD`] stay running). Stops heartbeating and polling when dropped.
struct BenchExecutor {
    id: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl BenchExecutor {
    fn start(client: &RunClient, id: &str, probe: &Arc<Probe>) -> BenchExecutor {
        let cancel = CancellationToken::new();
        let me = Executor {
            id: id.to_string(),
            archs: Arch::host().into_iter().collect(),
            ..Executor::default()
        };
        let heartbeat = spawn_heartbeat(
            client.clone(),
            me.clone(),
            Duration::from_secs(1),
            cancel.clone(),
        );
        let poller = {
            let (client, cancel, probe) = (client.clone(), cancel.clone(), probe.clone());
            tokio::spawn(async move { poll(client, me, probe, cancel).await })
        };
        BenchExecutor {
            id: id.to_string(),
            cancel,
            tasks: vec![heartbeat, poller],
        }
    }

    /// Stops it and deletes its registration (its tasks must all be finished).
    async fn retire(mut self, client: &RunClient) -> anyhow::Result<()> {
        self.stop();
        client
            .delete_executor(&self.id)
            .await
            .with_context(|| format!("deleting executor {}", self.id))
    }

    fn stop(&mut self) {
        self.cancel.cancel();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for BenchExecutor {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn poll(client: RunClient, me: Executor, probe: Arc<Probe>, cancel: CancellationToken) {
    while client.heartbeat(&me).await.is_err() {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Tasks handed to us and still in the store.
    let mut started: HashSet<String> = HashSet::new();
    let mut after = 0;
    loop {
        let resp = tokio::select! {
            _ = cancel.cancelled() => return,
            r = client.executor_tasks(&me.id, after, Duration::from_secs(30)) => r,
        };
        let at = Instant::now();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                probe.error(format!("long poll: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        after = resp.revision;
        let present: HashSet<&str> = resp.tasks.iter().map(|t| t.task.id.as_str()).collect();
        started.retain(|id| present.contains(id.as_str()));
        for t in resp.tasks {
            if t.task.status.phase != ExecutorTaskPhase::NotStarted
                || !started.insert(t.task.id.clone())
            {
                continue;
            }
            if let Some(ready) = probe
                .ready_at
                .lock()
                .expect("probe lock")
                .remove(&t.task.spec.run_id)
            {
                let took = at.duration_since(ready);
                if took > Duration::from_millis(500) {
                    eprintln!(
                        "bench: scheduler: slow hand-out: {} ms, handed at {}",
                        took.as_millis(),
                        chrono::Utc::now().format("%H:%M:%S%.3f")
                    );
                }
                probe.handed.lock().expect("probe lock").push(took);
            }
            let (client, exec, probe) = (client.clone(), me.id.clone(), probe.clone());
            tokio::spawn(async move { run_task(&client, &exec, t, &probe).await });
        }
    }
}

async fn report(
    client: &RunClient,
    exec: &str,
    task: &str,
    status: &ExecutorTaskStatus,
    probe: &Probe,
) {
    for _ in 0..50 {
        match client.report_status(exec, task, status).await {
            Ok(()) => return,
            Err(e) => probe.error(format!("status report: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_task(client: &RunClient, exec: &str, t: AssignedTask, probe: &Probe) {
    let now = chrono::Utc::now;
    let id = &t.task.id;
    let steps = t.data.steps.len();
    let mut st = ExecutorTaskStatus {
        phase: ExecutorTaskPhase::Running,
        start_time: Some(now()),
        setup_step: StepStatus {
            phase: ExecutorTaskPhase::Success,
            start_time: Some(now()),
            end_time: Some(now()),
            exit_status: None,
        },
        steps: vec![
            StepStatus {
                phase: ExecutorTaskPhase::Running,
                start_time: Some(now()),
                ..StepStatus::default()
            };
            steps
        ],
        ..ExecutorTaskStatus::default()
    };
    report(client, exec, id, &st, probe).await;
    if t.data.task_name == HOLD {
        return;
    }
    st.phase = ExecutorTaskPhase::Success;
    st.end_time = Some(now());
    for s in &mut st.steps {
        s.phase = ExecutorTaskPhase::Success;
        s.exit_status = Some(0);
        s.end_time = Some(now());
    }
    let chain = has_chain_child(&t.data.task_name);
    let sent = Instant::now();
    if chain {
        probe
            .ready_at
            .lock()
            .expect("probe lock")
            .insert(t.task.spec.run_id.clone(), sent);
    }
    report(client, exec, id, &st, probe).await;
    if chain {
        probe
            .reports
            .lock()
            .expect("probe lock")
            .push(sent.elapsed());
    }
}

// --- the scenarios ---------------------------------------------------------------------

fn sample(lats: Vec<Duration>, elapsed: Duration) -> Sample {
    let mut lats = lats;
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

/// Ready → handed over `cfg.chain_runs` chain runs, one at a time.
struct Chain {
    handed: Sample,
    reports: Sample,
}

async fn chain(
    cfg: &Config,
    client: &RunClient,
    tracker: &Tracker,
    probe: &Probe,
    tag: &str,
) -> anyhow::Result<Chain> {
    probe.take();
    let started = Instant::now();
    let config = chain_config();
    for _ in 0..cfg.chain_runs {
        let id = create(client, "/project/chain/branch/main", &config).await?;
        let (result, _) = tracker.wait(&id, RUN_TIMEOUT).await?;
        if result != RunResult::Success {
            bail!("chain run {id} ended {}", result.as_str());
        }
    }
    let (handed, reports) = probe.take();
    let (handed, reports) = (
        sample(handed, started.elapsed()),
        sample(reports, started.elapsed()),
    );
    eprintln!(
        "bench: scheduler: {tag}: ready → handed p50 {} ms, p99 {} ms over {} hand-outs (success report p50 {} ms)",
        ms(handed.pct_ms(0.5)),
        ms(handed.pct_ms(0.99)),
        handed.lats.len(),
        ms(reports.pct_ms(0.5)),
    );
    Ok(Chain { handed, reports })
}

struct Drain {
    runs: usize,
    groups: usize,
    created_in: Duration,
    finished_in: Duration,
}

async fn drain(cfg: &Config, client: &RunClient, tracker: &Arc<Tracker>) -> anyhow::Result<Drain> {
    let per_group = cfg.runs.div_ceil(cfg.groups);
    let config = one_task_config("job");
    let started = Instant::now();
    let mut creators = JoinSet::new();
    for g in 0..cfg.groups {
        let n = per_group.min(cfg.runs.saturating_sub(g * per_group));
        let (client, config) = (client.clone(), config.clone());
        creators.spawn(async move {
            let group = format!("/project/drain/branch/g{g:03}");
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(create(&client, &group, &config).await?);
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = Vec::with_capacity(cfg.runs);
    while let Some(r) = creators.join_next().await {
        ids.extend(r??);
    }
    let created_in = started.elapsed();
    let mut last = started;
    for id in &ids {
        let (result, at) = tracker.wait(id, RUN_TIMEOUT).await?;
        if result != RunResult::Success {
            bail!("run {id} ended {}", result.as_str());
        }
        last = last.max(at);
    }
    let d = Drain {
        runs: ids.len(),
        groups: cfg.groups,
        created_in,
        finished_in: last.duration_since(started),
    };
    eprintln!(
        "bench: scheduler: drain: {} runs created in {:.2} s ({:.0}/s), all finished after {:.2} s ({:.0}/s)",
        d.runs,
        d.created_in.as_secs_f64(),
        d.runs as f64 / d.created_in.as_secs_f64(),
        d.finished_in.as_secs_f64(),
        d.runs as f64 / d.finished_in.as_secs_f64(),
    );
    Ok(d)
}

/// Creates `n` one-task runs with `cfg.in_flight` unfinished at a time, then waits
/// until the last run of every creator is archived.
async fn fill(
    cfg: &Config,
    client: &RunClient,
    tracker: &Arc<Tracker>,
    n: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let config = one_task_config("job");
    let mut workers = JoinSet::new();
    for w in 0..cfg.in_flight {
        let (client, tracker, next, config) = (
            client.clone(),
            tracker.clone(),
            next.clone(),
            config.clone(),
        );
        workers.spawn(async move {
            let group = format!("/project/fill/branch/w{w:03}");
            let mut last = None;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let id = create(&client, &group, &config).await?;
                let (result, _) = tracker.wait(&id, RUN_TIMEOUT).await?;
                if result != RunResult::Success {
                    bail!("run {id} ended {}", result.as_str());
                }
                last = Some(id);
            }
            anyhow::Ok(last)
        });
    }
    // Progress every 30 s: a 100k fill takes a while.
    let progress = {
        let next = next.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let made = next.load(Ordering::Relaxed).min(n);
                eprintln!(
                    "bench: scheduler: fill: {made}/{n} runs created after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }))
    };
    let mut lasts = Vec::new();
    let mut failed = None;
    while let Some(r) = workers.join_next().await {
        match r {
            Ok(Ok(last)) => lasts.extend(last),
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(e) => failed = failed.or(Some(e.into())),
        }
    }
    drop(progress);
    if let Some(e) = failed {
        return Err(e);
    }
    for id in &lasts {
        wait_archived(client, id).await?;
    }
    Ok(started.elapsed())
}

async fn wait_archived(client: &RunClient, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !client.run(id).await?.run.archived {
        if Instant::now() > deadline {
            bail!("run {id} was not archived within {RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The fill by import: one real run through the scheduler, archived, then `n - 1` copies
/// of it imported (see `import_fill`). The import fails the held runs' tasks, so two new
/// held runs are made and waited for.
async fn fill_by_import(
    cfg: &Config,
    client: &RunClient,
    tracker: &Arc<Tracker>,
    n: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let group = "/project/fill/branch/w";
    let template = create(client, &format!("{group}000"), &one_task_config("job")).await?;
    let (result, _) = tracker.wait(&template, RUN_TIMEOUT).await?;
    if result != RunResult::Success {
        bail!("run {template} ended {}", result.as_str());
    }
    wait_archived(client, &template).await?;
    crate::import_fill::import_copies(client, &template, n.saturating_sub(1), group, cfg.in_flight)
        .await?;
    let held = hold_runs(client).await?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    let running = ListRunsQuery {
        phase: vec![RunPhase::Running],
        limit: Some(25),
        ..ListRunsQuery::default()
    };
    loop {
        let page = client.list_runs(&running).await?;
        let ids: HashSet<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
        if ids == held.iter().map(String::as_str).collect() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the new held runs were not the running ones within {RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed())
}

/// Two runs whose task never ends (bench-ex0 holds them), so `phase=running` has something.
async fn hold_runs(client: &RunClient) -> anyhow::Result<Vec<String>> {
    let hold = one_task_config(HOLD);
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(create(client, &format!("/project/hold/branch/h{i}"), &hold).await?);
    }
    Ok(ids)
}

/// `pages` requests of one listing; checks the page size.
async fn pages(
    client: &RunClient,
    q: &ListRunsQuery,
    pages: usize,
    want: usize,
) -> anyhow::Result<Sample> {
    for _ in 0..10 {
        client.list_runs(q).await?;
    }
    let started = Instant::now();
    let mut lats = Vec::with_capacity(pages);
    for _ in 0..pages {
        let t = Instant::now();
        let page = client.list_runs(q).await?;
        lats.push(t.elapsed());
        if page.runs.len() != want {
            bail!("{q:?} returned {} runs, not {want}", page.runs.len());
        }
    }
    Ok(sample(lats, started.elapsed()))
}

struct Scale {
    finished: usize,
    /// The server's RSS and peak RSS after the point's measurements.
    memory: String,
    built_in: Option<(usize, Duration)>,
    chain: Chain,
    all: Sample,
    running: Sample,
}

/// Executors 1.. (`bench-ex0` runs the whole time).
fn extra_executors(cfg: &Config, client: &RunClient, probe: &Arc<Probe>) -> Vec<BenchExecutor> {
    (1..cfg.executors)
        .map(|i| BenchExecutor::start(client, &format!("bench-ex{i}"), probe))
        .collect()
}

async fn retire(client: &RunClient, executors: Vec<BenchExecutor>) -> anyhow::Result<()> {
    for e in executors {
        e.retire(client).await?;
    }
    Ok(())
}

/// `VmRSS / VmHWM` of a process, in MiB.
fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or("?".to_string(), |kib| format!("{:.0}", kib / 1024.0))
    };
    format!("{} / {} MiB", field("VmRSS:"), field("VmHWM:"))
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

pub async fn scheduler_bench() -> anyhow::Result<()> {
    let begun = Instant::now();
    let cfg = config()?;
    let mut b = tempfile::Builder::new();
    b.prefix("cairn-bench-scheduler-");
    let dir = match &cfg.dir {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .context("creating a temp dir")?;
    let load_before = load_average();
    let svc = ServiceChild::start(&cfg, dir.path()).await?;
    let client = RunClient::new(std::slice::from_ref(&svc.url), Some(TOKEN.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.cluster().await.is_ok_and(|c| c.scheduler_active) {
        if Instant::now() > deadline {
            bail!("no active scheduler within 60 s:\n{}", svc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tracker = Arc::new(Tracker::default());
    let events = tracker.follow(&client, "scheduler");
    let probe = Arc::new(Probe::default());
    let ex0 = BenchExecutor::start(&client, "bench-ex0", &probe);
    hold_runs(&client).await?;
    let result = scenarios(&cfg, &client, &tracker, &probe, svc.child.id()).await;
    drop(ex0);
    drop(events);
    let load_after = load_average();
    let disk = command_line(
        Path::new("du"),
        &["-sh", &dir.path().join("data").display().to_string()],
    );
    let (chain0, drain, scales) = match result {
        Ok(r) => r,
        Err(e) => bail!("{e:#}\nserver log:\n{}", svc.log_tail()),
    };
    let errors = probe.errors.load(Ordering::Relaxed);
    let context = format!(
        "- date: {}\n- machine: {} CPUs ({}), load average {load_before} before, {load_after} after; data dir in {} ({} at the end)\n- cairn: {} ({}), engine {}, one `cairn serve` child process\n- counts: {} chain runs per point ({} hand-outs), {} drain runs in {} groups, {} executors for drain and fill (1 for the chains), {} in flight while filling, {} requests per page row\n- executor errors (retried): {errors}{}\n",
        command_line(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        command_line(Path::new("uname"), &["-srm"]),
        dir.path().display(),
        disk.split_whitespace().next().unwrap_or("?"),
        cfg.cairn.display(),
        command_line(&cfg.cairn, &["--version"]),
        cfg.engine,
        cfg.chain_runs,
        cfg.chain_runs * (CHAIN_LEN - 1),
        cfg.runs,
        cfg.groups,
        cfg.executors,
        cfg.in_flight,
        cfg.pages,
        probe
            .first_error
            .lock()
            .expect("probe lock")
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
    );
    println!("{}", render(&context, &chain0, &drain, &scales));
    let log = std::fs::read_to_string(&svc.log).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("compacted history")
                || l.contains("snapshot saved")
        })
        .collect();
    eprintln!(
        "bench: scheduler: the server logged {} warnings, errors, compactions and snapshots; the last ones:\n{}",
        warnings.len(),
        warnings[warnings.len().saturating_sub(20)..].join("\n")
    );
    drop(svc);
    eprintln!(
        "bench: scheduler took {:.0} s",
        begun.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn scenarios(
    cfg: &Config,
    client: &RunClient,
    tracker: &Arc<Tracker>,
    probe: &Arc<Probe>,
    server_pid: u32,
) -> anyhow::Result<(Chain, Drain, Vec<Scale>)> {
    let mut finished = 0;
    eprintln!("bench: scheduler: 1. ready → handed, empty store");
    let chain0 = chain(cfg, client, tracker, probe, "empty store").await?;
    finished += cfg.chain_runs;

    eprintln!("bench: scheduler: 2. drain {} runs", cfg.runs);
    let extra = extra_executors(cfg, client, probe);
    let drained = drain(cfg, client, tracker).await?;
    retire(client, extra).await?;
    finished += drained.runs;

    let mut scales = Vec::new();
    for &target in &cfg.scales {
        let mut built_in = None;
        if finished < target {
            let n = target - finished;
            eprintln!("bench: scheduler: 3. filling to {target} finished runs ({n} more)");
            let took = if cfg.fill_by_import {
                fill_by_import(cfg, client, tracker, n).await?
            } else {
                let extra = extra_executors(cfg, client, probe);
                let took = fill(cfg, client, tracker, n).await?;
                retire(client, extra).await?;
                took
            };
            eprintln!(
                "bench: scheduler: {n} runs made, finished and archived in {:.1} s ({:.0}/s)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
            finished += n;
            built_in = Some((n, took));
        }
        let tag = format!("{finished} finished runs");
        let chain = chain(cfg, client, tracker, probe, &tag).await?;
        let all = pages(
            client,
            &ListRunsQuery {
                limit: Some(25),
                ..ListRunsQuery::default()
            },
            cfg.pages,
            25,
        )
        .await?;
        let running = pages(
            client,
            &ListRunsQuery {
                phase: vec![RunPhase::Running],
                limit: Some(25),
                ..ListRunsQuery::default()
            },
            cfg.pages,
            2,
        )
        .await?;
        eprintln!(
            "bench: scheduler: {tag}: GET /runs?limit=25 p50 {} ms p99 {} ms; phase=running p50 {} ms p99 {} ms",
            ms(all.pct_ms(0.5)),
            ms(all.pct_ms(0.99)),
            ms(running.pct_ms(0.5)),
            ms(running.pct_ms(0.99)),
        );
        let memory = memory(server_pid);
        eprintln!("bench: scheduler: {tag}: server memory {memory}");
        scales.push(Scale {
            finished,
            memory,
            built_in,
            chain,
            all,
            running,
        });
        finished += cfg.chain_runs;
    }
    Ok((chain0, drained, scales))
}

fn render(context: &str, chain0: &Chain, drain: &Drain, scales: &[Scale]) -> String {
    let mut out = String::from("\n---- markdown ----\n\n");
    out += context;
    out += "\n#### 1. Task ready → handed to an executor (20-task chain, 1 executor)\n\n";
    out += "| finished runs in store | hand-outs | p50 ms | p99 ms | max ms | success report p50 ms | target |\n";
    out += "| ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
    let chain_row = |finished: String, c: &Chain| {
        let p50 = c.handed.pct_ms(0.5);
        format!(
            "| {finished} | {} | {} | {} | {} | {} | p50 ≤ 20 ms {} |\n",
            c.handed.lats.len(),
            ms(p50),
            ms(c.handed.pct_ms(0.99)),
            ms(c.handed.pct_ms(1.0)),
            ms(c.reports.pct_ms(0.5)),
            if p50 <= 20.0 { "met" } else { "MISSED" }
        )
    };
    out += &chain_row("~0".into(), chain0);
    for s in scales {
        out += &chain_row(s.finished.to_string(), &s.chain);
    }
    out += "\n#### 2. Queued runs drained (several groups, the extra executors)\n\n";
    out += "| runs | groups | created in s | created runs/s | all finished after s | drained runs/s |\n";
    out += "| ---: | ---: | ---: | ---: | ---: | ---: |\n";
    out += &format!(
        "| {} | {} | {:.2} | {:.0} | {:.2} | {:.0} |\n",
        drain.runs,
        drain.groups,
        drain.created_in.as_secs_f64(),
        drain.runs as f64 / drain.created_in.as_secs_f64(),
        drain.finished_in.as_secs_f64(),
        drain.runs as f64 / drain.finished_in.as_secs_f64(),
    );
    out += "\n#### 3. Cost per event as finished runs grow\n\n";
    out += "| finished runs in store | built (runs, s, runs/s) | ready → handed p50 / p99 ms | `GET /runs?limit=25` p50 / p99 ms | `phase=running` p50 / p99 ms | server RSS / peak |\n";
    out += "| ---: | --- | --- | --- | --- | --- |\n";
    for s in scales {
        let built = s.built_in.map_or("-".to_string(), |(n, d)| {
            format!(
                "{n}, {:.0} s, {:.0}/s",
                d.as_secs_f64(),
                n as f64 / d.as_secs_f64()
            )
        });
        out += &format!(
            "| {} | {built} | {} / {} | {} / {} | {} / {} | {} |\n",
            s.finished,
            ms(s.chain.handed.pct_ms(0.5)),
            ms(s.chain.handed.pct_ms(0.99)),
            ms(s.all.pct_ms(0.5)),
            ms(s.all.pct_ms(0.99)),
            ms(s.running.pct_ms(0.5)),
            ms(s.running.pct_ms(0.99)),
            s.memory,
        );
    }
    out
}

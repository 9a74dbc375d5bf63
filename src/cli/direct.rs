//! `cairn run [DIR]`: a direct run of the pipeline in DIR. It validates the config,
//! snapshots the working tree, uploads it, creates the run in the user's group with the
//! repository's cache group, and streams every task's log to the terminal as it is
//! produced, with a live status line and a final summary. Without `--server` it starts
//! an embedded single node (store, scheduler, local executor) over a persistent data dir.
//!
//! Exit codes: 0 success, 1 failed or stopped, 2 setup error (no config, a config error —
//! recorded on the server as a run in phase setuperror —, a server that cannot be
//! reached), 130 interrupted (the run is stopped first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use cairn_client::api::{
    ConfigFile, CreateRunRequest, PendingReasons, RefSpec, RunAction, RunResponse,
    TaskActionRequest,
};
use cairn_client::http::Payload;
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunResult, RunTask, RunTaskStatus};
use cairn_client::{LogStep, RunClient};
use clap::Args;
use futures::StreamExt;
use std::io::{IsTerminal, Write};
use tokio::sync::{mpsc, watch};

use super::embedded::{Embedded, EmbeddedExecutor};
use super::snapshot::WorkTree;
use super::terminal::{Terminal, duration};
use crate::configfile;
use crate::runservice::reference;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The repository (or any directory) whose pipeline to run.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Run on this server or cluster (comma separated URLs) instead of an embedded node.
    #[arg(long, env = "CAIRN_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// The server's API token.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: crate::cli::TlsClientArgs,
    /// Also send files git ignores.
    #[arg(long)]
    pub ignored: bool,
    /// A variable for `from_variable` (NAME=VALUE, repeatable; wins over --var-file).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// A YAML map of variables (repeatable).
    #[arg(long = "var-file")]
    pub var_files: Vec<PathBuf>,
    /// The branch the run is for (default: the current git branch, else main).
    #[arg(long, conflicts_with_all = ["tag", "git_ref"])]
    pub branch: Option<String>,
    /// The tag the run is for.
    #[arg(long, conflicts_with = "git_ref")]
    pub tag: Option<String>,
    /// The git ref the run is for: refs/heads/NAME is a branch run, refs/tags/NAME a tag
    /// run, a pull-request ref (see --pull-request-ref-regexes) a pull-request run.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// A regular expression of pull-request refs, its first group the pull request id
    /// (repeatable; default Agola's refs/pull/(\d+)/head and
    /// refs/merge-requests/(\d+)/head).
    #[arg(long = "pull-request-ref-regexes")]
    pub pull_request_ref_regexes: Vec<String>,
    /// Only this task and its ancestors (by name, repeatable).
    #[arg(long = "task")]
    pub tasks: Vec<String>,
    /// Data directory of the embedded node (default: the user's data dir).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Driver of the embedded executor: local or docker.
    #[arg(long, default_value = "local")]
    pub driver: crate::service::DriverKind,
    /// Let the embedded executor run tasks with privileged containers.
    #[arg(long)]
    pub allow_privileged: bool,
    /// Approve every task that waits for approval (otherwise: a prompt on a terminal;
    /// without one, `cairn run` waits for `cairn runs approve` from elsewhere).
    #[arg(long)]
    pub approve: bool,
}

/// Where `cairn run` keeps its embedded node: `$XDG_DATA_HOME/cairn` or
/// `~/.local/share/cairn`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("cairn");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/cairn"),
        None => PathBuf::from(".cairn-data"),
    }
}

/// A failure before the run exists: exit 2.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

fn setup<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::Error::new(SetupError(e.to_string()))
}

/// The user a direct run belongs to.
fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| u.replace('/', "_"))
        .unwrap_or_else(|| "local".to_string())
}

/// `NAME=VALUE` pairs from `--var-file`s then `--var`s.
fn variables(args: &RunArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for f in &args.var_files {
        let text =
            std::fs::read_to_string(f).map_err(|e| setup(format!("{}: {e}", f.display())))?;
        use saphyr::LoadableYamlNode;
        let doc = saphyr::Yaml::load_from_str(&text)
            .map_err(|e| setup(format!("{}: {e}", f.display())))?;
        let map = doc
            .first()
            .and_then(|d| d.as_mapping())
            .ok_or_else(|| setup(format!("{}: expected a map of NAME: value", f.display())))?;
        for (k, v) in map {
            let (Some(k), Some(v)) = (scalar(k), scalar(v)) else {
                return Err(setup(format!(
                    "{}: variables must be NAME: value scalars",
                    f.display()
                )));
            };
            vars.insert(k, v);
        }
    }
    for v in &args.vars {
        let (k, val) = v
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| setup(format!("--var {v:?} is not NAME=VALUE")))?;
        vars.insert(k.to_string(), val.to_string());
    }
    Ok(vars)
}

fn scalar(y: &saphyr::Yaml) -> Option<String> {
    use saphyr::{Scalar, Yaml};
    match y {
        Yaml::Value(Scalar::String(s)) => Some(s.to_string()),
        Yaml::Value(Scalar::Integer(i)) => Some(i.to_string()),
        Yaml::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        Yaml::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        Yaml::Representation(s, _, _) => Some(s.to_string()),
        _ => None,
    }
}

/// Runs the pipeline and returns the process exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut term = Terminal::new();
    let tree = WorkTree::open(&args.dir).map_err(setup)?;
    let config_path = configfile::find_config(&tree.root).ok_or_else(|| {
        setup(format!(
            "no pipeline in {}: add {}",
            tree.root.display(),
            configfile::config_files_list()
        ))
    })?;
    let rel = config_path
        .strip_prefix(&tree.root)
        .unwrap_or(&config_path)
        .display()
        .to_string();
    let content =
        std::fs::read_to_string(&config_path).map_err(|e| setup(format!("{rel}: {e}")))?;
    let variables = variables(&args)?;
    let user = user_name();
    let repo = tree.repo_uuid().map_err(setup)?;
    let spec = RefSpec {
        branch: match (&args.branch, &args.tag, &args.git_ref) {
            (Some(b), _, _) => Some(b.clone()),
            (None, None, None) => Some(tree.branch().unwrap_or_else(|| "main".into())),
            _ => None,
        },
        tag: args.tag.clone(),
        git_ref: args.git_ref.clone(),
    };
    // Classified here as the server will (same patterns, sent along): the run's group.
    let pr_patterns: Vec<String> = if args.pull_request_ref_regexes.is_empty() {
        reference::DEFAULT_PULL_REQUEST_REF_REGEXES
            .iter()
            .map(|p| p.to_string())
            .collect()
    } else {
        args.pull_request_ref_regexes.clone()
    };
    let prs = reference::PullRequestRefs::new(&pr_patterns).map_err(setup)?;
    let classified = reference::classify(&spec, &prs).map_err(setup)?;
    let for_when = classified.ref_spec();
    let files = tree.files(args.ignored).map_err(setup)?;
    let commit = tree.commit(&files, args.ignored).map_err(setup)?;
    // A config that does not parse (or, for Jsonnet and Starlark, evaluate for this
    // reference and commit, as the server will again) is still sent, without the
    // working tree: the server records it as a setuperror run (as Agola does), and its
    // errors are printed below.
    let ctx = configfile::ConfigContext {
        ref_type: classified.ref_type.as_str().to_string(),
        git_ref: classified.git_ref.clone(),
        branch: classified.branch.clone(),
        tag: classified.tag.clone(),
        pull_request_id: classified.pull_request_id.clone(),
        commit_sha: commit.sha.clone(),
    };
    let (file, text) = (rel.clone(), content.clone());
    let loaded = tokio::task::spawn_blocking(move || configfile::load(&file, &text, &ctx))
        .await
        .map_err(setup)?;
    let parsed = match loaded {
        Ok(parsed) => {
            for warning in &parsed.warnings {
                term.note(&format!("warning: {warning}"));
            }
            Some(parsed.config)
        }
        Err(_) => None,
    };
    let config_ok = parsed.is_some();
    // Nothing to do is not an error: say which `when` excluded each run, exit 0.
    if let Some(parsed) = &parsed
        && configfile::matching_runs(parsed, &for_when).is_empty()
    {
        term.note(&format!(
            "cairn: no run of {rel} matches {} {}:",
            classified.ref_type.as_str(),
            classified.name()
        ));
        for exclusion in configfile::excluded_runs(parsed, &for_when) {
            term.note(&format!("  {exclusion}"));
        }
        return Ok(0);
    }
    let group = classified.run_group(&format!("/user/{user}"));

    // The server: a remote one, or the embedded node.
    let mut embedded = None;
    let client = if args.server.is_empty() {
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let node = Embedded::start(
            &data_dir,
            Some(EmbeddedExecutor {
                driver: args.driver,
                allow_privileged: args.allow_privileged,
            }),
        )
        .await
        .map_err(setup)?;
        let client = node.client().map_err(setup)?;
        embedded = Some(node);
        client
    } else {
        RunClient::with_tls(&args.server, args.token.clone(), &args.tls.client_tls())
            .map_err(setup)?
    };

    let result = async {
        // Snapshot and upload the working tree.
        let source = if config_ok {
            let spool = tempfile::NamedTempFile::new().map_err(setup)?;
            let count = tree
                .pack(
                    &files,
                    std::io::BufWriter::new(spool.reopen().map_err(setup)?),
                )
                .map_err(setup)?;
            let file = tokio::fs::File::open(spool.path()).await.map_err(setup)?;
            let source = client
                .upload_source(Payload::stream(tokio_util::io::ReaderStream::new(file)))
                .await
                .map_err(|e| setup(format!("uploading the working tree: {e}")))?;
            term.note(&format!(
                "cairn: {count} files of {} sent; running {rel}",
                tree.root.display()
            ));
            Some(source)
        } else {
            None
        };
        let req = CreateRunRequest {
            group: group.clone(),
            config: ConfigFile {
                path: rel.clone(),
                content: content.clone(),
            },
            reference: spec,
            source,
            variables,
            environment: Default::default(),
            cache_group: Some(format!("{user}-{repo}")),
            // The server adds Agola's (run_type, ref_type, ref, branch/tag/pull_request_id,
            // commit_sha, message, run_creation_trigger…).
            annotations: [(
                reference::COMMIT_SHA_SOURCE_ANNOTATION.to_string(),
                if commit.from_head { "head" } else { "snapshot" }.to_string(),
            )]
            .into(),
            tasks: args.tasks.clone(),
            run_name: None,
            commit_sha: Some(commit.sha.clone()),
            message: Some(commit.message.clone()),
            pull_request_ref_regexes: pr_patterns.clone(),
        };
        // Ctrl-C is caught from here on, before the run exists: one pressed before the
        // watch starts still stops the run instead of killing `cairn run` and leaving
        // the run behind, unwatched, to block its group.
        let mut ctrl_c = interrupt();
        let mut interrupted = false;
        let created = client.create_run(&req).await.map_err(|e| match e.code() {
            Some(cairn_client::ErrorCode::BadRequest) => setup(e_message(&e)),
            _ => setup(format!("creating the run: {e}")),
        })?;
        let setup_errors = recorded_setup_errors(&mut term, &created.runs);
        if !setup_errors.is_empty() {
            return Err(setup(setup_errors.join("\n")));
        }
        let mut worst = 0u8;
        for r in created.runs {
            term.note(&format!(
                "cairn: run {} #{} ({}) in {}",
                r.run.id, r.run.counter, r.run.name, r.run.group
            ));
            let code = watch_run(
                &client,
                &mut term,
                r,
                args.approve,
                &mut ctrl_c,
                &mut interrupted,
            )
            .await?;
            worst = worst.max(code);
        }
        Ok::<u8, anyhow::Error>(worst)
    }
    .await;
    if let Some(s) = embedded {
        s.stop().await;
    }
    result
}

/// The setup errors of the setuperror runs among `runs`, each run noted as recorded.
fn recorded_setup_errors(term: &mut Terminal, runs: &[RunResponse]) -> Vec<String> {
    let mut errors = Vec::new();
    for r in runs.iter().filter(|r| r.run.phase == RunPhase::SetupError) {
        term.note(&format!(
            "cairn: run {} #{} ({}) in {}: setuperror",
            r.run.id, r.run.counter, r.run.name, r.run.group
        ));
        errors.extend(r.run_config.setup_errors.iter().cloned());
    }
    errors
}

fn e_message(e: &cairn_client::ClientError) -> String {
    match e {
        cairn_client::ClientError::Api(a) => a.message.clone(),
        other => other.to_string(),
    }
}

/// A line of task output for the printer.
struct Line {
    task: String,
    index: usize,
    text: String,
}

/// The Ctrl-C future, polled once early so that its handler is installed.
type Interrupt = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// Catches Ctrl-C from now on.
fn interrupt() -> Interrupt {
    let mut ctrl_c: Interrupt = Box::pin(tokio::signal::ctrl_c());
    let _ = futures::FutureExt::now_or_never(&mut ctrl_c);
    ctrl_c
}

/// Follows a run that already exists (a restarted one) exactly as `cairn run` follows
/// the runs it creates: live logs, status line, summary; returns the exit code.
pub(crate) async fn follow(
    client: &RunClient,
    created: RunResponse,
    approve_all: bool,
) -> anyhow::Result<u8> {
    let mut term = Terminal::new();
    let mut ctrl_c = interrupt();
    let mut interrupted = false;
    term.note(&format!(
        "cairn: run {} #{} ({}) in {}",
        created.run.id, created.run.counter, created.run.name, created.run.group
    ));
    watch_run(
        client,
        &mut term,
        created,
        approve_all,
        &mut ctrl_c,
        &mut interrupted,
    )
    .await
}

/// Follows a run to its end: task logs as they are produced, the status line, the
/// summary. Ctrl-C (now, or before: `interrupted`) stops the run and exits 130.
async fn watch_run(
    client: &RunClient,
    term: &mut Terminal,
    created: RunResponse,
    approve_all: bool,
    ctrl_c: &mut Interrupt,
    interrupted: &mut bool,
) -> anyhow::Result<u8> {
    let run_id = created.run.id.clone();
    let config = created.run_config.clone();
    let mut names: Vec<(String, String, u32)> = config
        .tasks
        .values()
        .map(|t| (t.id.clone(), t.name.clone(), t.level))
        .collect();
    names.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
    let width = names.iter().map(|n| n.1.chars().count()).max().unwrap_or(4);
    let index: BTreeMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.0.clone(), i))
        .collect();
    let (line_tx, mut line_rx) = mpsc::channel::<Line>(1024);
    let mut followers: BTreeMap<
        String,
        (watch::Sender<Option<RunTask>>, tokio::task::JoinHandle<()>),
    > = BTreeMap::new();
    let mut last = created;
    let mut stopping = false;
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let (answer_tx, mut answer_rx) = mpsc::channel::<(String, bool)>(8);
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    let mut shown_waiting: Option<String> = None;
    loop {
        if *interrupted && !stopping {
            stopping = true;
            term.note("cairn: interrupted: stopping the run");
            let action = if last.run.phase == RunPhase::Queued {
                RunAction::Cancel
            } else {
                RunAction::Stop
            };
            let mut sent = client.run_action(&run_id, action).await;
            if sent.is_err() {
                // The run started (or was cancelled) since it was last read: the other one.
                let other = if action == RunAction::Cancel {
                    RunAction::Stop
                } else {
                    RunAction::Cancel
                };
                sent = client.run_action(&run_id, other).await;
            }
            if let Err(e) = sent {
                term.note(&format!("cairn: could not stop the run: {e}"));
                return Ok(130);
            }
        }
        tokio::select! {
            Some(l) = line_rx.recv() => {
                term.task_line(&l.task, l.index, width, &l.text);
                continue;
            }
            _ = ctrl_c.as_mut(), if !*interrupted => {
                *interrupted = true;
                continue;
            }
            Some((task, yes)) = answer_rx.recv() => {
                if yes {
                    let req = TaskActionRequest::Approve { approver: Some(user_name()) };
                    if let Err(e) = client.task_action(&run_id, &task, &req).await {
                        term.note(&format!("cairn: approving {task} failed: {e}"));
                    }
                } else {
                    term.note(&format!("cairn: {task} not approved: stopping the run"));
                    let _ = client.run_action(&run_id, RunAction::Stop).await;
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        match client.run(&run_id).await {
            Ok(r) => last = r,
            Err(e) => {
                term.note(&format!("cairn: lost the server: {e}"));
                return Ok(if *interrupted { 130 } else { 2 });
            }
        }
        for (task_id, rt) in &last.run.tasks {
            let started = rt.status != RunTaskStatus::NotStarted;
            match followers.get(task_id) {
                Some((tx, _)) => {
                    tx.send_replace(Some(rt.clone()));
                }
                None if started => {
                    let (tx, rx) = watch::channel(Some(rt.clone()));
                    let name = config
                        .tasks
                        .get(task_id)
                        .map(|t| t.name.clone())
                        .unwrap_or_default();
                    let h = tokio::spawn(follow_task(
                        client.clone(),
                        run_id.clone(),
                        task_id.clone(),
                        name,
                        index.get(task_id).copied().unwrap_or(0),
                        rx,
                        line_tx.clone(),
                    ));
                    followers.insert(task_id.clone(), (tx, h));
                }
                None => {}
            }
        }
        for (id, name, _) in &names {
            let waiting = last.run.tasks.get(id).is_some_and(|t| t.waiting_approval);
            if !waiting || !asked.insert(id.clone()) {
                continue;
            }
            if approve_all {
                term.note(&format!("cairn: approving {name} (--approve)"));
                let _ = answer_tx.send((name.clone(), true)).await;
            } else if std::io::stdin().is_terminal() {
                term.clear_status();
                let mut out = std::io::stdout().lock();
                let _ = write!(
                    out,
                    "cairn: task {name} waits for approval. Approve it? [y/N] "
                );
                let _ = out.flush();
                drop(out);
                let (tx, name) = (answer_tx.clone(), name.clone());
                tokio::task::spawn_blocking(move || {
                    let mut line = String::new();
                    let yes = std::io::stdin().read_line(&mut line).is_ok()
                        && matches!(line.trim(), "y" | "Y" | "yes");
                    let _ = tx.blocking_send((name, yes));
                });
            } else {
                // No terminal to ask: someone approves from elsewhere (or Ctrl-C stops).
                term.note(&format!(
                    "cairn: task {name} waits for approval: approve it with `cairn runs approve {run_id} {name}` (or pass --approve)"
                ));
            }
        }
        let status: Vec<String> = names
            .iter()
            .filter_map(|(id, name, _)| {
                last.run
                    .tasks
                    .get(id)
                    .map(|t| format!("{} {name}", term.glyph(t.status, t.waiting_approval)))
            })
            .collect();
        let waiting = last.pending.as_ref().and_then(waiting_note);
        if waiting != shown_waiting {
            // Without a status line (not a terminal), a new reason to wait is a note.
            if let Some(w) = &waiting
                && !term.has_status_line()
            {
                term.note(&format!("cairn: waiting: {w}"));
            }
            shown_waiting = waiting.clone();
        }
        let waiting = waiting.map(|w| format!("  ({w})")).unwrap_or_default();
        term.status(&format!("{}{waiting}", status.join("  ")));
        if last.run.phase.is_finished() && followers.values().all(|(_, h)| h.is_finished()) {
            // Drain what the followers printed last.
            while let Ok(l) = line_rx.try_recv() {
                term.task_line(&l.task, l.index, width, &l.text);
            }
            break;
        }
    }
    term.clear_status();
    summary(term, &last, &names);
    if *interrupted {
        return Ok(130);
    }
    Ok(match last.run.result {
        RunResult::Success => 0,
        _ if last.run.phase == RunPhase::SetupError => 2,
        _ => 1,
    })
}

/// What the run waits for that is worth telling: the run's own reason (queued behind
/// another run…) and the tasks no executor takes, as `task: reason`. Ordinary progress
/// (parents, hand-out, approval, which has its own prompt) is left out.
fn waiting_note(pending: &PendingReasons) -> Option<String> {
    const ORDINARY: [&str; 7] = [
        "waiting for parents",
        "waiting for the workspace archives",
        "waiting to be handed to an executor",
        "assigned to executor",
        "waiting for approval",
        "will be skipped",
        "run is ",
    ];
    // A queued run's first moment ("starting as soon as the scheduler sees it") is not.
    let mut parts: Vec<String> = pending
        .run
        .iter()
        .filter(|why| !why.starts_with("queued; starting"))
        .cloned()
        .collect();
    parts.extend(
        pending
            .tasks
            .iter()
            .filter(|(_, why)| !ORDINARY.iter().any(|o| why.starts_with(o)))
            .map(|(task, why)| format!("{task}: {why}")),
    );
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn summary(term: &mut Terminal, r: &RunResponse, names: &[(String, String, u32)]) {
    let rows: Vec<Vec<String>> = names
        .iter()
        .filter_map(|(id, name, _)| {
            let t = r.run.tasks.get(id)?;
            let took = match (t.start_time, t.end_time) {
                (Some(s), Some(e)) => duration(e - s),
                _ => String::new(),
            };
            let mut word = term.result_word(t.status.as_str());
            if t.timedout {
                word.push_str(" (timed out)");
            }
            let note = t.fail_error.clone().unwrap_or_default();
            Some(vec![name.clone(), word, took, note])
        })
        .collect();
    let _ = outln!();
    term.table(&["TASK", "RESULT", "TIME", "NOTE"], &rows);
    let total = match (r.run.start_time, r.run.end_time) {
        (Some(s), Some(e)) => format!(" in {}", duration(e - s)),
        _ => String::new(),
    };
    let result = match r.run.phase {
        RunPhase::Cancelled => "cancelled",
        _ => r.run.result.as_str(),
    };
    let _ = outln!(
        "\nrun {} #{}: {}{total}",
        r.run.id,
        r.run.counter,
        term.result_word(result)
    );
}

/// Prints one task's step logs in order, each from its start to its end.
async fn follow_task(
    client: RunClient,
    run_id: String,
    task_id: String,
    name: String,
    index: usize,
    mut state: watch::Receiver<Option<RunTask>>,
    out: mpsc::Sender<Line>,
) {
    let steps = state.borrow().as_ref().map_or(0, |t| t.steps.len());
    let mut logs: Vec<LogStep> = vec![LogStep::Setup];
    logs.extend((0..steps).map(LogStep::Step));
    for step in logs {
        // Wait until the step has started, or the task is over.
        loop {
            let t = state.borrow().clone();
            let Some(t) = t else { return };
            let phase = match step {
                LogStep::Setup => t.setup_step.phase,
                LogStep::Step(i) => t
                    .steps
                    .get(i)
                    .map_or(ExecutorTaskPhase::NotStarted, |s| s.phase),
            };
            if phase != ExecutorTaskPhase::NotStarted {
                // The setup log is only worth showing when setup failed.
                if step == LogStep::Setup && phase != ExecutorTaskPhase::Failed {
                    if phase == ExecutorTaskPhase::Running {
                        if state.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    break;
                }
                print_log(&client, &run_id, &task_id, step, &name, index, &out).await;
                break;
            }
            if t.status.is_finished() {
                break;
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn print_log(
    client: &RunClient,
    run_id: &str,
    task_id: &str,
    step: LogStep,
    name: &str,
    index: usize,
    out: &mpsc::Sender<Line>,
) {
    let Ok(mut stream) = client.logs(run_id, task_id, step, 0, true).await else {
        return;
    };
    let mut lines = super::terminal::LineSplitter::default();
    let send = |text: String| Line {
        task: name.to_string(),
        index,
        text,
    };
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        for text in lines.push(&chunk) {
            let _ = out.send(send(text)).await;
        }
    }
    if let Some(text) = lines.finish() {
        let _ = out.send(send(text)).await;
    }
}

/// Bails with exit code 2 semantics when `args` cannot make a run.
pub fn check(args: &RunArgs) -> anyhow::Result<()> {
    if !args.server.is_empty() && args.token.is_none() {
        bail!(SetupError("--server needs --token (or CAIRN_TOKEN)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(run: Option<&str>, tasks: &[(&str, &str)]) -> PendingReasons {
        PendingReasons {
            run: run.map(str::to_string),
            tasks: tasks
                .iter()
                .map(|(t, w)| (t.to_string(), w.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_waiting_note_tells_why_a_run_or_a_task_is_stuck() {
        let queued = pending(
            Some(
                "queued behind run 0000000000000001, which is running in group /user/me/branch/main",
            ),
            &[("build", "run is queued")],
        );
        assert_eq!(
            waiting_note(&queued).as_deref(),
            Some(
                "queued behind run 0000000000000001, which is running in group /user/me/branch/main"
            )
        );
        let stuck = pending(
            None,
            &[
                ("build", "no executor allows privileged containers"),
                ("test", "waiting for parents: build"),
                ("lint", "all 1 matching executors are at capacity"),
            ],
        );
        assert_eq!(
            waiting_note(&stuck).as_deref(),
            Some(
                "build: no executor allows privileged containers; lint: all 1 matching executors are at capacity"
            )
        );
    }

    #[test]
    fn ordinary_progress_is_not_a_waiting_note() {
        let busy = pending(
            None,
            &[
                ("a", "waiting for parents: b"),
                ("c", "waiting to be handed to an executor"),
                ("d", "assigned to executor x1, not started yet"),
                ("e", "waiting for approval"),
            ],
        );
        assert_eq!(waiting_note(&busy), None);
        let starting = pending(
            Some("queued; starting as soon as the scheduler sees it"),
            &[("a", "run is queued")],
        );
        assert_eq!(waiting_note(&starting), None);
    }
}

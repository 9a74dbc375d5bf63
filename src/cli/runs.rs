//! `cairn runs …`, `cairn executors …` and `cairn validate`: the client commands. They
//! talk to a server through `cairn-client` only; without `--server` they open the
//! embedded node of `cairn run` (its data dir), so direct runs can be listed, read and
//! restarted from the same machine.

use std::path::PathBuf;

use anyhow::anyhow;
use cairn_client::api::{ListRunsQuery, RestartRunRequest, RunAction, TaskActionRequest};
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunResult};
use cairn_client::{LogStep, RunClient};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use std::io::Write;

use super::direct::{SetupError, default_data_dir};
use super::embedded::{Embedded, EmbeddedExecutor, running_node};
use super::terminal::{Terminal, duration};
use crate::configfile;

/// Where the commands find a server.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Server URLs (comma separated); default: the embedded node of `cairn run`.
    #[arg(long, env = "CAIRN_SERVER", value_delimiter = ',', global = true)]
    pub server: Vec<String>,
    /// The server's API token (prefer --token-file or CAIRN_TOKEN: the command line is
    /// visible to every local user).
    #[arg(long, env = "CAIRN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the server's API token.
    #[arg(long, env = "CAIRN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Data directory of the embedded node (without --server).
    #[arg(long, env = "CAIRN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Output format of listings.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(flatten)]
    pub tls: crate::cli::TlsClientArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only runs under this group (`/user/me`, `/project/p1/branch/main`…).
        #[arg(long)]
        group: Option<String>,
        /// Only these phases (comma separated).
        #[arg(long, value_delimiter = ',')]
        phase: Vec<RunPhase>,
        /// Only these results (comma separated).
        #[arg(long, value_delimiter = ',')]
        result: Vec<RunResult>,
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Continue after this cursor (printed after a full page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A run, its tasks, and why it waits.
    Show { run: String },
    /// A task's step logs (all steps in order).
    Logs {
        run: String,
        /// Task name or id.
        task: String,
        /// Only this step (`setup` or an index).
        #[arg(long)]
        step: Option<String>,
        /// Keep following until the task ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a running run.
    Stop { run: String },
    /// Cancel a queued run.
    Cancel { run: String },
    /// Approve a task waiting for approval.
    Approve { run: String, task: String },
    /// Restart a finished run: its failed tasks and what depends on them, everything
    /// (`--from-start`), or the tasks named with `--task` and what depends on them. On
    /// the embedded node it runs the new run and follows it like `cairn run` (its exit
    /// code is the run's).
    Restart {
        run: String,
        #[arg(long, conflicts_with = "task")]
        from_start: bool,
        /// Re-run this task (name or id) and everything that depends on it; repeatable.
        #[arg(long = "task", value_name = "NAME")]
        task: Vec<String>,
        /// Driver of the embedded executor: local or docker.
        #[arg(long, default_value = "local")]
        driver: crate::service::DriverKind,
        /// Let the embedded executor run tasks with privileged containers.
        #[arg(long)]
        allow_privileged: bool,
        /// Approve every task that waits for approval.
        #[arg(long)]
        approve: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExecutorsCommand {
    /// Registered executors and their load.
    List,
    /// Unregister an executor (its unfinished tasks are failed).
    Delete { id: String },
}

/// A connected client and, without `--server`, the embedded node behind it: the one
/// another `cairn` runs over the data dir, or one opened here.
pub(crate) struct Connection {
    pub(crate) client: RunClient,
    embedded: Option<Embedded>,
}

impl Connection {
    pub(crate) async fn open(args: &ServerArgs) -> anyhow::Result<Connection> {
        if !args.server.is_empty() {
            let token = crate::cli::token_from(args.token.clone(), args.token_file.as_deref())?
                .ok_or_else(|| anyhow!("--server needs --token-file (or CAIRN_TOKEN)"))?;
            return Ok(Connection {
                client: RunClient::with_tls(&args.server, Some(token), &args.tls.client_tls())?,
                embedded: None,
            });
        }
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        if !data_dir.join("token").exists() {
            return Err(anyhow!(
                "no embedded node in {} yet (run `cairn run` first, or pass --server)",
                data_dir.display()
            ));
        }
        // A `cairn run` holding the node: talk to it over its loopback port.
        if let Some(client) = running_node(&data_dir).await {
            return Ok(Connection {
                client,
                embedded: None,
            });
        }
        let node = Embedded::start(&data_dir, None)
            .await
            .map_err(|e| anyhow!("opening the embedded node in {}: {e:#}", data_dir.display()))?;
        Ok(Connection {
            client: node.client()?,
            embedded: Some(node),
        })
    }

    pub(crate) async fn close(self) {
        if let Some(s) = self.embedded {
            s.stop().await;
        }
    }
}

/// Runs a `cairn runs` command.
pub async fn runs(cmd: RunsCommand, args: ServerArgs) -> anyhow::Result<u8> {
    if let RunsCommand::Restart {
        run,
        from_start,
        task,
        driver,
        allow_privileged,
        approve,
    } = &cmd
        && args.server.is_empty()
    {
        let executor = EmbeddedExecutor {
            driver: *driver,
            allow_privileged: *allow_privileged,
        };
        let req = RestartRunRequest {
            from_start: *from_start,
            environment: None,
            tasks: task.clone(),
        };
        return restart_embedded(run, &req, executor, *approve, &args).await;
    }
    let conn = Connection::open(&args).await?;
    let result = runs_on(&conn.client, cmd, &args).await;
    conn.close().await;
    result
}

async fn runs_on(client: &RunClient, cmd: RunsCommand, args: &ServerArgs) -> anyhow::Result<u8> {
    let mut term = Terminal::new();
    match cmd {
        RunsCommand::List {
            group,
            phase,
            result,
            limit,
            cursor,
        } => {
            let q = ListRunsQuery {
                group,
                phase,
                result,
                cursor,
                limit: Some(limit),
                ..ListRunsQuery::default()
            };
            let page = client.list_runs(&q).await?;
            if args.output == Output::Json {
                outln!("{}", serde_json::to_string_pretty(&page)?)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = page
                .runs
                .iter()
                .map(|r| {
                    let took = match (r.start_time, r.end_time) {
                        (Some(s), Some(e)) => duration(e - s),
                        _ => String::new(),
                    };
                    vec![
                        r.id.clone(),
                        format!("#{}", r.counter),
                        r.name.clone(),
                        r.group.clone(),
                        r.phase.as_str().to_string(),
                        term.result_word(r.result.as_str()),
                        took,
                    ]
                })
                .collect();
            term.table(
                &["ID", "#", "NAME", "GROUP", "PHASE", "RESULT", "TIME"],
                &rows,
            );
            if let Some(next) = page.next {
                outln!("more: --cursor {next}")?;
            }
            Ok(0)
        }
        RunsCommand::Show { run } => {
            let r = client.run(&run).await?;
            if args.output == Output::Json {
                outln!("{}", serde_json::to_string_pretty(&r)?)?;
                return Ok(0);
            }
            outln!(
                "run {} #{} {} in {}: {} {}",
                r.run.id,
                r.run.counter,
                r.run.name,
                r.run.group,
                r.run.phase.as_str(),
                term.result_word(r.run.result.as_str())
            )?;
            if let Some(why) = r.pending.as_ref().and_then(|p| p.run.clone()) {
                outln!("waiting: {why}")?;
            }
            for e in &r.run_config.setup_errors {
                outln!("setup error: {e}")?;
            }
            let mut tasks: Vec<_> = r.run_config.tasks.values().collect();
            tasks.sort_by(|a, b| (a.level, &a.name).cmp(&(b.level, &b.name)));
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .filter_map(|t| {
                    let rt = r.run.tasks.get(&t.id)?;
                    let took = match (rt.start_time, rt.end_time) {
                        (Some(s), Some(e)) => duration(e - s),
                        _ => String::new(),
                    };
                    let why = r
                        .pending
                        .as_ref()
                        .and_then(|p| p.tasks.get(&t.name).cloned())
                        .or_else(|| rt.fail_error.clone())
                        .unwrap_or_default();
                    Some(vec![
                        t.name.clone(),
                        term.result_word(rt.status.as_str()),
                        took,
                        why,
                    ])
                })
                .collect();
            term.table(&["TASK", "STATUS", "TIME", "NOTE"], &rows);
            Ok(0)
        }
        RunsCommand::Logs {
            run,
            task,
            step,
            follow,
        } => {
            let r = client.run(&run).await?;
            let t = r
                .run_config
                .tasks
                .values()
                .find(|t| t.name == task || t.id == task)
                .ok_or_else(|| anyhow!("run {run} has no task {task:?}"))?;
            let steps: Vec<LogStep> = match step.as_deref() {
                Some(n) => vec![n.parse().map_err(|e| anyhow!("--step: {e}"))?],
                None => (0..t.steps.len()).map(LogStep::Step).collect(),
            };
            let mut out = std::io::stdout();
            for s in steps {
                // A step that never starts (its task skipped or ended before it) has no
                // log to follow: waiting for one would never end.
                if follow && !wait_step_started(client, &run, &t.id, s).await? {
                    continue;
                }
                let mut stream = client.logs(&run, &t.id, s, 0, follow).await?;
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk?)?;
                    out.flush()?;
                }
            }
            Ok(0)
        }
        RunsCommand::Stop { run } => {
            let r = client.run_action(&run, RunAction::Stop).await?;
            outln!("run {} stopping", r.run.id)?;
            Ok(0)
        }
        RunsCommand::Cancel { run } => {
            let r = client.run_action(&run, RunAction::Cancel).await?;
            outln!("run {} cancelling", r.run.id)?;
            Ok(0)
        }
        RunsCommand::Approve { run, task } => {
            let approver = std::env::var("USER").ok();
            client
                .task_action(&run, &task, &TaskActionRequest::Approve { approver })
                .await?;
            outln!("task {task} of run {run} approved")?;
            Ok(0)
        }
        RunsCommand::Restart {
            run,
            from_start,
            task,
            ..
        } => {
            let r = client
                .restart_run(
                    &run,
                    &RestartRunRequest {
                        from_start,
                        environment: None,
                        tasks: task,
                    },
                )
                .await?;
            outln!("run {} #{} created from {run}", r.run.id, r.run.counter)?;
            Ok(0)
        }
    }
}

/// `cairn runs restart` on the embedded node: restarts the run on the node another
/// `cairn` holds, or on one started here with an executor, and follows the new run like
/// `cairn run` does; the exit code is the run's.
async fn restart_embedded(
    run: &str,
    req: &RestartRunRequest,
    executor: EmbeddedExecutor,
    approve: bool,
    args: &ServerArgs,
) -> anyhow::Result<u8> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    if !data_dir.join("token").exists() {
        return Err(anyhow!(
            "no embedded node in {} yet (run `cairn run` first, or pass --server)",
            data_dir.display()
        ));
    }
    let (client, node) = match running_node(&data_dir).await {
        Some(client) => (client, None),
        None => {
            let node = Embedded::start(&data_dir, Some(executor)).await?;
            (node.client()?, Some(node))
        }
    };
    let result = async {
        let created = client.restart_run(run, req).await?;
        super::direct::follow(&client, created, approve).await
    }
    .await;
    if let Some(node) = node {
        node.stop().await;
    }
    result
}

/// Waits until `step` of the task has started (true), or the task has ended without it
/// (false).
async fn wait_step_started(
    client: &RunClient,
    run: &str,
    task_id: &str,
    step: LogStep,
) -> anyhow::Result<bool> {
    loop {
        let r = client.run(run).await?;
        let Some(rt) = r.run.tasks.get(task_id) else {
            return Ok(false);
        };
        let phase = match step {
            LogStep::Setup => rt.setup_step.phase,
            LogStep::Step(i) => rt
                .steps
                .get(i)
                .map_or(ExecutorTaskPhase::NotStarted, |s| s.phase),
        };
        if phase != ExecutorTaskPhase::NotStarted {
            return Ok(true);
        }
        if rt.status.is_finished() || r.run.phase.is_finished() {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Runs a `cairn executors` command.
pub async fn executors(cmd: ExecutorsCommand, args: ServerArgs) -> anyhow::Result<u8> {
    let conn = Connection::open(&args).await?;
    let result = async {
        let mut term = Terminal::new();
        match cmd {
            ExecutorsCommand::List => {
                let list = conn.client.executors().await?;
                if args.output == Output::Json {
                    outln!("{}", serde_json::to_string_pretty(&list)?)?;
                    return Ok(0);
                }
                let rows: Vec<Vec<String>> = list
                    .executors
                    .iter()
                    .map(|e| {
                        let archs: Vec<&str> = e.archs.iter().map(|a| a.as_str()).collect();
                        let labels: Vec<String> =
                            e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        vec![
                            e.id.clone(),
                            archs.join(","),
                            labels.join(","),
                            format!(
                                "{}/{}",
                                list.assigned.get(&e.id).copied().unwrap_or(0),
                                if e.active_tasks_limit == 0 {
                                    "-".to_string()
                                } else {
                                    e.active_tasks_limit.to_string()
                                }
                            ),
                            e.last_heartbeat.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        ]
                    })
                    .collect();
                term.table(&["ID", "ARCHS", "LABELS", "TASKS", "LAST HEARTBEAT"], &rows);
                Ok(0)
            }
            ExecutorsCommand::Delete { id } => {
                conn.client.delete_executor(&id).await?;
                outln!("executor {id} deleted")?;
                Ok(0)
            }
        }
    }
    .await;
    conn.close().await;
    result
}

/// `cairn validate [DIR]`: the config's errors with file, line and field; exit 2 if any.
pub fn validate(dir: &std::path::Path) -> anyhow::Result<u8> {
    let path = configfile::find_config(dir).ok_or_else(|| {
        anyhow::Error::new(SetupError(format!(
            "no pipeline in {}: add {}",
            dir.display(),
            configfile::config_files_list()
        )))
    })?;
    let rel = path
        .strip_prefix(dir)
        .unwrap_or(&path)
        .display()
        .to_string();
    let content = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::Error::new(SetupError(format!("{rel}: {e}"))))?;
    // Programs (Jsonnet, Starlark) are evaluated as for a run of the checked-out branch.
    let branch = super::snapshot::WorkTree::open(dir)
        .ok()
        .and_then(|t| t.branch())
        .unwrap_or_else(|| "main".into());
    let ctx = configfile::ConfigContext::new(Some(&branch), None, None, "");
    match configfile::load(&rel, &content, &ctx) {
        Ok(configfile::Parsed { config, warnings }) => {
            for warning in &warnings {
                errln!("warning: {warning}");
            }
            let tasks: usize = config.runs.iter().map(|r| r.tasks.len()).sum();
            let noted = match warnings.len() {
                0 => String::new(),
                n => format!(", {n} warning(s)"),
            };
            outln!(
                "{rel}: ok ({} runs, {tasks} tasks{noted})",
                config.runs.len()
            )?;
            Ok(0)
        }
        Err(errors) => {
            for line in errors.to_string().lines() {
                errln!("{line}");
            }
            errln!("{rel}: {} error(s)", errors.len());
            Ok(2)
        }
    }
}

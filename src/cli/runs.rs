//! `cairn runs list|show|logs|stop|cancel|approve|restart`: a server's runs, through
//! `cairn-client` only, one function per subcommand. Without `--server` they open the
//! embedded node of `cairn run` (its data dir), so direct runs can be listed, read and
//! restarted from the same machine.

use anyhow::anyhow;
use cairn_client::api::{ListRunsQuery, RestartRunRequest, RunAction, TaskActionRequest};
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunResult};
use cairn_client::{LogStep, RunClient};
use clap::Subcommand;
use futures::StreamExt;
use std::io::Write;

use super::args::{Connection, Output, ServerArgs};
use super::direct::default_data_dir;
use super::embedded::{Embedded, EmbeddedExecutor, running_node};
use super::terminal::{Terminal, duration};

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
    let result = runs_on(&conn.client, cmd, args.output).await;
    conn.close().await;
    result
}

/// Runs `cmd` over `client`.
async fn runs_on(client: &RunClient, cmd: RunsCommand, output: Output) -> anyhow::Result<u8> {
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
            list(client, &q, output).await
        }
        RunsCommand::Show { run } => show(client, &run, output).await,
        RunsCommand::Logs {
            run,
            task,
            step,
            follow,
        } => logs(client, &run, &task, step.as_deref(), follow).await,
        RunsCommand::Stop { run } => act(client, &run, RunAction::Stop, "stopping").await,
        RunsCommand::Cancel { run } => act(client, &run, RunAction::Cancel, "cancelling").await,
        RunsCommand::Approve { run, task } => approve(client, &run, &task).await,
        RunsCommand::Restart {
            run,
            from_start,
            task,
            ..
        } => {
            let req = RestartRunRequest {
                from_start,
                environment: None,
                tasks: task,
            };
            restart(client, &run, &req).await
        }
    }
}

/// `cairn runs list`: one page of runs, newest first, and the cursor of the next one.
async fn list(client: &RunClient, q: &ListRunsQuery, output: Output) -> anyhow::Result<u8> {
    let page = client.list_runs(q).await?;
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(&page)?)?;
        return Ok(0);
    }
    let mut term = Terminal::new();
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
                term.result_word(outcome(r.phase, r.result)),
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

/// The result word of a run as listed: `-` while it is undecided and the run is not
/// finished (a queued or running run is not "unknown", it is not done yet).
pub fn outcome(phase: RunPhase, result: RunResult) -> &'static str {
    if result == RunResult::Unknown && !phase.is_finished() {
        "-"
    } else {
        result.as_str()
    }
}

/// `cairn runs show RUN`: the run, why it waits, its setup errors and a table of its
/// tasks in level order.
async fn show(client: &RunClient, run: &str, output: Output) -> anyhow::Result<u8> {
    let r = client.run(run).await?;
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(0);
    }
    let mut term = Terminal::new();
    let result = outcome(r.run.phase, r.run.result);
    outln!(
        "run {} #{} {} in {}: {}{}",
        r.run.id,
        r.run.counter,
        r.run.name,
        r.run.group,
        r.run.phase.as_str(),
        if result == "-" {
            String::new()
        } else {
            format!(" {}", term.result_word(result))
        }
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

/// `cairn runs logs RUN TASK`: the logs of every step of the task (or of `--step`) in
/// order, with `--follow` until each ends.
async fn logs(
    client: &RunClient,
    run: &str,
    task: &str,
    step: Option<&str>,
    follow: bool,
) -> anyhow::Result<u8> {
    let r = client.run(run).await?;
    let t = r
        .run_config
        .tasks
        .values()
        .find(|t| t.name == task || t.id == task)
        .ok_or_else(|| anyhow!("run {run} has no task {task:?}"))?;
    let steps: Vec<LogStep> = match step {
        Some(n) => vec![n.parse().map_err(|e| anyhow!("--step: {e}"))?],
        None => (0..t.steps.len()).map(LogStep::Step).collect(),
    };
    let mut out = std::io::stdout();
    for s in steps {
        // A step that never starts (its task skipped or ended before it) has no
        // log to follow: waiting for one would never end.
        if follow && !wait_step_started(client, run, &t.id, s).await? {
            continue;
        }
        let mut stream = client.logs(run, &t.id, s, 0, follow).await?;
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
            out.flush()?;
        }
    }
    Ok(0)
}

/// `cairn runs stop|cancel RUN`: asks for `action` and says the run is `doing` it.
async fn act(client: &RunClient, run: &str, action: RunAction, doing: &str) -> anyhow::Result<u8> {
    let r = client.run_action(run, action).await?;
    outln!("run {} {doing}", r.run.id)?;
    Ok(0)
}

/// `cairn runs restart RUN --server …`: prints the new run.
async fn restart(client: &RunClient, run: &str, req: &RestartRunRequest) -> anyhow::Result<u8> {
    let r = client.restart_run(run, req).await?;
    outln!("run {} #{} created from {run}", r.run.id, r.run.counter)?;
    Ok(0)
}

/// `cairn runs approve RUN TASK`, as the user `cairn run` names its runs for.
async fn approve(client: &RunClient, run: &str, task: &str) -> anyhow::Result<u8> {
    let approver = Some(super::user::user_name());
    client
        .task_action(run, task, &TaskActionRequest::Approve { approver })
        .await?;
    outln!("task {task} of run {run} approved")?;
    Ok(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecided_run_that_is_not_finished_shows_no_result_word() {
        assert_eq!(outcome(RunPhase::Running, RunResult::Unknown), "-");
        assert_eq!(outcome(RunPhase::Queued, RunResult::Unknown), "-");
        // A failure is known before the run finishes (a task failed, others run on).
        assert_eq!(outcome(RunPhase::Running, RunResult::Failed), "failed");
        assert_eq!(outcome(RunPhase::Finished, RunResult::Success), "success");
        assert_eq!(outcome(RunPhase::Cancelled, RunResult::Unknown), "unknown");
    }
}

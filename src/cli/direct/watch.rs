//! Following one run in the terminal, as `cairn run` and `cairn runs restart` do: the
//! run's states come from the server's run watch (`RunClient::watch_run`, pushed, not
//! polled); each task that starts gets a follower printing its step logs as they grow;
//! the status line shows every task; approvals are asked for (`approval.rs`); Ctrl-C
//! stops the run. When the run is finished and every follower has printed its last line,
//! the summary is printed and the exit code returned.

use std::collections::BTreeMap;

use cairn_client::api::{PendingReasons, RunAction, RunResponse, TaskActionRequest};
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunResult, RunTask, RunTaskStatus};
use cairn_client::runconfig::RunConfig;
use cairn_client::{LogStep, RunClient};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::super::user::user_name;
use super::approval::Approvals;
use crate::cli::terminal::{LineSplitter, Terminal, duration};

/// A task of the run as the terminal shows it, in (level, name) order.
struct TaskRow {
    id: String,
    name: String,
}

/// The rows of a run config's tasks, by level then name.
fn task_rows(config: &RunConfig) -> Vec<TaskRow> {
    let mut tasks: Vec<_> = config.tasks.values().collect();
    tasks.sort_by(|a, b| (a.level, &a.name).cmp(&(b.level, &b.name)));
    tasks
        .into_iter()
        .map(|t| TaskRow {
            id: t.id.clone(),
            name: t.name.clone(),
        })
        .collect()
}

/// A line of task output for the printer.
struct Line {
    task: String,
    index: usize,
    text: String,
}

/// The Ctrl-C future, polled once early so that its handler is installed.
type Signal = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// Ctrl-C for the whole command: caught from its creation on (before a run exists), and
/// remembered once pressed so that every later run is stopped too.
pub(crate) struct Interrupt {
    signal: Signal,
    pressed: bool,
}

impl Interrupt {
    /// Catches Ctrl-C from now on.
    pub(crate) fn catch() -> Interrupt {
        let mut signal: Signal = Box::pin(tokio::signal::ctrl_c());
        let _ = futures::FutureExt::now_or_never(&mut signal);
        Interrupt {
            signal,
            pressed: false,
        }
    }
}

/// Follows a run that already exists (a restarted one) exactly as `cairn run` follows
/// the runs it creates: live logs, status line, summary; returns the exit code.
pub(crate) async fn follow(
    client: &RunClient,
    created: RunResponse,
    approve_all: bool,
) -> anyhow::Result<u8> {
    let mut term = Terminal::new();
    let mut interrupt = Interrupt::catch();
    watch_run(client, &mut term, created, approve_all, &mut interrupt).await
}

/// Follows a run to its end: task logs as they are produced, the status line, the
/// summary. Ctrl-C (now, or before) stops the run and exits 130.
pub(super) async fn watch_run(
    client: &RunClient,
    term: &mut Terminal,
    created: RunResponse,
    approve_all: bool,
    interrupt: &mut Interrupt,
) -> anyhow::Result<u8> {
    term.note(&format!(
        "cairn: run {} #{} ({}) in {}",
        created.run.id, created.run.counter, created.run.name, created.run.group
    ));
    RunWatcher::new(client, term, created, approve_all)
        .watch(interrupt)
        .await
}

/// The state of one followed run.
struct RunWatcher<'a> {
    client: &'a RunClient,
    term: &'a mut Terminal,
    run_id: String,
    config: RunConfig,
    rows: Vec<TaskRow>,
    /// Width of the task-name column.
    width: usize,
    /// Every follower holds a clone; dropped once the run is finished, so that the
    /// receiver ends when the last follower has printed its last line.
    line_tx: Option<mpsc::Sender<Line>>,
    lines: mpsc::Receiver<Line>,
    /// The latest state of each followed task, by task id.
    followed: BTreeMap<String, watch::Sender<Option<RunTask>>>,
    /// The followers (aborted if the watch ends early).
    followers: JoinSet<()>,
    approvals: Approvals,
    last: RunResponse,
    stopping: bool,
    shown_waiting: Option<String>,
}

impl<'a> RunWatcher<'a> {
    fn new(
        client: &'a RunClient,
        term: &'a mut Terminal,
        created: RunResponse,
        approve_all: bool,
    ) -> RunWatcher<'a> {
        let rows = task_rows(&created.run_config);
        let width = rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(4);
        let (line_tx, lines) = mpsc::channel(1024);
        RunWatcher {
            client,
            term,
            run_id: created.run.id.clone(),
            config: created.run_config.clone(),
            rows,
            width,
            line_tx: Some(line_tx),
            lines,
            followed: BTreeMap::new(),
            followers: JoinSet::new(),
            approvals: Approvals::new(approve_all),
            last: created,
            stopping: false,
            shown_waiting: None,
        }
    }

    async fn watch(mut self, interrupt: &mut Interrupt) -> anyhow::Result<u8> {
        let mut states = Box::pin(self.client.watch_run(&self.run_id));
        let mut watching = true;
        let first = self.last.clone();
        self.update(first).await;
        loop {
            if interrupt.pressed && !self.stopping && !self.stop().await {
                return Ok(130);
            }
            tokio::select! {
                line = self.lines.recv() => match line {
                    Some(l) => self.term.task_line(&l.task, l.index, self.width, &l.text),
                    // The run is finished and every follower has ended.
                    None => break,
                },
                _ = interrupt.signal.as_mut(), if !interrupt.pressed => interrupt.pressed = true,
                Some((task, yes)) = self.approvals.answers.recv() => self.answer(&task, yes).await,
                state = states.next(), if watching => match state {
                    Some(Ok(r)) => self.update(r).await,
                    Some(Err(e)) => {
                        self.term.note(&format!("cairn: lost the server: {e}"));
                        return Ok(if interrupt.pressed { 130 } else { 2 });
                    }
                    None if self.last.run.phase.is_finished() => watching = false,
                    None => {
                        self.term.note("cairn: lost the server: the run watch ended early");
                        return Ok(if interrupt.pressed { 130 } else { 2 });
                    }
                },
            }
        }
        self.term.clear_status();
        summary(self.term, &self.last, &self.rows);
        if interrupt.pressed {
            return Ok(130);
        }
        Ok(match self.last.run.result {
            RunResult::Success => 0,
            _ if self.last.run.phase == RunPhase::SetupError => 2,
            _ => 1,
        })
    }

    /// Asks the server to stop (or cancel, while queued) the run; false if neither worked.
    async fn stop(&mut self) -> bool {
        self.stopping = true;
        self.term.note("cairn: interrupted: stopping the run");
        let action = if self.last.run.phase == RunPhase::Queued {
            RunAction::Cancel
        } else {
            RunAction::Stop
        };
        let mut sent = self.client.run_action(&self.run_id, action).await;
        if sent.is_err() {
            // The run started (or was cancelled) since it was last seen: the other one.
            let other = if action == RunAction::Cancel {
                RunAction::Stop
            } else {
                RunAction::Cancel
            };
            sent = self.client.run_action(&self.run_id, other).await;
        }
        match sent {
            Ok(_) => true,
            Err(e) => {
                self.term
                    .note(&format!("cairn: could not stop the run: {e}"));
                false
            }
        }
    }

    /// Acts on an approval prompt's answer.
    async fn answer(&mut self, task: &str, yes: bool) {
        if yes {
            let req = TaskActionRequest::Approve {
                approver: Some(user_name()),
            };
            if let Err(e) = self.client.task_action(&self.run_id, task, &req).await {
                self.term
                    .note(&format!("cairn: approving {task} failed: {e}"));
            }
        } else {
            self.term
                .note(&format!("cairn: {task} not approved: stopping the run"));
            let _ = self.client.run_action(&self.run_id, RunAction::Stop).await;
        }
    }

    /// Takes a new state of the run: followers for tasks that started, approval prompts,
    /// the status line.
    async fn update(&mut self, state: RunResponse) {
        self.last = state;
        self.follow_started_tasks();
        for row in &self.rows {
            let waiting = self
                .last
                .run
                .tasks
                .get(&row.id)
                .is_some_and(|t| t.waiting_approval);
            if waiting {
                self.approvals.ask(self.term, &self.run_id, &row.name).await;
            }
        }
        self.show_status();
        if self.last.run.phase.is_finished() {
            // No follower starts after this: the line channel ends with the last one.
            self.line_tx = None;
        }
    }

    fn follow_started_tasks(&mut self) {
        let Some(line_tx) = &self.line_tx else { return };
        for (task_id, rt) in &self.last.run.tasks {
            if let Some(tx) = self.followed.get(task_id) {
                tx.send_replace(Some(rt.clone()));
                continue;
            }
            if rt.status == RunTaskStatus::NotStarted {
                continue;
            }
            let (tx, rx) = watch::channel(Some(rt.clone()));
            let follower = TaskFollower {
                client: self.client.clone(),
                run_id: self.run_id.clone(),
                task_id: task_id.clone(),
                name: self
                    .config
                    .tasks
                    .get(task_id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
                index: self.rows.iter().position(|r| &r.id == task_id).unwrap_or(0),
                out: line_tx.clone(),
            };
            self.followers.spawn(follower.print_steps(rx));
            self.followed.insert(task_id.clone(), tx);
        }
    }

    fn show_status(&mut self) {
        let status: Vec<String> = self
            .rows
            .iter()
            .filter_map(|row| {
                let t = self.last.run.tasks.get(&row.id)?;
                Some(format!(
                    "{} {}",
                    self.term.glyph(t.status, t.waiting_approval),
                    row.name
                ))
            })
            .collect();
        let waiting = self.last.pending.as_ref().and_then(waiting_note);
        if waiting != self.shown_waiting {
            // Without a status line (not a terminal), a new reason to wait is a note.
            if let Some(w) = &waiting
                && !self.term.has_status_line()
            {
                self.term.note(&format!("cairn: waiting: {w}"));
            }
            self.shown_waiting = waiting.clone();
        }
        let waiting = waiting.map(|w| format!("  ({w})")).unwrap_or_default();
        self.term.status(&format!("{}{waiting}", status.join("  ")));
    }
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

/// Why a task ended as it did, for the summary's NOTE column: the failure the executor or
/// scheduler gave, else the first failed step and its exit status; and the attempts lost
/// with their executor before it ran again. Pure.
fn task_note(t: &RunTask) -> String {
    let mut parts = Vec::new();
    if let Some(why) = &t.fail_error {
        parts.push(why.clone());
    } else if t.status == RunTaskStatus::Failed
        && let Some((i, step)) = t
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.phase == ExecutorTaskPhase::Failed)
    {
        parts.push(match step.exit_status {
            Some(code) => format!("step {} exited with {code}", i + 1),
            None => format!("step {} failed", i + 1),
        });
    }
    match t.lost_attempts.as_slice() {
        [] => {}
        [one] => parts.push(format!("ran again after: {}", one.reason)),
        many => parts.push(format!(
            "ran again {} times, last after: {}",
            many.len(),
            many[many.len() - 1].reason
        )),
    }
    parts.join("; ")
}

fn summary(term: &mut Terminal, r: &RunResponse, rows: &[TaskRow]) {
    let table: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|row| {
            let t = r.run.tasks.get(&row.id)?;
            let took = match (t.start_time, t.end_time) {
                (Some(s), Some(e)) => duration(e - s),
                _ => String::new(),
            };
            let mut word = term.result_word(t.status.as_str());
            if t.timedout {
                word.push_str(" (timed out)");
            }
            Some(vec![row.name.clone(), word, took, task_note(t)])
        })
        .collect();
    let _ = outln!();
    term.table(&["TASK", "RESULT", "TIME", "NOTE"], &table);
    let total = match (r.run.start_time, r.run.end_time) {
        (Some(s), Some(e)) => format!(" in {}", duration(e - s)),
        _ => String::new(),
    };
    let result = match r.run.phase {
        RunPhase::Cancelled => term.result_word("cancelled"),
        // Left while the run goes on (detached, or the server gone): say so, never
        // "unknown".
        phase if !phase.is_finished() => format!("still {}", phase.as_str()),
        _ => term.result_word(r.run.result.as_str()),
    };
    let _ = outln!("\nrun {} #{}: {result}{total}", r.run.id, r.run.counter);
}

/// Prints one task's step logs, in order, each from its start to its end.
struct TaskFollower {
    client: RunClient,
    run_id: String,
    task_id: String,
    name: String,
    index: usize,
    out: mpsc::Sender<Line>,
}

impl TaskFollower {
    async fn print_steps(self, mut state: watch::Receiver<Option<RunTask>>) {
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
                    self.print_log(step).await;
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

    async fn print_log(&self, step: LogStep) {
        let Ok(mut stream) = self
            .client
            .logs(&self.run_id, &self.task_id, step, 0, true)
            .await
        else {
            return;
        };
        let mut lines = LineSplitter::default();
        let line = |text: String| Line {
            task: self.name.clone(),
            index: self.index,
            text,
        };
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            for text in lines.push(&chunk) {
                let _ = self.out.send(line(text)).await;
            }
        }
        if let Some(text) = lines.finish() {
            let _ = self.out.send(line(text)).await;
        }
    }
}

#[cfg(test)]
mod note_tests {
    use super::*;
    use cairn_client::run::{LostAttempt, RunTaskStep};

    fn failed_at_step_2(code: Option<i32>) -> RunTask {
        let step = |phase| RunTaskStep {
            phase,
            exit_status: None,
            ..RunTaskStep::default()
        };
        let mut t = RunTask {
            status: RunTaskStatus::Failed,
            steps: vec![
                step(ExecutorTaskPhase::Success),
                step(ExecutorTaskPhase::Failed),
            ],
            ..RunTask::default()
        };
        t.steps[1].exit_status = code;
        t
    }

    #[test]
    fn the_note_says_why_a_task_failed_and_that_it_ran_again() {
        assert_eq!(
            task_note(&failed_at_step_2(Some(2))),
            "step 2 exited with 2"
        );
        assert_eq!(task_note(&failed_at_step_2(None)), "step 2 failed");
        let mut lost = failed_at_step_2(None);
        lost.fail_error = Some("executor e2 is gone".into());
        assert_eq!(task_note(&lost), "executor e2 is gone");
        let attempt = |reason: &str| LostAttempt {
            executor_id: "e1".into(),
            reason: reason.into(),
            time: chrono::Utc::now(),
        };
        let mut retried = RunTask {
            status: RunTaskStatus::Success,
            lost_attempts: vec![attempt("executor e1 is gone")],
            ..RunTask::default()
        };
        assert_eq!(task_note(&retried), "ran again after: executor e1 is gone");
        retried
            .lost_attempts
            .push(attempt("executor e1 was stopped"));
        assert_eq!(
            task_note(&retried),
            "ran again 2 times, last after: executor e1 was stopped"
        );
        assert_eq!(task_note(&RunTask::default()), "");
    }
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

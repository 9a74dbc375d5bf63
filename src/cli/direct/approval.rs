//! Tasks that wait for approval while `cairn run` follows their run: each is asked about
//! once. With `--approve` every one is approved; on a terminal a `[y/N]` prompt is read on
//! a blocking thread (stdin has no async reader) and its answer comes back on a channel;
//! without a terminal the user is told how to approve from elsewhere.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};

use tokio::sync::mpsc;

use crate::cli::terminal::Terminal;

/// The approvals of one followed run.
pub(super) struct Approvals {
    approve_all: bool,
    /// The tasks already asked about, by name.
    asked: BTreeSet<String>,
    tx: mpsc::Sender<(String, bool)>,
    /// Answers, as (task name, approved).
    pub(super) answers: mpsc::Receiver<(String, bool)>,
}

impl Approvals {
    pub(super) fn new(approve_all: bool) -> Approvals {
        let (tx, answers) = mpsc::channel(8);
        Approvals {
            approve_all,
            asked: BTreeSet::new(),
            tx,
            answers,
        }
    }

    /// Asks about task `name` of run `run_id`, unless it was asked about already.
    pub(super) async fn ask(&mut self, term: &mut Terminal, run_id: &str, name: &str) {
        if !self.asked.insert(name.to_string()) {
            return;
        }
        if self.approve_all {
            term.note(&format!("cairn: approving {name} (--approve)"));
            let _ = self.tx.send((name.to_string(), true)).await;
        } else if std::io::stdin().is_terminal() {
            term.clear_status();
            let mut out = std::io::stdout().lock();
            let _ = write!(
                out,
                "cairn: task {name} waits for approval. Approve it? [y/N] "
            );
            let _ = out.flush();
            drop(out);
            let (tx, name) = (self.tx.clone(), name.to_string());
            // Ends with the read (or the process): a blocking read cannot be cancelled.
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
}

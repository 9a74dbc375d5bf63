//! Group commit. openraft 0.9 appends each client write as its own log entry and waits
//! for that entry's fsync before taking the next, so concurrent writers would pay one
//! fsync each. The proposer collects the writes that arrive while a proposal is in flight
//! and proposes them as one [`Command::Batch`] entry: one fsync (and one replication round)
//! for the whole group. Each write still gets its own revision and its own result.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use store::{Command, CommandResult};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::error::KvError;
use crate::types::Raft;

/// Most commands in one entry.
pub const MAX_BATCH: usize = 512;
/// Proposals in flight at once; the next group gathers while these commit.
pub const MAX_IN_FLIGHT: usize = 2;
/// Queue of writes waiting for a proposal slot.
pub const QUEUE: usize = 4096;

pub(crate) struct Proposal {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<CommandResult, KvError>>,
}

/// Hands writes to the proposer task.
#[derive(Clone)]
pub(crate) struct ProposerHandle {
    tx: mpsc::Sender<Proposal>,
}

impl ProposerHandle {
    pub fn new() -> (Self, mpsc::Receiver<Proposal>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, rx)
    }

    /// Proposes `cmd` as part of the next group and waits for its result.
    pub async fn propose(&self, cmd: Command, timeout: Duration) -> Result<CommandResult, KvError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| KvError::Stopped("proposer stopped".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(KvError::OutcomeUnknown(
                "proposer dropped the request".into(),
            )),
            Err(_) => Err(KvError::OutcomeUnknown(
                "not committed within the request timeout".into(),
            )),
        }
    }
}

/// Gathers queued writes into groups and proposes them, at most [`MAX_IN_FLIGHT`] at a time.
/// Owned by the node; in-flight proposals end with it.
pub(crate) async fn proposer_loop(
    raft: Raft,
    mut rx: mpsc::Receiver<Proposal>,
    timeout: Duration,
    stats: Arc<crate::stats::RaftStats>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    loop {
        // Wait for a slot first: writes that arrive meanwhile join the next group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let stats = stats.clone();
        in_flight.spawn(async move {
            submit(&raft, group, timeout, &stats).await;
            drop(slot);
        });
        while in_flight.try_join_next().is_some() {}
    }
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, crate::types::NodeAddr>>) -> KvError {
    match e {
        // openraft answers ForwardToLeader before proposing, or after truncating the
        // entry: in both cases it was not applied.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => KvError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            KvError::Membership(e.to_string())
        }
        RaftError::Fatal(f) => KvError::Stopped(f.to_string()),
    }
}

async fn submit(
    raft: &Raft,
    group: Vec<Proposal>,
    timeout: Duration,
    stats: &crate::stats::RaftStats,
) {
    let (mut cmds, replies): (Vec<Command>, Vec<_>) =
        group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let batched = cmds.len() > 1;
    let cmd = if batched {
        Command::Batch(cmds)
    } else {
        cmds.pop().expect("a group holds at least one write")
    };
    let outcome = match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(KvError::OutcomeUnknown(
            "not committed within the request timeout".into(),
        )),
        Ok(Err(e)) => Err(write_error(e)),
        Ok(Ok(resp)) => Ok(resp.data),
    };
    match outcome {
        Ok(CommandResult::Batch(results)) if batched && results.len() == replies.len() => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(r));
            }
        }
        Ok(r) if !batched => {
            for reply in replies {
                let _ = reply.send(Ok(r.clone()));
            }
        }
        Ok(other) => {
            let e = KvError::OutcomeUnknown(format!(
                "unexpected result for a group of writes: {other:?}"
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            crate::stats::RaftStats::add(&stats.proposals_failed, replies.len() as u64);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

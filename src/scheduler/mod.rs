//! The scheduler: advances runs and tasks, hands ready tasks to executors, queues runs
//! per group, fails the tasks of lost executors, moves finished logs to object storage
//! and archives finished runs.
//!
//! Exactly one scheduler is active in a cluster: each node's [`Scheduler`] queues for the
//! store mutex `rs/lock/scheduler/`, and the holder writes only through a fenced
//! [`Datamanager`], so a deposed scheduler (paused, partitioned) cannot commit anything.
//! It is event-driven — the datamanager's typed watches ([`crate::datamanager::watches`])
//! of runs, executor tasks and executors mark runs dirty and each dirty run is
//! re-evaluated at once — with a slow sweep of every active run as a safety net. Decisions are the pure functions of [`crate::runservice`]; this module
//! only reads, calls them, and writes back with compare-and-swap.

mod fixed;
mod housekeeping;
mod pass;
mod queue;
mod retention;
mod segmenter;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raft::{Ctx, Kv, Mutex, Session};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::datamanager::logs::LogStore;
use crate::datamanager::watches::ExecutorChanges;
use crate::datamanager::{Datamanager, DmError, keys};
use pass::PassState;

/// Tunables of the scheduler loop.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Every active run is re-evaluated this often even without events.
    pub sweep_every: Duration,
    /// Change-group compaction, event pruning and blob expiry run this often.
    pub housekeeping_every: Duration,
    /// Caches written longer ago than this are deleted.
    pub cache_ttl: Duration,
    /// Workspace archives older than this are deleted.
    pub archive_ttl: Duration,
    /// Uploaded source snapshots older than this, and used by no run still to be
    /// archived, are deleted.
    pub source_ttl: Duration,
    /// How long archived runs are kept, per group (default: forever).
    pub retention: crate::runservice::retention::RetentionPolicy,
    /// A retention pass runs once per this interval (in a housekeeping pass).
    pub retention_every: Duration,
    /// Run events kept.
    pub keep_events: usize,
    /// TTL of the scheduler's lock session, in seconds.
    pub session_ttl: i64,
    /// The registered executors are all there will ever be (the embedded node of `cairn
    /// run`): a ready task none of them can ever take fails at once, with the reason,
    /// instead of waiting forever.
    pub fixed_executors: bool,
    /// When archived runs move out of the store into segments.
    pub segments: crate::runservice::archive::SegmentPolicy,
    /// How many times a task lost with its executor runs again, unless its config says
    /// (`--retry-lost-tasks`; see [`crate::runservice::retry`]).
    pub retry_lost_tasks: u32,
}

/// How many times a task lost with its executor runs again by default.
pub const DEFAULT_RETRY_LOST_TASKS: u32 = 2;

/// The deadline of the context the scheduler queues for its lock and writes under: none
/// in practice (a year). Holding the lock ends by cancellation, maintenance mode or a
/// lost session, never by time.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long caches, workspace archives and source snapshots are kept by default: 7 days.
pub const DEFAULT_BLOB_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            sweep_every: Duration::from_secs(5),
            housekeeping_every: Duration::from_secs(60),
            cache_ttl: DEFAULT_BLOB_TTL,
            archive_ttl: DEFAULT_BLOB_TTL,
            source_ttl: DEFAULT_BLOB_TTL,
            retention: crate::runservice::retention::RetentionPolicy::default(),
            retention_every: Duration::from_secs(600),
            keep_events: 10_000,
            session_ttl: 5,
            fixed_executors: false,
            segments: Default::default(),
            retry_lost_tasks: DEFAULT_RETRY_LOST_TASKS,
        }
    }
}

/// Handle of one node's scheduler task (`SchedulerTask`).
pub struct Scheduler {
    active: Arc<AtomicBool>,
    task: JoinHandle<()>,
    cancel: CancellationToken,
}

/// The scheduler's side of the node's maintenance switch ([`crate::mode_switch`]).
pub struct ModeSignals {
    /// The node's mode: the scheduler stops while it is on.
    pub mode: tokio::sync::watch::Receiver<bool>,
    /// Set by the scheduler once it has stopped for maintenance and released the store.
    pub quiet: tokio::sync::watch::Sender<bool>,
}

impl Scheduler {
    /// Starts the scheduler task: it competes for the lock and, once it holds it,
    /// schedules until `cancel` fires or the lock is lost (then competes again).
    #[expect(
        clippy::too_many_arguments,
        reason = "what the composition root hands the scheduler, each once; a struct would only rename them"
    )]
    pub fn spawn(
        kv: Kv,
        logs: LogStore,
        blobs: crate::datamanager::blobs::Blobs,
        config: SchedulerConfig,
        active: Arc<AtomicBool>,
        signals: ModeSignals,
        metrics: crate::metrics::SchedulerMetrics,
        cancel: CancellationToken,
    ) -> Scheduler {
        let core = SchedulerTask {
            kv,
            logs,
            blobs,
            config,
            metrics,
            active: active.clone(),
            mode: signals.mode,
            quiet: signals.quiet,
        };
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let span = tracing::info_span!("scheduler");
            tracing::Instrument::instrument(core.compete(c), span).await;
        });
        Scheduler {
            active,
            task,
            cancel,
        }
    }

    /// Whether this node's scheduler holds the lock now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops the task and waits for it to end.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "the scheduler task panicked");
        }
    }
}

/// The scheduler task's own state: what it schedules with, and its side of the node's
/// mode. It competes for the lock and, holding it, runs the scheduling loop.
struct SchedulerTask {
    kv: Kv,
    logs: LogStore,
    blobs: crate::datamanager::blobs::Blobs,
    config: SchedulerConfig,
    /// Hand-out latency, waiting tasks, runs ended.
    metrics: crate::metrics::SchedulerMetrics,
    active: Arc<AtomicBool>,
    /// The node's maintenance mode: while on, this node's scheduler stops and does not
    /// compete.
    mode: tokio::sync::watch::Receiver<bool>,
    /// Set once the scheduler has stopped for maintenance and released the store (lock,
    /// session); cleared when it competes again. The node reports maintenance only then.
    quiet: tokio::sync::watch::Sender<bool>,
}

impl SchedulerTask {
    /// Queues for the lock, schedules while holding it, and starts over when it is lost.
    async fn compete(&self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            // In maintenance the scheduler waits, holding nothing.
            let mut mode = self.mode.clone();
            if *mode.borrow_and_update() {
                self.quiet.send_replace(true);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = mode.wait_for(|on| !*on) => if r.is_err() { return },
            }
            self.quiet.send_replace(false);
            match self.hold_and_schedule(&cancel).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler lost its lock or the store; competing again");
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            self.active.store(false, Ordering::Relaxed);
        }
    }

    async fn hold_and_schedule(&self, cancel: &CancellationToken) -> Result<(), DmError> {
        let session = Session::new(&self.kv, self.config.session_ttl).await?;
        let mutex = Mutex::new(keys::SCHEDULER_LOCK);
        let ctx = Ctx::with_cancel(NO_DEADLINE, cancel.clone());
        // Maintenance while queued for the lock: leave the queue (closing the session
        // deletes this node's place in it).
        let mut mode = self.mode.clone();
        let queued = tokio::select! {
            biased;
            _ = mode.wait_for(|on| *on) => None,
            r = mutex.lock(&ctx, &session) => Some(r),
        };
        let fence = match queued {
            Some(Ok(f)) => f,
            other => {
                let _ = session.close().await;
                return match other {
                    Some(Err(e)) if !matches!(e, raft::KvError::Cancelled) => Err(e.into()),
                    _ => Ok(()),
                };
            }
        };
        tracing::info!(token = fence.token, "scheduler active");
        self.active.store(true, Ordering::Relaxed);
        // The scheduler's context, given once: its writes end when it is cancelled.
        let dm = Datamanager::new(self.kv.clone())
            .fenced(fence.clone())
            .with_ctx(ctx.clone());
        let lost = session.done();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => Ok(()),
            _ = mode.wait_for(|on| *on) => {
                tracing::info!("maintenance mode: the scheduler stops");
                Ok(())
            }
            _ = lost.cancelled() => Err(DmError::Kv(raft::KvError::LockLost {
                key: String::from_utf8_lossy(&fence.key).into_owned(),
                token: fence.token,
            })),
            r = self.schedule(&dm) => r,
            r = self.background(&dm) => r,
        };
        self.active.store(false, Ordering::Relaxed);
        self.metrics.set_waiting(0);
        // Revoking the session's lease deletes the lock key on it: the next contender
        // holds the lock at once (bounded: without a quorum, the lease's TTL ends it).
        let _ = session.close().await;
        result
    }

    /// The active scheduler's loop: watches mark runs dirty; dirty runs are passed.
    async fn schedule(&self, dm: &Datamanager) -> Result<(), DmError> {
        let from = self.kv.header().revision + 1;
        let mut runs = dm.watch_run_ids(from);
        let mut tasks = dm.watch_task_run_ids(from);
        let mut executors = dm.watch_executor_changes(from);
        let mut dirty: BTreeSet<String> = dm.active_run_ids().await?.into_iter().collect();
        let mut state = PassState::default();
        let mut sweep = tokio::time::interval(self.config.sweep_every);
        sweep.tick().await;
        loop {
            while !dirty.is_empty() {
                let batch = std::mem::take(&mut dirty);
                for id in batch {
                    match self.pass(dm, &mut state, &id).await {
                        Ok(again) => {
                            if again {
                                dirty.insert(id);
                            }
                        }
                        Err(DmError::Conflict(what)) => {
                            tracing::debug!(run_id = %id, %what, "conflict; re-evaluating");
                            dirty.insert(id);
                        }
                        Err(e @ DmError::Kv(raft::KvError::LockLost { .. })) => return Err(e),
                        Err(e) => {
                            tracing::warn!(run_id = %id, error = %e, "scheduling a run failed");
                        }
                    }
                }
                for group in std::mem::take(&mut state.groups_to_check) {
                    if let Some(id) = self.start_next(dm, &group).await? {
                        dirty.insert(id);
                    }
                }
                // Drain changes that arrived meanwhile before waiting.
                while let Some(ids) = runs.try_recv() {
                    dirty.extend(ids?);
                }
                while let Some(ids) = tasks.try_recv() {
                    dirty.extend(ids?);
                }
                let mut seen = ExecutorChanges::default();
                while let Some(changes) = executors.try_recv() {
                    seen = seen.merge(changes?);
                }
                self.executors_changed(dm, seen, &mut state, &mut dirty)
                    .await?;
            }
            tokio::select! {
                ids = runs.recv() => dirty.extend(ids?),
                ids = tasks.recv() => dirty.extend(ids?),
                seen = executors.recv() => {
                    self.executors_changed(dm, seen?, &mut state, &mut dirty).await?;
                }
                _ = sweep.tick() => {
                    dirty.extend(dm.active_run_ids().await?);
                    self.fail_lost_tasks(dm, &mut dirty).await?;
                }
            }
        }
    }

    /// A gone executor's unfinished tasks fail; any put (a new executor, or a heartbeat
    /// reporting capacity) gives runs waiting for an executor another pass. Heartbeats
    /// therefore never scan the executor tasks.
    async fn executors_changed(
        &self,
        dm: &Datamanager,
        seen: ExecutorChanges,
        state: &mut PassState,
        dirty: &mut BTreeSet<String>,
    ) -> Result<(), DmError> {
        if seen.gone {
            self.fail_lost_tasks(dm, dirty).await?;
        }
        if seen.put || seen.gone {
            dirty.extend(std::mem::take(&mut state.waiting_for_executor));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

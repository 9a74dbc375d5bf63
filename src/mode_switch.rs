//! Each node's maintenance switch, [`ModeSwitch`]: a task that watches `rs/maintenance`
//! and publishes the node's mode on a `watch` channel (the API gates on it, the scheduler
//! stops while it is on) and records it in the store for `GET /api/v1/maintenance` —
//! switching on is recorded only once the node's scheduler has stopped and released the
//! store, so an operator who waits for every node knows no scheduler writes any more.
//! Switching is asynchronous: every node follows the key on its own.
//!
//! The stored flag and node modes are [`crate::datamanager::maintenance`], the HTTP
//! handlers [`crate::api::maintenance`], and the scheduler's side of the switch
//! [`crate::scheduler::ModeSignals`].

use std::time::Duration;

use cairn_client::api::NodeMode;
use raft::{Kv, Session};
use store::{KeyRange, WatchMessage, WatchRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::datamanager::Datamanager;
use crate::datamanager::maintenance::MAINTENANCE;

/// The node's maintenance switch and its task.
pub struct ModeSwitch {
    pub mode: watch::Receiver<bool>,
    task: JoinHandle<()>,
    cancel: CancellationToken,
}

impl ModeSwitch {
    /// Starts following the maintenance key, publishing on `tx` (whose receivers see
    /// off until the key has been read). `quiet` is the scheduler's "stopped for
    /// maintenance" signal, awaited before the node records that it is in maintenance.
    pub fn spawn(
        kv: Kv,
        node_id: u64,
        tx: watch::Sender<bool>,
        quiet: watch::Receiver<bool>,
    ) -> ModeSwitch {
        let rx = tx.subscribe();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let span = tracing::info_span!("maintenance");
            tracing::Instrument::instrument(follow(kv, node_id, tx, quiet, c), span).await;
        });
        ModeSwitch {
            mode: rx,
            task,
            cancel,
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "the maintenance switch task panicked");
        }
    }
}

async fn follow(
    kv: Kv,
    node_id: u64,
    tx: watch::Sender<bool>,
    mut quiet: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let dm = Datamanager::new(kv.clone());
    while !cancel.is_cancelled() {
        // The store calls of a new round (a lease grant, a read) wait up to a request
        // timeout for a quorum: a stop must not (the issue 14 probe's last node took
        // ~30 s to stop). Cancelled there, the round's session ends with its lease.
        let round = follow_once(&kv, &dm, node_id, &tx, &mut quiet, &cancel);
        let result = tokio::select! {
            r = round => r,
            _ = cancel.cancelled() => return,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "maintenance watch failed; retrying");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

async fn follow_once(
    kv: &Kv,
    dm: &Datamanager,
    node_id: u64,
    tx: &watch::Sender<bool>,
    quiet: &mut watch::Receiver<bool>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let session = Session::new(kv, 10).await?;
    let set = |on: bool| {
        let changed = *tx.borrow() != on;
        if changed {
            tracing::info!(maintenance = on, "switching mode");
            tx.send_replace(on);
        }
        changed
    };
    let current = kv.get(MAINTENANCE.as_bytes().to_vec()).await?;
    let from = kv.header().revision + 1;
    set(current.is_some());
    if !record_mode(dm, &session, node_id, current.is_some(), quiet, cancel).await? {
        let _ = session.close().await;
        return Ok(());
    }
    let mut w = kv.watch(WatchRequest {
        range: KeyRange::key(MAINTENANCE.as_bytes().to_vec()),
        start_revision: from,
        prev_kv: false,
        progress_notify: false,
        filter_put: false,
        filter_delete: false,
    });
    let lost = session.done();
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = session.close().await;
                return Ok(());
            }
            _ = lost.cancelled() => anyhow::bail!("the node-mode lease expired"),
            m = w.recv() => m,
        };
        match m {
            Some(WatchMessage::Events { events, .. }) => {
                let on = events
                    .last()
                    .is_some_and(|e| e.kind == store::EventKind::Put);
                if set(on) && !record_mode(dm, &session, node_id, on, quiet, cancel).await? {
                    let _ = session.close().await;
                    return Ok(());
                }
            }
            Some(WatchMessage::Progress { .. }) => {}
            Some(WatchMessage::Canceled(r)) => anyhow::bail!("watch cancelled: {r}"),
            None => anyhow::bail!("watch closed"),
        }
    }
}

/// Records the node's mode for `GET /api/v1/maintenance`; when it is on, only once the
/// node's scheduler has stopped and released the store. False if cancelled while waiting
/// (or the scheduler is gone).
async fn record_mode(
    dm: &Datamanager,
    session: &Session,
    node_id: u64,
    on: bool,
    quiet: &mut watch::Receiver<bool>,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    if on {
        let stopped = tokio::select! {
            _ = cancel.cancelled() => false,
            r = quiet.wait_for(|q| *q) => r.is_ok(),
        };
        if !stopped {
            return Ok(false);
        }
    }
    let mode = NodeMode {
        node_id,
        maintenance: on,
        since: chrono::Utc::now(),
    };
    dm.put_node_mode(&mode, session.lease()).await?;
    Ok(true)
}

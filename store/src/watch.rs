//! The watch hub: fans applied revisions out to watchers.
//!
//! A watcher is either *synced* (it has everything up to the hub's revision, and new
//! revisions are pushed to it as they are applied) or *catching up* (a task owned by the
//! watcher reads the events it missed from the engine, then joins the synced set under the
//! hub lock, so no revision falls between the two). Delivery is ordered, gap-free and in
//! whole revisions. Each watcher has a bounded buffer; a synced watcher whose buffer is
//! full is cancelled with [`CancelReason::SlowConsumer`] — events are never dropped
//! silently. History the watcher needs that was compacted cancels it with
//! [`CancelReason::Compacted`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::StoreError;
use crate::history::read_events;
use crate::kv::{Event, EventKind, KeyRange};

/// How many messages a watcher may have buffered before it counts as slow.
pub const WATCH_BUFFER: usize = 1024;
const CATCH_UP_PAGE: usize = 256;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub range: KeyRange,
    /// First revision to deliver; 0 = the next one applied.
    pub start_revision: i64,
    pub prev_kv: bool,
    /// Send idle progress notifications.
    pub progress_notify: bool,
    pub filter_put: bool,
    pub filter_delete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The watcher needs revisions below the compaction point.
    Compacted { compact_revision: i64 },
    /// The consumer did not keep up and its buffer filled.
    SlowConsumer,
    /// Reading history failed.
    Storage(String),
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelReason::Compacted { compact_revision } => {
                write!(
                    f,
                    "required revision has been compacted (compact revision {compact_revision})"
                )
            }
            CancelReason::SlowConsumer => {
                write!(
                    f,
                    "watcher cancelled: consumer too slow, {WATCH_BUFFER} responses buffered"
                )
            }
            CancelReason::Storage(e) => write!(f, "watcher cancelled: {e}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// All events of this watcher's range at `revision`.
    Events { revision: i64, events: Vec<Event> },
    /// Everything up to `revision` has been delivered.
    Progress { revision: i64 },
    /// The watch ended; nothing follows.
    Canceled(CancelReason),
}

struct Watcher {
    req: WatchRequest,
    tx: mpsc::Sender<WatchMessage>,
    cancel: Arc<Mutex<Option<CancelReason>>>,
    /// Next revision this watcher needs.
    next: i64,
    synced: bool,
    last_sent: Instant,
}

impl Watcher {
    fn filter(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.req.range.contains(&e.kv.key))
            .filter(|e| match e.kind {
                EventKind::Put => !self.req.filter_put,
                EventKind::Delete => !self.req.filter_delete,
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.req.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    fn cancel(&self, reason: CancelReason) {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}

struct Inner {
    revision: i64,
    compact_revision: i64,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
}

/// Shared by the state machine (which publishes) and every watcher.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Mutex<Inner>>,
    engine: Arc<dyn Engine>,
}

/// The receiving end of a watch. Dropping it unregisters the watcher.
pub struct WatchStream {
    id: u64,
    rx: mpsc::Receiver<WatchMessage>,
    cancel: Arc<Mutex<Option<CancelReason>>>,
    hub: WatchHub,
    ended: bool,
}

impl WatchStream {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next message; `None` after a `Canceled` message or once the hub is gone.
    pub async fn recv(&mut self) -> Option<WatchMessage> {
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(WatchMessage::Canceled(r)) => {
                self.ended = true;
                Some(WatchMessage::Canceled(r))
            }
            Some(m) => Some(m),
            None => {
                self.ended = true;
                let reason = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).take();
                reason.map(WatchMessage::Canceled)
            }
        }
    }

    /// The next message if one is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<WatchMessage> {
        if self.ended {
            return None;
        }
        match self.rx.try_recv() {
            Ok(WatchMessage::Canceled(r)) => {
                self.ended = true;
                Some(WatchMessage::Canceled(r))
            }
            Ok(m) => Some(m),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.ended = true;
                let reason = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).take();
                reason.map(WatchMessage::Canceled)
            }
        }
    }

    /// Asks for a progress notification as soon as this watcher is synced.
    pub fn request_progress(&self) {
        self.hub.request_progress(self.id);
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.hub.lock().watchers.remove(&self.id);
    }
}

impl WatchHub {
    pub(crate) fn new(engine: Arc<dyn Engine>, revision: i64, compact_revision: i64) -> Self {
        let inner = Inner {
            revision,
            compact_revision,
            watchers: HashMap::new(),
            next_id: 1,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            engine,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of registered watchers.
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Starts a watch. Must be called inside a tokio runtime when `start_revision` lies in
    /// the past (a catch-up task is spawned; it ends when the stream is dropped).
    pub fn watch(&self, req: WatchRequest) -> WatchStream {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let cancel = Arc::new(Mutex::new(None));
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let stream = WatchStream {
            id,
            rx,
            cancel: cancel.clone(),
            hub: self.clone(),
            ended: false,
        };
        let next = if req.start_revision <= 0 {
            inner.revision + 1
        } else {
            req.start_revision
        };
        if next < inner.compact_revision {
            let reason = CancelReason::Compacted {
                compact_revision: inner.compact_revision,
            };
            let _ = tx.try_send(WatchMessage::Canceled(reason));
            return stream;
        }
        // Revision 1 is the empty store and has no events: history starts at 2. (Catch-up
        // would otherwise take the missing events of revision 1 for a compaction.)
        let next = next.max(2);
        let synced = next > inner.revision;
        let w = Watcher {
            req,
            tx,
            cancel,
            next,
            synced,
            last_sent: Instant::now(),
        };
        inner.watchers.insert(id, w);
        drop(inner);
        if !synced {
            let hub = self.clone();
            tokio::spawn(async move { hub.catch_up(id).await });
        }
        stream
    }

    /// Feeds a catching-up watcher from the engine until it reaches the hub's revision.
    async fn catch_up(&self, id: u64) {
        loop {
            let (next, target, tx, watcher_req) = {
                let mut inner = self.lock();
                let (revision, compact) = (inner.revision, inner.compact_revision);
                let Some(w) = inner.watchers.get_mut(&id) else {
                    return;
                };
                if w.next > revision {
                    w.synced = true;
                    return;
                }
                if w.next < compact {
                    let reason = CancelReason::Compacted {
                        compact_revision: compact,
                    };
                    let _ = w.tx.try_send(WatchMessage::Canceled(reason.clone()));
                    w.cancel(reason);
                    inner.watchers.remove(&id);
                    return;
                }
                (w.next, revision, w.tx.clone(), w.req.clone())
            };
            let page = match read_events(self.engine.as_ref(), next, target, CATCH_UP_PAGE) {
                Ok(p) => p,
                Err(e) => return self.fail(id, CancelReason::Storage(e.to_string())),
            };
            // Revisions are dense: a missing one means compaction raced this read.
            let mut expected = next;
            let probe = Watcher {
                req: watcher_req,
                tx: tx.clone(),
                cancel: Arc::new(Mutex::new(None)),
                next,
                synced: false,
                last_sent: Instant::now(),
            };
            for (rev, events) in page {
                if rev != expected {
                    let compact = self.lock().compact_revision;
                    return self.fail(
                        id,
                        CancelReason::Compacted {
                            compact_revision: compact.max(rev),
                        },
                    );
                }
                expected = rev + 1;
                let evs = probe.filter(&events);
                if !evs.is_empty()
                    && tx
                        .send(WatchMessage::Events {
                            revision: rev,
                            events: evs,
                        })
                        .await
                        .is_err()
                {
                    return; // the stream was dropped
                }
            }
            if expected == next {
                let compact = self.lock().compact_revision;
                return self.fail(
                    id,
                    CancelReason::Compacted {
                        compact_revision: compact,
                    },
                );
            }
            let mut inner = self.lock();
            let Some(w) = inner.watchers.get_mut(&id) else {
                return;
            };
            w.next = expected;
            w.last_sent = Instant::now();
        }
    }

    fn fail(&self, id: u64, reason: CancelReason) {
        let mut inner = self.lock();
        if let Some(w) = inner.watchers.remove(&id) {
            w.cancel(reason.clone());
            let _ = w.tx.try_send(WatchMessage::Canceled(reason));
        }
    }

    /// Delivers newly applied revisions to synced watchers. Called by the state machine in
    /// revision order, after the revisions are durable in the engine.
    pub(crate) fn publish(
        &self,
        revisions: Vec<(i64, Vec<Event>)>,
        revision: i64,
        compact_revision: i64,
    ) {
        let mut inner = self.lock();
        inner.revision = revision;
        inner.compact_revision = compact_revision;
        if revisions.is_empty() {
            return;
        }
        let mut dead = Vec::new();
        for (id, w) in inner.watchers.iter_mut() {
            if !w.synced {
                continue;
            }
            for (rev, events) in &revisions {
                if *rev < w.next {
                    continue;
                }
                let evs = w.filter(events);
                w.next = rev + 1;
                if evs.is_empty() {
                    continue;
                }
                match w.tx.try_send(WatchMessage::Events {
                    revision: *rev,
                    events: evs,
                }) {
                    Ok(()) => w.last_sent = Instant::now(),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.cancel(CancelReason::SlowConsumer);
                        dead.push(*id);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        dead.push(*id);
                        break;
                    }
                }
            }
        }
        for id in dead {
            inner.watchers.remove(&id);
        }
    }

    /// After a snapshot install: the revision may have jumped, so every watcher goes back
    /// to catching up from the engine.
    pub(crate) fn reset(&self, revision: i64, compact_revision: i64) {
        let ids: Vec<u64> = {
            let mut inner = self.lock();
            inner.revision = revision;
            inner.compact_revision = compact_revision;
            inner
                .watchers
                .iter_mut()
                .filter(|(_, w)| w.synced && w.next <= revision)
                .map(|(id, w)| {
                    w.synced = false;
                    *id
                })
                .collect()
        };
        for id in ids {
            let hub = self.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { hub.catch_up(id).await });
            }
        }
    }

    /// Sends a progress notification to every synced watcher that asked for them and has
    /// been idle for `idle`. Called periodically by the hub's owner.
    pub fn progress_tick(&self, idle: Duration) {
        let mut inner = self.lock();
        let revision = inner.revision;
        for w in inner.watchers.values_mut() {
            if w.synced
                && w.req.progress_notify
                && w.last_sent.elapsed() >= idle
                && w.tx.try_send(WatchMessage::Progress { revision }).is_ok()
            {
                w.last_sent = Instant::now();
            }
        }
    }

    fn request_progress(&self, id: u64) {
        let inner = self.lock();
        let revision = inner.revision;
        if let Some(w) = inner.watchers.get(&id)
            && w.synced
        {
            let _ = w.tx.try_send(WatchMessage::Progress { revision });
        }
    }
}

impl From<StoreError> for CancelReason {
    fn from(e: StoreError) -> Self {
        CancelReason::Storage(e.to_string())
    }
}

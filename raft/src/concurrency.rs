//! etcd's concurrency recipes over [`Kv`]: a [`Session`] (a lease kept alive in the
//! background) and a [`Mutex`] whose holder gets a fencing token — the create revision
//! of its lock key. A lease-based lock alone does not give mutual exclusion (a paused
//! holder can outlive its lease), so every write a lock protects must go through
//! [`Kv::txn_if_lock_held`], which commits only while the lock key with that token exists.
//!
//! A contender's key holds its node's address. The next in line probes its predecessor's
//! node while it waits: when that node twice in a row refuses connections (its process
//! is gone) or answers that no session of its process holds the predecessor's lease (it
//! was killed and restarted), it revokes the predecessor's lease at once instead of
//! waiting out the TTL, so a killed holder hands the lock on in well under a second,
//! restarted or not. A false positive costs the holder its lock, never exclusion: its
//! fenced writes fail from the revocation on. A node that is frozen or cut off (no
//! refusal, only silence) is waited out by its lease as before.

use std::time::Duration;

use store::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, RangeRequest,
    RequestOp, SortOrder, SortTarget, TxnRequest, TxnResponse, WatchMessage, WatchRequest,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::KvError;
use crate::kv::{Ctx, Kv};

/// How long [`Session::close`] and [`Mutex::unlock`] wait for the store: both are
/// courtesies (the lease's TTL ends the session anyway), and a node stopping after its
/// peers must not wait a request timeout for a quorum that is gone.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the next in line probes its predecessor's node.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Consecutive probes finding the predecessor's session gone after which it counts as
/// dead.
const REFUSALS_TO_PREEMPT: u32 = 2;

/// A lease kept alive by a background task until the session is closed or dropped.
pub struct Session {
    kv: Kv,
    lease: i64,
    ttl: i64,
    cancel: CancellationToken,
    keepalive: Option<JoinHandle<()>>,
    lost: CancellationToken,
}

impl Session {
    /// Grants a lease of `ttl` seconds and keeps it alive every `ttl / 3`.
    pub async fn new(kv: &Kv, ttl: i64) -> Result<Session, KvError> {
        let (lease, ttl) = kv.lease_grant(ttl, 0).await?;
        // Known as this process's before any key is put on it.
        kv.own_session(lease, true);
        let cancel = CancellationToken::new();
        let lost = CancellationToken::new();
        let task = {
            let (kv, cancel, lost) = (kv.clone(), cancel.clone(), lost.clone());
            tokio::spawn(async move {
                let every = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    match kv.lease_keepalive(lease).await {
                        Ok(_) => {}
                        Err(KvError::Store(store::StoreError::LeaseNotFound(_))) => {
                            tracing::warn!(lease, "session lease expired");
                            lost.cancel();
                            return;
                        }
                        Err(e) => tracing::debug!(lease, error = %e, "keepalive failed; retrying"),
                    }
                }
            })
        };
        Ok(Session {
            kv: kv.clone(),
            lease,
            ttl,
            cancel,
            keepalive: Some(task),
            lost,
        })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Cancelled once the session's lease is known to be gone.
    pub fn done(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops the keepalive and revokes the lease (deleting every key on it), giving up
    /// after [`CLOSE_TIMEOUT`]: a node stopping without a quorum (its peers gone) stops
    /// at once, and the lease then ends with its TTL.
    pub async fn close(mut self) -> Result<(), KvError> {
        self.cancel.cancel();
        if let Some(t) = self.keepalive.take() {
            let _ = t.await;
        }
        match tokio::time::timeout(CLOSE_TIMEOUT, self.kv.lease_revoke(self.lease)).await {
            Ok(Ok(_) | Err(KvError::Store(store::StoreError::LeaseNotFound(_)))) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KvError::DeadlineExceeded(format!(
                "revoking session lease {} took over {CLOSE_TIMEOUT:?}; it ends with its TTL",
                self.lease
            ))),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.kv.own_session(self.lease, false);
    }
}

/// Proof of holding a [`Mutex`]: the lock key and its create revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub token: i64,
}

/// A distributed mutex over a key prefix (etcd's algorithm: each contender puts
/// `prefix/<lease>`; the lowest create revision holds the lock).
pub struct Mutex {
    prefix: Vec<u8>,
}

impl Mutex {
    pub fn new(prefix: impl Into<Vec<u8>>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with(b"/") {
            prefix.push(b'/');
        }
        Self { prefix }
    }

    fn my_key(&self, session: &Session) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(format!("{:x}", session.lease()).as_bytes());
        k
    }

    /// Queues for the lock and waits (within `ctx`) until it is held.
    pub async fn lock(&self, ctx: &Ctx, session: &Session) -> Result<Fence, KvError> {
        let kv = &session.kv;
        let key = self.my_key(session);
        let fence = self.enqueue(kv, session, &key).await?;
        loop {
            if ctx.cancel.is_cancelled() {
                let _ = self.release(kv, &key).await;
                return Err(KvError::Cancelled);
            }
            // The predecessor: the newest contender created before us.
            let mut req = RangeRequest::new(KeyRange::prefix(self.prefix.clone()));
            req.max_create_revision = fence.token - 1;
            req.sort_order = SortOrder::Descend;
            req.sort_target = SortTarget::Create;
            req.limit = 1;
            let resp = kv.range(req).await?;
            let Some(pred) = resp.kvs.into_iter().next() else {
                return Ok(fence);
            };
            let mut watch = kv.watch(WatchRequest {
                range: KeyRange::key(pred.key.clone()),
                start_revision: resp.revision + 1,
                ..WatchRequest::default()
            });
            let preempt = preempt_if_dead(kv, &self.prefix, &pred.key, &pred.value);
            let wait = async {
                while let Some(msg) = watch.recv().await {
                    match msg {
                        WatchMessage::Events { events, .. } => {
                            if events.iter().any(|e| e.kind == store::EventKind::Delete) {
                                return Ok(());
                            }
                        }
                        WatchMessage::Progress { .. } => {}
                        WatchMessage::Canceled(r) => {
                            return Err(KvError::Unavailable(r.to_string()));
                        }
                    }
                }
                Ok(())
            };
            let remaining = ctx
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            tokio::select! {
                _ = ctx.cancel.cancelled() => {}
                () = preempt => {}
                r = tokio::time::timeout(remaining, wait) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => { let _ = self.release(kv, &key).await; return Err(e) }
                    Err(_) => {
                        let _ = self.release(kv, &key).await;
                        return Err(KvError::DeadlineExceeded("waiting for the lock".into()));
                    }
                }
            }
        }
    }

    /// Takes the lock only if nobody holds it.
    pub async fn try_lock(&self, session: &Session) -> Result<Option<Fence>, KvError> {
        let kv = &session.kv;
        let key = self.my_key(session);
        let fence = self.enqueue(kv, session, &key).await?;
        let mut req = RangeRequest::new(KeyRange::prefix(self.prefix.clone()));
        req.max_create_revision = fence.token - 1;
        req.count_only = true;
        if kv.range(req).await?.count == 0 {
            return Ok(Some(fence));
        }
        self.release(kv, &key).await?;
        Ok(None)
    }

    async fn enqueue(&self, kv: &Kv, session: &Session, key: &[u8]) -> Result<Fence, KvError> {
        let put = PutRequest {
            key: key.to_vec(),
            // Whom the next in line probes (see the module docs).
            value: kv.n.addr.as_bytes().to_vec(),
            lease: session.lease(),
            ..PutRequest::default()
        };
        let req = TxnRequest {
            compare: vec![Compare::new(
                key.to_vec(),
                CompareOp::Equal,
                CompareTarget::Create(0),
            )],
            success: vec![RequestOp::Put(put)],
            failure: vec![RequestOp::Range(RangeRequest::new(KeyRange::key(
                key.to_vec(),
            )))],
        };
        let resp = kv.txn(req).await?;
        let token = if resp.succeeded {
            resp.revision
        } else {
            match resp.responses.first() {
                Some(store::ResponseOp::Range(r)) => {
                    r.kvs.first().map_or(resp.revision, |kv| kv.create_revision)
                }
                _ => resp.revision,
            }
        };
        Ok(Fence {
            key: key.to_vec(),
            token,
        })
    }

    async fn release(&self, kv: &Kv, key: &[u8]) -> Result<(), KvError> {
        kv.delete_range(DeleteRangeRequest {
            range: KeyRange::key(key.to_vec()),
            prev_kv: false,
        })
        .await?;
        Ok(())
    }

    /// Gives the lock up, waiting at most [`CLOSE_TIMEOUT`] for the store (the lock then
    /// goes with the session's lease).
    pub async fn unlock(&self, session: &Session, fence: &Fence) -> Result<(), KvError> {
        let _ = self;
        let delete = session.kv.txn(TxnRequest {
            compare: vec![Compare::new(
                fence.key.clone(),
                CompareOp::Equal,
                CompareTarget::Create(fence.token),
            )],
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                range: KeyRange::key(fence.key.clone()),
                prev_kv: false,
            })],
            failure: vec![],
        });
        match tokio::time::timeout(CLOSE_TIMEOUT, delete).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(KvError::DeadlineExceeded(format!(
                "unlocking took over {CLOSE_TIMEOUT:?}; the lock goes with its session"
            ))),
        }
    }
}

impl Kv {
    /// Runs `ops` (plus `compare`) only while `fence` still holds its lock: the lock key
    /// must exist with the fence's create revision. Fails with [`KvError::LockLost`]
    /// otherwise, so a deposed holder can never commit a protected write.
    pub async fn txn_if_lock_held(
        &self,
        fence: &Fence,
        mut compare: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<TxnResponse, KvError> {
        compare.insert(
            0,
            Compare::new(
                fence.key.clone(),
                CompareOp::Equal,
                CompareTarget::Create(fence.token),
            ),
        );
        let resp = self
            .txn(TxnRequest {
                compare,
                success: ops,
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            let held = self
                .get(fence.key.clone())
                .await?
                .is_some_and(|kv| kv.create_revision == fence.token);
            if !held {
                return Err(KvError::LockLost {
                    key: String::from_utf8_lossy(&fence.key).into_owned(),
                    token: fence.token,
                });
            }
        }
        Ok(resp)
    }
}

/// The lease of a contender's key: the hex suffix after the mutex's prefix.
fn lease_of(prefix: &[u8], key: &[u8]) -> Option<i64> {
    let hex = std::str::from_utf8(key.strip_prefix(prefix)?).ok()?;
    i64::from_str_radix(hex, 16).ok()
}

/// Probes the node at `addr` (the predecessor's key's value) every [`PROBE_EVERY`]; once
/// [`REFUSALS_TO_PREEMPT`] probes in a row found the predecessor's session gone (the node
/// refused the connection, or answered that its process holds no such session), revokes
/// the predecessor's lease and returns. Never returns for a key without an address, with an address that is no
/// member's, or of a node that answers (or is merely silent): the lock then moves when
/// the key goes.
async fn preempt_if_dead(kv: &Kv, prefix: &[u8], key: &[u8], addr: &[u8]) {
    let (Some(lease), Ok(addr)) = (lease_of(prefix, key), std::str::from_utf8(addr)) else {
        return std::future::pending().await;
    };
    if addr.is_empty() || addr == kv.n.addr {
        return std::future::pending().await;
    }
    let mut refusals = 0;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        // The key's value is whatever its writer put there: only a member's address is
        // probed (a probe carries the peer secret), and a stranger's key is waited out.
        if !kv.is_member_addr(addr) {
            return std::future::pending().await;
        }
        if kv.peer_lost_session(addr, lease, PROBE_EVERY * 2).await {
            refusals += 1;
        } else {
            refusals = 0;
        }
        if refusals >= REFUSALS_TO_PREEMPT {
            tracing::info!(
                holder = addr,
                lease,
                "the lock's holder is gone (refused, or restarted without its session): revoking its session"
            );
            match kv.lease_revoke(lease).await {
                Ok(_) | Err(KvError::Store(store::StoreError::LeaseNotFound(_))) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "revoking a dead holder's session");
                    refusals = 0;
                }
            }
        }
    }
}

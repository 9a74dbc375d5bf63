//! [`Kv`]: the client handle of the replicated store, with etcd's API.
//!
//! Writes go through Raft: proposed locally on the leader, forwarded to the leader from
//! a follower. Reads are linearizable by default — the leader confirms its leadership
//! with a quorum (read index) and the serving node waits until it has applied up to that
//! point — or serializable (local, possibly stale) on request. Watches are served from
//! the local replica. Every call is bounded by the node's request timeout; [`Kv::update`]
//! (one key) and [`Kv::update_keys`] (several keys read, any write, an optional fence)
//! take a caller's [`Ctx`] once and retry compare-and-swap conflicts inside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::RaftError;
use store::{
    Command, CommandResult, Compare, CompareOp, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, KeyRange, KeyValue, LeaseInfo, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, StoreError, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};
use tokio_util::sync::CancellationToken;

use crate::concurrency::Fence;
use crate::error::KvError;
use crate::lessor::Renewal;
use crate::node::{NodeInner, metrics};
use crate::rpc::{PeerRequest, PeerResponse};
use crate::types::{NodeAddr, NodeId};

/// A caller's deadline and cancellation, given once to a multi-step operation.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub deadline: Instant,
    pub cancel: CancellationToken,
}

impl Ctx {
    pub fn timeout(d: Duration) -> Self {
        Self {
            deadline: Instant::now() + d,
            cancel: CancellationToken::new(),
        }
    }

    pub fn with_cancel(d: Duration, cancel: CancellationToken) -> Self {
        Self {
            deadline: Instant::now() + d,
            cancel,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn check(&self) -> Result<(), KvError> {
        if self.cancel.is_cancelled() {
            return Err(KvError::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(KvError::DeadlineExceeded("context deadline passed".into()));
        }
        Ok(())
    }
}

impl Ctx {
    /// A read bounded by this context: [`KvError::DeadlineExceeded`] when the deadline
    /// passes first (nothing was written), [`KvError::Cancelled`] when cancelled.
    pub async fn read<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(KvError::Cancelled),
            r = tokio::time::timeout(self.remaining(), fut) => {
                r.map_err(|_| KvError::DeadlineExceeded("context deadline passed while reading".into()))?
            }
        }
    }

    /// A write bounded by this context: when the deadline passes first, the write may
    /// or may not have taken effect ([`KvError::OutcomeUnknown`]).
    pub async fn write<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        self.check()?;
        tokio::select! {
            _ = self.cancel.cancelled() => Err(KvError::Cancelled),
            r = tokio::time::timeout(self.remaining(), fut) => {
                r.map_err(|_| KvError::OutcomeUnknown("context deadline passed while writing".into()))?
            }
        }
    }

    /// Whether the context is still live: not cancelled, deadline not passed.
    pub fn live(&self) -> Result<(), KvError> {
        self.check()
    }
}

/// What [`Kv::update_keys`] commits besides its guards (one compare per key read):
/// further compares and the operations.
#[derive(Clone, Debug, Default)]
pub struct Write {
    pub compare: Vec<Compare>,
    pub ops: Vec<RequestOp>,
}

impl Write {
    pub fn ops(ops: Vec<RequestOp>) -> Write {
        Write {
            compare: Vec::new(),
            ops,
        }
    }
}

/// A committed [`Kv::update_keys`]: what `f` returned with the write, and the revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Updated<T> {
    pub value: T,
    pub revision: i64,
}

/// etcd's response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub raft_term: u64,
}

/// Remaining and granted TTL of a lease, with its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    pub id: i64,
    /// Seconds left; -1 when the lease does not exist.
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

/// The client handle. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    pub(crate) n: Arc<NodeInner>,
}

fn unexpected(what: &str) -> KvError {
    KvError::OutcomeUnknown(format!("unexpected answer to {what}"))
}

impl Kv {
    pub fn node_id(&self) -> NodeId {
        self.n.id
    }

    /// The header for a response at the local revision.
    pub fn header(&self) -> Header {
        let m = metrics(&self.n);
        Header {
            cluster_id: self.n.cluster_id_value(),
            member_id: self.n.id,
            revision: self.n.mvcc.revision(),
            raft_term: m.current_term,
        }
    }

    /// The smallest TTL a lease is granted (smaller requests are raised to it).
    pub fn min_lease_ttl(&self) -> i64 {
        self.n.timing.min_lease_ttl()
    }

    // ---- reads ----

    /// Waits until this node has applied everything committed before the call (read index).
    pub async fn read_barrier(&self) -> Result<(), KvError> {
        let deadline = Instant::now() + self.n.timing.request_timeout;
        match tokio::time::timeout(
            self.n.timing.request_timeout,
            self.n.raft.ensure_linearizable(),
        )
        .await
        {
            Err(_) => return Err(KvError::Unavailable("read index timed out".into())),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(RaftError::Fatal(f))) => return Err(KvError::Stopped(f.to_string())),
            Ok(Err(RaftError::APIError(_))) => {}
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let read = self
            .call_leader(
                |_| PeerRequest::ReadIndex,
                |r| match r {
                    PeerResponse::ReadIndex(r) => Some(r),
                    _ => None,
                },
                remaining,
            )
            .await?;
        if let Some(read) = read {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.n
                .raft
                .wait(Some(remaining))
                .applied_index_at_least(Some(read.index), "read index")
                .await
                .map_err(|e| KvError::Unavailable(format!("applying up to the read index: {e}")))?;
        }
        Ok(())
    }

    /// etcd's Range.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, KvError> {
        if !req.serializable {
            self.read_barrier().await?;
        }
        Ok(self.n.mvcc.range(&req)?)
    }

    /// The current value of one key (linearizable).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, KvError> {
        let resp = self.range(RangeRequest::new(KeyRange::key(key))).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Every key under `prefix` (linearizable).
    pub async fn get_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<RangeResponse, KvError> {
        self.range(RangeRequest::new(KeyRange::prefix(prefix)))
            .await
    }

    // ---- writes ----

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, KvError> {
        match self.propose(Command::Put(req)).await? {
            CommandResult::Put(r) => Ok(r),
            _ => Err(unexpected("put")),
        }
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        match self.propose(Command::DeleteRange(req)).await? {
            CommandResult::DeleteRange(r) => Ok(r),
            _ => Err(unexpected("delete_range")),
        }
    }

    /// etcd's Txn. A txn whose branches only read is served as a read (linearizable
    /// unless every range in it is serializable), without a Raft round of its own.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, KvError> {
        let ranges = || {
            req.success.iter().chain(&req.failure).map(|op| match op {
                RequestOp::Range(r) => Some(r.serializable),
                _ => None,
            })
        };
        if ranges().all(|r| r.is_some()) {
            if !ranges().all(|r| r == Some(true))
                || req.success.is_empty() && req.failure.is_empty()
            {
                self.read_barrier().await?;
            }
            return Ok(self.n.mvcc.read_txn(&req)?);
        }
        match self.propose(Command::Txn(req)).await? {
            CommandResult::Txn(r) => Ok(r),
            _ => Err(unexpected("txn")),
        }
    }

    pub async fn compact(&self, revision: i64) -> Result<i64, KvError> {
        match self.propose(Command::Compact { revision }).await? {
            CommandResult::Compact { revision } => Ok(revision),
            _ => Err(unexpected("compact")),
        }
    }

    /// Adds `delta` to the decimal counter at `key` and returns the new value: a native
    /// sequence, one Raft entry, no client-side CAS loop.
    pub async fn incr(&self, key: impl Into<Vec<u8>>, delta: u64) -> Result<u64, KvError> {
        match self
            .propose(Command::Incr {
                key: key.into(),
                delta,
            })
            .await?
        {
            CommandResult::Incr { value, .. } => Ok(value),
            _ => Err(unexpected("incr")),
        }
    }

    // ---- leases ----

    /// Grants a lease of at least `ttl` seconds (raised to the minimum TTL); `id = 0`
    /// lets the store choose the id.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<(i64, i64), KvError> {
        let ttl = ttl.max(self.min_lease_ttl());
        match self.propose(Command::LeaseGrant { id, ttl }).await? {
            CommandResult::LeaseGrant { id, ttl, .. } => Ok((id, ttl)),
            _ => Err(unexpected("lease_grant")),
        }
    }

    /// Whether the node at `addr` no longer keeps session lease `lease` alive: it refuses
    /// connections (its process is gone) or answers that no session of its process holds
    /// that lease (it was restarted). `false` when it is silent, errs, or is too old to
    /// know.
    pub async fn peer_lost_session(&self, addr: &str, lease: i64, timeout: Duration) -> bool {
        let target = NodeAddr {
            addr: addr.to_string(),
        };
        matches!(
            self.n
                .transport
                .send(
                    &target,
                    crate::rpc::PeerRequest::HoldsSession(lease),
                    timeout
                )
                .await,
            Err(crate::network::TransportError::Unreachable(_))
                | Ok(crate::rpc::PeerResponse::HoldsSession(false))
        )
    }

    /// Registers or forgets a session lease of this process (see
    /// [`Kv::peer_lost_session`]).
    pub(crate) fn own_session(&self, lease: i64, live: bool) {
        let mut sessions = self
            .n
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live {
            sessions.insert(lease);
        } else {
            sessions.remove(&lease);
        }
    }

    /// Whether `addr` is the address of a member (voter or learner) of this node's
    /// membership. Addresses read from the store are probed only when they are: any
    /// client may write a key, and a probe carries the peer secret.
    pub fn is_member_addr(&self, addr: &str) -> bool {
        crate::node::metrics(&self.n)
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| n.addr == addr)
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64, KvError> {
        match self.propose(Command::LeaseRevoke { id }).await? {
            CommandResult::LeaseRevoke { revision } => Ok(revision),
            _ => Err(unexpected("lease_revoke")),
        }
    }

    /// Refreshes a lease on the leader; returns its TTL.
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64, KvError> {
        if let Ok(ttl) = self.keepalive_local(id).await {
            return Ok(ttl);
        }
        let timeout = self.n.timing.request_timeout;
        self.call_leader(
            move |_| PeerRequest::KeepAlive(id),
            |r| match r {
                PeerResponse::KeepAlive(r) => Some(r),
                _ => None,
            },
            timeout,
        )
        .await
    }

    /// Remaining TTL (measured by the leader), granted TTL and keys of a lease.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<LeaseTtl, KvError> {
        self.read_barrier().await?;
        let Some(LeaseInfo {
            granted_ttl, keys, ..
        }) = self.n.mvcc.lease(id)
        else {
            return Ok(LeaseTtl {
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        let ttl = match self.remaining_local(id) {
            Ok(t) => t,
            Err(_) => {
                let timeout = self.n.timing.request_timeout;
                self.call_leader(
                    move |_| PeerRequest::LeaseRemaining(id),
                    |r| match r {
                        PeerResponse::LeaseRemaining(r) => Some(r),
                        _ => None,
                    },
                    timeout,
                )
                .await?
            }
        };
        Ok(LeaseTtl {
            id,
            ttl,
            granted_ttl,
            keys,
        })
    }

    /// Every lease id.
    pub async fn leases(&self) -> Result<Vec<i64>, KvError> {
        self.read_barrier().await?;
        Ok(self.n.mvcc.leases().into_iter().map(|(id, _)| id).collect())
    }

    /// Renews a lease on this node, the primary. When a checkpoint of the lease may be
    /// replicated, the renewal is acknowledged only once a checkpoint of its whole TTL
    /// (which clears it) is applied, so a new leader never starts the renewed lease from
    /// the old checkpoint (see [`crate::lessor`]).
    pub(crate) async fn keepalive_local(&self, id: i64) -> Result<i64, KvError> {
        let not_leader = || KvError::NotLeader {
            leader: metrics(&self.n).current_leader,
        };
        if !self.n.lessor.is_primary() {
            return Err(not_leader());
        }
        let ttl = self
            .n
            .mvcc
            .lease(id)
            .ok_or(StoreError::LeaseNotFound(id))?
            .granted_ttl;
        match self.n.lessor.keepalive(id, ttl, Instant::now()) {
            Renewal::NotPrimary => Err(not_leader()),
            Renewal::Renewed => Ok(ttl),
            Renewal::ResetCheckpoint => {
                let _gate = self.n.lessor.checkpoint_gate().lock().await;
                let reset = Command::LeaseCheckpoint {
                    checkpoints: vec![(id, ttl)],
                };
                match self.propose_local(reset).await? {
                    CommandResult::Error(e) => Err(KvError::Store(e)),
                    _ => {
                        self.n.lessor.checkpoint_reset(id);
                        Ok(ttl)
                    }
                }
            }
        }
    }

    pub(crate) fn remaining_local(&self, id: i64) -> Result<i64, KvError> {
        if !self.n.lessor.is_primary() {
            return Err(KvError::NotLeader {
                leader: metrics(&self.n).current_leader,
            });
        }
        if self.n.mvcc.lease(id).is_none() {
            return Err(StoreError::LeaseNotFound(id).into());
        }
        // A lease granted a moment ago may not have a deadline yet: it has its full TTL.
        Ok(self
            .n
            .lessor
            .remaining(id, Instant::now())
            .unwrap_or_else(|| self.n.mvcc.lease(id).map_or(0, |l| l.granted_ttl)))
    }

    // ---- watch ----

    /// Watches a key or range from a revision, served by this replica.
    pub fn watch(&self, req: WatchRequest) -> WatchStream {
        self.n.mvcc.hub().watch(req)
    }

    // ---- helpers ----

    /// Reads `key`, computes its new value with `f` (`None` = delete; returning the same
    /// value still writes), and writes it only if nobody changed the key in between;
    /// conflicts are retried until `ctx` expires. Returns the written value.
    pub async fn update<F>(
        &self,
        ctx: &Ctx,
        key: impl Into<Vec<u8>>,
        mut f: F,
    ) -> Result<Option<Vec<u8>>, KvError>
    where
        F: FnMut(Option<&KeyValue>) -> Option<Vec<u8>>,
    {
        let key = key.into();
        let updated = self
            .update_keys(ctx, std::slice::from_ref(&key), None, |current| {
                let next = f(current[0].as_ref());
                let op = match &next {
                    Some(v) => RequestOp::Put(PutRequest::new(key.clone(), v.clone())),
                    None => RequestOp::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::key(key.clone()),
                        prev_kv: false,
                    }),
                };
                Ok::<_, KvError>(Some((Write::ops(vec![op]), next)))
            })
            .await?;
        Ok(updated.and_then(|u| u.value))
    }

    /// The general form of [`Kv::update`]: reads `keys`, lets `f` compute a [`Write`]
    /// from their current values (`None`: nothing to write), and commits it only if none
    /// of the keys changed in between and, with a `fence`, its lock is still held.
    /// Conflicts are retried (re-reading, calling `f` again) until `ctx` expires or is
    /// cancelled: the caller's deadline is given once for the whole operation. `f`'s
    /// errors end the update; a lost fence is [`KvError::LockLost`].
    pub async fn update_keys<T, E, F>(
        &self,
        ctx: &Ctx,
        keys: &[Vec<u8>],
        fence: Option<&Fence>,
        mut f: F,
    ) -> Result<Option<Updated<T>>, E>
    where
        F: FnMut(&[Option<KeyValue>]) -> Result<Option<(Write, T)>, E>,
        E: From<KvError>,
    {
        loop {
            ctx.check()?;
            let mut current = Vec::with_capacity(keys.len());
            for key in keys {
                current.push(ctx.read(self.get(key.clone())).await?);
            }
            let Some((write, value)) = f(&current)? else {
                return Ok(None);
            };
            let mut compare: Vec<Compare> = keys
                .iter()
                .zip(&current)
                .map(|(key, kv)| match kv {
                    None => Compare::new(key.clone(), CompareOp::Equal, CompareTarget::Create(0)),
                    Some(kv) => Compare::new(
                        key.clone(),
                        CompareOp::Equal,
                        CompareTarget::Mod(kv.mod_revision),
                    ),
                })
                .collect();
            compare.extend(write.compare);
            let resp = match fence {
                Some(fence) => {
                    ctx.write(self.txn_if_lock_held(fence, compare, write.ops))
                        .await?
                }
                None => {
                    ctx.write(self.txn(TxnRequest {
                        compare,
                        success: write.ops,
                        failure: vec![],
                    }))
                    .await?
                }
            };
            if resp.succeeded {
                return Ok(Some(Updated {
                    value,
                    revision: resp.revision,
                }));
            }
            tokio::task::yield_now().await;
        }
    }

    /// Proposes a command and returns its result, forwarding to the leader when needed.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<CommandResult, KvError> {
        self.check_space(&cmd).await?;
        self.propose_unchecked(cmd).await
    }

    /// [`Kv::propose`] without the space check (`crate::alarms`: an alarm change, which
    /// never grows the store).
    pub(crate) async fn propose_unchecked(&self, cmd: Command) -> Result<CommandResult, KvError> {
        let result = if self.is_leader() {
            match self.propose_local(cmd.clone()).await {
                Err(KvError::NotLeader { .. }) => self.forward(cmd).await,
                r => r,
            }
        } else {
            self.forward(cmd).await
        }?;
        match result {
            CommandResult::Error(e) => Err(KvError::Store(e)),
            r => Ok(r),
        }
    }

    fn is_leader(&self) -> bool {
        metrics(&self.n).current_leader == Some(self.n.id)
    }

    async fn forward(&self, cmd: Command) -> Result<CommandResult, KvError> {
        let timeout = self.n.timing.request_timeout;
        let from = self.n.id;
        self.call_leader(
            move |_| PeerRequest::Propose {
                from,
                cmd: cmd.clone(),
            },
            |r| match r {
                PeerResponse::Propose(r) => Some(r),
                _ => None,
            },
            timeout,
        )
        .await
    }

    /// Proposes on this node; `NotLeader` when it is not the leader (nothing proposed).
    pub(crate) async fn propose_local(&self, cmd: Command) -> Result<CommandResult, KvError> {
        if !self.is_leader() {
            return Err(KvError::NotLeader {
                leader: metrics(&self.n).current_leader,
            });
        }
        self.n
            .proposer
            .propose(cmd, self.n.timing.request_timeout)
            .await
    }

    /// Sends a request to the current leader, waiting for one and following leader
    /// changes until `timeout`. Only `NotLeader` answers and unreachable leaders (nothing
    /// delivered) are retried; anything else is the answer.
    pub(crate) async fn call_leader<T, Req, Ext>(
        &self,
        mut make: Req,
        extract: Ext,
        timeout: Duration,
    ) -> Result<T, KvError>
    where
        Req: FnMut(NodeId) -> PeerRequest,
        Ext: Fn(PeerResponse) -> Option<Result<T, KvError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(KvError::Unavailable(
                    "no leader answered before the deadline".into(),
                ));
            }
            let Some((leader_id, addr)) = reachable_leader(&metrics(&self.n)) else {
                // Wait for the same condition as the one just missed: a node that knows
                // the leader's id before the membership naming its address (a joining
                // node, before the membership entry reaches it) would otherwise spin
                // here without yielding, starving the runtime that must receive that
                // very entry (seen: a 4th node joining under load never caught up).
                let waited = self
                    .n
                    .raft
                    .wait(Some(remaining.min(Duration::from_millis(500))))
                    .metrics(|m| reachable_leader(m).is_some(), "leader")
                    .await;
                if waited.is_err() {
                    // Timed out, or the node is shutting down (which answers at once).
                    tokio::time::sleep(backoff.min(remaining)).await;
                }
                continue;
            };
            let answer = if leader_id == self.n.id {
                // We became leader meanwhile: answer locally through the peer handler.
                crate::network::PeerHandler::handle(
                    &crate::node::Node {
                        inner: self.n.clone(),
                    },
                    make(leader_id),
                )
                .await
            } else {
                match self
                    .n
                    .transport
                    .send(
                        &NodeAddr {
                            addr: addr.addr.clone(),
                        },
                        make(leader_id),
                        remaining,
                    )
                    .await
                {
                    Ok(a) => a,
                    Err(crate::network::TransportError::Unreachable(_)) => {
                        tokio::time::sleep(backoff.min(remaining)).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            match extract(answer) {
                None => return Err(unexpected("leader request")),
                Some(Err(KvError::NotLeader { .. })) | Some(Err(KvError::Unavailable(_))) => {
                    // Leadership moved; wait for the new leader to be known.
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Some(r) => return r,
            }
        }
    }
}

/// The leader this node knows, with its address from the membership this node has: None
/// while either is unknown.
fn reachable_leader(m: &crate::types::RaftMetrics) -> Option<(NodeId, NodeAddr)> {
    let id = m.current_leader?;
    let addr = m.membership_config.membership().get_node(&id)?;
    Some((id, addr.clone()))
}

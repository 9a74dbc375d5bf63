//! The datamanager: typed collections of the run service over the replicated store
//! (runs, run configs, counters, executor tasks, executors, run events, change groups,
//! records of archived-run segments), with the indexes that keep listings O(page), and
//! object storage for blobs (logs, workspace archives, caches, sources, segments of
//! archived runs).
//!
//! Every write is a compare-and-swap transaction: callers read an object with its
//! revision and write it back only if nobody changed it since ([`DmError::Conflict`]
//! otherwise), or hand a read-modify-write function to an `update_*_with` method, which
//! retries conflicts through [`raft::Kv::update_keys`]. The scheduler adds its fence to
//! each write so that a deposed scheduler can never commit.
//!
//! Context once: a caller gives its deadline and cancellation once, to the handle
//! ([`Datamanager::with_ctx`]); every store call of every operation of that handle is
//! bounded by it, and conflicts are retried until it expires, never a fixed number of
//! times. Past the deadline an operation fails with [`DmError::Timeout`]. A handle without
//! a caller's context bounds each operation by [`DEFAULT_DEADLINE`].
//!
//! This module knows keys and JSON, not HTTP and not run semantics.

pub mod archived;
pub mod archives;
pub mod blobs;
pub mod caches;
pub mod changegroup;
pub mod create_once;
pub mod events;
pub mod exchange;
pub mod executors;
pub mod keys;
pub mod logs;
pub mod maintenance;
pub mod runs;
pub mod segmenting;
pub mod segments;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokens;
pub mod watches;

use std::time::{Duration, Instant};

use raft::{Ctx, Fence, Kv, KvError, Write};
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, RangeRequest,
    RequestOp, ResponseOp, TxnRequest, TxnResponse,
};

/// Why a datamanager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The object changed since it was read; re-read and retry.
    #[error("{0} was changed concurrently")]
    Conflict(String),
    /// The operation is not allowed in the current state (maintenance already on…).
    #[error("{0}")]
    Refused(String),
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("stored {key} is corrupt: {why}")]
    Corrupt { key: String, why: String },
    /// The caller's deadline passed (`outcome_unknown`: a write may have been committed).
    #[error("{what}: deadline exceeded{}", if *.outcome_unknown { " (the write may or may not have been applied)" } else { "" })]
    Timeout { what: String, outcome_unknown: bool },
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// The deadline of an operation on a handle without a caller's context.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

impl DmError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> DmError {
        DmError::NotFound {
            kind,
            id: id.into(),
        }
    }
}

/// An object read from the store with the revision it was last written at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// The typed collections over one store handle, optionally fenced, optionally bound to a
/// caller's context.
#[derive(Clone)]
pub struct Datamanager {
    kv: Kv,
    fence: Option<Fence>,
    ctx: Option<Ctx>,
}

impl Datamanager {
    pub fn new(kv: Kv) -> Datamanager {
        Datamanager {
            kv,
            fence: None,
            ctx: None,
        }
    }

    /// A view whose every write also requires `fence` to still hold its lock.
    pub fn fenced(&self, fence: Fence) -> Datamanager {
        Datamanager {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// A view whose every operation is bounded by the caller's `ctx` (deadline and
    /// cancellation), given once here.
    pub fn with_ctx(&self, ctx: Ctx) -> Datamanager {
        Datamanager {
            ctx: Some(ctx),
            ..self.clone()
        }
    }

    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// The context of one operation: the caller's, else [`DEFAULT_DEADLINE`] from now.
    fn ctx(&self) -> Ctx {
        self.ctx
            .clone()
            .unwrap_or_else(|| Ctx::timeout(DEFAULT_DEADLINE))
    }

    /// A store error of an operation under `ctx`, with the caller's deadline made a
    /// [`DmError::Timeout`].
    fn kv_error(ctx: &Ctx, what: &str, e: KvError) -> DmError {
        let past_deadline = Instant::now() >= ctx.deadline;
        match e {
            KvError::DeadlineExceeded(_) if past_deadline => DmError::Timeout {
                what: what.to_string(),
                outcome_unknown: false,
            },
            KvError::OutcomeUnknown(_) if past_deadline => DmError::Timeout {
                what: what.to_string(),
                outcome_unknown: true,
            },
            e => DmError::Kv(e),
        }
    }

    /// Commits `ops` if every compare holds (and the fence, if any, is held), within the
    /// handle's context.
    async fn commit(
        &self,
        compare: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<TxnResponse, DmError> {
        let ctx = self.ctx();
        let resp = match &self.fence {
            Some(f) => ctx.write(self.kv.txn_if_lock_held(f, compare, ops)).await,
            None => {
                ctx.write(self.kv.txn(TxnRequest {
                    compare,
                    success: ops,
                    failure: vec![],
                }))
                .await
            }
        };
        resp.map_err(|e| Self::kv_error(&ctx, "writing", e))
    }

    /// Reads `keys`, lets `f` compute a write from their current values (`None`: nothing
    /// to write), and commits it only if none of them changed meanwhile (and the fence,
    /// if any, is held); conflicts are retried within the handle's context. Returns what
    /// `f` returned with the write and its revision.
    pub(crate) async fn update_keys<T, E, F>(
        &self,
        what: &str,
        keys: Vec<String>,
        mut f: F,
    ) -> Result<Option<(T, i64)>, E>
    where
        F: FnMut(&[Option<store::KeyValue>]) -> Result<Option<(Write, T)>, E>,
        E: From<DmError>,
    {
        /// `f`'s error, or the store's.
        enum Failed<E> {
            Kv(KvError),
            Caller(E),
        }
        impl<E> From<KvError> for Failed<E> {
            fn from(e: KvError) -> Self {
                Failed::Kv(e)
            }
        }
        let ctx = self.ctx();
        let keys: Vec<Vec<u8>> = keys.into_iter().map(String::into_bytes).collect();
        let updated = self
            .kv
            .update_keys(&ctx, &keys, self.fence.as_ref(), |current| {
                f(current).map_err(Failed::Caller)
            })
            .await;
        match updated {
            Ok(u) => Ok(u.map(|u| (u.value, u.revision))),
            Err(Failed::Caller(e)) => Err(e),
            Err(Failed::Kv(e)) => Err(Self::kv_error(&ctx, what, e).into()),
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, DmError> {
        let ctx = self.ctx();
        let got = ctx
            .read(self.kv.get(key.as_bytes().to_vec()))
            .await
            .map_err(|e| Self::kv_error(&ctx, "reading", e))?;
        match got {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: decode(key, &kv.value)?,
                mod_revision: kv.mod_revision,
            })),
        }
    }

    /// Several keys read at one revision per 64 keys; `None` for missing ones.
    async fn get_many_json<T: DeserializeOwned>(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Versioned<T>>>, DmError> {
        let raw = self.get_many_json_raw(keys).await?;
        keys.iter()
            .zip(raw)
            .map(|(key, kv)| {
                kv.map(|kv| {
                    Ok(Versioned {
                        value: decode(key, &kv.value)?,
                        mod_revision: kv.mod_revision,
                    })
                })
                .transpose()
            })
            .collect()
    }

    /// Several raw key-values read at one revision.
    async fn get_many_json_raw(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<store::KeyValue>>, DmError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(64) {
            let ops = chunk
                .iter()
                .map(|k| RequestOp::Range(RangeRequest::new(KeyRange::key(k.as_bytes().to_vec()))))
                .collect();
            let resp = self
                .kv
                .txn(TxnRequest {
                    compare: vec![],
                    success: ops,
                    failure: vec![],
                })
                .await?;
            for r in resp.responses {
                out.push(match r {
                    ResponseOp::Range(mut r) => r.kvs.pop(),
                    _ => None,
                });
            }
        }
        Ok(out)
    }

    /// Every value under `prefix`, in key order, read at one revision in pages.
    async fn scan_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, DmError> {
        Ok(self.scan_json_at(prefix).await?.0)
    }

    /// [`Datamanager::scan_json`], with the revision it read at.
    async fn scan_json_at<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Versioned<T>>, i64), DmError> {
        let (kvs, revision) = self.scan_at(prefix, false).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            out.push(Versioned {
                value: decode(&key, &kv.value)?,
                mod_revision: kv.mod_revision,
            });
        }
        Ok((out, revision))
    }

    /// Every key-value under `prefix`, paged at one revision.
    async fn scan(&self, prefix: &str, keys_only: bool) -> Result<Vec<store::KeyValue>, DmError> {
        Ok(self.scan_at(prefix, keys_only).await?.0)
    }

    /// [`Datamanager::scan`], with the revision it read at.
    async fn scan_at(
        &self,
        prefix: &str,
        keys_only: bool,
    ) -> Result<(Vec<store::KeyValue>, i64), DmError> {
        const PAGE: i64 = 1000;
        let end = store::prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut req = RangeRequest::new(KeyRange::interval(start.clone(), end.clone()));
            req.limit = PAGE;
            req.revision = revision;
            req.keys_only = keys_only;
            let resp = self.kv.range(req).await?;
            if revision == 0 {
                revision = resp.revision;
            }
            let more = resp.more;
            if let Some(last) = resp.kvs.last() {
                start = last.key.clone();
                start.push(0);
            }
            out.extend(resp.kvs);
            if !more {
                return Ok((out, revision));
            }
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, DmError> {
    serde_json::from_slice(bytes).map_err(|e| DmError::Corrupt {
        key: key.to_string(),
        why: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("run-service objects always serialize")
}

pub(crate) fn put(key: impl Into<String>, value: Vec<u8>) -> RequestOp {
    RequestOp::Put(PutRequest::new(key.into().into_bytes(), value))
}

pub(crate) fn put_with_lease(key: impl Into<String>, value: Vec<u8>, lease: i64) -> RequestOp {
    let mut req = PutRequest::new(key.into().into_bytes(), value);
    req.lease = lease;
    RequestOp::Put(req)
}

pub(crate) fn delete(key: impl Into<String>) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        range: KeyRange::key(key.into().into_bytes()),
        prev_kv: false,
    })
}

/// The key was last written at `rev` (0: the key must not exist).
pub(crate) fn unchanged(key: impl Into<String>, rev: i64) -> Compare {
    let key = key.into().into_bytes();
    if rev == 0 {
        Compare::new(key, CompareOp::Equal, CompareTarget::Create(0))
    } else {
        Compare::new(key, CompareOp::Equal, CompareTarget::Mod(rev))
    }
}

pub(crate) fn delete_range(prefix: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        range: KeyRange::prefix(prefix.as_bytes().to_vec()),
        prev_kv: false,
    })
}

pub(crate) fn absent(key: impl Into<String>) -> Compare {
    unchanged(key, 0)
}

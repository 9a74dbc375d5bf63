//! The datamanager: typed collections of the run service over the replicated store
//! (runs, run configs, counters, executor tasks, executors, run events, change groups),
//! with the indexes that keep listings O(page), and object storage for blobs (logs,
//! workspace archives, caches, sources).
//!
//! Every write is a compare-and-swap transaction: callers read an object with its
//! revision and write it back only if nobody changed it since ([`DmError::Conflict`]
//! otherwise). The scheduler adds its fence to each write so that a deposed scheduler
//! can never commit. This module knows keys and JSON, not HTTP and not run semantics.

pub mod archives;
pub mod blobs;
pub mod caches;
pub mod changegroup;
pub mod events;
pub mod exchange;
pub mod executors;
pub mod keys;
pub mod logs;
pub mod maintenance;
pub mod runs;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;

use raft::{Fence, Kv, KvError};
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
    #[error(transparent)]
    Kv(#[from] KvError),
}

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

/// The typed collections over one store handle, optionally fenced.
#[derive(Clone)]
pub struct Datamanager {
    kv: Kv,
    fence: Option<Fence>,
}

impl Datamanager {
    pub fn new(kv: Kv) -> Datamanager {
        Datamanager { kv, fence: None }
    }

    /// A view whose every write also requires `fence` to still hold its lock.
    pub fn fenced(&self, fence: Fence) -> Datamanager {
        Datamanager {
            kv: self.kv.clone(),
            fence: Some(fence),
        }
    }

    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Commits `ops` if every compare holds (and the fence, if any, is held).
    async fn commit(
        &self,
        compare: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<TxnResponse, DmError> {
        let resp = match &self.fence {
            Some(f) => self.kv.txn_if_lock_held(f, compare, ops).await?,
            None => {
                self.kv
                    .txn(TxnRequest {
                        compare,
                        success: ops,
                        failure: vec![],
                    })
                    .await?
            }
        };
        Ok(resp)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, DmError> {
        match self.kv.get(key.as_bytes().to_vec()).await? {
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
        let mut out = Vec::new();
        for kv in self.scan(prefix, false).await? {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            out.push(Versioned {
                value: decode(&key, &kv.value)?,
                mod_revision: kv.mod_revision,
            });
        }
        Ok(out)
    }

    /// Every key-value under `prefix`, paged at one revision.
    async fn scan(&self, prefix: &str, keys_only: bool) -> Result<Vec<store::KeyValue>, DmError> {
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
                return Ok(out);
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

//! Caps on long-lived requests: etcd watches, run-event SSE streams, run watches, log
//! follows and executor long polls. Each kind has a per-credential cap (credentials are told apart by
//! a SHA-256 of their bearer token, whatever role the token has) and a global cap; a
//! request beyond either is refused with 429 before it starts. A [`StreamPermit`] holds one
//! slot and frees it when dropped, i.e. when the response body (or the wait) ends, which
//! for a disconnected client is when the server next tries to write to it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

/// Default per-credential cap of each kind.
pub const DEFAULT_PER_CREDENTIAL: usize = 128;
/// Default global cap of each kind.
pub const DEFAULT_GLOBAL: usize = 1024;

/// The kinds of long-lived requests, each capped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `POST /v3/watch`.
    Watch,
    /// `GET /api/v1/runs/events`.
    Events,
    /// `GET /api/v1/runs/{id}/tasks/{task}/logs?follow=true`.
    LogFollow,
    /// `GET /api/v1/runs/{id}/watch`.
    RunWatch,
    /// `GET /api/v1/executors/{id}/tasks?after=&wait=`.
    LongPoll,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamKind::Watch => "watch",
            StreamKind::Events => "event stream",
            StreamKind::LogFollow => "log follow",
            StreamKind::RunWatch => "run watch",
            StreamKind::LongPoll => "long poll",
        })
    }
}

/// Default longest life of one log follow.
pub const DEFAULT_MAX_FOLLOW: Duration = Duration::from_secs(3600);

/// The caps, per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Concurrent requests of one kind for one credential.
    pub per_credential: usize,
    /// Concurrent requests of one kind on this node.
    pub global: usize,
    /// How long one log follow or run watch may last; the client resumes a cut follow at
    /// its offset, a cut run watch from the run's current state.
    pub max_follow: Duration,
}

impl Default for StreamLimits {
    fn default() -> StreamLimits {
        StreamLimits {
            per_credential: DEFAULT_PER_CREDENTIAL,
            global: DEFAULT_GLOBAL,
            max_follow: DEFAULT_MAX_FOLLOW,
        }
    }
}

/// Which cap a refused request hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    #[error("too many concurrent {kind}s for this credential (limit {limit})")]
    PerCredential { kind: StreamKind, limit: usize },
    #[error("too many concurrent {kind}s on this server (limit {limit})")]
    Global { kind: StreamKind, limit: usize },
}

impl CapExceeded {
    /// The cap that was hit.
    pub fn limit(&self) -> usize {
        match self {
            CapExceeded::PerCredential { limit, .. } | CapExceeded::Global { limit, .. } => *limit,
        }
    }
}

impl From<CapExceeded> for super::error::Failure {
    fn from(e: CapExceeded) -> super::error::Failure {
        super::error::Failure::new(cairn_client::ErrorCode::TooManyRequests, e.to_string())
            .with_details(serde_json::json!({ "limit": e.limit() }))
    }
}

/// Whether one more request fits, given how many of its kind run for its credential and
/// in all.
pub fn admit(
    kind: StreamKind,
    limits: StreamLimits,
    for_credential: usize,
    in_all: usize,
) -> Result<(), CapExceeded> {
    if for_credential >= limits.per_credential {
        return Err(CapExceeded::PerCredential {
            kind,
            limit: limits.per_credential,
        });
    }
    if in_all >= limits.global {
        return Err(CapExceeded::Global {
            kind,
            limit: limits.global,
        });
    }
    Ok(())
}

/// A credential, as the SHA-256 of its bearer token (of nothing when none was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialKey([u8; 32]);

impl CredentialKey {
    /// The key of a bearer token.
    pub fn of_token(token: &[u8]) -> CredentialKey {
        CredentialKey(Sha256::digest(token).into())
    }

    /// The key of the credential in a request's `Authorization` header.
    pub fn of_parts(parts: &Parts) -> CredentialKey {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .map(|v| v.strip_prefix(b"Bearer ").unwrap_or(v))
            .unwrap_or_default();
        CredentialKey::of_token(token)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CredentialKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(CredentialKey::of_parts(parts))
    }
}

#[derive(Default)]
struct Counts {
    by_credential: HashMap<(StreamKind, CredentialKey), usize>,
    by_kind: HashMap<StreamKind, usize>,
}

/// The live counts of one node. Cloning is cheap; clones share the counts.
#[derive(Clone)]
pub struct StreamCaps {
    limits: StreamLimits,
    counts: Arc<Mutex<Counts>>,
}

impl fmt::Debug for StreamCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamCaps({:?})", self.limits)
    }
}

impl Default for StreamCaps {
    fn default() -> StreamCaps {
        StreamCaps::new(StreamLimits::default())
    }
}

impl StreamCaps {
    pub fn new(limits: StreamLimits) -> StreamCaps {
        StreamCaps {
            limits,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counter updates cannot be left half done by a panic: a poisoned lock is usable.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot of `kind` for `credential`, or says which cap is full.
    pub fn acquire(
        &self,
        kind: StreamKind,
        credential: CredentialKey,
    ) -> Result<StreamPermit, CapExceeded> {
        let mut counts = self.lock();
        let mine = counts
            .by_credential
            .get(&(kind, credential))
            .copied()
            .unwrap_or(0);
        let all = counts.by_kind.get(&kind).copied().unwrap_or(0);
        admit(kind, self.limits, mine, all)?;
        *counts.by_credential.entry((kind, credential)).or_default() += 1;
        *counts.by_kind.entry(kind).or_default() += 1;
        Ok(StreamPermit {
            caps: self.clone(),
            kind,
            credential,
        })
    }

    /// The caps.
    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// How many requests of `kind` hold a slot now.
    pub fn in_use(&self, kind: StreamKind) -> usize {
        self.lock().by_kind.get(&kind).copied().unwrap_or(0)
    }
}

/// One slot; freed on drop.
pub struct StreamPermit {
    caps: StreamCaps,
    kind: StreamKind,
    credential: CredentialKey,
}

impl fmt::Debug for StreamPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamPermit({})", self.kind)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.caps.lock();
        let key = (self.kind, self.credential);
        if let Some(n) = counts.by_credential.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.by_credential.remove(&key);
            }
        }
        if let Some(n) = counts.by_kind.get_mut(&self.kind) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StreamLimits = StreamLimits {
        per_credential: 2,
        global: 3,
        max_follow: DEFAULT_MAX_FOLLOW,
    };

    #[test]
    fn admit_checks_the_credential_cap_then_the_global_one() {
        let k = StreamKind::Events;
        assert_eq!(admit(k, LIMITS, 1, 2), Ok(()));
        assert_eq!(
            admit(k, LIMITS, 2, 2),
            Err(CapExceeded::PerCredential { kind: k, limit: 2 })
        );
        assert_eq!(
            admit(k, LIMITS, 0, 3),
            Err(CapExceeded::Global { kind: k, limit: 3 })
        );
    }

    #[test]
    fn permits_count_per_credential_and_kind_and_free_their_slot_on_drop() {
        let caps = StreamCaps::new(LIMITS);
        let (a, b) = (
            CredentialKey::of_token(b"token-a"),
            CredentialKey::of_token(b"token-b"),
        );
        let a1 = caps.acquire(StreamKind::Events, a).expect("a1");
        let _a2 = caps.acquire(StreamKind::Events, a).expect("a2");
        assert!(matches!(
            caps.acquire(StreamKind::Events, a),
            Err(CapExceeded::PerCredential { .. })
        ));
        // Another kind has its own counts.
        let _w = caps.acquire(StreamKind::Watch, a).expect("another kind");
        let _b1 = caps.acquire(StreamKind::Events, b).expect("b1");
        assert!(matches!(
            caps.acquire(StreamKind::Events, b),
            Err(CapExceeded::Global { .. })
        ));
        drop(a1);
        assert_eq!(caps.in_use(StreamKind::Events), 2);
        caps.acquire(StreamKind::Events, b)
            .expect("a freed slot is usable by anyone");
    }
}

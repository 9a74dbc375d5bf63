//! The run-service API's errors: every failure becomes `{code, message, details}` with the
//! HTTP status of its code. The only place domain errors meet status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_client::{ApiError, ErrorCode};

use crate::datamanager::DmError;
use crate::history::HistoryError;
use crate::runservice::RunServiceError;

/// A failed API request.
#[derive(Debug)]
pub struct Failure(pub ApiError);

pub type ApiResult<T> = Result<T, Failure>;

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure(ApiError {
            code,
            message: message.into(),
            details: None,
        })
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::NotFound, message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Failure {
        self.0.details = Some(details);
        self
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (status_of(self.0.code), Json(self.0)).into_response()
    }
}

impl From<DmError> for Failure {
    fn from(e: DmError) -> Failure {
        let code = match &e {
            DmError::NotFound { .. } => ErrorCode::NotFound,
            DmError::Conflict(_) | DmError::Refused(_) => ErrorCode::Conflict,
            DmError::Invalid { .. } => ErrorCode::BadRequest,
            DmError::Corrupt { .. } => ErrorCode::Internal,
            DmError::Timeout { .. } => ErrorCode::Timeout,
            DmError::Kv(k) => kv_code(k),
        };
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "request failed");
        }
        Failure::new(code, e.to_string())
    }
}

/// A read of the run history: the store's failures as above; an index that lags (being
/// rebuilt) is a 503, so a client fails over to a node whose index is complete; an
/// unreadable index or segment is internal.
impl From<HistoryError> for Failure {
    fn from(e: HistoryError) -> Failure {
        match e {
            HistoryError::Store(e) => e.into(),
            e @ HistoryError::IndexBehind { .. } => {
                Failure::new(ErrorCode::Unavailable, e.to_string())
            }
            e @ (HistoryError::Index(_) | HistoryError::Segment { .. }) => {
                tracing::error!(error = %e, "reading an archived run failed");
                Failure::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}

/// The code of a replicated-store failure on `/api/v1`. Every variant is mapped by name,
/// with the HTTP status the etcd gateway (`api/etcd.rs`) gives the same error but for
/// store timeouts (below), so a new
/// variant must be placed here deliberately: the requested revision out of range and a
/// refused argument are the request's fault (400); no leader, a stopped node, a
/// cancelled request or a store operation that did not complete in time (no quorum
/// answered) are worth retrying elsewhere (503: the client fails idempotent calls over
/// to another node on a 503, never on a 504); only a storage failure is internal (500).
/// The request's own deadline passing is `DmError::Timeout`, a 504.
fn kv_code(e: &raft::KvError) -> ErrorCode {
    use raft::KvError as K;
    match e {
        K::Store(s) => store_code(s),
        K::Unavailable(_)
        | K::NotLeader { .. }
        | K::Stopped(_)
        | K::Cancelled
        | K::DeadlineExceeded(_)
        | K::OutcomeUnknown(_) => ErrorCode::Unavailable,
        K::UnknownNode(_) => ErrorCode::NotFound,
        K::Membership(_) => ErrorCode::BadRequest,
        K::LockLost { .. } => ErrorCode::Conflict,
        K::Unauthorized => ErrorCode::Unauthorized,
        K::AlarmCause(_) => ErrorCode::BadRequest,
    }
}

/// The code of an error the state machine decided (see [`kv_code`]).
fn store_code(e: &store::StoreError) -> ErrorCode {
    use store::StoreError as S;
    match e {
        S::Compacted { .. } | S::FutureRevision { .. } => ErrorCode::BadRequest,
        S::LeaseNotFound(_) => ErrorCode::NotFound,
        S::LeaseExists(_)
        | S::LeaseTtlTooSmall { .. }
        | S::LeaseTtlTooLarge { .. }
        | S::DuplicateKey(_)
        | S::KeyNotFound
        | S::InvalidArgument(_)
        | S::NotANumber { .. } => ErrorCode::BadRequest,
        S::TooLarge { .. } => ErrorCode::TooLarge,
        S::Storage(_) => ErrorCode::Internal,
        // A NOSPACE alarm: the store takes no write that may grow it until the alarm is
        // disarmed, on any node; a 503 like the other "store cannot take this now" errors
        // (the etcd gateway too, with etcd's ResourceExhausted code and message).
        S::NoSpace => ErrorCode::Unavailable,
    }
}

impl From<RunServiceError> for Failure {
    fn from(e: RunServiceError) -> Failure {
        Failure::new(e.code(), e.to_string())
    }
}

impl From<crate::datamanager::blobs::BlobError> for Failure {
    fn from(e: crate::datamanager::blobs::BlobError) -> Failure {
        use crate::datamanager::blobs::BlobError;
        match e {
            BlobError::NotFound { key } => Failure::not_found(format!("{key} not found")),
            e @ BlobError::InvalidKey { .. } => Failure::bad_request(e.to_string()),
            other => {
                tracing::error!(error = %other, "object storage failed");
                Failure::new(ErrorCode::Internal, other.to_string())
            }
        }
    }
}

impl From<crate::datamanager::caches::CacheError> for Failure {
    fn from(e: crate::datamanager::caches::CacheError) -> Failure {
        use crate::datamanager::caches::CacheError;
        match e {
            e @ CacheError::BadKey { .. } => Failure::bad_request(e.to_string()),
            CacheError::Blob(b) => b.into(),
        }
    }
}

/// Rewrites the plain-text errors axum itself produces (bad JSON, wrong content type or
/// method, body too large) into a front end's JSON error body, so every client error of
/// that front end has one shape: `shape` builds the body from the status and axum's text
/// (at most 64 KiB of it); the status is kept. JSON answers and successes pass through.
/// Both routers use it: [`api_error_body`] for `/api/v1`, `server::etcd_error_body` for
/// the etcd port.
pub async fn json_errors(resp: Response, shape: fn(StatusCode, &str) -> Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let mut out = shape(status, String::from_utf8_lossy(&text).trim());
    *out.status_mut() = status;
    out
}

/// The `/api/v1` shape of an error axum produced: `{code, message, details}` with axum's
/// text as the message (the status's reason when there is none).
pub fn api_error_body(status: StatusCode, text: &str) -> Response {
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text.to_string()
    };
    Failure::new(code, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datamanager_timeout_is_a_504_with_the_timeout_code() {
        for outcome_unknown in [false, true] {
            let failure = Failure::from(DmError::Timeout {
                what: "updating run 0000000000000001".into(),
                outcome_unknown,
            });
            assert_eq!(failure.0.code, ErrorCode::Timeout);
            assert!(
                failure.0.message.contains("deadline exceeded"),
                "{}",
                failure.0.message
            );
            let response = failure.into_response();
            assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        }
        assert_eq!(status_of(ErrorCode::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            cairn_client::error::code_of_status(StatusCode::GATEWAY_TIMEOUT),
            ErrorCode::Timeout,
            "the client reads the status back as the same kind"
        );
    }

    use raft::KvError;
    use store::StoreError;

    /// The status `/api/v1` answers a failed store call with.
    fn status(e: KvError) -> StatusCode {
        Failure::from(DmError::Kv(e)).into_response().status()
    }

    /// One error of every `KvError` and `StoreError` variant.
    fn one_of_each() -> Vec<KvError> {
        let store = [
            StoreError::Compacted {
                requested: 3,
                compact_revision: 9,
            },
            StoreError::FutureRevision {
                requested: 9,
                current: 3,
            },
            StoreError::LeaseNotFound(7),
            StoreError::LeaseExists(7),
            StoreError::LeaseTtlTooSmall { ttl: 0, min: 1 },
            StoreError::LeaseTtlTooLarge {
                ttl: i64::MAX,
                max: 9,
            },
            StoreError::DuplicateKey("k".into()),
            StoreError::KeyNotFound,
            StoreError::InvalidArgument("bad".into()),
            StoreError::NotANumber { key: "k".into() },
            StoreError::TooLarge { size: 2, limit: 1 },
            StoreError::Storage("disk".into()),
            StoreError::NoSpace,
        ];
        let mut all: Vec<KvError> = store.into_iter().map(KvError::Store).collect();
        all.extend([
            KvError::Unavailable("no leader".into()),
            KvError::OutcomeUnknown("slow".into()),
            KvError::DeadlineExceeded("slow".into()),
            KvError::Cancelled,
            KvError::NotLeader { leader: None },
            KvError::UnknownNode(5),
            KvError::Membership("last voter".into()),
            KvError::Unauthorized,
            KvError::LockLost {
                key: "l".into(),
                token: 1,
            },
            KvError::Stopped("shutdown".into()),
            KvError::AlarmCause("over quota".into()),
        ]);
        all
    }

    #[test]
    fn a_compacted_or_future_revision_is_a_400_not_a_500() {
        for e in [
            StoreError::Compacted {
                requested: 3,
                compact_revision: 9,
            },
            StoreError::FutureRevision {
                requested: 9,
                current: 3,
            },
        ] {
            assert_eq!(status(KvError::Store(e)), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn a_refused_argument_is_a_400_and_an_oversized_request_a_413() {
        for e in [
            KvError::Store(StoreError::InvalidArgument("bad".into())),
            KvError::Store(StoreError::LeaseTtlTooSmall { ttl: 0, min: 1 }),
            KvError::Store(StoreError::LeaseTtlTooLarge {
                ttl: i64::MAX,
                max: 9,
            }),
            KvError::Store(StoreError::LeaseExists(7)),
            KvError::Store(StoreError::DuplicateKey("k".into())),
            KvError::Store(StoreError::KeyNotFound),
            KvError::Store(StoreError::NotANumber { key: "k".into() }),
            KvError::Membership("last voter".into()),
        ] {
            assert_eq!(status(e.clone()), StatusCode::BAD_REQUEST, "{e}");
        }
        let too_large = KvError::Store(StoreError::TooLarge { size: 2, limit: 1 });
        assert_eq!(status(too_large), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn no_leader_a_stopped_node_or_a_cancelled_request_is_a_503() {
        for e in [
            KvError::Unavailable("no leader".into()),
            KvError::NotLeader { leader: Some(2) },
            KvError::Stopped("shutdown".into()),
            KvError::Cancelled,
        ] {
            assert_eq!(status(e.clone()), StatusCode::SERVICE_UNAVAILABLE, "{e}");
        }
    }

    #[test]
    fn a_store_timeout_is_a_503_so_idempotent_calls_fail_over() {
        for e in [
            KvError::DeadlineExceeded("slow".into()),
            KvError::OutcomeUnknown("slow".into()),
        ] {
            assert_eq!(status(e.clone()), StatusCode::SERVICE_UNAVAILABLE, "{e}");
        }
    }

    #[test]
    fn missing_refused_and_lost_are_404_401_and_409() {
        let lease = KvError::Store(StoreError::LeaseNotFound(7));
        assert_eq!(status(lease), StatusCode::NOT_FOUND);
        assert_eq!(status(KvError::UnknownNode(5)), StatusCode::NOT_FOUND);
        assert_eq!(status(KvError::Unauthorized), StatusCode::UNAUTHORIZED);
        let lost = KvError::LockLost {
            key: "l".into(),
            token: 1,
        };
        assert_eq!(status(lost), StatusCode::CONFLICT);
    }

    #[test]
    fn only_a_storage_failure_is_internal() {
        for e in one_of_each() {
            let internal = matches!(e, KvError::Store(StoreError::Storage(_)));
            assert_eq!(
                status(e.clone()) == StatusCode::INTERNAL_SERVER_ERROR,
                internal,
                "{e}"
            );
        }
    }

    #[test]
    fn every_store_error_has_the_etcd_gateways_status_but_timeouts() {
        for e in one_of_each() {
            let etcd = super::super::etcd::EtcdError::from(e.clone()).into_response();
            if matches!(e, KvError::DeadlineExceeded(_) | KvError::OutcomeUnknown(_)) {
                // etcd's gateway says 504; /api/v1 says 503 so that its client fails over.
                assert_eq!(etcd.status(), StatusCode::GATEWAY_TIMEOUT);
                assert_eq!(status(e.clone()), StatusCode::SERVICE_UNAVAILABLE);
                continue;
            }
            assert_eq!(status(e.clone()), etcd.status(), "{e}");
        }
    }
}

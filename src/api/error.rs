//! The run-service API's errors: every failure becomes `{code, message, details}` with the
//! HTTP status of its code. The only place domain errors meet status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_client::{ApiError, ErrorCode};

use crate::datamanager::DmError;
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

fn kv_code(e: &raft::KvError) -> ErrorCode {
    use raft::KvError as K;
    match e {
        K::Unavailable(_) | K::NotLeader { .. } | K::Stopped(_) | K::DeadlineExceeded(_) => {
            ErrorCode::Unavailable
        }
        K::OutcomeUnknown(_) => ErrorCode::Unavailable,
        K::LockLost { .. } => ErrorCode::Conflict,
        K::Unauthorized => ErrorCode::Unauthorized,
        _ => ErrorCode::Internal,
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
}

//! The run-service API's error body, shared by server and client.

use serde::{Deserialize, Serialize};

/// Stable error kinds; the server maps each to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    Conflict,
    BadRequest,
    Unauthorized,
    Forbidden,
    Unavailable,
    /// The server gave up on the request at its deadline (a write may have been applied).
    Timeout,
    /// A request body over the endpoint's limit (413).
    TooLarge,
    /// A read from an offset the object does not have (416).
    RangeNotSatisfiable,
    /// Too many concurrent streams for this credential or for the server (429).
    TooManyRequests,
    Internal,
}

/// `{code, message, details}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

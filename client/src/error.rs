//! The run-service API's error body ([`ApiError`], shared by server and client) and what
//! a call of the client can fail with ([`ClientError`]), with the mapping from a reply's
//! status and body to the error.

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// Stable error kinds; the server maps each to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// What a call of [`RunClient`](crate::RunClient) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (decoded from its body, or made up from the
    /// status when the body is not the JSON error).
    #[error(transparent)]
    Api(ApiError),
    /// `append_log` at an offset other than the log's length; `expected` is that length.
    #[error("log offset mismatch: the log is {expected} bytes long")]
    LogOffset { expected: u64 },
    /// No answer: connection refused or dropped, timeout.
    #[error("transport: {0}")]
    Transport(String),
    /// A request body that could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// An answer that is not what the API promises.
    #[error("decode: {0}")]
    Decode(String),
    /// The client could not be set up: no server URL, a bad URL, a bad TLS setting.
    #[error("config: {0}")]
    Config(String),
}

impl ClientError {
    /// The API error kind, when the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            ClientError::LogOffset { .. } => Some(ErrorCode::Conflict),
            ClientError::Transport(_)
            | ClientError::Encode(_)
            | ClientError::Decode(_)
            | ClientError::Config(_) => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(ErrorCode::Conflict)
    }

    /// Worth trying again later: no answer, or the service said it is unavailable, timed
    /// out or failed internally.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Transport(_))
            || matches!(
                self.code(),
                Some(ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal)
            )
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Api(e)
    }
}

/// The error of a reqwest call, with its causes (reqwest's own message names only the URL).
pub(crate) fn transport(e: reqwest::Error) -> ClientError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ClientError::Transport(text)
}

/// The error kind a status stands for, when the body does not say.
pub fn code_of_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        503 => ErrorCode::Unavailable,
        504 => ErrorCode::Timeout,
        413 => ErrorCode::TooLarge,
        416 => ErrorCode::RangeNotSatisfiable,
        429 => ErrorCode::TooManyRequests,
        400..=499 => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}

/// Decodes an error reply: the JSON `{code, message, details}` body, or, for any other
/// body, an error of the status's kind whose message is the body's text.
pub fn api_error_of(status: StatusCode, body: &[u8]) -> ApiError {
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return e;
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_lowercase)
    } else {
        text
    };
    ApiError {
        code: code_of_status(status),
        message,
        details: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_body_is_decoded_as_sent() {
        let body = br#"{"code":"conflict","message":"run r1 changed","details":{"rev":3}}"#;
        let e = api_error_of(StatusCode::CONFLICT, body);
        assert_eq!(e.code, ErrorCode::Conflict);
        assert_eq!(e.message, "run r1 changed");
        assert_eq!(e.details, Some(serde_json::json!({"rev": 3})));
    }

    #[test]
    fn a_plain_error_body_takes_its_kind_from_the_status() {
        let cases = [
            (400, ErrorCode::BadRequest),
            (401, ErrorCode::Unauthorized),
            (403, ErrorCode::Forbidden),
            (404, ErrorCode::NotFound),
            (409, ErrorCode::Conflict),
            (413, ErrorCode::TooLarge),
            (416, ErrorCode::RangeNotSatisfiable),
            (422, ErrorCode::BadRequest),
            (429, ErrorCode::TooManyRequests),
            (500, ErrorCode::Internal),
            (502, ErrorCode::Internal),
            (503, ErrorCode::Unavailable),
        ];
        for (status, code) in cases {
            let status = StatusCode::from_u16(status).expect("a valid status");
            let e = api_error_of(status, b"  something broke\n");
            assert_eq!(e.code, code, "status {status}");
            assert_eq!(e.message, "something broke");
            assert_eq!(e.details, None);
        }
    }

    #[test]
    fn an_empty_error_body_gets_the_status_reason_as_message() {
        let e = api_error_of(StatusCode::NOT_FOUND, b"");
        assert_eq!(e.message, "not found");
        let e = api_error_of(StatusCode::SERVICE_UNAVAILABLE, b"{\"not\":\"an error\"}");
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert_eq!(e.message, "{\"not\":\"an error\"}");
    }
}

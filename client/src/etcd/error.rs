//! [`EtcdError`]: what a call of [`super::EtcdClient`] can fail with.

use super::wire::ErrorBody;

/// What went wrong talking to a store endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{endpoint}: {source}")]
    Http {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("{0}")]
    Remote(ErrorBody),
    #[error("bad response from {endpoint}: {message}")]
    Decode { endpoint: String, message: String },
    /// The writer a snapshot was streamed into failed.
    #[error("writing the snapshot: {0}")]
    Write(#[source] std::io::Error),
}

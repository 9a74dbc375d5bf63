//! The transport of [`RunClient`]: a request before it is bound to a node ([`Call`]), its
//! body ([`Payload`]), whether it may reach the server twice ([`Retry`]) and its deadline
//! ([`Deadline`]); [`RunClient::send`] moves from node to node as the call allows and
//! remembers the node that answered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RunClient;
use crate::error::{ClientError, api_error_of, transport};

/// Turns a non-2xx reply into its error.
pub(crate) async fn error_of(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    match resp.bytes().await {
        Ok(body) => ClientError::Api(api_error_of(status, &body)),
        Err(e) => ClientError::Api(api_error_of(status, e.to_string().as_bytes())),
    }
}

/// The reply if it is a success (2xx), its error otherwise.
pub(crate) async fn success(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(error_of(resp).await)
    }
}

pub(crate) async fn json_of<T: DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let resp = success(resp).await?;
    let body = resp.bytes().await.map_err(transport)?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A reply body as a stream of chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes, ClientError>>;

pub(crate) fn byte_stream(resp: reqwest::Response) -> ByteStream {
    resp.bytes_stream().map_err(transport).boxed()
}

/// A request body: whole bytes (can be resent to another node) or a stream (sent once).
pub struct Payload(pub(crate) PayloadKind);

pub(crate) enum PayloadKind {
    Whole(Bytes),
    Stream(reqwest::Body),
}

impl Payload {
    /// A body read from a stream as it is sent, e.g. a tar being written.
    pub fn stream<S>(stream: S) -> Payload
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        Payload(PayloadKind::Stream(reqwest::Body::wrap_stream(stream)))
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload(PayloadKind::Whole(b))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(PayloadKind::Whole(Bytes::from(v)))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(s: &'static [u8]) -> Self {
        Payload(PayloadKind::Whole(Bytes::from_static(s)))
    }
}

/// Whether a request may reach the server twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent: any other node may be asked after a transport error or a 503.
    Safe,
    /// Not idempotent: another node is asked only if the connection never opened.
    Unsent,
}

/// The overall deadline of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// The client's request timeout.
    Default,
    /// This long (long polls: their wait plus the request timeout).
    Within(Duration),
    /// None: the reply is a stream that may last for ever.
    Streamed,
}

/// One request, before it is bound to a base URL.
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path segments after the base (unescaped; each is percent-encoded on its own).
    pub(crate) path: Vec<String>,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<PayloadKind>,
    pub(crate) json: bool,
    pub(crate) retry: Retry,
    pub(crate) deadline: Deadline,
    pub(crate) auth: bool,
}

impl Call {
    pub(crate) fn api(method: Method, path: &[&str]) -> Call {
        let retry = if method == Method::POST {
            Retry::Unsent
        } else {
            Retry::Safe
        };
        Call {
            method,
            path: ["api", "v1"]
                .iter()
                .chain(path)
                .map(|s| s.to_string())
                .collect(),
            query: Vec::new(),
            body: None,
            json: false,
            retry,
            deadline: Deadline::Default,
            auth: true,
        }
    }

    pub(crate) fn get(path: &[&str]) -> Call {
        Call::api(Method::GET, path)
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl ToString) -> Call {
        self.query.push((key, value.to_string()));
        self
    }

    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Call, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Encode(e.to_string()))?;
        self.body = Some(PayloadKind::Whole(Bytes::from(bytes)));
        self.json = true;
        Ok(self)
    }

    pub(crate) fn payload(mut self, body: Payload) -> Call {
        self.body = Some(body.0);
        self
    }

    /// Marks a POST as idempotent (the executor endpoints, first-writer-wins caches).
    pub(crate) fn idempotent(mut self) -> Call {
        self.retry = Retry::Safe;
        self
    }

    pub(crate) fn streamed(mut self) -> Call {
        self.deadline = Deadline::Streamed;
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Call {
        self.deadline = Deadline::Within(timeout);
        self
    }
}

impl RunClient {
    fn url(&self, base: usize, call: &Call) -> Url {
        let mut url = self.inner.bases[base].clone();
        url.path_segments_mut()
            .expect("new() accepts only URLs that can be a base")
            .pop_if_empty()
            .extend(&call.path);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        url
    }

    /// Sends `call`, moving from node to node as its [`Retry`] allows. Returns the first
    /// reply that is not a retried 503, whatever its status.
    pub(crate) async fn send(&self, mut call: Call) -> Result<reqwest::Response, ClientError> {
        let n = self.inner.bases.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let (whole, mut stream) = match call.body.take() {
            Some(PayloadKind::Whole(b)) => (Some(b), None),
            Some(PayloadKind::Stream(s)) => (None, Some(s)),
            None => (None, None),
        };
        // A streamed body is consumed by the first attempt.
        let attempts = if stream.is_some() { 1 } else { n };
        let mut last = None;
        for attempt in 0..attempts {
            let base = (start + attempt) % n;
            let mut req = self
                .inner
                .http
                .request(call.method.clone(), self.url(base, &call));
            if call.auth
                && let Some(token) = self.token()
            {
                req = req.bearer_auth(token);
            }
            if let Some(body) = whole
                .clone()
                .map(reqwest::Body::from)
                .or_else(|| stream.take())
            {
                req = req.body(body);
            }
            if call.json {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            match call.deadline {
                Deadline::Default => req = req.timeout(self.inner.request_timeout),
                Deadline::Within(timeout) => req = req.timeout(timeout),
                Deadline::Streamed => {}
            }
            match req.send().await {
                Ok(resp)
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                        && call.retry == Retry::Safe
                        && attempt + 1 < attempts =>
                {
                    last = Some(error_of(resp).await);
                }
                Ok(resp) => {
                    if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
                        self.inner.preferred.store(base, Ordering::Relaxed);
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let again = match call.retry {
                        Retry::Safe => true,
                        Retry::Unsent => e.is_connect(),
                    };
                    let err = transport(e);
                    if !again {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Transport("no server answered".into())))
    }

    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        call: Call,
    ) -> Result<T, ClientError> {
        json_of(self.send(call).await?).await
    }

    /// Sends `call` and expects an empty success.
    pub(crate) async fn call_empty(&self, call: Call) -> Result<(), ClientError> {
        success(self.send(call).await?).await.map(drop)
    }

    pub(crate) async fn call_stream(&self, call: Call) -> Result<ByteStream, ClientError> {
        Ok(byte_stream(
            success(self.send(call.streamed()).await?).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_body_that_cannot_be_json_is_an_encode_error() {
        // JSON object keys must be strings.
        let body: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        let e = Call::get(&["runs"])
            .json(&body)
            .err()
            .expect("not encodable");
        assert!(matches!(e, ClientError::Encode(_)), "{e:?}");
    }
}

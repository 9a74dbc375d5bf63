//! etcd v3's JSON API as served by etcd 3.4's gRPC gateway, and [`EtcdClient`], a small
//! async client of it. The wire types (`wire.rs`: keys and values are base64, 64-bit
//! integers are strings, zero values are omitted, every response carries a header with
//! the revision) are shared by server and clients and re-exported here; `error.rs` holds
//! [`EtcdError`].

use std::time::Duration;

use serde::Serialize;

mod error;
mod wire;

pub use error::EtcdError;
pub use wire::*;

/// The timeout of requests whose reply streams for as long as it takes (watches,
/// snapshots): reqwest has no "none", so a year.
const STREAMED_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A minimal async client of the etcd JSON API, over one pooled connection set.
#[derive(Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
    token: Option<String>,
}

impl EtcdClient {
    /// `endpoints` are base URLs such as `http://127.0.0.1:2379`; requests go to the
    /// first one that answers.
    pub fn new(endpoints: Vec<String>, token: Option<String>, timeout: Duration) -> Self {
        Self::with_tls(endpoints, token, timeout, &crate::tls::ClientTls::default())
            .expect("a reqwest client with static settings builds")
    }

    /// Like [`EtcdClient::new`], trusting the CA of `tls` (and presenting its client
    /// certificate) on `https://` endpoints.
    pub fn with_tls(
        endpoints: Vec<String>,
        token: Option<String>,
        timeout: Duration,
        tls: &crate::tls::ClientTls,
    ) -> Result<Self, crate::tls::TlsConfigError> {
        let builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(5));
        let http = tls
            .apply(builder)?
            .build()
            .map_err(|e| crate::tls::TlsConfigError::Client(e.to_string()))?;
        let endpoints = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        Ok(Self {
            http,
            endpoints,
            token,
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn request(&self, endpoint: &str, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.post(format!("{endpoint}{path}"));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// POSTs `body` to `path` and decodes the answer, trying endpoints in order while the
    /// connection itself fails.
    pub async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, EtcdError> {
        let mut last = None;
        for ep in &self.endpoints {
            match self.request(ep, path).json(body).send().await {
                Ok(resp) => return decode(ep, resp).await,
                Err(e) if e.is_connect() => {
                    last = Some(EtcdError::Http {
                        endpoint: ep.clone(),
                        source: e,
                    })
                }
                Err(e) => {
                    return Err(EtcdError::Http {
                        endpoint: ep.clone(),
                        source: e,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| EtcdError::Decode {
            endpoint: String::new(),
            message: "no endpoints".into(),
        }))
    }

    pub async fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.call("/v3/kv/range", req).await
    }

    pub async fn put(&self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.call("/v3/kv/put", req).await
    }

    pub async fn delete_range(
        &self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.call("/v3/kv/deleterange", req).await
    }

    pub async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.call("/v3/kv/txn", req).await
    }

    pub async fn status(&self) -> Result<StatusResponse, EtcdError> {
        self.call("/v3/maintenance/status", &serde_json::json!({}))
            .await
    }

    pub async fn member_list(&self) -> Result<MemberListResponse, EtcdError> {
        self.call("/v3/cluster/member/list", &serde_json::json!({}))
            .await
    }

    /// Removes a member from the cluster; the answer lists the members left.
    pub async fn member_remove(
        &self,
        req: &MemberRemoveRequest,
    ) -> Result<MemberListResponse, EtcdError> {
        self.call("/v3/cluster/member/remove", req).await
    }

    /// Makes a learner a voter (`/v3/cluster/member/promote`, etcd's MemberPromote).
    pub async fn member_promote(
        &self,
        req: &MemberRemoveRequest,
    ) -> Result<MemberListResponse, EtcdError> {
        self.call("/v3/cluster/member/promote", req).await
    }

    /// Makes a voter a learner (`/v3/cluster/member/demote`: Cairn's, etcd has none).
    pub async fn member_demote(
        &self,
        req: &MemberRemoveRequest,
    ) -> Result<MemberListResponse, EtcdError> {
        self.call("/v3/cluster/member/demote", req).await
    }

    /// Lists, raises or clears alarms (`/v3/maintenance/alarm`).
    pub async fn alarm(&self, req: &AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        self.call("/v3/maintenance/alarm", req).await
    }

    /// Streams a backup of the first endpoint's store (`/v3/maintenance/snapshot`) into
    /// `out` as it arrives, without a deadline; returns the number of bytes written.
    pub async fn snapshot<W>(&self, out: &mut W) -> Result<u64, EtcdError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;

        let ep = self.endpoints.first().cloned().unwrap_or_default();
        let http = |source| EtcdError::Http {
            endpoint: ep.clone(),
            source,
        };
        let mut resp = self
            .request(&ep, "/v3/maintenance/snapshot")
            .json(&serde_json::json!({}))
            .timeout(STREAMED_TIMEOUT)
            .send()
            .await
            .map_err(http)?;
        if !resp.status().is_success() {
            return Err(error_of(&ep, resp).await);
        }
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            out.write_all(&chunk).await.map_err(EtcdError::Write)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(EtcdError::Write)?;
        Ok(written)
    }

    /// Opens a watch stream; each item is one gateway message.
    pub async fn watch(&self, req: &WatchCreateRequest) -> Result<WatchStream, EtcdError> {
        let ep = self.endpoints.first().cloned().unwrap_or_default();
        let body = WatchRequest {
            create_request: Some(req.clone()),
        };
        let mut r = self
            .http
            .post(format!("{ep}/v3/watch"))
            .json(&body)
            .timeout(STREAMED_TIMEOUT);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.map_err(|e| EtcdError::Http {
            endpoint: ep.clone(),
            source: e,
        })?;
        if !resp.status().is_success() {
            return Err(error_of(&ep, resp).await);
        }
        Ok(WatchStream {
            resp,
            buf: Vec::new(),
            endpoint: ep,
        })
    }
}

async fn error_of(ep: &str, resp: reqwest::Response) -> EtcdError {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) if !b.message.is_empty() || !b.error.is_empty() => EtcdError::Remote(b),
        _ => EtcdError::Decode {
            endpoint: ep.to_string(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        },
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    ep: &str,
    resp: reqwest::Response,
) -> Result<T, EtcdError> {
    if !resp.status().is_success() {
        return Err(error_of(ep, resp).await);
    }
    let bytes = resp.bytes().await.map_err(|e| EtcdError::Http {
        endpoint: ep.to_string(),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode {
        endpoint: ep.to_string(),
        message: e.to_string(),
    })
}

/// A streaming watch: newline-delimited `{"result": WatchResponse}` messages.
pub struct WatchStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    endpoint: String,
}

impl WatchStream {
    /// The next message, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, EtcdError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                let item: StreamItem<WatchResponse> =
                    serde_json::from_slice(line).map_err(|e| EtcdError::Decode {
                        endpoint: self.endpoint.clone(),
                        message: e.to_string(),
                    })?;
                if let Some(err) = item.error {
                    return Err(EtcdError::Remote(err));
                }
                return Ok(item.result);
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(EtcdError::Http {
                        endpoint: self.endpoint.clone(),
                        source: e,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> EtcdClient {
        EtcdClient::new(
            vec![format!("{url}/")],
            Some("t0ken".into()),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn a_snapshot_streams_into_the_writer() {
        use crate::http::test_server::{reply, serve};

        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let server = serve(move |_, _| reply(200, "application/octet-stream", &sent)).await;
        let mut out = Vec::new();
        let n = client(&server.url)
            .snapshot(&mut out)
            .await
            .expect("a snapshot");
        assert_eq!(n, body.len() as u64);
        assert_eq!(out, body);
        let req = &server.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.path(), "/v3/maintenance/snapshot");
        assert_eq!(req.header("authorization"), Some("Bearer t0ken"));
    }

    #[tokio::test]
    async fn a_refused_snapshot_is_the_gateway_error() {
        use crate::http::test_server::{json, serve};

        let server = serve(|_, _| {
            json(
                401,
                r#"{"error":"bad token","code":16,"message":"bad token"}"#,
            )
        })
        .await;
        let mut out = Vec::new();
        let e = client(&server.url)
            .snapshot(&mut out)
            .await
            .expect_err("refused");
        assert!(matches!(&e, EtcdError::Remote(b) if b.code == 16), "{e:?}");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn member_remove_posts_the_id_as_a_string() {
        use crate::http::test_server::{json, serve};

        let server = serve(|_, _| json(200, r#"{"header":{},"members":[]}"#)).await;
        let left = client(&server.url)
            .member_remove(&MemberRemoveRequest { id: I64(0x1f) })
            .await
            .expect("removed");
        assert!(left.members.is_empty());
        let req = &server.requests()[0];
        assert_eq!(req.path(), "/v3/cluster/member/remove");
        assert_eq!(req.body, br#"{"ID":"31"}"#);
    }
}

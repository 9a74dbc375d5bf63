//! A raw-TCP HTTP/1.1 server for tests: it records each request and answers it with the
//! bytes its responder returns, one request per connection.
use std::sync::{Arc, Mutex};

use reqwest::Url;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The decoded query pairs.
    pub fn query(&self) -> Vec<(String, String)> {
        let url = Url::parse(&format!("http://test{}", self.target)).expect("a valid target");
        url.query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }

    pub fn query_value(&self, key: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// What the server does with a request.
pub(crate) enum Reply {
    /// Writes these bytes, then closes the connection.
    Raw(Vec<u8>),
    /// Closes the connection without a word.
    Hangup,
}

/// A complete response with a body and `Content-Length`.
pub(crate) fn reply(status: u16, content_type: &str, body: &[u8]) -> Reply {
    let mut raw = format!(
        "HTTP/1.1 {status} Test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    Reply::Raw(raw)
}

pub(crate) fn json(status: u16, body: &str) -> Reply {
    reply(status, "application/json", body.as_bytes())
}

/// A response without a length: its body ends when the connection closes.
pub(crate) fn until_close(status: u16, headers: &str, body: &[u8]) -> Reply {
    let mut raw =
        format!("HTTP/1.1 {status} Test\r\n{headers}Connection: close\r\n\r\n").into_bytes();
    raw.extend_from_slice(body);
    Reply::Raw(raw)
}

pub(crate) struct TestServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

/// Serves on 127.0.0.1:0; `respond` gets each request and its index.
pub(crate) async fn serve<F>(respond: F) -> TestServer
where
    F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (read, mut write) = socket.into_split();
            let Some(req) = read_request(BufReader::new(read)).await else {
                continue;
            };
            let index = {
                let mut seen = seen.lock().expect("not poisoned");
                seen.push(req.clone());
                seen.len() - 1
            };
            if let Reply::Raw(raw) = respond(&req, index) {
                let _ = write.write_all(&raw).await;
            }
            let _ = write.shutdown().await;
        }
    });
    TestServer { url, requests }
}

/// A URL on which connections are refused.
pub(crate) async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    drop(listener);
    url
}

async fn read_request<R: tokio::io::AsyncRead + Unpin>(mut r: BufReader<R>) -> Option<Recorded> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut req = Recorded {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = req.header("content-length") {
        let mut body = vec![0; len.parse().ok()?];
        r.read_exact(&mut body).await.ok()?;
        req.body = body;
    } else if req.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(req)
}

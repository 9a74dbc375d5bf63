//! A local S3-compatible server for the tests of the `s3` feature: moto's server (PyPI
//! `moto`), started by the test on a free loopback port and killed when its handle drops,
//! a bucket per test, and the `s3://` URL and options that open it ([`Blobs::open_with`]).
//!
//! The server is found at `$CAIRN_MOTO_SERVER`, else as `moto_server` on the `PATH`
//! (`.ci/run` installs it; README.md says how to by hand). Without it the tests fail, naming
//! what to install: they never pass by skipping. moto keeps objects in memory, supports
//! what [`Blobs`] uses (conditional puts, multipart uploads and conditional multipart
//! completion, ranged gets, prefix listings, batch deletes) but checks a conditional put
//! and then writes, so tests of racing writers are not run against it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn::datamanager::blobs::Blobs;

/// The variable naming moto's `moto_server` executable.
pub const MOTO_SERVER_ENV: &str = "CAIRN_MOTO_SERVER";

/// The version `.ci/run` installs (the tests are written against it).
pub const MOTO_VERSION: &str = "5.2.5";

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One moto server process; killed when dropped.
pub struct S3Server {
    addr: SocketAddr,
    child: Child,
}

impl S3Server {
    /// Starts a server on a free loopback port (it binds port 0 and prints the one it got).
    /// Panics, saying what to install, when there is no server to start.
    pub fn start() -> S3Server {
        let program = std::env::var(MOTO_SERVER_ENV).unwrap_or_else(|_| "moto_server".into());
        let mut child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", missing_server(&program, &e.to_string())));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Drains the server's request log for its whole life (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_address(&line) {
                        return S3Server { addr, child };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let why = format!("exit {status:?}, said: {}", seen.join(" | "));
                    panic!("{}", missing_server(&program, &why));
                }
            }
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket with a name no other test of this process uses.
    pub async fn bucket(&self) -> S3Bucket {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "cairn-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = format!("{}/{name}", self.endpoint());
        let response = reqwest::Client::new()
            .put(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {url}: {e}"));
        assert!(
            response.status().is_success(),
            "create bucket {url}: {}",
            response.status()
        );
        S3Bucket {
            name,
            endpoint: self.endpoint(),
        }
    }

    /// The multipart uploads begun and neither completed nor aborted in `bucket`, as the
    /// server lists them (its raw XML answer's `<Key>`s).
    pub async fn pending_uploads(&self, bucket: &S3Bucket) -> Vec<String> {
        let url = format!("{}/{}?uploads", self.endpoint(), bucket.name);
        let body = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("list uploads {url}: {e}"))
            .text()
            .await
            .expect("list uploads body");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's `Running on http://127.0.0.1:PORT` line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = line.split("Running on http://").nth(1)?;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().ok()
}

/// Why the tests cannot run, and how to make them.
fn missing_server(program: &str, why: &str) -> String {
    format!(
        "the s3 tests need moto's S3 server and could not start {program:?} ({why}). \
         Install it with `pip install 'moto[s3]=={MOTO_VERSION}' flask flask-cors` (moto_server \
         on the PATH) or point {MOTO_SERVER_ENV} at its moto_server; .ci/run installs it."
    )
}

/// How long a client waits before it calls the server failed.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Each request's timeout.
    pub request: Duration,
    /// Retries of a failed request.
    pub retries: usize,
    /// No new attempt after this long.
    pub retry_for: Duration,
}

impl Patience {
    /// For tests that expect the server to answer: generous, but not minutes.
    pub const NORMAL: Patience = Patience {
        request: Duration::from_secs(20),
        retries: 3,
        retry_for: Duration::from_secs(20),
    };

    /// For tests that break the server on purpose: fail fast.
    pub const SHORT: Patience = Patience {
        request: Duration::from_secs(1),
        retries: 1,
        retry_for: Duration::from_secs(2),
    };

    /// The longest a failing operation of one request may take with this patience: every
    /// attempt timing out, with the backoff between them (at most 15 s in object_store,
    /// far less for the first retries).
    pub fn worst_case(&self) -> Duration {
        self.request * (self.retries as u32 + 1) + self.retry_for + Duration::from_secs(2)
    }
}

/// One bucket on an [`S3Server`].
#[derive(Clone, Debug)]
pub struct S3Bucket {
    pub name: String,
    endpoint: String,
}

impl S3Bucket {
    /// `s3://bucket/prefix` (just the bucket when `prefix` is empty).
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("s3://{}", self.name)
        } else {
            format!("s3://{}/{prefix}", self.name)
        }
    }

    /// The options of [`Blobs::open_with`] that reach this bucket at `endpoint` (the
    /// server's, or a proxy's in front of it) with `patience`.
    pub fn options(&self, endpoint: &str, patience: Patience) -> Vec<(String, String)> {
        [
            ("aws_endpoint", endpoint.to_owned()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
            ("aws_access_key_id", "cairn-test".to_owned()),
            ("aws_secret_access_key", "cairn-test-secret".to_owned()),
            ("timeout", format!("{}ms", patience.request.as_millis())),
            ("connect_timeout", "2s".to_owned()),
            ("max_retries", patience.retries.to_string()),
            (
                "retry_timeout",
                format!("{}ms", patience.retry_for.as_millis()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// This bucket under `prefix`, straight to the server, with normal patience.
    pub fn blobs(&self, prefix: &str) -> Blobs {
        self.blobs_via(&self.endpoint, prefix, Patience::NORMAL)
    }

    /// This bucket under `prefix`, through `endpoint`, with `patience`.
    pub fn blobs_via(&self, endpoint: &str, prefix: &str, patience: Patience) -> Blobs {
        Blobs::open_with(&self.url(prefix), self.options(endpoint, patience))
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url(prefix)))
    }
}

//! The transport of [`RunClient`]: a request before it is bound to a node ([`Call`]), its
//! body ([`Payload`]), whether it may reach the server twice ([`Retry`]) and its deadline
//! ([`Deadline`]); [`RunClient::send`] moves from node to node as the call allows and
//! remembers the node that answered. A call that is safe to repeat goes round the nodes
//! again, with a growing pause, while the cluster is there but cannot answer yet (a 503,
//! a timeout, a dropped connection: an election after a leader's death or freeze), for
//! the client's failover window; when every node refuses connections it fails at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RunClient;
use crate::error::{ClientError, api_error_of, transport};

/// How long [`RunClient::answering_node`] waits for each node's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause before the second round of the nodes; it doubles up to [`MAX_ROUND_PAUSE`].
const FIRST_ROUND_PAUSE: Duration = Duration::from_millis(200);
const MAX_ROUND_PAUSE: Duration = Duration::from_secs(2);

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

/// Whether a reply says the node cannot serve the request now (no leader, a forward to a
/// frozen leader timed out, the request's deadline passed in an election): 503 or 504.
fn not_now(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT
}

/// Whether a request may reach the server twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent: any other node may be asked after a transport error, a 503 or a 504.
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
    pub(crate) headers: Vec<(&'static str, String)>,
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
            headers: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl ToString) -> Call {
        self.headers.push((name, value.to_string()));
        self
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
    /// reply that is not a retried 503 or 504, whatever its status.
    pub(crate) async fn send(&self, mut call: Call) -> Result<reqwest::Response, ClientError> {
        let n = self.inner.bases.len();
        let mut start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let (whole, mut stream) = match call.body.take() {
            Some(PayloadKind::Whole(b)) => (Some(b), None),
            Some(PayloadKind::Stream(s)) => (None, Some(s)),
            None => (None, None),
        };
        if stream.is_some() && n > 1 {
            // A stream is sent once: to a node that answers now, not to one that is down.
            start = self.answering_node(start).await;
        }
        // A streamed body is consumed by the first attempt; a call that is not safe to
        // repeat gets one round.
        let rounds_allowed = stream.is_none() && call.retry == Retry::Safe;
        let window_end = tokio::time::Instant::now() + self.inner.failover_window;
        let mut pause = FIRST_ROUND_PAUSE;
        loop {
            let attempts = if stream.is_some() { 1 } else { n };
            let mut last = None;
            // Whether some node was reached this round (a reply or a broken exchange),
            // rather than every one refusing the connection.
            let mut reached = false;
            for attempt in 0..attempts {
                let base = (start + attempt) % n;
                let req = self.request(&call, base, whole.clone(), stream.take());
                let final_attempt = attempt + 1 == attempts
                    && !(rounds_allowed && tokio::time::Instant::now() < window_end);
                match req.send().await {
                    Ok(resp)
                        if not_now(resp.status())
                            && call.retry == Retry::Safe
                            && !final_attempt =>
                    {
                        reached = true;
                        last = Some(error_of(resp).await);
                    }
                    Ok(resp) => {
                        if !not_now(resp.status()) {
                            self.inner.preferred.store(base, Ordering::Relaxed);
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        let refused = e.is_connect();
                        // A connection that timed out may be a frozen node's.
                        reached |= !refused || e.is_timeout();
                        let again = match call.retry {
                            Retry::Safe => true,
                            Retry::Unsent => refused,
                        };
                        let err = transport(e);
                        if !again {
                            return Err(err);
                        }
                        last = Some(err);
                    }
                }
            }
            let err = last.unwrap_or_else(|| ClientError::Transport("no server answered".into()));
            let now = tokio::time::Instant::now();
            if !rounds_allowed || !reached || now + pause > window_end {
                return Err(err);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_ROUND_PAUSE);
        }
    }

    /// One attempt of `call` at node `base`.
    fn request(
        &self,
        call: &Call,
        base: usize,
        whole: Option<Bytes>,
        stream: Option<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), self.url(base, call));
        if call.auth
            && let Some(token) = self.token()
        {
            req = req.bearer_auth(token);
        }
        for (name, value) in &call.headers {
            req = req.header(*name, value);
        }
        if let Some(body) = whole.map(reqwest::Body::from).or(stream) {
            req = req.body(body);
        }
        if call.json {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        match call.deadline {
            Deadline::Default => req.timeout(self.inner.request_timeout),
            Deadline::Within(timeout) => req.timeout(timeout),
            Deadline::Streamed => req,
        }
    }

    /// The first node from `start` on that answers an HTTP request at all (any status), so
    /// a body that can be sent only once goes to a live node; `start` when none answers
    /// (the send then fails with that node's error).
    async fn answering_node(&self, start: usize) -> usize {
        let n = self.inner.bases.len();
        for attempt in 0..n {
            let base = (start + attempt) % n;
            let probe = self
                .inner
                .http
                .head(self.inner.bases[base].clone())
                .timeout(PROBE_TIMEOUT)
                .send()
                .await;
            if probe.is_ok() {
                return base;
            }
        }
        start
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
    use std::collections::{BTreeMap, HashMap};

    use super::super::test_server::{Reply, json, refused_url, reply, serve};
    use super::*;
    use crate::api::{
        ConfigFile, CreateRunRequest, IDEMPOTENCY_KEY_HEADER, ListRunsQuery, idempotency_key_error,
    };
    use crate::error::ErrorCode;
    use crate::executor::Executor;

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

    fn client(urls: &[&str]) -> RunClient {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        RunClient::new(&urls, Some("s3cret".into())).expect("valid URLs")
    }

    fn create_request() -> CreateRunRequest {
        CreateRunRequest {
            group: "/project/p1/branch/main".into(),
            config: ConfigFile {
                path: ".agola/config.yml".into(),
                content: "runs: []".into(),
            },
            reference: Default::default(),
            source: None,
            variables: BTreeMap::new(),
            environment: BTreeMap::new(),
            cache_group: None,
            annotations: BTreeMap::new(),
            tasks: Vec::new(),
            run_name: None,
            ..Default::default()
        }
    }

    fn executor(id: &str) -> Executor {
        Executor {
            id: id.into(),
            ..Executor::default()
        }
    }

    const HEARTBEAT: &str =
        r#"{"lease_ttl_secs":30,"executor":{"id":"e1","archs":[],"labels":{}}}"#;

    #[tokio::test]
    async fn api_calls_carry_the_bearer_token_and_health_probes_do_not() {
        let server = serve(|req, _| match req.path() {
            "/healthz" => reply(200, "text/plain", b"ok"),
            _ => json(
                200,
                r#"{"node_id":1,"leader_id":1,"scheduler_active":true,"revision":9}"#,
            ),
        })
        .await;
        let c = client(&[&server.url]);
        let info = c.cluster().await.expect("cluster info");
        assert_eq!(info.revision, 9);
        c.healthz().await.expect("healthy");
        let reqs = server.requests();
        assert_eq!(reqs[0].path(), "/api/v1/cluster");
        assert_eq!(reqs[0].header("authorization"), Some("Bearer s3cret"));
        assert_eq!(reqs[1].path(), "/healthz");
        assert_eq!(reqs[1].header("authorization"), None);
    }

    #[tokio::test]
    async fn a_json_error_reply_becomes_the_same_api_error() {
        let server =
            serve(|_, _| json(404, r#"{"code":"not_found","message":"run r9 not found"}"#)).await;
        let e = client(&[&server.url])
            .run("r9")
            .await
            .expect_err("no such run");
        assert!(e.is_not_found());
        assert!(!e.is_conflict());
        assert_eq!(e.to_string(), "NotFound: run r9 not found");
    }

    #[tokio::test]
    async fn a_plain_text_error_reply_keeps_its_text() {
        let server = serve(|_, _| reply(401, "text/plain", b"missing token")).await;
        let e = client(&[&server.url])
            .executors()
            .await
            .expect_err("refused");
        match e {
            ClientError::Api(e) => {
                assert_eq!(e.code, ErrorCode::Unauthorized);
                assert_eq!(e.message, "missing token");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_fails_over_to_the_next_url() {
        let down = refused_url().await;
        let server = serve(|_, _| json(200, r#"{"executors":[]}"#)).await;
        let c = client(&[&down, &server.url]);
        let resp = c.executors().await.expect("the second node answers");
        assert!(resp.executors.is_empty());
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_503_fails_over_and_the_answering_node_is_remembered() {
        let busy = serve(|_, _| json(503, r#"{"code":"unavailable","message":"no leader"}"#)).await;
        let good = serve(|_, _| json(200, r#"{"executors":[]}"#)).await;
        let c = client(&[&busy.url, &good.url]);
        c.executors().await.expect("the second node answers");
        c.clone()
            .executors()
            .await
            .expect("the second node answers again");
        assert_eq!(busy.requests().len(), 1, "the busy node is asked only once");
        assert_eq!(good.requests().len(), 2);
    }

    #[tokio::test]
    async fn when_every_node_is_unavailable_the_last_error_is_returned() {
        let busy = serve(|_, _| json(503, r#"{"code":"unavailable","message":"no leader"}"#)).await;
        let down = refused_url().await;
        let e = client(&[&down, &busy.url])
            .with_failover_window(Duration::from_millis(500))
            .executors()
            .await
            .expect_err("nobody serves");
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn create_run_goes_to_the_next_url_when_the_first_refuses_connections() {
        let down = refused_url().await;
        let server = serve(|_, _| json(201, r#"{"runs":[]}"#)).await;
        let resp = client(&[&down, &server.url])
            .create_run(&create_request())
            .await
            .expect("created on the second node");
        assert!(resp.runs.is_empty());
        let reqs = server.requests();
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path(), "/api/v1/runs");
        assert_eq!(reqs[0].header("content-type"), Some("application/json"));
        let sent: CreateRunRequest = serde_json::from_slice(&reqs[0].body).expect("json body");
        assert_eq!(sent, create_request());
    }

    /// Issue 14: a create whose answer was lost (the node was killed mid-request) failed
    /// the client although two nodes were up; it is now sent again under the same key.
    #[tokio::test]
    async fn create_run_is_sent_again_under_the_same_key_after_the_connection_drops() {
        let flaky = serve(|_, _| Reply::Hangup).await;
        let other = serve(|_, _| json(201, r#"{"runs":[]}"#)).await;
        client(&[&flaky.url, &other.url])
            .create_run(&create_request())
            .await
            .expect("created on the second node");
        let first = flaky.requests()[0].clone();
        let second = other.requests()[0].clone();
        let key = first.header(IDEMPOTENCY_KEY_HEADER).expect("a key");
        assert!(idempotency_key_error(key).is_none(), "{key:?}");
        assert_eq!(second.header(IDEMPOTENCY_KEY_HEADER), Some(key));
        assert_eq!(first.body, second.body);
    }

    #[tokio::test]
    async fn each_create_has_its_own_key_unless_the_caller_gives_one() {
        let server = serve(|_, _| json(201, r#"{"runs":[]}"#)).await;
        let c = client(&[&server.url]);
        c.create_run(&create_request()).await.expect("created");
        c.create_run(&create_request()).await.expect("created");
        c.create_run_with_key(&create_request(), "deploy-42")
            .await
            .expect("created");
        let keys: Vec<String> = server
            .requests()
            .iter()
            .map(|r| r.header(IDEMPOTENCY_KEY_HEADER).expect("a key").to_string())
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[2], "deploy-42");
    }

    /// A leader frozen or killed: every node answers 503 until the election ends. A call
    /// that is safe to repeat goes round the nodes again instead of failing.
    #[tokio::test]
    async fn a_safe_call_goes_round_the_nodes_again_until_the_cluster_answers() {
        let busy = serve(|_, _| json(503, r#"{"code":"unavailable","message":"no leader"}"#)).await;
        let electing = serve(|_, i| {
            if i < 2 {
                json(503, r#"{"code":"unavailable","message":"no leader"}"#)
            } else {
                json(201, r#"{"runs":[]}"#)
            }
        })
        .await;
        client(&[&busy.url, &electing.url])
            .create_run(&create_request())
            .await
            .expect("created in the third round");
        assert_eq!(electing.requests().len(), 3);
        assert_eq!(busy.requests().len(), 3);
    }

    #[tokio::test]
    async fn a_zero_failover_window_asks_each_node_once() {
        let busy = serve(|_, _| json(503, r#"{"code":"unavailable","message":"no leader"}"#)).await;
        let e = client(&[&busy.url])
            .with_failover_window(Duration::ZERO)
            .executors()
            .await
            .expect_err("unavailable");
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert_eq!(busy.requests().len(), 1);
    }

    /// Nothing listens anywhere: a wrong URL or a stopped cluster fails at once rather
    /// than after the window (an hour here: the test would hang).
    #[tokio::test]
    async fn when_every_node_refuses_connections_the_call_fails_after_one_round() {
        let (a, b) = (refused_url().await, refused_url().await);
        let e = client(&[&a, &b])
            .with_failover_window(Duration::from_secs(3600))
            .run("r1")
            .await
            .expect_err("nobody listens");
        assert!(matches!(e, ClientError::Transport(_)), "{e:?}");
    }

    #[tokio::test]
    async fn restart_run_is_not_resent_after_a_503() {
        let busy = serve(|_, _| json(503, r#"{"code":"unavailable","message":"no leader"}"#)).await;
        let other = serve(|_, _| json(200, r#"{}"#)).await;
        let e = client(&[&busy.url, &other.url])
            .restart_run("r1", &crate::api::RestartRunRequest::default())
            .await
            .expect_err("unavailable");
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert!(other.requests().is_empty());
    }

    #[tokio::test]
    async fn heartbeats_are_idempotent_and_fail_over_on_503() {
        let busy = serve(|_, _| json(503, r#"{"code":"unavailable","message":"no leader"}"#)).await;
        let good = serve(|_, _| json(200, HEARTBEAT)).await;
        let resp = client(&[&busy.url, &good.url])
            .heartbeat(&executor("e1"))
            .await
            .expect("registered on the second node");
        assert_eq!(resp.lease_ttl_secs, 30);
        let reqs = good.requests();
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path(), "/api/v1/executors/e1");
    }

    /// Issue 14: `cairn run --server URL1,URL2` with URL1 down uploaded its source to URL1
    /// only (a stream is sent once) and failed; now it goes to the node that answers.
    #[tokio::test]
    async fn a_streamed_upload_goes_to_a_node_that_answers_when_the_first_is_down() {
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let url = format!("http://{}", l.local_addr().expect("addr"));
            drop(l);
            url
        };
        let good = serve(|_, _| json(201, r#"{"source":{"type":"snapshot","object":"s1"}}"#)).await;
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"tar"))];
        let body = Payload::stream(futures::stream::iter(chunks));
        let created = client(&[&down, &good.url]).upload_source(body).await;
        assert!(created.is_ok(), "{created:?}");
        let reqs: Vec<_> = good
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path(), "/api/v1/sources");
        assert_eq!(reqs[0].body, b"tar");
    }

    #[tokio::test]
    async fn an_empty_list_query_sends_no_query_string() {
        let server = serve(|_, _| json(200, r#"{"runs":[]}"#)).await;
        client(&[&server.url])
            .list_runs(&ListRunsQuery::default())
            .await
            .expect("a page");
        assert_eq!(server.requests()[0].target, "/api/v1/runs");
    }

    #[tokio::test]
    async fn path_segments_are_escaped_one_by_one() {
        let server = serve(|_, _| reply(201, "text/plain", b"")).await;
        let created = client(&[&server.url])
            .upload_cache("linux/node modules?", Bytes::from_static(b"tar"))
            .await
            .expect("stored");
        assert!(created);
        let req = &server.requests()[0];
        assert_eq!(req.target, "/api/v1/caches/linux%2Fnode%20modules%3F");
        assert_eq!(req.body, b"tar");
    }

    #[tokio::test]
    async fn an_archive_uploads_from_a_stream() {
        let server = serve(|_, _| reply(204, "text/plain", b"")).await;
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        client(&[&server.url])
            .upload_archive(
                "e1",
                "t1",
                3,
                Payload::stream(futures::stream::iter(chunks)),
            )
            .await
            .expect("uploaded");
        let req = &server.requests()[0];
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path(), "/api/v1/executors/e1/tasks/t1/archives/3");
        assert_eq!(req.body, b"hello world");
    }
}

//! [`RunClient`], the async HTTP client of the run-service API (`<base>/api/v1`, plus
//! `/healthz` and `/readyz`): one method per endpoint. Its error type is
//! [`ClientError`].
//!
//! A client knows several base URLs (the nodes of a cluster). A request that is safe to
//! repeat (GET, HEAD, PUT, DELETE, the idempotent executor POSTs, and creating runs, which
//! carries an idempotency key) moves on to the next URL after a transport error or a 503,
//! and goes round the nodes again while the cluster is there but cannot answer (for the
//! failover window, 30 s by default); one that is not (restarting a run, uploading a
//! source) moves on only when the connection could not be opened, so it is never sent
//! twice. The URL that last answered is tried first next time. Streaming request bodies
//! can be sent only once, so they go to one URL that answers. That transport lives in
//! `call.rs` ([`Payload`] is its request body).
//!
//! It owns the wire format (paths, query strings, status codes, error bodies); the bodies
//! themselves are the types of [`crate::api`] and friends. The resumable streams add
//! their endpoints to [`RunClient`] next to their state: logs in [`crate::logs`], run
//! events in [`crate::events`] (SSE framing in [`crate::sse`]).

mod call;
#[cfg(test)]
pub(crate) mod test_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};

pub use call::{ByteStream, Payload};
pub(crate) use call::{Call, success};

use crate::api::{
    CreateRunRequest, CreateRunResponse, ExecutorTasksResponse, ExecutorsResponse,
    HeartbeatResponse, ListRunsQuery, LogStep, NodeInfo, RestartRunRequest, RunAction,
    RunActionRequest, RunResponse, RunsPage, SourceUploadResponse, TaskActionRequest,
};
use crate::error::{ClientError, ErrorCode, transport};
use crate::executor::{AssignedTask, Executor, ExecutorTaskStatus};
use crate::runconfig::SourceRef;
use call::{Retry, byte_stream};

/// How long to wait for a TCP (and TLS) connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default overall deadline of a request whose reply is not a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long, by default, a request that is safe to repeat goes round the nodes while the
/// cluster cannot answer (an election takes a few seconds; a frozen leader is voted out
/// after its election timeout).
const FAILOVER_WINDOW: Duration = Duration::from_secs(30);

struct Inner {
    http: reqwest::Client,
    bases: Vec<Url>,
    /// Shared by the clones made with another timeout, so that [`RunClient::set_token`]
    /// (an executor swapping its registration token for its own credential) reaches them.
    token: Arc<std::sync::RwLock<Option<String>>>,
    /// Index into `bases` of the node that answered last.
    preferred: AtomicUsize,
    request_timeout: Duration,
    /// How long a call that is safe to repeat goes round the nodes again (see `call.rs`).
    failover_window: Duration,
}

/// The run-service API client. Cheap to clone; clones share connections and the
/// preferred node.
#[derive(Clone)]
pub struct RunClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RunClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunClient")
            .field("bases", &self.inner.bases)
            .finish_non_exhaustive()
    }
}

impl RunClient {
    /// A client of the nodes at `urls` (`http://host:port` or with a path prefix),
    /// sending `token` as a bearer token.
    pub fn new(urls: &[String], token: Option<String>) -> Result<RunClient, ClientError> {
        RunClient::with_tls(urls, token, &crate::tls::ClientTls::default())
    }

    /// Like [`RunClient::new`], trusting the CA of `tls` (and presenting its client
    /// certificate) on `https://` URLs.
    pub fn with_tls(
        urls: &[String],
        token: Option<String>,
        tls: &crate::tls::ClientTls,
    ) -> Result<RunClient, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::Config("no server URL given".into()));
        }
        let bases = urls
            .iter()
            .map(|u| parse_base(u))
            .collect::<Result<Vec<_>, _>>()?;
        // Idle connections are dropped before a server's default idle timeout (10 s).
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(5));
        let http = tls
            .apply(builder)
            .map_err(|e| ClientError::Config(e.to_string()))?
            .build()
            .map_err(transport)?;
        Ok(RunClient {
            inner: Arc::new(Inner {
                http,
                bases,
                token: Arc::new(std::sync::RwLock::new(token)),
                preferred: AtomicUsize::new(0),
                request_timeout: REQUEST_TIMEOUT,
                failover_window: FAILOVER_WINDOW,
            }),
        })
    }

    /// The same client with another overall deadline for requests whose reply is not a
    /// stream (long polls get theirs on top of the wait).
    pub fn with_request_timeout(self, timeout: Duration) -> RunClient {
        self.with(|inner| inner.request_timeout = timeout)
    }

    /// The same client going round the nodes for at most `window` while the cluster
    /// cannot answer a request that is safe to repeat (30 s by default; zero: one round,
    /// for a probe of one node).
    pub fn with_failover_window(self, window: Duration) -> RunClient {
        self.with(|inner| inner.failover_window = window)
    }

    /// A copy of this client's settings (sharing its token) changed by `f`.
    fn with(&self, f: impl FnOnce(&mut Inner)) -> RunClient {
        let mut inner = Inner {
            http: self.inner.http.clone(),
            bases: self.inner.bases.clone(),
            token: self.inner.token.clone(),
            preferred: AtomicUsize::new(self.inner.preferred.load(Ordering::Relaxed)),
            request_timeout: self.inner.request_timeout,
            failover_window: self.inner.failover_window,
        };
        f(&mut inner);
        RunClient {
            inner: Arc::new(inner),
        }
    }

    /// A client of the one node at `url` with this client's connections settings, TLS
    /// roots, token and deadline, asking it once (`cairn cluster status` asks each member
    /// itself).
    pub fn to_node(&self, url: &str) -> Result<RunClient, ClientError> {
        let base = parse_base(url)?;
        let inner = Inner {
            http: self.inner.http.clone(),
            bases: vec![base],
            token: Arc::new(std::sync::RwLock::new(self.token())),
            preferred: AtomicUsize::new(0),
            request_timeout: self.inner.request_timeout,
            failover_window: Duration::ZERO,
        };
        Ok(RunClient {
            inner: Arc::new(inner),
        })
    }

    /// Replaces the bearer token of this client and of every clone of it.
    pub fn set_token(&self, token: Option<String>) {
        let mut t = self
            .inner
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t = token;
    }

    fn token(&self) -> Option<String> {
        self.inner
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The base URLs, in the order given.
    pub fn urls(&self) -> &[Url] {
        &self.inner.bases
    }

    // --- runs -------------------------------------------------------------------------

    /// `POST /runs`: one run per matching config run, under a new idempotency key, so
    /// it is sent again (to any node, within the failover window) when its outcome is
    /// unknown and still makes its runs once.
    pub async fn create_run(
        &self,
        req: &CreateRunRequest,
    ) -> Result<CreateRunResponse, ClientError> {
        let key = crate::api::new_idempotency_key();
        self.create_run_with_key(req, &key).await
    }

    /// `POST /runs` under the caller's idempotency key ([`IDEMPOTENCY_KEY_HEADER`]): the
    /// same key and request sent again within a day (by this process or another) answer
    /// with the runs made the first time; the same key with another request is a 409.
    ///
    /// [`IDEMPOTENCY_KEY_HEADER`]: crate::api::IDEMPOTENCY_KEY_HEADER
    pub async fn create_run_with_key(
        &self,
        req: &CreateRunRequest,
        key: &str,
    ) -> Result<CreateRunResponse, ClientError> {
        let call = Call::api(Method::POST, &["runs"])
            .json(req)?
            .header(crate::api::IDEMPOTENCY_KEY_HEADER, key)
            .idempotent();
        self.call_json(call).await
    }

    /// `GET /runs`: a page of runs.
    pub async fn list_runs(&self, query: &ListRunsQuery) -> Result<RunsPage, ClientError> {
        self.call_json(list_runs_call(query)).await
    }

    /// `GET /runs/{id}`.
    pub async fn run(&self, id: &str) -> Result<RunResponse, ClientError> {
        self.call_json(Call::get(&["runs", id])).await
    }

    /// `POST /runs/{id}/restart`: a new run. Never sent twice.
    pub async fn restart_run(
        &self,
        id: &str,
        req: &RestartRunRequest,
    ) -> Result<RunResponse, ClientError> {
        let call = Call::api(Method::POST, &["runs", id, "restart"]).json(req)?;
        self.call_json(call).await
    }

    /// `PUT /runs/{id}/actions`: stop or cancel.
    pub async fn run_action(
        &self,
        id: &str,
        action: RunAction,
    ) -> Result<RunResponse, ClientError> {
        let call =
            Call::api(Method::PUT, &["runs", id, "actions"]).json(&RunActionRequest { action })?;
        self.call_json(call).await
    }

    /// `PUT /runs/{id}/tasks/{task_id}/actions`: approve or set annotations.
    pub async fn task_action(
        &self,
        run_id: &str,
        task_id: &str,
        req: &TaskActionRequest,
    ) -> Result<RunResponse, ClientError> {
        let call =
            Call::api(Method::PUT, &["runs", run_id, "tasks", task_id, "actions"]).json(req)?;
        self.call_json(call).await
    }

    // --- executors --------------------------------------------------------------------

    /// `GET /executors`.
    pub async fn executors(&self) -> Result<ExecutorsResponse, ClientError> {
        self.call_json(Call::get(&["executors"])).await
    }

    /// `POST /executors/{id}`: register or heartbeat.
    pub async fn heartbeat(&self, executor: &Executor) -> Result<HeartbeatResponse, ClientError> {
        let call = Call::api(Method::POST, &["executors", &executor.id])
            .json(executor)?
            .idempotent();
        self.call_json(call).await
    }

    /// `POST /tokens`: a new stored token (admin).
    pub async fn create_token(
        &self,
        req: &crate::api::CreateTokenRequest,
    ) -> Result<crate::api::CreateTokenResponse, ClientError> {
        self.call_json(Call::api(Method::POST, &["tokens"]).json(req)?)
            .await
    }

    /// `GET /tokens`: the stored tokens, without secrets (admin).
    pub async fn tokens(&self) -> Result<crate::api::TokensResponse, ClientError> {
        self.call_json(Call::get(&["tokens"])).await
    }

    /// `DELETE /tokens/{id}` (admin).
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Call::api(Method::DELETE, &["tokens", id]))
            .await
    }

    /// `DELETE /executors/{id}/credential`: revokes the executor's own credential (admin).
    pub async fn revoke_executor_credential(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Call::api(Method::DELETE, &["executors", id, "credential"]))
            .await
    }

    /// `DELETE /executors/{id}`.
    pub async fn delete_executor(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Call::api(Method::DELETE, &["executors", id]))
            .await
    }

    /// `GET /executors/{id}/tasks`: the executor's tasks, waiting up to `wait` for one to
    /// change after revision `after`.
    pub async fn executor_tasks(
        &self,
        id: &str,
        after: i64,
        wait: Duration,
    ) -> Result<ExecutorTasksResponse, ClientError> {
        let call = Call::get(&["executors", id, "tasks"])
            .query("after", after)
            .query("wait", wait.as_secs())
            .timeout(wait + self.inner.request_timeout);
        self.call_json(call).await
    }

    /// `GET /executors/{id}/tasks/{task_id}`; `None` once the task is gone.
    pub async fn executor_task(
        &self,
        id: &str,
        task_id: &str,
    ) -> Result<Option<AssignedTask>, ClientError> {
        let call = Call::get(&["executors", id, "tasks", task_id]);
        match self.call_json(call).await {
            Ok(task) => Ok(Some(task)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /executors/{id}/tasks/{task_id}/status`.
    pub async fn report_status(
        &self,
        id: &str,
        task_id: &str,
        status: &ExecutorTaskStatus,
    ) -> Result<(), ClientError> {
        let call =
            Call::api(Method::PUT, &["executors", id, "tasks", task_id, "status"]).json(status)?;
        self.call_empty(call).await
    }

    /// `POST /executors/{id}/tasks/{task_id}/logs`: appends `data` at `offset` (which
    /// must be the log's length, else [`ClientError::LogOffset`]); `end` completes it.
    pub async fn append_log(
        &self,
        id: &str,
        task_id: &str,
        step: LogStep,
        offset: u64,
        data: Bytes,
        end: bool,
    ) -> Result<(), ClientError> {
        let mut call = Call::api(Method::POST, &["executors", id, "tasks", task_id, "logs"])
            .query("step", step)
            .query("offset", offset)
            .payload(data.into())
            .idempotent();
        if end {
            call = call.query("end", true);
        }
        match self.call_empty(call).await {
            Err(ClientError::Api(e)) if e.code == ErrorCode::Conflict => {
                match e
                    .details
                    .as_ref()
                    .and_then(|d| d.get("length"))
                    .and_then(|l| l.as_u64())
                {
                    Some(expected) => Err(ClientError::LogOffset { expected }),
                    None => Err(ClientError::Api(e)),
                }
            }
            other => other,
        }
    }

    /// `PUT /executors/{id}/tasks/{task_id}/archives/{step}`: a workspace tar.
    pub async fn upload_archive(
        &self,
        id: &str,
        task_id: &str,
        step: usize,
        body: impl Into<Payload>,
    ) -> Result<(), ClientError> {
        let step = step.to_string();
        let call = Call::api(
            Method::PUT,
            &["executors", id, "tasks", task_id, "archives", &step],
        )
        .payload(body.into())
        .streamed();
        self.call_empty(call).await
    }

    /// `GET /archives/{task_id}/{step}`: a workspace tar.
    pub async fn download_archive(
        &self,
        task_id: &str,
        step: usize,
    ) -> Result<ByteStream, ClientError> {
        let step = step.to_string();
        self.call_stream(Call::get(&["archives", task_id, &step]))
            .await
    }

    // --- caches and sources -----------------------------------------------------------

    /// `HEAD /caches/{key}`: whether the cache exists (with `prefix`, any whose key starts
    /// with `key`).
    pub async fn cache_exists(&self, key: &str, prefix: bool) -> Result<bool, ClientError> {
        let call = cache_call(Method::HEAD, key, prefix);
        let resp = self.send(call).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        success(resp).await.map(|_| true)
    }

    /// `GET /caches/{key}`: the cache's bytes (with `prefix`, the newest whose key starts
    /// with `key`); `None` when there is none.
    pub async fn download_cache(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<Option<ByteStream>, ClientError> {
        match self.call_stream(cache_call(Method::GET, key, prefix)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`RunClient::download_cache`], with the full key of the cache found (the
    /// server prefers the exact key to a longer one starting with it).
    pub async fn download_cache_found(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<Option<(String, ByteStream)>, ClientError> {
        let resp = match self
            .send(cache_call(Method::GET, key, prefix).streamed())
            .await
        {
            Ok(resp) => success(resp).await,
            Err(e) => Err(e),
        };
        match resp {
            Ok(resp) => {
                let found = resp
                    .headers()
                    .get("x-cairn-cache-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(key)
                    .to_owned();
                Ok(Some((found, byte_stream(resp))))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /caches/{key}`: `true` when stored, `false` when the key already existed
    /// (the first writer wins).
    pub async fn upload_cache(
        &self,
        key: &str,
        body: impl Into<Payload>,
    ) -> Result<bool, ClientError> {
        let call = Call::api(Method::POST, &["caches", key])
            .payload(body.into())
            .idempotent()
            .streamed();
        let resp = self.send(call).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(false);
        }
        success(resp).await.map(|_| true)
    }

    /// `POST /sources`: stores a working-tree snapshot (a tar) for a direct run.
    pub async fn upload_source(&self, body: impl Into<Payload>) -> Result<SourceRef, ClientError> {
        let call = Call::api(Method::POST, &["sources"])
            .payload(body.into())
            .streamed();
        let resp: SourceUploadResponse = self.call_json(call).await?;
        Ok(resp.source)
    }

    /// `GET /sources/{object}`: a stored snapshot.
    pub async fn download_source(&self, object: &str) -> Result<ByteStream, ClientError> {
        self.call_stream(Call::get(&["sources", object])).await
    }

    // --- maintenance, export, import ---------------------------------------------------

    /// `GET /maintenance`: whether maintenance is asked for, and each node's mode.
    pub async fn maintenance(&self) -> Result<crate::api::MaintenanceStatus, ClientError> {
        self.call_json(Call::get(&["maintenance"])).await
    }

    /// `PUT /maintenance` (on) or `DELETE /maintenance` (off).
    pub async fn set_maintenance(&self, on: bool) -> Result<(), ClientError> {
        let method = if on { Method::PUT } else { Method::DELETE };
        self.call_empty(Call::api(method, &["maintenance"])).await
    }

    /// `GET /export`: the datamanager's contents as a versioned, checksummed stream.
    /// Secrets are redacted; see [`RunClient::export_with`].
    pub async fn export(&self) -> Result<ByteStream, ClientError> {
        self.export_with(false).await
    }

    /// `GET /export?include_secrets=`: like [`RunClient::export`], with the run configs'
    /// secrets (environment values, registry credentials) when `include_secrets`.
    pub async fn export_with(&self, include_secrets: bool) -> Result<ByteStream, ClientError> {
        let mut call = Call::get(&["export"]).streamed();
        if include_secrets {
            call = call.query("include_secrets", true);
        }
        self.call_stream(call).await
    }

    /// `POST /import`: replaces the datamanager's contents (maintenance mode only).
    pub async fn import(
        &self,
        body: impl Into<Payload>,
    ) -> Result<crate::api::ImportResponse, ClientError> {
        let call = Call::api(Method::POST, &["import"])
            .payload(body.into())
            .streamed();
        self.call_json(call).await
    }

    // --- cluster and health -----------------------------------------------------------

    /// `GET /cluster`: the answering node's view of the cluster.
    pub async fn cluster(&self) -> Result<NodeInfo, ClientError> {
        self.call_json(Call::get(&["cluster"])).await
    }

    /// `GET /healthz` of the first node that answers: `Ok` when it is alive.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        self.call_empty(probe_call("healthz")).await
    }

    /// `GET /readyz` of the first node that answers: whether it can serve (503 = no).
    pub async fn readyz(&self) -> Result<bool, ClientError> {
        let mut call = probe_call("readyz");
        // A node's readiness is its own: a 503 is the answer, not a reason to ask another.
        call.retry = Retry::Unsent;
        let resp = self.send(call).await?;
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(false);
        }
        success(resp).await.map(|_| true)
    }
}

/// A server's base URL, checked: `http(s)://` and able to have paths.
fn parse_base(u: &str) -> Result<Url, ClientError> {
    let url = Url::parse(u.trim())
        .map_err(|e| ClientError::Config(format!("bad server URL {u:?}: {e}")))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!(
            "bad server URL {u:?}: not an http(s) URL"
        )));
    }
    Ok(url)
}

fn probe_call(path: &str) -> Call {
    let mut call = Call::get(&[]);
    call.path = vec![path.to_string()];
    call.auth = false;
    call
}

fn cache_call(method: Method, key: &str, prefix: bool) -> Call {
    let call = Call::api(method, &["caches", key]);
    if prefix {
        call.query("prefix", true)
    } else {
        call
    }
}

/// `GET /runs` with `query` as its query string.
fn list_runs_call(query: &ListRunsQuery) -> Call {
    let mut call = Call::get(&["runs"]);
    if let Some(group) = &query.group {
        call = call.query("group", group);
    }
    if !query.phase.is_empty() {
        let phases: Vec<&str> = query.phase.iter().map(|p| p.as_str()).collect();
        call = call.query("phase", phases.join(","));
    }
    if !query.result.is_empty() {
        let results: Vec<&str> = query.result.iter().map(|r| r.as_str()).collect();
        call = call.query("result", results.join(","));
    }
    if query.last_run {
        call = call.query("last_run", true);
    }
    if let Some(cursor) = &query.cursor {
        call = call.query("cursor", cursor);
    }
    if let Some(limit) = query.limit {
        call = call.query("limit", limit);
    }
    if query.asc {
        call = call.query("asc", true);
    }
    call
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::test_server::{json, reply, serve};
    use super::*;
    use crate::run::{RunPhase, RunResult};

    fn client(urls: &[&str]) -> RunClient {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        RunClient::new(&urls, Some("s3cret".into())).expect("valid URLs")
    }

    #[test]
    fn new_refuses_no_urls_and_non_http_urls() {
        assert!(RunClient::new(&[], None).is_err());
        assert!(RunClient::new(&["mailto:a@b".into()], None).is_err());
        assert!(RunClient::new(&["not a url".into()], None).is_err());
        for urls in [
            vec![],
            vec!["mailto:a@b".to_string()],
            vec!["not a url".into()],
        ] {
            let e = RunClient::new(&urls, None).expect_err("refused");
            assert!(matches!(e, ClientError::Config(_)), "{e:?}");
            assert!(!e.is_transient(), "a bad URL does not fix itself");
        }
    }

    #[tokio::test]
    async fn list_runs_encodes_lists_with_commas_and_escapes_the_cursor() {
        let server = serve(|_, _| json(200, r#"{"runs":[],"next":"c2"}"#)).await;
        let query = ListRunsQuery {
            group: Some("/project/p 1".into()),
            phase: vec![RunPhase::Queued, RunPhase::Running],
            result: vec![RunResult::Failed, RunResult::Stopped],
            last_run: true,
            cursor: Some("a+b/c=&d".into()),
            limit: Some(20),
            asc: true,
        };
        let page = client(&[&server.url])
            .list_runs(&query)
            .await
            .expect("a page");
        assert_eq!(page.next.as_deref(), Some("c2"));
        let req = &server.requests()[0];
        assert_eq!(req.path(), "/api/v1/runs");
        let pairs: Vec<(&str, &str)> = vec![
            ("group", "/project/p 1"),
            ("phase", "queued,running"),
            ("result", "failed,stopped"),
            ("last_run", "true"),
            ("cursor", "a+b/c=&d"),
            ("limit", "20"),
            ("asc", "true"),
        ];
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(req.query(), expected);
        assert!(
            req.target.contains("cursor=a%2Bb%2Fc%3D%26d"),
            "{}",
            req.target
        );
    }

    #[tokio::test]
    async fn a_cache_that_already_exists_is_not_stored_again() {
        let server = serve(|_, _| reply(304, "text/plain", b"")).await;
        let created = client(&[&server.url])
            .upload_cache("k", Bytes::from_static(b"tar"))
            .await
            .expect("answered");
        assert!(!created, "the first writer wins");
    }

    #[tokio::test]
    async fn cache_lookups_by_prefix_and_missing_caches() {
        let server = serve(|req, _| match (req.method.as_str(), req.path()) {
            ("HEAD", "/api/v1/caches/present") => reply(200, "application/octet-stream", b""),
            ("GET", "/api/v1/caches/present") => reply(200, "application/octet-stream", b"data"),
            _ => json(404, r#"{"code":"not_found","message":"no cache"}"#),
        })
        .await;
        let c = client(&[&server.url]);
        assert!(c.cache_exists("present", true).await.expect("answered"));
        assert!(!c.cache_exists("absent", false).await.expect("answered"));
        let stream = c.download_cache("present", true).await.expect("answered");
        let bytes: Vec<Bytes> = stream.expect("found").try_collect().await.expect("read");
        assert_eq!(bytes.concat(), b"data");
        assert!(
            c.download_cache("absent", true)
                .await
                .expect("answered")
                .is_none()
        );
        let reqs = server.requests();
        assert_eq!(reqs[0].query_value("prefix").as_deref(), Some("true"));
        assert_eq!(reqs[1].query_value("prefix"), None);
    }

    #[tokio::test]
    async fn append_log_reports_the_expected_offset_on_409() {
        let server = serve(|_, _| {
            json(
                409,
                r#"{"code":"conflict","message":"offset 7 != 42","details":{"length":42}}"#,
            )
        })
        .await;
        let e = client(&[&server.url])
            .append_log(
                "e1",
                "t1",
                LogStep::Setup,
                7,
                Bytes::from_static(b"line\n"),
                true,
            )
            .await
            .expect_err("wrong offset");
        assert!(
            matches!(e, ClientError::LogOffset { expected: 42 }),
            "{e:?}"
        );
        assert!(e.is_conflict());
        let req = &server.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.path(), "/api/v1/executors/e1/tasks/t1/logs");
        assert_eq!(req.query_value("step").as_deref(), Some("setup"));
        assert_eq!(req.query_value("offset").as_deref(), Some("7"));
        assert_eq!(req.query_value("end").as_deref(), Some("true"));
        assert_eq!(req.body, b"line\n");
    }

    #[tokio::test]
    async fn append_log_accepts_204_and_leaves_end_out_until_the_end() {
        let server = serve(|_, _| reply(204, "text/plain", b"")).await;
        client(&[&server.url])
            .append_log(
                "e1",
                "t1",
                LogStep::Step(2),
                0,
                Bytes::from_static(b"x"),
                false,
            )
            .await
            .expect("appended");
        let req = &server.requests()[0];
        assert_eq!(req.query_value("step").as_deref(), Some("2"));
        assert_eq!(req.query_value("end"), None);
    }

    #[tokio::test]
    async fn a_gone_executor_task_is_none() {
        let server = serve(|_, _| json(404, r#"{"code":"not_found","message":"gone"}"#)).await;
        let task = client(&[&server.url])
            .executor_task("e1", "t1")
            .await
            .expect("answered");
        assert!(task.is_none());
    }

    #[tokio::test]
    async fn executor_tasks_long_polls_after_a_revision() {
        let server = serve(|_, _| json(200, r#"{"revision":12,"tasks":[]}"#)).await;
        let resp = client(&[&server.url])
            .executor_tasks("e1", 5, Duration::from_secs(30))
            .await
            .expect("tasks");
        assert_eq!(resp.revision, 12);
        let req = &server.requests()[0];
        assert_eq!(req.path(), "/api/v1/executors/e1/tasks");
        assert_eq!(req.query_value("after").as_deref(), Some("5"));
        assert_eq!(req.query_value("wait").as_deref(), Some("30"));
    }

    #[tokio::test]
    async fn run_actions_and_readiness() {
        let server = serve(|req, _| match req.path() {
            "/readyz" => reply(503, "text/plain", b"no leader"),
            _ => json(
                400,
                r#"{"code":"bad_request","message":"run is not running"}"#,
            ),
        })
        .await;
        let c = client(&[&server.url]);
        let e = c
            .run_action("r1", RunAction::Stop)
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Some(ErrorCode::BadRequest));
        assert!(!c.readyz().await.expect("answered"), "503 means not ready");
        let req = &server.requests()[0];
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path(), "/api/v1/runs/r1/actions");
        assert_eq!(req.body, br#"{"action":"stop"}"#);
    }
}

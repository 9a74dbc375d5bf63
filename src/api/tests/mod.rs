//! In-process tests of the `/api/v1` router: the router of [`super::v1::router`]
//! over a one-node in-process store ([`crate::datamanager::testing::TestStore`]), each
//! request driven through `tower::ServiceExt::oneshot` — no process, no socket, no
//! scheduler. A test that needs an executor task hands it out as the scheduler does.
//! Statuses and JSON bodies are asserted as the integration tests (`tests/it`) see them.

mod archived;
mod create_once;
mod executors;
mod limits;
mod openapi;
mod roles;
mod run_watch;
mod runs;
mod ui;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use cairn_client::api::{ConfigFile, CreateRunRequest, RefSpec};
use cairn_client::executor::Executor;
use cairn_client::runconfig::Arch;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::auth::Authenticator;
use super::v1::{ApiState, router};
use crate::datamanager::Datamanager;
use crate::datamanager::blobs::Blobs;
use crate::datamanager::caches::CacheStore;
use crate::datamanager::logs::LogStore;
use crate::datamanager::testing::TestStore;

/// The admin token of the router under test.
const ADMIN: &str = "the-admin-token-of-the-api-tests";

const GROUP: &str = "/project/p1/branch/main";

/// The router over a fresh store, and the switch of its maintenance mode.
struct Api {
    store: TestStore,
    /// The object storage behind the API (segments, logs).
    blobs: Blobs,
    router: Router,
    maintenance: tokio::sync::watch::Sender<bool>,
    /// The archive index's directory and its follower, kept for the test's length.
    _index: (tempfile::TempDir, crate::history::IndexFollower),
}

/// A reply: status, whether its body is JSON, and the body.
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    is_json: bool,
    body: Bytes,
}

impl Reply {
    /// The body as JSON (the test fails when it is not JSON).
    fn json(&self) -> Value {
        assert!(
            self.is_json,
            "{}: not a JSON reply: {:?}",
            self.status, self.body
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {:?}", self.status, self.body))
    }

    /// The body as `T`.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.json())
            .unwrap_or_else(|e| panic!("{}: unexpected body ({e}): {:?}", self.status, self.body))
    }

    /// Asserts the reply is `status` with exactly the body `{code, message}`.
    fn assert_error(&self, status: StatusCode, code: &str, message: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.json(), json!({ "code": code, "message": message }));
    }
}

impl Api {
    async fn start() -> Api {
        let store = TestStore::start().await;
        let blobs = Blobs::open("memory:").expect("memory blobs");
        let (maintenance, mode) = tokio::sync::watch::channel(false);
        let index_dir = tempfile::tempdir().expect("tempdir");
        let index = crate::archive_index::ArchiveIndex::open(&index_dir.path().join("index.redb"))
            .expect("index");
        let (publisher, indexed) = crate::history::IndexedRevision::channel();
        let follower = crate::history::IndexFollower::spawn(
            index.clone(),
            store.dm(),
            blobs.clone(),
            publisher,
            tokio_util::sync::CancellationToken::new(),
        );
        let history = crate::history::History::new(
            store.dm(),
            index,
            blobs.clone(),
            crate::history::RecordCache::new(1 << 20),
            indexed,
        );
        let segments_blobs = blobs.clone();
        let state = ApiState {
            node: store.node.clone(),
            dm: store.dm(),
            history,
            peer_reads:
                super::forward::PeerReads::new(super::peer::HttpTransport::client_builder())
                    .expect("a client"),
            logs: LogStore::new(blobs.clone()),
            caches: CacheStore::new(blobs.clone()),
            blobs,
            scheduler_active: Arc::new(AtomicBool::new(false)),
            executor_ttl_secs: super::executors::EXECUTOR_LEASE_SECS,
            maintenance: mode,
            pull_request_refs: crate::runservice::reference::PullRequestRefs::agola_default(),
            streams: Default::default(),
            export_key: Arc::from(&b"the-export-key-of-the-api-tests"[..]),
            metrics: Default::default(),
        };
        let auth = Authenticator::new(ADMIN, state.dm.clone());
        Api {
            router: router(state, auth),
            blobs: segments_blobs,
            store,
            maintenance,
            _index: (index_dir, follower),
        }
    }

    fn dm(&self) -> Datamanager {
        self.store.dm()
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router's errors are responses");
        let status = resp.status();
        let headers = resp.headers().clone();
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a body");
        Reply {
            status,
            headers,
            is_json,
            body,
        }
    }

    /// `method /api/v1{path}` with `token` as bearer and `body` as JSON.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        self.call_bytes(method, path, token, body).await
    }

    /// `method /api/v1{path}` with `token` as bearer and raw JSON bytes as body.
    async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"));
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(bytes) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(bytes)),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("a request")).await
    }

    /// A new stored token of `role` (`user`, `read-only`, `registration`), made by the admin.
    async fn token(&self, role: &str) -> String {
        let body = json!({ "role": role, "name": format!("{role} of a test") });
        let reply = self
            .call(Method::POST, "/tokens", Some(ADMIN), Some(&body))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.json()["token"]
            .as_str()
            .expect("a token in the reply")
            .to_string()
    }

    /// Registers executor `id` with `registration`; its own credential.
    async fn register(&self, registration: &str, id: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                &format!("/executors/{id}"),
                Some(registration),
                Some(&executor(id)),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.json()["credential"]
            .as_str()
            .expect("a registration gets a credential")
            .to_string()
    }

    /// Creates the runs of `config` in [`GROUP`] as the admin; the reply's runs.
    async fn create_runs(&self, config: &str) -> Vec<Value> {
        let reply = self
            .call(
                Method::POST,
                "/runs",
                Some(ADMIN),
                Some(&create_request(GROUP, config)),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let runs = reply.json()["runs"].as_array().expect("runs").clone();
        assert!(!runs.is_empty());
        runs
    }
}

/// The body of `POST /runs` for `config` on branch `main` of `group`.
fn create_request(group: &str, config: &str) -> Value {
    serde_json::to_value(CreateRunRequest {
        group: group.to_string(),
        config: ConfigFile {
            path: ".agola/config.yml".into(),
            content: config.to_string(),
        },
        reference: RefSpec {
            branch: Some("main".into()),
            ..RefSpec::default()
        },
        ..CreateRunRequest::default()
    })
    .expect("JSON")
}

/// The registration body of executor `id` (this host's architecture).
fn executor(id: &str) -> Value {
    serde_json::to_value(Executor {
        id: id.to_string(),
        archs: Arch::host().into_iter().collect(),
        ..Executor::default()
    })
    .expect("JSON")
}

/// The id of the task named `name` in a run response.
fn task_id(run: &Value, name: &str) -> String {
    run["run_config"]["tasks"]
        .as_object()
        .expect("tasks")
        .iter()
        .find(|(_, t)| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {run}"))
        .0
        .clone()
}

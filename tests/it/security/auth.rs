//! Credentials and roles: who may call which route (H1, the peer half of H2, L1, L2, L3).
//! Each test names the attack it replays (a credential, or none, used on a route outside
//! its role); on the code before roles, every one of them succeeded with the single token.

use std::time::Duration;

use cairn_client::api::{CreateTokenRequest, TokenRole};
use cairn_client::executor::Executor;
use cairn_client::runconfig::Arch;
use cairn_client::{ErrorCode, RunClient};

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{create_request, task_id};
use crate::support::scripted::{Behaviour, Script, ScriptedExecutor};
use crate::support::service::ServiceProc;

const ONE_TASK: &str = r#"
runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
"#;

fn client(node: &ServiceProc, token: &str) -> RunClient {
    RunClient::new(std::slice::from_ref(&node.url), Some(token.to_string())).unwrap()
}

async fn make_token(node: &ServiceProc, role: TokenRole) -> String {
    node.client()
        .create_token(&CreateTokenRequest {
            role,
            name: format!("{role:?}"),
        })
        .await
        .unwrap()
        .token
}

/// A raw request with `token` as bearer; returns the status and body.
async fn raw(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, String) {
    let resp = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        // The peer route's protocol version (ignored elsewhere), so a peer request with
        // the peer secret reaches the route's own checks.
        .header("cairn-peer-protocol", "1")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

fn executor(id: &str) -> Executor {
    Executor {
        id: id.to_string(),
        archs: Arch::host().into_iter().collect(),
        ..Executor::default()
    }
}

/// Registers executor `id` with `registration`, returning its own credential.
async fn register(node: &ServiceProc, registration: &str, id: &str) -> String {
    client(node, registration)
        .heartbeat(&executor(id))
        .await
        .unwrap()
        .credential
        .expect("a registration gets a credential")
}

fn code(e: cairn_client::ClientError) -> Option<ErrorCode> {
    e.code()
}

/// H1 (peer half of H2): the peer secret opens `/raft/rpc` only; no client credential
/// (admin, user, executor) opens it, and the peer secret opens neither `/api/v1` nor
/// `/v3`. Before, one token was cluster, API and `/v3` token at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_secret_and_client_tokens_do_not_open_each_others_doors() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let peer = std::fs::read_to_string(dir.path().join("n").join("peer-token")).unwrap();
    let peer = peer.trim();
    assert_ne!(peer, TOKEN);
    let user = make_token(&node, TokenRole::User).await;
    let rpc = format!("{}/raft/rpc", node.url);
    // Not even a well-formed request is decoded for a client token.
    for token in [TOKEN, user.as_str()] {
        let (status, _) = raw(reqwest::Method::POST, &rpc, token, b"\x00".to_vec()).await;
        assert_eq!(status, 401, "a client token on /raft/rpc");
    }
    // The peer secret is a peer's: it gets past the check (400: not a peer request).
    let (status, _) = raw(reqwest::Method::POST, &rpc, peer, b"\x00".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = raw(
        reqwest::Method::GET,
        &format!("{}/api/v1/runs", node.url),
        peer,
        vec![],
    )
    .await;
    assert_eq!(status, 401, "the peer secret on /api/v1");
    let (status, _) = raw(
        reqwest::Method::POST,
        &format!("{}/v3/kv/range", node.url),
        peer,
        br#"{"key":"cnMv"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 401, "the peer secret on /v3");
}

/// H1 "raw store write bypasses the scheduler": a user token (and an executor's
/// credential) cannot use `/v3`, so cannot rewrite a run's result there; the admin can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_opens_the_raw_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let user = make_token(&node, TokenRole::User).await;
    let registration = make_token(&node, TokenRole::Registration).await;
    let exec = register(&node, &registration, "e1").await;
    let put = format!("{}/v3/kv/put", node.url);
    // rs/run/0000000000000001 = {"result":"success"}
    let body =
        br#"{"key":"cnMvcnVuLzAwMDAwMDAwMDAwMDAwMDE=","value":"eyJyZXN1bHQiOiJzdWNjZXNzIn0="}"#;
    for token in [user.as_str(), exec.as_str(), registration.as_str()] {
        let (status, text) = raw(reqwest::Method::POST, &put, token, body.to_vec()).await;
        assert_eq!(status, 401, "{text}");
    }
    let (status, _) = raw(
        reqwest::Method::POST,
        &format!("{}/v3/kv/range", node.url),
        TOKEN,
        br#"{"key":"cnMv"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "the admin token on /v3");
}

/// H1 "any token holder is everyone": a read-only token reads but every write is a 403;
/// a user token creates runs but cannot switch maintenance on, export (secrets), import,
/// delete executors or make tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_user_tokens_stay_in_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let ro = client(&node, &make_token(&node, TokenRole::ReadOnly).await);
    let user = client(&node, &make_token(&node, TokenRole::User).await);
    ro.list_runs(&Default::default()).await.unwrap();
    ro.executors().await.unwrap();
    let e = ro
        .create_run(&create_request("/user/u", ONE_TASK))
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Forbidden));
    let created = user
        .create_run(&create_request("/user/u", ONE_TASK))
        .await
        .unwrap();
    let id = created.runs[0].run.id.clone();
    let e = ro
        .run_action(&id, cairn_client::api::RunAction::Cancel)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Forbidden));
    for (what, e) in [
        ("maintenance", user.set_maintenance(true).await.unwrap_err()),
        (
            "delete executor",
            user.delete_executor("x").await.unwrap_err(),
        ),
        ("tokens", user.tokens().await.unwrap_err()),
        (
            "ro maintenance",
            ro.set_maintenance(true).await.unwrap_err(),
        ),
    ] {
        assert_eq!(code(e), Some(ErrorCode::Forbidden), "{what}");
    }
    let (status, _) = raw(
        reqwest::Method::GET,
        &format!("{}/api/v1/export", node.url),
        &make_token(&node, TokenRole::User).await,
        vec![],
    )
    .await;
    assert_eq!(status, 403, "a user token exports");
}

/// A revoked token is refused (401) from then on; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let admin = node.client();
    let made = admin
        .create_token(&CreateTokenRequest {
            role: TokenRole::User,
            name: "ci".into(),
        })
        .await
        .unwrap();
    let kept = make_token(&node, TokenRole::User).await;
    let user = client(&node, &made.token);
    user.list_runs(&Default::default()).await.unwrap();
    let listed = admin.tokens().await.unwrap();
    assert!(
        listed
            .tokens
            .iter()
            .any(|t| t.id == made.info.id && t.name == "ci")
    );
    admin.revoke_token(&made.info.id).await.unwrap();
    let e = user.list_runs(&Default::default()).await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Unauthorized));
    // A forged secret on a live id is refused too.
    let forged = format!("cairn.{}.{}", made.info.id, "0".repeat(48));
    let e = client(&node, &forged)
        .list_runs(&Default::default())
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Unauthorized));
    client(&node, &kept)
        .list_runs(&Default::default())
        .await
        .unwrap();
}

/// L3: in maintenance, `POST /api/v1/caches/import` was let through by the path-suffix
/// gate (201, data written); now only the exact maintenance, export and import routes
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_gate_matches_exact_routes() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let admin = node.client();
    admin.set_maintenance(true).await.unwrap();
    wait_for(Duration::from_secs(30), "maintenance mode", || async {
        admin
            .maintenance()
            .await
            .ok()
            .filter(|m| m.nodes.iter().all(|n| n.maintenance) && !m.nodes.is_empty())
    })
    .await;
    let (status, text) = raw(
        reqwest::Method::POST,
        &format!("{}/api/v1/caches/import", node.url),
        TOKEN,
        b"data-written-in-maintenance".to_vec(),
    )
    .await;
    assert_eq!(status, 503, "{text}");
    let (status, _) = raw(
        reqwest::Method::GET,
        &format!("{}/api/v1/runs/export", node.url),
        TOKEN,
        vec![],
    )
    .await;
    assert_eq!(status, 503);
    let (status, _) = raw(
        reqwest::Method::GET,
        &format!("{}/api/v1/export", node.url),
        TOKEN,
        vec![],
    )
    .await;
    assert_eq!(status, 200);
}

/// H1 "executor identity is just a path segment": executor `evil`, holding its own
/// credential, cannot read `good`'s task (by good's id in the URL or its own), forge its
/// log, status or archive, read its archive, delete it, or register in its place; nor
/// can a registration token act as an executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_credential_reaches_only_its_own_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let registration = make_token(&node, TokenRole::Registration).await;
    let good_cred = register(&node, &registration, "good").await;
    let mut script = Script::new("good");
    script.behaviour = |_| Behaviour::Hold;
    let good = ScriptedExecutor::start(std::slice::from_ref(&node.url), &good_cred, script);
    let admin = node.client();
    let run = admin
        .create_run(&create_request("/user/u", ONE_TASK))
        .await
        .unwrap()
        .runs[0]
        .run
        .id
        .clone();
    let task = task_id(&admin.run(&run).await.unwrap(), "build");
    wait_for(
        Duration::from_secs(60),
        "good to start the task",
        || async { good.started().contains(&task).then_some(()) },
    )
    .await;
    // Registered after the hand-out, so the task is good's.
    let evil_cred = register(&node, &registration, "evil").await;
    let evil = client(&node, &evil_cred);
    let forbidden = |e: cairn_client::ClientError, what: &str| {
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{what}: {e}");
    };
    forbidden(
        evil.executor_task("good", &task).await.unwrap_err(),
        "read via good's id",
    );
    forbidden(
        evil.executor_task("evil", &task).await.unwrap_err(),
        "read via own id",
    );
    forbidden(
        evil.executor_tasks("good", 0, Duration::ZERO)
            .await
            .unwrap_err(),
        "list good's tasks",
    );
    let base = format!("{}/api/v1", node.url);
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            format!("/executors/good/tasks/{task}/logs?step=0&offset=0"),
            b"forged log line: all tests passed\n".to_vec(),
        ),
        (
            reqwest::Method::POST,
            format!("/executors/evil/tasks/{task}/logs?step=0&offset=0"),
            b"forged log line\n".to_vec(),
        ),
        (
            reqwest::Method::PUT,
            format!("/executors/good/tasks/{task}/archives/0"),
            b"not a tar".to_vec(),
        ),
        (
            reqwest::Method::PUT,
            format!("/executors/good/tasks/{task}/status"),
            br#"{"phase":"success"}"#.to_vec(),
        ),
        (reqwest::Method::GET, format!("/archives/{task}/0"), vec![]),
        (
            reqwest::Method::DELETE,
            "/executors/good".to_string(),
            vec![],
        ),
        (reqwest::Method::GET, "/runs".to_string(), vec![]),
    ] {
        let (status, text) = raw(method.clone(), &format!("{base}{path}"), &evil_cred, body).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
    }
    // A registration token cannot take over good's live registration, nor poll tasks.
    let reg = client(&node, &registration);
    let e = reg.heartbeat(&executor("good")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    forbidden(
        reg.executor_task("good", &task).await.unwrap_err(),
        "registration token reads a task",
    );
    // Good itself still reads its task and its status is untouched.
    client(&node, &good_cred)
        .executor_task("good", &task)
        .await
        .unwrap();
    let r = admin.run(&run).await.unwrap();
    assert!(!r.run.phase.is_finished(), "{:?}", r.run.phase);
    // The admin revokes good's credential: refused from then on.
    admin.revoke_executor_credential("good").await.unwrap();
    let e = client(&node, &good_cred)
        .executor_task("good", &task)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    drop(good);
}

/// H1/M3 "evil reads good task's secrets": run variables, task environment and registry
/// passwords were returned by `GET /runs/{id}` to every token holder; now a user or
/// read-only token sees `***` in their place, and only the admin sees the values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_secrets_are_redacted_for_non_admin_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let config = r#"
docker_registries_auth:
  registry.example:
    type: basic
    username: u
    password: REGISTRY-PASSWORD-123
runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: registry.example/busybox, environment: { C: CONTAINER-SECRET-1 } } ] }
        environment: { DEPLOY_KEY: SECRET-DEPLOY-KEY-456 }
        steps: [ { run: { command: make, environment: { S: STEP-SECRET-2 } } } ]
"#;
    let mut req = create_request("/user/u", config);
    req.environment
        .insert("API_KEY".into(), "VARIABLE-SECRET-789".into());
    let admin = node.client();
    let user = client(&node, &make_token(&node, TokenRole::User).await);
    let ro = client(&node, &make_token(&node, TokenRole::ReadOnly).await);
    let created = user.create_run(&req).await.unwrap();
    let id = created.runs[0].run.id.clone();
    let secrets = [
        "REGISTRY-PASSWORD-123",
        "SECRET-DEPLOY-KEY-456",
        "VARIABLE-SECRET-789",
        "CONTAINER-SECRET-1",
        "STEP-SECRET-2",
    ];
    let shown = serde_json::to_string(&created).unwrap();
    for s in secrets {
        assert!(!shown.contains(s), "create reply shows {s}");
    }
    for c in [&user, &ro] {
        let got = serde_json::to_string(&c.run(&id).await.unwrap()).unwrap();
        for s in secrets {
            assert!(!got.contains(s), "GET /runs/{{id}} shows {s}: {got}");
        }
        assert!(got.contains("***"));
    }
    let got = serde_json::to_string(&admin.run(&id).await.unwrap()).unwrap();
    for s in secrets {
        assert!(got.contains(s), "the admin sees {s}");
    }
}

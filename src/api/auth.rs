//! Credentials and roles of the API: who the bearer of a token is ([`Caller`]), what a
//! route needs ([`need`]), whether the one allows the other ([`permits`]), and the one
//! constant-time comparison every token check uses ([`same_secret`], [`same_digest`]).
//!
//! | credential | where it comes from | may call |
//! |---|---|---|
//! | admin | `DATA_DIR/token`, `--token-file`, `CAIRN_TOKEN`; or `cairn token create --role admin` | everything, `/v3` too |
//! | user | `cairn token create --role user` | runs: create, act on, read; upload sources |
//! | read-only | `cairn token create --role read-only` | `GET` of runs, logs, executors, cluster |
//! | registration | `cairn token create --role registration` | `POST /executors/{id}` once, for its credential |
//! | executor | issued at registration, bound to one executor id | its own registration, tasks, logs, status, archives; archives, caches and sources of its tasks' runs |
//! | metrics | `cairn token create --role metrics` | `GET /metrics` only (admin may read it too) |
//!
//! The peer secret is not an API credential: it is accepted only on `/raft/rpc`, and
//! none of the above is accepted there.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use cairn_client::ApiError;
use cairn_client::ErrorCode;
use cairn_client::api::{
    CreateTokenRequest, CreateTokenResponse, TokenInfo, TokenRole, TokensResponse,
};

use super::error::{ApiResult, Failure};
use super::v1::ApiState;
use crate::datamanager::tokens::{self, Presented};
use crate::datamanager::{Datamanager, DmError};

/// Whether two secrets are equal, in time that depends on neither (both are hashed
/// first, so not even their lengths leak).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    same_digest(&Sha256::digest(a).into(), &Sha256::digest(b).into())
}

/// Whether two digests are equal, in constant time: the one comparison of secrets.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The admin token, or a stored admin token.
    Admin,
    User,
    ReadOnly,
    Registration,
    /// A scraper: `GET /metrics` only.
    Metrics,
    /// An executor, by its own credential.
    Executor(String),
}

impl Caller {
    fn of_role(role: TokenRole) -> Caller {
        match role {
            TokenRole::Admin => Caller::Admin,
            TokenRole::User => Caller::User,
            TokenRole::ReadOnly => Caller::ReadOnly,
            TokenRole::Registration => Caller::Registration,
            TokenRole::Metrics => Caller::Metrics,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// The executor this caller is, if it is one.
    pub fn executor_id(&self) -> Option<&str> {
        match self {
            Caller::Executor(id) => Some(id),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Caller::Admin => "the admin token".into(),
            Caller::User => "a user token".into(),
            Caller::ReadOnly => "a read-only token".into(),
            Caller::Registration => "a registration token".into(),
            Caller::Metrics => "a metrics token".into(),
            Caller::Executor(id) => format!("executor {id}'s credential"),
        }
    }
}

/// What a route needs of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    Admin,
    /// Runs: create, act on.
    Write,
    /// `GET` of runs, logs, executors, cluster, maintenance status.
    Read,
    /// `POST /executors/{id}`: registration (registration token), heartbeat (the
    /// executor itself).
    Register(&'a str),
    /// The executor of the URL, itself.
    Executor(&'a str),
    /// Any executor; the handler checks the blob is of one of its tasks' runs.
    ExecutorBlobs,
    /// `GET /metrics` (outside `/api/v1`, so never the result of [`need`]).
    Metrics,
}

/// What `method path` (relative to `/api/v1`) needs; pure. An unknown route needs only
/// reading (it answers 404 or 405 anyway).
pub fn need<'a>(method: &Method, path: &'a str) -> Need<'a> {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    match segs.as_slice() {
        ["tokens", ..] | ["export"] | ["import"] => Need::Admin,
        ["maintenance"] if !get => Need::Admin,
        ["executors", id] if *method == Method::POST => Need::Register(id),
        // The executor itself may deregister (a clean stop hands its tasks back).
        ["executors", id] if *method == Method::DELETE => Need::Executor(id),
        ["executors", _, "credential"] => Need::Admin,
        ["executors", id, "tasks", ..] => Need::Executor(id),
        ["archives", ..] | ["caches", ..] => Need::ExecutorBlobs,
        ["sources", _] if get => Need::ExecutorBlobs,
        ["sources"] => Need::Write,
        ["runs", ..] if !get => Need::Write,
        _ if get => Need::Read,
        _ => Need::Admin,
    }
}

/// Whether `caller` may call a route that needs `need`; pure.
pub fn permits(caller: &Caller, need: &Need<'_>) -> bool {
    match (caller, need) {
        (Caller::Admin, _) => true,
        (Caller::User, Need::Write | Need::Read) => true,
        (Caller::ReadOnly, Need::Read) => true,
        (Caller::Registration, Need::Register(_)) => true,
        (Caller::Executor(me), Need::Register(id) | Need::Executor(id)) => me == id,
        (Caller::Executor(_), Need::ExecutorBlobs) => true,
        (Caller::Metrics, Need::Metrics) => true,
        _ => false,
    }
}

/// Identifies bearers: the admin token (by digest), stored tokens and executor
/// credentials (by their stored digests).
#[derive(Clone)]
pub struct Authenticator {
    admin: Arc<[u8; 32]>,
    dm: Datamanager,
}

impl Authenticator {
    pub fn new(admin_token: &str, dm: Datamanager) -> Authenticator {
        Authenticator {
            admin: Arc::new(tokens::digest(admin_token)),
            dm,
        }
    }

    /// The caller `token` identifies; `None` for no one.
    pub async fn identify(&self, token: &str) -> Result<Option<Caller>, DmError> {
        if same_digest(&tokens::digest(token), &self.admin) {
            return Ok(Some(Caller::Admin));
        }
        match tokens::parse(token) {
            Presented::Stored { id, secret } => {
                let Some(stored) = self.dm.token(id).await? else {
                    return Ok(None);
                };
                Ok(matches_stored(&stored.sha256, secret).then(|| Caller::of_role(stored.role)))
            }
            Presented::Executor {
                executor_id,
                secret,
            } => {
                if super::executors::check_id(executor_id).is_err() {
                    return Ok(None);
                }
                let Some(cred) = self.dm.executor_credential(executor_id).await? else {
                    return Ok(None);
                };
                Ok(matches_stored(&cred.sha256, secret)
                    .then(|| Caller::Executor(executor_id.to_string())))
            }
            Presented::Other => Ok(None),
        }
    }
}

fn matches_stored(stored_hex: &str, secret: &str) -> bool {
    tokens::parse_digest(stored_hex).is_some_and(|d| same_digest(&tokens::digest(secret), &d))
}

/// The 403 of a caller outside its role.
pub fn forbidden(caller: &Caller, method: &Method, path: &str) -> Failure {
    Failure::new(
        ErrorCode::Forbidden,
        format!("{} may not call {method} {path}", caller.describe()),
    )
}

/// What stands in for a secret in a response.
pub const REDACTED: &str = "***";

/// Replaces the secrets of a run config (the run's variables, task, container and step
/// environment values, registry passwords) with [`REDACTED`]; pure. Only the admin sees
/// them through the API; an executor gets its task's with the task hand-out.
pub fn redact_run_config(cfg: &mut cairn_client::runconfig::RunConfig) {
    use cairn_client::runconfig::Step;
    fn env(e: &mut cairn_client::runconfig::Env) {
        for v in e.values_mut() {
            *v = REDACTED.to_string();
        }
    }
    env(&mut cfg.environment);
    for task in cfg.tasks.values_mut() {
        env(&mut task.environment);
        for c in &mut task.runtime.containers {
            env(&mut c.environment);
        }
        for step in &mut task.steps {
            if let Step::Run(r) = step {
                env(&mut r.environment);
            }
        }
        for auth in task.docker_registries_auth.values_mut() {
            if !auth.password.is_empty() {
                auth.password = REDACTED.to_string();
            }
            if !auth.auth.is_empty() {
                auth.auth = REDACTED.to_string();
            }
        }
    }
}

/// A run response as `caller` may see it (secrets redacted unless admin).
pub fn run_response_for(
    caller: &Caller,
    mut resp: cairn_client::api::RunResponse,
) -> cairn_client::api::RunResponse {
    if !caller.is_admin() {
        redact_run_config(&mut resp.run_config);
    }
    resp
}

/// `POST /tokens`: a new stored token (admin).
#[utoipa::path(
    post,
    path = "/tokens",
    operation_id = "create_token",
    tag = "tokens",
    summary = "A new stored token (its secret is shown only in this reply)",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The token", body = CreateTokenResponse),
        (status = 400, description = "A bad name or role", body = ApiError),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn create_token(
    State(st): State<ApiState>,
    Json(req): Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    if req.name.len() > 200 || req.name.chars().any(char::is_control) {
        return Err(Failure::bad_request(
            "a token name is at most 200 characters, none of them control characters",
        ));
    }
    let (stored, token) = st
        .dm
        .with_ctx(super::request_ctx())
        .create_token(req.role, &req.name)
        .await?;
    tracing::info!(token_id = %stored.id, role = stored.role.as_str(), "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse {
            token,
            info: stored.info(),
        }),
    ))
}

/// `GET /whoami`: the caller's role, for the web page (read-only tokens see no actions).
#[utoipa::path(
    get,
    path = "/whoami",
    operation_id = "whoami",
    tag = "tokens",
    summary = "The role of the caller's token and whether it may act on runs",
    responses((status = 200, description = "The caller's role", body = cairn_client::api::WhoAmI)),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<cairn_client::api::WhoAmI> {
    let role = match caller {
        Caller::Admin => "admin",
        Caller::User => "user",
        _ => "read-only",
    };
    Json(cairn_client::api::WhoAmI {
        role: role.to_string(),
        can_act: permits(&caller, &Need::Write),
    })
}

/// `GET /tokens`: the stored tokens, without secrets (admin).
#[utoipa::path(
    get,
    path = "/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    summary = "The stored tokens, without secrets",
    responses((status = 200, description = "The tokens", body = TokensResponse)),
    security(("bearer" = ["admin"])),
)]
pub async fn list_tokens(State(st): State<ApiState>) -> ApiResult<Json<TokensResponse>> {
    let tokens: Vec<TokenInfo> = st.dm.tokens().await?.iter().map(|t| t.info()).collect();
    Ok(Json(TokensResponse { tokens }))
}

/// `DELETE /tokens/{id}` (admin).
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    operation_id = "revoke_token",
    tag = "tokens",
    summary = "Revoke a stored token",
    params(("id" = String, Path, description = "The token's id (hex)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Not a token id", body = ApiError),
        (status = 404, description = "No such token", body = ApiError),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn revoke_token(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::bad_request(format!("{id:?} is not a token id")));
    }
    st.dm
        .with_ctx(super::request_ctx())
        .revoke_token(&id)
        .await?;
    tracing::info!(token_id = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcx"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn routes_need_their_role() {
        let g = Method::GET;
        let p = Method::POST;
        assert_eq!(need(&p, "/runs"), Need::Write);
        assert_eq!(need(&g, "/runs"), Need::Read);
        assert_eq!(need(&g, "/api/v1/runs/1"), Need::Read);
        assert_eq!(need(&Method::PUT, "/runs/1/actions"), Need::Write);
        assert_eq!(need(&Method::PUT, "/maintenance"), Need::Admin);
        assert_eq!(need(&g, "/maintenance"), Need::Read);
        assert_eq!(need(&g, "/export"), Need::Admin);
        assert_eq!(need(&p, "/import"), Need::Admin);
        assert_eq!(need(&p, "/caches/import"), Need::ExecutorBlobs);
        assert_eq!(need(&Method::DELETE, "/executors/e1"), Need::Executor("e1"));
        assert_eq!(need(&p, "/executors/e1"), Need::Register("e1"));
        assert_eq!(
            need(&Method::DELETE, "/executors/e1/credential"),
            Need::Admin
        );
        assert_eq!(need(&g, "/executors/e1/tasks/t"), Need::Executor("e1"));
        assert_eq!(need(&g, "/tokens"), Need::Admin);
        assert_eq!(need(&g, "/sources/x"), Need::ExecutorBlobs);
        assert_eq!(need(&p, "/sources"), Need::Write);
        assert_eq!(need(&Method::PATCH, "/nothing"), Need::Admin);
    }

    #[test]
    fn roles_permit_what_the_model_says() {
        let ex = Caller::Executor("e1".into());
        assert!(permits(&ex, &Need::Executor("e1")));
        // Another executor's tasks, reports or registration (DELETE /executors/e2).
        assert!(!permits(&ex, &Need::Executor("e2")));
        assert!(!permits(&ex, &Need::Register("e2")));
        assert!(!permits(&ex, &Need::Read));
        assert!(!permits(&ex, &Need::Write));
        assert!(permits(&Caller::User, &Need::Write));
        assert!(!permits(&Caller::User, &Need::Admin));
        assert!(!permits(&Caller::User, &Need::Executor("e1")));
        assert!(!permits(&Caller::User, &Need::ExecutorBlobs));
        assert!(permits(&Caller::ReadOnly, &Need::Read));
        assert!(!permits(&Caller::ReadOnly, &Need::Write));
        assert!(permits(&Caller::Registration, &Need::Register("e9")));
        assert!(!permits(&Caller::Registration, &Need::Read));
        assert!(permits(&Caller::Admin, &Need::Admin));
        // A scraper reads /metrics and nothing else; of the others, only the admin does.
        assert!(permits(&Caller::Metrics, &Need::Metrics));
        assert!(permits(&Caller::Admin, &Need::Metrics));
        for need in [Need::Read, Need::Write, Need::Admin, Need::ExecutorBlobs] {
            assert!(!permits(&Caller::Metrics, &need), "{need:?}");
        }
        for other in [Caller::User, Caller::ReadOnly, Caller::Registration, ex] {
            assert!(!permits(&other, &Need::Metrics), "{other:?}");
        }
    }
}

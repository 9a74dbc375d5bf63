//! Executor endpoints: register/heartbeat (the executor's key lives on a lease the
//! heartbeats keep alive), delete, list, the long poll for assigned tasks (each with its
//! spec data generated from the run and its config, never stored), and status reports.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use cairn_client::ApiError;
use cairn_client::ErrorCode;
use cairn_client::api::{ExecutorTasksResponse, ExecutorsResponse, HeartbeatResponse};
use cairn_client::executor::{AssignedTask, Executor, ExecutorTask, ExecutorTaskStatus};
use serde::Deserialize;
use store::WatchMessage;

use super::auth::Caller;
use super::error::{ApiResult, Failure};
use super::v1::ApiState;
use crate::datamanager::{DmError, Versioned};
use crate::runservice;

/// Executor registrations live this long without a heartbeat, by default.
pub const EXECUTOR_LEASE_SECS: i64 = 15;
/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn check_id(id: &str) -> Result<(), Failure> {
    cairn_client::ids::check_executor_id(id).map_err(|e| Failure::bad_request(e.to_string()))
}

/// An executor task's id is a uuid (security review C2: executors name directories
/// after it).
pub(super) fn check_task_id(task_id: &str) -> Result<(), Failure> {
    cairn_client::ids::check_task_id(task_id).map_err(|e| Failure::bad_request(e.to_string()))
}

/// `POST /executors/{id}`: registration or heartbeat. An executor's own credential only
/// heartbeats. A registration token registers an executor that is not registered (a
/// live registration is its holder's: 409) and gets its credential in the reply; the
/// admin token does too when the executor is not registered, and otherwise heartbeats.
#[utoipa::path(
    post,
    path = "/executors/{id}",
    operation_id = "executor_heartbeat",
    tag = "executors",
    summary = "Register an executor, or keep its registration alive",
    description = "A registration token (or the admin token) registers an executor that is not \
        registered and gets its own credential in the reply, once; the executor's credential \
        heartbeats it from then on.",
    params(("id" = String, Path, description = "The executor's id")),
    request_body = Executor,
    responses(
        (status = 200, description = "Registered or kept alive", body = HeartbeatResponse),
        (status = 400, description = "A bad id, or the body's id is not the path's", body = ApiError),
        (status = 409, description = "A registration token for an executor that is registered and alive", body = ApiError),
    ),
    security(("bearer" = ["admin", "registration", "executor"])),
)]
pub async fn heartbeat(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(mut ex): Json<Executor>,
) -> ApiResult<Json<HeartbeatResponse>> {
    check_id(&id)?;
    if ex.id != id {
        return Err(Failure::bad_request(format!(
            "body id {:?} does not match path id {id:?}",
            ex.id
        )));
    }
    let kv = st.dm.kv();
    let ttl = st.executor_ttl_secs.max(kv.min_lease_ttl());
    // Keep the current lease alive; grant a new one when there is none (first
    // registration, or the old one expired).
    let current = st.dm.executor(&id).await?;
    let issue = match (&caller, &current) {
        (Caller::Registration, Some(_)) => {
            return Err(Failure::new(
                ErrorCode::Conflict,
                format!(
                    "executor {id} is registered and alive: only its own credential heartbeats it"
                ),
            ));
        }
        (Caller::Registration, None) | (Caller::Admin, None) => true,
        _ => false,
    };
    let mut lease = 0;
    if let Some(cur) = current
        && cur.lease != 0
        && kv.lease_keepalive(cur.lease).await.is_ok()
    {
        lease = cur.lease;
    }
    if lease == 0 {
        let (granted, _) = kv.lease_grant(ttl, 0).await.map_err(DmError::from)?;
        lease = granted;
        tracing::info!(executor_id = %id, "executor registered");
    }
    ex.lease = lease;
    ex.last_heartbeat = Some(chrono::Utc::now());
    let dm = st.dm.with_ctx(super::request_ctx());
    let credential = if issue {
        Some(dm.issue_executor_credential(&id).await?)
    } else {
        None
    };
    dm.put_executor(&ex).await?;
    Ok(Json(HeartbeatResponse {
        lease_ttl_secs: ttl,
        executor: ex,
        credential,
    }))
}

/// `DELETE /executors/{id}` (admin, or the executor itself on a clean stop): the
/// registration (its unfinished tasks are failed as lost, and run again elsewhere).
/// The executor keeps its credential and may register again, as before roles; a
/// credential is revoked with `DELETE /executors/{id}/credential`.
#[utoipa::path(
    delete,
    path = "/executors/{id}",
    operation_id = "delete_executor",
    tag = "executors",
    summary = "Delete an executor's registration (its unfinished tasks are lost)",
    params(("id" = String, Path, description = "The executor's id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn delete(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    st.dm
        .with_ctx(super::request_ctx())
        .delete_executor(&id)
        .await?;
    tracing::info!(executor_id = %id, "executor deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /executors/{id}/credential` (admin): the executor's credential is refused
/// from then on (its registration stays until it expires or is deleted).
#[utoipa::path(
    delete,
    path = "/executors/{id}/credential",
    operation_id = "revoke_executor_credential",
    tag = "executors",
    summary = "Revoke an executor's credential",
    params(("id" = String, Path, description = "The executor's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Not an executor id", body = ApiError),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn revoke_credential(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(&id)?;
    st.dm
        .with_ctx(super::request_ctx())
        .revoke_executor_credential(&id)
        .await?;
    tracing::info!(executor_id = %id, "executor credential revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /executors`: the registered executors and their unfinished task counts.
#[utoipa::path(
    get,
    path = "/executors",
    operation_id = "list_executors",
    tag = "executors",
    summary = "The registered executors",
    responses((status = 200, description = "The executors and their unfinished tasks", body = ExecutorsResponse)),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn list(State(st): State<ApiState>) -> ApiResult<Json<ExecutorsResponse>> {
    let executors = st.dm.executors().await?;
    let assigned = st.dm.assigned_counts().await?;
    Ok(Json(ExecutorsResponse {
        executors,
        assigned,
    }))
}

#[derive(Debug, Default, Deserialize)]
pub struct TasksParams {
    #[serde(default)]
    after: i64,
    /// Seconds.
    #[serde(default)]
    wait: u64,
}

/// `GET /executors/{id}/tasks?after=R&wait=S`: the executor's tasks; with `after`, waits
/// up to `S` seconds for one of them to change after revision `R`.
#[utoipa::path(
    get,
    path = "/executors/{id}/tasks",
    operation_id = "executor_tasks",
    tag = "executors",
    summary = "An executor's tasks, or a long poll for a change of them",
    params(
        ("id" = String, Path, description = "The executor's id"),
        ("after" = Option<i64>, Query, description = "With `wait`: wait for a change after this revision"),
        ("wait" = Option<u64>, Query, description = "Seconds to wait (at most 60)"),
    ),
    responses(
        (status = 200, description = "The tasks, with their spec data, as of `revision`", body = ExecutorTasksResponse),
        (status = 400, description = "Not an executor id", body = ApiError),
        (status = 429, description = "Too many long polls for this credential or this node", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn tasks(
    State(st): State<ApiState>,
    credential: super::streams::CredentialKey,
    Path(id): Path<String>,
    Query(p): Query<TasksParams>,
) -> ApiResult<Json<ExecutorTasksResponse>> {
    check_id(&id)?;
    if p.after > 0 && p.wait > 0 {
        let _permit = st
            .streams
            .acquire(super::streams::StreamKind::LongPoll, credential)?;
        let wait = Duration::from_secs(p.wait).min(MAX_WAIT);
        let mut watch = st.dm.watch_executor_tasks(&id, p.after + 1);
        let _ = tokio::time::timeout(wait, async {
            loop {
                match watch.recv().await {
                    Some(WatchMessage::Progress { .. }) => continue,
                    _ => return,
                }
            }
        })
        .await;
    }
    let (tasks, revision) = st.dm.executor_tasks_of(&id).await?;
    let mut out = Vec::with_capacity(tasks.len());
    for et in tasks {
        if let Some(a) = assigned(&st, et.value).await? {
            out.push(a);
        }
    }
    Ok(Json(ExecutorTasksResponse {
        revision,
        tasks: out,
    }))
}

/// The task with its generated spec data; `None` when its run is gone.
async fn assigned(st: &ApiState, task: ExecutorTask) -> Result<Option<AssignedTask>, Failure> {
    let run = match st.dm.run(&task.spec.run_id).await {
        Ok(r) => r.value,
        Err(DmError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let config = st.dm.run_config(&run.id).await?;
    Ok(runservice::spec_data(&run, &config, &task.id).map(|data| AssignedTask { task, data }))
}

/// `GET /executors/{id}/tasks/{task_id}`: one of the executor's tasks.
#[utoipa::path(
    get,
    path = "/executors/{id}/tasks/{task_id}",
    operation_id = "executor_task",
    tag = "executors",
    summary = "One of an executor's tasks, with its spec data",
    params(("id" = String, Path, description = "The executor's id"), ("task_id" = String, Path, description = "The executor task's id")),
    responses(
        (status = 200, description = "The task", body = AssignedTask),
        (status = 400, description = "Bad ids", body = ApiError),
        (status = 404, description = "No such task", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn task(
    State(st): State<ApiState>,
    Path((id, task_id)): Path<(String, String)>,
) -> ApiResult<Json<AssignedTask>> {
    let et = owned_task(&st, &id, &task_id).await?;
    assigned(&st, et.value)
        .await?
        .map(Json)
        .ok_or_else(|| Failure::not_found(format!("task {task_id} not found")))
}

/// The executor task `task_id`, which executor `id` must own (its blobs and status are
/// its to write).
pub(super) async fn owned_task(
    st: &ApiState,
    id: &str,
    task_id: &str,
) -> Result<Versioned<ExecutorTask>, Failure> {
    check_id(id)?;
    check_task_id(task_id)?;
    let et = st
        .dm
        .executor_task(task_id)
        .await?
        .ok_or_else(|| Failure::not_found(format!("task {task_id} not found")))?;
    if et.value.spec.executor_id != id {
        return Err(Failure::new(
            ErrorCode::Forbidden,
            format!("task {task_id} is assigned to another executor"),
        ));
    }
    Ok(et)
}

/// `PUT /executors/{id}/tasks/{task_id}/status`: replaces the task's status.
#[utoipa::path(
    put,
    path = "/executors/{id}/tasks/{task_id}/status",
    operation_id = "report_task_status",
    tag = "executors",
    summary = "Report an executor task's status",
    params(("id" = String, Path, description = "The executor's id"), ("task_id" = String, Path, description = "The executor task's id")),
    request_body = ExecutorTaskStatus,
    responses(
        (status = 204, description = "Accepted"),
        (status = 400, description = "Bad ids, or a report that is not acceptable", body = ApiError),
        (status = 404, description = "No such task", body = ApiError),
        (status = 409, description = "A report the task's state refuses", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn status(
    State(st): State<ApiState>,
    Path((id, task_id)): Path<(String, String)>,
    Json(status): Json<ExecutorTaskStatus>,
) -> ApiResult<StatusCode> {
    check_id(&id)?;
    check_task_id(&task_id)?;
    let dm = st.dm.with_ctx(super::request_ctx());
    dm.update_executor_task_with(&task_id, |et| {
        runservice::accept_report(et, &id, &status).map_err(Failure::from)
    })
    .await
    .map_err(|e| match e {
        Failure(api) if api.code == ErrorCode::NotFound => {
            Failure::not_found(format!("task {task_id} not found"))
        }
        other => other,
    })?;
    Ok(StatusCode::NO_CONTENT)
}

//! Run endpoints: create (from a config file and a source reference), restart, get with
//! "why is it pending", list, run and task actions, and the run-event stream (SSE).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn_client::api::{
    CreateRunRequest, CreateRunResponse, ListRunsQuery, PendingReasons, RestartRunRequest,
    RunAction, RunActionRequest, RunResponse, TaskActionRequest,
};
use cairn_client::run::{Run, RunPhase, RunResult};
use cairn_client::runconfig::RunConfig;
use futures::Stream;
use serde::Deserialize;
use store::WatchMessage;

use super::auth::{self, Caller};
use super::error::{ApiResult, Failure};
use super::forward::PeerRead;
use super::v1::ApiState;
use crate::configfile;
use crate::datamanager::create_once::CreateOnce;
use crate::datamanager::runs::Creation;
use crate::datamanager::{Datamanager, Versioned};
use crate::runservice;
use cairn_client::ApiError;
use cairn_client::api::RunsPage;

#[utoipa::path(
    post,
    path = "/runs",
    operation_id = "create_runs",
    tag = "runs",
    summary = "Create the runs of a config",
    description = "One run per config run whose `when` matches the reference. A config that cannot be \
        parsed still records one run, in phase `setuperror` (201 too); a config over Cairn's limits \
        is a 400 whose `details` are the config's errors.",
    request_body = CreateRunRequest,
    params(
        ("idempotency-key" = Option<String>, Header, description = "Names this creation (1 to 255 visible \
            ASCII characters): the same key with the same request, sent again within a day (after a lost \
            answer, to any node), answers with the runs made the first time, marked by the header \
            `idempotent-replayed: true`; the same key with another request is a 409. `cairn-client` sends a \
            new key with every create and sends it again when the answer is lost."),
    ),
    responses(
        (status = 201, description = "The runs created (secrets redacted unless admin)", body = CreateRunResponse),
        (status = 400, description = "A bad request, a bad idempotency key or a config over the limits", body = ApiError),
        (status = 409, description = "The idempotency key was used for another request", body = ApiError),
    ),
    security(("bearer" = ["admin", "user"])),
)]
pub async fn create(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<CreateRunRequest>,
) -> ApiResult<Response> {
    let once = create_once(&headers, &req)?;
    let (mut made, replayed) = create_runs(st, req, once.as_ref()).await?;
    made.runs = made
        .runs
        .into_iter()
        .map(|r| auth::run_response_for(&caller, r))
        .collect();
    let mut resp = (StatusCode::CREATED, Json(made)).into_response();
    if replayed {
        resp.headers_mut().insert(
            cairn_client::api::IDEMPOTENT_REPLAYED_HEADER,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// The request's idempotency key, validated, with the request's digest; `None` without
/// the header.
fn create_once(headers: &HeaderMap, req: &CreateRunRequest) -> ApiResult<Option<CreateOnce>> {
    use cairn_client::api::{IDEMPOTENCY_KEY_HEADER, idempotency_key_error};
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let bad = |why: String| Failure::new(cairn_client::ErrorCode::BadRequest, why);
    let key = value.to_str().map_err(|_| {
        bad(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII characters"
        ))
    })?;
    if let Some(why) = idempotency_key_error(key) {
        return Err(bad(why));
    }
    // The request as parsed, written back: the same request gives the same bytes
    // whatever its JSON's spacing or key order.
    let canonical = serde_json::to_vec(req).map_err(|e| {
        Failure::new(
            cairn_client::ErrorCode::Internal,
            format!("encoding the request: {e}"),
        )
    })?;
    Ok(Some(CreateOnce::new(key, &canonical, chrono::Utc::now())))
}

/// Makes the request's runs; with a key, a run the same request made before is read
/// instead (`true`: at least one was).
async fn create_runs(
    st: ApiState,
    req: CreateRunRequest,
    once: Option<&CreateOnce>,
) -> ApiResult<(CreateRunResponse, bool)> {
    let resolved =
        runservice::create::resolve_request(&req, &st.pull_request_refs).map_err(create_failure)?;
    let loaded = load_config(&req, resolved.config_context.clone()).await?;
    let configs =
        runservice::create::run_configs(&req, &resolved, loaded).map_err(create_failure)?;
    let group = &resolved.group;
    let mut runs = Vec::new();
    let mut replayed = false;
    for (n, template) in configs.into_iter().enumerate() {
        let now = chrono::Utc::now();
        let creation = st
            .dm
            .with_ctx(super::request_ctx())
            .create_run_once(group, once.map(|o| (o, n)), |id, counter| {
                let mut config = template.clone();
                config.id = id.to_string();
                // The run's id and counter reach its tasks at hand-out (runservice::spec_data).
                let run = runservice::new_run(&config, counter, now);
                (config, run)
            })
            .await?;
        let created = match creation {
            Creation::Made(created) => *created,
            Creation::Earlier(id) => {
                tracing::info!(run_id = %id, group = %group, "run creation sent again: answered with the earlier run");
                replayed = true;
                runs.push(run_response(&st, &id).await?);
                continue;
            }
        };
        if created.config.setup_errors.is_empty() {
            tracing::info!(run_id = %created.run.value.id, group = %group, "run created");
        } else {
            tracing::info!(run_id = %created.run.value.id, group = %group, "setuperror run recorded");
        }
        runs.push(RunResponse {
            run: created.run.value,
            run_config: created.config,
            pending: None,
        });
    }
    Ok((CreateRunResponse { runs }, replayed))
}

/// A refused creation request: a config's errors travel as details.
fn create_failure(e: runservice::RunServiceError) -> Failure {
    match e {
        runservice::RunServiceError::Config(errors) => config_failure(errors),
        other => other.into(),
    }
}

/// Configs parsed (and programs evaluated) at once; more requests wait their turn, so
/// that many large configs cannot hold all their parse trees in memory together.
const CONCURRENT_PARSES: usize = 4;
static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_PARSES);

/// The request's config, evaluated first when it is a program (Jsonnet, Starlark) with
/// Agola's `ctx` (the classified reference and the commit); off the async workers, since
/// an evaluation may take up to its deadline, and at most [`CONCURRENT_PARSES`] at once.
async fn load_config(
    req: &CreateRunRequest,
    ctx: configfile::ConfigContext,
) -> ApiResult<Result<configfile::Parsed, configfile::ConfigErrors>> {
    let file = req.config.clone();
    let permit = PARSES.acquire().await.map_err(|e| {
        Failure::new(
            cairn_client::ErrorCode::Internal,
            format!("config evaluation: {e}"),
        )
    })?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        configfile::load(&file.path, &file.content, &ctx)
    })
    .await
    .map_err(|e| {
        Failure::new(
            cairn_client::ErrorCode::Internal,
            format!("config evaluation: {e}"),
        )
    })
}

fn config_failure(e: configfile::ConfigErrors) -> Failure {
    let details = serde_json::to_value(&e).unwrap_or_default();
    Failure::bad_request(e.to_string()).with_details(details)
}

/// A run id from a path or a cursor must be in its format (16 to 20 digits,
/// `cairn_client::ids::check_run_id`): anything else is a 400, never a store lookup.
pub(super) fn check_run_id(id: &str) -> Result<(), Failure> {
    cairn_client::ids::check_run_id(id).map_err(|e| Failure::bad_request(e.to_string()))
}

/// `GET /runs/{id}`: secrets of the run config are redacted unless the caller is admin.
/// Answered by a peer while this node's index cannot read an archived run
/// (`super::forward`).
#[utoipa::path(
    get,
    path = "/runs/{id}",
    operation_id = "get_run",
    tag = "runs",
    summary = "A run, its config and why it is pending",
    params(("id" = String, Path, description = "The run's id (16 to 20 digits)")),
    responses(
        (status = 200, description = "The run (secrets redacted unless admin)", body = RunResponse),
        (status = 400, description = "Not a run id", body = ApiError),
        (status = 404, description = "No such run", body = ApiError),
    ),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn get(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    read: PeerRead,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    check_run_id(&id)?;
    let (run, config) = match read.history(&st).run_and_config(&id).await {
        Ok(found) => found,
        Err(e) => return read.or_forward(&st, e).await,
    };
    let (resp, _) = respond(&st, run, (*config).clone()).await?;
    Ok(Json(auth::run_response_for(&caller, resp)).into_response())
}

/// The run, its config and why it (or each waiting task) is pending.
async fn run_response(st: &ApiState, id: &str) -> Result<RunResponse, Failure> {
    Ok(run_response_at(st, id).await?.0)
}

/// [`run_response`] and the mod revision of the run it read.
pub(super) async fn run_response_at(
    st: &ApiState,
    id: &str,
) -> Result<(RunResponse, i64), Failure> {
    let (run, config) = st.history.run_and_config(id).await?;
    respond(st, run, (*config).clone()).await
}

/// [`run_response_at`] with the run's config already at hand (it never changes).
pub(super) async fn run_response_with(
    st: &ApiState,
    id: &str,
    config: RunConfig,
) -> Result<(RunResponse, i64), Failure> {
    let run = st.history.run(id).await?;
    respond(st, run, config).await
}

async fn respond(
    st: &ApiState,
    run: Versioned<Run>,
    config: RunConfig,
) -> Result<(RunResponse, i64), Failure> {
    let pending = pending(&st.dm, &run.value, &config).await?;
    let resp = RunResponse {
        run: run.value,
        run_config: config,
        pending,
    };
    Ok((resp, run.mod_revision))
}

/// The reason a queued or running run gives while no node's scheduler holds the lock.
pub const NO_SCHEDULER: &str =
    "no scheduler is active (a node is taking over, or every node is in maintenance)";

async fn pending(
    dm: &Datamanager,
    run: &Run,
    config: &RunConfig,
) -> Result<Option<PendingReasons>, Failure> {
    let mut reasons = PendingReasons::default();
    match run.phase {
        RunPhase::Queued if run.cancel => {
            reasons.run = Some("cancel requested; the scheduler cancels it".to_string());
        }
        RunPhase::Queued => {
            let running = dm.running_in(&run.group, 1).await?;
            reasons.run = Some(match running.first() {
                Some(other) => format!(
                    "queued behind run {other}, which is running in group {}",
                    run.group
                ),
                None => match dm.first_queued(&run.group).await? {
                    Some(first) if first != run.id => {
                        format!("queued behind run {first} in group {}", run.group)
                    }
                    _ => "queued; starting as soon as the scheduler sees it".to_string(),
                },
            });
        }
        RunPhase::Running => {}
        _ => return Ok(None),
    }
    if !dm.scheduler_held().await? {
        reasons.run = Some(NO_SCHEDULER.to_string());
    }
    let ets: BTreeMap<_, _> = dm
        .executor_tasks_of_run(run)
        .await?
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect();
    let executors = dm.executors().await?;
    let assigned = dm.assigned_counts().await?;
    let placement = |task: &cairn_client::runconfig::RunConfigTask| {
        runservice::choose_executor(task, &executors, &assigned)
            .err()
            .map(|e| e.to_string())
    };
    reasons.tasks = runservice::task_pending_reasons(run, config, &ets, &placement);
    Ok(Some(reasons))
}

/// `GET /runs` query as sent on the wire (lists comma-separated).
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    group: Option<String>,
    phase: Option<String>,
    result: Option<String>,
    #[serde(default)]
    last_run: bool,
    cursor: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    asc: bool,
}

fn parse_list<T>(
    raw: &Option<String>,
    what: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Vec<T>, Failure> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| Failure::bad_request(format!("unknown {what} {s:?}"))))
        .collect()
}

/// `GET /runs`; answered by a peer while this node's index is behind
/// (`super::forward`).
#[utoipa::path(
    get,
    path = "/runs",
    operation_id = "list_runs",
    tag = "runs",
    summary = "A page of runs, newest first",
    params(
        ("group" = Option<String>, Query, description = "Group path prefix on segment boundaries (`/project/p1` matches `/project/p1/...`)"),
        ("phase" = Option<String>, Query, description = "Comma-separated phases: `setuperror`, `queued`, `cancelled`, `running`, `finished`"),
        ("result" = Option<String>, Query, description = "Comma-separated results: `unknown`, `stopped`, `success`, `failed`"),
        ("last_run" = Option<bool>, Query, description = "Only the last run of each group"),
        ("cursor" = Option<String>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "At most this many runs (at least 1)", minimum = 1),
        ("asc" = Option<bool>, Query, description = "Oldest first"),
    ),
    responses(
        (status = 200, description = "One page; `next` is absent on the last", body = RunsPage),
        (status = 400, description = "An unknown phase or result, a bad cursor, a zero limit", body = ApiError),
    ),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn list(
    State(st): State<ApiState>,
    read: PeerRead,
    Query(p): Query<ListParams>,
) -> ApiResult<Response> {
    if p.limit == Some(0) {
        return Err(Failure::bad_request("limit must be at least 1"));
    }
    // A cursor is a run id, except in `last_run` listings (a group path).
    if let Some(cursor) = &p.cursor
        && !p.last_run
    {
        check_run_id(cursor)?;
    }
    let q = ListRunsQuery {
        group: p.group.clone(),
        phase: parse_list(&p.phase, "phase", RunPhase::parse)?,
        result: parse_list(&p.result, "result", RunResult::parse)?,
        last_run: p.last_run,
        cursor: p.cursor.clone(),
        limit: p.limit,
        asc: p.asc,
    };
    match read.history(&st).list(&q).await {
        Ok(page) => Ok(Json(page).into_response()),
        Err(e) => read.or_forward(&st, e).await,
    }
}

#[utoipa::path(
    post,
    path = "/runs/{id}/restart",
    operation_id = "restart_run",
    tag = "runs",
    summary = "A new run from a finished one",
    description = "From its failed tasks (and their descendants), from the start, or from named tasks. \
        The body may be omitted (from the failed tasks).",
    params(("id" = String, Path, description = "The run's id")),
    // A `ref`, not `Option<_>`: the body may be absent (not required), never `null`.
    request_body(
        content = ref("#/components/schemas/RestartRunRequest"),
        content_type = "application/json",
        description = "How to restart; without a body, from the failed tasks"
    ),
    responses(
        (status = 201, description = "The new run", body = RunResponse),
        (status = 400, description = "A bad request (unknown task, tasks with from_start)", body = ApiError),
        (status = 404, description = "No such run", body = ApiError),
        (status = 409, description = "The run cannot be restarted that way in its phase", body = ApiError),
    ),
    security(("bearer" = ["admin", "user"])),
)]
pub async fn restart(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Option<Json<RestartRunRequest>>,
) -> ApiResult<(StatusCode, Json<RunResponse>)> {
    check_run_id(&id)?;
    let (status, Json(resp)) = restart_run(st, id, body).await?;
    Ok((status, Json(auth::run_response_for(&caller, resp))))
}

async fn restart_run(
    st: ApiState,
    id: String,
    body: Option<Json<RestartRunRequest>>,
) -> ApiResult<(StatusCode, Json<RunResponse>)> {
    let req = body.map(|b| b.0).unwrap_or_default();
    let (old, old_config) = st.history.run_and_config(&id).await?;
    let (old, old_config) = (old.value, (*old_config).clone());
    let from = runservice::RestartFrom::of_request(req.from_start, &req.tasks)?;
    if let runservice::RestartFrom::Tasks(_) = from {
        runservice::check_restart(&old, &old_config, &from)?;
    } else if req.from_start {
        if !runservice::can_restart_from_scratch(&old) {
            return Err(Failure::new(
                cairn_client::ErrorCode::Conflict,
                format!(
                    "run {id} cannot be restarted from the start while it is {}",
                    old.phase.as_str()
                ),
            ));
        }
    } else if !runservice::can_restart_from_failed(&old) {
        return Err(Failure::new(
            cairn_client::ErrorCode::Conflict,
            format!(
                "run {id} cannot be restarted from its failed tasks (phase {}, result {}); use from_start",
                old.phase.as_str(),
                old.result.as_str()
            ),
        ));
    }
    let now = chrono::Utc::now();
    let mut failure = None;
    let created = st
        .dm
        .with_ctx(super::request_ctx())
        .create_run(&old.group, |new_id, counter| {
            let mut fresh = || uuid::Uuid::new_v4().to_string();
            let request = runservice::restart::Restart {
                old_run: &old,
                old_config: &old_config,
                from: &from,
                environment: req.environment.as_ref(),
                now,
            };
            match runservice::restart(&request, new_id, counter, &mut fresh) {
                Ok(pair) => pair,
                Err(e) => {
                    failure = Some(e);
                    // Never committed: the error below is returned instead.
                    (old_config.clone(), old.clone())
                }
            }
        })
        .await;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let created = created?;
    tracing::info!(run_id = %created.run.value.id, restarted_from = %id, "run restarted");
    Ok((
        StatusCode::CREATED,
        Json(RunResponse {
            run: created.run.value,
            run_config: created.config,
            pending: None,
        }),
    ))
}

/// Applies `f` to run `id` and writes it back, retrying concurrent changes within the
/// request's deadline.
/// Applies `f` to run `id` in the store. A run archived into a segment never changes:
/// `f` is tried on it so an action refused for a finished run is refused the same way,
/// and one that would change it is a conflict.
async fn update_run<F>(st: &ApiState, id: &str, f: F) -> Result<(), Failure>
where
    F: FnMut(&mut Run) -> Result<(), runservice::RunServiceError>,
{
    let mut f = f;
    let updated = st
        .dm
        .with_ctx(super::request_ctx())
        .update_run_with(id, |run| f(run).map_err(Failure::from))
        .await;
    match updated {
        Err(e) if e.0.code == cairn_client::ErrorCode::NotFound => {
            let mut run = st.history.run(id).await?.value;
            f(&mut run)?;
            Err(Failure::new(
                cairn_client::ErrorCode::Conflict,
                format!("run {id} is archived: it has finished and can no longer change"),
            ))
        }
        other => other.map(|_| ()),
    }
}

/// `PUT /runs/{id}/actions`: stop a running run, cancel a queued one.
#[utoipa::path(
    put,
    path = "/runs/{id}/actions",
    operation_id = "run_action",
    tag = "runs",
    summary = "Stop or cancel a run",
    params(("id" = String, Path, description = "The run's id")),
    request_body = RunActionRequest,
    responses(
        (status = 200, description = "The run after the action", body = RunResponse),
        (status = 400, description = "Not a run id, or a bad body", body = ApiError),
        (status = 404, description = "No such run", body = ApiError),
        (status = 409, description = "Not possible in the run's phase, or the run is archived", body = ApiError),
    ),
    security(("bearer" = ["admin", "user"])),
)]
pub async fn action(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<RunActionRequest>,
) -> ApiResult<Json<RunResponse>> {
    check_run_id(&id)?;
    update_run(&st, &id, |run| match req.action {
        RunAction::Stop => runservice::stop(run),
        RunAction::Cancel => runservice::cancel(run),
    })
    .await?;
    tracing::info!(run_id = %id, action = ?req.action, "run action");
    Ok(Json(auth::run_response_for(
        &caller,
        run_response(&st, &id).await?,
    )))
}

/// `PUT /runs/{id}/tasks/{task_id}/actions`: approve a task, or set its annotations.
#[utoipa::path(
    put,
    path = "/runs/{id}/tasks/{task_id}/actions",
    operation_id = "task_action",
    tag = "runs",
    summary = "Approve a task or set its annotations",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("task_id" = String, Path, description = "The task's id or name"),
    ),
    request_body = TaskActionRequest,
    responses(
        (status = 200, description = "The run after the action", body = RunResponse),
        (status = 400, description = "Not a run id, or a bad body", body = ApiError),
        (status = 404, description = "No such run or task", body = ApiError),
        (status = 409, description = "Not possible in the task's state, or the run is archived", body = ApiError),
    ),
    security(("bearer" = ["admin", "user"])),
)]
pub async fn task_action(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, task)): Path<(String, String)>,
    Json(req): Json<TaskActionRequest>,
) -> ApiResult<Json<RunResponse>> {
    check_run_id(&id)?;
    let config = st.history.run_config(&id).await?;
    let task_id = task_id(&config, &id, &task)?;
    update_run(&st, &id, |run| match &req {
        TaskActionRequest::Approve { approver } => {
            runservice::approve(run, &task_id, approver.as_deref())
        }
        TaskActionRequest::SetAnnotations { annotations } => {
            runservice::set_task_annotations(run, &task_id, annotations.clone())
        }
    })
    .await?;
    Ok(Json(auth::run_response_for(
        &caller,
        run_response(&st, &id).await?,
    )))
}

/// The id of a run's task named by its id or by its name.
pub(super) fn task_id(
    config: &RunConfig,
    run_id: &str,
    name_or_id: &str,
) -> Result<String, Failure> {
    if config.tasks.contains_key(name_or_id) {
        return Ok(name_or_id.to_string());
    }
    config
        .tasks
        .values()
        .find(|t| t.name == name_or_id)
        .map(|t| t.id.clone())
        .ok_or_else(|| Failure::not_found(format!("run {run_id} has no task {name_or_id:?}")))
}

#[derive(Debug, Default, Deserialize)]
pub struct EventParams {
    after: Option<u64>,
}

/// `GET /runs/events?after=SEQ`: every run event after `SEQ` (or `Last-Event-ID`),
/// then live ones, as server-sent events whose id is the sequence.
#[utoipa::path(
    get,
    path = "/runs/events",
    operation_id = "run_events",
    tag = "runs",
    summary = "Run events as server-sent events",
    description = "Every run event after `after` (or `Last-Event-ID`), then live ones. Each event's \
        `data` is a `RunEvent` as JSON and its `id` the event's sequence; a comment every 15 s keeps \
        the stream alive.",
    params(
        ("after" = Option<u64>, Query, description = "Send the events after this sequence first"),
        ("Last-Event-ID" = Option<u64>, Header, description = "As `after`, when `after` is not given (an SSE client's resume)"),
    ),
    responses(
        (status = 200, description = "The stream; each `data` is a `RunEvent`", content_type = "text/event-stream", body = String),
        (status = 429, description = "Too many streams for this credential or this node", body = ApiError),
    ),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn events(
    State(st): State<ApiState>,
    credential: super::streams::CredentialKey,
    headers: HeaderMap,
    Query(p): Query<EventParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let permit = st
        .streams
        .acquire(super::streams::StreamKind::Events, credential)?;
    let after = p.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    let (backlog, revision) = match after {
        Some(a) => st.history.events_after(a).await?,
        None => (Vec::new(), st.dm.kv().header().revision),
    };
    let mut watch = st.dm.watch_events(revision + 1);
    let stream = async_stream(move |tx| async move {
        let _permit = permit;
        for ev in backlog {
            if tx.send(sse_event(&ev)).await.is_err() {
                return;
            }
        }
        loop {
            let m = tokio::select! {
                _ = tx.closed() => return,
                m = watch.recv() => m,
            };
            let Some(m) = m else { return };
            match m {
                WatchMessage::Events { events, .. } => {
                    for e in events {
                        let Ok(ev) = crate::datamanager::events::event_from(
                            &e.kv.key,
                            &e.kv.value,
                            e.kv.mod_revision,
                        ) else {
                            continue;
                        };
                        if tx.send(sse_event(&ev)).await.is_err() {
                            return;
                        }
                    }
                }
                WatchMessage::Progress { .. } => {}
                WatchMessage::Canceled(_) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(ev: &cairn_client::run::RunEvent) -> Result<Event, Infallible> {
    Ok(Event::default()
        .id(ev.sequence.to_string())
        .data(serde_json::to_string(ev).unwrap_or_default()))
}

/// A stream fed by a producer task; the task ends when the consumer goes away.
pub(super) fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

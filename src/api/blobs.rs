//! Blob endpoints: step logs (live append by executors; read and follow by anyone, from
//! any byte offset, live or archived), workspace archives, caches (first writer wins,
//! prefix lookup takes the newest) and uploaded source snapshots.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_client::ApiError;
use cairn_client::ErrorCode;
use cairn_client::api::MAX_LOG_CHUNK_BYTES;
use cairn_client::api::SourceUploadResponse;
use cairn_client::api::{LOG_COMPLETE_HEADER, LogStep};
use cairn_client::runconfig::SourceRef;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiResult, Failure};
use super::forward::PeerRead;
use super::streams::{CredentialKey, StreamKind, StreamPermit};
use super::v1::ApiState;
use crate::datamanager::archives::ArchiveStore;
use crate::datamanager::logs::{LogError, LogId};

#[derive(Debug, Default, Deserialize)]
pub struct LogParams {
    step: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    end: bool,
}

fn log_step(step: &Option<String>) -> Result<LogStep, Failure> {
    match step.as_deref() {
        None => Err(Failure::bad_request(
            "step is required: `setup` or a step index",
        )),
        Some(n) => n
            .parse()
            .map_err(|e: cairn_client::api::BadLogStep| Failure::bad_request(e.to_string())),
    }
}

/// `GET /runs/{id}/tasks/{task_id}/logs?step=&offset=&follow=`. A read without `follow`
/// is answered by a peer while this node's index cannot read an archived run
/// (`super::forward`); a follow is a stream, never forwarded.
#[utoipa::path(
    get,
    path = "/runs/{id}/tasks/{task_id}/logs",
    operation_id = "read_log",
    tag = "logs",
    summary = "A step's log from a byte offset, or followed while it grows",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("task_id" = String, Path, description = "The task's id or name"),
        ("step" = String, Query, description = "`setup` or the step's index (0-based)"),
        ("offset" = Option<u64>, Query, description = "Start at this byte"),
        ("follow" = Option<bool>, Query, description = "Keep the body open and send the log as it grows, until it is complete (or the node's follow limit cuts it: resume from the offset reached)"),
    ),
    responses(
        (status = 200, description = "The log's bytes from `offset`", content_type = "text/plain; charset=utf-8", body = String,
            headers(("x-cairn-log-complete" = String, description = "`true` when the log was complete when the request arrived"))),
        (status = 400, description = "No or a bad `step`, not a run id", body = ApiError),
        (status = 404, description = "No such run, task or step", body = ApiError),
        (status = 416, description = "`offset` past the end of the log; `details.length` is its length", body = ApiError),
        (status = 429, description = "Too many follows for this credential or this node", body = ApiError),
    ),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn logs(
    State(st): State<ApiState>,
    credential: CredentialKey,
    read: PeerRead,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(p): Query<LogParams>,
) -> ApiResult<Response> {
    super::runs::check_run_id(&run_id)?;
    let step = log_step(&p.step)?;
    let read = if p.follow { read.local() } else { read };
    let (run, config) = match read.history(&st).run_and_config(&run_id).await {
        Ok(found) => found,
        Err(e) => return read.or_forward(&st, e).await,
    };
    let run = run.value;
    let task_id = super::runs::task_id(&config, &run_id, &task_id)?;
    let rt = run
        .tasks
        .get(&task_id)
        .ok_or_else(|| Failure::not_found(format!("run {run_id} has no task {task_id:?}")))?;
    if let LogStep::Step(n) = step
        && n >= rt.steps.len()
    {
        return Err(Failure::not_found(format!(
            "task {task_id} has {} steps; there is no step {n}",
            rt.steps.len()
        )));
    }
    let log = LogId { task_id, step };
    let complete = st.logs.is_complete(&log).await.map_err(log_failure)?;
    let body = if p.follow && !complete {
        let permit = st.streams.acquire(StreamKind::LogFollow, credential)?;
        if let Ok(len) = st.logs.len(&log).await
            && p.offset > len.saturating_add(MAX_FOLLOW_AHEAD)
        {
            return Err(Failure::new(
                ErrorCode::RangeNotSatisfiable,
                format!(
                    "offset {} is far past the end of the log ({len} bytes)",
                    p.offset
                ),
            )
            .with_details(serde_json::json!({ "length": len })));
        }
        Body::from_stream(bounded_follow(
            st.logs.follow(&log, p.offset),
            permit,
            st.streams.limits().max_follow,
        ))
    } else {
        Body::from_stream(st.logs.read(&log, p.offset).await.map_err(log_failure)?)
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if complete {
        resp.headers_mut()
            .insert(LOG_COMPLETE_HEADER, HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// How far past a live log's current end a follow may start (a client resuming at an
/// offset it computed); anything further is a 416.
const MAX_FOLLOW_AHEAD: u64 = 1 << 40;

/// A follow that holds its stream slot while it runs and is cut after `max` (with an
/// error, so that the client sees a broken stream to resume, not the end of the log).
fn bounded_follow(
    follow: crate::datamanager::logs::LogStream,
    permit: StreamPermit,
    max: std::time::Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let deadline = tokio::time::Instant::now() + max;
    futures::stream::unfold(Some((follow, permit)), move |state| async move {
        let (mut follow, permit) = state?;
        match tokio::time::timeout_at(deadline, follow.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some((follow, permit)))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::other(format!(
                    "log follow cut after its limit of {} s; resume from the offset reached",
                    max.as_secs()
                ))),
                None,
            )),
        }
    })
}

fn log_failure(e: LogError) -> Failure {
    match e {
        LogError::OffsetMismatch { expected } => Failure::new(
            ErrorCode::Conflict,
            format!("log offset mismatch: the log has {expected} bytes"),
        )
        .with_details(serde_json::json!({ "length": expected })),
        e @ LogError::OffsetPastEnd { len, .. } => {
            Failure::new(ErrorCode::RangeNotSatisfiable, e.to_string())
                .with_details(serde_json::json!({ "length": len }))
        }
        e @ LogError::Finished { .. } => Failure::new(ErrorCode::Conflict, e.to_string()),
        other => {
            tracing::error!(error = %other, "log storage failed");
            Failure::new(ErrorCode::Internal, other.to_string())
        }
    }
}

/// `POST /executors/{id}/tasks/{task_id}/logs?step=&offset=&end=`: appends a chunk of at
/// most [`MAX_LOG_CHUNK_BYTES`]. The body is taken unread: the caller's ownership of the
/// task is checked first, then a declared length over the limit is refused (413) before
/// reading, and a chunked body is refused as soon as it passes the limit.
#[utoipa::path(
    post,
    path = "/executors/{id}/tasks/{task_id}/logs",
    operation_id = "append_log",
    tag = "logs",
    summary = "Append a chunk to a step's log (the executor of the task)",
    params(
        ("id" = String, Path, description = "The executor's id"),
        ("task_id" = String, Path, description = "The executor task's id"),
        ("step" = String, Query, description = "`setup` or the step's index (0-based)"),
        ("offset" = Option<u64>, Query, description = "The log's length before this chunk (the append is refused otherwise)"),
        ("end" = Option<bool>, Query, description = "The step's log is complete after this chunk"),
    ),
    request_body(content(("application/octet-stream")), description = "At most `MAX_LOG_CHUNK_BYTES` (4 MiB) of log"),
    responses(
        (status = 204, description = "Appended"),
        (status = 400, description = "No or a bad `step`, bad ids", body = ApiError),
        (status = 404, description = "No such task", body = ApiError),
        (status = 409, description = "`offset` is not the log's length (`details.length` is), or the log is complete", body = ApiError),
        (status = 413, description = "The chunk is over the limit; `details.limit` is it", body = ApiError),
        (status = 416, description = "`offset` past the end of the log", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn append_log(
    State(st): State<ApiState>,
    Path((id, task_id)): Path<(String, String)>,
    Query(p): Query<LogParams>,
    body: Body,
) -> ApiResult<StatusCode> {
    let step = log_step(&p.step)?;
    super::executors::owned_task(&st, &id, &task_id).await?;
    let body = read_limited(body, MAX_LOG_CHUNK_BYTES).await?;
    let log = LogId { task_id, step };
    if !body.is_empty() {
        let bytes = body.len() as u64;
        st.logs
            .append(&log, p.offset, body)
            .await
            .map_err(log_failure)?;
        st.metrics.log_appended(bytes);
    }
    if p.end {
        // The step's log is complete: archive it now (one object; followers switch to it
        // without a gap). The scheduler archives again when the task ends, harmlessly,
        // which covers logs an executor never closed.
        st.logs.archive(&log).await.map_err(log_failure)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a whole body of at most `limit` bytes: a declared length (`Content-Length`) over
/// it is refused before anything is read, a streamed body as soon as it passes it.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Failure> {
    use axum::body::HttpBody as _;
    let too_large = || {
        Failure::new(
            ErrorCode::TooLarge,
            format!("the body is over the limit of {limit} bytes"),
        )
        .with_details(serde_json::json!({ "limit": limit }))
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut data = body.into_data_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = data.next().await {
        let chunk =
            chunk.map_err(|e| Failure::bad_request(format!("reading the body failed: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// `PUT /executors/{id}/tasks/{task_id}/archives/{step}`: a step's workspace archive.
#[utoipa::path(
    put,
    path = "/executors/{id}/tasks/{task_id}/archives/{step}",
    operation_id = "upload_archive",
    tag = "blobs",
    summary = "Store the workspace archive of a task's step (the executor of the task)",
    params(
        ("id" = String, Path, description = "The executor's id"),
        ("task_id" = String, Path, description = "The executor task's id"),
        ("step" = u32, Path, description = "The index of the `save_to_workspace` step"),
    ),
    request_body(content(("application/octet-stream")), description = "The archive (a tar)"),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "Bad ids", body = ApiError),
        (status = 404, description = "No such task", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn upload_archive(
    State(st): State<ApiState>,
    Path((id, task_id, step)): Path<(String, String, usize)>,
    body: Body,
) -> ApiResult<StatusCode> {
    super::executors::owned_task(&st, &id, &task_id).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    ArchiveStore::new(st.blobs.clone())
        .put(&task_id, step, stream)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an executor's blob reads and writes may touch: the runs of the tasks assigned to
/// it (`None`: the caller is not an executor, and its role already allows everything).
struct Scope {
    runs: Vec<(cairn_client::run::Run, cairn_client::runconfig::RunConfig)>,
}

impl Scope {
    async fn of(st: &ApiState, caller: &Caller) -> Result<Option<Scope>, Failure> {
        let Some(executor_id) = caller.executor_id() else {
            return Ok(None);
        };
        let (tasks, _) = st.dm.executor_tasks_of(executor_id).await?;
        let mut run_ids: Vec<String> = tasks.into_iter().map(|t| t.value.spec.run_id).collect();
        run_ids.sort();
        run_ids.dedup();
        let mut runs = Vec::with_capacity(run_ids.len());
        for id in run_ids {
            let run = match st.dm.run(&id).await {
                Ok(r) => r.value,
                Err(crate::datamanager::DmError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let config = st.dm.run_config(&id).await?;
            runs.push((run, config));
        }
        Ok(Some(Scope { runs }))
    }

    /// A task of one of these runs (its workspace archives).
    fn has_task(&self, task_id: &str) -> bool {
        self.runs
            .iter()
            .any(|(run, _)| run.tasks.contains_key(task_id))
    }

    /// A cache key in the cache namespace of one of these runs.
    fn has_cache(&self, key: &str) -> bool {
        self.runs.iter().any(|(run, config)| {
            let ns = crate::runservice::cache_namespace::cache_namespace(
                config.cache_group.as_deref(),
                &run.group,
            );
            key.strip_prefix(ns.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// The source snapshot of one of these runs.
    fn has_source(&self, object: &str) -> bool {
        self.runs.iter().any(|(_, config)| {
            matches!(&config.source, Some(SourceRef::Snapshot { object: o }) if o == object)
        })
    }
}

/// The 403 of an executor reaching for a blob none of its tasks has.
fn not_yours(caller: &Caller, what: String) -> Failure {
    Failure::new(
        ErrorCode::Forbidden,
        format!("{what} belongs to no task of {}", caller.describe()),
    )
}

/// Checks `caller` may touch the blob `allowed` judges (always, unless an executor).
async fn check_scope(
    st: &ApiState,
    caller: &Caller,
    what: impl FnOnce() -> String,
    allowed: impl FnOnce(&Scope) -> bool,
) -> Result<(), Failure> {
    match Scope::of(st, caller).await? {
        Some(scope) if !allowed(&scope) => Err(not_yours(caller, what())),
        _ => Ok(()),
    }
}

/// `GET /archives/{task_id}/{step}`: a workspace archive (an executor: of its tasks' runs).
#[utoipa::path(
    get,
    path = "/archives/{task_id}/{step}",
    operation_id = "download_archive",
    tag = "blobs",
    summary = "A step's workspace archive",
    params(
        ("task_id" = String, Path, description = "The task's id"),
        ("step" = u32, Path, description = "The index of the `save_to_workspace` step"),
    ),
    responses(
        (status = 200, description = "The archive (a tar)", content(("application/octet-stream"))),
        (status = 400, description = "Not a task id", body = ApiError),
        (status = 404, description = "No such archive", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn download_archive(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((task_id, step)): Path<(String, usize)>,
) -> ApiResult<Response> {
    super::executors::check_task_id(&task_id)?;
    check_scope(
        &st,
        &caller,
        || format!("task {task_id}'s archive"),
        |s| s.has_task(&task_id),
    )
    .await?;
    match ArchiveStore::new(st.blobs.clone())
        .get(&task_id, step)
        .await?
    {
        Some(archive) => Ok(Response::new(Body::from_stream(archive.data))),
        None => Err(Failure::not_found(format!(
            "task {task_id} has no workspace archive of step {step}"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CacheParams {
    #[serde(default)]
    prefix: bool,
}

/// `HEAD /caches/{key}`: whether a cache exists.
#[utoipa::path(
    head,
    path = "/caches/{key}",
    operation_id = "cache_exists",
    tag = "blobs",
    summary = "Whether a cache exists",
    params(
        ("key" = String, Path, description = "The cache key (under a cache namespace of the caller's runs, for an executor)"),
        ("prefix" = Option<bool>, Query, description = "Any key that starts with `key`"),
    ),
    responses(
        (status = 200, description = "It exists"),
        (status = 404, description = "It does not (no body: a HEAD)"),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn head_cache(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Query(p): Query<CacheParams>,
) -> ApiResult<StatusCode> {
    check_scope(
        &st,
        &caller,
        || format!("cache {key:?}"),
        |s| s.has_cache(&key),
    )
    .await?;
    if st.caches.exists(&key, p.prefix).await? {
        Ok(StatusCode::OK)
    } else {
        Err(Failure::not_found(format!("cache {key:?} not found")))
    }
}

/// `GET /caches/{key}`: a cache (with `prefix`, the newest whose key starts with `key`).
#[utoipa::path(
    get,
    path = "/caches/{key}",
    operation_id = "download_cache",
    tag = "blobs",
    summary = "A cache",
    params(
        ("key" = String, Path, description = "The cache key (under a cache namespace of the caller's runs, for an executor)"),
        ("prefix" = Option<bool>, Query, description = "The newest cache whose key starts with `key`"),
    ),
    responses(
        (status = 200, description = "The cache (a tar)", content(("application/octet-stream")),
            headers(("x-cairn-cache-key" = String, description = "The key of the cache sent"))),
        (status = 400, description = "A bad key", body = ApiError),
        (status = 404, description = "No such cache", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn get_cache(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Query(p): Query<CacheParams>,
) -> ApiResult<Response> {
    check_scope(
        &st,
        &caller,
        || format!("cache {key:?}"),
        |s| s.has_cache(&key),
    )
    .await?;
    match st.caches.get(&key, p.prefix).await? {
        Some(hit) => {
            let mut resp = Response::new(Body::from_stream(hit.data));
            if let Ok(v) = HeaderValue::from_str(&hit.key) {
                resp.headers_mut().insert("x-cairn-cache-key", v);
            }
            Ok(resp)
        }
        None => Err(Failure::not_found(format!("cache {key:?} not found"))),
    }
}

/// `POST /caches/{key}`: stores a cache; the first writer of a key wins.
#[utoipa::path(
    post,
    path = "/caches/{key}",
    operation_id = "upload_cache",
    tag = "blobs",
    summary = "Store a cache (the first writer of a key wins)",
    params(("key" = String, Path, description = "The cache key (under a cache namespace of the caller's runs, for an executor)")),
    request_body(content(("application/octet-stream")), description = "The cache (a tar)"),
    responses(
        (status = 201, description = "Stored"),
        (status = 304, description = "A cache of this key exists already; this one was not kept"),
        (status = 400, description = "A bad key", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn put_cache(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    check_scope(
        &st,
        &caller,
        || format!("cache {key:?}"),
        |s| s.has_cache(&key),
    )
    .await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    if st.caches.put(&key, stream).await? {
        Ok(StatusCode::CREATED.into_response())
    } else {
        Ok(StatusCode::NOT_MODIFIED.into_response())
    }
}

/// `POST /sources`: a working-tree snapshot for a direct run.
#[utoipa::path(
    post,
    path = "/sources",
    operation_id = "upload_source",
    tag = "blobs",
    summary = "Store a working-tree snapshot for a run's `source`",
    request_body(content(("application/octet-stream")), description = "The snapshot (a tar)"),
    responses(
        (status = 201, description = "Where it was stored: give it as the run request's `source`", body = SourceUploadResponse),
    ),
    security(("bearer" = ["admin", "user"])),
)]
pub async fn upload_source(
    State(st): State<ApiState>,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<SourceUploadResponse>)> {
    let object = format!("sources/{}.tar", uuid::Uuid::new_v4());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    st.blobs.put_stream(&object, stream).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SourceUploadResponse {
            source: SourceRef::Snapshot { object },
        }),
    ))
}

/// `GET /sources/{object}`: a working-tree snapshot (an executor: of its tasks' runs).
#[utoipa::path(
    get,
    path = "/sources/{object}",
    operation_id = "download_source",
    tag = "blobs",
    summary = "A working-tree snapshot",
    params(("object" = String, Path, description = "The snapshot's object (`sources/<uuid>.tar`, or its name within `sources/`)")),
    responses(
        (status = 200, description = "The snapshot (a tar)", content(("application/octet-stream"))),
        (status = 400, description = "A bad object name", body = ApiError),
        (status = 404, description = "No such snapshot", body = ApiError),
    ),
    security(("bearer" = ["admin", "executor"])),
)]
pub async fn download_source(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(object): Path<String>,
) -> ApiResult<Response> {
    let key = if object.starts_with("sources/") {
        object
    } else {
        format!("sources/{object}")
    };
    if key.contains("..") {
        return Err(Failure::bad_request("bad source object name"));
    }
    check_scope(
        &st,
        &caller,
        || format!("source {key}"),
        |s| s.has_source(&key),
    )
    .await?;
    let stream = st.blobs.get(&key).await?;
    Ok(Response::new(Body::from_stream(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_or_missing_step_is_a_bad_request_naming_it() {
        assert_eq!(
            log_step(&Some("setup".into())).map_err(|f| f.0),
            Ok(LogStep::Setup)
        );
        assert_eq!(
            log_step(&Some("3".into())).map_err(|f| f.0),
            Ok(LogStep::Step(3))
        );
        let bad = log_step(&Some("x".into())).expect_err("not a step").0;
        assert_eq!(bad.code, ErrorCode::BadRequest);
        assert_eq!(
            bad.message,
            "step \"x\" is neither `setup` nor a step index"
        );
        let missing = log_step(&None).expect_err("no step").0;
        assert_eq!(missing.code, ErrorCode::BadRequest);
        assert_eq!(missing.message, "step is required: `setup` or a step index");
    }
}

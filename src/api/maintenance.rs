//! Maintenance, export and import endpoints. They answer in both modes (export) or only in
//! maintenance (import); turning maintenance on or off is a key in the store that every
//! node follows on its own.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cairn_client::ApiError;
use cairn_client::ErrorCode;
use cairn_client::api::{ImportResponse, MaintenanceStatus};
use futures::StreamExt;

use super::error::{ApiResult, Failure};
use super::v1::ApiState;
use crate::datamanager::exchange::{ExchangeError, Validator};
use crate::datamanager::segments::SegmentLimits;

#[utoipa::path(
    get,
    path = "/maintenance",
    operation_id = "maintenance_status",
    tag = "maintenance",
    summary = "Whether maintenance is requested, and each live node's mode",
    responses((status = 200, description = "The status", body = MaintenanceStatus)),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn status(State(st): State<ApiState>) -> ApiResult<Json<MaintenanceStatus>> {
    Ok(Json(st.dm.maintenance_status().await?))
}

#[utoipa::path(
    put,
    path = "/maintenance",
    operation_id = "enable_maintenance",
    tag = "maintenance",
    summary = "Request maintenance mode (every node follows on its own)",
    responses((status = 204, description = "Requested")),
    security(("bearer" = ["admin"])),
)]
pub async fn enable(State(st): State<ApiState>) -> ApiResult<StatusCode> {
    st.dm
        .with_ctx(super::request_ctx())
        .set_maintenance(true)
        .await?;
    tracing::info!("maintenance mode requested");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/maintenance",
    operation_id = "disable_maintenance",
    tag = "maintenance",
    summary = "End maintenance mode",
    responses((status = 204, description = "Ended")),
    security(("bearer" = ["admin"])),
)]
pub async fn disable(State(st): State<ApiState>) -> ApiResult<StatusCode> {
    st.dm
        .with_ctx(super::request_ctx())
        .set_maintenance(false)
        .await?;
    tracing::info!("maintenance mode ended");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ExportParams {
    /// Keep the run configs' secrets (environment values, registry credentials).
    #[serde(default)]
    include_secrets: bool,
}

/// `GET /export?include_secrets=`: the datamanager's contents, streamed, secrets redacted
/// unless asked for; a failure mid-way aborts the body, so the client sees a truncated
/// (and therefore refused) export.
#[utoipa::path(
    get,
    path = "/export",
    operation_id = "export",
    tag = "maintenance",
    summary = "The datamanager's contents, streamed (answers in maintenance too)",
    params(("include_secrets" = Option<bool>, Query, description = "Keep the run configs' secrets (environment values, registry credentials)")),
    responses((status = 200, description = "One JSON object a line, signed; a failure mid-way truncates it", content(("application/x-ndjson")))),
    security(("bearer" = ["admin"])),
)]
pub async fn export(
    State(st): State<ApiState>,
    axum::extract::Query(p): axum::extract::Query<ExportParams>,
) -> ApiResult<Response> {
    let stream = st
        .dm
        .export(st.blobs.clone(), st.export_key.to_vec(), p.include_secrets)
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// An import's failure: the datamanager's as usual; a segment not written is object
/// storage failing (500), logged here.
fn import_failure(e: ExchangeError) -> Failure {
    match e {
        ExchangeError::Dm(e) => e.into(),
        e @ (ExchangeError::Segment { .. } | ExchangeError::Worker(_)) => {
            tracing::error!(error = %e, "import failed");
            Failure::new(ErrorCode::Internal, e.to_string())
        }
    }
}

/// `POST /import`: only in maintenance. The whole stream is validated (while spooled to
/// a temporary file) before anything changes; archived runs go into new segments.
#[utoipa::path(
    post,
    path = "/import",
    operation_id = "import",
    tag = "maintenance",
    summary = "Replace the contents with an export (only in maintenance)",
    request_body(content(("application/x-ndjson")), description = "An export of `GET /export`"),
    responses(
        (status = 200, description = "Imported", body = ImportResponse),
        (status = 400, description = "Not a valid export (bad line, signature, order)", body = ApiError),
        (status = 409, description = "Not in maintenance mode", body = ApiError),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn import(State(st): State<ApiState>, body: Body) -> ApiResult<Json<ImportResponse>> {
    let not_in_maintenance = || {
        Failure::new(
            ErrorCode::Conflict,
            "import is accepted only in maintenance mode (cairn maintenance on, then wait until every node has switched)",
        )
    };
    if !st.dm.maintenance_requested().await? || !*st.maintenance.borrow() {
        return Err(not_in_maintenance());
    }
    let spool = tempfile::NamedTempFile::new()
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("spooling the import: {e}")))?;
    let file = spool
        .reopen()
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("spooling the import: {e}")))?;
    let mut v = Validator::new(std::io::BufWriter::new(file), Some(&st.export_key));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Failure::bad_request(format!("reading the import: {e}")))?;
        v.push(&chunk)?;
    }
    v.finish()?;
    if !st.dm.maintenance_requested().await? {
        return Err(not_in_maintenance());
    }
    let summary = st
        .dm
        .import(&st.blobs, spool.path(), SegmentLimits::default())
        .await
        .map_err(import_failure)?;
    tracing::info!(
        entries = summary.entries,
        runs = summary.runs,
        archived = summary.archived,
        segments = summary.segments,
        "import applied"
    );
    Ok(Json(ImportResponse {
        entries: summary.entries,
        runs: summary.runs,
    }))
}

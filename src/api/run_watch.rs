//! `GET /api/v1/runs/{id}/watch`: one run as server-sent events, for clients that show a
//! run while it goes (`cairn run`, `cairn runs restart --follow`, a browser).
//!
//! Each event is the whole [`RunResponse`] (redacted for the caller as `GET /runs/{id}`
//! is), its id the run's mod revision. The first event is the run as it is now; another
//! follows each change of the run, and each change of its pending reasons, which depend
//! on other objects (the group's running run, executors) and are re-read every
//! [`PENDING_REFRESH`] while the run is not finished. An event equal to the last one sent
//! is not sent again. The stream ends after the event that shows the run finished, or when
//! the node's follow limit (`--max-follow-secs`) is reached: a client that reopens it gets
//! the current state first, so a cut costs nothing but a request.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use cairn_client::ApiError;
use cairn_client::api::RunResponse;
use futures::Stream;
use store::WatchMessage;
use tokio::sync::mpsc::Sender;

use super::auth::{self, Caller};
use super::error::ApiResult;
use super::runs::{async_stream, check_run_id, run_response_at, run_response_with};
use super::streams::{CredentialKey, StreamKind};
use super::v1::ApiState;

/// How often the pending reasons of a run that is not finished are read again.
pub const PENDING_REFRESH: Duration = Duration::from_secs(1);

/// `GET /runs/{id}/watch`.
#[utoipa::path(
    get,
    path = "/runs/{id}/watch",
    operation_id = "watch_run",
    tag = "runs",
    summary = "One run as server-sent events, until it finishes",
    description = "Each event's `data` is the whole `RunResponse` (as `GET /runs/{id}`), its `id` the \
        run's mod revision: the run as it is now first, then one per change of the run or of its \
        pending reasons. The stream ends after the event that shows the run finished, or at the \
        node's follow limit (reopen it: the current state comes first).",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The stream; each `data` is a `RunResponse`", content_type = "text/event-stream", body = String),
        (status = 400, description = "Not a run id", body = ApiError),
        (status = 404, description = "No such run", body = ApiError),
        (status = 429, description = "Too many streams for this credential or this node", body = ApiError),
    ),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn watch(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    credential: CredentialKey,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    check_run_id(&id)?;
    let permit = st.streams.acquire(StreamKind::RunWatch, credential)?;
    // Read before the watch starts: a missing run is a 404, not an empty stream.
    let (first, revision) = run_response_at(&st, &id).await?;
    let mut changes = st.dm.watch_run(&id, revision + 1);
    let limit = st.streams.limits().max_follow;
    let stream = async_stream(move |tx| async move {
        let _permit = permit;
        let cut = tokio::time::sleep(limit);
        tokio::pin!(cut);
        let mut refresh = tokio::time::interval(PENDING_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        // The config never changes: read once, only the run and its reasons again.
        let config = first.run_config.clone();
        let mut last = auth::run_response_for(&caller, first);
        if !send(&tx, &last, revision).await || last.run.phase.is_finished() {
            return;
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = &mut cut => return,
                m = changes.recv() => match m {
                    Some(WatchMessage::Events { .. }) => {}
                    Some(WatchMessage::Progress { .. }) => continue,
                    // Compacted past us, or the node is going away: the client reopens.
                    Some(WatchMessage::Canceled(_)) | None => return,
                },
                _ = refresh.tick() => {}
            }
            // Deleted (or unreadable) meanwhile: end; a reopen tells the client why.
            let Ok((next, revision)) = run_response_with(&st, &id, config.clone()).await else {
                return;
            };
            let next = auth::run_response_for(&caller, next);
            if next != last {
                if !send(&tx, &next, revision).await {
                    return;
                }
                last = next;
            }
            if last.run.phase.is_finished() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Sends one state; false when the client has gone.
async fn send(tx: &Sender<Result<Event, Infallible>>, resp: &RunResponse, revision: i64) -> bool {
    let event = Event::default()
        .id(revision.to_string())
        .data(serde_json::to_string(resp).unwrap_or_default());
    tx.send(Ok(event)).await.is_ok()
}

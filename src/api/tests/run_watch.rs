//! `GET /runs/{id}/watch`: the run now, then each change pushed as it is written, the
//! stream ending after the run is finished; a missing or malformed run id is refused
//! before any stream starts.

use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{Method, Request, StatusCode, header};
use cairn_client::api::RunResponse;
use cairn_client::run::{RunPhase, RunResult};
use cairn_client::sse::{SseEvent, SseParser};
use futures::StreamExt;
use tower::ServiceExt;

use super::{ADMIN, Api};
use crate::datamanager::testing::ONE_TASK;

/// How long a test waits for an event that must come (a failure bound, not a pace).
const PATIENCE: Duration = Duration::from_secs(30);

/// An open watch: its body and the events parsed from it.
struct Watch {
    body: BodyDataStream,
    parser: SseParser,
    ready: Vec<SseEvent>,
}

impl Watch {
    async fn open(api: &Api, id: &str) -> Watch {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("/api/v1/runs/{id}/watch"))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .expect("a request");
        let resp = api
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router's errors are responses");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        Watch {
            body: resp.into_body().into_data_stream(),
            parser: SseParser::new(),
            ready: Vec::new(),
        }
    }

    /// The next state sent, with its event id; `None` when the stream has ended.
    async fn next(&mut self) -> Option<(RunResponse, i64)> {
        loop {
            if !self.ready.is_empty() {
                let event = self.ready.remove(0);
                let state = serde_json::from_str(&event.data).expect("a RunResponse");
                let id = event.id.expect("an id").parse().expect("a revision");
                return Some((state, id));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("an event or the end of the stream in time")?
                .expect("a body chunk");
            self.ready.extend(self.parser.push(&chunk));
        }
    }
}

#[tokio::test]
async fn a_watch_sends_the_run_then_each_change_and_ends_when_it_is_finished() {
    let api = Api::start().await;
    let runs = api.create_runs(ONE_TASK).await;
    let id = runs[0]["run"]["id"].as_str().expect("a run id").to_string();
    let mut watch = Watch::open(&api, &id).await;

    let (first, first_rev) = watch.next().await.expect("the run as it is now");
    assert_eq!(first.run.id, id);
    assert_eq!(first.run.phase, RunPhase::Queued);
    assert!(!first.run.stop);
    assert_eq!(first.run_config.tasks.len(), 1);

    // A change of the run (a flag, as `stop` writes it) is pushed.
    let dm = api.dm();
    let before = dm.run(&id).await.expect("the run");
    let mut stopped = before.value.clone();
    stopped.stop = true;
    let rev = dm.update_run(&before, &stopped).await.expect("written");
    let (second, second_rev) = watch.next().await.expect("the change");
    assert!(second.run.stop);
    assert_eq!(second_rev, rev);
    assert!(second_rev > first_rev);

    // Finished: sent, then the stream ends.
    let before = dm.run(&id).await.expect("the run");
    let mut finished = before.value.clone();
    finished.phase = RunPhase::Finished;
    finished.result = RunResult::Stopped;
    dm.update_run(&before, &finished).await.expect("written");
    let (last, _) = watch.next().await.expect("the finished run");
    assert_eq!(last.run.phase, RunPhase::Finished);
    assert_eq!(last.run.result, RunResult::Stopped);
    assert!(watch.next().await.is_none(), "the stream ends with the run");
}

#[tokio::test]
async fn a_finished_run_is_sent_once_and_the_stream_ends() {
    let api = Api::start().await;
    let runs = api.create_runs(ONE_TASK).await;
    let id = runs[0]["run"]["id"].as_str().expect("a run id").to_string();
    let dm = api.dm();
    let before = dm.run(&id).await.expect("the run");
    let mut finished = before.value.clone();
    finished.phase = RunPhase::Finished;
    finished.result = RunResult::Failed;
    dm.update_run(&before, &finished).await.expect("written");

    let mut watch = Watch::open(&api, &id).await;
    let (only, _) = watch.next().await.expect("the run");
    assert_eq!(only.run.result, RunResult::Failed);
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn a_missing_or_malformed_run_is_refused_before_any_stream() {
    let api = Api::start().await;
    api.call(
        Method::GET,
        "/runs/0000000000000042/watch",
        Some(ADMIN),
        None,
    )
    .await
    .assert_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "run 0000000000000042 not found",
    );
    let reply = api
        .call(Method::GET, "/runs/..%2Fx/watch", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert_eq!(reply.json()["code"], "bad_request");
    let reply = api
        .call(Method::GET, "/runs/0000000000000001/watch", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

//! One run as it goes ([`RunClient::watch_run`], `GET /runs/{id}/watch`): server-sent
//! events, each the whole [`RunResponse`], reopened when the connection drops or the
//! server cuts a long watch. Every (re)opened stream starts with the run's current state,
//! so a reopen misses nothing a watcher needs. The stream ends after the run is finished.
//! Like [`crate::events`], a resumable stream over one endpoint of [`RunClient`].

use std::collections::VecDeque;

use futures::stream::Stream;

use crate::api::RunResponse;
use crate::error::ClientError;
use crate::http::{Call, RunClient, success};
use crate::reopen::Reopening;

impl RunClient {
    /// `GET /runs/{id}/watch`: the run now, then again at each change (its tasks, steps,
    /// approvals, pending reasons), until it is finished; the last item is the finished
    /// run. A dropped stream is reopened (failures to reopen are yielded, with a growing
    /// pause between attempts); an error that retrying cannot fix (the run does not exist,
    /// unauthorized…) is yielded last.
    pub fn watch_run(
        &self,
        id: &str,
    ) -> impl Stream<Item = Result<RunResponse, ClientError>> + Send + 'static {
        let state = Watch {
            client: self.clone(),
            id: id.to_string(),
            body: Reopening::new(),
            ready: VecDeque::new(),
            finished: false,
            done: false,
        };
        futures::stream::unfold(state, Watch::next)
    }

    async fn open_watch(&self, id: &str) -> Result<reqwest::Response, ClientError> {
        success(
            self.send(Call::get(&["runs", id, "watch"]).streamed())
                .await?,
        )
        .await
    }
}

/// The state of a [`RunClient::watch_run`] stream between items.
struct Watch {
    client: RunClient,
    id: String,
    body: Reopening,
    /// Decoded and not yet yielded.
    ready: VecDeque<Result<RunResponse, ClientError>>,
    /// The last state yielded showed the run finished: end once `ready` is empty.
    finished: bool,
    done: bool,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<RunResponse, ClientError>, Watch)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                if let Ok(r) = &item {
                    self.finished = r.run.phase.is_finished();
                }
                return Some((item, self));
            }
            if self.done || self.finished {
                return None;
            }
            let (client, id) = (&self.client, self.id.as_str());
            let events = match self.body.next(|| client.open_watch(id)).await {
                Ok(Some(events)) => events,
                // Dropped, or cut by the server before the run finished: reopened.
                Ok(None) => continue,
                Err(e) => {
                    self.done = !e.is_transient();
                    return Some((Err(e), self));
                }
            };
            for event in events {
                self.body.delivered();
                self.ready
                    .push_back(
                        serde_json::from_str::<RunResponse>(&event.data).map_err(|e| {
                            ClientError::Decode(format!(
                                "run {} at revision {}: {e}",
                                self.id,
                                event.id.unwrap_or_default()
                            ))
                        }),
                    );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, TryStreamExt};

    use super::*;
    use crate::error::ErrorCode;
    use crate::http::test_server::{json, serve, until_close};
    use crate::run::RunPhase;

    fn client(url: &str) -> RunClient {
        RunClient::new(&[url.to_string()], Some("s3cret".into())).expect("valid URL")
    }

    fn state(phase: &str) -> String {
        format!(
            r#"{{"run":{{"id":"0000000000000001","counter":1,"name":"r","group":"/user/u","phase":"{phase}","result":"unknown","tasks":{{}},"enqueue_time":null}},"run_config":{{"id":"0000000000000001","name":"r","group":"/user/u","tasks":{{}}}}}}"#
        )
    }

    fn sse(phases: &[&str]) -> Vec<u8> {
        let mut body = String::from(": keep-alive\n\n");
        for (i, phase) in phases.iter().enumerate() {
            body.push_str(&format!("id: {}\ndata: {}\n\n", i + 1, state(phase)));
        }
        body.into_bytes()
    }

    #[tokio::test]
    async fn a_cut_watch_is_reopened_and_the_stream_ends_with_the_finished_run() {
        let server = serve(|_, index| {
            let sse_headers = "Content-Type: text/event-stream\r\n";
            match index {
                // Cut before the run finished (the server's follow limit).
                0 => until_close(200, sse_headers, &sse(&["queued", "running"])),
                _ => until_close(200, sse_headers, &sse(&["running", "finished"])),
            }
        })
        .await;
        let states: Vec<RunResponse> = client(&server.url)
            .watch_run("0000000000000001")
            .try_collect()
            .await
            .expect("every state");
        let phases: Vec<RunPhase> = states.iter().map(|s| s.run.phase).collect();
        assert_eq!(
            phases,
            vec![
                RunPhase::Queued,
                RunPhase::Running,
                RunPhase::Running,
                RunPhase::Finished
            ]
        );
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2, "nothing is opened after the run finished");
        assert_eq!(reqs[0].path(), "/api/v1/runs/0000000000000001/watch");
    }

    #[tokio::test]
    async fn a_missing_run_ends_the_watch_with_its_error() {
        let server =
            serve(|_, _| json(404, r#"{"code":"not_found","message":"no such run"}"#)).await;
        let items: Vec<Result<RunResponse, ClientError>> = client(&server.url)
            .watch_run("0000000000000009")
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        let e = items
            .into_iter()
            .next()
            .expect("one item")
            .expect_err("an error");
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
    }
}

//! The run-event stream ([`RunClient::run_events`], `GET /runs/events`): server-sent
//! events decoded as [`RunEvent`]s, reopened after the last sequence delivered when the
//! connection drops, so no event is lost or repeated. Like [`crate::logs`], a resumable
//! stream over one endpoint of [`RunClient`].

use std::collections::VecDeque;

use futures::stream::Stream;

use crate::error::ClientError;
use crate::http::{Call, RunClient, success};
use crate::reopen::Reopening;
use crate::run::RunEvent;

impl RunClient {
    /// `GET /runs/events`: every run event after sequence `after` (`Some(0)`: all retained
    /// ones; `None`: only events from now on), for ever. A dropped stream is reopened after the last sequence seen, so no
    /// event is lost or repeated. Failures to reopen are yielded (the stream then keeps
    /// trying, with a growing pause); an error that retrying cannot fix (bad request,
    /// unauthorized…) is yielded last.
    pub fn run_events(
        &self,
        after: Option<u64>,
    ) -> impl Stream<Item = Result<RunEvent, ClientError>> + Send + 'static {
        let state = Events {
            client: self.clone(),
            after,
            body: Reopening::new(),
            ready: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(state, Events::next)
    }

    async fn open_events(&self, after: Option<u64>) -> Result<reqwest::Response, ClientError> {
        let mut call = Call::get(&["runs", "events"]).streamed();
        if let Some(after) = after {
            call = call.query("after", after);
        }
        success(self.send(call).await?).await
    }
}

/// The state of a [`RunClient::run_events`] stream between items.
struct Events {
    client: RunClient,
    /// The last sequence delivered.
    after: Option<u64>,
    body: Reopening,
    ready: VecDeque<Result<RunEvent, ClientError>>,
    done: bool,
}

impl Events {
    async fn next(mut self) -> Option<(Result<RunEvent, ClientError>, Events)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            let (client, after) = (&self.client, self.after);
            let events = match self.body.next(|| client.open_events(after)).await {
                Ok(Some(events)) => events,
                // Dropped or ended: reopened after the last event seen.
                Ok(None) => continue,
                Err(e) => {
                    self.done = !e.is_transient();
                    return Some((Err(e), self));
                }
            };
            for event in events {
                match serde_json::from_str::<RunEvent>(&event.data) {
                    Ok(ev) if self.after.is_some_and(|a| ev.sequence <= a) => {}
                    Ok(ev) => {
                        self.after = Some(ev.sequence);
                        self.body.delivered();
                        self.ready.push_back(Ok(ev));
                    }
                    Err(e) => self.ready.push_back(Err(ClientError::Decode(format!(
                        "run event {:?}: {e}",
                        event.id.unwrap_or_default()
                    )))),
                }
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

    fn client(urls: &[&str]) -> RunClient {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        RunClient::new(&urls, Some("s3cret".into())).expect("valid URLs")
    }

    fn event_json(sequence: u64) -> String {
        format!(
            r#"{{"sequence":{sequence},"run_id":"r{sequence}","group":"/project/p1","phase":"running","result":"unknown","time":"2026-01-01T00:00:00Z"}}"#
        )
    }

    fn sse(events: &[u64]) -> Vec<u8> {
        let mut body = String::from(": keep-alive\n\n");
        for seq in events {
            body.push_str(&format!("id: {seq}\ndata: {}\n\n", event_json(*seq)));
        }
        body.into_bytes()
    }

    #[tokio::test]
    async fn run_events_resume_after_the_last_sequence_when_the_stream_closes() {
        let server = serve(|_, index| {
            let sse_headers = "Content-Type: text/event-stream\r\n";
            match index {
                0 => until_close(200, sse_headers, &sse(&[1, 2])),
                // The resumed stream repeats event 2: it must not be delivered twice.
                _ => until_close(200, sse_headers, &sse(&[2, 3])),
            }
        })
        .await;
        let events: Vec<RunEvent> = client(&[&server.url])
            .run_events(None)
            .take(3)
            .try_collect()
            .await
            .expect("three events");
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![1, 2, 3]);
        assert_eq!(events[2].run_id, "r3");
        let reqs = server.requests();
        assert_eq!(reqs[0].path(), "/api/v1/runs/events");
        assert_eq!(reqs[0].query_value("after"), None);
        assert_eq!(reqs[1].query_value("after").as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn run_events_end_with_an_error_that_retrying_cannot_fix() {
        let server =
            serve(|_, _| json(401, r#"{"code":"unauthorized","message":"bad token"}"#)).await;
        let items: Vec<Result<RunEvent, ClientError>> =
            client(&[&server.url]).run_events(Some(7)).collect().await;
        assert_eq!(items.len(), 1);
        let e = items
            .into_iter()
            .next()
            .expect("one item")
            .expect_err("an error");
        assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
        assert_eq!(
            server.requests()[0].query_value("after").as_deref(),
            Some("7")
        );
    }
}

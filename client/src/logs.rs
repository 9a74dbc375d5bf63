//! Reading a task step's log (which log: [`LogStep`]): the stream of its bytes
//! ([`LogStream`]), which reopens a dropped connection at the byte offset it reached so the
//! reader sees every byte once. A body that ends cleanly is the end of the log (when
//! following) or of what was written so far; only a broken connection is resumed.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::api::{LOG_COMPLETE_HEADER, LogStep};
use crate::error::{ClientError, transport};
use crate::http::{Call, RunClient, success};

/// Reopens in a row that may bring no new byte before the stream gives up.
const MAX_FRUITLESS_REOPENS: u32 = 3;

impl RunClient {
    /// `GET /runs/{run_id}/tasks/{task_id}/logs`: a step's log from byte `offset`; with
    /// `follow`, until the log is complete. A stream dropped midway is reopened at the
    /// offset reached.
    pub async fn logs(
        &self,
        run_id: &str,
        task_id: &str,
        step: LogStep,
        offset: u64,
        follow: bool,
    ) -> Result<LogStream, ClientError> {
        LogStream::open(self.clone(), run_id, task_id, step, offset, follow).await
    }

    /// Opens one log request (see [`RunClient::logs`]).
    async fn open_logs(
        &self,
        run_id: &str,
        task_id: &str,
        step: LogStep,
        offset: u64,
        follow: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let mut call = Call::get(&["runs", run_id, "tasks", task_id, "logs"])
            .query("step", step)
            .query("offset", offset)
            .streamed();
        if follow {
            call = call.query("follow", true);
        }
        success(self.send(call).await?).await
    }
}

/// The bytes of one log from an offset; see [`RunClient::logs`].
pub struct LogStream {
    complete: bool,
    inner: BoxStream<'static, Result<Bytes, ClientError>>,
}

impl fmt::Debug for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStream")
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

impl LogStream {
    pub(crate) async fn open(
        client: RunClient,
        run_id: &str,
        task_id: &str,
        step: LogStep,
        offset: u64,
        follow: bool,
    ) -> Result<LogStream, ClientError> {
        let resp = client
            .open_logs(run_id, task_id, step, offset, follow)
            .await?;
        let complete = resp
            .headers()
            .get(LOG_COMPLETE_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let reader = Reader {
            client,
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
            step,
            offset,
            follow,
            body: Some(resp.bytes_stream().boxed()),
            fruitless: 0,
        };
        Ok(LogStream {
            complete,
            inner: futures::stream::unfold(reader, Reader::next).boxed(),
        })
    }

    /// The log was already complete when the request arrived: the stream ends with its
    /// last byte.
    pub fn already_complete(&self) -> bool {
        self.complete
    }
}

impl Stream for LogStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The state of a [`LogStream`] between chunks.
struct Reader {
    client: RunClient,
    run_id: String,
    task_id: String,
    step: LogStep,
    /// Offset of the next byte to deliver.
    offset: u64,
    follow: bool,
    /// `None` after the body broke: reopen before reading on.
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    fruitless: u32,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Bytes, ClientError>, Reader)> {
        loop {
            let Some(body) = self.body.as_mut() else {
                let opened = self
                    .client
                    .open_logs(
                        &self.run_id,
                        &self.task_id,
                        self.step,
                        self.offset,
                        self.follow,
                    )
                    .await;
                match opened {
                    Ok(resp) => self.body = Some(resp.bytes_stream().boxed()),
                    Err(e) => return Some((Err(e), self.finished())),
                }
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    self.offset += chunk.len() as u64;
                    self.fruitless = 0;
                    return Some((Ok(chunk), self));
                }
                None => return None,
                Some(Err(e)) => {
                    self.body = None;
                    if self.fruitless >= MAX_FRUITLESS_REOPENS {
                        return Some((Err(transport(e)), self.finished()));
                    }
                    self.fruitless += 1;
                }
            }
        }
    }

    /// A reader whose next poll ends the stream.
    fn finished(mut self) -> Reader {
        self.body = Some(futures::stream::empty().boxed());
        self
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::http::test_server::{Reply, reply, serve};

    fn client(url: &str) -> RunClient {
        RunClient::new(&[url.to_string()], None).expect("a valid URL")
    }

    /// A response that promises `promised` bytes but sends `body` and hangs up.
    fn truncated(promised: usize, body: &[u8]) -> Reply {
        let mut raw =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {promised}\r\nConnection: close\r\n\r\n")
                .into_bytes();
        raw.extend_from_slice(body);
        Reply::Raw(raw)
    }

    #[tokio::test]
    async fn a_dropped_log_stream_resumes_at_the_offset_reached() {
        let server = serve(|_, index| match index {
            0 => truncated(10, b"abcd"),
            _ => reply(200, "application/octet-stream", b"efgh"),
        })
        .await;
        let stream = client(&server.url)
            .logs("r1", "t1", LogStep::Setup, 0, true)
            .await
            .expect("opened");
        assert!(!stream.already_complete());
        let chunks: Vec<Bytes> = stream.try_collect().await.expect("the whole log");
        assert_eq!(chunks.concat(), b"abcdefgh");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].path(), "/api/v1/runs/r1/tasks/t1/logs");
        assert_eq!(reqs[0].query_value("offset").as_deref(), Some("0"));
        assert_eq!(reqs[1].query_value("offset").as_deref(), Some("4"));
        assert_eq!(reqs[1].query_value("step").as_deref(), Some("setup"));
        assert_eq!(reqs[1].query_value("follow").as_deref(), Some("true"));
    }

    #[tokio::test]
    async fn a_complete_log_says_so_and_ends_with_its_last_byte() {
        let server = serve(|_, _| {
            let body = b"done\n";
            let mut raw = format!(
                "HTTP/1.1 200 OK\r\nx-cairn-log-complete: true\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            raw.extend_from_slice(body);
            Reply::Raw(raw)
        })
        .await;
        let stream = client(&server.url)
            .logs("r1", "t1", LogStep::Step(1), 3, false)
            .await
            .expect("opened");
        assert!(stream.already_complete());
        let chunks: Vec<Bytes> = stream.try_collect().await.expect("the log");
        assert_eq!(chunks.concat(), b"done\n");
        let req = &server.requests()[0];
        assert_eq!(req.query_value("step").as_deref(), Some("1"));
        assert_eq!(req.query_value("offset").as_deref(), Some("3"));
        assert_eq!(req.query_value("follow"), None);
    }

    #[tokio::test]
    async fn a_log_that_keeps_breaking_without_progress_ends_with_an_error() {
        let server = serve(|_, index| match index {
            0 => truncated(10, b"ab"),
            _ => truncated(10, b""),
        })
        .await;
        let stream = client(&server.url)
            .logs("r1", "t1", LogStep::Setup, 0, true)
            .await
            .expect("opened");
        let items: Vec<Result<Bytes, ClientError>> = stream.collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].as_ref().expect("the first bytes"), "ab");
        assert!(matches!(items[1], Err(ClientError::Transport(_))));
        assert_eq!(
            server.requests().len(),
            1 + MAX_FRUITLESS_REOPENS as usize,
            "reopened a bounded number of times"
        );
    }

    #[tokio::test]
    async fn a_missing_log_is_an_error_at_open() {
        let server = serve(|_, _| {
            reply(
                404,
                "application/json",
                br#"{"code":"not_found","message":"no task"}"#,
            )
        })
        .await;
        let e = client(&server.url)
            .logs("r1", "t9", LogStep::Setup, 0, false)
            .await
            .expect_err("no such task");
        assert!(e.is_not_found());
    }
}

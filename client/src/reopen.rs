//! The reconnecting half of the resumable server-sent-event streams ([`crate::events`],
//! [`crate::run_watch`]): a body that is opened on demand, parsed as it arrives, and
//! reopened after it drops or ends, with a growing pause after reopens that delivered
//! nothing. What to resume from, and when to stop, is the caller's.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::error::ClientError;
use crate::sse::{SseEvent, SseParser};

/// Longest pause between attempts to reopen a stream.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An event-stream body between reads.
pub(crate) struct Reopening {
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    parser: SseParser,
    /// Reopens in a row that delivered nothing (they pause before the next one).
    idle_reopens: u32,
}

impl Reopening {
    pub(crate) fn new() -> Reopening {
        Reopening {
            body: None,
            parser: SseParser::new(),
            idle_reopens: 0,
        }
    }

    /// The events of the next chunk of the body, opened with `open` first if there is
    /// none (after the pause its idle reopens call for). `Ok(None)`: the body dropped or
    /// ended, and the next call reopens it. `Err`: opening failed.
    pub(crate) async fn next<F, Fut>(
        &mut self,
        open: F,
    ) -> Result<Option<Vec<SseEvent>>, ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<reqwest::Response, ClientError>>,
    {
        let Some(body) = self.body.as_mut() else {
            if self.idle_reopens > 0 {
                tokio::time::sleep(backoff(self.idle_reopens)).await;
            }
            self.idle_reopens = self.idle_reopens.saturating_add(1);
            let resp = open().await?;
            self.body = Some(resp.bytes_stream().boxed());
            self.parser = SseParser::new();
            return Ok(Some(Vec::new()));
        };
        match body.next().await {
            Some(Ok(chunk)) => Ok(Some(self.parser.push(&chunk))),
            Some(Err(_)) | None => {
                self.body = None;
                Ok(None)
            }
        }
    }

    /// Something new was delivered: the next reopen does not pause.
    pub(crate) fn delivered(&mut self) {
        self.idle_reopens = 0;
    }
}

/// The pause before reopening a stream after `idle` fruitless attempts.
fn backoff(idle: u32) -> Duration {
    let millis = 100u64.saturating_mul(1 << idle.min(10).saturating_sub(1));
    Duration::from_millis(millis).min(MAX_BACKOFF)
}

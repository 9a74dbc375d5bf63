//! Streams one step's output to the server as it is produced: writes are batched (up to
//! 1 MiB or 50 ms) and appended at their byte offset, retried until the server has them,
//! and the log is closed with an explicit end. An offset conflict that shows the server
//! already holds a retried chunk counts as success, so a retry never duplicates output.
//!
//! The task's secret values are replaced by `***` before anything leaves the executor
//! ([`Redactor`]), also when a value is split across writes: the end of a write that
//! could begin a secret is held back (at most the longest secret's length less one byte)
//! until the next write or the end of the log. Values shorter than
//! [`MIN_SECRET_LEN`] bytes are not redacted: replacing every `1` or `ok` would destroy
//! the logs and hide nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cairn_client::api::MAX_LOG_CHUNK_BYTES;
use cairn_client::{ClientError, LogStep, RunClient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::driver::LogSink;

const MAX_BATCH: usize = 1 << 20;
const _: () = assert!(MAX_BATCH <= MAX_LOG_CHUNK_BYTES);
const LINGER: Duration = Duration::from_millis(50);
/// How long an append is retried while the server is unreachable.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Secret values shorter than this are not redacted.
pub const MIN_SECRET_LEN: usize = 4;

/// What the redaction puts in place of a secret.
const MASK: &[u8] = b"***";

/// Replaces secret values by `***` in a byte stream written in arbitrary chunks.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Arc<Vec<Vec<u8>>>,
    /// The end of the last write that may begin a secret.
    carry: Vec<u8>,
}

impl Redactor {
    /// A redactor of `secrets` (those under [`MIN_SECRET_LEN`] bytes are ignored).
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(secrets),
            carry: Vec::new(),
        }
    }

    /// The redacted bytes of `data` that can go out now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return data.to_vec();
        }
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(data);
        self.redact(&input, false)
    }

    /// What is held back, redacted: the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let input = std::mem::take(&mut self.carry);
        self.redact(&input, true)
    }

    fn redact(&mut self, input: &[u8], last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'scan: while i < input.len() {
            let rest = &input[i..];
            if !last
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                self.carry = rest.to_vec();
                break;
            }
            for s in self.secrets.iter() {
                if rest.starts_with(s) {
                    out.extend_from_slice(MASK);
                    i += s.len();
                    continue 'scan;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }
}

/// The writing end of a step log.
pub struct LogUpload {
    tx: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<Result<u64, ClientError>>,
    redactor: Redactor,
}

impl LogUpload {
    /// Starts the uploader task of one log, whose writes `redactor` redacts. It ends
    /// after [`LogUpload::finish`].
    pub fn start(
        client: RunClient,
        executor_id: String,
        task_id: String,
        step: LogStep,
        redactor: Redactor,
    ) -> LogUpload {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(upload(client, executor_id, task_id, step, rx));
        LogUpload {
            tx: Some(tx),
            task,
            redactor,
        }
    }

    /// Flushes what was written, closes the log and returns its length.
    pub async fn finish(mut self) -> Result<u64, ClientError> {
        let rest = self.redactor.finish();
        self.send(rest).await;
        self.tx.take();
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Transport(format!("log uploader failed: {e}"))),
        }
    }
}

#[async_trait]
impl LogSink for LogUpload {
    async fn write(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let redacted = self.redactor.push(&data);
        self.send(redacted).await;
    }
}

impl LogUpload {
    async fn send(&mut self, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Bytes::from(data)).await;
        }
    }
}

async fn upload(
    client: RunClient,
    executor_id: String,
    task_id: String,
    step: LogStep,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<u64, ClientError> {
    let mut offset = 0u64;
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut buf = BytesMut::from(&first[..]);
        let deadline = tokio::time::sleep(LINGER);
        tokio::pin!(deadline);
        while buf.len() < MAX_BATCH {
            tokio::select! {
                more = rx.recv() => match more {
                    Some(b) => buf.extend_from_slice(&b),
                    None => { open = false; break; }
                },
                _ = &mut deadline => break,
            }
        }
        let mut batch = buf.freeze();
        // One write may push a batch past MAX_BATCH: never send more than the server takes.
        while !batch.is_empty() {
            let chunk = batch.split_to(batch.len().min(MAX_LOG_CHUNK_BYTES));
            append(
                &client,
                &executor_id,
                &task_id,
                step,
                offset,
                chunk.clone(),
                false,
            )
            .await?;
            offset += chunk.len() as u64;
        }
    }
    append(
        &client,
        &executor_id,
        &task_id,
        step,
        offset,
        Bytes::new(),
        true,
    )
    .await?;
    Ok(offset)
}

async fn append(
    client: &RunClient,
    executor_id: &str,
    task_id: &str,
    step: LogStep,
    offset: u64,
    data: Bytes,
    end: bool,
) -> Result<(), ClientError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match client
            .append_log(executor_id, task_id, step, offset, data.clone(), end)
            .await
        {
            Ok(()) => return Ok(()),
            // An earlier attempt of this very chunk landed.
            Err(ClientError::LogOffset { expected })
                if expected == offset + data.len() as u64 && !end =>
            {
                return Ok(());
            }
            Err(e) if e.is_transient() && started.elapsed() < GIVE_UP_AFTER => {
                tracing::debug!(task_id, %step, error = %e, "log append failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redact_in_chunks(secrets: &[&str], text: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = Redactor::new(secrets);
        let mut out = Vec::new();
        for c in text.chunks(chunk.max(1)) {
            out.extend(r.push(c));
        }
        out.extend(r.finish());
        out
    }

    #[test]
    fn secrets_are_masked_whole_and_short_values_are_left_alone() {
        let text = b"token=s3cr3t-value; again s3cr3t-value; pin 12; end";
        let out = redact_in_chunks(&["s3cr3t-value", "12"], text, 1000);
        assert_eq!(out, b"token=***; again ***; pin 12; end");
    }

    #[test]
    fn a_secret_split_across_writes_is_masked() {
        let text = b"before hunter2hunter2 after";
        for chunk in 1..text.len() {
            assert_eq!(
                redact_in_chunks(&["hunter2hunter2"], text, chunk),
                b"before *** after",
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_held_back_prefix_that_is_no_secret_comes_out_at_the_end() {
        let mut r = Redactor::new(["abcdef"]);
        assert_eq!(r.push(b"x abc"), b"x ");
        assert_eq!(r.finish(), b"abc");
    }

    #[test]
    fn the_longest_of_overlapping_secrets_wins() {
        let out = redact_in_chunks(&["pass", "password1"], b"a password1 b pass", 3);
        assert_eq!(out, b"a *** b ***");
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_output_nor_leaks_a_secret(
            text in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 0..200),
            chunk in 1usize..20,
        ) {
            let secrets = ["abca", "bbbb", "cab"];
            let whole = redact_in_chunks(&secrets, &text, text.len().max(1));
            let chunked = redact_in_chunks(&secrets, &text, chunk);
            prop_assert_eq!(&whole, &chunked);
            prop_assert!(!whole.windows(4).any(|w| w == b"abca" || w == b"bbbb"));
        }
    }
}

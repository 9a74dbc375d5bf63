//! Streams one step's output to the server as it is produced: writes are batched (up to
//! 1 MiB or 50 ms) and appended at their byte offset, retried until the server has them,
//! and the log is closed with an explicit end. An offset conflict that shows the server
//! already holds a retried chunk counts as success, so a retry never duplicates output.

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

/// The writing end of a step log.
pub struct LogUpload {
    tx: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<Result<u64, ClientError>>,
}

impl LogUpload {
    /// Starts the uploader task of one log. It ends after [`LogUpload::finish`].
    pub fn start(
        client: RunClient,
        executor_id: String,
        task_id: String,
        step: LogStep,
    ) -> LogUpload {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(upload(client, executor_id, task_id, step, rx));
        LogUpload { tx: Some(tx), task }
    }

    /// Flushes what was written, closes the log and returns its length.
    pub async fn finish(mut self) -> Result<u64, ClientError> {
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
        if let Some(tx) = &self.tx {
            let _ = tx.send(data).await;
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

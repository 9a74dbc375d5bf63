//! The executor heartbeat loop of the scripted test executor and the benchmark executors.
//! `benches/bench.rs` includes this file with `#[path]`, so it must compile as a module of
//! either binary.

use std::time::Duration;

use cairn_client::RunClient;
use cairn_client::executor::Executor;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Spawns a task that sends `me`'s heartbeat every `every` (ignoring failures: the next
/// one retries) until `cancel` fires.
pub fn spawn_heartbeat(
    client: RunClient,
    me: Executor,
    every: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = client.heartbeat(&me).await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

//! Shared by the scheduler and end-to-end benches: finished runs as the run-event stream
//! reports them, and spawned tasks that end with their handles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use cairn_client::RunClient;
use cairn_client::run::{RunEvent, RunResult};
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A spawned task that ends with its handle (also when an interrupted bench drops it).
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A finished run's result and when it was seen.
pub type Done = (RunResult, Instant);

/// Finished runs as the run-event stream reports them, with when they were seen.
#[derive(Default)]
pub struct Tracker {
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    /// Finished and not waited for yet.
    done: HashMap<String, Done>,
    waiters: HashMap<String, oneshot::Sender<Done>>,
}

impl Tracker {
    fn on_event(&self, ev: &RunEvent) {
        if !ev.phase.is_finished() {
            return;
        }
        let v = (ev.result, Instant::now());
        let mut st = self.state.lock().expect("tracker lock");
        match st.waiters.remove(&ev.run_id) {
            Some(tx) => {
                let _ = tx.send(v);
            }
            None => {
                st.done.insert(ev.run_id.clone(), v);
            }
        }
    }

    /// Waits (up to `timeout`) until run `id` is finished; its result and when that was
    /// seen.
    pub async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<Done> {
        let rx = {
            let mut st = self.state.lock().expect("tracker lock");
            if let Some(v) = st.done.remove(id) {
                return Ok(v);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.insert(id.to_string(), tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => bail!("run {id} did not finish within {timeout:?}"),
        }
    }

    /// Follows the run-event stream from the first event on, for ever; `bench` names the
    /// bench in error lines.
    pub fn follow(self: &Arc<Self>, client: &RunClient, bench: &'static str) -> AbortOnDrop<()> {
        let (me, client) = (self.clone(), client.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut events = std::pin::pin!(client.run_events(Some(0)));
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => me.on_event(&ev),
                    Err(e) => eprintln!("bench: {bench}: run events: {e}"),
                }
            }
        }))
    }
}

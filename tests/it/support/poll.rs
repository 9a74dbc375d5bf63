//! The one poll-until helper of the test binary: call a check every 50 ms until it
//! yields, and fail the test with what was awaited once the timeout has passed.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often the checks are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_saying(timeout, f, || format!("timed out waiting for {what}")).await
}

/// [`wait_for`], failing with what `failure` says at the timeout (e.g. the last state
/// seen).
pub async fn wait_for_saying<T, F, Fut>(
    timeout: Duration,
    mut f: F,
    failure: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", failure());
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `check` passes ([`wait_for`] over a yes/no check).
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let passed = check();
        async move { passed.await.then_some(()) }
    })
    .await
}

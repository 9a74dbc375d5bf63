//! Crash points for the kill -9 tests of multi-step writes (like etcd's gofail): when
//! the environment variable `CAIRN_CRASH_AT` names a point, the process aborts there,
//! at once and without cleanup, as a SIGKILL would stop it. Unset (always, outside
//! tests), [`reached`] does nothing but compare a cached value. Likewise
//! `CAIRN_HOLD_AT` names a point where a task waits for good ([`held`]).

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const VAR: &str = "CAIRN_CRASH_AT";

/// Aborts the process when `CAIRN_CRASH_AT` is `point`.
pub fn reached(point: &'static str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(VAR).ok());
    if at.as_deref() == Some(point) {
        eprintln!("cairn: crash point {point} reached ({VAR}): aborting");
        std::process::abort();
    }
}

/// The environment variable naming a point to hold at, for tests that need a task kept
/// from going on (a node's index follower held before its first sync).
pub const HOLD_VAR: &str = "CAIRN_HOLD_AT";

/// Never resolves when `CAIRN_HOLD_AT` is `point` (the task waits there until it is
/// cancelled); resolves at once otherwise, as it always does outside tests.
pub async fn held(point: &'static str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(HOLD_VAR).ok());
    if at.as_deref() == Some(point) {
        eprintln!("cairn: hold point {point} reached ({HOLD_VAR}): waiting for good");
        std::future::pending::<()>().await;
    }
}

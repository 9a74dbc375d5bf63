//! Crash points for the kill -9 tests of multi-step writes (like etcd's gofail): when
//! the environment variable `CAIRN_CRASH_AT` names a point, the process aborts there,
//! at once and without cleanup, as a SIGKILL would stop it. Unset (always, outside
//! tests), [`reached`] does nothing but compare a cached value.

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

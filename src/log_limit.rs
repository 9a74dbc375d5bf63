//! Repeated warnings and errors of the Raft library, rate-limited.
//!
//! While a peer is down, openraft logs the same handful of lines at WARN and ERROR on
//! every replication retry (twice a second) and on every linearizable read that cannot
//! confirm leadership ("timeout while confirming leadership", once per request: ~160
//! lines/s under load in issue 14's chaos probe), burying everything else. [`RepeatLimit`]
//! lets one event per log statement of the `openraft` targets through per period and
//! drops the repeats; Cairn's own events are never dropped. An operator who sees them
//! runs `cairn store cluster status` to learn which node is unreachable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How often one openraft log statement may print at WARN or ERROR.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// A layer that drops repeats of openraft's warnings and errors (see the module docs).
pub struct RepeatLimit {
    period: Duration,
    last: Mutex<HashMap<Identifier, Instant>>,
}

impl RepeatLimit {
    pub fn new(period: Duration) -> RepeatLimit {
        RepeatLimit {
            period,
            last: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether events from `target` at `level` are rate-limited: openraft's WARN and ERROR
/// (its INFO and below are off by default anyway). Pure.
pub fn limited(target: &str, level: &Level) -> bool {
    (target == "openraft" || target.starts_with("openraft::")) && *level <= Level::WARN
}

/// Whether an event whose statement last printed at `last` may print at `now`. Pure.
pub fn may_print(last: Option<Instant>, now: Instant, period: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= period)
}

impl<S: Subscriber> Layer<S> for RepeatLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !limited(meta.target(), meta.level()) {
            return true;
        }
        let now = Instant::now();
        // One entry per log statement of the library: a bounded map.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let callsite = meta.callsite();
        if may_print(last.get(&callsite).copied(), now, self.period) {
            last.insert(callsite, now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openraft_warnings_and_errors_are_limited() {
        assert!(limited("openraft::replication", &Level::ERROR));
        assert!(limited("openraft", &Level::WARN));
        assert!(!limited("openraft::core", &Level::INFO));
        assert!(!limited("openraftish", &Level::ERROR));
        assert!(!limited("cairn::api", &Level::ERROR));
        assert!(!limited("raft::node", &Level::WARN));
    }

    #[test]
    fn a_statement_prints_once_per_period() {
        let t0 = Instant::now();
        let period = Duration::from_secs(10);
        assert!(may_print(None, t0, period));
        assert!(!may_print(Some(t0), t0 + Duration::from_secs(9), period));
        assert!(may_print(Some(t0), t0 + period, period));
    }

    /// Through a real subscriber: 100 repeats of one openraft error print once, each of
    /// Cairn's own errors prints.
    #[test]
    fn repeats_are_dropped_by_a_subscriber_using_the_layer() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::prelude::*;

        struct Count(Arc<AtomicUsize>);
        impl<S: Subscriber> Layer<S> for Count {
            fn on_event(&self, _e: &Event<'_>, _c: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(RepeatLimit::new(Duration::from_secs(3600)))
            .with(Count(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                tracing::error!(target: "openraft::replication", "peer unreachable");
            }
            for _ in 0..3 {
                tracing::error!(target: "cairn::api", "request failed");
            }
        });
        assert_eq!(seen.load(Ordering::Relaxed), 1 + 3);
    }
}

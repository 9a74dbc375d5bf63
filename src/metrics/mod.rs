//! The node's metrics, served as `GET /metrics` in Prometheus' text format (0.0.4) by
//! `crate::api::metrics`. Two kinds:
//!
//! - **at the event** — counters and histograms in one [`Metrics`] registry, made by the
//!   composition root (`crate::service`) and handed to those that count: HTTP requests
//!   ([`http`], a middleware on the whole port), the scheduler's hand-outs and finished
//!   runs ([`scheduler`]), log bytes appended (`api::blobs::append_log`);
//! - **at the scrape** — gauges read from the store, the executors' registrations and the
//!   Raft node when `/metrics` is asked ([`scrape`]: gathered, then formatted by a pure
//!   `Collector`).
//!
//! Names follow Prometheus' conventions: `cairn_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` for counters (added by the encoder), snake_case labels. This
//! module knows no HTTP; the `raft` and `store` crates know no metrics format (they keep
//! plain atomics, `raft::stats`, read here).

pub mod http;
pub mod scheduler;
pub mod scrape;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

pub use http::HttpMetrics;
pub use scheduler::SchedulerMetrics;
pub use scrape::Scrape;

/// The `Content-Type` of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry of a node's event metrics and the handles that update them. Clones
/// share it.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http: HttpMetrics,
    scheduler: SchedulerMetrics,
    log_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let scheduler = SchedulerMetrics::register(&mut registry);
        let log_bytes = Counter::default();
        registry.register(
            "cairn_log_bytes",
            "Bytes of step logs appended through this node",
            log_bytes.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http,
                scheduler,
                log_bytes,
            }),
        }
    }

    pub fn http(&self) -> &HttpMetrics {
        &self.inner.http
    }

    pub fn scheduler(&self) -> &SchedulerMetrics {
        &self.inner.scheduler
    }

    /// `bytes` of a step log were appended.
    pub fn log_appended(&self, bytes: u64) {
        self.inner.log_bytes.inc_by(bytes);
    }

    /// The exposition: the event metrics, then those of `scrape`.
    pub fn encode(&self, scrape: Scrape) -> String {
        use prometheus_client::encoding::prometheus_text::encode;
        let mut out = String::new();
        let mut now = Registry::default();
        now.register_collector(Box::new(scrape));
        // Writing into a String cannot fail; an encoder error would be a bug in a
        // metric's name or labels, caught by the tests.
        if let Err(e) = encode(&mut out, &self.inner.registry).and_then(|()| encode(&mut out, &now))
        {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    /// Every line is a comment or a sample of a family with `# HELP` and `# TYPE`;
    /// returns the families and the samples' names.
    fn families(text: &str) -> (BTreeSet<String>, Vec<String>) {
        let mut typed = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a name and a type");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                typed.insert(name.to_string());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().expect("a name");
                assert!(name.starts_with("cairn_"), "{line}");
                samples.push(name.to_string());
            }
        }
        (typed, samples)
    }

    #[test]
    fn the_exposition_is_prometheus_text_with_conventional_names() {
        let m = Metrics::new();
        m.http().observe(
            "GET",
            Some("/api/v1/runs/{id}"),
            200,
            Duration::from_millis(3),
        );
        m.http()
            .observe("BREW", None, 404, Duration::from_millis(1));
        m.scheduler().handed_out(Duration::from_millis(20));
        m.scheduler()
            .run_finished("finished", "success", Some(Duration::from_secs(5)));
        m.log_appended(42);
        let text = m.encode(scrape::tests::sample());
        let (typed, samples) = families(&text);
        for s in &samples {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| s.strip_suffix(suffix).filter(|f| typed.contains(*f)))
                .unwrap_or(s);
            assert!(typed.contains(family), "{s} has no # TYPE");
        }
        for counter in typed
            .iter()
            .filter(|f| text.contains(&format!("# TYPE {f} counter")))
        {
            assert!(counter.ends_with("_total"), "{counter}");
        }
        assert!(text.contains(
            "cairn_http_requests_total{method=\"get\",route=\"/api/v1/runs/:id\",status=\"200\"} 1"
        ), "{text}");
        assert!(
            text.contains(
                "cairn_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("cairn_log_bytes_total 42"), "{text}");
        assert!(
            text.contains("cairn_scheduler_handout_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("cairn_runs_finished_total{phase=\"finished\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains("cairn_raft_term 3"), "{text}");
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("parses");
        let kind = |name: &str| {
            parsed
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| std::mem::discriminant(&s.value))
        };
        use prometheus_parse::Value;
        assert_eq!(
            kind("cairn_http_requests_total"),
            Some(std::mem::discriminant(&Value::Counter(0.0)))
        );
        assert_eq!(
            kind("cairn_scheduler_handout_latency_seconds"),
            Some(std::mem::discriminant(&Value::Histogram(Vec::new())))
        );
        assert_eq!(
            kind("cairn_raft_term"),
            Some(std::mem::discriminant(&Value::Gauge(0.0)))
        );
    }
}

//! HTTP requests by route template, method and status, with their latency. The route
//! is the router's template, never the raw path, so a client cannot grow the label set;
//! requests no route matched share `unmatched`. Parameters are written `:id` rather than
//! axum's `{id}` (braces in label values trip up simple parsers of the text format).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type RequestLabels = [(&'static str, String); 3];
type LatencyLabels = [(&'static str, String); 2];

/// The HTTP families. Clones share them.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

/// Latency buckets: 1 ms to ~33 s, doubling (long polls and follows land in `+Inf`).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The label of a request method: the standard ones in lower case, anything else
/// `other` (a client chooses the method; it must not grow the label set); pure.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "get", "head", "post", "put", "delete", "patch", "options", "connect", "trace",
    ];
    KNOWN
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or("other")
}

/// The label of a route template: `/runs/{id}` → `/runs/:id`, `/{*rest}` → `/*rest`;
/// pure.
pub fn route_label(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    for seg in template.split_inclusive('/') {
        let (body, slash) = match seg.strip_suffix('/') {
            Some(b) => (b, "/"),
            None => (seg, ""),
        };
        match body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) {
            Some(name) if name.starts_with('*') => out.push_str(name),
            Some(name) => {
                out.push(':');
                out.push_str(name);
            }
            None => out.push_str(body),
        }
        out.push_str(slash);
    }
    out
}

impl HttpMetrics {
    pub(super) fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "cairn_http_requests",
            "HTTP requests answered, by method, route template and status code",
            m.requests.clone(),
        );
        registry.register(
            "cairn_http_request_duration_seconds",
            "Time from a request's head to its response's head, by method and route template",
            m.latency.clone(),
        );
        m
    }

    /// One request answered: `route` is the matched route template (`None`: no route).
    pub fn observe(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let method = method_label(method).to_string();
        let route = route.map_or_else(|| "unmatched".to_string(), route_label);
        self.requests
            .get_or_create(&[
                ("method", method.clone()),
                ("route", route.clone()),
                ("status", status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&[("method", method), ("route", route)])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("GET"), "get");
        assert_eq!(method_label("delete"), "delete");
        assert_eq!(method_label("PROPFIND"), "other");
        assert_eq!(method_label(""), "other");
    }

    #[test]
    fn route_parameters_are_written_with_a_colon() {
        assert_eq!(
            route_label("/api/v1/executors/{id}/tasks/{task_id}/status"),
            "/api/v1/executors/:id/tasks/:task_id/status"
        );
        assert_eq!(route_label("/metrics"), "/metrics");
        assert_eq!(route_label("/a/{*rest}"), "/a/*rest");
        assert_eq!(route_label("/"), "/");
    }
}

//! `GET /metrics` of a real `cairn serve` with its executor: after one run to success, a
//! scrape with a metrics token parses as Prometheus' text format, family by family, and
//! shows the run, its hand-out, its log, the HTTP requests and the Raft state; no token
//! is a 401, a user's or an executor's credential a 403, and a metrics token opens
//! nothing of `/api/v1`.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_client::api::{CreateTokenRequest, TokenRole};
use cairn_client::executor::Executor;
use cairn_client::run::RunResult;
use cairn_client::runconfig::Arch;
use cairn_client::{ErrorCode, RunClient};
use prometheus_parse::{Sample, Value};

use crate::support::poll::wait_for;
use crate::support::runs::{GROUP, create, wait_finished};
use crate::support::service::ServiceProc;

const ECHO: &str = r#"runs:
  - name: ci
    tasks:
      - name: hello
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: echo metrics-hello } ]
"#;

async fn make_token(node: &ServiceProc, role: TokenRole) -> String {
    node.client()
        .create_token(&CreateTokenRequest {
            role,
            name: format!("{role:?}"),
        })
        .await
        .unwrap()
        .token
}

/// `GET /metrics` with `token` (none: no `Authorization`); status, content type, body.
async fn scrape(node: &ServiceProc, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", node.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, resp.text().await.unwrap_or_default())
}

/// Checks every line of `text`: a `# HELP`/`# TYPE` pair per family, a known type,
/// `_total` counters, every sample of a declared family and parsed by the Prometheus
/// text grammar. Returns the families' types.
fn check_exposition(text: &str) -> BTreeMap<String, String> {
    let mut types = BTreeMap::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(name.starts_with("cairn_"), "{line}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} twice"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            // One sample: the grammar's own line parser must take it.
            let one =
                prometheus_parse::Scrape::parse(std::iter::once(Ok(line.to_string()))).unwrap();
            assert_eq!(one.samples.len(), 1, "not a sample line: {line}");
            let name = &one.samples[0].metric;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                .unwrap_or(name);
            assert!(types.contains_key(family), "{line}: no # TYPE before it");
        }
    }
    assert_eq!(helped.len(), types.len(), "one # HELP per # TYPE");
    assert!(helped.iter().all(|h| types.contains_key(h)), "{helped:?}");
    types
}

fn samples<'a>(all: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    all.iter().filter(|s| s.metric == name).collect()
}

fn scalar(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The one value of `name` whose labels include `labels`.
fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples(all, name)
        .into_iter()
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    scalar(&found[0].value)
}

/// The count of histogram `name` (summed over its label sets).
fn histogram_count(all: &[Sample], name: &str) -> f64 {
    samples(all, name)
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(b) => b
                .iter()
                .find(|c| c.less_than == f64::INFINITY)
                .map_or(0.0, |c| c.count),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_one_run_shows_it_and_parses_family_by_family() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("node"), &[]);
    let client = node.client();
    let run = create(&client, GROUP, ECHO).await;
    let done = wait_finished(&client, &run.run.id).await;
    assert_eq!(done.run.result, RunResult::Success);
    let token = make_token(&node, TokenRole::Metrics).await;

    // The run's end is counted once the scheduler wrote it; the log once appended.
    let text = wait_for(Duration::from_secs(60), "the run counted", || async {
        let (status, ctype, body) = scrape(&node, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        body.contains("cairn_runs_finished_total{phase=\"finished\",result=\"success\"} 1")
            .then_some(body)
    })
    .await;
    let types = check_exposition(&text);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap()
        .samples;

    for (family, kind) in [
        ("cairn_http_requests_total", "counter"),
        ("cairn_http_request_duration_seconds", "histogram"),
        ("cairn_scheduler_handout_latency_seconds", "histogram"),
        ("cairn_scheduler_tasks_waiting", "gauge"),
        ("cairn_runs_finished_total", "counter"),
        ("cairn_run_duration_seconds", "histogram"),
        ("cairn_log_bytes_total", "counter"),
        ("cairn_runs", "gauge"),
        ("cairn_executor_tasks", "gauge"),
        ("cairn_executors", "gauge"),
        ("cairn_executor_active_tasks", "gauge"),
        ("cairn_raft_term", "gauge"),
        ("cairn_raft_applied_index", "gauge"),
        ("cairn_raft_leader_changes_seen_total", "counter"),
        ("cairn_raft_proposals_failed_total", "counter"),
        ("cairn_raft_fsync_duration_seconds", "histogram"),
        ("cairn_raft_apply_duration_seconds", "histogram"),
        ("cairn_raft_snapshot_size_bytes", "gauge"),
        ("cairn_store_watchers", "gauge"),
        ("cairn_metrics_store_up", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    assert_eq!(
        value(
            &parsed,
            "cairn_runs_finished_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert!(histogram_count(&parsed, "cairn_run_duration_seconds") >= 1.0);
    assert!(histogram_count(&parsed, "cairn_scheduler_handout_latency_seconds") >= 1.0);
    assert!(value(&parsed, "cairn_log_bytes_total", &[]) > 0.0);
    // The run was created through the API and its executor polled for its task.
    assert!(
        value(
            &parsed,
            "cairn_http_requests_total",
            &[
                ("method", "post"),
                ("route", "/api/v1/runs"),
                ("status", "201")
            ]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        histogram_count(&parsed, "cairn_http_request_duration_seconds") >= 1.0,
        "{text}"
    );
    assert!(value(&parsed, "cairn_raft_term", &[]) >= 1.0);
    assert!(value(&parsed, "cairn_raft_applied_index", &[]) > 0.0);
    assert_eq!(value(&parsed, "cairn_raft_is_leader", &[]), 1.0);
    assert!(value(&parsed, "cairn_raft_leader_changes_seen_total", &[]) >= 1.0);
    assert!(histogram_count(&parsed, "cairn_raft_fsync_duration_seconds") >= 1.0);
    assert!(histogram_count(&parsed, "cairn_raft_apply_duration_seconds") >= 1.0);
    assert_eq!(value(&parsed, "cairn_metrics_store_up", &[]), 1.0);
    assert_eq!(value(&parsed, "cairn_executors", &[]), 1.0);
    assert!(
        value(&parsed, "cairn_store_watchers", &[]) >= 1.0,
        "the scheduler watches"
    );
    // The one run is in the store, finished (it may already be archived into a segment).
    assert!(value(&parsed, "cairn_runs", &[("phase", "running")]) == 0.0);
    assert!(value(&parsed, "cairn_runs", &[("phase", "finished")]) <= 1.0);

    // The admin token reads it too.
    let (status, _, _) = scrape(&node, Some(crate::support::process::TOKEN)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_metrics_or_admin_token_and_a_metrics_token_opens_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("node"));
    let metrics = make_token(&node, TokenRole::Metrics).await;
    let user = make_token(&node, TokenRole::User).await;
    let read_only = make_token(&node, TokenRole::ReadOnly).await;
    let registration = make_token(&node, TokenRole::Registration).await;
    let executor = RunClient::new(std::slice::from_ref(&node.url), Some(registration.clone()))
        .unwrap()
        .heartbeat(&Executor {
            id: "e1".into(),
            archs: Arch::host().into_iter().collect(),
            ..Executor::default()
        })
        .await
        .unwrap()
        .credential
        .expect("a registration gets a credential");

    for (who, token) in [("no token", None), ("a wrong token", Some("nope"))] {
        let (status, _, body) = scrape(&node, token).await;
        assert_eq!(status, 401, "{who}: {body}");
    }
    for (who, token) in [
        ("a user token", &user),
        ("a read-only token", &read_only),
        ("a registration token", &registration),
        ("an executor credential", &executor),
    ] {
        let (status, _, body) = scrape(&node, Some(token)).await;
        assert_eq!(status, 403, "{who}: {body}");
        assert!(body.contains("may not call GET /metrics"), "{who}: {body}");
    }
    let (status, _, _) = scrape(&node, Some(&metrics)).await;
    assert_eq!(status, 200);

    let scraper = RunClient::new(std::slice::from_ref(&node.url), Some(metrics)).unwrap();
    let refused = scraper
        .list_runs(&Default::default())
        .await
        .expect_err("a metrics token lists no runs");
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
}

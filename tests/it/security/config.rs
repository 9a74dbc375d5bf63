//! Config amplifiers: regexes, YAML aliases, long chains (H4) and terminal output (L4).
//!
//! Each test posts one small hostile config to a real `cairn serve` and expects a quick
//! 400 with a positioned JSON error (not a setuperror run, nothing recorded), then
//! checks that the server still answers and still creates runs.

use std::time::{Duration, Instant};

use cairn_client::api::{CreateRunRequest, ListRunsQuery};
use cairn_client::{ApiError, ErrorCode};

use crate::support::process::TOKEN;
use crate::support::runs::create_request;
use crate::support::service::ServiceProc;

const GROUP: &str = "/project/p1/branch/main";

/// Far above what the fixed server needs (milliseconds), far below what the attacks
/// took before the fix (tens of seconds, or an abort).
const QUICK: Duration = Duration::from_secs(15);

/// POSTs `config` as a run's config; the status and the JSON error body.
async fn post(node: &ServiceProc, config: &str) -> (u16, ApiError, Duration) {
    post_request(node, &create_request(GROUP, config)).await
}

/// POSTs `request`; the status and the JSON error body.
async fn post_request(node: &ServiceProc, request: &CreateRunRequest) -> (u16, ApiError, Duration) {
    let body = serde_json::to_vec(request).unwrap();
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/runs", node.url))
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    let elapsed = started.elapsed();
    let e = serde_json::from_slice::<ApiError>(&body)
        .unwrap_or_else(|err| panic!("{status}: not a JSON error ({err}): {body:?}"));
    (status, e, elapsed)
}

/// The server answers, recorded no run for the refused config, and still creates one.
async fn still_serves(node: &ServiceProc) {
    let client = node.client();
    let page = client.list_runs(&ListRunsQuery::default()).await.unwrap();
    assert!(page.runs.is_empty(), "a refused config left a run");
    let ok = "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime: { containers: [ { image: busybox } ] }\n        steps: [ { run: make } ]\n";
    let created = client.create_run(&create_request(GROUP, ok)).await.unwrap();
    assert_eq!(created.runs.len(), 1);
}

/// The single positioned error of a refused config.
fn only_detail(e: &ApiError) -> serde_json::Value {
    let details = e.details.as_ref().expect("positioned errors in details");
    let list = details.as_array().expect("a list of errors");
    assert_eq!(list.len(), 1, "{details}");
    list[0].clone()
}

/// H4.1: 500 `when` regexes of `\w{200}`, each about 8 MB compiled with the crate's
/// default limit (80 took +660 MB and 5.4 s; 500 aborted a 3 GB server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_when_regexes_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let regexes: Vec<String> = (0..500).map(|i| format!("'/\\w{{200}}x{i}/'")).collect();
    let config = format!(
        "runs:\n  - name: ci\n    when: {{ branch: [{}] }}\n    tasks:\n      - name: t\n        runtime: {{ containers: [ {{ image: busybox }} ] }}\n        steps: [ {{ run: make }} ]\n",
        regexes.join(", ")
    );
    let (status, e, elapsed) = post(&node, &config).await;
    assert_eq!(status, 400, "{e:?}");
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(elapsed < QUICK, "took {elapsed:?}");
    // The first 100 are compiled, within 256 KiB each: too big, each an error of its
    // own; the 101st is not compiled.
    let details = e.details.as_ref().and_then(|d| d.as_array()).unwrap();
    assert_eq!(details.len(), 101);
    let detail = &details[100];
    assert_eq!(detail["line"], 3, "{detail}");
    assert_eq!(detail["limit"], true, "{detail}");
    assert!(
        detail["message"]
            .as_str()
            .unwrap()
            .starts_with("more than 100 regular expressions"),
        "{detail}"
    );
    still_serves(&node).await;
}

/// H4.2: a YAML alias bomb: an anchored 500 KB scalar repeated through nested lists of
/// aliases (the 1 MB body of the review took the server to 2.1 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_alias_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let mut config = format!("a0: &a0 \"{}\"\n", "x".repeat(500_000));
    for level in 1..=8 {
        let refs = vec![format!("*a{}", level - 1); 16].join(", ");
        config.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    config.push_str("runs:\n  - name: ci\n    tasks: []\n");
    let (status, e, elapsed) = post(&node, &config).await;
    assert_eq!(status, 400, "{e:?}");
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(elapsed < QUICK, "took {elapsed:?}");
    let detail = only_detail(&e);
    assert_eq!(detail["line"], 2, "{detail}");
    assert_eq!(
        detail["message"],
        "YAML aliases expand the config by more than 1024 KiB (Cairn's limit)"
    );
    still_serves(&node).await;
}

/// H4.3: a 16,000-task dependency chain (40 s and 5.6 GB before the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16k_task_chain_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let mut config = String::from("runs:\n  - name: ci\n    tasks:\n");
    for i in 0..16_000 {
        let depends = if i == 0 {
            String::new()
        } else {
            format!("t{}", i - 1)
        };
        config.push_str(&format!("      - {{ name: t{i}, depends: [{depends}] }}\n"));
    }
    assert!(config.len() < 1024 * 1024, "{}", config.len());
    let (status, e, elapsed) = post(&node, &config).await;
    assert_eq!(status, 400, "{e:?}");
    assert!(elapsed < QUICK, "took {elapsed:?}");
    let detail = only_detail(&e);
    assert_eq!(detail["field"], "runs[0].tasks[1000]", "{detail}");
    assert_eq!(detail["line"], 1004, "{detail}");
    assert_eq!(
        detail["message"],
        "more than 1000 tasks in one config (Cairn's limit)"
    );
    // The same chain as `.agola/config.json`: refused at the same task, before the tree
    // holds the rest.
    let tasks: Vec<String> = (0..16_000)
        .map(|i| {
            let depends = if i == 0 {
                String::new()
            } else {
                format!("\"t{}\"", i - 1)
            };
            format!("{{\"name\": \"t{i}\", \"depends\": [{depends}]}}")
        })
        .collect();
    let json = format!(
        "{{\"runs\": [{{\"name\": \"ci\", \"tasks\": [\n{}\n]}}]}}\n",
        tasks.join(",\n")
    );
    assert!(json.len() < 1024 * 1024, "{}", json.len());
    let mut request = create_request(GROUP, &json);
    request.config.path = ".agola/config.json".into();
    let (status, e, elapsed) = post_request(&node, &request).await;
    assert_eq!(status, 400, "{e:?}");
    assert!(elapsed < QUICK, "took {elapsed:?}");
    let detail = only_detail(&e);
    assert_eq!(detail["field"], "runs[0].tasks[1000]", "{detail}");
    assert_eq!(detail["line"], 1002, "{detail}");
    assert_eq!(detail["limit"], true, "{detail}");
    still_serves(&node).await;
}

//! A node whose index of archived runs is not complete answers archived reads through a
//! peer whose index is (issue 13: "until then its archived listings are answered by a
//! peer whose index is complete, not wrongly empty"), with real `cairn serve` processes:
//! in a 3-node cluster sharing object storage, one node restarts without its index file
//! and with its index follower held before its first sync (`CAIRN_HOLD_AT`), so its
//! index stays empty; its `GET /runs` (every page), `GET /runs/{id}` and step log of an
//! archived run answer 200 with what a complete node answers, at once, and a read
//! forwarded to it (as a peer would send it) answers 503 at once, not forwarded again.
//! The same over `https://` with mutual TLS between the nodes (the forwarding client is
//! the node's peer client: the cluster CA and the node's certificate).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cairn::api::forward::FORWARDED_HEADER;
use cairn::history::INDEX_WAIT;
use cairn_client::api::ListRunsQuery;
use cairn_client::etcd::{EtcdClient, RangeRequest, prefix_end};
use cairn_client::{ClientTls, RunClient};
use reqwest::StatusCode;

use crate::archive::{EAGER, ECHO, GROUP, LONG};
use crate::security::tls::Certs;
use crate::support::poll::wait_for;
use crate::support::process::{TOKEN, free_port};
use crate::support::runs::{create, task_id};
use crate::support::service::{ExecutorProc, ServiceCluster, ServiceProc};

/// An answer: status and body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    body: String,
}

/// `GET path` on `node` with the admin token, as a peer forwards it when `forwarded`.
async fn get(
    http: &reqwest::Client,
    node: &ServiceProc,
    path: &str,
    forwarded: bool,
) -> Option<Answer> {
    let mut req = http
        .get(format!("{}{path}", node.url))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(30));
    if forwarded {
        req = req.header(FORWARDED_HEADER, "99");
    }
    let resp = req.send().await.ok()?;
    let status = resp.status();
    Some(Answer {
        status,
        body: resp.text().await.ok()?,
    })
}

/// `path`'s 200 answer on `node`, once it gives one.
async fn answered(http: &reqwest::Client, node: &ServiceProc, path: &str) -> Answer {
    wait_for(LONG, &format!("200 for {path} on {}", node.url), || async {
        get(http, node, path, false)
            .await
            .filter(|a| a.status == StatusCode::OK)
    })
    .await
}

fn listing(cursor: Option<&str>) -> String {
    let group = GROUP.replace('/', "%2F");
    match cursor {
        Some(c) => format!("/api/v1/runs?group={group}&limit=2&cursor={c}"),
        None => format!("/api/v1/runs?group={group}&limit=2"),
    }
}

/// Three runs moved into segments in the cluster of `nodes` (reached with `tls`); then
/// node 2 restarts without its index, held before its first sync, and its reads are
/// checked against node 0's.
async fn reads_through_a_peer(nodes: &mut [ServiceProc], tls: &ClientTls) {
    let http = &tls
        .apply(reqwest::Client::builder())
        .expect("the CA")
        .build()
        .expect("a client");
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let client = &RunClient::with_tls(&urls, Some(TOKEN.to_string()), tls).expect("client");
    let etcd = EtcdClient::with_tls(urls, Some(TOKEN.to_string()), Duration::from_secs(10), tls)
        .expect("etcd client");
    let mut created = BTreeSet::new();
    for _ in 0..3 {
        created.insert(create(client, GROUP, ECHO).await.run.id);
    }
    wait_for(LONG * 2, "every run in a segment", || async {
        let page = client
            .list_runs(&ListRunsQuery {
                group: Some(GROUP.to_string()),
                limit: Some(200),
                ..ListRunsQuery::default()
            })
            .await
            .ok()?;
        let ids: BTreeSet<String> = page.runs.iter().map(|r| r.id.clone()).collect();
        let in_store = etcd
            .range(&RangeRequest {
                key: "rs/run/".into(),
                range_end: prefix_end(b"rs/run/").into(),
                count_only: true,
                ..RangeRequest::default()
            })
            .await
            .ok()?
            .count
            .0;
        (ids == created && in_store == 0).then_some(())
    })
    .await;

    // What a node with a complete index answers: two pages, an archived run, its log.
    let first = answered(http, &nodes[0], &listing(None)).await;
    let page: serde_json::Value = serde_json::from_str(&first.body).expect("a page");
    let next = page["next"].as_str().expect("a second page").to_string();
    let id = page["runs"][0]["id"].as_str().expect("a run").to_string();
    assert_eq!(page["runs"][0]["archived"], true, "{page}");
    let run = client.run(&id).await.expect("the run");
    let log = format!(
        "/api/v1/runs/{id}/tasks/{}/logs?step=0",
        task_id(&run, "hello")
    );
    let paths = [
        listing(None),
        listing(Some(&next)),
        format!("/api/v1/runs/{id}"),
        log,
    ];
    let mut expected = Vec::new();
    for path in &paths {
        expected.push(answered(http, &nodes[0], path).await);
    }
    assert!(expected[3].body.contains("archived-hello"), "{expected:?}");
    // Node 1's index answers the same (so either peer may be the one asked).
    for (path, want) in paths.iter().zip(&expected) {
        wait_for(LONG, "node 1's index complete", || async {
            (get(http, &nodes[1], path, false).await.as_ref() == Some(want)).then_some(())
        })
        .await;
    }

    // Node 2 comes back without its index, and its follower never starts rebuilding it.
    let held = &mut nodes[2];
    held.kill9();
    std::fs::remove_file(held.data_dir.join(cairn::history::INDEX_FILE)).expect("index deleted");
    held.env = vec![(
        cairn::crash_point::HOLD_VAR.to_string(),
        "index-first-sync".to_string(),
    )];
    held.restart();
    let held = &nodes[2];

    // A read a peer forwarded: 503 at once (the index is behind), never forwarded again
    // (which would have found the peers' 200).
    let behind = wait_for(LONG, "node 2 serving with its index behind", || async {
        let started = Instant::now();
        let answer = get(http, held, &paths[0], true).await?;
        (answer
            .body
            .contains("index of archived runs is catching up"))
        .then_some((answer, started.elapsed()))
    })
    .await;
    assert_eq!(
        behind.0.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{behind:?}"
    );
    assert!(
        behind.1 < INDEX_WAIT / 2,
        "a forwarded read waited {behind:?}"
    );

    // A client's reads: what a complete node answers, not empty, not a 503, at once.
    for (path, want) in paths.iter().zip(&expected) {
        let started = Instant::now();
        let got = get(http, held, path, false).await;
        assert_eq!(
            got.as_ref(),
            Some(want),
            "GET {path} on the node without its index"
        );
        assert!(
            started.elapsed() < INDEX_WAIT,
            "GET {path} waited for the index first: {:?}",
            started.elapsed()
        );
    }
    // Still held: the answers came from a peer.
    let again = get(http, held, &paths[2], true).await.expect("an answer");
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_index_is_rebuilding_answers_archived_reads_through_a_peer() {
    let mut cluster = ServiceCluster::start_sharing_objects_with(3, EAGER);
    let dir = tempfile::tempdir().expect("tempdir");
    let _executor = ExecutorProc::start(&cluster.urls().join(","), &dir.path().join("ex"), &[]);
    reads_through_a_peer(&mut cluster.nodes, &ClientTls::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_a_node_whose_index_is_rebuilding_answers_through_a_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["n1", "n2", "n3"];
    let certs = Certs::make(&dir.path().join("certs"), &names.map(|n| ("node", n)));
    let objects = dir.path().join("objects").display().to_string();
    let args = |n: &str| {
        let mut v = certs.serve_args(n);
        v.extend(["--objects".into(), objects.clone()]);
        v.extend(EAGER.iter().map(|a| a.to_string()));
        v
    };
    let mut first = args("n1");
    first.extend(["--driver".into(), "local".into()]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut n1 = ServiceProc::with_executor(&dir.path().join("d1"), &first);
    n1.url = format!("https://127.0.0.1:{}", n1.port);
    let seed = n1.url.clone();
    let mut nodes = vec![n1];
    for name in &names[1..] {
        let extra = args(name);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut n = ServiceProc::start_with(
            &dir.path().join(name),
            free_port(),
            false,
            Some(&seed),
            &extra,
        );
        n.url = format!("https://127.0.0.1:{}", n.port);
        nodes.push(n);
    }
    reads_through_a_peer(&mut nodes, &certs.client_tls(None)).await;
}

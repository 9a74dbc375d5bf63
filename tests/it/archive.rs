//! Archived runs leave the store for segments in object storage and stay one view (issue
//! 13), with real `cairn serve` processes: runs flow while the node is killed with
//! SIGKILL over and over (so kills land while a segment is written, recorded or indexed),
//! and afterwards every run created is listed exactly once, in order, readable with its
//! config and logs, and none is left in the store; a node whose index file is deleted
//! rebuilds it and answers identically; an archived run restarts; in a 3-node cluster
//! sharing object storage every node's own index answers the same, and the survivors
//! keep serving (and archiving) when the scheduler's node is killed.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_client::LogStep;
use cairn_client::RunClient;
use cairn_client::api::{ListRunsQuery, RestartRunRequest};
use cairn_client::etcd::{RangeRequest, prefix_end};
use cairn_client::run::RunResult;

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{create, step_log, task_id, wait_finished};
use crate::support::service::{ExecutorProc, ServiceCluster, ServiceProc};

/// How long a cluster is given to agree, elect or catch up.
pub(crate) const LONG: Duration = Duration::from_secs(60);

pub(crate) const GROUP: &str = "/project/archive/branch/main";

pub(crate) const ECHO: &str = r#"runs:
  - name: ci
    tasks:
      - name: hello
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: echo archived-hello } ]
"#;

/// Segments of two runs, written as soon as any run waits.
pub(crate) const EAGER: &[&str] = &["--segment-runs", "2", "--segment-wait-secs", "0"];

/// Every run of the group, page by page (`limit` a page), newest first.
pub(crate) async fn listed(client: &RunClient, limit: usize) -> Vec<(String, bool)> {
    let mut q = ListRunsQuery {
        group: Some(GROUP.to_string()),
        limit: Some(limit),
        ..ListRunsQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = client.list_runs(&q).await.expect("listing");
        out.extend(page.runs.into_iter().map(|r| (r.id, r.archived)));
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => return out,
        }
    }
}

/// How many keys the node's store holds under `prefix` (through its etcd API).
async fn store_keys(node: &ServiceProc, prefix: &str) -> i64 {
    let etcd = cairn_client::etcd::EtcdClient::new(
        vec![node.url.clone()],
        Some(TOKEN.to_string()),
        Duration::from_secs(10),
    );
    let resp = etcd
        .range(&RangeRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix.as_bytes()).into(),
            count_only: true,
            ..RangeRequest::default()
        })
        .await
        .expect("range");
    resp.count.0
}

/// Waits until every run of `ids` is listed, finished and out of the store.
pub(crate) async fn wait_all_segmented(node: &ServiceProc, ids: &BTreeSet<String>) {
    let client = node.client();
    wait_for(
        Duration::from_secs(120),
        "every run in a segment",
        || async {
            let runs = client
                .list_runs(&ListRunsQuery {
                    group: Some(GROUP.to_string()),
                    limit: Some(200),
                    ..ListRunsQuery::default()
                })
                .await
                .ok()?;
            let all_archived = runs.runs.len() == ids.len() && runs.runs.iter().all(|r| r.archived);
            (all_archived && store_keys(node, "rs/run/").await == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_archived_under_kill9_are_listed_once_and_a_deleted_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let mut node = ServiceProc::with_executor(&data, EAGER);
    let mut created = BTreeSet::new();

    // Runs flow while the node is killed with SIGKILL three times.
    for round in 0..3 {
        let client = node.client();
        for _ in 0..4 {
            created.insert(create(&client, GROUP, ECHO).await.run.id);
        }
        // Let some finish and move before the kill: it lands mid-archiving.
        let first = created.iter().next_back().cloned().expect("a run");
        wait_finished(&client, &first).await;
        tokio::time::sleep(Duration::from_millis(100 * round)).await;
        node.kill9();
        node.restart();
    }
    wait_all_segmented(&node, &created).await;

    let client = node.client();
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    for limit in [1, 5, 200] {
        let runs = listed(&client, limit).await;
        assert_eq!(
            runs.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            newest_first,
            "every run exactly once, newest first (pages of {limit})"
        );
        assert!(runs.iter().all(|(_, archived)| *archived));
    }
    for id in &created {
        let run = client.run(id).await.expect("an archived run reads");
        assert_eq!(run.run.result, RunResult::Success, "run {id}");
        assert!(run.run.archived);
        assert_eq!(run.run_config.group, GROUP);
    }
    assert_eq!(store_keys(&node, "rs/runconfig/").await, 0);
    assert_eq!(store_keys(&node, "rs/archived/").await, 0);
    let segments = std::fs::read_dir(data.join("objects").join("segments"))
        .expect("segments dir")
        .count();
    assert!(segments >= created.len() / 2, "{segments} segments");

    // An archived run's log is read as before.
    let last = newest_first[0].clone();
    let run = client.run(&last).await.expect("run");
    let hello = task_id(&run, "hello");
    let log = step_log(&client, &last, &hello, LogStep::Step(0)).await;
    assert!(log.contains("archived-hello"), "{log:?}");

    // The index file deleted: rebuilt on start, the same answers.
    let before = listed(&client, 3).await;
    node.kill9();
    std::fs::remove_file(data.join("archive-index.redb")).expect("index deleted");
    node.restart();
    let client = node.client();
    assert_eq!(listed(&client, 3).await, before);
    assert_eq!(
        client.run(&last).await.expect("run").run_config,
        run.run_config
    );

    // An archived run restarts: a new run, which runs.
    let again = client
        .restart_run(
            &last,
            &RestartRunRequest {
                from_start: true,
                ..RestartRunRequest::default()
            },
        )
        .await
        .expect("restarted");
    assert_ne!(again.run.id, last);
    let done = wait_finished(&client, &again.run.id).await;
    assert_eq!(done.run.result, RunResult::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_index_file_is_replaced_and_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let mut node = ServiceProc::with_executor(&data, EAGER);
    let client = node.client();
    let mut created = BTreeSet::new();
    for _ in 0..2 {
        created.insert(create(&client, GROUP, ECHO).await.run.id);
    }
    wait_all_segmented(&node, &created).await;
    let before = listed(&client, 25).await;

    node.kill9();
    std::fs::write(data.join("archive-index.redb"), b"not a database at all").expect("write");
    node.restart();
    assert_eq!(listed(&node.client(), 25).await, before);
}

/// The listing of `GROUP` from node `i`, in pages of 4.
async fn listed_on(cluster: &ServiceCluster, i: usize) -> Vec<(String, bool)> {
    listed(&cluster.nodes[i].client(), 4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_archived_runs_and_keeps_serving_when_the_schedulers_node_is_killed() {
    let mut cluster = ServiceCluster::start_sharing_objects_with(3, EAGER);
    let dir = tempfile::tempdir().expect("tempdir");
    let _executor = ExecutorProc::start(&cluster.urls().join(","), &dir.path().join("ex"), &[]);
    let client = cluster.client();
    let mut created = BTreeSet::new();
    for _ in 0..5 {
        created.insert(create(&client, GROUP, ECHO).await.run.id);
    }
    wait_all_segmented(&cluster.nodes[0], &created).await;

    // Every node's own index answers the same, merged with the store the same way.
    let expected = listed_on(&cluster, 0).await;
    assert_eq!(expected.len(), created.len());
    for i in 1..3 {
        wait_for(LONG, &format!("node {i}'s index complete"), || async {
            (listed_on(&cluster, i).await == expected).then_some(())
        })
        .await;
    }

    // The scheduler's node dies: the others keep listing and reading archived runs,
    // and a new scheduler archives the next runs.
    let holder = cluster.scheduler_holder(LONG).await;
    cluster.nodes[holder].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
    for &i in &survivors {
        assert_eq!(listed_on(&cluster, i).await, expected, "node {i}");
        let id = &expected[0].0;
        let run = cluster.nodes[i]
            .client()
            .run(id)
            .await
            .expect("archived run");
        assert_eq!(run.run_config.group, GROUP);
    }
    let client = cluster.nodes[survivors[0]].client();
    for _ in 0..2 {
        created.insert(create(&client, GROUP, ECHO).await.run.id);
    }
    wait_all_segmented(&cluster.nodes[survivors[0]], &created).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    for &i in &survivors {
        wait_for(LONG, &format!("node {i} lists every run"), || async {
            let ids: Vec<String> = listed_on(&cluster, i)
                .await
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            (ids == newest_first).then_some(())
        })
        .await;
    }
}

/// The process aborts (as kill -9 would stop it) at `point` of moving two runs into a
/// segment; restarted, it loses neither run and shows each once, with `objects` segment
/// objects stored (an orphan of the crash is there until it is old enough to delete).
async fn crash_at(point: &str, objects: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let patient = ["--segment-runs", "2", "--segment-wait-secs", "3600"];
    let mut node = ServiceProc::with_executor(&data, &patient);
    let first = create(&node.client(), GROUP, ECHO).await.run.id;
    wait_finished(&node.client(), &first).await;

    node.kill9();
    node.env = vec![(cairn::crash_point::VAR.to_string(), point.to_string())];
    node.restart();
    let second = create(&node.client(), GROUP, ECHO).await.run.id;
    assert!(
        node.wait_exit(Duration::from_secs(120)),
        "the node did not reach crash point {point}"
    );

    node.env.clear();
    node.restart();
    let created = BTreeSet::from([first.clone(), second.clone()]);
    wait_all_segmented(&node, &created).await;
    let client = node.client();
    assert_eq!(
        listed(&client, 1).await,
        vec![(second.clone(), true), (first.clone(), true)],
        "crash at {point}: each run once"
    );
    for id in [&first, &second] {
        let run = client.run(id).await.expect("readable");
        assert_eq!(run.run.result, RunResult::Success, "crash at {point}: {id}");
    }
    let stored = std::fs::read_dir(data.join("objects").join("segments"))
        .expect("segments dir")
        .count();
    assert_eq!(stored, objects, "crash at {point}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_segment_is_written_loses_nothing_and_doubles_nothing() {
    crash_at("segment-written", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_store_is_updated_loses_nothing_and_doubles_nothing() {
    crash_at("segment-recorded", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_index_is_updated_loses_nothing_and_doubles_nothing() {
    crash_at("segment-indexed", 1).await;
}

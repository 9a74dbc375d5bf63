//! A run through a real `cairn serve` and a scripted executor: created, queued, started,
//! its DAG handed out in dependency order, logs readable, finished and archived.

use std::time::Duration;

use cairn_client::LogStep;
use cairn_client::run::{RunPhase, RunResult, RunTaskStatus};
use futures::StreamExt;

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{create_request, wait_run_phase};
use crate::support::scripted::{Script, ScriptedExecutor};
use crate::support::service::ServiceProc;

pub const DAG: &str = r#"
runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: make
          - save_to_workspace: { contents: [ { source_dir: ., dest_dir: ., paths: ["bin/*"] } ] }
      - name: test
        runtime: { containers: [ { image: busybox } ] }
        depends: [ build ]
        steps: [ { run: make test } ]
      - name: lint
        runtime: { containers: [ { image: busybox } ] }
        depends: [ build ]
        steps: [ { run: make lint } ]
      - name: report
        runtime: { containers: [ { image: busybox } ] }
        depends: [ { test: [ on_failure ] } ]
        steps: [ { run: echo failed } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_runs_to_success_in_dependency_order_and_is_archived() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let created = client
        .create_run(&create_request("/project/p1/branch/main", DAG))
        .await
        .unwrap();
    assert_eq!(created.runs.len(), 1);
    let id = created.runs[0].run.id.clone();
    assert_eq!(created.runs[0].run.counter, 1);

    // Without an executor the run starts but its root task waits, and says why.
    let waiting = wait_run_phase(&client, &id, RunPhase::Running).await;
    let pending = waiting.pending.expect("pending reasons while running");
    assert_eq!(pending.tasks["build"], "no executor is registered");

    let ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, Script::new("ex1"));
    let done = wait_run_phase(&client, &id, RunPhase::Finished).await;
    assert_eq!(done.run.result, RunResult::Success);
    let by_name = |name: &str| {
        let tid = done
            .run_config
            .tasks
            .values()
            .find(|t| t.name == name)
            .unwrap()
            .id
            .clone();
        done.run.tasks[&tid].clone()
    };
    assert_eq!(by_name("build").status, RunTaskStatus::Success);
    assert_eq!(by_name("test").status, RunTaskStatus::Success);
    assert_eq!(by_name("lint").status, RunTaskStatus::Success);
    assert_eq!(by_name("report").status, RunTaskStatus::Skipped);
    // build was handed out before its children, each task exactly once.
    let started = ex.started();
    assert_eq!(started.len(), 3, "{started:?}");
    assert_eq!(started[0], by_name("build").id);

    // The step log is in object storage and readable.
    let mut log = client
        .logs(&id, &by_name("test").id, LogStep::Step(0), 0, false)
        .await
        .unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = log.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(text).unwrap(), "test step 0\n");

    let archived = wait_for(
        Duration::from_secs(30),
        "the run to be archived",
        || async { client.run(&id).await.ok().filter(|r| r.run.archived) },
    )
    .await;
    assert!(archived.run.tasks.values().all(|t| t.all_fetched()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_while_queued_is_archived_with_nothing_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let req = create_request("/project/p1/branch/main", DAG);
    let first = client.create_run(&req).await.unwrap().runs[0]
        .run
        .id
        .clone();
    let second = client.create_run(&req).await.unwrap().runs[0]
        .run
        .id
        .clone();
    // No executor: the first run starts and waits, the second stays queued behind it.
    wait_run_phase(&client, &first, RunPhase::Running).await;
    let queued = client.run(&second).await.unwrap();
    assert_eq!(queued.run.phase, RunPhase::Queued);
    client
        .run_action(&second, cairn_client::api::RunAction::Cancel)
        .await
        .unwrap();
    let archived = wait_for(
        Duration::from_secs(60),
        "the cancelled run to be archived",
        || async { client.run(&second).await.ok().filter(|r| r.run.archived) },
    )
    .await;
    assert_eq!(archived.run.phase, RunPhase::Cancelled);
    assert!(archived.run.tasks.values().all(|t| t.all_fetched()));
    // The first run is untouched: still running, its root task still waiting.
    assert_eq!(
        client.run(&first).await.unwrap().run.phase,
        RunPhase::Running
    );
}

//! A run's life after creation, through `cairn serve` (local driver) and the CLI: a restart
//! sees its own run id and counter, `cairn runs restart --task` re-runs a chosen task and
//! what depends on it only, and a stop skips the tasks it keeps from starting.

use std::time::Duration;

use cairn_client::LogStep;
use cairn_client::RunClient;
use cairn_client::api::{RestartRunRequest, RunAction, RunResponse};
use cairn_client::run::{RunResult, RunTaskStatus};

use crate::support::cli::{cairn, run};
use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{self, create, task_id, wait_finished};
use crate::support::service::ServiceProc;

/// Every wait: generous, for a slow shared machine.
const LONG: Duration = Duration::from_secs(120);

fn status(r: &RunResponse, name: &str) -> RunTaskStatus {
    r.run.tasks[&task_id(r, name)].status
}

/// A step's whole log.
async fn step_log(client: &RunClient, run_id: &str, task_id: &str, step: usize) -> String {
    runs::step_log(client, run_id, task_id, LogStep::Step(step)).await
}

// --- restarts see their own id and counter -----------------------------------------------

const IDENTITY: &str = r#"
runs:
  - name: ci
    tasks:
      - name: who
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo "id=$CAIRN_RUN_ID counter=$CAIRN_RUN_COUNTER agola=$AGOLA_RUN_COUNTER"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_run_sees_its_own_run_id_and_counter() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let first = create(&client, "/project/ident/branch/main", IDENTITY).await;
    let first = wait_finished(&client, &first.run.id).await;
    assert_eq!(first.run.result, RunResult::Success);
    let log = step_log(&client, &first.run.id, &task_id(&first, "who"), 0).await;
    assert_eq!(
        log,
        format!("id={} counter=1 agola=1\n", first.run.id),
        "the first run"
    );

    let restarted = client
        .restart_run(
            &first.run.id,
            &RestartRunRequest {
                from_start: true,
                ..RestartRunRequest::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(restarted.run.id, first.run.id);
    assert_eq!(restarted.run.counter, 2);
    let done = wait_finished(&client, &restarted.run.id).await;
    assert_eq!(done.run.result, RunResult::Success);
    let log = step_log(&client, &done.run.id, &task_id(&done, "who"), 0).await;
    assert_eq!(
        log,
        format!("id={} counter=2 agola=2\n", done.run.id),
        "the restart sees its own id and counter, not run #1's"
    );
}

// --- restart chosen tasks ----------------------------------------------------------------

const PIPELINE: &str = r#"
runs:
  - name: ci
    tasks:
      - name: checkout
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo checkout ran' } ]
      - name: build
        depends: [ checkout ]
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo build ran' } ]
      - name: test
        depends: [ build ]
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo test ran' } ]
      - name: lint
        depends: [ checkout ]
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo lint ran' } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_restart_task_re_runs_that_task_and_its_dependents_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let first = create(&client, "/project/pick/branch/main", PIPELINE).await;
    let first = wait_finished(&client, &first.run.id).await;
    assert_eq!(first.run.result, RunResult::Success);

    let mut cmd = cairn(["runs", "restart", &first.run.id, "--task", "build"]);
    cmd.args(["--server", &node.url, "--token", TOKEN]);
    let out = run(cmd, LONG);
    assert_eq!(out.code, 0, "{out:?}");
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert!(
        words.len() >= 2 && words[0] == "run",
        "restart output: {}",
        out.stdout
    );
    let restarted = words[1].to_string();

    let done = wait_finished(&client, &restarted).await;
    assert_eq!(done.run.result, RunResult::Success);
    for kept in ["checkout", "lint"] {
        assert_eq!(task_id(&done, kept), task_id(&first, kept), "{kept} kept");
    }
    for rerun in ["build", "test"] {
        let id = task_id(&done, rerun);
        assert_ne!(id, task_id(&first, rerun), "{rerun} re-ran");
        assert_eq!(status(&done, rerun), RunTaskStatus::Success);
        let log = step_log(&client, &done.run.id, &id, 0).await;
        assert_eq!(log, format!("{rerun} ran\n"));
    }

    // An unknown task name is a clear bad request, and no run is created.
    let mut cmd = cairn([
        "runs",
        "restart",
        &first.run.id,
        "--task",
        "build",
        "--task",
        "nope",
    ]);
    cmd.args(["--server", &node.url, "--token", TOKEN]);
    let out = run(cmd, LONG);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("no task named nope") && out.stderr.contains("build"),
        "{}",
        out.stderr
    );
    let e = client
        .restart_run(
            &first.run.id,
            &RestartRunRequest {
                tasks: vec!["nope".into()],
                ..RestartRunRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(cairn_client::ErrorCode::BadRequest), "{e}");
}

// --- stop --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_skips_the_tasks_that_never_started() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let gate = dir.path().join("gate");
    let config = format!(
        r#"runs:
  - name: ci
    tasks:
      - name: long
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        steps: [ {{ run: 'touch {gate}; exec sleep 600' }} ]
      - name: after
        depends: [ long ]
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        steps: [ {{ run: 'echo after' }} ]
"#,
        gate = gate.display()
    );
    let created = create(&client, "/project/stop/branch/main", &config).await;
    let id = created.run.id.clone();
    wait_for(LONG, "the long step to start", || async {
        gate.exists().then_some(())
    })
    .await;

    client.run_action(&id, RunAction::Stop).await.unwrap();
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Stopped);
    assert_eq!(status(&done, "long"), RunTaskStatus::Stopped);
    assert_eq!(
        status(&done, "after"),
        RunTaskStatus::Skipped,
        "a task that never started is skipped, as in Agola"
    );
}

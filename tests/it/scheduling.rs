//! Scheduling when things go wrong, against real `cairn serve` processes: an executor
//! that dies or is deleted mid-task, a server killed with -9 and restarted mid-run, the
//! node with the active scheduler (or the Raft leader) killed in a 3-node cluster, and
//! executor placement by labels and capacity.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_client::RunClient;
use cairn_client::api::RunResponse;
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunResult, RunTask, RunTaskStatus};

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{GROUP, create, task_id, wait_finished, wait_run, wait_run_phase};
use crate::support::scripted::{Behaviour, Script, ScriptedExecutor};
use crate::support::service::{ServiceCluster, ServiceProc};

/// One task whose step runs until it is stopped (see [`long_runs_until_stopped`]).
const LONG: &str = r#"
runs:
  - name: ci
    tasks:
      - name: long
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: sleep 3600 } ]
"#;

/// One task that succeeds at once.
const QUICK: &str = r#"
runs:
  - name: ci
    tasks:
      - name: quick
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: "true" } ]
"#;

/// A chain a → b → c → d; `b` is held by the executor (see [`b_is_held`]).
const CHAIN: &str = r#"
runs:
  - name: ci
    tasks:
      - name: a
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make a } ]
      - name: b
        runtime: { containers: [ { image: busybox } ] }
        depends: [ a ]
        steps: [ { run: make b } ]
      - name: c
        runtime: { containers: [ { image: busybox } ] }
        depends: [ b ]
        steps: [ { run: make c } ]
      - name: d
        runtime: { containers: [ { image: busybox } ] }
        depends: [ c ]
        steps: [ { run: make d } ]
"#;

/// One task that only an executor labelled `os: linux` may take.
const LINUX_ONLY: &str = r#"
runs:
  - name: ci
    tasks:
      - name: linux-only
        runtime: { containers: [ { image: busybox } ], labels: { os: linux } }
        steps: [ { run: uname } ]
"#;

/// Two independent tasks, both ready at once.
const TWO_READY: &str = r#"
runs:
  - name: ci
    tasks:
      - name: one
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make one } ]
      - name: two
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make two } ]
"#;

const LONG_WAIT: Duration = Duration::from_secs(120);

fn long_runs_until_stopped(name: &str) -> Behaviour {
    if name == "long" {
        Behaviour::RunUntilStopped
    } else {
        Behaviour::Succeed
    }
}

fn b_is_held(name: &str) -> Behaviour {
    if name == "b" {
        Behaviour::Hold
    } else {
        Behaviour::Succeed
    }
}

/// A scripted executor on `urls` that keeps retrying its status reports for minutes, so
/// it rides out a server outage.
fn patient_executor(
    urls: &[String],
    id: &str,
    behaviour: fn(&str) -> Behaviour,
) -> ScriptedExecutor {
    let script = Script {
        behaviour,
        report_attempts: 3000,
        ..Script::new(id)
    };
    ScriptedExecutor::start(urls, TOKEN, script)
}

fn task_named(r: &RunResponse, name: &str) -> RunTask {
    r.run.tasks[&task_id(r, name)].clone()
}

/// Waits until the run's task `name` has status `status` on the server.
async fn wait_task_status(
    client: &RunClient,
    run_id: &str,
    name: &str,
    status: RunTaskStatus,
) -> RunResponse {
    wait_run(
        client,
        run_id,
        &format!("task {name} to be {status:?}"),
        |r| task_named(r, name).status == status,
    )
    .await
}

/// Waits until the task's first step is reported running (the executor reports its setup
/// first, then the step: a task can be `running` with no step started yet).
async fn wait_first_step_running(client: &RunClient, run_id: &str, name: &str) -> RunResponse {
    wait_run(
        client,
        run_id,
        &format!("the first step of task {name} to be running"),
        |r| {
            let t = task_named(r, name);
            t.status == RunTaskStatus::Running
                && t.steps.first().map(|s| s.phase) == Some(ExecutorTaskPhase::Running)
        },
    )
    .await
}

/// Whether `executor_id` is registered now.
async fn registered(client: &RunClient, executor_id: &str) -> bool {
    client
        .executors()
        .await
        .unwrap()
        .executors
        .iter()
        .any(|e| e.id == executor_id)
}

/// The failed task of a lost executor: failed, with end times on the task and on its
/// running step, and a reason naming the executor.
fn assert_failed_for_lost_executor(task: &RunTask, executor_id: &str) {
    assert_eq!(task.status, RunTaskStatus::Failed, "{task:?}");
    assert!(
        task.end_time.is_some(),
        "the task has an end time: {task:?}"
    );
    let step = &task.steps[0];
    assert_eq!(step.phase, ExecutorTaskPhase::Failed, "{task:?}");
    assert!(
        step.end_time.is_some(),
        "the running step has an end time: {task:?}"
    );
    let why = task.fail_error.as_deref().unwrap_or_default();
    assert!(
        why.contains(executor_id),
        "the failure names executor {executor_id}: {why:?}"
    );
}

/// Every task of the run succeeded and `executor` started each exactly once, and was
/// never offered one again after it had started it.
fn assert_each_task_handed_out_once(done: &RunResponse, executor: &ScriptedExecutor) {
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    for t in done.run.tasks.values() {
        assert_eq!(t.status, RunTaskStatus::Success, "{t:?}");
    }
    let started = executor.started();
    let unique: BTreeSet<&String> = started.iter().collect();
    assert_eq!(
        unique.len(),
        started.len(),
        "a task started twice: {started:?}"
    );
    let all: BTreeSet<&String> = done.run.tasks.keys().collect();
    assert_eq!(unique, all, "one start per task of the run");
    assert_eq!(
        executor.reoffered(),
        Vec::<String>::new(),
        "tasks handed out again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_executors_task_fails_when_its_lease_expires_and_new_work_goes_to_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    // No retries: the lost task fails its run (retries: tests/it/executor_e2e.rs).
    let node = ServiceProc::single_with(
        &dir.path().join("n"),
        &["--executor-ttl", "3", "--retry-lost-tasks", "0"],
    );
    let client = node.client();
    let urls = [node.url.clone()];
    let mut ex1 = ScriptedExecutor::start(
        &urls,
        TOKEN,
        Script {
            behaviour: long_runs_until_stopped,
            ..Script::new("ex1")
        },
    );
    let run_id = create(&client, GROUP, LONG).await.run.id;
    wait_first_step_running(&client, &run_id, "long").await;

    // The executor dies: no more heartbeats, so its lease runs out.
    ex1.kill();
    let done = wait_finished(&client, &run_id).await;
    assert_eq!(done.run.result, RunResult::Failed);
    assert!(done.run.end_time.is_some());
    assert_failed_for_lost_executor(&task_named(&done, "long"), "ex1");
    assert!(
        !registered(&client, "ex1").await,
        "ex1's key went with its lease"
    );

    // A new executor takes new work.
    let ex2 = ScriptedExecutor::start(&urls, TOKEN, Script::new("ex2"));
    let next = create(&client, GROUP, QUICK).await.run.id;
    let done = wait_run_phase(&client, &next, RunPhase::Finished).await;
    assert_eq!(done.run.result, RunResult::Success);
    assert_eq!(ex2.started(), vec![task_named(&done, "quick").id]);
    assert_eq!(ex1.started().len(), 1, "the dead executor got nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_executor_fails_its_running_task_and_a_second_delete_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test: only the delete can make the executor go.
    // No retries: the lost task fails its run (retries: tests/it/executor_e2e.rs).
    let node = ServiceProc::single_with(
        &dir.path().join("n"),
        &["--executor-ttl", "3600", "--retry-lost-tasks", "0"],
    );
    let client = node.client();
    let mut ex1 = ScriptedExecutor::start(
        std::slice::from_ref(&node.url),
        TOKEN,
        Script {
            behaviour: long_runs_until_stopped,
            ..Script::new("ex1")
        },
    );
    let run_id = create(&client, GROUP, LONG).await.run.id;
    wait_first_step_running(&client, &run_id, "long").await;

    // Silence it first: a live executor would register again at its next heartbeat.
    ex1.kill();
    assert!(registered(&client, "ex1").await);
    client.delete_executor("ex1").await.unwrap();
    assert!(
        !registered(&client, "ex1").await,
        "deleted executors are not listed"
    );

    let done = wait_finished(&client, &run_id).await;
    assert_eq!(done.run.result, RunResult::Failed);
    assert_failed_for_lost_executor(&task_named(&done, "long"), "ex1");

    let again = client.delete_executor("ex1").await.unwrap_err();
    assert!(again.is_not_found(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_on_after_its_server_is_killed_and_restarted_without_handing_a_task_out_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let ex = patient_executor(std::slice::from_ref(&node.url), "ex1", b_is_held);
    let run_id = create(&client, GROUP, CHAIN).await.run.id;
    wait_task_status(&client, &run_id, "b", RunTaskStatus::Running).await;

    // The server dies while b runs; b finishes during the outage and the executor keeps
    // retrying its report and its polls until the server is back.
    node.kill9();
    ex.release();
    node.restart();

    let done = wait_finished(&client, &run_id).await;
    assert_each_task_handed_out_once(&done, &ex);
    let order: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| task_named(&done, n).id)
        .collect();
    assert_eq!(ex.started(), order, "handed out in dependency order");
}

/// A run of [`CHAIN`] is put in flight on `cluster` with `b` held; node `killed` is killed
/// with -9 and `b` released; the run must finish with every task handed out once, and a
/// surviving node's scheduler must be the active one.
async fn kill_a_node_mid_run(cluster: &mut ServiceCluster, killed: usize) {
    let ex = patient_executor(&cluster.urls(), "ex1", b_is_held);
    let client = cluster.client();
    let run_id = create(&client, GROUP, CHAIN).await.run.id;
    wait_task_status(&client, &run_id, "b", RunTaskStatus::Running).await;

    cluster.nodes[killed].kill9();
    ex.release();

    let done = wait_finished(&client, &run_id).await;
    assert_each_task_handed_out_once(&done, &ex);
    let now_active = cluster.scheduler_holder(LONG_WAIT).await;
    assert_ne!(
        now_active, killed,
        "a surviving node's scheduler is the active one"
    );
}

/// Moves the Raft leader away from the scheduler lock holder: while one node has both, it
/// is frozen (SIGSTOP) until the others elect a leader among themselves, then thawed
/// before its lock session can expire, so it keeps the lock as a follower. Returns
/// (scheduler holder, leader), different nodes unless every try failed.
async fn separate_leader_from_scheduler(cluster: &mut ServiceCluster) -> (usize, usize) {
    for _ in 0..5 {
        let holder = cluster.scheduler_holder(LONG_WAIT).await;
        let leader = cluster.leader(LONG_WAIT).await;
        if holder != leader {
            return (holder, leader);
        }
        cluster.nodes[leader].pause();
        let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != leader).collect();
        wait_for(
            LONG_WAIT,
            "the other nodes to elect one of them",
            || async {
                let mut infos = Vec::new();
                for &i in &others {
                    infos.push(cluster.nodes[i].client().cluster().await.ok()?);
                }
                let named = infos[0].leader_id?;
                let agreed = infos.iter().all(|v| v.leader_id == Some(named));
                (agreed && infos.iter().any(|v| v.node_id == named)).then_some(())
            },
        )
        .await;
        cluster.nodes[leader].resume();
    }
    let holder = cluster.scheduler_holder(LONG_WAIT).await;
    (holder, cluster.leader(LONG_WAIT).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_finishes_when_the_node_with_the_active_scheduler_is_killed() {
    let mut cluster = ServiceCluster::start_sharing_objects(3);
    let holder = cluster.scheduler_holder(LONG_WAIT).await;
    kill_a_node_mid_run(&mut cluster, holder).await;
}

/// The Raft leader and the scheduler lock holder may be different nodes: killing the
/// leader while another node schedules must not lose or duplicate work either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_finishes_when_the_raft_leader_is_killed_under_another_nodes_scheduler() {
    let mut cluster = ServiceCluster::start_sharing_objects(3);
    let (holder, leader) = separate_leader_from_scheduler(&mut cluster).await;
    assert_ne!(
        holder, leader,
        "the test could not move the leader off the scheduler's node"
    );
    kill_a_node_mid_run(&mut cluster, leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_needing_labels_waits_for_an_executor_that_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let urls = [node.url.clone()];
    let plain = ScriptedExecutor::start(&urls, TOKEN, Script::new("plain"));
    wait_for(LONG_WAIT, "the unlabelled executor to register", || async {
        registered(&client, "plain").await.then_some(())
    })
    .await;

    let run_id = create(&client, GROUP, LINUX_ONLY).await.run.id;
    let why = wait_for(LONG_WAIT, "a pending reason naming the labels", || async {
        let r = client.run(&run_id).await.ok()?;
        let why = r.pending?.tasks.get("linux-only")?.clone();
        why.contains("os=linux").then_some(why)
    })
    .await;
    assert_eq!(why, "no executor has the labels {os=linux}");

    let mut script = Script::new("linux");
    script.labels.insert("os".into(), "linux".into());
    let linux = ScriptedExecutor::start(&urls, TOKEN, script);
    let done = wait_run_phase(&client, &run_id, RunPhase::Finished).await;
    assert_eq!(done.run.result, RunResult::Success);
    assert_eq!(linux.started(), vec![task_named(&done, "linux-only").id]);
    assert_eq!(
        plain.started(),
        Vec::<String>::new(),
        "the unlabelled executor never got it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_at_its_task_limit_gets_one_task_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let ex = ScriptedExecutor::start(
        std::slice::from_ref(&node.url),
        TOKEN,
        Script {
            limit: 1,
            behaviour: |_| Behaviour::Hold,
            ..Script::new("ex1")
        },
    );
    let run_id = create(&client, GROUP, TWO_READY).await.run.id;

    // One task is held by the executor; the other waits, and says it waits for capacity.
    let (first, waiting, why) = wait_for(LONG_WAIT, "one task running, one waiting", || async {
        let r = client.run(&run_id).await.ok()?;
        let (first, waiting) = match (task_named(&r, "one").status, task_named(&r, "two").status) {
            (RunTaskStatus::Running, RunTaskStatus::NotStarted) => ("one", "two"),
            (RunTaskStatus::NotStarted, RunTaskStatus::Running) => ("two", "one"),
            _ => return None,
        };
        let why = r.pending.as_ref()?.tasks.get(waiting)?.clone();
        why.contains("capacity")
            .then(|| (task_named(&r, first).id, waiting, why))
    })
    .await;
    assert_eq!(why, "all 1 matching executors are at capacity");
    assert_eq!(ex.started(), vec![first.clone()]);
    assert_eq!(client.executors().await.unwrap().assigned["ex1"], 1);

    // Once the first is done, the second is handed out.
    ex.release();
    let done = wait_run_phase(&client, &run_id, RunPhase::Finished).await;
    assert_each_task_handed_out_once(&done, &ex);
    assert_eq!(ex.started()[0], first);
    assert_eq!(ex.started()[1], task_named(&done, waiting).id);
}

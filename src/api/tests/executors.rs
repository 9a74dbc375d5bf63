//! Executor registration and status reports: a registration gives a credential once and
//! heartbeats keep the same lease; a task's status is its executor's to replace until it
//! is finished, and a finished status is final.

use axum::http::{Method, StatusCode};
use cairn_client::api::HeartbeatResponse;
use cairn_client::executor::ExecutorTask;
use cairn_client::run::ExecutorTaskPhase;
use serde_json::json;

use super::{ADMIN, Api, executor, task_id};
use crate::datamanager::testing::ONE_TASK;

#[tokio::test]
async fn registration_issues_a_credential_once_and_heartbeats_keep_the_lease() {
    let api = Api::start().await;
    let registration = api.token("registration").await;
    let reply = api
        .call(
            Method::POST,
            "/executors/e1",
            Some(&registration),
            Some(&executor("e1")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let first: HeartbeatResponse = reply.parse();
    let credential = first.credential.expect("a credential at registration");
    assert!(credential.starts_with("cairnx.e1."), "{credential}");
    assert_eq!(
        first.lease_ttl_secs,
        crate::api::executors::EXECUTOR_LEASE_SECS
    );
    assert_ne!(first.executor.lease, 0);
    assert!(first.executor.last_heartbeat.is_some());

    let reply = api
        .call(
            Method::POST,
            "/executors/e1",
            Some(&credential),
            Some(&executor("e1")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let beat: HeartbeatResponse = reply.parse();
    assert_eq!(beat.credential, None, "a heartbeat issues no credential");
    assert_eq!(beat.executor.lease, first.executor.lease);
    let stored = api
        .dm()
        .executor("e1")
        .await
        .expect("read")
        .expect("registered");
    assert_eq!(stored, beat.executor);

    // A body for another executor than the URL's is refused.
    api.call(
        Method::POST,
        "/executors/e1",
        Some(&credential),
        Some(&executor("e2")),
    )
    .await
    .assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "body id \"e2\" does not match path id \"e1\"",
    );
}

#[tokio::test]
async fn a_finished_task_status_is_final() {
    let api = Api::start().await;
    let registration = api.token("registration").await;
    let cred = api.register(&registration, "e1").await;
    let run = api.create_runs(ONE_TASK).await.remove(0);
    let run_id = run["run"]["id"].as_str().expect("an id").to_string();
    let task = task_id(&run, "build");
    let handed = ExecutorTask::new(&task, &run_id, "e1", 1);
    assert!(
        api.dm()
            .create_executor_task(&handed)
            .await
            .expect("hand out")
    );
    let path = format!("/executors/e1/tasks/{task}/status");
    let report = |phase: &str| {
        json!({
            "phase": phase,
            "setup_step": { "phase": "success" },
            "steps": [ { "phase": phase, "exit_status": if phase == "failed" { 1 } else { 0 } } ],
        })
    };
    let stored_phase = || async {
        api.dm()
            .executor_task(&task)
            .await
            .expect("read")
            .expect("the task")
            .value
            .status
    };

    let running = json!({ "phase": "running", "setup_step": { "phase": "running" } });
    let reply = api
        .call(Method::PUT, &path, Some(&cred), Some(&running))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    assert_eq!(stored_phase().await.phase, ExecutorTaskPhase::Running);

    let success = report("success");
    let reply = api
        .call(Method::PUT, &path, Some(&cred), Some(&success))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    let finished = stored_phase().await;
    assert_eq!(finished.phase, ExecutorTaskPhase::Success);
    assert_eq!(finished.steps[0].exit_status, Some(0));

    // A late or replayed report of another outcome is refused; the status stays.
    for late in [report("failed"), running] {
        api.call(Method::PUT, &path, Some(&cred), Some(&late))
            .await
            .assert_error(
                StatusCode::CONFLICT,
                "conflict",
                &format!(
                    "task {task} already finished (success); a {} report is refused",
                    late["phase"].as_str().expect("a phase")
                ),
            );
        assert_eq!(stored_phase().await, finished);
    }
    // The same report again is a no-op, not an error (an executor retrying its send).
    let reply = api
        .call(Method::PUT, &path, Some(&cred), Some(&success))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    assert_eq!(stored_phase().await, finished);
    // Neither may the admin rewrite it through the executor's route.
    api.call(Method::PUT, &path, Some(ADMIN), Some(&report("failed")))
        .await
        .assert_error(
            StatusCode::CONFLICT,
            "conflict",
            &format!("task {task} already finished (success); a failed report is refused"),
        );
    // A task that does not exist is a 404.
    let unknown = uuid::Uuid::new_v4();
    api.call(
        Method::PUT,
        &format!("/executors/e1/tasks/{unknown}/status"),
        Some(&cred),
        Some(&success),
    )
    .await
    .assert_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("task {unknown} not found"),
    );
}

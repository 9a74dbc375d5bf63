//! Credentials and roles at the router: no or a wrong token is a 401, a role's limits are
//! 403s, and an executor's credential reaches only its own tasks. Every refusal leaves
//! the store as it was.

use axum::http::{Method, StatusCode};
use cairn_client::api::RunsPage;
use cairn_client::executor::ExecutorTask;
use cairn_client::run::ExecutorTaskPhase;
use serde_json::json;

use super::{ADMIN, Api, GROUP, create_request, executor, task_id};
use crate::datamanager::testing::ONE_TASK;

const NO_TOKEN: &str = "missing or wrong bearer token";

#[tokio::test]
async fn no_token_or_a_wrong_one_is_a_401_with_a_json_body() {
    let api = Api::start().await;
    api.call(Method::GET, "/runs", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized", NO_TOKEN);
    for wrong in [
        "not-the-token",
        // A stored token's shape, with an id that was never issued.
        "cairn.0123456789abcdef0123456789abcdef.000000000000000000000000000000000000000000000000",
        // An executor credential's shape, for an executor that has none.
        "cairnx.e1.000000000000000000000000000000000000000000000000",
    ] {
        api.call(Method::GET, "/runs", Some(wrong), None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized", NO_TOKEN);
        api.call(
            Method::POST,
            "/runs",
            Some(wrong),
            Some(&create_request(GROUP, ONE_TASK)),
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized", NO_TOKEN);
    }
    // A revoked token is refused from then on; a forged secret on its id too.
    let user = api.token("user").await;
    assert_eq!(
        api.call(Method::GET, "/runs", Some(&user), None)
            .await
            .status,
        StatusCode::OK
    );
    let id = user.split('.').nth(1).expect("cairn.<id>.<secret>");
    let revoked = api
        .call(Method::DELETE, &format!("/tokens/{id}"), Some(ADMIN), None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{:?}", revoked.body);
    api.call(Method::GET, "/runs", Some(&user), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized", NO_TOKEN);
    let runs: RunsPage = api
        .call(Method::GET, "/runs", Some(ADMIN), None)
        .await
        .parse();
    assert!(runs.runs.is_empty(), "{runs:?}");
}

#[tokio::test]
async fn a_read_only_token_reads_but_cannot_create_or_act() {
    let api = Api::start().await;
    let ro = api.token("read-only").await;
    let user = api.token("user").await;
    api.call(
        Method::POST,
        "/runs",
        Some(&ro),
        Some(&create_request(GROUP, ONE_TASK)),
    )
    .await
    .assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "a read-only token may not call POST /runs",
    );
    let page: RunsPage = api
        .call(Method::GET, "/runs", Some(&ro), None)
        .await
        .parse();
    assert!(page.runs.is_empty(), "a refused create made a run");

    // A user creates; the read-only token reads it but cannot cancel it.
    let made = api
        .call(
            Method::POST,
            "/runs",
            Some(&user),
            Some(&create_request(GROUP, ONE_TASK)),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let id = made.json()["runs"][0]["run"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let read = api
        .call(Method::GET, &format!("/runs/{id}"), Some(&ro), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["run"]["phase"], "queued");
    api.call(
        Method::PUT,
        &format!("/runs/{id}/actions"),
        Some(&ro),
        Some(&json!({ "action": "cancel" })),
    )
    .await
    .assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("a read-only token may not call PUT /runs/{id}/actions"),
    );
    let after = api
        .call(Method::GET, &format!("/runs/{id}"), Some(&ro), None)
        .await
        .json();
    assert_eq!(after["run"]["cancel"], json!(null), "{after}");
    // Neither reaches the admin's routes.
    for (token, who) in [(&ro, "a read-only token"), (&user, "a user token")] {
        api.call(Method::PUT, "/maintenance", Some(token), Some(&json!({})))
            .await
            .assert_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("{who} may not call PUT /maintenance"),
            );
        api.call(Method::GET, "/tokens", Some(token), None)
            .await
            .assert_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("{who} may not call GET /tokens"),
            );
    }
}

#[tokio::test]
async fn an_executor_credential_cannot_touch_another_executors_task() {
    let api = Api::start().await;
    let registration = api.token("registration").await;
    let good = api.register(&registration, "good").await;
    let evil = api.register(&registration, "evil").await;
    let run = api.create_runs(ONE_TASK).await.remove(0);
    let run_id = run["run"]["id"].as_str().expect("an id").to_string();
    let task = task_id(&run, "build");
    // Handed to good, as the scheduler would.
    let handed = ExecutorTask::new(&task, &run_id, "good", 1);
    assert!(
        api.dm()
            .create_executor_task(&handed)
            .await
            .expect("hand out")
    );

    // By good's id in the URL: the role check refuses it.
    for (method, path) in [
        (Method::GET, format!("/executors/good/tasks/{task}")),
        (Method::GET, "/executors/good/tasks".to_string()),
        (Method::PUT, format!("/executors/good/tasks/{task}/status")),
    ] {
        let body = json!({ "phase": "success" });
        api.call(method.clone(), &path, Some(&evil), Some(&body))
            .await
            .assert_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("executor evil's credential may not call {method} {path}"),
            );
    }
    // By its own id: the task is not its own.
    let not_yours = format!("task {task} is assigned to another executor");
    api.call(
        Method::GET,
        &format!("/executors/evil/tasks/{task}"),
        Some(&evil),
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden", &not_yours);
    api.call(
        Method::PUT,
        &format!("/executors/evil/tasks/{task}/status"),
        Some(&evil),
        Some(&json!({ "phase": "success" })),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden", &not_yours);
    let own = api
        .call(Method::GET, "/executors/evil/tasks", Some(&evil), None)
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json()["tasks"], json!([]));
    // Nor may it delete good, read the runs, or register in good's place.
    api.call(Method::DELETE, "/executors/good", Some(&evil), None)
        .await
        .assert_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "executor evil's credential may not call DELETE /executors/good",
        );
    api.call(Method::GET, "/runs", Some(&evil), None)
        .await
        .assert_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "executor evil's credential may not call GET /runs",
        );
    api.call(
        Method::POST,
        "/executors/good",
        Some(&registration),
        Some(&executor("good")),
    )
    .await
    .assert_error(
        StatusCode::CONFLICT,
        "conflict",
        "executor good is registered and alive: only its own credential heartbeats it",
    );

    // The task is untouched, and good reads it with its spec data.
    let stored = api
        .dm()
        .executor_task(&task)
        .await
        .expect("read")
        .expect("the task");
    assert_eq!(stored.value, handed);
    assert_eq!(stored.value.status.phase, ExecutorTaskPhase::NotStarted);
    let mine = api
        .call(
            Method::GET,
            &format!("/executors/good/tasks/{task}"),
            Some(&good),
            None,
        )
        .await;
    assert_eq!(mine.status, StatusCode::OK, "{:?}", mine.body);
    let mine = mine.json();
    assert_eq!(mine["task"], serde_json::to_value(&handed).expect("JSON"));
    assert_eq!(mine["data"]["task_name"], "build");
    assert_eq!(mine["data"]["run_id"], run_id.as_str());
    // Revoked, good's credential is refused.
    let revoked = api
        .call(
            Method::DELETE,
            "/executors/good/credential",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    api.call(
        Method::GET,
        &format!("/executors/good/tasks/{task}"),
        Some(&good),
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthorized", NO_TOKEN);
}

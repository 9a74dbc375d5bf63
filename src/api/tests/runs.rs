//! Creating and reading runs: a config becomes a queued run that reads back the same; a
//! config that cannot be set up is recorded as a setuperror run; one beyond Cairn's
//! limits, or a bad request, is refused and records nothing.

use axum::http::{Method, StatusCode};
use cairn_client::api::{CreateRunResponse, PendingReasons, RunResponse, RunsPage};
use cairn_client::run::{RunPhase, RunResult, RunTaskStatus};

use super::{ADMIN, Api, GROUP, create_request};
use crate::datamanager::testing::{CHAIN, ONE_TASK};

/// A dependency cycle: the config parses but cannot be set up.
const CYCLE: &str = r#"runs:
  - name: ci
    tasks:
      - name: a
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
        depends: [ b ]
      - name: b
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
        depends: [ a ]
"#;

async fn list(api: &Api) -> RunsPage {
    let reply = api.call(Method::GET, "/runs", Some(ADMIN), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.parse()
}

#[tokio::test]
async fn a_run_created_from_a_config_reads_back_as_created() {
    let api = Api::start().await;
    let reply = api
        .call(
            Method::POST,
            "/runs",
            Some(ADMIN),
            Some(&create_request(GROUP, CHAIN)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let created: CreateRunResponse = reply.parse();
    assert_eq!(created.runs.len(), 1);
    let made = &created.runs[0];
    assert_eq!(made.run.name, "ci");
    assert_eq!(made.run.group, GROUP);
    assert_eq!(made.run.counter, 1);
    assert_eq!(made.run.phase, RunPhase::Queued);
    assert_eq!(made.run.result, RunResult::Unknown);
    assert!(!made.run.archived);
    assert_eq!(made.run_config.id, made.run.id);
    assert!(made.run_config.setup_errors.is_empty());
    assert_eq!(made.pending, None);
    // Both tasks, not started, with their steps and dependency.
    let mut names: Vec<&str> = made
        .run_config
        .tasks
        .values()
        .map(|t| t.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let a = super::task_id(&serde_json::to_value(made).expect("JSON"), "a");
    let b = super::task_id(&serde_json::to_value(made).expect("JSON"), "b");
    assert_eq!(made.run_config.tasks[&a].steps.len(), 1);
    assert_eq!(made.run_config.tasks[&b].steps.len(), 2);
    assert_eq!(
        made.run_config.tasks[&a]
            .depends
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![b.clone()]
    );
    assert_eq!(made.run.tasks.len(), 2);
    for t in made.run.tasks.values() {
        assert_eq!(t.status, RunTaskStatus::NotStarted, "{t:?}");
    }
    // The branch reached the run's static environment.
    assert_eq!(
        made.run_config
            .static_environment
            .get("AGOLA_GIT_BRANCH")
            .map(String::as_str),
        Some("main")
    );

    // `GET /runs/{id}`: the same run and config, with why it waits: no scheduler here.
    let get = || async {
        let reply = api
            .call(
                Method::GET,
                &format!("/runs/{}", made.run.id),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.parse::<RunResponse>()
    };
    let waiting = |why: &str| {
        Some(PendingReasons {
            run: Some(why.into()),
            tasks: [("a", "run is queued"), ("b", "run is queued")]
                .map(|(t, why)| (t.to_string(), why.to_string()))
                .into(),
        })
    };
    let got = get().await;
    assert_eq!(got.run, made.run);
    assert_eq!(got.run_config, made.run_config);
    assert_eq!(got.pending, waiting(crate::api::runs::NO_SCHEDULER));
    // Once a scheduler holds the lock, the run waits for it to see the run.
    let holder = format!("{}7f", crate::datamanager::keys::SCHEDULER_LOCK);
    api.dm()
        .kv()
        .put(store::PutRequest::new(holder, ""))
        .await
        .expect("a lock key");
    assert_eq!(
        get().await.pending,
        waiting("queued; starting as soon as the scheduler sees it")
    );

    // Listed, alone.
    let page = list(&api).await;
    assert_eq!(page.runs, vec![made.run.clone()]);
}

#[tokio::test]
async fn a_config_that_cannot_be_set_up_records_a_setuperror_run() {
    let api = Api::start().await;
    let runs = api.create_runs(CYCLE).await;
    assert_eq!(runs.len(), 1);
    let made: RunResponse = serde_json::from_value(runs[0].clone()).expect("a run");
    assert_eq!(made.run.phase, RunPhase::SetupError);
    assert_eq!(made.run.result, RunResult::Unknown);
    assert_eq!(made.run.name, "Setup Error");
    assert_eq!(made.run.group, GROUP);
    assert!(made.run.tasks.is_empty(), "{:?}", made.run.tasks);
    assert!(made.run_config.tasks.is_empty());
    let first = made.run_config.setup_errors.first().expect("setup errors");
    assert!(
        first.starts_with(".agola/config.yml:7:"),
        "positioned at the cycle's first edge: {first:?}"
    );
    assert!(
        first.contains("runs[0] \"ci\" › tasks[0] \"a\" › depends[0]: "),
        "{first:?}"
    );
    assert!(first.contains("dependency cycle"), "{first:?}");

    // It reads back the same, and is not pending: it will never run.
    let reply = api
        .call(
            Method::GET,
            &format!("/runs/{}", made.run.id),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let got: RunResponse = reply.parse();
    assert_eq!(got.run, made.run);
    assert_eq!(got.run_config.setup_errors, made.run_config.setup_errors);
    assert_eq!(got.pending, None);
    let page = list(&api).await;
    assert_eq!(page.runs, vec![made.run]);
}

#[tokio::test]
async fn a_config_beyond_the_limits_is_a_400_with_positioned_details_and_records_nothing() {
    let api = Api::start().await;
    let mut config = String::from("runs:\n  - name: ci\n    tasks:\n");
    for i in 0..1001 {
        config.push_str(&format!("      - {{ name: t{i} }}\n"));
    }
    let reply = api
        .call(
            Method::POST,
            "/runs",
            Some(ADMIN),
            Some(&create_request(GROUP, &config)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["code"], "bad_request");
    let details = body["details"].as_array().expect("positioned errors");
    assert_eq!(details.len(), 1, "{body}");
    assert_eq!(details[0]["field"], "runs[0].tasks[1000]");
    assert_eq!(details[0]["line"], 1004);
    assert_eq!(details[0]["limit"], true);
    assert_eq!(
        details[0]["message"],
        "more than 1000 tasks in one config (Cairn's limit)"
    );
    assert!(list(&api).await.runs.is_empty());
}

#[tokio::test]
async fn bad_run_requests_get_exact_json_errors() {
    let api = Api::start().await;
    for group in ["project/p1/branch/main", "/project", "/"] {
        api.call(
            Method::POST,
            "/runs",
            Some(ADMIN),
            Some(&create_request(group, ONE_TASK)),
        )
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!(
                "group {group:?} must be an absolute path of at least two segments, like /user/<id>/branch/<name>"
            ),
        );
    }
    let mut named = create_request(GROUP, ONE_TASK);
    named["run_name"] = "nightly".into();
    api.call(Method::POST, "/runs", Some(ADMIN), Some(&named))
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            ".agola/config.yml: no run named \"nightly\" matches this reference",
        );
    api.call(Method::GET, "/runs?phase=queued,bogus", Some(ADMIN), None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unknown phase \"bogus\"",
        );
    api.call(Method::GET, "/runs?limit=0", Some(ADMIN), None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be at least 1",
        );
    // A run id in its format that names no run is a 404; one out of it, a 400.
    api.call(Method::GET, "/runs/00000000000000009999", Some(ADMIN), None)
        .await
        .assert_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "run 00000000000000009999 not found",
        );
    api.call(Method::GET, "/runs/not-a-run-id", Some(ADMIN), None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "run id \"not-a-run-id\" is not valid: it must be 16 to 20 decimal digits",
        );
    api.call(Method::GET, "/no-such-thing", Some(ADMIN), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    assert!(list(&api).await.runs.is_empty(), "bad requests made runs");
}

//! The `/api/v1` run endpoints, black box: a real `cairn serve` on loopback, driven
//! through `RunClient` (and raw HTTP where the client would not send the bad request),
//! with a scripted executor where tasks must run. Each test is one paragraph of the
//! API's contract: rejected input, listing and paging, the per-group FIFO queue, run
//! and task actions, restarts, the event stream and followed logs.

use std::time::Duration;

use cairn_client::api::{
    ListRunsQuery, RestartRunRequest, RunAction, RunResponse, TaskActionRequest,
};
use cairn_client::run::{Run, RunEvent, RunPhase, RunResult, RunTask, RunTaskStatus};
use cairn_client::{ApiError, ClientError, ErrorCode, LogStep, RunClient};
use futures::{Stream, StreamExt};

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{
    GROUP, api_error, create, create_request, one_task, task_id, wait_finished, wait_run,
    wait_run_phase,
};
use crate::support::scripted::{Behaviour, Script, ScriptedExecutor};
use crate::support::service::ServiceProc;

/// Generous bound for anything the scheduler and an executor must do.
const LONG: Duration = Duration::from_secs(120);

fn task<'r>(resp: &'r RunResponse, name: &str) -> &'r RunTask {
    &resp.run.tasks[&task_id(resp, name)]
}

/// The first page of runs matching `query`: every one of them, as no test here creates
/// more than the default page size.
async fn list_all(client: &RunClient, query: &ListRunsQuery) -> Vec<Run> {
    client.list_runs(query).await.unwrap().runs
}

fn ids(runs: &[Run]) -> Vec<String> {
    runs.iter().map(|r| r.id.clone()).collect()
}

/// Reads `events` until one with sequence `last` (or later) arrives.
async fn events_until(
    events: &mut (impl Stream<Item = Result<RunEvent, ClientError>> + Unpin),
    last: u64,
) -> Vec<RunEvent> {
    let mut out = Vec::new();
    tokio::time::timeout(LONG, async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            let seq = ev.sequence;
            out.push(ev);
            if seq >= last {
                return;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no event with sequence {last} within {LONG:?}"));
    out
}

// --- 1. bad configs ------------------------------------------------------------------

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

const MISSING_DEPENDENCY: &str = r#"runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
      - name: test
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make test } ]
        depends: [ buidl ]
"#;

const INVALID_YAML: &str = r#"runs:
  - name: ci
    tasks: [ { name: a ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_record_setuperror_runs_with_positioned_errors_that_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();

    // (case, config, line, field, part of the message) of the first error.
    let cases = [
        (
            "dependency cycle",
            CYCLE,
            7,
            "runs[0] \"ci\" › tasks[0] \"a\" › depends[0]",
            "dependency cycle",
        ),
        (
            "missing task in depends",
            MISSING_DEPENDENCY,
            10,
            "runs[0] \"ci\" › tasks[1] \"test\" › depends[0]",
            "unknown task \"buidl\"",
        ),
        ("invalid yaml", INVALID_YAML, 3, "", ""),
    ];
    let mut recorded = Vec::new();
    for (case, config, line, field, message) in cases {
        // Agola's gateway: the config cannot be set up, yet one run is recorded.
        let created = client
            .create_run(&create_request(GROUP, config))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(created.runs.len(), 1, "{case}: {created:?}");
        let r = &created.runs[0];
        assert_eq!(r.run.phase, RunPhase::SetupError, "{case}");
        assert_eq!(r.run.result, RunResult::Unknown, "{case}");
        assert_eq!(r.run.name, "Setup Error", "{case}");
        assert_eq!(r.run.group, GROUP, "{case}");
        assert!(r.run.tasks.is_empty(), "{case}: {:?}", r.run.tasks);
        let first = r.run_config.setup_errors.first().expect("setup errors");
        let place = format!(".agola/config.yml:{line}:");
        assert!(first.starts_with(&place), "{case}: {first:?}");
        let column: u64 = first[place.len()..]
            .split(':')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{case}: no column in {first:?}"));
        assert!(column > 0, "{case}: {first:?}");
        if !field.is_empty() {
            assert!(
                first.contains(&format!(":{column}: {field}: ")),
                "{case}: {first:?}"
            );
        }
        assert!(first.contains(message), "{case}: {first:?}");
        // `GET /runs/{id}` shows the same.
        let got = client.run(&r.run.id).await.unwrap();
        assert_eq!(got.run.phase, RunPhase::SetupError, "{case}");
        assert_eq!(got.run_config.setup_errors, r.run_config.setup_errors);
        recorded.push(r.run.id.clone());
    }

    // Listed, newest first, and with the phase filter.
    let all = list_all(&client, &ListRunsQuery::default()).await;
    let mut newest_first = recorded.clone();
    newest_first.reverse();
    assert_eq!(ids(&all), newest_first);
    let setup = list_all(
        &client,
        &ListRunsQuery {
            phase: vec![RunPhase::SetupError],
            ..ListRunsQuery::default()
        },
    )
    .await;
    assert_eq!(ids(&setup), newest_first);

    // Finished-like from the start: archived, and the group's queue is not held.
    for id in &recorded {
        wait_run(&client, id, "archived", |r| r.run.archived).await;
    }
    let good = create(&client, GROUP, &one_task("build")).await;
    wait_run_phase(&client, &good.run.id, RunPhase::Running).await;
}

// --- 2. bad requests -----------------------------------------------------------------

/// Status and decoded JSON error body of a raw reply.
async fn raw_error(resp: reqwest::Response) -> (reqwest::StatusCode, ApiError) {
    let status = resp.status();
    let json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = resp.bytes().await.unwrap();
    assert!(json, "{status}: not a JSON body: {body:?}");
    let e = serde_json::from_slice::<ApiError>(&body)
        .unwrap_or_else(|err| panic!("{status}: not an error body ({err}): {body:?}"));
    (status, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", node.url);

    // Authentication: no token, then a wrong one.
    let resp = http.get(format!("{api}/runs")).send().await.unwrap();
    let (status, e) = raw_error(resp).await;
    assert_eq!(status, 401);
    assert_eq!(e.code, ErrorCode::Unauthorized);
    let wrong = RunClient::new(
        std::slice::from_ref(&node.url),
        Some("not-the-token".into()),
    )
    .unwrap();
    let e = api_error(wrong.list_runs(&ListRunsQuery::default()).await);
    assert_eq!(e.code, ErrorCode::Unauthorized);

    // An unknown endpoint.
    let resp = http
        .get(format!("{api}/no-such-thing"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (status, e) = raw_error(resp).await;
    assert_eq!(status, 404);
    assert_eq!(e.code, ErrorCode::NotFound);

    // A body that is not JSON.
    let resp = http
        .post(format!("{api}/runs"))
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{\"group\": ")
        .send()
        .await
        .unwrap();
    let (status, e) = raw_error(resp).await;
    assert_eq!(status, 400);
    assert_eq!(e.code, ErrorCode::BadRequest);

    // Groups must be absolute, with at least two segments.
    let config = one_task("build");
    for group in ["project/p1/branch/main", "/project", "/"] {
        let e = api_error(client.create_run(&create_request(group, &config)).await);
        assert_eq!(e.code, ErrorCode::BadRequest, "group {group:?}: {e:?}");
        assert!(e.message.contains("group"), "{e:?}");
    }

    // A run name the config does not have.
    let mut req = create_request(GROUP, &config);
    req.run_name = Some("nightly".into());
    let e = api_error(client.create_run(&req).await);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("nightly"), "{e:?}");

    // Listing: an unknown phase (the client only sends real ones), a zero limit.
    let resp = http
        .get(format!("{api}/runs?phase=queued,bogus"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (status, e) = raw_error(resp).await;
    assert_eq!(status, 400);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("bogus"), "{e:?}");
    let zero = ListRunsQuery {
        limit: Some(0),
        ..ListRunsQuery::default()
    };
    let e = api_error(client.list_runs(&zero).await);
    assert_eq!(e.code, ErrorCode::BadRequest);

    // A run that does not exist.
    let missing = client.run("00000000000000009999").await;
    assert!(
        matches!(&missing, Err(e) if e.is_not_found()),
        "{missing:?}"
    );

    // A JSON body just over the 2 MiB limit (so that little of it is left unread): axum's
    // 413, with our body and its own kind (`too_large`, since issue 11's body limits).
    let mut big = create_request(GROUP, &config);
    big.config.content.push('#');
    big.config.content.push_str(&"x".repeat(2 << 20));
    let resp = http
        .post(format!("{api}/runs"))
        .bearer_auth(TOKEN)
        .json(&big)
        .send()
        .await
        .unwrap();
    let (status, e) = raw_error(resp).await;
    assert_eq!(status, 413);
    assert_eq!(e.code, ErrorCode::TooLarge);
    let e = api_error(client.create_run(&big).await);
    assert_eq!(e.code, ErrorCode::TooLarge);

    let all = list_all(&client, &ListRunsQuery::default()).await;
    assert!(all.is_empty(), "bad requests created runs: {all:?}");
}

// --- 3. listing ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_by_group_prefix_phase_and_last_run_and_pages_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let config = one_task("build");
    // No executor: the first run of each group starts (and waits for one), the others
    // queue behind it.
    let groups = [
        "/project/p1/branch/main",
        "/project/p1/branch/dev",
        "/project/p10/branch/main",
        "/project/p1/branch/main",
        "/project/p1/branch/dev",
        "/project/p1/branch/main",
    ];
    let mut created = Vec::new();
    for group in groups {
        created.push(create(&client, group, &config).await.run);
    }
    let p1: Vec<String> = created
        .iter()
        .filter(|r| r.group.starts_with("/project/p1/"))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(p1.len(), 5);
    for id in [&created[0].id, &created[1].id, &created[2].id] {
        wait_run_phase(&client, id, RunPhase::Running).await;
    }
    // One queued run of p1/main is cancelled, so that a phase filter has something to drop.
    client
        .run_action(&created[5].id, RunAction::Cancel)
        .await
        .unwrap();

    // The group is a prefix on segment boundaries: p10 is not under p1. Newest first.
    let by_group = |asc| ListRunsQuery {
        group: Some("/project/p1".into()),
        asc,
        ..ListRunsQuery::default()
    };
    let newest_first = ids(&list_all(&client, &by_group(false)).await);
    let mut expected = p1.clone();
    expected.reverse();
    assert_eq!(newest_first, expected);
    let oldest_first = ids(&list_all(&client, &by_group(true)).await);
    assert_eq!(oldest_first, p1);

    // Pages of two, in both orders, cover everything once.
    for asc in [false, true] {
        let mut walked = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = client
                .list_runs(&ListRunsQuery {
                    limit: Some(2),
                    cursor: cursor.clone(),
                    ..by_group(asc)
                })
                .await
                .unwrap();
            assert!(page.runs.len() <= 2);
            walked.extend(ids(&page.runs));
            pages += 1;
            assert!(pages <= 10, "paging does not end: {walked:?}");
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let want = if asc { &oldest_first } else { &newest_first };
        assert_eq!(&walked, want, "asc = {asc}");
    }

    // Phase filter: the cancelled run is left out.
    let active = ids(&list_all(
        &client,
        &ListRunsQuery {
            phase: vec![RunPhase::Queued, RunPhase::Running],
            ..by_group(true)
        },
    )
    .await);
    let want: Vec<String> = p1
        .iter()
        .filter(|id| **id != created[5].id)
        .cloned()
        .collect();
    assert_eq!(active, want);
    let cancelled = list_all(
        &client,
        &ListRunsQuery {
            phase: vec![RunPhase::Cancelled],
            ..ListRunsQuery::default()
        },
    )
    .await;
    assert_eq!(ids(&cancelled), vec![created[5].id.clone()]);

    // last_run: the newest run of each group.
    let last = list_all(
        &client,
        &ListRunsQuery {
            last_run: true,
            ..by_group(true)
        },
    )
    .await;
    let mut last_ids = ids(&last);
    last_ids.sort();
    let mut want = vec![created[4].id.clone(), created[5].id.clone()];
    want.sort();
    assert_eq!(last_ids, want, "{last:?}");
    let everywhere = list_all(
        &client,
        &ListRunsQuery {
            last_run: true,
            ..ListRunsQuery::default()
        },
    )
    .await;
    let mut groups: Vec<&str> = everywhere.iter().map(|r| r.group.as_str()).collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            "/project/p1/branch/dev",
            "/project/p1/branch/main",
            "/project/p10/branch/main"
        ]
    );
}

// --- 4. concurrent creation and the FIFO queue ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_in_one_group_get_unique_counters_and_run_one_at_a_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let config = one_task("build");
    let _ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, Script::new("ex1"));

    let creations = (0..20).map(|_| {
        let (client, config) = (client.clone(), config.clone());
        tokio::spawn(async move { create(&client, GROUP, &config).await.run })
    });
    let mut runs: Vec<Run> = futures::future::join_all(creations)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    let counters: Vec<u64> = runs.iter().map(|r| r.counter).collect();
    assert_eq!(counters, (1..=20).collect::<Vec<u64>>(), "by id: {runs:?}");

    let mut previous: Option<RunResponse> = None;
    for run in &runs {
        let done = wait_for(
            Duration::from_secs(600),
            &format!("run #{} to finish", run.counter),
            || async {
                client
                    .run(&run.id)
                    .await
                    .ok()
                    .filter(|r| r.run.phase == RunPhase::Finished)
            },
        )
        .await;
        assert_eq!(done.run.result, RunResult::Success, "run #{}", run.counter);
        if let Some(prev) = &previous {
            let started = done.run.start_time.unwrap();
            let prev_end = prev.run.end_time.unwrap();
            assert!(
                started >= prev_end,
                "run #{} started at {started} before run #{} ended at {prev_end}",
                run.counter,
                prev.run.counter
            );
        }
        previous = Some(done);
    }
}

// --- 5. run actions ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_a_running_run_and_cancel_drops_a_queued_one_each_refused_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let mut script = Script::new("ex1");
    script.behaviour = |_| Behaviour::RunUntilStopped;
    let ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, script);
    let config = one_task("serve");

    let first = create(&client, GROUP, &config).await;
    let first_id = first.run.id.clone();
    let running = wait_run(&client, &first_id, "its task running", |r| {
        task(r, "serve").status == RunTaskStatus::Running
    })
    .await;
    let serve_id = task_id(&running, "serve");

    let second = create(&client, GROUP, &config).await;
    let second_id = second.run.id.clone();
    let queued = client.run(&second_id).await.unwrap();
    assert_eq!(queued.run.phase, RunPhase::Queued);
    let why = queued.pending.and_then(|p| p.run).unwrap_or_default();
    assert!(why.contains(&first_id), "pending reason: {why:?}");

    // Each action only in its phase.
    let e = api_error(client.run_action(&first_id, RunAction::Cancel).await);
    assert_eq!(
        e.code,
        ErrorCode::Conflict,
        "cancel of a running run: {e:?}"
    );
    let e = api_error(client.run_action(&second_id, RunAction::Stop).await);
    assert_eq!(e.code, ErrorCode::Conflict, "stop of a queued run: {e:?}");

    // Cancel only records the request; the scheduler applies it in its pass.
    let asked = client
        .run_action(&second_id, RunAction::Cancel)
        .await
        .unwrap();
    assert!(
        asked.run.cancel || asked.run.phase == RunPhase::Cancelled,
        "{:?}",
        asked.run
    );
    let cancelled = wait_run(&client, &second_id, "the cancel applied", |r| {
        r.run.phase == RunPhase::Cancelled
    })
    .await;
    assert_eq!(cancelled.run.result, RunResult::Stopped);
    assert_eq!(cancelled.run.start_time, None);

    client.run_action(&first_id, RunAction::Stop).await.unwrap();
    wait_for(LONG, "the executor to be told to stop", || async {
        ex.stop_requests().contains(&serve_id).then_some(())
    })
    .await;
    let stopped = wait_finished(&client, &first_id).await;
    assert_eq!(stopped.run.result, RunResult::Stopped);
    let serve = task(&stopped, "serve");
    assert_eq!(serve.status, RunTaskStatus::Stopped);
    assert!(serve.end_time.is_some(), "{serve:?}");
    assert!(stopped.run.end_time.is_some());

    // The cancelled run never starts, even now that its group is free.
    let after = client.run(&second_id).await.unwrap();
    assert_eq!(after.run.phase, RunPhase::Cancelled);
    assert_eq!(ex.started(), vec![serve_id]);
}

// --- 6. approval ---------------------------------------------------------------------

const APPROVAL: &str = r#"runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
      - name: deploy
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make deploy } ]
        depends: [ build ]
        approval: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_needing_approval_waits_for_it_then_runs_and_cannot_be_approved_twice() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, Script::new("ex1"));

    let id = create(&client, GROUP, APPROVAL).await.run.id;
    let waiting = wait_run(&client, &id, "deploy waiting for approval", |r| {
        task(r, "deploy").waiting_approval
    })
    .await;
    assert_eq!(waiting.run.phase, RunPhase::Running);
    assert_eq!(task(&waiting, "build").status, RunTaskStatus::Success);
    assert_eq!(task(&waiting, "deploy").status, RunTaskStatus::NotStarted);
    let pending = waiting.pending.clone().expect("pending reasons");
    assert_eq!(pending.tasks["deploy"], "waiting for approval");
    let deploy_id = task_id(&waiting, "deploy");
    assert!(!ex.started().contains(&deploy_id));

    let approve = TaskActionRequest::Approve {
        approver: Some("alice".into()),
    };
    let approved = client.task_action(&id, "deploy", &approve).await.unwrap();
    assert!(task(&approved, "deploy").approved);
    assert!(!task(&approved, "deploy").waiting_approval);

    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success);
    assert_eq!(task(&done, "deploy").status, RunTaskStatus::Success);
    assert!(ex.started().contains(&deploy_id));

    let e = api_error(client.task_action(&id, "deploy", &approve).await);
    assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
}

// --- 7. ignore_failure and on_failure ------------------------------------------------

const IGNORED_FAILURE: &str = r#"runs:
  - name: ci
    tasks:
      - name: flaky
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make flaky } ]
        ignore_failure: true
"#;

const HANDLED_FAILURE: &str = r#"runs:
  - name: ci
    tasks:
      - name: broken
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make broken } ]
      - name: report
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: echo failed } ]
        depends: [ { broken: [ on_failure ] } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_failure_leaves_the_run_successful_and_a_real_one_fails_it_and_runs_on_failure()
{
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let mut script = Script::new("ex1");
    script.behaviour = |name| match name {
        "flaky" | "broken" => Behaviour::Fail,
        _ => Behaviour::Succeed,
    };
    let _ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, script);

    let ignored = create(&client, "/project/p1/branch/a", IGNORED_FAILURE).await;
    let handled = create(&client, "/project/p1/branch/b", HANDLED_FAILURE).await;

    let done = wait_finished(&client, &ignored.run.id).await;
    assert_eq!(task(&done, "flaky").status, RunTaskStatus::Failed);
    assert_eq!(done.run.result, RunResult::Success);

    let done = wait_finished(&client, &handled.run.id).await;
    assert_eq!(task(&done, "broken").status, RunTaskStatus::Failed);
    assert_eq!(task(&done, "report").status, RunTaskStatus::Success);
    assert_eq!(done.run.result, RunResult::Failed);
}

// --- 8. restart ----------------------------------------------------------------------

const CHAIN: &str = r#"runs:
  - name: ci
    tasks:
      - name: a
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make a } ]
      - name: b
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make b } ]
        depends: [ a ]
      - name: c
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make c } ]
        depends: [ b ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_failed_keeps_successful_tasks_and_from_start_reruns_everything() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let mut broken = Script::new("broken");
    broken.behaviour = |name| match name {
        "b" => Behaviour::Fail,
        _ => Behaviour::Succeed,
    };
    let mut ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, broken);

    let first = create(&client, GROUP, CHAIN).await;
    let failed = wait_finished(&client, &first.run.id).await;
    assert_eq!(failed.run.result, RunResult::Failed);
    assert_eq!(task(&failed, "a").status, RunTaskStatus::Success);
    assert_eq!(task(&failed, "b").status, RunTaskStatus::Failed);
    assert_eq!(task(&failed, "c").status, RunTaskStatus::Skipped);

    // The fix: the broken executor goes away, one whose tasks succeed takes over, except
    // for `hang`, which runs until stopped.
    ex.kill();
    client.delete_executor(&ex.id).await.unwrap();
    let mut fixed = Script::new("fixed");
    fixed.behaviour = |name| match name {
        "hang" => Behaviour::RunUntilStopped,
        _ => Behaviour::Succeed,
    };
    let _fixed = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, fixed);

    // Restarting from failed tasks reuses `a`'s logs, so it waits for them to be archived.
    wait_run(&client, &first.run.id, "archived", |r| r.run.archived).await;
    let restarted = client
        .restart_run(&first.run.id, &RestartRunRequest::default())
        .await
        .unwrap();
    assert_ne!(restarted.run.id, first.run.id);
    assert!(restarted.run.id > first.run.id);
    assert_eq!(restarted.run.counter, first.run.counter + 1);
    assert_eq!(task_id(&restarted, "a"), task_id(&failed, "a"));
    assert_eq!(task(&restarted, "a").status, RunTaskStatus::Success);
    for name in ["b", "c"] {
        assert_ne!(task_id(&restarted, name), task_id(&failed, name), "{name}");
    }
    let done = wait_finished(&client, &restarted.run.id).await;
    assert_eq!(done.run.result, RunResult::Success);
    assert_eq!(task_id(&done, "a"), task_id(&failed, "a"));

    let from_start = client
        .restart_run(
            &first.run.id,
            &RestartRunRequest {
                from_start: true,
                ..RestartRunRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(from_start.run.counter, first.run.counter + 2);
    for name in ["a", "b", "c"] {
        let fresh = task_id(&from_start, name);
        assert_ne!(fresh, task_id(&failed, name), "{name}");
        assert_ne!(fresh, task_id(&done, name), "{name}");
    }
    let done = wait_finished(&client, &from_start.run.id).await;
    assert_eq!(done.run.result, RunResult::Success);

    // A running run cannot be restarted either way.
    let hanging = create(&client, "/project/p2/branch/main", &one_task("hang")).await;
    wait_run(&client, &hanging.run.id, "hang running", |r| {
        task(r, "hang").status == RunTaskStatus::Running
    })
    .await;
    for from_start in [false, true] {
        let req = RestartRunRequest {
            from_start,
            ..RestartRunRequest::default()
        };
        let e = api_error(client.restart_run(&hanging.run.id, &req).await);
        assert_eq!(
            e.code,
            ErrorCode::Conflict,
            "from_start = {from_start}: {e:?}"
        );
    }
}

// --- 9. run events -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_events_show_each_phase_in_order_and_resume_after_a_sequence_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let config = one_task("build");

    // A live stream. It opens when first polled, so it is polled from a task of its own
    // and known to be open once it shows an event of a probe run created after that.
    let (tx, mut live) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = Box::pin(client.run_events(None));
    let forward = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let mut probes = 0;
    let first = loop {
        create(&client, "/project/probe/branch/main", &config).await;
        probes += 1;
        if let Ok(ev) = tokio::time::timeout(Duration::from_secs(5), live.recv()).await {
            break ev.expect("the stream goes on").unwrap();
        }
        assert!(probes < 20, "the live event stream shows no event");
    };
    assert!(first.group.starts_with("/project/probe/"), "{first:?}");

    let _ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, Script::new("ex1"));
    let id = create(&client, GROUP, &config).await.run.id;
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success);

    // The live stream shows the run go through its phases in order.
    let mut seen = vec![first];
    let mut phases = Vec::new();
    tokio::time::timeout(LONG, async {
        while phases.last() != Some(&RunPhase::Finished) {
            let ev = live.recv().await.expect("the stream goes on").unwrap();
            if ev.run_id == id && phases.last() != Some(&ev.phase) {
                phases.push(ev.phase);
            }
            seen.push(ev);
        }
    })
    .await
    .expect("the run's finished event");
    forward.abort();
    assert_eq!(
        phases,
        [RunPhase::Queued, RunPhase::Running, RunPhase::Finished]
    );
    let finished = seen.last().unwrap();
    assert_eq!(finished.result, RunResult::Success);
    let last = finished.sequence;
    assert!(
        seen.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "{seen:?}"
    );

    // A replay from 0 has everything the live stream had, and the live stream missed
    // nothing from its first event on.
    let replay = events_until(&mut Box::pin(client.run_events(Some(0))), last).await;
    let from = replay
        .iter()
        .position(|e| e.sequence == seen[0].sequence)
        .expect("the live stream's first event is in the replay");
    assert_eq!(&replay[from..], &seen[..]);

    // Resuming after any sequence gives exactly the rest.
    for i in [0, replay.len() / 2, replay.len() - 2] {
        let after = replay[i].sequence;
        let resumed = events_until(&mut Box::pin(client.run_events(Some(after))), last).await;
        assert_eq!(&resumed[..], &replay[i + 1..], "after {after}");
    }
}

// --- 10. logs ------------------------------------------------------------------------

/// Reads a log stream to its end, failing after `LONG`.
async fn read_to_end(stream: &mut cairn_client::logs::LogStream, mut text: Vec<u8>) -> String {
    tokio::time::timeout(LONG, async {
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
    })
    .await
    .expect("the followed log to end");
    String::from_utf8(text).unwrap()
}

/// Reads from `stream` until `want` bytes arrived.
async fn read_exactly(stream: &mut cairn_client::logs::LogStream, want: usize) -> Vec<u8> {
    let mut text = Vec::new();
    tokio::time::timeout(LONG, async {
        while text.len() < want {
            let chunk = stream.next().await.expect("more log").unwrap();
            text.extend_from_slice(&chunk);
        }
    })
    .await
    .expect("the log's first line");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_logs_start_at_any_offset_and_end_when_the_task_stops() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let mut script = Script::new("ex1");
    script.behaviour = |_| Behaviour::RunUntilStopped;
    let _ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, script);

    let id = create(&client, GROUP, &one_task("tail")).await.run.id;
    let running = wait_run(&client, &id, "tail running", |r| {
        task(r, "tail").status == RunTaskStatus::Running
    })
    .await;
    let tail = task_id(&running, "tail");
    let line = "tail step 0\n";
    // The executor writes its step-0 line once the step runs.
    wait_for(LONG, "the step-0 line", || async {
        let mut log = client
            .logs(&id, &tail, LogStep::Step(0), 0, false)
            .await
            .ok()?;
        let mut text = Vec::new();
        while let Some(chunk) = log.next().await {
            text.extend_from_slice(&chunk.ok()?);
        }
        (text == line.as_bytes()).then_some(())
    })
    .await;

    let mut whole = client
        .logs(&id, &tail, LogStep::Step(0), 0, true)
        .await
        .unwrap();
    assert!(!whole.already_complete());
    let mut rest = client
        .logs(&id, &tail, LogStep::Step(0), 5, true)
        .await
        .unwrap();
    let whole_text = read_exactly(&mut whole, line.len()).await;
    assert_eq!(whole_text, line.as_bytes());
    let rest_text = read_exactly(&mut rest, line.len() - 5).await;
    assert_eq!(rest_text, &line.as_bytes()[5..]);

    client.run_action(&id, RunAction::Stop).await.unwrap();
    assert_eq!(read_to_end(&mut whole, whole_text).await, line);
    assert_eq!(read_to_end(&mut rest, rest_text).await, &line[5..]);
    let stopped = wait_finished(&client, &id).await;
    assert_eq!(stopped.run.result, RunResult::Stopped);
}

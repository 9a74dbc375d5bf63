//! Run helpers shared by the modules that drive runs through a real `cairn serve`: the
//! create request, creating a run, waiting for a run to reach a state, finding a task by
//! name and reading a step's log.

use std::time::Duration;

use cairn_client::api::{CreateRunRequest, RunResponse};
use cairn_client::run::RunPhase;
use cairn_client::{ApiError, ClientError, LogStep, RunClient};
use futures::StreamExt;

use crate::support::poll::wait_for;
pub use crate::support::request::create_request;

/// How long a run of real processes is given to reach the state a test waits for.
pub const RUN_WAIT: Duration = Duration::from_secs(120);

/// The group most run tests create their runs in.
pub const GROUP: &str = "/project/p1/branch/main";

/// A config with one run, `ci`, of one single-step task named `task`.
pub fn one_task(task: &str) -> String {
    format!(
        r#"runs:
  - name: ci
    tasks:
      - name: {task}
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        steps: [ {{ run: make }} ]
"#
    )
}

/// A one-task config whose single step is `command`, with extra task lines (e.g.
/// `approval: true`, indented as a task's).
pub fn one_step(name: &str, command: &str, extra: &str) -> String {
    format!(
        r#"runs:
  - name: ci
    tasks:
      - name: {name}
        runtime: {{ containers: [ {{ image: busybox }} ] }}
{extra}        steps:
          - run: '{command}'
"#
    )
}

/// Creates the runs of `req`, asserting there is exactly one, and returns it.
pub async fn create_run(client: &RunClient, req: &CreateRunRequest) -> RunResponse {
    let mut created = client.create_run(req).await.unwrap();
    assert_eq!(created.runs.len(), 1);
    created.runs.remove(0)
}

/// Creates the one run of `config` in `group` ([`create_request`]) and returns it.
pub async fn create(client: &RunClient, group: &str, config: &str) -> RunResponse {
    create_run(client, &create_request(group, config)).await
}

/// Polls run `id` until `check` holds, for at most `timeout`; returns the run.
pub async fn wait_run_within(
    timeout: Duration,
    client: &RunClient,
    id: &str,
    what: &str,
    check: impl Fn(&RunResponse) -> bool,
) -> RunResponse {
    wait_for(timeout, &format!("run {id}: {what}"), || async {
        client.run(id).await.ok().filter(&check)
    })
    .await
}

/// Polls run `id` until `check` holds, for at most [`RUN_WAIT`]; returns the run.
pub async fn wait_run(
    client: &RunClient,
    id: &str,
    what: &str,
    check: impl Fn(&RunResponse) -> bool,
) -> RunResponse {
    wait_run_within(RUN_WAIT, client, id, what, check).await
}

/// Polls run `id` until its phase is `phase`, for at most `timeout`. A phase the run
/// never reaches (`finished` after `setuperror`) fails the test at the timeout.
pub async fn wait_run_phase_within(
    timeout: Duration,
    client: &RunClient,
    id: &str,
    phase: RunPhase,
) -> RunResponse {
    wait_run_within(timeout, client, id, &format!("to be {phase:?}"), |r| {
        r.run.phase == phase
    })
    .await
}

/// Polls run `id` until its phase is `phase`, for at most [`RUN_WAIT`].
pub async fn wait_run_phase(client: &RunClient, id: &str, phase: RunPhase) -> RunResponse {
    wait_run_phase_within(RUN_WAIT, client, id, phase).await
}

/// Polls run `id` until its phase is `finished`, for at most [`RUN_WAIT`].
pub async fn wait_finished(client: &RunClient, id: &str) -> RunResponse {
    wait_run_phase(client, id, RunPhase::Finished).await
}

/// The id of the run's task called `name` (panics when there is none).
pub fn task_id(r: &RunResponse, name: &str) -> String {
    r.run_config
        .tasks
        .values()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("run {} has no task {name}", r.run.id))
        .id
        .clone()
}

/// A step's whole log as it is now.
pub async fn step_log(client: &RunClient, run_id: &str, task_id: &str, step: LogStep) -> String {
    let mut log = client.logs(run_id, task_id, step, 0, false).await.unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = log.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(text).unwrap()
}

/// The `ApiError` of a failed call.
pub fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> ApiError {
    match result {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

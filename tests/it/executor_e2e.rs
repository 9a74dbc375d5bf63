//! The executor end to end through `cairn serve` with the local driver: steps are real
//! `/bin/sh` processes. A DAG with a cloned snapshot, workspaces restored in level order,
//! a failure handled by an `on_failure` child, Agola's rooted `dest_dir`, a git clone's
//! depth; caches (hit, miss, prefix fallback, and isolation or sharing by cache group);
//! approval, stop and timeout of real processes, and the process of a task whose live
//! executor was deleted; logs followed while they are written; and a standalone executor
//! killed -9, then replaced by a new one or restarted over its data dir.

use std::path::Path;
use std::time::Duration;

use cairn_client::LogStep;
use cairn_client::RunClient;
use cairn_client::api::{RunAction, RunResponse, TaskActionRequest};
use cairn_client::run::{ExecutorTaskPhase, RunResult, RunTask, RunTaskStatus};
use futures::StreamExt;

use crate::support::poll::wait_for;
use crate::support::runs::{
    create_request, create_run, one_step, step_log, task_id, wait_finished, wait_run,
};
use crate::support::service::{ExecutorProc, ServiceProc, process_alive};

/// Every wait: generous, for a slow shared machine.
const LONG: Duration = Duration::from_secs(90);

/// A tar of a working tree: `(name relative to the repo root, content)`.
pub fn snapshot(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// Creates the one run of `config` in `group` (with `cache_group` and the uploaded
/// `source`, when given) and returns its id.
async fn create(
    client: &RunClient,
    group: &str,
    config: &str,
    cache_group: Option<&str>,
    source: Option<Vec<u8>>,
) -> String {
    let mut req = create_request(group, config);
    req.cache_group = cache_group.map(str::to_string);
    if let Some(tar) = source {
        req.source = Some(client.upload_source(tar).await.unwrap());
    }
    create_run(client, &req).await.run.id
}

fn task<'r>(r: &'r RunResponse, name: &str) -> &'r RunTask {
    &r.run.tasks[&task_id(r, name)]
}

/// The exit codes of a task's steps (`None` for steps that never ran).
fn exit_codes(t: &RunTask) -> Vec<Option<i32>> {
    t.steps.iter().map(|s| s.exit_status).collect()
}

/// Reads a log stream to its end.
async fn read_to_end(stream: &mut cairn_client::logs::LogStream) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(LONG, async {
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
    })
    .await
    .expect("the followed log to end");
    String::from_utf8(text).unwrap()
}

/// The pid a step wrote to `path` (`echo $$ > path; exec sleep 600`), once it is there.
async fn pid_in(path: &Path) -> i32 {
    wait_for(LONG, "the step to write its pid", || async {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    })
    .await
}

/// Kills, when dropped, the step's `sleep 600` of pid `.0` if it is still that process,
/// so a failing test leaves nothing running.
struct SleepGuard(i32);

impl Drop for SleepGuard {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if cmdline == b"sleep\x00600\x00" {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

// --- 1. a DAG with workspaces and an on_failure branch ---------------------------------

const DAG: &str = r#"
runs:
  - name: dag
    tasks:
      - name: checkout
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone:
          - run: cat src.txt
          - run: 'echo from-checkout > shared.txt && echo one > one.txt'
          - save_to_workspace: { contents: [ { source_dir: ., dest_dir: ., paths: ['*.txt'] } ] }
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        depends: [ checkout ]
        steps:
          - run: 'echo from-build > shared.txt && echo two > two.txt'
          - save_to_workspace: { contents: [ { source_dir: ., dest_dir: ., paths: ['*.txt'] } ] }
      - name: integrate
        runtime: { containers: [ { image: busybox } ] }
        depends: [ build ]
        steps:
          - restore_workspace: { dest_dir: ws }
          - run: 'test -f ws/one.txt && test -f ws/two.txt && grep -qx from-build ws/shared.txt && grep -qx "hello from the snapshot" ws/src.txt && echo checked'
          - run: 'echo boom; exit 3'
      - name: report
        runtime: { containers: [ { image: busybox } ] }
        depends: [ { integrate: [ on_failure ] } ]
        steps:
          - run: echo integrate failed
      - name: deploy
        runtime: { containers: [ { image: busybox } ] }
        depends: [ integrate ]
        steps:
          - run: echo deploying
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_clones_restores_workspaces_in_level_order_and_runs_its_on_failure_branch() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let source = snapshot(&[("src.txt", "hello from the snapshot\n")]);
    let id = create(&client, "/project/dag/branch/main", DAG, None, Some(source)).await;
    let done = wait_finished(&client, &id).await;

    // integrate's failure is not ignore_failure: the run fails, on_failure ran, the
    // on_success sibling was skipped.
    assert_eq!(done.run.result, RunResult::Failed, "{:?}", done.run);
    assert_eq!(task(&done, "checkout").status, RunTaskStatus::Success);
    assert_eq!(task(&done, "build").status, RunTaskStatus::Success);
    assert_eq!(task(&done, "integrate").status, RunTaskStatus::Failed);
    assert_eq!(task(&done, "report").status, RunTaskStatus::Success);
    assert_eq!(task(&done, "deploy").status, RunTaskStatus::Skipped);

    assert_eq!(exit_codes(task(&done, "checkout")), vec![Some(0); 4]);
    assert_eq!(exit_codes(task(&done, "build")), vec![Some(0); 2]);
    let integrate = task(&done, "integrate");
    assert_eq!(exit_codes(integrate), vec![Some(0), Some(0), Some(3)]);
    let phases: Vec<ExecutorTaskPhase> = integrate.steps.iter().map(|s| s.phase).collect();
    assert_eq!(
        phases,
        vec![
            ExecutorTaskPhase::Success,
            ExecutorTaskPhase::Success,
            ExecutorTaskPhase::Failed
        ]
    );
    assert!(integrate.end_time.is_some());
    let deploy = task(&done, "deploy");
    assert!(
        deploy
            .steps
            .iter()
            .all(|s| s.phase == ExecutorTaskPhase::NotStarted),
        "{deploy:?}"
    );

    // The logs of real processes, exactly.
    let (checkout, build) = (task_id(&done, "checkout"), task_id(&done, "build"));
    let integrate = task_id(&done, "integrate");
    let clone_log = step_log(&client, &id, &checkout, LogStep::Step(0)).await;
    assert!(
        clone_log.starts_with("restoring the uploaded working tree into "),
        "{clone_log:?}"
    );
    assert_eq!(
        step_log(&client, &id, &checkout, LogStep::Step(1)).await,
        "hello from the snapshot\n"
    );
    assert_eq!(
        step_log(&client, &id, &integrate, LogStep::Step(1)).await,
        "checked\n"
    );
    assert_eq!(
        step_log(&client, &id, &integrate, LogStep::Step(2)).await,
        "boom\nexit status 3\n"
    );
    let report = task_id(&done, "report");
    assert_eq!(
        step_log(&client, &id, &report, LogStep::Step(0)).await,
        "integrate failed\n"
    );
    // The workspace was restored level by level: checkout's archive, then build's (whose
    // shared.txt won, as the grep above checked).
    let restore_log = step_log(&client, &id, &integrate, LogStep::Step(0)).await;
    let restored: Vec<&str> = restore_log
        .lines()
        .map(|l| {
            l.strip_prefix("restoring the workspace of task ")
                .unwrap_or_else(|| panic!("{restore_log:?}"))
        })
        .collect();
    assert_eq!(restored.len(), 2, "{restore_log:?}");
    assert!(restored[0].starts_with(&format!("{checkout} step 3 into ")));
    assert!(restored[1].starts_with(&format!("{build} step 1 into ")));
}

const ROOTED_DEST: &str = r#"
runs:
  - name: rooted
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'mkdir -p out && echo built > out/tool'
          - save_to_workspace: { contents: [ { source_dir: ./out, dest_dir: /bin/, paths: ['*'] } ] }
      - name: use
        runtime: { containers: [ { image: busybox } ] }
        depends: [build]
        steps:
          - restore_workspace: { dest_dir: . }
          - run: 'cat bin/tool'
"#;

/// Issue 10 (1): Agola's docs save with `dest_dir: /bin/`, which its toolbox archived as
/// `bin/` of the workspace; Cairn refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooted_dest_dir_saves_under_the_workspace_root() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let id = create(
        &client,
        "/project/rooted/branch/main",
        ROOTED_DEST,
        None,
        None,
    )
    .await;
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let use_id = task_id(&done, "use");
    assert_eq!(
        step_log(&client, &id, &use_id, LogStep::Step(1)).await,
        "built\n"
    );
}

/// Runs `git` in `dir` with a fixed identity.
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

const CLONE_DEPTHS: &str = r#"
runs:
  - name: clone
    tasks:
      - name: shallow
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone: { depth: 1 }
          - run: 'git rev-list --count HEAD; cat n.txt'
      - name: full
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone:
          - run: 'git rev-list --count HEAD'
"#;

/// Issue 10 (1): the clone step's `depth` (Agola's `git clone --depth N`); without it, the
/// whole history (Cairn always fetched 50 commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_clone_fetches_the_depth_asked_for_else_the_whole_history() {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "-q", "-b", "main"]);
    for i in 0..3 {
        std::fs::write(origin.join("n.txt"), format!("{i}\n")).unwrap();
        git(&origin, &["add", "."]);
        git(&origin, &["commit", "-q", "-m", &format!("c{i}")]);
    }
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let mut req = create_request("/project/clone/branch/main", CLONE_DEPTHS);
    req.source = Some(cairn_client::runconfig::SourceRef::Git {
        url: format!("file://{}", origin.display()),
        git_ref: "refs/heads/main".into(),
        commit: String::new(),
    });
    let created = client.create_run(&req).await.unwrap();
    let id = created.runs[0].run.id.clone();
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let shallow = task_id(&done, "shallow");
    assert_eq!(
        step_log(&client, &id, &shallow, LogStep::Step(1)).await,
        "1\n2\n"
    );
    let full = task_id(&done, "full");
    assert_eq!(step_log(&client, &id, &full, LogStep::Step(1)).await, "3\n");
}

// --- 2. caches ------------------------------------------------------------------------

const SAVE_DEPS: &str = r#"
runs:
  - name: save
    tasks:
      - name: save
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone:
          - run: 'mkdir -p deps && echo "deps of $(cat lock.txt)" > deps/lib.txt'
          - save_cache: { key: 'deps-{{ md5sum "lock.txt" }}', contents: [ { source_dir: deps, dest_dir: deps } ] }
"#;

const RESTORE_DEPS: &str = r#"
runs:
  - name: restore
    tasks:
      - name: restore
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone:
          - restore_cache: { keys: ['deps-{{ md5sum "lock.txt" }}'], dest_dir: hit }
          - restore_cache: { keys: ['deps-nomatch'], dest_dir: miss }
          - restore_cache: { keys: ['deps-nomatch', 'deps-'], dest_dir: fallback }
          - run: 'test ! -e miss && cat hit/deps/lib.txt fallback/deps/lib.txt'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_hit_by_key_miss_quietly_and_fall_back_to_the_newest_with_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let group = "/project/cache/branch/main";
    let v1 = || Some(snapshot(&[("lock.txt", "v1\n")]));
    let v2 = || Some(snapshot(&[("lock.txt", "v2\n")]));

    // Two caches of the same prefix, the v2 one saved last.
    for source in [v1(), v2()] {
        let id = create(&client, group, SAVE_DEPS, None, source).await;
        let done = wait_finished(&client, &id).await;
        assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
        let log = step_log(&client, &id, &task_id(&done, "save"), LogStep::Step(2)).await;
        assert!(log.starts_with("saved cache deps-"), "{log:?}");
    }

    // A v1 checkout: its own key hits v1; an unknown key restores nothing and succeeds;
    // a prefix after an unknown key picks the newest deps-* cache, v2's.
    let id = create(&client, group, RESTORE_DEPS, None, v1()).await;
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let restore = task_id(&done, "restore");
    assert_eq!(exit_codes(task(&done, "restore")), vec![Some(0); 5]);
    assert_eq!(
        step_log(&client, &id, &restore, LogStep::Step(4)).await,
        "deps of v1\ndeps of v2\n"
    );
    let hit = step_log(&client, &id, &restore, LogStep::Step(1)).await;
    assert!(hit.starts_with("restoring cache deps-"), "{hit:?}");
    assert_eq!(
        step_log(&client, &id, &restore, LogStep::Step(2)).await,
        "no cache matches deps-nomatch\nno cache restored\n"
    );
    let fallback = step_log(&client, &id, &restore, LogStep::Step(3)).await;
    assert!(
        fallback.starts_with("no cache matches deps-nomatch\nrestoring cache deps-"),
        "{fallback:?}"
    );
}

const SAVE_NAMED: &str = r#"
runs:
  - name: save
    tasks:
      - name: save
        runtime: { containers: [ { image: busybox } ] }
        environment: { WHO: "WHO_VALUE" }
        steps:
          - run: 'mkdir -p deps && echo "saved by $WHO" > deps/owner.txt'
          - save_cache: { key: deps, contents: [ { source_dir: deps, dest_dir: deps } ] }
"#;

const RESTORE_NAMED: &str = r#"
runs:
  - name: restore
    tasks:
      - name: restore
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - restore_cache: { keys: [deps], dest_dir: . }
          - run: 'cat deps/owner.txt 2>/dev/null || echo nothing restored'
"#;

/// Saves a `deps` cache marked `who` in `group` with `cache_group`.
async fn save_named(client: &RunClient, group: &str, cache_group: Option<&str>, who: &str) {
    let config = SAVE_NAMED.replace("WHO_VALUE", who);
    let id = create(client, group, &config, cache_group, None).await;
    let done = wait_finished(client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
}

/// What a restore of the `deps` cache in `group` with `cache_group` finds.
async fn restore_named(client: &RunClient, group: &str, cache_group: Option<&str>) -> String {
    restore_by(client, group, cache_group, "deps").await
}

/// What a restore by the key (or prefix) `key` in `group` with `cache_group` finds.
async fn restore_by(
    client: &RunClient,
    group: &str,
    cache_group: Option<&str>,
    key: &str,
) -> String {
    let config = RESTORE_NAMED.replace("keys: [deps]", &format!("keys: ['{key}']"));
    let id = create(client, group, &config, cache_group, None).await;
    let done = wait_finished(client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    step_log(client, &id, &task_id(&done, "restore"), LogStep::Step(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_groups_isolate_direct_runs_of_two_repos_and_let_two_projects_share() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();

    // Two local repos of one user: same run group, different cache groups.
    let user = "/user/u1/branch/main";
    save_named(&client, user, Some("u1-repoA"), "repoA").await;
    assert_eq!(
        restore_named(&client, user, Some("u1-repoB")).await,
        "nothing restored\n",
        "repoB must not see repoA's cache"
    );
    save_named(&client, user, Some("u1-repoB"), "repoB").await;
    assert_eq!(
        restore_named(&client, user, Some("u1-repoA")).await,
        "saved by repoA\n"
    );
    assert_eq!(
        restore_named(&client, user, Some("u1-repoB")).await,
        "saved by repoB\n"
    );

    // Two projects naming one cache group share it; a third without it does not.
    save_named(&client, "/project/p1/branch/main", Some("shared"), "p1").await;
    assert_eq!(
        restore_named(&client, "/project/p2/branch/main", Some("shared")).await,
        "saved by p1\n"
    );
    assert_eq!(
        restore_named(&client, "/project/p3/branch/main", None).await,
        "nothing restored\n"
    );
}

/// Issue 10 (12): caches lived in one flat `<group>-<key>` space, so project `app`
/// restoring by the prefix `web-` got project `app-web`'s `deps`, and `/user/x` and
/// `/project/x` shared everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_by_prefix_never_reaches_the_cache_of_a_group_whose_name_extends_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();

    save_named(&client, "/project/app-web/branch/main", None, "app-web").await;
    for probe in ["web-", "web-deps", "web", "deps"] {
        assert_eq!(
            restore_by(&client, "/project/app/branch/main", None, probe).await,
            "nothing restored\n",
            "project app restoring {probe:?} must not see app-web's cache"
        );
    }
    assert_eq!(
        restore_by(&client, "/project/app-web/branch/main", None, "de").await,
        "saved by app-web\n"
    );

    // Explicit cache groups whose names extend each other are as separate.
    save_named(
        &client,
        "/user/u/branch/main",
        Some("app-web"),
        "group app-web",
    )
    .await;
    assert_eq!(
        restore_by(&client, "/user/u/branch/main", Some("app"), "web-").await,
        "nothing restored\n"
    );

    // A user and a project with one id are two groups.
    save_named(&client, "/user/x/branch/main", None, "user x").await;
    assert_eq!(
        restore_named(&client, "/project/x/branch/main", None).await,
        "nothing restored\n"
    );
    assert_eq!(
        restore_named(&client, "/user/x/branch/main", None).await,
        "saved by user x\n"
    );
}

// --- 3. approval, stop, timeout -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_needing_approval_runs_on_the_executor_once_approved() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let config = one_step("gate", "echo approved work", "        approval: true\n");
    let id = create(&client, "/project/gate/branch/main", &config, None, None).await;
    let waiting = wait_run(&client, &id, "gate waiting for approval", |r| {
        task(r, "gate").waiting_approval
    })
    .await;
    assert_eq!(task(&waiting, "gate").status, RunTaskStatus::NotStarted);
    let pending = waiting.pending.clone().expect("pending reasons");
    assert_eq!(pending.tasks["gate"], "waiting for approval");

    let approve = TaskActionRequest::Approve {
        approver: Some("alice".into()),
    };
    client.task_action(&id, "gate", &approve).await.unwrap();
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let gate = task_id(&done, "gate");
    assert_eq!(
        step_log(&client, &id, &gate, LogStep::Step(0)).await,
        "approved work\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_run_kills_its_running_step_process() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let pid_file = dir.path().join("sleep.pid");
    let command = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let config = one_step("long", &command, "");
    let id = create(&client, "/project/stop/branch/main", &config, None, None).await;
    let pid = pid_in(&pid_file).await;
    let _guard = SleepGuard(pid);
    assert!(process_alive(pid), "the step's sleep runs");

    client.run_action(&id, RunAction::Stop).await.unwrap();
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Stopped, "{:?}", done.run);
    let long = task(&done, "long");
    assert_eq!(long.status, RunTaskStatus::Stopped, "{long:?}");
    assert_eq!(long.steps[0].phase, ExecutorTaskPhase::Stopped);
    assert!(long.end_time.is_some() && long.steps[0].end_time.is_some());
    assert!(
        !process_alive(pid),
        "the stopped step's process {pid} is gone"
    );
    let log = step_log(&client, &id, &task_id(&done, "long"), LogStep::Step(0)).await;
    assert_eq!(log, "stopped\n");
}

/// Kills, when dropped, the process group `.0` (a step's shell leads its own group), so a
/// failing test leaves nothing running.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Issue 10 (13): deleting a live executor failed its task at once, but the executor
/// re-registered at its next heartbeat and the step ran on to its end (its report
/// refused). Now the executor sees the task finished without it and kills its process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_live_executor_kills_the_process_of_its_task() {
    let dir = tempfile::tempdir().unwrap();
    // No retries: the deletion fails the task (a lost task would run again).
    let node = ServiceProc::with_executor(&dir.path().join("n"), &["--retry-lost-tasks", "0"]);
    let client = node.client();
    let pid_file = dir.path().join("step.pid");
    let marker = dir.path().join("ran-to-the-end");
    // Long enough that the wait for the process to die below ends well before it.
    let command = format!(
        "echo $$ > {}; sleep 60; touch {}",
        pid_file.display(),
        marker.display()
    );
    let config = one_step("long", &command, "");
    let id = create(&client, "/project/deleted/branch/main", &config, None, None).await;
    let pid = pid_in(&pid_file).await;
    let _guard = GroupGuard(pid);
    assert!(process_alive(pid), "the step runs");
    let executors = client.executors().await.unwrap().executors;
    assert_eq!(executors.len(), 1, "{executors:?}");

    client.delete_executor(&executors[0].id).await.unwrap();
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Failed, "{:?}", done.run);
    let long = task(&done, "long");
    assert_eq!(long.status, RunTaskStatus::Failed, "{long:?}");

    wait_for(
        Duration::from_secs(30),
        "the step's process to be killed",
        || async { (!process_alive(pid)).then_some(()) },
    )
    .await;
    assert!(!marker.exists(), "the step ran to its end");
    // The executor re-registers and stays usable.
    wait_registered(&client, &executors[0].id).await;
    let next = create(
        &client,
        "/project/deleted/branch/main",
        &one_step("next", "echo next", ""),
        None,
        None,
    )
    .await;
    let done = wait_finished(&client, &next).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_killed_and_fails_as_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let pid_file = dir.path().join("sleep.pid");
    let command = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let config = one_step("slow", &command, "        task_timeout: 2s\n");
    let id = create(&client, "/project/timeout/branch/main", &config, None, None).await;
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Failed, "{:?}", done.run);
    let slow = task(&done, "slow");
    assert_eq!(slow.status, RunTaskStatus::Failed, "{slow:?}");
    assert!(slow.timedout, "{slow:?}");
    assert_eq!(slow.fail_error.as_deref(), Some("timed out after 2s"));
    assert_eq!(slow.steps[0].phase, ExecutorTaskPhase::Failed);
    assert!(slow.end_time.is_some() && slow.steps[0].end_time.is_some());
    let pid = pid_in(&pid_file).await;
    let _guard = SleepGuard(pid);
    assert!(
        !process_alive(pid),
        "the timed-out step's process {pid} is gone"
    );
    let log = step_log(&client, &id, &task_id(&done, "slow"), LogStep::Step(0)).await;
    assert_eq!(log, "timed out\n");
}

// --- 4. logs --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_followed_from_the_start_or_the_middle_gets_exactly_its_rest_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
    let client = node.client();
    let config = one_step(
        "lines",
        "for i in $(seq 1 20); do echo line $i; sleep 0.1; done",
        "",
    );
    let id = create(&client, "/project/logs/branch/main", &config, None, None).await;
    let full: String = (1..=20).map(|i| format!("line {i}\n")).collect();

    // Once the first three lines are out, follow from 0 and from inside line 3.
    let running = wait_run(&client, &id, "lines running", |r| {
        task(r, "lines").status == RunTaskStatus::Running
    })
    .await;
    let lines = task_id(&running, "lines");
    let head = "line 1\nline 2\nline 3\n";
    wait_for(LONG, "three lines in the log", || async {
        let mut log = client
            .logs(&id, &lines, LogStep::Step(0), 0, false)
            .await
            .ok()?;
        let mut text = Vec::new();
        while let Some(chunk) = log.next().await {
            text.extend_from_slice(&chunk.ok()?);
        }
        text.starts_with(head.as_bytes()).then_some(())
    })
    .await;
    let middle = head.len() as u64 - 3;
    let mut from_start = client
        .logs(&id, &lines, LogStep::Step(0), 0, true)
        .await
        .unwrap();
    let mut from_middle = client
        .logs(&id, &lines, LogStep::Step(0), middle, true)
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut from_start).await, full);
    assert_eq!(read_to_end(&mut from_middle).await, full[middle as usize..]);
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
}

// --- 5. an executor killed -9 ---------------------------------------------------------

/// Whether `executor_id` is registered now.
async fn registered(client: &RunClient, executor_id: &str) -> bool {
    client
        .executors()
        .await
        .map(|e| e.executors.iter().any(|e| e.id == executor_id))
        .unwrap_or(false)
}

async fn wait_registered(client: &RunClient, executor_id: &str) {
    wait_for(
        LONG,
        &format!("executor {executor_id} registered"),
        || async { registered(client, executor_id).await.then_some(()) },
    )
    .await;
}

/// Starts a one-task run whose step records its pid in `pid_file` and sleeps; returns
/// the run id, the step's pid and its guard once the executor has recorded the step's
/// process group in its task directory (`<data_dir>-tasks/<task>/pgids`).
async fn start_sleeper(
    client: &RunClient,
    group: &str,
    pid_file: &Path,
    executor_dir: &Path,
) -> (String, i32, SleepGuard) {
    let command = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let id = create(
        client,
        group,
        &one_step("sleeper", &command, ""),
        None,
        None,
    )
    .await;
    let pid = pid_in(pid_file).await;
    let guard = SleepGuard(pid);
    let running = client.run(&id).await.unwrap();
    let tid = task_id(&running, "sleeper");
    let pgids = cairn::service::default_tasks_dir(executor_dir)
        .join(&tid)
        .join("pgids");
    wait_for(LONG, "the step's process group recorded", || async {
        std::fs::read_to_string(&pgids)
            .ok()
            .filter(|s| s.lines().any(|l| l.trim() == pid.to_string()))
    })
    .await;
    (id, pid, guard)
}

/// A task whose running step was lost: failed, with end times on the task and the step.
fn assert_lost(t: &RunTask) {
    assert_eq!(t.status, RunTaskStatus::Failed, "{t:?}");
    assert!(t.end_time.is_some(), "the task has an end time: {t:?}");
    assert_eq!(t.steps[0].phase, ExecutorTaskPhase::Failed, "{t:?}");
    assert!(
        t.steps[0].end_time.is_some(),
        "the running step has an end time: {t:?}"
    );
}

const QUICK: &str = "echo quick";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_task_fails_it_and_a_new_executor_takes_new_work() {
    let dir = tempfile::tempdir().unwrap();
    // No retries here: the lost task fails its run (see the next tests for retries).
    let node = ServiceProc::single_with(
        &dir.path().join("n"),
        &["--executor-ttl", "3", "--retry-lost-tasks", "0"],
    );
    let client = node.client();
    let mut ex1 = ExecutorProc::start(&node.url, &dir.path().join("ex1"), &[]);
    wait_registered(&client, &ex1.id).await;
    let pid_file = dir.path().join("sleep.pid");
    let (id, pid, _guard) = start_sleeper(
        &client,
        "/project/kill/branch/main",
        &pid_file,
        &ex1.data_dir,
    )
    .await;

    ex1.kill9();
    // Its lifeline watchdog kills the step at once, long before the lease expires.
    wait_for(LONG, "the killed executor's step to die", || async {
        (!process_alive(pid)).then_some(())
    })
    .await;
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Failed, "{:?}", done.run);
    assert!(done.run.end_time.is_some());
    let lost = task(&done, "sleeper");
    assert_lost(lost);
    let why = lost.fail_error.as_deref().unwrap_or_default();
    assert!(
        why.contains(&ex1.id),
        "the failure names the executor: {why:?}"
    );
    assert!(!registered(&client, &ex1.id).await, "ex1's lease expired");

    // A new executor (new data dir, new id) takes new work.
    let ex2 = ExecutorProc::start(&node.url, &dir.path().join("ex2"), &[]);
    assert_ne!(ex2.id, ex1.id);
    let next = create(
        &client,
        "/project/kill/branch/main",
        &one_step("quick", QUICK, ""),
        None,
        None,
    )
    .await;
    let done = wait_finished(&client, &next).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let quick = task_id(&done, "quick");
    assert_eq!(
        step_log(&client, &next, &quick, LogStep::Step(0)).await,
        "quick\n"
    );
    assert!(registered(&client, &ex2.id).await);
    drop(ex1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_restarted_over_its_data_dir_fails_the_lost_task_and_kills_its_orphans() {
    let dir = tempfile::tempdir().unwrap();
    // A long lease: the restarted executor, not the lease expiry, reports the loss.
    let node = ServiceProc::single_with(
        &dir.path().join("n"),
        &["--executor-ttl", "60", "--retry-lost-tasks", "0"],
    );
    let client = node.client();
    let mut ex = ExecutorProc::start(&node.url, &dir.path().join("ex"), &[]);
    wait_registered(&client, &ex.id).await;
    let pid_file = dir.path().join("sleep.pid");
    let (id, pid, _guard) = start_sleeper(
        &client,
        "/project/restart/branch/main",
        &pid_file,
        &ex.data_dir,
    )
    .await;

    ex.kill9();
    wait_for(LONG, "the lifeline to kill the step", || async {
        (!process_alive(pid)).then_some(())
    })
    .await;
    let first_id = ex.id.clone();
    ex.restart();
    assert_eq!(ex.id, first_id, "the same executor, from its data dir");

    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Failed, "{:?}", done.run);
    let lost = task(&done, "sleeper");
    assert_lost(lost);
    assert_eq!(
        lost.fail_error.as_deref(),
        Some("the executor restarted and lost the task")
    );
    assert!(
        !process_alive(pid),
        "the old process group {pid} was killed"
    );

    // The restarted executor takes new work.
    let next = create(
        &client,
        "/project/restart/branch/main",
        &one_step("quick", QUICK, ""),
        None,
        None,
    )
    .await;
    let done = wait_finished(&client, &next).await;
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
}

// --- 6. lost tasks run again (issue 14) -------------------------------------------------

/// A step that sleeps on its first attempt (its pid in `marks/pid`), and on any later one
/// checks that the first attempt's process is dead (gone, or a zombie) before it says so.
/// (Steps run with `sh -e`: a failing command substitution would end it.)
fn flaky_step(marks: &Path) -> String {
    let m = marks.display();
    format!(
        "if mkdir {m}/first 2>/dev/null; then echo $$ > {m}/pid; exec sleep 600; fi; \
         s=$(cut -d\" \" -f3 /proc/$(cat {m}/pid)/stat 2>/dev/null || true); \
         if [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo first attempt alive; exit 1; fi; \
         echo second attempt"
    )
}

/// A flaky run started on executor `ex1` (its first attempt sleeping, pid known), with a
/// second executor `ex2` registered beside it: the run id, the pid and both executors.
struct FlakyRun {
    id: String,
    pid: i32,
    _guard: SleepGuard,
    ex1: ExecutorProc,
    _ex2: ExecutorProc,
}

async fn start_flaky(node: &ServiceProc, dir: &Path, group: &str) -> FlakyRun {
    let client = node.client();
    let ex1 = ExecutorProc::start(&node.url, &dir.join("ex1"), &[]);
    wait_registered(&client, &ex1.id).await;
    let marks = dir.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let config = one_step("flaky", &flaky_step(&marks), "");
    let id = create(&client, group, &config, None, None).await;
    let pid = pid_in(&marks.join("pid")).await;
    let ex2 = ExecutorProc::start(&node.url, &dir.join("ex2"), &[]);
    wait_registered(&client, &ex2.id).await;
    FlakyRun {
        id,
        pid,
        _guard: SleepGuard(pid),
        ex1,
        _ex2: ex2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_lost_with_a_killed_executor_runs_again_on_another_never_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single_with(&dir.path().join("n"), &["--executor-ttl", "3"]);
    let client = node.client();
    // Bound whole: ex2 and the sleeper's guard must live to the end of the test.
    let mut run = start_flaky(&node, dir.path(), "/project/retry/branch/main").await;
    let (id, ex1) = (run.id.clone(), &mut run.ex1);

    ex1.kill9();
    let done = wait_finished(&client, &id).await;
    let tid = task_id(&done, "flaky");
    let log = step_log(&client, &id, &tid, LogStep::Step(0)).await;
    assert_eq!(
        log, "second attempt\n",
        "the second attempt ran once the first was dead"
    );
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let t = task(&done, "flaky");
    assert_eq!(t.lost_attempts.len(), 1, "{t:?}");
    assert_eq!(t.lost_attempts[0].executor_id, ex1.id);
    assert!(t.lost_attempts[0].reason.contains(&ex1.id), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_stopped_with_sigterm_hands_its_task_back_and_deregisters() {
    let dir = tempfile::tempdir().unwrap();
    // A long lease: only the hand-back can make the task run again within it.
    let node = ServiceProc::single_with(&dir.path().join("n"), &["--executor-ttl", "60"]);
    let client = node.client();
    let mut run = start_flaky(&node, dir.path(), "/project/handback/branch/main").await;
    let (id, pid, ex1) = (run.id.clone(), run.pid, &mut run.ex1);

    let stopping = std::time::Instant::now();
    let took = ex1.terminate();
    assert!(took < Duration::from_secs(20), "the stop took {took:?}");
    assert!(!process_alive(pid), "the step died with the clean stop");
    assert!(!registered(&client, &ex1.id).await, "ex1 deregistered");
    let done = wait_finished(&client, &id).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(50),
        "run again before ex1's 60 s lease could expire: {:?}",
        stopping.elapsed()
    );
    assert_eq!(done.run.result, RunResult::Success, "{:?}", done.run);
    let t = task(&done, "flaky");
    assert_eq!(t.lost_attempts.len(), 1, "{t:?}");
    assert_eq!(t.lost_attempts[0].executor_id, ex1.id);
    let tid = task_id(&done, "flaky");
    assert_eq!(
        step_log(&client, &id, &tid, LogStep::Step(0)).await,
        "second attempt\n"
    );
}

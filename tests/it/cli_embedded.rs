//! The CLI on the embedded node, black-box (issue 10, points 14 to 18): tasks no executor
//! of `cairn run` can ever take fail the run at once with the reason (privileged, foreign
//! arch, labels), `--allow-privileged`; a run queued behind another says so; `cairn runs
//! …` from another terminal while `cairn run` holds the node (and a stale endpoint);
//! `cairn runs restart` follows the new run; closed pipes and colours; a reference that
//! no run matches.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::{
    Background, Output, cairn, direct_run, direct_run_command, plain_dir, run,
};
use crate::support::process::TOKEN;
use crate::support::runs::create_request;
use crate::support::service::ServiceProc;

/// Every wait for something that should happen: generous, for a slow shared machine.
const LONG: Duration = Duration::from_secs(120);
/// How long a run may take to fail on an unplaceable task: "at once" on a busy machine
/// (today it never ends).
const FAST: Duration = Duration::from_secs(60);

/// `cairn ARGS… --data-dir DATA`, to its end.
fn client(args: &[&str], data_dir: &Path) -> Output {
    let mut cmd = cairn(args);
    cmd.arg("--data-dir").arg(data_dir);
    run(cmd, LONG)
}

fn one_task(runtime: &str) -> String {
    format!(
        r#"
runs:
  - name: ci
    tasks:
      - name: build
        runtime: {runtime}
        steps: [ {{ run: 'echo built' }} ]
"#
    )
}

/// An arch that is not this machine's.
fn foreign_arch() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "amd64"
    } else {
        "arm64"
    }
}

// --- 14. unplaceable tasks ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_task_fails_the_run_at_once_with_the_reason_and_exits_1() {
    let dir = plain_dir(
        &one_task("{ containers: [ { image: busybox, privileged: true } ] }"),
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], FAST);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.summary()["build"], "failed", "{out:?}");
    assert!(
        out.stdout
            .contains("no executor allows privileged containers"),
        "{out:?}"
    );
    assert!(out.task_lines("build").is_empty(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_privileged_lets_a_privileged_task_run() {
    let dir = plain_dir(
        &one_task("{ containers: [ { image: busybox, privileged: true } ] }"),
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &["--allow-privileged"], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.task_lines("build"), vec!["built".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_foreign_arch_or_with_labels_nobody_has_fails_at_once() {
    let arch = foreign_arch();
    let dir = plain_dir(
        &one_task(&format!(
            "{{ arch: {arch}, containers: [ {{ image: busybox }} ] }}"
        )),
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], FAST);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(&format!("no executor has arch {arch}")),
        "{out:?}"
    );

    let dir = plain_dir(
        &one_task("{ labels: { gpu: big }, containers: [ { image: busybox } ] }"),
        &[],
    );
    let out = direct_run(dir.path(), data.path(), &[], FAST);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("no executor has the labels {gpu=big}"),
        "{out:?}"
    );
}

const GATED: &str = r#"
runs:
  - name: ci
    tasks:
      - name: slow
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo started; while [ ! -f GATE ]; do sleep 0.1; done; echo done'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_behind_another_of_its_group_says_so() {
    let scratch = tempfile::tempdir().unwrap();
    let server = ServiceProc::with_executor(&scratch.path().join("server"), &[]);
    let gate = scratch.path().join("gate");
    let dir = plain_dir(&GATED.replace("GATE", &gate.display().to_string()), &[]);
    let remote = |dir: &Path| {
        let mut cmd = cairn(["run"]);
        cmd.arg(dir).args([
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "--branch",
            "main",
        ]);
        Background::spawn(cmd, None)
    };

    let mut first = remote(dir.path());
    let first_id = first.wait_run_id(LONG);
    first.wait_line(LONG, |l| l == "slow │ started");
    let mut second = remote(dir.path());
    let line = second.wait_line(LONG, |l| l.starts_with("cairn: waiting:"));
    assert!(
        line.contains(&format!("queued behind run {first_id}")),
        "{line}"
    );

    std::fs::write(&gate, "open").unwrap();
    let first = first.finish(LONG);
    assert_eq!(first.code, 0, "{first:?}");
    let second = second.finish(LONG);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(second.task_lines("slow"), vec!["started", "done"]);
}

// --- 15. the CLI while `cairn run` holds the node ---------------------------------------

const APPROVAL: &str = r#"
runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo built' } ]
      - name: deploy
        depends: [ build ]
        approval: true
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo deployed' } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_cairn_run_waits_on_an_approval_runs_list_show_logs_and_approve_work_from_another_process()
 {
    let dir = plain_dir(APPROVAL, &[]);
    let data = tempfile::tempdir().unwrap();
    let mut direct = Background::spawn(
        direct_run_command(dir.path(), data.path(), &[]),
        Some(data.path()),
    );
    let id = direct.wait_run_id(LONG);
    direct.wait_line(LONG, |l| l.contains("deploy waits for approval"));

    let list = client(&["runs", "list", "--output", "json"], data.path());
    assert_eq!(list.code, 0, "{list:?}");
    let page: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(page["runs"][0]["id"], id.as_str(), "{page}");
    assert_eq!(page["runs"][0]["phase"], "running", "{page}");

    let show = client(&["runs", "show", &id], data.path());
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("waiting for approval"), "{show:?}");
    let logs = client(&["runs", "logs", &id, "build"], data.path());
    assert_eq!(logs.code, 0, "{logs:?}");
    assert_eq!(logs.stdout, "built\n");

    let approve = client(&["runs", "approve", &id, "deploy"], data.path());
    assert_eq!(approve.code, 0, "{approve:?}");

    let out = direct.finish(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.task_lines("deploy"), vec!["deployed".to_string()]);
    // Once `cairn run` is gone, the commands open the data dir themselves again.
    assert!(!data.path().join("endpoint").exists());
    let list = client(&["runs", "list"], data.path());
    assert_eq!(list.code, 0, "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_stop_from_another_process_stops_the_run_cairn_run_follows() {
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("never");
    let dir = plain_dir(&GATED.replace("GATE", &gate.display().to_string()), &[]);
    let data = tempfile::tempdir().unwrap();
    let mut direct = Background::spawn(
        direct_run_command(dir.path(), data.path(), &[]),
        Some(data.path()),
    );
    let id = direct.wait_run_id(LONG);
    direct.wait_line(LONG, |l| l == "slow │ started");

    let stop = client(&["runs", "stop", &id], data.path());
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(stop.stdout, format!("run {id} stopping\n"));

    let out = direct.finish(LONG);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.summary()["slow"], "stopped", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_endpoint_of_a_killed_node_neither_hangs_nor_misleads() {
    let dir = plain_dir(&one_task("{ containers: [ { image: busybox } ] }"), &[]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    // What a node killed with -9 leaves: an endpoint nobody answers at.
    let port = crate::support::process::free_port();
    std::fs::write(
        data.path().join("endpoint"),
        format!("http://127.0.0.1:{port}\n"),
    )
    .unwrap();

    let started = Instant::now();
    let show = client(&["runs", "show", &id], data.path());
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.starts_with(&format!("run {id} #1")), "{show:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

// --- 16. restart follows the new run ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_restart_on_the_embedded_node_follows_the_new_run_and_returns_its_exit_code() {
    let dir = plain_dir(
        r#"
runs:
  - name: ci
    tasks:
      - name: check
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo checking; exit 3' } ]
"#,
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let first = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(first.code, 1, "{first:?}");
    let first_id = first.run_id();

    let restart = client(&["runs", "restart", &first_id], data.path());
    assert_eq!(restart.code, 1, "{restart:?}");
    assert_eq!(
        restart.task_lines("check").first().map(String::as_str),
        Some("checking"),
        "{restart:?}"
    );
    assert_eq!(restart.summary()["check"], "failed", "{restart:?}");
    let new_id = restart.run_id();
    assert_ne!(new_id, first_id);

    // The restarted run ran to its end inside the restart, not later.
    let show = client(&["runs", "show", &new_id, "--output", "json"], data.path());
    let shown: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(shown["run"]["phase"], "finished", "{shown}");
    assert_eq!(shown["run"]["result"], "failed", "{shown}");
}

// --- 17. closed pipes, colours -------------------------------------------------------------

/// `CMD | head -1`: the first stdout line, then the pipe is closed; the exit code and
/// stderr once the command ends.
fn head_one(mut cmd: Command) -> (String, Output) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .expect("read a line");
    // The reader is dropped here: the pipe is closed, as `head -1` does.
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "cairn did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: err.join().unwrap_or_default(),
    };
    (first, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_and_runs_logs_piped_into_head_end_quietly() {
    // Many runs, more than a pipe holds once listed.
    let scratch = tempfile::tempdir().unwrap();
    let server = ServiceProc::single(&scratch.path().join("server"));
    // Two configs of 100 runs each: a config holds at most 100 runs (configfile::limits).
    let mut created = 0;
    for batch in 0..2 {
        let runs: String = (0..100)
            .map(|i| format!("  - name: r{batch}-{i}\n    tasks:\n      - name: t\n        runtime: {{ containers: [ {{ image: busybox }} ] }}\n        steps: [ {{ run: 'true' }} ]\n"))
            .collect();
        created += server
            .client()
            .create_run(&create_request(
                "/user/piper/branch/main",
                &format!("runs:\n{runs}"),
            ))
            .await
            .unwrap()
            .runs
            .len();
    }
    assert_eq!(created, 200);
    let list = || {
        let mut cmd = cairn([
            "runs", "list", "--limit", "200", "--output", "json", "--server",
        ]);
        cmd.args([server.url.as_str(), "--token", TOKEN]);
        cmd
    };
    // More than a pipe holds: the listing cannot be written before the reader leaves.
    let whole = run(list(), LONG);
    assert!(whole.stdout.len() > 128 * 1024, "{}", whole.stdout.len());
    let (first, out) = head_one(list());
    assert_eq!(first, "{\n");
    assert_eq!(out.stderr, "", "{out:?}");
    assert_eq!(out.code, 0, "{out:?}");

    // A long log.
    let dir = plain_dir(
        &one_task("{ containers: [ { image: busybox } ] }").replace("echo built", "seq 1 100000"),
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let done = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let mut cmd = cairn(["runs", "logs", &done.run_id(), "build", "--data-dir"]);
    cmd.arg(data.path());
    let (first, out) = head_one(cmd);
    assert_eq!(first, "1\n");
    assert_eq!(out.stderr, "", "{out:?}");
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ansi_escapes_when_stdout_and_stderr_are_not_terminals() {
    let dir = plain_dir(&one_task("{ containers: [ { image: busybox } ] }"), &[]);
    let data = tempfile::tempdir().unwrap();
    let mut cmd = direct_run_command(dir.path(), data.path(), &[]);
    // Colours allowed, logs on: only the missing terminal may turn colours off.
    cmd.env_remove("NO_COLOR")
        .env("CAIRN_LOG", "info,openraft=off");
    let out = Background::spawn(cmd, Some(data.path())).finish(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("INFO"), "{out:?}");
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
}

// --- 18. no run matches ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_run_matches_cairn_run_says_which_when_excluded_each_run_and_exits_0() {
    let dir = plain_dir(
        r#"
runs:
  - name: ci
    when: { branch: main }
    tasks:
      - name: t
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'true' } ]
  - name: release
    when: { tag: '/^v/' }
    tasks:
      - name: t
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'true' } ]
"#,
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &["--branch", "feature"], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("run ci: excluded by when.branch (include: main; this is branch feature)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "run release: excluded: when.tag applies to tags only; this is branch feature"
        ),
        "{out:?}"
    );
}

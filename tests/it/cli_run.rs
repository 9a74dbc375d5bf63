//! The `cairn` binary, black-box, as a person uses it: `cairn run DIR` on an embedded
//! node (success, failure, setup errors, Ctrl-C, caches kept across runs per repository,
//! `--task`), `cairn validate`, and the client commands `cairn runs list|show|logs|
//! restart` and `cairn executors list`, on the embedded node's data dir or on a
//! `cairn serve`. Every test has its own pipeline dirs and data dirs.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::cli::{
    Background, Output, USER, cairn, direct_run, direct_run_command, git, git_dir, plain_dir, run,
};
use crate::support::process::TOKEN;
use crate::support::service::{ServiceProc, process_alive};

/// Every wait: generous, for a slow shared machine.
const LONG: Duration = Duration::from_secs(120);

/// `cairn runs|executors ARGS… --data-dir DATA --output json`, parsed.
fn client_json(args: &[&str], data_dir: &Path) -> Value {
    let mut cmd = cairn(args);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json"]);
    let out = run(cmd, LONG);
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The summary as `[(task, result)]`, for assertions.
fn summary(out: &Output) -> Vec<(String, String)> {
    out.summary().into_iter().collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// The last line of `cairn run`'s output: `run <id> #<n>: <result> in <time>`.
fn final_line(out: &Output) -> &str {
    out.stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
}

// --- 1. success --------------------------------------------------------------------------

const HANDOFF: &str = r#"
runs:
  - name: handoff
    tasks:
      - name: produce
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone:
          - run: 'echo "producing from $(cat input.txt)"'
          - run: 'mkdir -p out && echo "made by produce" > out/artifact.txt'
          - save_to_workspace: { contents: [ { source_dir: out, dest_dir: out, paths: ['**'] } ] }
      - name: consume
        depends: [ produce ]
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - restore_workspace: { dest_dir: . }
          - run: 'echo "consumed: $(cat out/artifact.txt)"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_run_that_succeeds_streams_prefixed_task_lines_and_a_summary_and_exits_0() {
    let repo = git_dir(HANDOFF, &[("input.txt", "the seed")]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(repo.path(), data.path(), &[], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.task_lines("produce")
            .contains(&"producing from the seed".to_string()),
        "{}",
        out.stdout
    );
    assert!(
        out.task_lines("consume")
            .contains(&"consumed: made by produce".to_string()),
        "the workspace reached the second task: {}",
        out.stdout
    );
    // Names are padded to the widest, so every task line has the same prefix width.
    assert!(out.stdout.contains("produce │ producing from the seed\n"));
    assert!(out.stdout.contains("consume │ consumed: made by produce\n"));
    assert_eq!(
        summary(&out),
        pairs(&[("produce", "success"), ("consume", "success")])
    );
    let id = out.run_id();
    assert!(
        final_line(&out).starts_with(&format!("run {id} #1: success")),
        "{}",
        out.stdout
    );
    // Not a terminal: no colours, no status line.
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    assert!(out.stderr_lines().is_empty(), "{}", out.stderr);
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_hello_succeeds() {
    // `cairn run examples/hello` from the repository's own example. It runs on a copy:
    // in the checkout itself, the first run would store a repo uuid in the checkout's
    // git config, a side effect a test must not have on the developer's clone.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    let copy = tempfile::tempdir().unwrap();
    let hello = copy.path().join("hello");
    copy_tree(&example, &hello);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(&hello, data.path(), &[], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        summary(&out),
        pairs(&[("greet", "success"), ("check", "success")])
    );
    let check = out.task_lines("check");
    assert!(
        check.iter().any(|l| l.starts_with("greet wrote: ")),
        "{check:?}"
    );
    assert!(
        check.contains(&"the working tree is here".to_string()),
        "{check:?}"
    );
    assert!(
        out.task_lines("greet")
            .iter()
            .any(|l| l.starts_with("hello from ") && l.ends_with(", run 1")),
        "{}",
        out.stdout
    );
}

// --- 2. failure --------------------------------------------------------------------------

const FAILING: &str = r#"
runs:
  - name: failing
    tasks:
      - name: broken
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo "about to fail"; exit 1'
          - run: 'echo "never printed"'
      - name: after
        depends: [ broken ]
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo "never run"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_run_that_fails_shows_the_failed_tasks_log_and_exits_1() {
    let dir = plain_dir(FAILING, &[]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(out.code, 1, "{out:?}");
    // The line the step printed before failing, and nothing of the steps after it.
    let broken = out.task_lines("broken");
    assert_eq!(
        broken.first().map(String::as_str),
        Some("about to fail"),
        "{}",
        out.stdout
    );
    assert!(
        !broken.iter().any(|l| l.contains("never printed")),
        "{}",
        out.stdout
    );
    assert!(out.task_lines("after").is_empty(), "{}", out.stdout);
    assert_eq!(
        summary(&out),
        pairs(&[("broken", "failed"), ("after", "skipped")])
    );
    assert!(
        final_line(&out).contains(": failed"),
        "{}",
        final_line(&out)
    );
}

// --- 3. setup errors ---------------------------------------------------------------------

const BAD_CONFIG: &str = "\
runs:
  - name: ci
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        ignore_failure: blue
        steps:
          - run: echo hi
      - name: test
        runtime: { containers: [ { image: busybox } ] }
        depends: [ biuld ]
        steps:
          - run: echo hi
";

const ONE_TASK: &str = "\
runs:
  - name: ci
    tasks:
      - name: one
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: echo one
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_run_prints_config_warnings_before_it_starts() {
    let config = ONE_TASK.replace("        steps:", "        colour: red\n        steps:");
    let dir = plain_dir(&config, &[]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(out.code, 0, "an unknown key does not stop the run: {out:?}");
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "warning: .agola/config.yml:6:9: runs[0] \"ci\" › tasks[0] \"one\" › colour: unknown key `colour` in task is ignored, as Agola ignores it",
        "{}",
        out.stdout
    );
    assert!(
        out.task_lines("one").contains(&"one".to_string()),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_exit_2_with_readable_lines_before_anything_starts() {
    let scratch = tempfile::tempdir().unwrap();

    // No config at all.
    let empty = tempfile::tempdir().unwrap();
    let data = scratch.path().join("no-config");
    let out = direct_run(empty.path(), &data, &[], LONG);
    assert_eq!(out.code, 2, "{out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("cairn: no pipeline in ") && lines[0].contains(".agola/config.yml"),
        "{}",
        out.stderr
    );
    assert!(!data.exists(), "no embedded node was started");

    // A config with a wrong type and a dependency on a task that does not exist: both
    // reported, each with file:line:col and the field naming the run and the task.
    let bad = plain_dir(BAD_CONFIG, &[]);
    let data = scratch.path().join("bad-config");
    let out = direct_run(bad.path(), &data, &[], LONG);
    assert_eq!(out.code, 2, "{out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].starts_with(
            "cairn: .agola/config.yml:6:25: runs[0] \"ci\" › tasks[0] \"build\" › ignore_failure: expected true or false"
        ),
        "{}",
        out.stderr
    );
    assert!(
        lines[1].starts_with(
            ".agola/config.yml:11:20: runs[0] \"ci\" › tasks[1] \"test\" › depends[0]: "
        ) && lines[1].contains("unknown task \"biuld\""),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // The run is recorded as a setuperror run (see the test below): the node started.

    // A --var that is not NAME=VALUE.
    let good = plain_dir(ONE_TASK, &[]);
    let data = scratch.path().join("bad-var");
    let out = direct_run(good.path(), &data, &["--var", "novalue"], LONG);
    assert_eq!(out.code, 2, "{out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("cairn: ") && lines[0].contains("--var \"novalue\" is not NAME=VALUE"),
        "{}",
        out.stderr
    );
    assert!(!data.exists(), "no embedded node was started");
}

const MISSING_PARENT: &str = "\
runs:
  - name: ci
    tasks:
      - name: test
        runtime: { containers: [ { image: busybox } ] }
        depends: [ biuld ]
        steps:
          - run: echo hi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_recorded_as_a_setuperror_run_that_runs_list_and_show_report() {
    let dir = plain_dir(MISSING_PARENT, &[]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(out.code, 2, "{out:?}");
    let error = ".agola/config.yml:6:20: runs[0] \"ci\" › tasks[0] \"test\" › depends[0]: ";
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with(&format!("cairn: {error}"))
            && lines[0].contains("unknown task \"biuld\""),
        "{}",
        out.stderr
    );

    let list = client_json(&["runs", "list"], data.path());
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{list}");
    assert_eq!(runs[0]["phase"], "setuperror", "{list}");
    assert_eq!(runs[0]["name"], "Setup Error", "{list}");
    assert_eq!(
        runs[0]["group"],
        format!("/user/{USER}/branch/main"),
        "{list}"
    );
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert!(
        out.stdout.contains(&format!("run {id} #1 (Setup Error)")),
        "{}",
        out.stdout
    );

    let mut cmd = cairn(["runs", "list"]);
    cmd.arg("--data-dir").arg(data.path());
    let table = run(cmd, LONG);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("setuperror")),
        "{}",
        table.stdout
    );

    let mut cmd = cairn(["runs", "show", &id]);
    cmd.arg("--data-dir").arg(data.path());
    let show = run(cmd, LONG);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout.contains(&format!("setup error: {error}")),
        "{}",
        show.stdout
    );
    let shown = client_json(&["runs", "show", &id], data.path());
    assert_eq!(shown["run"]["phase"], "setuperror", "{shown}");
    assert!(
        shown["run_config"]["setup_errors"][0]
            .as_str()
            .unwrap()
            .starts_with(error),
        "{shown}"
    );
}

// --- 4. Ctrl-C ---------------------------------------------------------------------------

const LONG_SLEEP: &str = r#"
runs:
  - name: sleepy
    tasks:
      - name: nap
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo "started $$"; sleep 600'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_run_on_the_server_and_exits_130() {
    let dir = plain_dir(LONG_SLEEP, &[]);
    let data = tempfile::tempdir().unwrap();
    let mut bg = Background::spawn(
        direct_run_command(dir.path(), data.path(), &[]),
        Some(data.path()),
    );
    let id = bg.wait_run_id(LONG);
    let started = bg.wait_line(LONG, |l| l.starts_with("nap │ started "));
    let shell: i32 = started["nap │ started ".len()..].parse().unwrap();
    bg.interrupt();
    let out = bg.finish(LONG);
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        out.stdout.contains("cairn: interrupted: stopping the run"),
        "{}",
        out.stdout
    );
    assert_eq!(summary(&out), pairs(&[("nap", "stopped")]));
    assert!(!process_alive(shell), "the step's shell {shell} was killed");

    // The first process has exited; the same data dir shows the run stopped.
    let shown = client_json(&["runs", "show", &id], data.path());
    assert_eq!(shown["run"]["id"], id.as_str(), "{shown}");
    assert_eq!(shown["run"]["phase"], "finished", "{shown}");
    assert_eq!(shown["run"]["result"], "stopped", "{shown}");
    assert_eq!(shown["run"]["stop"], true, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_as_soon_as_the_run_is_created_still_stops_it_and_exits_130() {
    // Regression: Ctrl-C was only caught once the watch loop first polled it, so one
    // pressed right after the run was created killed `cairn run` by the signal and left
    // the run queued, to start (and block its group) on the embedded node's next start.
    let dir = plain_dir(LONG_SLEEP, &[]);
    let data = tempfile::tempdir().unwrap();
    let mut bg = Background::spawn(
        direct_run_command(dir.path(), data.path(), &[]),
        Some(data.path()),
    );
    let id = bg.wait_run_id(LONG);
    bg.interrupt();
    let out = bg.finish(LONG);
    assert_eq!(out.code, 130, "{out:?}");
    let shown = client_json(&["runs", "show", &id], data.path());
    // Cancelled if it was still queued, else stopped and finished: never left to run.
    let phase = shown["run"]["phase"].as_str().unwrap();
    assert!(phase == "cancelled" || phase == "finished", "{shown}");
    assert_eq!(shown["run"]["result"], "stopped", "{shown}");
}

// --- 5. caches across runs ---------------------------------------------------------------

const CACHED: &str = r#"
runs:
  - name: cached
    tasks:
      - name: deps
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - clone:
          - restore_cache: { keys: [ 'deps-{{ md5sum "lock.txt" }}' ], dest_dir: restored }
          - run: 'if [ -f restored/deps/lib.txt ]; then echo "cache hit: $(cat restored/deps/lib.txt)"; else echo "cache miss"; fi'
          - run: 'mkdir -p deps && echo "deps of $(cat lock.txt) by run $CAIRN_RUN_COUNTER" > deps/lib.txt'
          - save_cache: { key: 'deps-{{ md5sum "lock.txt" }}', contents: [ { source_dir: deps, dest_dir: deps } ] }
"#;

/// What the cache probe of a run of `dir` said: `cache miss` or `cache hit: …`.
fn cache_probe(dir: &Path, data: &Path) -> String {
    let out = direct_run(dir, data, &[], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    out.task_lines("deps")
        .into_iter()
        .find(|l| l.starts_with("cache "))
        .unwrap_or_else(|| panic!("no cache probe line in {}", out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_repository_hits_the_cache_of_the_first_and_other_repositories_do_not() {
    let data = tempfile::tempdir().unwrap();
    let repo = git_dir(CACHED, &[("lock.txt", "v1\n")]);
    let plain = plain_dir(CACHED, &[("lock.txt", "v1\n")]);

    assert_eq!(cache_probe(repo.path(), data.path()), "cache miss");
    assert_eq!(
        cache_probe(repo.path(), data.path()),
        "cache hit: deps of v1 by run 1"
    );

    // The same files in another directory: another repository uuid, another cache
    // group, so nothing is shared — until it saves its own.
    assert_eq!(cache_probe(plain.path(), data.path()), "cache miss");
    let third = cache_probe(plain.path(), data.path());
    assert!(
        third.starts_with("cache hit: deps of v1 by run "),
        "{third}"
    );
    assert_ne!(third, "cache hit: deps of v1 by run 1");

    // Where each directory keeps its uuid: git config inside git, .cairn/ outside.
    let git_uuid = git(
        repo.path(),
        &["config", "--local", "--get", "cairn.repouuid"],
    );
    assert!(uuid::Uuid::parse_str(&git_uuid).is_ok(), "{git_uuid:?}");
    assert!(!repo.path().join(".cairn/repo-uuid").exists());
    let plain_uuid = std::fs::read_to_string(plain.path().join(".cairn/repo-uuid")).unwrap();
    let plain_uuid = plain_uuid.trim();
    assert!(uuid::Uuid::parse_str(plain_uuid).is_ok(), "{plain_uuid:?}");
    assert_ne!(git_uuid, plain_uuid);

    // The runs carry those uuids as their cache groups.
    let list = client_json(&["runs", "list"], data.path());
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{list}");
    for (i, expected) in [(0, plain_uuid), (3, git_uuid.as_str())] {
        let id = runs[i]["id"].as_str().unwrap();
        let shown = client_json(&["runs", "show", id], data.path());
        assert_eq!(
            shown["run_config"]["cache_group"],
            format!("{USER}-{expected}"),
            "{shown}"
        );
    }
}

// --- 6. validate -------------------------------------------------------------------------

const CYCLE: &str = "\
runs:
  - name: ci
    tasks:
      - name: one
        runtime: { containers: [ { image: busybox } ] }
        depends: [ two ]
        steps:
          - run: echo hi
      - name: two
        runtime: { containers: [ { image: busybox } ] }
        depends: [ one ]
        steps:
          - run: echo hi
";

const NOT_YAML: &str = "runs:\n  - name: ci\n    tasks: [ { name: x\n";

fn validate(dir: &Path) -> Output {
    let mut cmd = cairn(["validate"]);
    cmd.arg(dir);
    run(cmd, LONG)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_says_ok_or_lists_each_error_with_file_line_column_and_field() {
    let good = plain_dir(HANDOFF, &[]);
    let out = validate(good.path());
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), ".agola/config.yml: ok (1 runs, 2 tasks)");

    let bad = plain_dir(BAD_CONFIG, &[]);
    let out = validate(bad.path());
    assert_eq!(out.code, 2, "{out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert!(
        lines[0].starts_with(
            ".agola/config.yml:6:25: runs[0] \"ci\" › tasks[0] \"build\" › ignore_failure: expected true or false"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(
        lines[1],
        ".agola/config.yml:11:20: runs[0] \"ci\" › tasks[1] \"test\" › depends[0]: unknown task \"biuld\""
    );
    assert_eq!(lines[2], ".agola/config.yml: 2 error(s)");

    // Unknown keys are warnings (Agola ignores them): listed, and the config is valid.
    let typo = plain_dir(
        &ONE_TASK.replace(
            "        steps:",
            "        enviroment: { A: b }\n        steps:",
        ),
        &[],
    );
    let out = validate(typo.path());
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr_lines(),
        [
            "warning: .agola/config.yml:6:9: runs[0] \"ci\" › tasks[0] \"one\" › enviroment: unknown key `enviroment` in task is ignored, as Agola ignores it; did you mean `environment`?"
        ]
    );
    assert_eq!(
        out.stdout.trim(),
        ".agola/config.yml: ok (1 runs, 1 tasks, 1 warning(s))"
    );

    let cycle = plain_dir(CYCLE, &[]);
    let out = validate(cycle.path());
    assert_eq!(out.code, 2, "{out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].starts_with(
            ".agola/config.yml:6:20: runs[0] \"ci\" › tasks[0] \"one\" › depends[0]: "
        ) && lines[0].contains("dependency cycle")
            && lines[0].contains("one -> two -> one"),
        "{}",
        out.stderr
    );
    assert_eq!(lines[1], ".agola/config.yml: 1 error(s)");

    let yaml = plain_dir(NOT_YAML, &[]);
    let out = validate(yaml.path());
    assert_eq!(out.code, 2, "{out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].starts_with(".agola/config.yml:") && lines[0].contains("invalid YAML"),
        "{}",
        out.stderr
    );
    let position: Vec<&str> = lines[0].splitn(4, ':').collect();
    assert!(
        position[1].parse::<usize>().is_ok() && position[2].parse::<usize>().is_ok(),
        "line and column: {}",
        lines[0]
    );

    let empty = tempfile::tempdir().unwrap();
    let out = validate(empty.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with("cairn: no pipeline in "),
        "{}",
        out.stderr
    );
}

// --- 7. runs logs -f on a server -------------------------------------------------------

const GATED: &str = r#"
runs:
  - name: gated
    tasks:
      - name: slow
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo "line one"; while [ ! -f GATE ]; do sleep 0.1; done; echo "line two"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_logs_follow_prints_a_running_tasks_lines_and_exits_when_it_ends() {
    let scratch = tempfile::tempdir().unwrap();
    let server = ServiceProc::with_executor(&scratch.path().join("server"), &[]);
    let gate = scratch.path().join("gate");
    let dir = plain_dir(&GATED.replace("GATE", &gate.display().to_string()), &[]);

    let mut direct = cairn(["run"]);
    direct
        .arg(dir.path())
        .args(["--server", &server.url, "--token", TOKEN]);
    let mut direct = Background::spawn(direct, None);
    let id = direct.wait_run_id(LONG);
    direct.wait_line(LONG, |l| l == "slow │ line one");

    let logs = cairn([
        "runs",
        "logs",
        &id,
        "slow",
        "-f",
        "--server",
        &server.url,
        "--token",
        TOKEN,
    ]);
    let mut logs = Background::spawn(logs, None);
    assert_eq!(logs.wait_line(LONG, |_| true), "line one");
    // The step waits for the gate: the follower cannot have ended.
    assert!(logs.running(), "runs logs -f ended while the task runs");
    std::fs::write(&gate, "open").unwrap();
    let out = logs.finish(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "line one\nline two\n");

    let out = direct.finish(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(summary(&out), pairs(&[("slow", "success")]));

    // The server's one executor: its in-process one.
    let mut cmd = cairn([
        "executors",
        "list",
        "--output",
        "json",
        "--server",
        &server.url,
        "--token",
        TOKEN,
    ]);
    cmd.env("CAIRN_LOG", "error");
    let out = run(cmd, LONG);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let executors = list["executors"].as_array().unwrap();
    assert_eq!(executors.len(), 1, "{list}");
    assert!(
        executors[0]["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{list}"
    );
}

const GATED_FAILURE: &str = r#"
runs:
  - name: gated
    tasks:
      - name: first
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'while [ ! -f GATE ]; do sleep 0.1; done; exit 1'
      - name: second
        depends: [ first ]
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: 'echo "never run"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_logs_follow_of_a_task_that_ends_up_skipped_exits_with_nothing() {
    // Regression: following the log of a step that never starts waited forever.
    let scratch = tempfile::tempdir().unwrap();
    let server = ServiceProc::with_executor(&scratch.path().join("server"), &[]);
    let gate = scratch.path().join("gate");
    let dir = plain_dir(
        &GATED_FAILURE.replace("GATE", &gate.display().to_string()),
        &[],
    );
    let mut direct = cairn(["run"]);
    direct
        .arg(dir.path())
        .args(["--server", &server.url, "--token", TOKEN]);
    let mut direct = Background::spawn(direct, None);
    let id = direct.wait_run_id(LONG);
    let logs = cairn([
        "runs",
        "logs",
        &id,
        "second",
        "-f",
        "--server",
        &server.url,
        "--token",
        TOKEN,
    ]);
    let logs = Background::spawn(logs, None);
    std::fs::write(&gate, "open").unwrap();
    let out = logs.finish(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "");
    let out = direct.finish(LONG);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        summary(&out),
        pairs(&[("first", "failed"), ("second", "skipped")])
    );
}

// --- 8. runs list, show, restart ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_show_and_restart_work_on_the_embedded_nodes_data_dir() {
    let dir = plain_dir(ONE_TASK, &[]);
    let data = tempfile::tempdir().unwrap();
    let first = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(first.code, 0, "{first:?}");
    let second = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(second.code, 0, "{second:?}");
    let (first, second) = (first.run_id(), second.run_id());
    assert_ne!(first, second);

    // Newest first, in JSON and as a table.
    let list = client_json(&["runs", "list"], data.path());
    let ids: Vec<&str> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()], "{list}");
    assert_eq!(list["runs"][0]["counter"], 2);
    assert_eq!(list["runs"][1]["counter"], 1);
    assert_eq!(list["runs"][0]["result"], "success");

    let mut cmd = cairn(["runs", "list"]);
    cmd.arg("--data-dir").arg(data.path());
    let table = run(cmd, LONG);
    assert_eq!(table.code, 0, "{table:?}");
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{}", table.stdout);
    assert_eq!(rows[0][..3], ["ID", "#", "NAME"]);
    let group = format!("/user/{USER}/branch/main");
    assert_eq!(
        rows[1],
        [
            second.as_str(),
            "#2",
            "ci",
            group.as_str(),
            "finished",
            "success",
            rows[1][6]
        ]
    );
    assert_eq!(rows[2][..2], [first.as_str(), "#1"]);

    // A run and its tasks.
    let mut cmd = cairn(["runs", "show", &first]);
    cmd.arg("--data-dir").arg(data.path());
    let show = run(cmd, LONG);
    assert_eq!(show.code, 0, "{show:?}");
    let mut lines = show.stdout.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("run {first} #1 ci in {group}: finished success")
    );
    assert!(
        show.stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["one", "success"])),
        "{}",
        show.stdout
    );
    let shown = client_json(&["runs", "show", &first], data.path());
    assert_eq!(shown["run"]["id"], first.as_str());
    assert_eq!(shown["run"]["result"], "success");

    // A restart from the start is a new run of the same group, newest in the list; on
    // the embedded node it runs and is followed like `cairn run`.
    let mut cmd = cairn(["runs", "restart", &first, "--from-start"]);
    cmd.arg("--data-dir").arg(data.path());
    let restart = run(cmd, LONG);
    assert_eq!(restart.code, 0, "{restart:?}");
    let restarted = restart.run_id();
    assert!(
        restart
            .stdout
            .contains(&format!("cairn: run {restarted} #3 (ci) in {group}")),
        "{}",
        restart.stdout
    );
    assert_eq!(summary(&restart), pairs(&[("one", "success")]));
    let restarted = restarted.as_str();
    let list = client_json(&["runs", "list"], data.path());
    assert_eq!(list["runs"].as_array().unwrap().len(), 3, "{list}");
    assert_eq!(list["runs"][0]["id"], restarted, "{list}");
    assert_eq!(list["runs"][0]["group"], group.as_str(), "{list}");
}

// --- 9. --task ---------------------------------------------------------------------------

const DIAMOND: &str = r#"
runs:
  - name: chain
    tasks:
      - name: base
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo base ran' } ]
      - name: middle
        depends: [ base ]
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo middle ran' } ]
      - name: top
        depends: [ middle ]
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo top ran' } ]
      - name: aside
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: 'echo aside ran' } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_flag_runs_only_that_task_and_its_ancestors() {
    let dir = plain_dir(DIAMOND, &[]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &["--task", "middle"], LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        summary(&out),
        pairs(&[("base", "success"), ("middle", "success")])
    );
    assert_eq!(out.task_lines("base"), vec!["base ran".to_string()]);
    assert_eq!(out.task_lines("middle"), vec!["middle ran".to_string()]);
    assert!(out.task_lines("top").is_empty(), "{}", out.stdout);
    assert!(out.task_lines("aside").is_empty(), "{}", out.stdout);
}

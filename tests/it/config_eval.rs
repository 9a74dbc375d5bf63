//! Jsonnet and Starlark configs through the `cairn` binary: `cairn validate` and
//! `cairn run` (embedded node, local driver) find `.agola/config.jsonnet` and
//! `.agola/config.star` (the fixtures of `tests/fixtures/agola/eval/`) and run them, and
//! hostile configs end with an error from the evaluator's child process, in bounded time.

use std::path::Path;
use std::time::{Duration, Instant};

use cairn::configfile::eval::{Limits, sandbox};
use cairn::configfile::{ConfigContext, Language};

use crate::support::cli::{cairn, direct_run, git, run};
use crate::support::process::cairn_bin;

const LONG: Duration = Duration::from_secs(120);

const JSONNET: &str = include_str!("../fixtures/agola/eval/config.jsonnet");
const STARLARK: &str = include_str!("../fixtures/agola/eval/config.star");

/// A git work tree (branch `main`) holding only `files`.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    dir
}

fn validate(dir: &Path) -> crate::support::cli::Output {
    let mut cmd = cairn(["validate"]);
    cmd.arg(dir);
    run(cmd, LONG)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_run_pick_up_jsonnet_and_starlark_configs() {
    for (file, source, run_name) in [
        (".agola/config.jsonnet", JSONNET, "eval-jsonnet"),
        (".agola/config.star", STARLARK, "eval-starlark"),
    ] {
        let dir = repo(&[(file, source)]);
        let out = validate(dir.path());
        assert_eq!(out.code, 0, "{file}: {out:?}");
        assert_eq!(out.stdout.trim(), format!("{file}: ok (1 runs, 3 tasks)"));

        let data = tempfile::tempdir().unwrap();
        let out = direct_run(dir.path(), data.path(), &[], LONG);
        assert_eq!(out.code, 0, "{file}: {out:?}");
        for (task, line) in [
            ("shard a", "shard a on main"),
            ("shard b", "shard b on main"),
            ("gather", "gathered 2 shards: a,b"),
        ] {
            assert!(
                out.task_lines(task).contains(&line.to_string()),
                "{file}: {task}: {}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains(run_name) || out.stderr.contains(run_name),
            "{out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_config_wins_over_jsonnet_json_and_yaml_as_in_agola() {
    let yml = "runs: [ { name: from-yaml, tasks: [ { name: t, runtime: { containers: [ { image: busybox } ] }, steps: [ { run: 'true' } ] } ] } ]\n";
    let dir = repo(&[
        (".agola/config.yml", yml),
        (".agola/config.json", "{}"),
        (".agola/config.jsonnet", JSONNET),
    ]);
    let out = validate(dir.path());
    assert_eq!(
        out.stdout.trim(),
        ".agola/config.jsonnet: ok (1 runs, 3 tasks)",
        "{out:?}"
    );
    std::fs::write(dir.path().join(".agola/config.star"), STARLARK).unwrap();
    let out = validate(dir.path());
    assert_eq!(
        out.stdout.trim(),
        ".agola/config.star: ok (1 runs, 3 tasks)",
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_errors_name_the_file_line_and_column() {
    let dir = repo(&[(
        ".agola/config.jsonnet",
        "{\n  runs: [\n    error 'broken',\n  ],\n}\n",
    )]);
    let out = validate(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr_lines()[0],
        ".agola/config.jsonnet:3:5: error: broken",
        "{}",
        out.stderr
    );
    let dir = repo(&[(
        ".agola/config.star",
        "def main(ctx):\n    return {'runs': []}\n",
    )]);
    let out = validate(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr_lines()[0].starts_with(".agola/config.star: runs: "),
        "a JSON-level error names the program: {}",
        out.stderr
    );
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(dir.path(), data.path(), &[], LONG);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(".agola/config.star: runs: "), "{out:?}");
}

/// The sandbox as the server uses it, with the real binary and small limits.
fn isolated(language: Language, source: &str, limits: &Limits) -> (String, Duration) {
    let started = Instant::now();
    let result = sandbox::evaluate_with(
        Path::new(cairn_bin()),
        language,
        "hostile",
        source,
        &ConfigContext::default(),
        limits,
    );
    let e = result.expect_err("a hostile config is refused");
    (e.to_string(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_configs_end_with_an_error_not_a_hang_or_a_crash() {
    let limits = Limits {
        max_memory: 1024 * 1024 * 1024,
        max_steps: 1_000_000,
        timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    // On a loaded machine the wall-clock deadline may come before the CPU limit.
    let stopped =
        |e: &str| e.contains("used more than 3s of CPU") || e.contains("did not finish within 3s");
    // Endless recursion: the evaluator's own depth limit.
    let (e, _) = isolated(Language::Jsonnet, "local f(x) = f(x) + 1; f(1)", &limits);
    assert!(e.contains("too deep"), "{e}");
    // A huge comprehension: stopped by the child's CPU limit, not run on in the caller.
    let (e, took) = isolated(
        Language::Jsonnet,
        "[[x * y for x in std.range(1, 100000)] for y in std.range(1, 100000)]",
        &limits,
    );
    assert!(stopped(&e), "{e}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    // A huge array: out of memory in the child, not in the caller.
    let (e, _) = isolated(
        Language::Jsonnet,
        "std.foldl(function(a, i) a + i, std.range(1, 100000000), 0)",
        &limits,
    );
    assert!(e.contains("ran out of memory (more than 1024 MiB)"), "{e}");
    // Long but small.
    let (e, took) = isolated(
        Language::Jsonnet,
        "local f(n) = if n == 0 then 0 else f(n - 1) + 1; std.foldl(function(a, i) a + f(300), std.range(1, 1000000), 0)",
        &limits,
    );
    assert!(stopped(&e), "{e}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    // Starlark: endless loop, stopped by the step limit or the deadline.
    let (e, took) = isolated(
        Language::Starlark,
        "def main(ctx):\n    n = 0\n    for x in range(2000000000):\n        n += x\n    return {}\n",
        &limits,
    );
    assert!(
        e.starts_with("hostile") && (e.contains("limit") || e.contains("cancel") || stopped(&e)),
        "{e}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    // The caller lives on: a good config still evaluates.
    let json = sandbox::evaluate_with(
        Path::new(cairn_bin()),
        Language::Jsonnet,
        "ok.jsonnet",
        "function(ctx) { ref: ctx.ref }",
        &ConfigContext::new(Some("main"), None, None, ""),
        &limits,
    )
    .expect("evaluates");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!({"ref": "refs/heads/main"})
    );
}

//! What a run is for, black box: a reference given to `cairn run` or to `POST /runs` is
//! classified as Agola's gateway does (branch, tag, pull request), lands in Agola's
//! group, selects `when` as Agola does, and every task sees Agola's whole static
//! environment (each variable set, empty when it does not apply) and the run carries
//! Agola's annotations, with the direct run's commit sha (HEAD or a snapshot hash).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cairn_client::api::{CreateRunRequest, RefSpec};
use cairn_client::run::RunTaskStatus;
use cairn_client::{ClientError, ErrorCode};
use serde_json::Value;

use crate::support::cli::{Output, USER, cairn, direct_run, git, git_dir, plain_dir, run};
use crate::support::runs::create_request;
use crate::support::service::ServiceProc;

const LONG: Duration = Duration::from_secs(120);

/// Every variable of Agola's static environment that Cairn sets, with its `CAIRN_` twin.
const AGOLA_VARS: [&str; 8] = [
    "AGOLA_GIT_BRANCH",
    "AGOLA_GIT_TAG",
    "AGOLA_GIT_REF",
    "AGOLA_GIT_REF_TYPE",
    "AGOLA_GIT_COMMITSHA",
    "AGOLA_PULL_REQUEST_ID",
    "AGOLA_REPOSITORY_URL",
    "AGOLA_RUN_COUNTER",
];

/// `dump` prints the CI variables; `onmain` runs only for branch main, `ontag` only for
/// tags.
const ENV_DUMP: &str = r#"
runs:
  - name: ci
    tasks:
      - name: dump
        runtime: { containers: [ { image: busybox } ] }
        steps:
          - run: env | grep -E '^(CI|AGOLA_|CAIRN_)' | sort
      - name: onmain
        when: { branch: main }
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: echo on main } ]
      - name: ontag
        when: { tag: '/v.*/' }
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: echo on a tag } ]
"#;

/// The `NAME=value` lines task `dump` printed.
fn dumped(out: &Output) -> BTreeMap<String, String> {
    out.task_lines("dump")
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_env(env: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for name in AGOLA_VARS {
        assert!(env.contains_key(name), "{name} is not set: {env:?}");
        let twin = name.replacen("AGOLA_", "CAIRN_", 1);
        assert!(env.contains_key(&twin), "{twin} is not set: {env:?}");
    }
    assert_eq!(env.get("CI").map(String::as_str), Some("true"), "{env:?}");
    for (name, value) in want {
        assert_eq!(
            env.get(*name).map(String::as_str),
            Some(*value),
            "{name}: {env:?}"
        );
        if let Some(rest) = name.strip_prefix("AGOLA_") {
            let twin = format!("CAIRN_{rest}");
            assert_eq!(
                env.get(&twin).map(String::as_str),
                Some(*value),
                "{twin}: {env:?}"
            );
        }
    }
}

/// `cairn runs show ID --output json` on the embedded node's data dir.
fn show(id: &str, data: &Path) -> Value {
    let mut cmd = cairn(["runs", "show", id]);
    cmd.arg("--data-dir").arg(data).args(["--output", "json"]);
    let out = run(cmd, LONG);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn annotation<'v>(shown: &'v Value, key: &str) -> &'v str {
    shown["run"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no annotation {key}: {}", shown["run"]["annotations"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_ref_is_a_branch_run_that_matches_when_branch_and_sees_heads_commit() {
    let repo = git_dir(ENV_DUMP, &[]);
    git(repo.path(), &["add", "-A"]);
    git(
        repo.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "add the pipeline",
        ],
    );
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(
        repo.path(),
        data.path(),
        &["--ref", "refs/heads/main"],
        LONG,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let summary = out.summary();
    assert_eq!(summary["onmain"], "success", "{}", out.stdout);
    assert_eq!(summary["ontag"], "skipped", "{}", out.stdout);
    let group = format!("/user/{USER}/branch/main");
    assert!(
        out.stdout.contains(&format!(" in {group}\n")),
        "{}",
        out.stdout
    );
    assert_env(
        &dumped(&out),
        &[
            ("AGOLA_GIT_BRANCH", "main"),
            ("AGOLA_GIT_TAG", ""),
            ("AGOLA_GIT_REF", "refs/heads/main"),
            ("AGOLA_GIT_REF_TYPE", "branch"),
            ("AGOLA_GIT_COMMITSHA", &head),
            ("AGOLA_PULL_REQUEST_ID", ""),
            ("AGOLA_REPOSITORY_URL", ""),
            ("AGOLA_RUN_COUNTER", "1"),
        ],
    );

    let shown = show(&out.run_id(), data.path());
    assert_eq!(shown["run"]["group"], group.as_str());
    for (key, value) in [
        ("run_type", "user"),
        ("run_creation_trigger", "manual"),
        ("userid", USER),
        ("ref_type", "branch"),
        ("ref", "refs/heads/main"),
        ("branch", "main"),
        ("commit_sha", head.as_str()),
        ("commit_sha_source", "head"),
        ("message", "add the pipeline"),
    ] {
        assert_eq!(annotation(&shown, key), value, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_ref_is_a_pr_run_in_its_group_with_its_id_and_a_snapshot_sha() {
    let dir = plain_dir(ENV_DUMP, &[]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(
        dir.path(),
        data.path(),
        &["--ref", "refs/pull/42/head"],
        LONG,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let summary = out.summary();
    assert_eq!(summary["dump"], "success", "{}", out.stdout);
    assert_eq!(summary["onmain"], "skipped", "{}", out.stdout);
    let group = format!("/user/{USER}/pr/42");
    assert!(
        out.stdout.contains(&format!(" in {group}\n")),
        "{}",
        out.stdout
    );
    let env = dumped(&out);
    assert_env(
        &env,
        &[
            ("AGOLA_GIT_BRANCH", ""),
            ("AGOLA_GIT_TAG", ""),
            ("AGOLA_GIT_REF", "refs/pull/42/head"),
            ("AGOLA_GIT_REF_TYPE", "pull_request"),
            ("AGOLA_PULL_REQUEST_ID", "42"),
        ],
    );
    // Outside git: the sha is the content hash of what was sent.
    let sha = env["AGOLA_GIT_COMMITSHA"].clone();
    assert_eq!(sha.len(), 64, "{sha}");
    let shown = show(&out.run_id(), data.path());
    assert_eq!(annotation(&shown, "commit_sha"), sha);
    assert_eq!(annotation(&shown, "commit_sha_source"), "snapshot");
    assert_eq!(annotation(&shown, "ref_type"), "pull_request");
    assert_eq!(annotation(&shown, "pull_request_id"), "42");
    assert_eq!(annotation(&shown, "message"), "cairn direct run");

    // GitLab's form, and a pattern of one's own.
    let out = direct_run(
        dir.path(),
        data.path(),
        &["--ref", "refs/merge-requests/7/head"],
        LONG,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(" in /user/{USER}/pr/7\n")),
        "{}",
        out.stdout
    );
    let out = direct_run(
        dir.path(),
        data.path(),
        &[
            "--ref",
            "refs/reviews/9",
            "--pull-request-ref-regexes",
            r"^refs/reviews/(\d+)$",
        ],
        LONG,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(" in /user/{USER}/pr/9\n")),
        "{}",
        out.stdout
    );
    assert_eq!(dumped(&out)["AGOLA_PULL_REQUEST_ID"], "9");

    // A ref that is none of these is refused before anything runs.
    let out = direct_run(dir.path(), data.path(), &["--ref", "refs/notes/x"], LONG);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("unsupported ref \"refs/notes/x\""),
        "{}",
        out.stderr
    );
}

fn with_ref(reference: RefSpec) -> CreateRunRequest {
    CreateRunRequest {
        reference,
        ..create_request("/project/p1/tag/v1.2", ENV_DUMP)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_classifies_the_reference_and_sets_agolas_environment_and_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();

    let mut req = with_ref(RefSpec {
        git_ref: Some("refs/tags/v1.2".into()),
        ..RefSpec::default()
    });
    req.commit_sha = Some("0123abcd".into());
    req.message = Some("release 1.2".into());
    req.annotations = [("custom".to_string(), "kept".to_string())].into();
    let created = client.create_run(&req).await.unwrap();
    let r = &created.runs[0];
    let status = |name: &str| {
        let id = &r
            .run_config
            .tasks
            .values()
            .find(|t| t.name == name)
            .unwrap()
            .id;
        r.run.tasks[id].status
    };
    assert_eq!(status("ontag"), RunTaskStatus::NotStarted);
    assert_eq!(status("onmain"), RunTaskStatus::Skipped);
    let env = &r.run_config.static_environment;
    for (name, value) in [
        ("CI", "true"),
        ("AGOLA_GIT_BRANCH", ""),
        ("AGOLA_GIT_TAG", "v1.2"),
        ("AGOLA_GIT_REF", "refs/tags/v1.2"),
        ("AGOLA_GIT_REF_TYPE", "tag"),
        ("AGOLA_GIT_COMMITSHA", "0123abcd"),
        ("AGOLA_PULL_REQUEST_ID", ""),
        ("AGOLA_REPOSITORY_URL", ""),
        ("CAIRN_GIT_TAG", "v1.2"),
        ("CAIRN_GIT_REF_TYPE", "tag"),
    ] {
        assert_eq!(
            env.get(name).map(String::as_str),
            Some(value),
            "{name}: {env:?}"
        );
    }
    let a = &r.run.annotations;
    for (key, value) in [
        ("custom", "kept"),
        ("run_type", "project"),
        ("projectid", "p1"),
        ("run_creation_trigger", "manual"),
        ("ref_type", "tag"),
        ("ref", "refs/tags/v1.2"),
        ("tag", "v1.2"),
        ("commit_sha", "0123abcd"),
        ("message", "release 1.2"),
    ] {
        assert_eq!(a.get(key).map(String::as_str), Some(value), "{key}: {a:?}");
    }

    // A pull-request pattern of the request's own.
    let mut req = with_ref(RefSpec {
        git_ref: Some("refs/changes/5".into()),
        ..RefSpec::default()
    });
    req.pull_request_ref_regexes = vec![r"refs/changes/(\d+)".into()];
    let created = client.create_run(&req).await.unwrap();
    let env = &created.runs[0].run_config.static_environment;
    assert_eq!(env["AGOLA_PULL_REQUEST_ID"], "5");
    assert_eq!(env["AGOLA_GIT_REF_TYPE"], "pull_request");

    // Bad references: 400 with the reason.
    for (spec, why) in [
        (RefSpec::default(), "one of branch, tag or ref is required"),
        (
            RefSpec {
                branch: Some("main".into()),
                tag: Some("v1".into()),
                git_ref: None,
            },
            "only one of branch, tag or ref",
        ),
        (
            RefSpec {
                git_ref: Some("refs/pull/1/head".into()),
                ..RefSpec::default()
            },
            "unsupported ref",
        ),
    ] {
        let mut req = with_ref(spec.clone());
        if spec.git_ref.is_some() {
            req.pull_request_ref_regexes = vec![r"refs/changes/(\d+)".into()];
        }
        match client.create_run(&req).await {
            Err(ClientError::Api(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{spec:?}: {e:?}");
                assert!(e.message.contains(why), "{spec:?}: {}", e.message);
            }
            other => panic!("{spec:?}: expected a 400, got {other:?}"),
        }
    }
}

/// A Jsonnet config: its one task prints what `ctx` told the evaluator.
const CTX_JSONNET: &str = r#"
function(ctx) {
  runs: [{
    name: 'ctx',
    tasks: [{
      name: 'dump',
      runtime: { containers: [{ image: 'busybox' }] },
      environment: {
        CTX_REF_TYPE: ctx.ref_type,
        CTX_PR: ctx.pull_request_id,
        CTX_BRANCH: ctx.branch,
        CTX_SHA: ctx.commit_sha,
      },
      steps: [{ run: "env | grep -E '^(CTX_|AGOLA_)' | sort" }],
    }],
  }],
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonnet_config_gets_the_classified_reference_and_the_commit_as_ctx() {
    let dir = plain_dir(ENV_DUMP, &[(".agola/config.jsonnet", CTX_JSONNET)]);
    let data = tempfile::tempdir().unwrap();
    let out = direct_run(
        dir.path(),
        data.path(),
        &["--ref", "refs/pull/3/head"],
        LONG,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let env = dumped(&out);
    assert_eq!(
        env.get("CTX_REF_TYPE").map(String::as_str),
        Some("pull_request"),
        "{env:?}"
    );
    assert_eq!(env.get("CTX_PR").map(String::as_str), Some("3"), "{env:?}");
    assert_eq!(
        env.get("CTX_BRANCH").map(String::as_str),
        Some(""),
        "{env:?}"
    );
    let sha = env.get("AGOLA_GIT_COMMITSHA").cloned().unwrap_or_default();
    assert_eq!(sha.len(), 64, "{env:?}");
    assert_eq!(env.get("CTX_SHA"), Some(&sha), "{env:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commit_fields_and_pull_request_patterns_are_refused_with_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let branch = || {
        with_ref(RefSpec {
            branch: Some("main".into()),
            ..RefSpec::default()
        })
    };
    let mut shell = branch();
    shell.commit_sha = Some("$(cat /etc/passwd)".into());
    let mut nul = branch();
    nul.message = Some("subject\0".into());
    let mut patterns = branch();
    patterns.pull_request_ref_regexes = vec![r"refs/pull/(\d+)/head".into(); 17];
    let mut huge = branch();
    huge.pull_request_ref_regexes = vec![r"(\w{1000}){1000}".into()];
    for (what, req) in [
        ("commit_sha", shell),
        ("message", nul),
        ("at most 16", patterns),
        ("wrong pull request ref", huge),
    ] {
        let e = client.create_run(&req).await.expect_err(what);
        assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{what}: {e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    let listed = client.list_runs(&Default::default()).await.unwrap();
    assert!(listed.runs.is_empty(), "no run was recorded");
}

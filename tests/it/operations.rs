//! OPERATIONS.md followed on loopback, its commands as the doc gives them: certificates
//! from `cairn cert`, the admin token made with the doc's shell line, each node's settings
//! made from `dist/cairn.toml` (only its names, paths and ports changed) and the
//! executor's from `dist/executor.toml`; n1 started once by hand with `--init`, stopped
//! and started again from its settings alone, n2 and n3 joining from theirs; health as
//! the doc checks it (`/readyz`, `cairn store cluster status`); a registration token, an
//! executor (the environment's `CAIRN_DRIVER=local` over the file's docker: no images
//! here), a run through n2; the backups of the doc, then the store snapshot restored into
//! n1's data dir after the cluster is stopped, and the run found on the restored node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use cairn_client::run::RunResult;
use cairn_client::{ClientTls, RunClient};

use crate::support::poll::wait_for;
use crate::support::process::{cairn_bin, free_port, spawn_until_ready};
use crate::support::runs::{create_request, wait_finished};
use crate::support::service::kill_step_leftovers;

/// A long-running `cairn` started as the doc starts it; SIGKILLed if still running when
/// dropped (with the step processes of its task directory, for an executor).
struct Running {
    child: Option<Child>,
    tasks_dir: Option<PathBuf>,
}

impl Running {
    /// `cairn ARGS` with `env`, once a stdout line contains `ready`.
    fn start(args: &[&str], env: &[(&str, String)], ready: &str) -> Running {
        let mut cmd = Command::new(cairn_bin());
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("CAIRN_LOG", "error,openraft=off");
        let what = format!("cairn {}", args.join(" "));
        let (child, _) = spawn_until_ready(cmd, &what, |l| l.contains(ready));
        Running {
            child: Some(child),
            tasks_dir: None,
        }
    }

    /// A clean stop (SIGTERM, as systemd stops a unit), waited for.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cairn did not stop within 90 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = &self.tasks_dir {
            kill_step_leftovers(dir);
        }
    }
}

/// `dist/NAME` with each `(from, to)` replaced; `from` must be in it (when the example
/// changes, this test changes with it).
fn from_dist(name: &str, replace: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "dist/{name} no longer has {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// `cairn ARGS` to its end, with `env`; its stdout (the test fails when it fails).
fn cairn(args: &[&str], env: &[(&str, String)]) -> String {
    let out: Output = Command::new(cairn_bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CAIRN_LOG", "error,openraft=off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const RUN: &str = "runs:\n  - name: installed\n    tasks:\n      - name: hello\n        runtime: {containers: [{image: busybox}]}\n        steps: [{run: echo installed}]\n";

/// The doc's health checks: `/readyz` says `ready` on every node, and `cairn store
/// cluster status` shows `members` members, one leader, the others followers.
async fn healthy(urls: &[String], ca: &Path, token: &str) {
    let tls = ClientTls {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTls::default()
    };
    let http = tls
        .apply(reqwest::Client::builder())
        .unwrap()
        .build()
        .unwrap();
    for url in urls {
        wait_for(Duration::from_secs(60), &format!("{url}/readyz"), || {
            let http = http.clone();
            let url = format!("{url}/readyz");
            async move {
                let r = http.get(url).send().await.ok()?;
                (r.status().is_success() && r.text().await.ok()? == "ready").then_some(())
            }
        })
        .await;
    }
    let ca = ca.display().to_string();
    wait_for(
        Duration::from_secs(60),
        "one leader and the other members followers",
        || {
            let status = cairn(
                &["store", "cluster", "status", "--endpoints", &urls[0]],
                &[
                    ("CAIRN_TOKEN", token.to_string()),
                    ("CAIRN_CA_FILE", ca.clone()),
                ],
            );
            let roles: Vec<String> = status
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                .collect();
            let leaders = roles.iter().filter(|r| *r == "leader").count();
            let followers = roles.iter().filter(|r| *r == "follower").count();
            async move {
                (roles.len() == urls.len() && leaders == 1 && followers == urls.len() - 1)
                    .then_some(())
            }
        },
    )
    .await;
}

#[test]
fn the_three_machine_install_of_operations_md_runs_a_run_and_restores_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let ca_dir = at("ca");
    let ca = at("ca/ca.pem");

    // Certificates: `cairn cert init`, one node certificate per node.
    cairn(&["cert", "init", "--dir", &ca_dir], &[]);
    for n in ["n1", "n2", "n3"] {
        // The doc's --san is the node's host name; here every node is 127.0.0.1.
        cairn(
            &[
                "cert",
                "issue",
                "--ca-dir",
                &ca_dir,
                "--kind",
                "node",
                "--name",
                n,
                "--san",
                "127.0.0.1",
            ],
            &[],
        );
    }

    // The admin token, by the doc's line.
    let token_file = at("admin-token");
    let made = Command::new("sh")
        .arg("-c")
        .arg("head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' > \"$1\"")
        .arg("sh")
        .arg(&token_file)
        .status()
        .unwrap();
    assert!(made.success());
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 48, "{token:?}");

    // Each node's settings: dist/cairn.toml with its names, paths and port.
    let ports = [free_port(), free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    let settings: Vec<String> = (0..3)
        .map(|i| {
            let n = format!("n{}", i + 1);
            let join = match i {
                0 => "# join = \"https://n1.example:7070\"".to_string(),
                _ => format!("join = \"{}\"", urls[0]),
            };
            let replace = [
                ("# join = \"https://n1.example:7070\"", join),
                ("\"/var/lib/cairn\"", format!("\"{}\"", at(&n))),
                ("0.0.0.0:7070", format!("127.0.0.1:{}", ports[i])),
                (
                    "advertise = \"https://n1.example:7070\"",
                    format!("advertise = \"{}\"", urls[i]),
                ),
                ("/etc/cairn/tls/n1", format!("{ca_dir}/{n}")),
                ("/etc/cairn/tls/ca.pem", ca.clone()),
                ("/etc/cairn/admin-token", token_file.clone()),
                ("/srv/cairn-objects", at("objects")),
            ];
            let path = at(&format!("{n}.toml"));
            std::fs::write(&path, from_dist("cairn.toml", &replace)).unwrap();
            path
        })
        .collect();

    // n1: once by hand with --init, stopped, then from its settings alone (as systemd
    // starts it); n2, then n3, from theirs.
    let serving = "cairn: serving on https://";
    let mut first = Running::start(&["serve", "--config", &settings[0], "--init"], &[], serving);
    first.stop();
    let mut nodes = vec![Running::start(
        &["serve", "--config", &settings[0]],
        &[],
        serving,
    )];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for i in 1..3 {
        nodes.push(Running::start(
            &["serve", "--config", &settings[i]],
            &[],
            serving,
        ));
        rt.block_on(healthy(&urls[..=i], Path::new(&ca), &token));
    }

    // An executor: a registration token, then dist/executor.toml with this cluster's
    // URLs; the environment's driver wins over the file's.
    let registration = cairn(
        &[
            "token",
            "create",
            "--role",
            "registration",
            "--server",
            &urls[0],
            "--ca-file",
            &ca,
        ],
        &[("CAIRN_TOKEN_FILE", token_file.clone())],
    );
    std::fs::write(at("registration-token"), registration.trim()).unwrap();
    let executor_settings = at("executor.toml");
    let executor_data = at("executor");
    std::fs::write(
        &executor_settings,
        from_dist(
            "executor.toml",
            &[
                ("https://n1.example:7070", urls[0].clone()),
                ("https://n2.example:7070", urls[1].clone()),
                ("https://n3.example:7070", urls[2].clone()),
                ("/etc/cairn/tls/ca.pem", ca.clone()),
                ("/etc/cairn/registration-token", at("registration-token")),
                ("/var/lib/cairn-executor", executor_data.clone()),
            ],
        ),
    )
    .unwrap();
    let mut executor = Running::start(
        &["executor", "--config", &executor_settings],
        &[("CAIRN_DRIVER", "local".to_string())],
        "cairn: executor ",
    );
    executor.tasks_dir = Some(cairn::service::default_tasks_dir(Path::new(&executor_data)));

    // A run through n2 finishes on that executor.
    let tls = ClientTls {
        ca_file: Some(PathBuf::from(&ca)),
        ..ClientTls::default()
    };
    let run_id = rt.block_on(async {
        let client = RunClient::with_tls(&urls[1..2], Some(token.clone()), &tls).unwrap();
        let created = client
            .create_run(&create_request("/project/ops/branch/main", RUN))
            .await
            .expect("create a run through n2");
        let id = created.runs[0].run.id.clone();
        let done = wait_finished(&client, &id).await;
        assert_eq!(done.run.result, RunResult::Success, "{done:?}");
        id
    });

    // Backups, as the doc takes them.
    let export = cairn(
        &["export", "--server", &urls[0], "--ca-file", &ca],
        &[("CAIRN_TOKEN_FILE", token_file.clone())],
    );
    assert!(export.contains(&run_id), "the export holds the run");
    let snapshot = at("store.snap");
    cairn(
        &[
            "store",
            "snapshot",
            "save",
            &snapshot,
            "--endpoints",
            &urls[0],
            "--ca-file",
            &ca,
        ],
        &[("CAIRN_TOKEN", token.clone())],
    );

    // Restore the snapshot: every node stopped, n1's data dir moved away, the snapshot
    // restored into a new one, n1 started once with --init, then from its settings.
    executor.stop();
    for node in nodes.iter_mut().rev() {
        node.stop();
    }
    std::fs::rename(at("n1"), at("n1.old")).unwrap();
    cairn(
        &[
            "store",
            "snapshot",
            "restore",
            &snapshot,
            "--data-dir",
            &at("n1"),
        ],
        &[],
    );
    let mut first = Running::start(&["serve", "--config", &settings[0], "--init"], &[], serving);
    first.stop();
    let _restored = Running::start(&["serve", "--config", &settings[0]], &[], serving);
    rt.block_on(async {
        let client = RunClient::with_tls(&urls[..1], Some(token.clone()), &tls).unwrap();
        let run = wait_for(
            Duration::from_secs(60),
            "the run on the restored node",
            || async { client.run(&run_id).await.ok() },
        )
        .await;
        assert_eq!(run.run.result, RunResult::Success);
    });
}

//! Steps never see the server: drivers, environment, users (C1); the docker pods'
//! hardening (L6) is tested in `containers`.
//!
//! Issue 11, point 1: each test is one attack of a step on the server that runs it
//! (inheriting its environment, reaching its data dir or its token) that worked on the code
//! before the fix. The local-driver tests start a real `cairn serve --driver local` whose
//! environment carries a token and a cloud key; the `--run-as` test needs root (CI runs as
//! root; as another user it checks that `--run-as` is refused).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_client::api::RunResponse;
use cairn_client::run::RunResult;
use cairn_client::{LogStep, RunClient};
use futures::StreamExt;

use crate::support::process::{TOKEN, cairn_bin, free_port, spawn_until_ready};
use crate::support::runs::{create_request, task_id, wait_finished};
use crate::support::service::kill_step_leftovers;

/// A cloud key in the server's environment.
const CLOUD_KEY: &str = "host-aws-secret-0123456789";
/// Any other variable of the server's environment.
const CANARY: &str = "isolation-canary-0123456789";

/// A `cairn serve` started with an environment of its own (token and cloud key in it),
/// killed (with what its steps left behind) when dropped.
struct Server {
    url: String,
    data_dir: PathBuf,
    child: Child,
}

impl Server {
    /// `cairn serve --data-dir <data_dir>` with `extra` arguments; its token comes from
    /// `CAIRN_TOKEN` in its environment, as the README suggests.
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(cairn_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("CAIRN_TOKEN", TOKEN)
            .env("AWS_SECRET_ACCESS_KEY", CLOUD_KEY)
            .env("ISOLATION_CANARY", CANARY)
            .env("CAIRN_LOG", "error,openraft=off")
            .stderr(Stdio::inherit());
        let (child, _) = spawn_until_ready(cmd, "cairn serve", |l| l.contains("serving on"));
        Server {
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            child,
        }
    }

    fn client(&self) -> RunClient {
        RunClient::new(std::slice::from_ref(&self.url), Some(TOKEN.to_string())).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_step_leftovers(&cairn::service::default_tasks_dir(&self.data_dir));
    }
}

/// A one-task run whose single step is `command` (the task sets `TASK_VAR`).
fn one_step(command: &str) -> String {
    format!(
        r#"runs:
  - name: ci
    tasks:
      - name: probe
        runtime: {{ containers: [ {{ image: cairn-test/busybox:latest }} ] }}
        environment: {{ TASK_VAR: task-value }}
        steps:
          - run: {command:?}
"#
    )
}

/// Runs `command` as the one step of a run, returns the finished run and its step log.
async fn run_step(client: &RunClient, command: &str) -> (RunResponse, String) {
    let created = client
        .create_run(&create_request("/isolation/probe", &one_step(command)))
        .await
        .unwrap();
    let id = created.runs[0].run.id.clone();
    let done = wait_finished(client, &id).await;
    let tid = task_id(&done, "probe");
    let mut log = client
        .logs(&id, &tid, LogStep::Step(0), 0, false)
        .await
        .unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = log.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    (done, String::from_utf8_lossy(&text).into_owned())
}

/// The value of `name=` on a line of `log`.
fn field<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// C1: a step of `cairn serve --driver local` printed the server's `CAIRN_TOKEN`, its
/// `AWS_SECRET_ACCESS_KEY` and any other variable of its environment (`.envs()` without
/// `env_clear()`). Now a step sees its task's variables and a short allow-list only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_step_does_not_inherit_the_servers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("n"), &["--driver", "local"]);
    let (done, log) = run_step(&server.client(), "env; echo PATH_OK=$(command -v sh)").await;
    assert!(
        done.run.result == RunResult::Success,
        "the step failed: {:?}\n{log}",
        done.run.result
    );
    for secret in [TOKEN, CLOUD_KEY, CANARY] {
        assert!(!log.contains(secret), "the step saw {secret:?}:\n{log}");
    }
    for name in ["CAIRN_TOKEN", "AWS_SECRET_ACCESS_KEY", "ISOLATION_CANARY"] {
        assert!(field(&log, name).is_none(), "the step saw {name}:\n{log}");
    }
    // Its own variables, a home, and a PATH that finds a shell.
    assert_eq!(field(&log, "TASK_VAR"), Some("task-value"), "{log}");
    assert!(field(&log, "HOME").is_some(), "{log}");
    assert!(
        field(&log, "PATH_OK").is_some_and(|p| p.ends_with("/sh")),
        "{log}"
    );
}

/// C1: the step's home was `DATA_DIR/executor/tasks/<id>/home`, so the server's token
/// file was `$HOME/../../../../token`. Now task directories are beside the data dir
/// (`DATA_DIR-tasks`), and that path names no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_steps_home_is_outside_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let server = Server::start(&data, &["--driver", "local"]);
    let (done, log) = run_step(
        &server.client(),
        "echo HOME=$HOME; cat $HOME/../../../../token; cat $HOME/../../../token; true",
    )
    .await;
    let home = PathBuf::from(field(&log, "HOME").unwrap_or_else(|| {
        panic!(
            "no HOME in the step's log {log:?}; the run ended {:?} with tasks {:?}",
            done.run.result, done.run.tasks
        )
    }));
    // (The task's directory is gone once it ended: the paths are compared as written.)
    assert!(
        home.starts_with(cairn::service::default_tasks_dir(&data)) && !home.starts_with(&data),
        "the home {} is not beside the data dir {}",
        home.display(),
        data.display()
    );
    assert!(!log.contains(TOKEN), "the step read the token:\n{log}");
}

/// C1: steps ran as the server's user (root on the reviewed host) and could read its
/// token file. With `--run-as USER` (here `nobody`), steps run as that user, without the
/// server's groups, and can read neither the token nor the data dir. As a user other
/// than root, `--run-as` is refused with a one-line error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_step_runs_as_the_run_as_user_and_cannot_read_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    if !nix::unistd::geteuid().is_root() {
        let out = Command::new(cairn_bin())
            .args([
                "serve",
                "--driver",
                "local",
                "--run-as",
                "nobody",
                "--data-dir",
            ])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("CAIRN_TOKEN", TOKEN)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("needs the executor to run as root"), "{err}");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody");
    // tempfile makes its directory 0700: `nobody` must reach its tasks beside the data dir.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let server = Server::start(&data, &["--driver", "local", "--run-as", "nobody"]);
    let token = data.join("token");
    let script = format!(
        "echo UID=$(id -u); echo GROUPS=$(id -G); echo USER=$USER; \
         cat {t} && echo READ=token; ls {d} && echo READ=dir; \
         echo x > newfile && echo WROTE=home; true",
        t = token.display(),
        d = data.display()
    );
    let (done, log) = run_step(&server.client(), &script).await;
    assert!(done.run.result == RunResult::Success, "{log}");
    assert_eq!(
        field(&log, "UID"),
        Some(nobody.uid.to_string().as_str()),
        "{log}"
    );
    assert_eq!(
        field(&log, "GROUPS"),
        Some(nobody.gid.to_string().as_str()),
        "{log}"
    );
    assert_eq!(field(&log, "USER"), Some("nobody"), "{log}");
    assert_eq!(field(&log, "READ"), None, "{log}");
    assert!(!log.contains(TOKEN), "the step read the token:\n{log}");
    // Its home is its own.
    assert_eq!(field(&log, "WROTE"), Some("home"), "{log}");
}

/// C1: `cairn serve` ran every step as a host process unless told otherwise (`--driver`
/// defaulted to local). Now, without `--driver`, it runs docker when an Engine answers,
/// else refuses to start with one line naming the choices.
#[test]
fn serve_without_a_driver_or_an_engine_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(cairn_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("n"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--docker-host", "unix:///nonexistent/docker.sock"])
        .env("CAIRN_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cairn serve started without a driver or an Engine");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    for want in ["--driver docker", "--driver local", "--no-executor"] {
        assert!(err.contains(want), "{want} missing: {err}");
    }
}

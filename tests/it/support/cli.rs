//! The `cairn` binary as a person uses it from a shell: pipeline directories made on the
//! fly (plain or `git init`), commands run to their end with a deadline, and commands
//! left running in the background whose output is read line by line as it comes (to
//! wait for a line, send SIGINT, and collect the exit code). Output is a pipe, so there
//! are no colours and no status line. Every child is killed when its handle drops, and
//! so are the step processes an embedded node left behind.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::process::cairn_bin;
use super::service::kill_step_leftovers;

/// The user direct runs belong to (`/user/<USER>/…` groups, `<USER>-<uuid>` caches).
pub const USER: &str = "cli-tester";

/// A pipeline directory: `.agola/config.yml` plus `files`, as a plain directory.
pub fn plain_dir(config: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path(), config, files);
    dir
}

/// Like [`plain_dir`], inside a fresh `git init` repository (nothing committed).
pub fn git_dir(config: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q"]);
    write_files(dir.path(), config, files);
    dir
}

fn write_files(root: &Path, config: &str, files: &[(&str, &str)]) {
    let mut all = vec![(".agola/config.yml", config)];
    all.extend_from_slice(files);
    for (name, content) in all {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
}

/// Runs git in `dir`; its trimmed stdout (panics when git fails).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How a finished command ended.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The `TASK RESULT TIME` summary `cairn run` prints last: task name → result word.
    pub fn summary(&self) -> BTreeMap<String, String> {
        let mut rows = BTreeMap::new();
        let mut in_table = false;
        for line in self.stdout.lines() {
            let cells: Vec<&str> = line.split_whitespace().collect();
            if cells.first() == Some(&"TASK") && cells.get(1) == Some(&"RESULT") {
                in_table = true;
                rows.clear();
                continue;
            }
            if in_table {
                match cells.as_slice() {
                    [] => in_table = false,
                    [name, result, ..] => {
                        rows.insert(name.to_string(), result.to_string());
                    }
                    _ => {}
                }
            }
        }
        rows
    }

    /// The text after `task │ ` of every output line of `task`, in order.
    pub fn task_lines(&self, task: &str) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let (name, text) = l.split_once(" │ ")?;
                (name.trim_end() == task).then(|| text.to_string())
            })
            .collect()
    }

    /// The id of the run `cairn run` created (`cairn: run <id> #N (…) in <group>`).
    pub fn run_id(&self) -> String {
        run_id_of_line(&self.stdout).unwrap_or_else(|| panic!("no run id in {}", self.stdout))
    }

    /// Stderr's lines that are not blank.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

fn run_id_of_line(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("cairn: run ")?;
        let (id, rest) = rest.split_once(' ')?;
        rest.starts_with('#').then(|| id.to_string())
    })
}

/// A `cairn` command line: the binary with a clean environment (no `CAIRN_*` leaking in
/// from the caller, a fixed `USER`, no colours).
pub fn cairn<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(cairn_bin());
    cmd.args(args)
        .env_remove("CAIRN_SERVER")
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_DATA_DIR")
        .env("CAIRN_LOG", "error,openraft=off")
        .env("USER", USER)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end (panics, with what it printed, after `timeout`).
pub fn run(cmd: Command, timeout: Duration) -> Output {
    Background::spawn(cmd, None).finish(timeout)
}

/// `cairn run DIR --data-dir DATA ARGS…` on an embedded node, to its end.
pub fn direct_run(dir: &Path, data_dir: &Path, args: &[&str], timeout: Duration) -> Output {
    Background::spawn(direct_run_command(dir, data_dir, args), Some(data_dir)).finish(timeout)
}

/// The command line of [`direct_run`].
pub fn direct_run_command(dir: &Path, data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = cairn(["run"]);
    cmd.arg(dir).arg("--data-dir").arg(data_dir).args(args);
    cmd
}

/// A `cairn` process running in the background; its stdout is read line by line as it
/// is written, its stderr collected.
pub struct Background {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// A data dir whose embedded executor's leftover steps are killed on drop.
    data_dir: Option<PathBuf>,
}

impl Background {
    /// Starts `cmd`; `data_dir` is the embedded node's, if any (for cleanup).
    pub fn spawn(mut cmd: Command, data_dir: Option<&Path>) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Background {
            child: Some(child),
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            data_dir: data_dir.map(Path::to_path_buf),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("a running child").id()).expect("a pid")
    }

    /// Waits until a stdout line satisfies `pred` and returns it (panics after
    /// `timeout`, or if stdout ends first, with everything printed so far).
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no such line ({e:?}); stdout so far:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// The run id `cairn run` prints once it has created the run.
    pub fn wait_run_id(&mut self, timeout: Duration) -> String {
        let line = self.wait_line(timeout, |l| run_id_of_line(l).is_some());
        run_id_of_line(&line).expect("a run id line")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("a child");
        matches!(child.try_wait(), Ok(None))
    }

    /// Sends SIGINT (what Ctrl-C does) to the process alone.
    pub fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("send SIGINT");
    }

    /// Waits for the process to exit and returns all it printed (panics after `timeout`,
    /// killing it, with what it printed so far).
    pub fn finish(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        // Stdout ends when the process exits (or closes it): read it all first.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "cairn did not finish within {timeout:?}; stdout:\n{}",
                        self.stdout.join("\n")
                    );
                }
            }
        }
        let status = self.wait_exit(deadline);
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Output {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.iter().map(|l| format!("{l}\n")).collect(),
            stderr,
        }
    }

    fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        let child = self.child.as_mut().expect("a child");
        // Stdout is closed: the process is exiting. Poll its status until the deadline.
        loop {
            if let Some(status) = child.try_wait().expect("wait for cairn") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("cairn closed its stdout but did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = &self.data_dir {
            kill_step_leftovers(&d.join("executor").join("tasks"));
        }
    }
}

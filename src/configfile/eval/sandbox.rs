//! The one place config evaluation touches the operating system: [`evaluate`] runs
//! [`super::evaluate`] in a child process (this same executable, started with
//! [`CHILD_ARG`]) so that a hostile config cannot take the caller down. The child limits
//! its own address space ([`Limits::max_memory`]) and CPU time before evaluating, and
//! evaluates on a thread with a known stack ([`EVAL_STACK`]); the parent kills it at the
//! deadline ([`Limits::timeout`]). Request and answer are JSON over stdin and stdout.
//!
//! Agola evaluates in the gateway process and notes the risk (`config.go`: "execute
//! jsonnet and starlark executor in a separate process to avoid issues with malformat
//! config that could lead to infinite executions and memory exhaustion"); this is that.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigContext, Language, Limits};
use crate::configfile::error::ConfigError;

/// The first argument that makes the `cairn` executable a config evaluator.
pub const CHILD_ARG: &str = "__evaluate-config";

/// Native stack of the evaluating thread: far more than the bounded call depth needs.
pub const EVAL_STACK: usize = 64 * 1024 * 1024;

/// Time for the child to start and answer, on top of the evaluation's own deadline.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Request {
    language: Language,
    file: String,
    content: String,
    ctx: ConfigContext,
    limits: Limits,
}

type Answer = Result<String, ConfigError>;

/// Evaluates in a child process running the current executable (the `cairn` binary).
pub fn evaluate(
    language: Language,
    file: &str,
    content: &str,
    ctx: &ConfigContext,
    limits: &Limits,
) -> Result<String, ConfigError> {
    let program = std::env::current_exe().map_err(|e| failure(file, &e))?;
    evaluate_with(&program, language, file, content, ctx, limits)
}

/// Evaluates in a child process running `program`, which must call [`child_main`] first
/// thing.
pub fn evaluate_with(
    program: &Path,
    language: Language,
    file: &str,
    content: &str,
    ctx: &ConfigContext,
    limits: &Limits,
) -> Result<String, ConfigError> {
    let request = serde_json::to_vec(&Request {
        language,
        file: file.to_string(),
        content: content.to_string(),
        ctx: ctx.clone(),
        limits: *limits,
    })
    .map_err(|e| failure(file, &e))?;
    let mut child = Command::new(program)
        .arg(CHILD_ARG)
        // The binary's allocator (mimalloc) reserves 1 GiB of address space at its first
        // allocation, before the child sets its address-space limit: with that reserve,
        // the limit leaves the evaluation no room at all. Without it, the child maps
        // what it uses, which is what the limit is meant to bound.
        .env("MIMALLOC_ARENA_RESERVE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failure(file, &e))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failure(file, &"no pipe to the evaluator"));
    };
    // The child reads the whole request before it answers, so writing first cannot block
    // forever; a child that died early makes this fail and its status tells why.
    let written = stdin.write_all(&request);
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let wait = limits.timeout + STARTUP_GRACE;
    let Ok(read) = rx.recv_timeout(wait) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ConfigError::new(
            file,
            0,
            0,
            "",
            format!(
                "the config's evaluation did not finish within {}s",
                limits.timeout.as_secs()
            ),
        ));
    };
    let status = child.wait().map_err(|e| failure(file, &e))?;
    let answer = read
        .ok()
        .filter(|_| written.is_ok() && status.success())
        .and_then(|out| serde_json::from_slice::<Answer>(&out).ok());
    match answer {
        Some(answer) => answer,
        None => Err(ConfigError::new(file, 0, 0, "", died(status, limits))),
    }
}

/// What a child that gave no answer ran into.
fn died(status: ExitStatus, limits: &Limits) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        // Rust aborts when an allocation fails, which the address-space limit causes.
        Some(6) => format!(
            "the config's evaluation ran out of memory (more than {} MiB)",
            limits.max_memory / (1024 * 1024)
        ),
        // SIGXCPU, then SIGKILL at the hard limit.
        Some(24) | Some(9) => format!(
            "the config's evaluation used more than {}s of CPU",
            limits.timeout.as_secs()
        ),
        Some(signal) => format!("the config's evaluation crashed (signal {signal})"),
        None => format!("the config's evaluation failed ({status})"),
    }
}

fn failure(file: &str, e: &dyn std::fmt::Display) -> ConfigError {
    ConfigError::new(
        file,
        0,
        0,
        "",
        format!("cannot start the config's evaluation: {e}"),
    )
}

/// The child's side: when the process was started as an evaluator (first argument
/// [`CHILD_ARG`]), reads the request from stdin, evaluates it within its limits, writes
/// the answer to stdout and returns the exit code; `None` in any other process.
pub fn child_main() -> Option<u8> {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(CHILD_ARG)) {
        return None;
    }
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return Some(3);
    }
    let Ok(request) = serde_json::from_slice::<Request>(&input) else {
        return Some(3);
    };
    drop(input);
    limit_resources(&request.limits);
    let file = request.file.clone();
    let evaluation = std::thread::Builder::new()
        .name("config-eval".into())
        .stack_size(EVAL_STACK)
        .spawn(move || {
            super::evaluate(
                request.language,
                &request.file,
                &request.content,
                &request.ctx,
                &request.limits,
            )
        });
    let answer: Answer = match evaluation.map(|h| h.join()) {
        Ok(Ok(answer)) => answer,
        _ => Err(ConfigError::new(
            file,
            0,
            0,
            "",
            "the config's evaluation failed inside the evaluator",
        )),
    };
    let Ok(out) = serde_json::to_vec(&answer) else {
        return Some(3);
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
        return Some(3);
    }
    Some(0)
}

/// Address space and CPU time of this (child) process. Best effort: a limit the system
/// refuses leaves the parent's deadline as the bound.
fn limit_resources(limits: &Limits) {
    use nix::sys::resource::{Resource, setrlimit};
    let cpu = limits.timeout.as_secs().max(1);
    let _ = setrlimit(Resource::RLIMIT_AS, limits.max_memory, limits.max_memory);
    let _ = setrlimit(Resource::RLIMIT_CPU, cpu, cpu + 1);
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_child_without_an_answer_is_explained_by_how_it_ended() {
        let limits = Limits::default();
        let signal = |n: i32| died(ExitStatus::from_raw(n), &limits);
        assert_eq!(
            signal(6),
            "the config's evaluation ran out of memory (more than 2048 MiB)"
        );
        assert_eq!(
            signal(24),
            "the config's evaluation used more than 20s of CPU"
        );
        assert_eq!(signal(11), "the config's evaluation crashed (signal 11)");
        assert!(
            died(ExitStatus::from_raw(3 << 8), &limits)
                .starts_with("the config's evaluation failed")
        );
    }

    #[test]
    fn a_program_that_is_no_evaluator_gives_an_error_not_a_hang() {
        let e = evaluate_with(
            Path::new("/bin/true"),
            Language::Jsonnet,
            "c.jsonnet",
            "{}",
            &ConfigContext::default(),
            &Limits::default(),
        )
        .expect_err("no answer");
        assert_eq!(e.file, "c.jsonnet");
        assert!(e.message.starts_with("the config's evaluation"), "{e}");
        let e = evaluate_with(
            Path::new("/nonexistent/cairn"),
            Language::Jsonnet,
            "c.jsonnet",
            "{}",
            &ConfigContext::default(),
            &Limits::default(),
        )
        .expect_err("cannot start");
        assert!(
            e.message
                .starts_with("cannot start the config's evaluation"),
            "{e}"
        );
    }
}

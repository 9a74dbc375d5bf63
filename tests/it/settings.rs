//! The `--config FILE` of the long-running commands in a real process: what wins between
//! the command line, a flag's `CAIRN_*` variable and the file, and how a bad file stops
//! the command (`src/cli/settings.rs` tests the merge itself).

use std::process::Command;

use crate::support::process::{cairn_bin, free_port, spawn_until_ready};

/// One `cairn serve` whose listen address and data dir each come from three places:
/// the address from the environment (over the file), the data dir from the command line
/// (over the environment and the file); `no-executor` from the file alone (without it
/// the node would refuse to start with no Docker Engine and no `--driver`).
#[test]
fn the_command_line_beats_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (file_port, env_port) = (free_port(), free_port());
    let settings = path("cairn.toml");
    std::fs::write(
        &settings,
        format!(
            "listen = \"127.0.0.1:{file_port}\"\ndata-dir = \"{}\"\nno-executor = true\n",
            path("from-file")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(cairn_bin());
    cmd.args([
        "serve",
        "--config",
        &settings,
        "--data-dir",
        &path("from-cli"),
    ])
    .env("CAIRN_LISTEN", format!("127.0.0.1:{env_port}"))
    .env("CAIRN_DATA_DIR", path("from-env"))
    .env("CAIRN_LOG", "error,openraft=off");
    let (mut child, line) =
        spawn_until_ready(cmd, "cairn serve --config", |l| l.contains("serving on"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains(&format!("http://127.0.0.1:{env_port} ")),
        "the environment's address: {line}"
    );
    assert!(
        line.ends_with(&format!("admin token in {}", path("from-cli/token"))),
        "the command line's data dir: {line}"
    );
    assert!(!dir.path().join("from-file").exists());
    assert!(!dir.path().join("from-env").exists());
}

/// A key that is no flag stops the command before it starts: exit code 2 and one line
/// naming the file, the line and the key.
#[test]
fn a_key_that_is_no_flag_stops_the_command_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("executor.toml");
    std::fs::write(
        &settings,
        "server = \"https://n1:7070\"\nlisten = \"0.0.0.0:7070\"\n",
    )
    .unwrap();
    let out = Command::new(cairn_bin())
        .args(["executor", "--token", "t"])
        .env("CAIRN_CONFIG", &settings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "cairn: config file {}:2: unknown key `listen`: `cairn executor` has no flag --listen\n",
            settings.display()
        )
    );
}

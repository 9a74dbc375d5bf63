//! The files of `dist/` and the settings OPERATIONS.md shows stay true to the binary:
//! every key of the example settings is a flag of its command with a value the flag
//! takes (read by the real loader), each unit's `ExecStart=` is a command line the
//! binary parses, with the settings file it names, the units carry their sandbox, pass
//! `systemd-analyze verify`, and `install.sh` installs what the doc says. The
//! Containerfile is not built: no image registry is reachable here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn::cli::Command as Cli;
use cairn::cli::settings::{SettingsFile, parse_from};

use crate::support::process::cairn_bin;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `argv` parsed as the binary parses it, settings files read from `files` (a path as
/// the command line names it → its text).
fn parse(argv: &[&str], files: &[(&str, String)]) -> Cli {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.clone()))
        .collect();
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let read = |path: &Path| {
        let (_, text) = files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no settings file {} in this test", path.display()));
        SettingsFile::parse(path, text)
    };
    match parse_from(argv.clone(), read) {
        Ok(cli) => cli.command,
        Err(e) => panic!("{argv:?}: {e}"),
    }
}

#[test]
fn the_example_settings_name_only_real_flags_with_values_they_take() {
    let serve = parse(
        &["cairn", "serve", "--config", "dist/cairn.toml"],
        &[("dist/cairn.toml", read("dist/cairn.toml"))],
    );
    let Cli::Serve(serve) = serve else {
        panic!("not cairn serve")
    };
    assert_eq!(serve.node.data_dir, Path::new("/var/lib/cairn"));
    assert!(serve.no_executor);
    assert!(serve.net.tls_cert.is_some() && serve.net.tls_client_ca.is_some());

    // n2 and n3: the same with `join` uncommented.
    let joining = read("dist/cairn.toml").replace("# join = ", "join = ");
    let Cli::Serve(n2) = parse(
        &["cairn", "serve", "--config", "n2.toml"],
        &[("n2.toml", joining)],
    ) else {
        panic!("not cairn serve")
    };
    assert_eq!(n2.node.join.as_deref(), Some("https://n1.example:7070"));

    let Cli::Executor(executor) = parse(
        &["cairn", "executor", "--config", "dist/executor.toml"],
        &[("dist/executor.toml", read("dist/executor.toml"))],
    ) else {
        panic!("not cairn executor")
    };
    assert_eq!(executor.server.len(), 3);
    assert_eq!(executor.executor.labels, ["os=linux", "arch=x86_64"]);
}

/// The ```toml blocks of OPERATIONS.md, each read as the settings of the command it is
/// for (the executor's names `server`).
#[test]
fn the_settings_shown_in_operations_md_parse() {
    let doc = read("OPERATIONS.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().expect("a closed block"))
        .collect();
    assert!(
        blocks.len() >= 3,
        "the node's, n2's addition and the executor's"
    );
    for block in blocks {
        let command = if block.contains("server = ") {
            "executor"
        } else {
            "serve"
        };
        let argv = ["cairn", command, "--config", "doc.toml"];
        match parse(&argv, &[("doc.toml", block.to_string())]) {
            Cli::Serve(_) | Cli::Executor(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Each unit's `ExecStart=` line, split as systemd splits a plain one, parsed by the
/// binary's own parser with the settings file it names (the repository's example).
#[test]
fn each_unit_starts_a_command_line_the_binary_takes() {
    for (unit, command, settings, example) in [
        (
            "dist/cairn-serve.service",
            "serve",
            "/etc/cairn/cairn.toml",
            "dist/cairn.toml",
        ),
        (
            "dist/cairn-executor.service",
            "executor",
            "/etc/cairn/executor.toml",
            "dist/executor.toml",
        ),
    ] {
        let text = read(unit);
        let exec: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart="))
            .split_whitespace()
            .collect();
        assert_eq!(exec[0], "/usr/bin/cairn", "{unit}");
        assert_eq!(exec[1], command, "{unit}");
        assert!(exec.contains(&settings), "{unit} reads {settings}");
        match parse(&exec, &[(settings, read(example))]) {
            Cli::Serve(_) if command == "serve" => {}
            Cli::Executor(_) if command == "executor" => {}
            other => panic!("{unit}: {other:?}"),
        }
        for line in [
            "User=cairn",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "ProtectKernelTunables=yes",
            "CapabilityBoundingSet=",
            "Restart=on-failure",
            "LimitNOFILE=65536",
        ] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
        assert!(
            !text.contains("DynamicUser=yes"),
            "{unit}: the data must keep its owner"
        );
        assert!(
            text.lines().any(|l| l.starts_with("StateDirectory=")),
            "{unit} has no StateDirectory="
        );
    }
    assert!(
        read("dist/cairn-executor.service").contains("SupplementaryGroups=docker"),
        "the executor's unit says how the docker driver reaches the socket"
    );
}

/// `systemd-analyze verify` on both units (its binary path pointed at this build: the
/// check wants an executable there). CI has systemd-analyze and must run this; elsewhere
/// its absence is said, and the ExecStart check above still ran.
#[test]
fn systemd_analyze_verifies_the_units() {
    let found = Command::new("systemd-analyze").arg("--version").output();
    if found.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have systemd-analyze (.ci/run installs systemd)"
        );
        eprintln!("systemd-analyze not found: only the ExecStart lines were checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for unit in ["cairn-serve.service", "cairn-executor.service"] {
        let text = read(&format!("dist/{unit}")).replace("/usr/bin/cairn", cairn_bin());
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // Unknown keys and bad values are only warnings: any line about our units fails.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("cairn-")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {ours:#?}");
}

/// `install.sh` with `DESTDIR`: the binary, settings, units, man pages and completions
/// land where OPERATIONS.md says, and settings already there are kept.
#[test]
fn install_sh_puts_everything_in_place() {
    let root = tempfile::tempdir().unwrap();
    let kept = root.path().join("etc/cairn/cairn.toml");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, "# edited by the operator\n").unwrap();
    let out = Command::new("sh")
        .arg(repo("dist/install.sh"))
        .arg(cairn_bin())
        .env("DESTDIR", root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "usr/bin/cairn",
        "etc/cairn/executor.toml",
        "etc/systemd/system/cairn-serve.service",
        "etc/systemd/system/cairn-executor.service",
        "usr/share/man/man1/cairn.1",
        "usr/share/man/man1/cairn-serve.1",
        "usr/share/man/man1/cairn-executor.1",
        "usr/share/bash-completion/completions/cairn",
        "usr/share/zsh/vendor-completions/_cairn",
        "usr/share/fish/vendor_completions.d/cairn.fish",
    ] {
        let path = root.path().join(file);
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .len();
        assert!(len > 0, "{file} is empty");
    }
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "# edited by the operator\n"
    );
    let bash = std::fs::read_to_string(
        root.path()
            .join("usr/share/bash-completion/completions/cairn"),
    )
    .unwrap();
    assert!(bash.contains("serve"));
}

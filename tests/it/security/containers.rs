//! A docker pod's container is hardened against its own steps (L6), checked against the
//! real Docker Engine: capabilities bounded to the driver's short list, no new
//! privileges, and the memory, CPU and pids limits given to `cairn serve` on its command
//! line, seen both from inside a step and in `docker inspect`.
//!
//! Gated like `executor_docker` (whose helpers these tests use): skipped unless
//! `CAIRN_DOCKER_TESTS=1`, with the local image `cairn-test/busybox:latest`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use cairn::executor::driver::docker::CAPABILITIES;
use cairn_client::RunClient;
use cairn_client::api::{RunAction, RunResponse};
use cairn_client::run::RunResult;
use serde_json::Value;

use crate::executor_docker::{
    Cleanup, IMAGE, all_logs, containers_labelled, docker_enabled, docker_node_with, sleeper,
    sleeper_running, step_log, wait_finished,
};
use crate::support::runs::{create, create_request, task_id};
use crate::support::service::ServiceProc;

/// `--pod-memory`, and the bytes it means.
const MEMORY_FLAG: &str = "96m";
const MEMORY_BYTES: i64 = 96 << 20;
/// `--pod-cpus`, and the billionths of a CPU it means.
const CPUS_FLAG: &str = "0.5";
const NANO_CPUS: i64 = 500_000_000;
/// `--pod-pids-limit`.
const PIDS: i64 = 64;

/// `cairn serve --driver docker` with the limits above.
fn limited_node(dir: &Path) -> (Cleanup, ServiceProc) {
    let pids = PIDS.to_string();
    let args = [
        "--pod-memory",
        MEMORY_FLAG,
        "--pod-cpus",
        CPUS_FLAG,
        "--pod-pids-limit",
        &pids,
    ];
    docker_node_with(dir, &args)
}

/// One task of a run: a busybox container and one step, `command` (named `probe`: a
/// multi-line command needs a name).
fn task(name: &str, command: &str) -> String {
    format!(
        r#"      - name: {name}
        runtime: {{ containers: [ {{ image: cairn-test/busybox:latest }} ] }}
        steps:
          - run: {{ name: probe, command: {command:?} }}
"#
    )
}

/// A run of `tasks` (each from [`task`]).
fn config(tasks: &[String]) -> String {
    format!(
        "runs:\n  - name: containers\n    tasks:\n{}",
        tasks.concat()
    )
}

/// Runs the config to its end; the finished run.
async fn run_to_end(client: &RunClient, group: &str, config: &str) -> RunResponse {
    let created = client
        .create_run(&create_request(group, config))
        .await
        .unwrap();
    assert_eq!(created.setup_errors(), Vec::<&str>::new(), "{config}");
    wait_finished(client, &created.runs[0].run.id).await
}

/// The log of step 0 of task `name`.
async fn first_step_log(client: &RunClient, done: &RunResponse, name: &str) -> String {
    step_log(client, &done.run.id, &task_id(done, name), 0).await
}

/// The value of `name=` (or `name:` and whitespace, as in /proc/self/status) on a line.
fn field<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    log.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix('=')
            .or_else(|| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A capability's bit in /proc's masks (linux/capability.h).
fn cap_bit(name: &str) -> u32 {
    match name {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "FSETID" => 4,
        "KILL" => 5,
        "SETGID" => 6,
        "SETUID" => 7,
        "SETPCAP" => 8,
        "NET_BIND_SERVICE" => 10,
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_MODULE" => 16,
        "SYS_CHROOT" => 18,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "MKNOD" => 27,
        "AUDIT_WRITE" => 29,
        "SETFCAP" => 31,
        other => panic!("capability {other} is not in the test's table: add its number"),
    }
}

/// The mask of the capabilities the driver keeps.
fn kept_mask() -> u64 {
    CAPABILITIES.iter().fold(0, |m, c| m | 1 << cap_bit(c))
}

/// What a container must never have: Docker's defaults the driver drops, and the
/// capabilities that would undo the container's isolation.
const FORBIDDEN: [&str; 11] = [
    "NET_RAW",
    "MKNOD",
    "SETFCAP",
    "SETPCAP",
    "SYS_CHROOT",
    "AUDIT_WRITE",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_MODULE",
    "NET_ADMIN",
    "DAC_READ_SEARCH",
];

/// L6: a pod's container kept Docker's default capabilities (`CapEff 00000000a80425fb`,
/// NET_RAW, MKNOD, SETFCAP… included) and setuid binaries could raise privileges. Now a
/// root step's effective, permitted and bounding sets are exactly the driver's list and
/// `NoNewPrivs` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_step_has_only_the_drivers_capabilities_and_no_new_privileges() {
    if !docker_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_cleanup, node) = limited_node(dir.path());
    let client = node.client();
    let cfg = config(&[task(
        "caps",
        "id -u; grep -E '^(Cap|NoNewPrivs)' /proc/self/status",
    )]);
    let done = run_to_end(&client, "/project/caps/branch/main", &cfg).await;
    assert_eq!(
        done.run.result,
        RunResult::Success,
        "{}",
        all_logs(&client, &done, "caps").await
    );
    let log = first_step_log(&client, &done, "caps").await;
    assert!(log.starts_with("0\n"), "the step runs as root: {log}");
    let mask = |name: &str| {
        let hex = field(&log, name).unwrap_or_else(|| panic!("no {name} in {log}"));
        u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{name} {hex:?}: {e}"))
    };
    let kept = kept_mask();
    assert_eq!(
        kept, 0x4fb,
        "the driver's list changed ({CAPABILITIES:?}): review SECURITY.md and this mask"
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(mask(set), kept, "{set} is not the driver's list:\n{log}");
    }
    assert_eq!(mask("CapAmb"), 0, "{log}");
    for cap in FORBIDDEN {
        assert_eq!(mask("CapBnd") & 1 << cap_bit(cap), 0, "{cap} kept:\n{log}");
    }
    assert_eq!(field(&log, "NoNewPrivs"), Some("1"), "{log}");
}

/// The `HostConfig` of container `id`, as the Engine reports it.
fn host_config(id: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{json .HostConfig}}", id])
        .output()
        .expect("docker inspect");
    assert!(out.status.success(), "docker inspect: {out:?}");
    serde_json::from_slice(&out.stdout).expect("a HostConfig in JSON")
}

/// A capability name without its optional `CAP_` prefix (the Engine may add it).
fn cap_name(v: &Value) -> String {
    let s = v.as_str().expect("a capability name").to_ascii_uppercase();
    s.strip_prefix("CAP_").map_or(s.clone(), str::to_string)
}

/// L6: a test pod's `HostConfig` had `Memory 0, NanoCpus 0, PidsLimit None, CapDrop None,
/// SecurityOpt None`. Now the running container of a step carries the limits given on
/// `cairn serve`'s command line, every capability dropped but the driver's list, and
/// `no-new-privileges`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pods_container_has_the_flags_limits_and_the_hardened_host_config() {
    if !docker_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_cleanup, node) = limited_node(dir.path());
    let client = node.client();
    let id = create(&client, "/project/inspect/branch/main", &sleeper("inspect"))
        .await
        .run
        .id;
    let (_, tid) = sleeper_running(&client, &id).await;
    let ids = containers_labelled(&format!("cairn.task={tid}"));
    assert_eq!(ids.len(), 1, "one container for the task: {ids:?}");
    let hc = host_config(&ids[0]);

    assert_eq!(hc["Memory"], MEMORY_BYTES, "{hc:#}");
    assert_eq!(hc["MemorySwap"], MEMORY_BYTES, "no swap on top: {hc:#}");
    assert_eq!(hc["NanoCpus"], NANO_CPUS, "{hc:#}");
    assert_eq!(hc["PidsLimit"], PIDS, "{hc:#}");
    assert_eq!(hc["Privileged"], false, "{hc:#}");
    let drop: Vec<String> = hc["CapDrop"]
        .as_array()
        .unwrap_or_else(|| panic!("no CapDrop: {hc:#}"))
        .iter()
        .map(cap_name)
        .collect();
    assert_eq!(drop, ["ALL"], "{hc:#}");
    let add: BTreeSet<String> = hc["CapAdd"]
        .as_array()
        .unwrap_or_else(|| panic!("no CapAdd: {hc:#}"))
        .iter()
        .map(cap_name)
        .collect();
    let want: BTreeSet<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    assert_eq!(add, want, "{hc:#}");
    let opts = hc["SecurityOpt"]
        .as_array()
        .unwrap_or_else(|| panic!("no SecurityOpt: {hc:#}"));
    assert!(
        opts.iter().any(|o| matches!(
            o.as_str(),
            Some("no-new-privileges" | "no-new-privileges:true")
        )),
        "{hc:#}"
    );

    client.run_action(&id, RunAction::Stop).await.unwrap();
    let done = wait_finished(&client, &id).await;
    assert_eq!(done.run.result, RunResult::Stopped, "{:?}", done.run);
}

/// A fork bomb that records what it started: a child shell starts 200 `sleep 30` in the
/// background (it dies at its first failed fork), then the step, with builtins only (no
/// fork is left), kills them, counts them and reads the cgroup's pids limit (v1 or v2).
const FORK_BOMB: &str = "set +e
sh -c 'i=0; while [ $i -lt 200 ]; do sleep 30 & echo $! >> /tmp/pids; i=$((i+1)); done'
n=0; while read p; do kill $p; n=$((n+1)); done < /tmp/pids
echo STARTED=$n
for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do
  if [ -r $f ]; then read m < $f; echo PIDS_MAX=$m; fi
done
true";

/// L6: a pod had no pids limit, so a fork bomb in a step could exhaust the host's
/// processes. Now it stops at `--pod-pids-limit` (the container's other processes count
/// too) and the next run on the executor succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_the_pids_limit_and_the_next_run_succeeds() {
    if !docker_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_cleanup, node) = limited_node(dir.path());
    let client = node.client();
    let cfg = config(&[task("bomb", FORK_BOMB)]);
    let done = run_to_end(&client, "/project/bomb/branch/main", &cfg).await;
    let logs = all_logs(&client, &done, "bomb").await;
    assert_eq!(done.run.result, RunResult::Success, "{logs}");
    let log = first_step_log(&client, &done, "bomb").await;
    assert_eq!(
        field(&log, "PIDS_MAX"),
        Some(PIDS.to_string().as_str()),
        "{log}"
    );
    let started: i64 = field(&log, "STARTED")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no STARTED in {log}"));
    assert!(started < PIDS, "{started} processes started: {log}");
    // Forks failed at the limit, not before it for another reason.
    assert!(
        started >= PIDS / 2,
        "only {started} processes started: {log}"
    );

    let next = config(&[task("after", "echo still-fine")]);
    let done = run_to_end(&client, "/project/bomb/branch/main", &next).await;
    assert_eq!(
        done.run.result,
        RunResult::Success,
        "{}",
        all_logs(&client, &done, "after").await
    );
    assert_eq!(
        first_step_log(&client, &done, "after").await,
        "still-fine\n"
    );
}

/// Prints the cgroup's memory limit (v1 or v2), then buffers 200 MiB in `tail` (zeros
/// have no newline, so it keeps them all).
const MEMORY_HOG: &str =
    "for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
  if [ -r $f ]; then echo MEMORY_MAX=$(cat $f); fi
done
dd if=/dev/zero bs=1M count=200 2>/dev/null | tail > /dev/null";

/// L6: a pod had no memory limit, so one step could take the host's memory. Now the
/// cgroup's limit is `--pod-memory` and a step that allocates past it is OOM-killed
/// (exit 137), failing its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_allocating_past_the_memory_limit_is_oom_killed() {
    if !docker_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_cleanup, node) = limited_node(dir.path());
    let client = node.client();
    let cfg = config(&[task("hog", MEMORY_HOG)]);
    let done = run_to_end(&client, "/project/hog/branch/main", &cfg).await;
    let logs = all_logs(&client, &done, "hog").await;
    assert_eq!(done.run.result, RunResult::Failed, "{logs}");
    let step = &done.run.tasks[&task_id(&done, "hog")].steps[0];
    assert_eq!(
        step.exit_status,
        Some(137),
        "SIGKILL by the OOM killer: {logs}"
    );
    let log = first_step_log(&client, &done, "hog").await;
    assert_eq!(
        field(&log, "MEMORY_MAX"),
        Some(MEMORY_BYTES.to_string().as_str()),
        "{log}"
    );
}

/// A static x86-64 Linux program (136 bytes, no libc) that exits with its effective uid
/// modulo 256: `geteuid()`, then `exit(euid)`. Busybox, the image's only binary, drops
/// setuid privileges by itself, so it cannot show what the kernel would grant.
fn euid_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADER: u16 = 64;
    const PROGRAM_HEADER: u16 = 56;
    let code: [u8; 16] = [
        0xb8, 0x6b, 0, 0, 0, // mov eax, 107 (geteuid)
        0x0f, 0x05, // syscall
        0x89, 0xc7, // mov edi, eax
        0xb8, 0x3c, 0, 0, 0, // mov eax, 60 (exit)
        0x0f, 0x05, // syscall
    ];
    let start = u64::from(HEADER + PROGRAM_HEADER);
    let size = start + code.len() as u64;
    let mut elf = b"\x7fELF".to_vec();
    // 64-bit, little endian, version 1, System V; padding.
    elf.extend_from_slice(&[2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // an executable
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // for x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + start).to_le_bytes()); // entry point
    elf.extend_from_slice(&u64::from(HEADER).to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [HEADER, PROGRAM_HEADER, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One loadable segment, readable and executable: the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    assert_eq!(elf.len() as u64, size);
    elf
}

/// As root, writes [`euid_program`] setuid root; then as `nobody` (through `su`), runs
/// it: `NOBODY_EUID` is 0 when the setuid bit raised the step back to root, 254 (65534
/// modulo 256) when it did not.
fn setuid_script() -> String {
    let octal: String = euid_program()
        .iter()
        .map(|b| format!("\\{b:03o}"))
        .collect();
    format!(
        "set +e
printf '{octal}' > /tmp/euid && chmod 4755 /tmp/euid
echo MODE=$(stat -c %A /tmp/euid)
/tmp/euid; echo ROOT_EUID=$?
su -s /bin/sh nobody -c 'echo NOBODY_UID=$(id -u); /tmp/euid; echo NOBODY_EUID=$?'"
    )
}

/// The same probe in a container of the Engine with the driver's capabilities but
/// without `no-new-privileges` (a control: the probe sees an elevation when there is one).
fn setuid_probe_without_no_new_privileges(script: &str) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--cap-drop", "ALL"]);
    for cap in CAPABILITIES {
        cmd.args(["--cap-add", cap]);
    }
    let out = cmd
        .args([IMAGE, "sh", "-c", script])
        .output()
        .expect("docker run");
    assert!(out.status.success(), "docker run: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// L6: setuid binaries raised a step's privileges (no `no-new-privileges`). Now a step
/// that dropped to `nobody` stays `nobody` when it runs a setuid-root program, which in
/// a container differing only by `no-new-privileges` gives root back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setuid_root_program_does_not_make_a_non_root_step_root_again() {
    if !docker_enabled() {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the setuid probe is an x86-64 program");
        return;
    }
    let script = setuid_script();
    let control = setuid_probe_without_no_new_privileges(&script);
    assert_eq!(
        field(&control, "NOBODY_EUID"),
        Some("0"),
        "the control did not elevate, so the probe proves nothing:\n{control}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (_cleanup, node) = limited_node(dir.path());
    let client = node.client();
    let cfg = config(&[task("setuid", &script)]);
    let done = run_to_end(&client, "/project/setuid/branch/main", &cfg).await;
    assert_eq!(
        done.run.result,
        RunResult::Success,
        "{}",
        all_logs(&client, &done, "setuid").await
    );
    let log = first_step_log(&client, &done, "setuid").await;
    for log in [&log, &control] {
        assert_eq!(field(log, "MODE"), Some("-rwsr-xr-x"), "{log}");
        assert_eq!(field(log, "ROOT_EUID"), Some("0"), "{log}");
        assert_eq!(field(log, "NOBODY_UID"), Some("65534"), "{log}");
    }
    assert_eq!(
        field(&log, "NOBODY_EUID"),
        Some("254"),
        "the setuid bit made nobody root:\n{log}"
    );
}

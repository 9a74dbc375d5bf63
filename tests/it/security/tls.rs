//! TLS on client and peer ports, certificates from `cairn cert` (M2), and the HTTP port's
//! connection limits (H5).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::RunClient;
use cairn_client::etcd::{B64Bytes, EtcdClient, PutRequest, WatchCreateRequest};

use crate::support::process::{TOKEN, cairn_bin, free_port, spawn_until_ready};

/// Raises this test process's soft open-file limit to the hard one (it holds over a
/// thousand sockets); returns the hard limit.
fn raise_own_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    hard
}

/// A `cairn serve --no-executor` started by `sh` with a soft open-file limit of 1024 (what
/// systemd gives a service), and `extra` arguments. Killed on drop.
struct LimitedServe {
    url: String,
    port: u16,
    child: Child,
}

impl LimitedServe {
    fn start(dir: &std::path::Path, extra: &[&str]) -> LimitedServe {
        let port = free_port();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"ulimit -Sn 1024 && exec "$0" "$@""#)
            .arg(cairn_bin())
            .args(["serve", "--no-executor", "--token", TOKEN, "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("CAIRN_LOG", "error,openraft=off")
            .stderr(Stdio::inherit());
        let (child, _) = spawn_until_ready(cmd, "cairn serve (nofile 1024)", |l| {
            l.contains("serving on")
        });
        LimitedServe {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
        }
    }

    fn client(&self) -> RunClient {
        RunClient::new(std::slice::from_ref(&self.url), Some(TOKEN.to_string())).expect("client")
    }
}

impl Drop for LimitedServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` connections to `port`: odd ones stay silent, even ones send half a request
/// head and stop (the probe of security.md H5).
fn open_idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            if i % 2 == 0 {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .expect("write half a head");
            }
            s
        })
        .collect()
}

/// Whether the server closed `s` (EOF or reset) before `deadline`.
fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("set a read timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine; keep reading to the EOF.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// H5: 1,100 idle or half-sent unauthenticated connections to a server started with a
/// soft open-file limit of 1024 used to exhaust its descriptors (an authenticated request
/// timed out for over a minute) and were never closed. Now the server raises its limit,
/// answers the authenticated request at once, and closes every one of them after its
/// header-read timeout (1 s here).
#[test]
fn idle_connections_neither_block_the_api_nor_stay_open() {
    let hard = raise_own_nofile();
    if hard < 4096 {
        panic!("this test needs a hard open-file limit of at least 4096 (have {hard})");
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = LimitedServe::start(dir.path(), &["--header-read-timeout-ms", "1000"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = srv.client();
    let mut idle = open_idle_connections(srv.port, 1100);
    let started = Instant::now();
    let probe = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(3), client.executors()).await });
    assert!(
        matches!(probe, Ok(Ok(_))),
        "an authenticated request next to 1,100 idle connections: {probe:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the authenticated request took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let open = idle
        .iter_mut()
        .filter_map(|s| (!closed_by_server(s, deadline)).then_some(()))
        .count();
    assert_eq!(open, 0, "connections the server left open past its timeout");
}

/// H5, the cap: with `--max-connections 20`, 40 silent connections do not lock the API out:
/// the excess waits in the accept queue, and a slot frees as soon as a silent connection
/// reaches its header-read timeout, so the authenticated request is answered within a
/// few timeouts.
#[test]
fn the_connection_cap_queues_excess_connections() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let srv = LimitedServe::start(
        dir.path(),
        &[
            "--header-read-timeout-ms",
            "1000",
            "--max-connections",
            "20",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = srv.client();
    let _idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).expect("connect"))
        .collect();
    let probe = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), client.executors()).await
    });
    assert!(
        matches!(probe, Ok(Ok(_))),
        "an authenticated request behind 40 silent connections: {probe:?}"
    );
}

/// H5's timeouts must not cut long-lived responses: a watch opened on a server whose
/// header-read timeout is 1 s still delivers an event written 3 s later.
#[test]
fn a_watch_outlives_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let srv = LimitedServe::start(dir.path(), &["--header-read-timeout-ms", "1000"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let etcd = EtcdClient::new(
            vec![srv.url.clone()],
            Some(TOKEN.to_string()),
            Duration::from_secs(30),
        );
        let mut watch = etcd
            .watch(&WatchCreateRequest {
                key: B64Bytes(b"tls-watch".to_vec()),
                ..Default::default()
            })
            .await
            .expect("watch");
        // The stream must stay open past several header-read timeouts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        etcd.put(&PutRequest {
            key: B64Bytes(b"tls-watch".to_vec()),
            value: B64Bytes(b"v".to_vec()),
            ..Default::default()
        })
        .await
        .expect("put");
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match watch.next().await {
                    Ok(Some(msg)) if !msg.events.is_empty() => return Ok(msg),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err("the watch stream ended".to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .expect("an event within 10 s")
        .expect("the watch is still open");
        assert_eq!(got.events[0].kv.key.0, b"tls-watch");
    });
}

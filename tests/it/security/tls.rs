//! TLS on client and peer ports, certificates from `cairn cert` (M2), and the HTTP port's
//! connection limits (H5).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::etcd::{B64Bytes, EtcdClient, PutRequest, RangeRequest, WatchCreateRequest};
use cairn_client::run::RunResult;
use cairn_client::{ClientTls, RunClient};

use crate::support::process::{TOKEN, cairn_bin, free_port, spawn_until_ready};
use crate::support::runs::{create_request, wait_finished};
use crate::support::service::ServiceProc;

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
/// head and stop (the probe of the security review's H5).
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

/// The PEM files `cairn cert` wrote into a directory.
pub(crate) struct Certs {
    dir: std::path::PathBuf,
}

impl Certs {
    /// `cairn cert init`, then a certificate per `(kind, name)`, all for 127.0.0.1.
    pub(crate) fn make(dir: &std::path::Path, certs: &[(&str, &str)]) -> Certs {
        Certs::make_with_sans(dir, certs, |_| Vec::new())
    }

    /// [`Certs::make`], each certificate also valid for the addresses `sans` gives for
    /// its name (a node's address in a network namespace).
    pub(crate) fn make_with_sans(
        dir: &std::path::Path,
        certs: &[(&str, &str)],
        sans: impl Fn(&str) -> Vec<String>,
    ) -> Certs {
        let ca_dir = dir.display().to_string();
        cert_cli(&["init", "--dir", &ca_dir]);
        for (kind, name) in certs {
            let mut args = vec![
                "issue",
                "--ca-dir",
                &ca_dir,
                "--kind",
                kind,
                "--name",
                name,
                "--san",
                "127.0.0.1",
            ];
            let extra = sans(name);
            for san in &extra {
                args.extend(["--san", san.as_str()]);
            }
            cert_cli(&args);
        }
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    pub(crate) fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// `cairn serve` arguments serving `name`'s node certificate with mutual TLS.
    pub(crate) fn serve_args(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path(&format!("{name}.pem")),
            "--tls-key".into(),
            self.path(&format!("{name}-key.pem")),
            "--tls-client-ca".into(),
            self.ca(),
        ]
    }

    /// Trusts this CA, presenting `name`'s certificate when given.
    pub(crate) fn client_tls(&self, name: Option<&str>) -> ClientTls {
        ClientTls {
            ca_file: Some(self.ca().into()),
            cert_file: name.map(|n| self.path(&format!("{n}.pem")).into()),
            key_file: name.map(|n| self.path(&format!("{n}-key.pem")).into()),
        }
    }
}

fn cert_cli(args: &[&str]) {
    let out = Command::new(cairn_bin())
        .arg("cert")
        .args(args)
        .output()
        .expect("run cairn cert");
    assert!(
        out.status.success(),
        "cairn cert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

const TLS_RUN: &str = "runs:\n  - name: tls\n    tasks:\n      - name: t\n        runtime: {containers: [{image: busybox}]}\n        steps: [{run: echo over-tls}]\n";

/// M2: a three-node `cairn serve` cluster over TLS, certificates from `cairn cert`. The
/// nodes join and replicate over mutual TLS; a client with the CA file writes on one node
/// and reads on another, a run goes through the first node's in-process executor over
/// https, and the CLI works with `--server https://… --ca-file`. A plaintext client and a
/// client without the CA are refused. (Before: no TLS anywhere, `https` refused by the
/// client.)
#[test]
fn a_three_node_tls_cluster_serves_https_clients_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(
        &dir.path().join("certs"),
        &[("node", "n1"), ("node", "n2"), ("node", "n3")],
    );
    let objects = dir.path().join("objects").display().to_string();
    let extra = |n: &str| {
        let mut v = certs.serve_args(n);
        v.extend(["--objects".into(), objects.clone()]);
        v
    };
    let mut first_args = extra("n1");
    first_args.extend(["--driver".into(), "local".into()]);
    let mut n1 = ServiceProc::with_executor(&dir.path().join("d1"), &strs(&first_args));
    n1.url = format!("https://127.0.0.1:{}", n1.port);
    let seed = n1.url.clone();
    let mut nodes = vec![n1];
    for name in ["n2", "n3"] {
        let mut n = ServiceProc::start_with(
            &dir.path().join(name),
            free_port(),
            false,
            Some(&seed),
            &strs(&extra(name)),
        );
        n.url = format!("https://127.0.0.1:{}", n.port);
        nodes.push(n);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tls = certs.client_tls(None);
        let etcd = |url: &str| {
            EtcdClient::with_tls(
                vec![url.to_string()],
                Some(TOKEN.to_string()),
                Duration::from_secs(10),
                &tls,
            )
            .unwrap()
        };
        etcd(&urls[2])
            .put(&PutRequest {
                key: B64Bytes(b"tls-key".to_vec()),
                value: B64Bytes(b"over-mtls".to_vec()),
                ..Default::default()
            })
            .await
            .expect("a put through the third node");
        let got = etcd(&urls[0])
            .range(&RangeRequest {
                key: B64Bytes(b"tls-key".to_vec()),
                ..Default::default()
            })
            .await
            .expect("a read on the first node");
        assert_eq!(got.kvs[0].value.0, b"over-mtls");

        let client = RunClient::with_tls(&urls, Some(TOKEN.to_string()), &tls).unwrap();
        let created = client
            .create_run(&create_request("/user/tls/branch/main", TLS_RUN))
            .await
            .expect("create a run over https");
        assert_eq!(created.runs.len(), 1);
        let done = wait_finished(&client, &created.runs[0].run.id).await;
        assert_eq!(done.run.result, RunResult::Success, "{done:?}");

        let plain = EtcdClient::new(
            vec![format!("http://127.0.0.1:{}", nodes[0].port)],
            Some(TOKEN.to_string()),
            Duration::from_secs(5),
        );
        let refused = plain
            .range(&RangeRequest {
                key: B64Bytes(b"tls-key".to_vec()),
                ..Default::default()
            })
            .await;
        assert!(refused.is_err(), "plain HTTP to the TLS port: {refused:?}");
        let untrusting = RunClient::new(&urls[..1], Some(TOKEN.to_string())).unwrap();
        assert!(
            untrusting.executors().await.is_err(),
            "a client without the CA file trusted the server"
        );
    });

    let out = Command::new(cairn_bin())
        .args(["runs", "list", "--server", &urls[1], "--token", TOKEN])
        .args(["--ca-file", &certs.ca()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn runs list --server https://…: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/user/tls"));
    let out = Command::new(cairn_bin())
        .args(["store", "get", "tls-key", "--endpoints", &urls[2]])
        .args(["--token", TOKEN, "--ca-file", &certs.ca()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("over-mtls"));
}

/// M2 and H2's "ideally mTLS between peers": on a TLS port `/raft/rpc` answers only a
/// connection that presented a node certificate of the cluster CA. With the peer
/// credential, a client without a certificate, or with a client certificate of the same
/// CA, gets 403; a node certificate gets past the gate (to the route's own checks).
#[test]
fn the_peer_route_needs_a_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(
        &dir.path().join("certs"),
        &[("node", "n1"), ("node", "n2"), ("client", "alice")],
    );
    let mut srv = ServiceProc::single_with(&dir.path().join("d"), &strs(&certs.serve_args("n1")));
    srv.url = format!("https://127.0.0.1:{}", srv.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let post = |who: Option<&'static str>| {
            let http = certs
                .client_tls(who)
                .apply(reqwest::Client::builder())
                .unwrap()
                .build()
                .unwrap();
            let url = format!("{}/raft/rpc", srv.url);
            async move {
                http.post(url)
                    .bearer_auth(TOKEN)
                    .body(vec![0u8; 4])
                    .send()
                    .await
                    .expect("a TLS connection")
                    .status()
            }
        };
        assert_eq!(post(None).await, reqwest::StatusCode::FORBIDDEN);
        assert_eq!(post(Some("alice")).await, reqwest::StatusCode::FORBIDDEN);
        assert_ne!(post(Some("n2")).await, reqwest::StatusCode::FORBIDDEN);
    });
}

/// M2: certificates are reloaded when their files change. The node serves a certificate
/// of CA 1; its files are replaced by one of CA 2; a new connection trusting only CA 2
/// then succeeds, and one trusting only CA 1 fails.
#[test]
fn a_replaced_certificate_is_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let one = Certs::make(&dir.path().join("one"), &[("node", "n1")]);
    let two = Certs::make(&dir.path().join("two"), &[("node", "n1")]);
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for f in ["n1.pem", "n1-key.pem", "ca.pem"] {
        std::fs::copy(one.dir.join(f), live.join(f)).unwrap();
    }
    let served = Certs { dir: live.clone() };
    let mut srv = ServiceProc::single_with(&dir.path().join("d"), &strs(&served.serve_args("n1")));
    srv.url = format!("https://127.0.0.1:{}", srv.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = |certs: &Certs| {
        let client = RunClient::with_tls(
            std::slice::from_ref(&srv.url),
            Some(TOKEN.to_string()),
            &certs.client_tls(None),
        )
        .unwrap();
        rt.block_on(client.executors()).is_ok()
    };
    assert!(answers(&one), "CA 1's client before the change");
    assert!(!answers(&two), "CA 2's client before the change");
    // Replace key and certificate, each by a rename.
    for f in ["n1-key.pem", "n1.pem"] {
        let tmp = live.join(format!("{f}.new"));
        std::fs::copy(two.dir.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(f)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(&two) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!answers(&one), "CA 1's client after the change");
}

/// M2: a non-loopback `--listen` without TLS is refused (one line, before binding) unless
/// `--insecure-plaintext` is given.
#[test]
fn plain_http_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(cairn_bin())
        .args(["serve", "--no-executor", "--token", TOKEN, "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
}

//! The peer endpoint, leases and the etcd gateway (H2, H3, L1, L5).

use std::process::Command;
use std::time::{Duration, Instant};

use cairn_client::etcd::*;
use raft::rpc::PeerRequest;
use raft::types::{CommittedLeaderId, LogId, Vote, VoteRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::poll::eventually;
use crate::support::process::{StoreProc, TOKEN, cairn_bin, free_port, spawn_until_ready};

fn node() -> (tempfile::TempDir, StoreProc) {
    let dir = tempfile::tempdir().unwrap();
    let p = StoreProc::start(&dir.path().join("n"), free_port(), "redb", true, None);
    (dir, p)
}

/// The node's peer secret (`DATA_DIR/peer-token`, derived from its client token).
fn peer_secret(p: &StoreProc) -> String {
    std::fs::read_to_string(p.data_dir.join("peer-token"))
        .expect("the node keeps its peer secret")
        .trim()
        .to_string()
}

async fn peer_rpc_as(url: &str, token: &str, body: Vec<u8>) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/raft/rpc"))
        .bearer_auth(token)
        .header("cairn-peer-protocol", "1")
        .body(body)
        .send()
        .await
        .expect("the node answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn peer_rpc(p: &StoreProc, body: Vec<u8>) -> (u16, String) {
    peer_rpc_as(&p.url, &peer_secret(p), body).await
}

async fn term(c: &EtcdClient) -> i64 {
    c.status().await.expect("status").raft_term.0
}

/// H2: `PeerRequest::Join { node_id: 5, addr: String(len = 2^44) }` in 14 bytes made
/// bincode allocate 16 TiB and the node abort. Now it is a 400 and the node serves on.
#[tokio::test]
async fn the_fourteen_byte_join_bomb_is_a_400_and_the_node_lives() {
    let (_d, p) = node();
    let bomb = b"\x07\x05\xfd\x00\x00\x00\x00\x00\x10\x00\x00abc".to_vec();
    let (status, text) = peer_rpc(&p, bomb).await;
    assert_eq!(status, 400, "{text}");
    let c = p.client();
    c.put(&PutRequest {
        key: "alive".into(),
        value: "yes".into(),
        ..Default::default()
    })
    .await
    .expect("the node still serves writes");
}

/// H2: `/raft/rpc` buffered the whole body (up to 64 MiB) before checking the token.
/// Now a request with a wrong token is answered 401 after its headers, while most of
/// its announced 60 MB body was never sent.
#[tokio::test]
async fn an_unauthenticated_large_body_is_refused_without_being_read() {
    let (_d, p) = node();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let head = format!(
        "POST /raft/rpc HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer wrong\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 60000000\r\n\r\n",
        p.port
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![0u8; 64 << 10]).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("an answer before the body is sent")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}

/// H2: a vote request with term `u64::MAX` was granted and persisted (openraft then
/// panics at the next election's `term + 1`). Now it is refused (403) and the term is
/// unchanged; so is a vote from a node that is not a member.
#[tokio::test]
async fn a_vote_with_an_absurd_term_or_from_a_stranger_is_refused() {
    let (_d, p) = node();
    let c = p.client();
    let me = c.status().await.unwrap().header.member_id.0 as u64;
    // The membership shows in the node's metrics shortly after it starts serving.
    eventually(
        Duration::from_secs(20),
        "the node to list itself",
        || async {
            c.member_list()
                .await
                .is_ok_and(|l| l.members.iter().any(|m| m.id.0 as u64 == me))
        },
    )
    .await;
    let before = term(&c).await;
    let vote = |term: u64, from: u64| {
        let last = LogId::new(CommittedLeaderId::new(term, from), u64::MAX);
        raft::types::encode(&PeerRequest::Vote(VoteRequest::new(
            Vote::new(term, from),
            Some(last),
        )))
    };
    let (status, text) = peer_rpc(&p, vote(u64::MAX, me)).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("absurd"), "{text}");
    let stranger = me ^ 1;
    let (status, text) = peer_rpc(&p, vote(before as u64 + 1, stranger)).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not a member"), "{text}");
    assert_eq!(term(&c).await, before, "the term did not move");
}

/// H3: a lease with TTL `i64::MAX` overflowed `Instant + Duration` in the lessor, which
/// died, and no lease expired again. Now the grant is refused with etcd's error (400,
/// OutOfRange) and a short lease still expires.
#[tokio::test]
async fn a_huge_lease_ttl_is_refused_and_short_leases_still_expire() {
    let (_d, p) = node();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v3/lease/grant", p.url))
        .bearer_auth(TOKEN)
        .json(&json!({"TTL": i64::MAX.to_string(), "ID": "0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], 11, "{err}");
    assert_eq!(err["message"], "etcdserver: too large lease TTL", "{err}");

    let c = p.client();
    let g: LeaseGrantResponse = c
        .call(
            "/v3/lease/grant",
            &LeaseGrantRequest {
                ttl: I64(1),
                id: I64(0),
            },
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t: LeaseTimeToLiveResponse = c
            .call(
                "/v3/lease/timetolive",
                &LeaseIdRequest {
                    id: g.id,
                    keys: false,
                },
            )
            .await
            .unwrap();
        if t.ttl.0 == -1 {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// L5: with `--no-client-auth`, a web page could write to the store through a local
/// browser (a text/plain "simple request" needs no preflight). Now a foreign `Origin`
/// or a non-loopback `Host` (DNS rebinding) is a 403 with etcd's JSON error; curl-like
/// requests (no Origin) and same-origin ones still work.
#[tokio::test]
async fn without_client_auth_cross_origin_browser_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(cairn_bin());
    cmd.args([
        "store",
        "serve",
        "--init",
        "--token",
        TOKEN,
        "--no-client-auth",
    ])
    .arg("--data-dir")
    .arg(dir.path().join("n"))
    .args(["--listen", &format!("127.0.0.1:{port}")])
    .env("CAIRN_LOG", "error,openraft=off");
    let (child, _) = spawn_until_ready(cmd, "node without client auth", |l| {
        l.contains("listening on")
    });
    let _child = Killed(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let put = |origin: Option<&str>, host: Option<&str>| {
        let mut r = http
            .post(format!("{url}/v3/kv/put"))
            .header("content-type", "text/plain")
            .body(r#"{"key":"Y3NyZg==","value":"cHduZWQ="}"#);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(h) = host {
            r = r.header("host", h);
        }
        r.send()
    };
    let evil = |s: &str| Some(s.to_string());
    let refused = [
        (evil("http://evil.example"), None),
        (evil("null"), None),
        (None, evil(&format!("evil.example:{port}"))),
        (
            evil(&format!("http://evil.example:{port}")),
            evil(&format!("evil.example:{port}")),
        ),
    ];
    for (origin, host) in &refused {
        let resp = put(origin.as_deref(), host.as_deref()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{origin:?} {host:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], 7, "{err}");
    }
    let own = format!("http://127.0.0.1:{port}");
    for origin in [None, Some(own.as_str())] {
        let resp = put(origin, None).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{origin:?}");
    }
}

/// Kills the child when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// M6 (the range half): an unbounded `/v3/kv/range` was built whole in memory (8 ranges
/// of 200 MB took the node to 5 GB). Now a range whose keys and values pass
/// `MAX_RANGE_RESPONSE_BYTES` (64 MiB) is refused before it is copied, with etcd's JSON
/// error, and the same range paged with `limit` is served.
#[tokio::test]
async fn a_range_larger_than_the_response_cap_is_refused_and_pages_are_served() {
    let (_d, p) = node();
    let c = p.client();
    // 1.4 MB values fit the 2 MiB request limit once base64-encoded; 49 pass 64 MiB.
    let value = vec![b'v'; 1_400_000];
    for i in 0..49 {
        c.put(&PutRequest {
            key: format!("big/{i:02}").as_str().into(),
            value: B64Bytes(value.clone()),
            ..Default::default()
        })
        .await
        .expect("a 1.4 MB put");
    }
    let all = json!({"key": "YmlnLw==", "range_end": "YmlnMA=="}); // "big/" .. "big0"
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v3/kv/range", p.url))
        .bearer_auth(TOKEN)
        .json(&all)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], 8, "{err}");
    let page = c
        .range(&RangeRequest {
            key: "big/".into(),
            range_end: "big0".into(),
            limit: I64(10),
            ..Default::default()
        })
        .await
        .expect("a page of 10");
    assert_eq!(page.kvs.len(), 10);
    assert!(page.more);
}

/// H1/H2 on the bare store: `cairn store serve` took its one `--token` for clients and
/// peers alike, so every etcd client could drive `/raft/rpc` (Vote, Append, Join…). Now
/// peers present a peer secret derived from it (kept in `DATA_DIR/peer-token`), as `cairn
/// serve` does: the client token is a 401 on `/raft/rpc`, the peer secret is no client
/// token, and a second node still joins with the same `--token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_store_nodes_client_token_does_not_open_the_peer_route() {
    let (d, p) = node();
    let peer = peer_secret(&p);
    assert_ne!(peer, TOKEN);
    let (status, text) = peer_rpc_as(&p.url, TOKEN, b"\x00".to_vec()).await;
    assert_eq!(status, 401, "the client token on /raft/rpc: {text}");
    let (status, text) = peer_rpc_as(&p.url, &peer, b"\x00".to_vec()).await;
    assert_ne!(status, 401, "the peer secret on /raft/rpc: {text}");
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/kv/range", p.url))
        .bearer_auth(&peer)
        .body(r#"{"key":"YQ=="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the peer secret as a client token");
    let second = StoreProc::start(
        &d.path().join("m"),
        free_port(),
        "redb",
        false,
        Some(&p.url),
    );
    let c = second.client();
    c.put(&PutRequest {
        key: "joined".into(),
        value: "yes".into(),
        ..Default::default()
    })
    .await
    .expect("the joined node serves writes");
    let members = p.client().member_list().await.expect("members");
    assert_eq!(members.members.len(), 2, "{members:?}");
}

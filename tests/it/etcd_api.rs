//! The store's client port speaks etcd 3.4's JSON gateway: shapes, semantics and errors.

use std::time::Duration;

use cairn_client::etcd::*;
use serde_json::{Value, json};

use crate::support::process::{StoreProc, TOKEN, free_port};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

struct Raw {
    http: reqwest::Client,
    url: String,
}

impl Raw {
    async fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
        )
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, &body.to_string(), Some(TOKEN)).await;
        assert_eq!(status, 200, "{path} {body} -> {v}");
        v
    }
}

fn node() -> (tempfile::TempDir, StoreProc, Raw) {
    let dir = tempfile::tempdir().unwrap();
    let p = StoreProc::start(&dir.path().join("n"), free_port(), "redb", true, None);
    let raw = Raw {
        http: reqwest::Client::new(),
        url: p.url.clone(),
    };
    (dir, p, raw)
}

#[tokio::test]
async fn kv_put_range_txn_and_revisions_have_etcds_json_shapes() {
    let (_d, _p, raw) = node();
    let put = raw
        .ok("/v3/kv/put", json!({"key": b64("a"), "value": b64("1")}))
        .await;
    assert_eq!(
        put["header"]["revision"], "2",
        "int64 fields are strings: {put}"
    );
    assert!(put["header"]["cluster_id"].is_string() && put["header"]["member_id"].is_string());
    raw.ok("/v3/kv/put", json!({"key": b64("a"), "value": b64("2")}))
        .await;
    raw.ok("/v3/kv/put", json!({"key": b64("b"), "value": b64("3")}))
        .await;

    let r = raw.ok("/v3/kv/range", json!({"key": b64("a")})).await;
    let kv = &r["kvs"][0];
    assert_eq!(
        (kv["key"].as_str(), kv["value"].as_str()),
        (Some(b64("a").as_str()), Some(b64("2").as_str()))
    );
    assert_eq!(
        (&kv["create_revision"], &kv["mod_revision"], &kv["version"]),
        (&json!("2"), &json!("3"), &json!("2"))
    );
    assert_eq!(r["count"], "1");

    // Prefix range with a limit, and a read at a past revision.
    let all = raw
        .ok(
            "/v3/kv/range",
            json!({"key": b64("\0"), "range_end": b64("\0"), "limit": 1}),
        )
        .await;
    assert_eq!(
        (
            all["kvs"].as_array().unwrap().len(),
            &all["more"],
            &all["count"]
        ),
        (1, &json!(true), &json!("2"))
    );
    let old = raw
        .ok("/v3/kv/range", json!({"key": b64("a"), "revision": "2"}))
        .await;
    assert_eq!(old["kvs"][0]["value"], b64("1"));

    // Txn: compare mod revision, then branch.
    let t = raw
        .ok(
            "/v3/kv/txn",
            json!({
                "compare": [{"key": b64("a"), "target": "MOD", "result": "EQUAL", "mod_revision": "3"}],
                "success": [{"request_put": {"key": b64("a"), "value": b64("won")}}, {"request_range": {"key": b64("b")}}],
                "failure": [{"request_range": {"key": b64("a")}}]
            }),
        )
        .await;
    assert_eq!(t["succeeded"], true, "{t}");
    assert_eq!(t["header"]["revision"], "5");
    assert_eq!(
        t["responses"][1]["response_range"]["kvs"][0]["value"],
        b64("3")
    );
    let lost = raw
        .ok(
            "/v3/kv/txn",
            json!({
                "compare": [{"key": b64("a"), "target": "MOD", "result": "EQUAL", "mod_revision": "3"}],
                "success": [{"request_put": {"key": b64("a"), "value": b64("again")}}],
                "failure": [{"request_range": {"key": b64("a")}}]
            }),
        )
        .await;
    assert!(
        lost.get("succeeded").is_none() || lost["succeeded"] == false,
        "{lost}"
    );
    assert_eq!(
        lost["responses"][0]["response_range"]["kvs"][0]["value"],
        b64("won")
    );
    assert_eq!(
        lost["header"]["revision"], "5",
        "a failed compare does not create a revision"
    );

    // A txn that only reads is served as a read: it sees one state and makes no revision.
    let ro = raw
        .ok(
            "/v3/kv/txn",
            json!({
                "compare": [{"key": b64("b"), "target": "VERSION", "result": "GREATER", "version": "0"}],
                "success": [{"request_range": {"key": b64("a")}}, {"request_range": {"key": b64("b"), "revision": "4"}}]
            }),
        )
        .await;
    assert_eq!(
        (&ro["succeeded"], &ro["header"]["revision"]),
        (&json!(true), &json!("5")),
        "{ro}"
    );
    assert_eq!(
        ro["responses"][0]["response_range"]["kvs"][0]["value"],
        b64("won")
    );
    assert_eq!(
        ro["responses"][1]["response_range"]["kvs"][0]["value"],
        b64("3")
    );

    // Delete with prev_kv.
    let d = raw
        .ok(
            "/v3/kv/deleterange",
            json!({"key": b64("a"), "prev_kv": true}),
        )
        .await;
    assert_eq!(
        (&d["deleted"], &d["prev_kvs"][0]["value"]),
        (&json!("1"), &json!(b64("won")))
    );
}

#[tokio::test]
async fn compaction_makes_old_revisions_unreadable_with_etcds_error() {
    let (_d, _p, raw) = node();
    for i in 0..5 {
        raw.ok(
            "/v3/kv/put",
            json!({"key": b64("k"), "value": b64(&i.to_string())}),
        )
        .await;
    }
    raw.ok("/v3/kv/compaction", json!({"revision": "4"})).await;
    let (status, err) = raw
        .post(
            "/v3/kv/range",
            &json!({"key": b64("k"), "revision": "3"}).to_string(),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], 11);
    assert_eq!(
        err["message"],
        "etcdserver: mvcc: required revision has been compacted"
    );
    let at = raw
        .ok("/v3/kv/range", json!({"key": b64("k"), "revision": "4"}))
        .await;
    assert_eq!(at["kvs"][0]["value"], b64("2"));
    let (status, err) = raw
        .post(
            "/v3/kv/range",
            &json!({"key": b64("k"), "revision": "99"}).to_string(),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, err["message"].as_str()),
        (
            400,
            Some("etcdserver: mvcc: required revision is a future revision")
        )
    );
}

#[tokio::test]
async fn leases_grant_attach_ttl_and_revoke_delete_keys_in_one_revision() {
    let (_d, _p, raw) = node();
    let g = raw.ok("/v3/lease/grant", json!({"TTL": "30"})).await;
    let id = g["ID"].as_str().unwrap().to_string();
    assert_eq!(g["TTL"], "30");
    raw.ok(
        "/v3/kv/put",
        json!({"key": b64("l/1"), "value": b64("x"), "lease": id}),
    )
    .await;
    raw.ok(
        "/v3/kv/put",
        json!({"key": b64("l/2"), "value": b64("y"), "lease": id}),
    )
    .await;
    let ttl = raw
        .ok("/v3/lease/timetolive", json!({"ID": id, "keys": true}))
        .await;
    assert_eq!(ttl["grantedTTL"], "30");
    let left: i64 = ttl["TTL"].as_str().unwrap().parse().unwrap();
    // A new leader extends every lease by its election window (2 s with `lan`).
    assert!((25..=32).contains(&left), "{ttl}");
    assert_eq!(ttl["keys"].as_array().unwrap().len(), 2);
    let ka = raw.ok("/v3/lease/keepalive", json!({"ID": id})).await;
    assert_eq!(ka["result"]["TTL"], "30");
    let before = raw.ok("/v3/kv/range", json!({"key": b64("zz")})).await["header"]["revision"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let rv = raw.ok("/v3/lease/revoke", json!({"ID": id})).await;
    assert_eq!(
        rv["header"]["revision"],
        (before + 1).to_string(),
        "both keys go in one revision"
    );
    let r = raw
        .ok(
            "/v3/kv/range",
            json!({"key": b64("l/"), "range_end": b64("l0")}),
        )
        .await;
    assert!(r.get("kvs").is_none(), "{r}");
    let (status, err) = raw
        .post(
            "/v3/kv/put",
            &json!({"key": b64("z"), "lease": id}).to_string(),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, err["message"].as_str()),
        (404, Some("etcdserver: requested lease not found"))
    );
}

#[tokio::test]
async fn watch_streams_events_from_a_past_revision_then_live() {
    let (_d, p, raw) = node();
    raw.ok("/v3/kv/put", json!({"key": b64("w/a"), "value": b64("1")}))
        .await;
    raw.ok(
        "/v3/kv/put",
        json!({"key": b64("other"), "value": b64("x")}),
    )
    .await;
    let client = p.client();
    let mut stream = client
        .watch(&WatchCreateRequest {
            key: "w/".into(),
            range_end: B64Bytes(prefix_end(b"w/")),
            start_revision: I64(2),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let created = stream.next().await.unwrap().unwrap();
    assert!(created.created);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!((first.header.revision, first.events.len()), (I64(2), 1));
    raw.ok("/v3/kv/put", json!({"key": b64("w/a"), "value": b64("2")}))
        .await;
    raw.ok("/v3/kv/deleterange", json!({"key": b64("w/a")}))
        .await;
    let second = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.header.revision, I64(4));
    assert_eq!(
        second.events[0].prev_kv.as_ref().unwrap().value,
        B64Bytes(b"1".to_vec())
    );
    let third = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (third.header.revision, third.events[0].kind),
        (I64(5), EventType::Delete)
    );
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_etcds_error_body_and_never_kills_the_node() {
    let (_d, _p, raw) = node();
    let cases: Vec<(&str, String, u16)> = vec![
        ("/v3/kv/range", json!({"key": "%%%not-base64"}).to_string(), 400),
        ("/v3/kv/range", json!({"key": b64("b"), "range_end": b64("a")}).to_string(), 400),
        ("/v3/kv/range", json!({"key": b64("a"), "limit": "x"}).to_string(), 400),
        ("/v3/kv/range", json!({"key": b64("a"), "bogus": 1}).to_string(), 400),
        ("/v3/kv/range", "{not json".to_string(), 400),
        ("/v3/kv/put", json!({"value": b64("v")}).to_string(), 400),
        ("/v3/kv/txn", json!({"success": [{"request_put": {"key": b64("a")}, "request_range": {"key": b64("a")}}]}).to_string(), 400),
        (
            "/v3/kv/txn",
            json!({"success": [{"request_put": {"key": b64("d")}}, {"request_put": {"key": b64("d")}}]}).to_string(),
            400,
        ),
        ("/v3/lease/grant", json!({"TTL": "0"}).to_string(), 400),
        ("/v3/kv/compaction", json!({"revision": "1000"}).to_string(), 400),
        ("/v3/cluster/member/remove", json!({"ID": "12345"}).to_string(), 404),
        ("/v3/no/such/endpoint", "{}".to_string(), 404),
    ];
    for (path, body, want) in cases {
        let (status, v) = raw.post(path, &body, Some(TOKEN)).await;
        assert_eq!(status, want, "{path} {body} -> {v}");
        assert!(
            v["error"].is_string() && v["code"].is_number() && v["message"].is_string(),
            "{path}: {v}"
        );
    }
    let (status, v) = raw
        .post(
            "/v3/kv/range",
            &json!({"key": b64("a")}).to_string(),
            Some("wrong"),
        )
        .await;
    assert_eq!((status, v["code"].as_i64()), (401, Some(16)));
    let (status, _) = raw
        .post("/v3/kv/range", &json!({"key": b64("a")}).to_string(), None)
        .await;
    assert_eq!(status, 401);
    // Still serving after all of that.
    raw.ok(
        "/v3/kv/put",
        json!({"key": b64("alive"), "value": b64("yes")}),
    )
    .await;
    let st = raw.ok("/v3/maintenance/status", json!({})).await;
    assert!(st["version"].as_str().unwrap().starts_with("3.4"));
    let members = raw.ok("/v3/cluster/member/list", json!({})).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
}

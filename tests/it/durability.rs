//! Crash durability on every on-disk engine (redb, sled, and rocksdb with its feature): kill -9 a single-node store during
//! concurrent writes, reopen it: nothing acknowledged is lost and it opens cleanly.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::etcd::{B64Bytes, PutRequest, RangeRequest, prefix_end};

use crate::support::process::{StoreProc, free_port};

async fn crash_loop(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = StoreProc::start(&dir.path().join("n"), free_port(), engine, true, None);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    for round in 0..3 {
        let client = node.client();
        let mut writers = Vec::new();
        for w in 0..16 {
            let (client, acked) = (client.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("d/{round}/{w}/{i}");
                    let req = PutRequest {
                        key: key.as_str().into(),
                        value: B64Bytes(vec![7; 256]),
                        ..Default::default()
                    };
                    match client.put(&req).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(key);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let writes flow, then pull the plug mid-stream.
        let before = acked.lock().unwrap().len();
        crate::support::poll::eventually(Duration::from_secs(30), "writes acknowledged", || {
            let acked = acked.clone();
            async move { acked.lock().unwrap().len() >= before + 200 }
        })
        .await;
        node.kill9();
        for w in writers {
            let _ = w.await;
        }
        node.restart();
        let all = node
            .client()
            .range(&RangeRequest {
                key: "d/".into(),
                range_end: B64Bytes(prefix_end(b"d/")),
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let present: BTreeSet<String> = all
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.0.clone()).unwrap())
            .collect();
        let acked = acked.lock().unwrap();
        let lost: Vec<&String> = acked.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "{engine}: round {round}: {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_loses_nothing_acknowledged_on_redb() {
    crash_loop("redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_loses_nothing_acknowledged_on_sled() {
    crash_loop("sled").await;
}

#[cfg(feature = "rocksdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_loses_nothing_acknowledged_on_rocksdb() {
    crash_loop("rocksdb").await;
}

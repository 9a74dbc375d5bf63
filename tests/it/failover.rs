//! Real processes, three nodes: kill -9 the leader again and again under concurrent
//! load. Every acknowledged write survives, the register/CAS history is linearizable,
//! and the watch stream a client saw is ordered and gap-free.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::etcd::*;
use rand::{Rng, SeedableRng};

use crate::support::linearizability::{OpKind, Operation, check};
use crate::support::poll::eventually;
use crate::support::process::Cluster;

const REGISTERS: usize = 3;
const KILLS: usize = 10;

fn s(b: &B64Bytes) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

struct Recorder {
    start: Instant,
    history: Mutex<Vec<Operation>>,
    acked: Mutex<BTreeSet<String>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

async fn client_loop(id: u64, client: EtcdClient, rec: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut last_seen: Vec<Option<String>> = vec![None; REGISTERS];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let reg = rng.gen_range(0..REGISTERS);
        let key = format!("reg/{reg}");
        let call = rec.now();
        match rng.gen_range(0..10) {
            0..=2 => {
                let ack = format!("ack/{id}/{n}");
                let req = PutRequest {
                    key: ack.as_str().into(),
                    value: "x".into(),
                    ..Default::default()
                };
                if client.put(&req).await.is_ok() {
                    rec.acked.lock().unwrap().insert(ack);
                }
            }
            3..=5 => {
                let req = RangeRequest {
                    key: key.as_str().into(),
                    ..Default::default()
                };
                if let Ok(r) = client.range(&req).await {
                    let result = r.kvs.first().map(|kv| s(&kv.value));
                    last_seen[reg] = result.clone();
                    let op = Operation {
                        client: id,
                        key,
                        call,
                        ret: Some(rec.now()),
                        kind: OpKind::Read { result },
                    };
                    rec.history.lock().unwrap().push(op);
                }
            }
            6..=7 => {
                let value = format!("w{id}-{n}");
                let req = PutRequest {
                    key: key.as_str().into(),
                    value: value.as_str().into(),
                    ..Default::default()
                };
                let ret = client.put(&req).await.ok().map(|_| rec.now());
                rec.history.lock().unwrap().push(Operation {
                    client: id,
                    key,
                    call,
                    ret,
                    kind: OpKind::Write { value },
                });
            }
            _ => {
                let new = format!("c{id}-{n}");
                let expected = last_seen[reg].clone();
                let compare = match &expected {
                    Some(v) => Compare {
                        key: key.as_str().into(),
                        target: CompareTarget::Value,
                        value: Some(v.as_str().into()),
                        ..Default::default()
                    },
                    None => Compare {
                        key: key.as_str().into(),
                        target: CompareTarget::Create,
                        create_revision: Some(I64(0)),
                        ..Default::default()
                    },
                };
                let put = PutRequest {
                    key: key.as_str().into(),
                    value: new.as_str().into(),
                    ..Default::default()
                };
                let req = TxnRequest {
                    compare: vec![compare],
                    success: vec![RequestOp {
                        request_put: Some(put),
                        ..Default::default()
                    }],
                    failure: vec![],
                };
                let (ret, succeeded) = match client.txn(&req).await {
                    Ok(r) => (Some(rec.now()), r.succeeded),
                    Err(_) => (None, false),
                };
                if succeeded {
                    last_seen[reg] = Some(new.clone());
                }
                let kind = OpKind::Cas {
                    expected,
                    new,
                    succeeded,
                };
                rec.history.lock().unwrap().push(Operation {
                    client: id,
                    key,
                    call,
                    ret,
                    kind,
                });
            }
        }
    }
}

/// (revision, key, value or "<deleted>") of every event a watcher saw.
type Seen = Vec<(i64, String, String)>;

async fn watch_loop(urls: Vec<String>, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut next = 1i64;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let url = urls[i % urls.len()].clone();
        i += 1;
        let client = EtcdClient::new(
            vec![url],
            Some(crate::support::process::TOKEN.into()),
            Duration::from_secs(5),
        );
        let req = WatchCreateRequest {
            key: "reg/".into(),
            range_end: B64Bytes(prefix_end(b"reg/")),
            start_revision: I64(next),
            ..Default::default()
        };
        let Ok(mut stream) = client.watch(&req).await else {
            continue;
        };
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Ordering::Relaxed) { return } else { continue }
                }
            };
            let Ok(Some(msg)) = msg else { break };
            assert!(!msg.canceled, "watch cancelled: {}", msg.cancel_reason);
            let mut seen = seen.lock().unwrap();
            for ev in &msg.events {
                let value = if ev.kind == EventType::Delete {
                    "<deleted>".into()
                } else {
                    s(&ev.kv.value)
                };
                seen.push((ev.kv.mod_revision.0, s(&ev.kv.key), value));
            }
            if !msg.events.is_empty() {
                next = msg.header.revision.0 + 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_the_leader_under_load_loses_nothing_and_stays_linearizable() {
    let mut cluster = Cluster::start(3, "redb");
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        history: Mutex::default(),
        acked: Mutex::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watcher = tokio::spawn(watch_loop(cluster.urls(), stop.clone(), seen.clone()));
    let clients: Vec<_> = (0..6)
        .map(|id| tokio::spawn(client_loop(id, cluster.client(), rec.clone(), stop.clone())))
        .collect();

    let mut failovers = Vec::new();
    for trial in 0..KILLS {
        let leader = cluster.leader(Duration::from_secs(30)).await;
        let acked_before = rec.acked.lock().unwrap().len();
        let killed_at = Instant::now();
        cluster.nodes[leader].kill9();
        // The survivors elect a new leader and acknowledge writes again.
        eventually(
            Duration::from_secs(30),
            "writes acknowledged after the kill",
            || {
                let rec = rec.clone();
                async move { rec.acked.lock().unwrap().len() > acked_before + 5 }
            },
        )
        .await;
        failovers.push(killed_at.elapsed());
        cluster.nodes[leader].restart();
        let url = cluster.nodes[leader].url.clone();
        eventually(
            Duration::from_secs(30),
            "restarted node has a leader",
            || {
                let url = url.clone();
                async move {
                    reqwest::get(format!("{url}/readyz"))
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        println!(
            "trial {trial}: killed node {leader}, writes resumed after {:?}",
            failovers.last().unwrap()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    watcher.await.unwrap();

    // 1. Every acknowledged write is on every replica.
    let acked = rec.acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load generated too few writes ({})",
        acked.len()
    );
    let target = cluster.client().status().await.unwrap().header.revision;
    for n in &cluster.nodes {
        let c = n.client();
        eventually(Duration::from_secs(30), "replica caught up", || {
            let c = c.clone();
            async move { c.status().await.is_ok_and(|s| s.header.revision >= target) }
        })
        .await;
        let all = c
            .range(&RangeRequest {
                key: "ack/".into(),
                range_end: B64Bytes(prefix_end(b"ack/")),
                keys_only: true,
                serializable: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let present: BTreeSet<String> = all.kvs.iter().map(|kv| s(&kv.key)).collect();
        let lost: Vec<_> = acked.difference(&present).take(5).collect();
        assert!(
            lost.is_empty(),
            "{}: acknowledged writes missing: {lost:?}",
            n.url
        );
    }

    // 2. The register/CAS history is linearizable.
    let history = rec.history.lock().unwrap().clone();
    assert!(
        history.len() > 100,
        "too few register operations ({})",
        history.len()
    );
    if let Err(v) = check(&history) {
        panic!(
            "history of {} operations is not linearizable: {v}",
            history.len()
        );
    }

    // 3. The watch stream equals the committed history of reg/ (ordered, no gap, no duplicate).
    let seen = seen.lock().unwrap().clone();
    let last = seen.last().map_or(0, |e| e.0);
    let c = cluster.client();
    let mut full = c
        .watch(&WatchCreateRequest {
            key: "reg/".into(),
            range_end: B64Bytes(prefix_end(b"reg/")),
            start_revision: I64(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut truth: Seen = Vec::new();
    while truth.last().map_or(0, |e| e.0) < last {
        let msg = tokio::time::timeout(Duration::from_secs(10), full.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for ev in &msg.events {
            let value = if ev.kind == EventType::Delete {
                "<deleted>".into()
            } else {
                s(&ev.kv.value)
            };
            truth.push((ev.kv.mod_revision.0, s(&ev.kv.key), value));
        }
    }
    assert!(!seen.is_empty(), "the watcher saw nothing");
    assert_eq!(
        seen.len(),
        truth.len(),
        "watch stream has a gap or a duplicate"
    );
    assert_eq!(
        seen, truth,
        "watch stream differs from the committed history"
    );
    let worst = failovers.iter().max().unwrap();
    println!(
        "{} register ops, {} acked writes, {} watch events; worst failover {worst:?}",
        history.len(),
        acked.len(),
        seen.len()
    );
}

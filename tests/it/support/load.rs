//! The concurrent register load of the fault tests (kill -9 in `failover.rs`, network
//! partitions in `partition.rs`) and the checks over what it recorded: clients doing
//! blind writes, reads and compare-and-swaps on a few registers (`reg/N`) plus
//! acknowledged-write markers (`ack/…`), a watcher of `reg/`, then "every acknowledged
//! write is on every replica", "the history is linearizable" and "the watch stream is the
//! committed history, in order, without gaps".

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::etcd::*;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::support::linearizability::{OpKind, Operation, check};
use crate::support::poll::eventually;
use crate::support::process::{StoreProc, TOKEN};

/// Registers the clients work on.
pub const REGISTERS: usize = 3;

pub fn s(b: &B64Bytes) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

/// What the clients did: the register history and the acknowledged `ack/` keys.
pub struct Recorder {
    start: Instant,
    pub history: Mutex<Vec<Operation>>,
    pub acked: Mutex<BTreeSet<String>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            history: Mutex::default(),
            acked: Mutex::default(),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// One client: random operations through `client` until `stop`. An operation in flight
/// when `stop` fires finishes (or fails) and is recorded: dropping it would leave a write
/// the checker does not know about. `seed` picks the operations.
pub async fn client_loop(
    id: u64,
    seed: u64,
    client: EtcdClient,
    rec: Arc<Recorder>,
    stop: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9));
    let mut last_seen: Vec<Option<String>> = vec![None; REGISTERS];
    let mut n = 0u64;
    while !stop.is_cancelled() {
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
                let (ret, succeeded) = match client.txn(&cas(&key, &expected, &new)).await {
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

/// `key` := `new` if its value is `expected` (`None`: if it does not exist).
fn cas(key: &str, expected: &Option<String>, new: &str) -> TxnRequest {
    let compare = match expected {
        Some(v) => Compare {
            key: key.into(),
            target: CompareTarget::Value,
            value: Some(v.as_str().into()),
            ..Default::default()
        },
        None => Compare {
            key: key.into(),
            target: CompareTarget::Create,
            create_revision: Some(I64(0)),
            ..Default::default()
        },
    };
    let put = PutRequest {
        key: key.into(),
        value: new.into(),
        ..Default::default()
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request_put: Some(put),
            ..Default::default()
        }],
        failure: vec![],
    }
}

/// (revision, key, value or "<deleted>") of every event a watcher saw.
pub type Seen = Vec<(i64, String, String)>;

fn event_of(ev: &Event) -> (i64, String, String) {
    let value = if ev.kind == EventType::Delete {
        "<deleted>".into()
    } else {
        s(&ev.kv.value)
    };
    (ev.kv.mod_revision.0, s(&ev.kv.key), value)
}

/// Watches `reg/` until `stop`, through each of `urls` in turn: when a stream ends it
/// resumes on the next node from the revision after the last event seen.
pub async fn watch_loop(urls: Vec<String>, stop: CancellationToken, seen: Arc<Mutex<Seen>>) {
    let mut next = 1i64;
    let mut i = 0usize;
    while !stop.is_cancelled() {
        let url = urls[i % urls.len()].clone();
        i += 1;
        let client = EtcdClient::new(vec![url], Some(TOKEN.into()), Duration::from_secs(5));
        let req = WatchCreateRequest {
            key: "reg/".into(),
            range_end: B64Bytes(prefix_end(b"reg/")),
            start_revision: I64(next),
            ..Default::default()
        };
        let opened = tokio::select! {
            o = client.watch(&req) => o,
            _ = stop.cancelled() => return,
        };
        let Ok(mut stream) = opened else {
            continue;
        };
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = stop.cancelled() => return,
            };
            let Ok(Some(msg)) = msg else { break };
            assert!(!msg.canceled, "watch cancelled: {}", msg.cancel_reason);
            seen.lock().unwrap().extend(msg.events.iter().map(event_of));
            if !msg.events.is_empty() {
                next = msg.header.revision.0 + 1;
            }
        }
    }
}

/// Every acknowledged `ack/` key is on every node once it has applied `revision`.
pub async fn assert_acked_on_every_node(
    nodes: &[StoreProc],
    acked: &BTreeSet<String>,
    revision: I64,
) {
    for n in nodes {
        let c = n.client();
        eventually(Duration::from_secs(30), "replica caught up", || {
            let c = c.clone();
            async move {
                c.status()
                    .await
                    .is_ok_and(|s| s.header.revision >= revision)
            }
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
}

/// The register/CAS history is linearizable.
pub fn assert_linearizable(history: &[Operation]) {
    if let Err(v) = check(history) {
        panic!(
            "history of {} operations is not linearizable: {v}",
            history.len()
        );
    }
}

/// The watch stream a watcher saw equals the committed history of `reg/` up to its last
/// event, read again from revision 1 through `client`: ordered, no gap, no duplicate.
pub async fn assert_watch_is_history(client: &EtcdClient, seen: &Seen) {
    assert!(!seen.is_empty(), "the watcher saw nothing");
    let last = seen.last().map_or(0, |e| e.0);
    let mut full = client
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
        truth.extend(msg.events.iter().map(event_of));
    }
    assert_eq!(
        seen.len(),
        truth.len(),
        "watch stream has a gap or a duplicate"
    );
    assert_eq!(
        *seen, truth,
        "watch stream differs from the committed history"
    );
}

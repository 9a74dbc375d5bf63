//! Cluster behaviour over the simulated network: elections, forwarding, partitions,
//! snapshots, restarts, linearizable reads, leases, the fenced mutex, CAS updates,
//! watches, and seeded random fault schedules.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::{EventKind, KeyRange, PutRequest, RequestOp, StoreError, WatchMessage, WatchRequest};
use tokio_util::sync::CancellationToken;

use super::harness::{Cluster, WAIT, fast_timing, metrics};
use crate::concurrency::{Mutex, Session};
use crate::error::KvError;
use crate::kv::{Ctx, Kv};
use crate::timing::Timing;

async fn put(kv: &Kv, key: &str, value: &str) -> i64 {
    kv.put(PutRequest::new(key, value))
        .await
        .unwrap_or_else(|e| panic!("put {key} through node {}: {e}", kv.node_id()))
        .revision
}

/// A linearizable read of one key's value.
async fn value(kv: &Kv, key: &str) -> Option<String> {
    kv.get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key} on node {}: {e}", kv.node_id()))
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

/// Node `i`'s local (serializable) value of `key`.
async fn local_value(c: &Cluster, i: usize, key: &str) -> Option<String> {
    let (_, kvs) = c.dump(i).await;
    kvs.into_iter()
        .find(|kv| kv.key == key.as_bytes())
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

fn others(c: &Cluster, i: usize) -> Vec<usize> {
    c.all().into_iter().filter(|&j| j != i).collect()
}

/// Puts through the given nodes in turn until one acknowledges; returns the revision.
async fn put_until_acked(c: &Cluster, through: &[usize], key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    for attempt in 0.. {
        let i = through[attempt % through.len()];
        if let Some(node) = c.try_node(i) {
            match node.kv().put(PutRequest::new(key, value)).await {
                Ok(r) => return r.revision,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{key} was never acknowledged: {e}"
                ),
            }
        }
        // Back off before retrying a failed request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_serve_writes_from_any_node() {
    let c = Cluster::start(3, Timing::test()).await;
    let leader = c.wait_leader(&c.all(), WAIT).await;
    let ms: Vec<_> = c.all().iter().map(|&i| metrics(&c.node(i))).collect();
    let leaders: Vec<_> = ms
        .iter()
        .filter(|m| m.state == ServerState::Leader)
        .map(|m| m.id)
        .collect();
    assert_eq!(leaders, vec![c.id(leader)], "exactly one leader");
    for m in &ms {
        assert_eq!(m.current_leader, Some(c.id(leader)));
        assert_eq!(m.current_term, ms[0].current_term);
        assert_eq!(m.membership_config.membership().voter_ids().count(), 3);
    }
    for st in c.all().iter().map(|&i| c.node(i).status()) {
        assert_eq!(st.voters.len(), 3);
        assert_eq!(st.cluster_id, c.node(0).cluster_id());
        assert_ne!(st.cluster_id, 0);
    }

    // One write through every node: the leader's locally, the followers' forwarded.
    for i in c.all() {
        put(
            &c.kv(i),
            &format!("k/{}", i + 1),
            &format!("from {}", i + 1),
        )
        .await;
    }
    for reader in c.all() {
        let kv = c.kv(reader);
        for writer in c.all() {
            assert_eq!(
                value(&kv, &format!("k/{}", writer + 1)).await,
                Some(format!("from {}", writer + 1)),
                "node {} reads node {}'s write",
                reader + 1,
                writer + 1
            );
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_its_writes_never_commit() {
    let c = Cluster::start(3, fast_timing()).await;
    let old = c.wait_leader(&c.all(), WAIT).await;
    put(&c.kv(old), "before", "1").await;

    c.isolate(old);
    let majority = others(&c, old);
    let new = c.wait_leader(&majority, WAIT).await;
    assert_ne!(new, old);
    for &i in &majority {
        put(&c.kv(i), &format!("after/{}", i + 1), "1").await;
    }

    // The old leader can neither commit a write nor serve a stale linearizable read.
    let old_kv = c.kv(old);
    let after_key = format!("after/{}", new + 1);
    let (stale_write, stale_read) = tokio::join!(
        old_kv.put(PutRequest::new("stale", "x")),
        old_kv.get(after_key.clone())
    );
    assert!(
        stale_write.is_err(),
        "a write on an isolated leader was acknowledged: {stale_write:?}"
    );
    if let Ok(v) = stale_read {
        assert!(
            v.is_some(),
            "an isolated old leader served a stale linearizable read"
        );
    }

    c.heal();
    c.wait_converged(WAIT).await;
    for i in c.all() {
        let kv = c.kv(i);
        assert_eq!(value(&kv, "stale").await, None, "node {}", i + 1);
        assert_eq!(local_value(&c, i, "stale").await, None, "node {}", i + 1);
        assert_eq!(value(&kv, "before").await.as_deref(), Some("1"));
        for &j in &majority {
            assert_eq!(
                value(&kv, &format!("after/{}", j + 1)).await.as_deref(),
                Some("1")
            );
        }
    }
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot() {
    let timing = Timing {
        snapshot_every: 50,
        keep_logs_after_snapshot: 10,
        ..Timing::test()
    };
    let c = Cluster::start(3, timing).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let f = (l + 1) % 3;
    let fm = metrics(&c.node(f));
    assert_eq!(fm.snapshot, None, "the follower has no snapshot yet");
    let f_last = fm.last_log_index.unwrap();

    c.isolate(f);
    let leader = c.node(l);
    for k in 0..120 {
        put(&leader.kv(), &format!("snap/{k:03}"), &k.to_string()).await;
    }
    // Snapshot everything applied (an automatic build may be running: retry the trigger).
    let applied = metrics(&leader).last_applied.unwrap().index;
    let deadline = Instant::now() + WAIT;
    let snap = loop {
        leader.raft().trigger().snapshot().await.unwrap();
        let m = leader
            .raft()
            .wait(Some(Duration::from_secs(1)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "leader snapshot",
            )
            .await;
        if let Ok(m) = m {
            break m.snapshot.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the leader never built a snapshot"
        );
    };
    assert!(snap.index > f_last + 100);
    leader.raft().trigger().purge_log(snap.index).await.unwrap();
    leader
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= snap.index),
            "leader purges its log",
        )
        .await
        .unwrap();

    c.heal();
    let fnode = c.node(f);
    let installed = fnode
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index > f_last),
            "follower installs a snapshot",
        )
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert!(
        installed.index >= snap.index,
        "the follower's snapshot {installed} covers the leader's purged log up to {snap}"
    );
    c.wait_converged(WAIT).await;
    c.assert_replicas_equal().await;
    let (rev, kvs) = c.dump(f).await;
    assert_eq!(rev, leader.mvcc().revision());
    assert_eq!(kvs.len(), 120);
    for (k, kv) in kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("snap/{k:03}").into_bytes());
        assert_eq!(kv.value, k.to_string().into_bytes());
    }
    // The follower serves new writes normally after the install.
    put(&fnode.kv(), "after-install", "1").await;
    assert_eq!(
        value(&fnode.kv(), "after-install").await.as_deref(),
        Some("1")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_keeps_its_data_and_catches_up() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let f = (l + 1) % 3;
    for k in 0..5 {
        put(&c.kv(f), &format!("old/{k}"), "o").await;
    }
    c.wait_converged(WAIT).await;

    c.crash(f).await;
    for k in 0..20 {
        put(&c.kv(l), &format!("new/{k:02}"), "n").await;
    }
    // Restart it cut off from the others: whatever it serves comes from its own engine.
    c.isolate(f);
    c.restart(f).await;
    for k in 0..5 {
        assert_eq!(
            local_value(&c, f, &format!("old/{k}")).await.as_deref(),
            Some("o")
        );
    }
    assert_eq!(local_value(&c, f, "new/00").await, None);

    c.heal();
    c.wait_converged(WAIT).await;
    for k in 0..20 {
        assert_eq!(
            local_value(&c, f, &format!("new/{k:02}")).await.as_deref(),
            Some("n")
        );
        assert_eq!(
            value(&c.kv(f), &format!("new/{k:02}")).await.as_deref(),
            Some("n")
        );
    }
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_read_after_leader_change_sees_acknowledged_writes() {
    let c = Cluster::start(3, fast_timing()).await;

    // A crashed leader.
    let l = c.wait_leader(&c.all(), WAIT).await;
    for k in 0..30 {
        put(&c.kv(k % 3), &format!("lin/{k:02}"), &k.to_string()).await;
    }
    c.crash(l).await;
    let survivors = others(&c, l);
    let reads = survivors.iter().map(|&i| {
        let kv = c.kv(i);
        async move { kv.get_prefix("lin/").await.unwrap() }
    });
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.count, 30, "a read after the leader change misses writes");
        for (k, kv) in r.kvs.iter().enumerate() {
            assert_eq!(kv.value, k.to_string().into_bytes());
        }
    }

    // An isolated leader, right after more acknowledged writes.
    c.restart(l).await;
    c.wait_converged(WAIT).await;
    let l2 = c.wait_leader(&c.all(), WAIT).await;
    for k in 30..60 {
        put(&c.kv(k % 3), &format!("lin/{k:02}"), &k.to_string()).await;
    }
    c.isolate(l2);
    let majority = others(&c, l2);
    let reads = majority.iter().map(|&i| {
        let kv = c.kv(i);
        async move { kv.get_prefix("lin/").await.unwrap() }
    });
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.count, 60, "a read after the leader change misses writes");
    }
    c.heal();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_without_keepalives_and_lives_with_them() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let kv = c.kv((l + 1) % 3);
    let (id, ttl) = kv.lease_grant(2, 0).await.unwrap();
    assert_eq!(ttl, 2);
    kv.put(PutRequest {
        lease: id,
        ..PutRequest::new("leased", "v")
    })
    .await
    .unwrap();

    // Kept alive for more than twice its TTL, it stays.
    let until = Instant::now() + Duration::from_secs(ttl as u64 * 2 + 1);
    let mut last_keepalive = Instant::now();
    while Instant::now() < until {
        assert_eq!(kv.lease_keepalive(id).await.unwrap(), ttl);
        last_keepalive = Instant::now();
        assert!(
            value(&kv, "leased").await.is_some(),
            "a kept-alive lease expired"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    // Without keepalives it expires within TTL + 2 s, and not before its TTL.
    let limit = Duration::from_secs(ttl as u64 + 2);
    loop {
        if value(&kv, "leased").await.is_none() {
            break;
        }
        assert!(
            last_keepalive.elapsed() < limit,
            "the lease outlived its TTL + 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = last_keepalive.elapsed();
    assert!(
        gone_after >= Duration::from_millis(ttl as u64 * 1000 - 300),
        "the lease expired after {gone_after:?}, before its TTL"
    );
    assert!(gone_after < limit);
    assert_eq!(kv.lease_time_to_live(id).await.unwrap().ttl, -1);
    for i in c.all() {
        assert_eq!(value(&c.kv(i), "leased").await, None);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_lease_survives_a_leader_crash() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let s = (l + 1) % 3;
    let kv = c.kv(s);
    let (id, ttl) = kv.lease_grant(2, 0).await.unwrap();
    let rev = kv
        .put(PutRequest {
            lease: id,
            ..PutRequest::new("held", "v")
        })
        .await
        .unwrap()
        .revision;
    let mut watch = kv.watch(WatchRequest {
        range: KeyRange::key("held"),
        start_revision: rev + 1,
        ..WatchRequest::default()
    });

    // A client keeps the lease alive through the surviving follower.
    let stop = CancellationToken::new();
    let successes = Arc::new(StdMutex::new(Vec::<Instant>::new()));
    let client = {
        let (kv, stop, successes) = (kv.clone(), stop.clone(), successes.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
                match kv.lease_keepalive(id).await {
                    Ok(_) => successes.lock().unwrap().push(Instant::now()),
                    Err(KvError::Store(StoreError::LeaseNotFound(_))) => {
                        return Err("the lease was lost");
                    }
                    Err(_) => {}
                }
            }
        })
    };

    c.crash(l).await;
    let survivors = others(&c, l);
    c.wait_leader(&survivors, WAIT).await;
    let elected = Instant::now();
    // A new leader gives every lease TTL + one election timeout from its promotion; if the
    // keepalives did not reach it the key would be gone within this window.
    let observe = Duration::from_secs(ttl as u64) + c.timing.election_max + Duration::from_secs(1);
    let changed = tokio::time::timeout(observe, watch.recv()).await;
    assert!(
        changed.is_err(),
        "the kept-alive key changed across the leader change: {changed:?}"
    );
    stop.cancel();
    client.await.unwrap().unwrap();
    assert!(
        successes.lock().unwrap().iter().any(|t| *t > elected),
        "no keepalive reached the new leader"
    );
    let t = kv.lease_time_to_live(id).await.unwrap();
    assert!(t.ttl > 0, "{t:?}");
    assert_eq!(t.keys, vec![b"held".to_vec()]);
    for &i in &survivors {
        assert!(value(&c.kv(i), "held").await.is_some());
    }

    // The new leader does expire it once the keepalives stop.
    let stopped = Instant::now();
    match tokio::time::timeout(
        Duration::from_secs(ttl as u64 + 2) + c.timing.election_max,
        watch.recv(),
    )
    .await
    {
        Ok(Some(WatchMessage::Events { events, .. })) => {
            assert_eq!(events[0].kind, EventKind::Delete);
        }
        other => panic!(
            "the lease did not expire {:?} after the keepalives stopped: {other:?}",
            stopped.elapsed()
        ),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_mutex_hands_over_on_revoke_and_rejects_stale_fence() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    let s1 = Session::new(&c.kv(a), 2).await.unwrap();
    let s2 = Session::new(&c.kv(b), 2).await.unwrap();
    let m = Mutex::new("locks/job");
    let ctx = Ctx::timeout(WAIT);
    let f1 = m.lock(&ctx, &s1).await.unwrap();

    let mut second = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let f2 = Mutex::new("locks/job").lock(&ctx, &s2).await;
            (f2, s2)
        })
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "the second session got the lock while the first holds it"
    );
    let guarded = |v: &str| vec![RequestOp::Put(PutRequest::new("guarded", v))];
    let r = c
        .kv(a)
        .txn_if_lock_held(&f1, vec![], guarded("by-1"))
        .await
        .unwrap();
    assert!(r.succeeded);

    // The first holder's session ends: its lock key goes with the lease.
    c.kv(a).lease_revoke(s1.lease()).await.unwrap();
    let (f2, s2) = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    let f2 = f2.unwrap();
    assert!(f2.token > f1.token, "{f2:?} after {f1:?}");

    match c
        .kv(a)
        .txn_if_lock_held(&f1, vec![], guarded("stale"))
        .await
    {
        Err(KvError::LockLost { token, .. }) => assert_eq!(token, f1.token),
        other => panic!("a write fenced by a lost lock was not refused: {other:?}"),
    }
    let r = c
        .kv(b)
        .txn_if_lock_held(&f2, vec![], guarded("by-2"))
        .await
        .unwrap();
    assert!(r.succeeded);
    for i in c.all() {
        assert_eq!(value(&c.kv(i), "guarded").await.as_deref(), Some("by-2"));
    }
    // The first session notices that its lease is gone.
    tokio::time::timeout(WAIT, s1.done().cancelled())
        .await
        .unwrap();
    m.unlock(&s2, &f2).await.unwrap();
    s2.close().await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_retries_cas_conflicts_until_every_increment_lands() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let updaters = [l, (l + 1) % 3].map(|i| {
        let kv = c.kv(i);
        tokio::spawn(async move {
            let ctx = Ctx::timeout(Duration::from_secs(60));
            let mut written = Vec::new();
            for _ in 0..20 {
                let v = kv
                    .update(&ctx, "counter", |cur| {
                        let n: u64 = cur.map_or(0, |kv| {
                            std::str::from_utf8(&kv.value).unwrap().parse().unwrap()
                        });
                        Some((n + 1).to_string().into_bytes())
                    })
                    .await
                    .unwrap()
                    .unwrap();
                written.push(String::from_utf8(v).unwrap().parse::<u64>().unwrap());
            }
            written
        })
    });
    let mut all = Vec::new();
    for u in updaters {
        all.extend(u.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=40).collect::<Vec<u64>>(),
        "each update wrote its own value"
    );
    for i in c.all() {
        assert_eq!(value(&c.kv(i), "counter").await.as_deref(), Some("40"));
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_follower_is_ordered_and_gap_free_across_leader_changes() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let f = (l + 1) % 3;
    let mut acked: Vec<(i64, String)> = Vec::new();
    let mut n = 0;
    let mut write = async |c: &Cluster, through: &[usize], acked: &mut Vec<(i64, String)>| {
        for _ in 0..10 {
            let key = format!("w/{n:03}");
            n += 1;
            let rev = put_until_acked(c, through, &key, "v").await;
            acked.push((rev, key));
        }
    };
    write(&c, &[f], &mut acked).await;
    // Watch from the first write: the follower replays history, then follows live.
    let start = acked[0].0;
    let mut watch = c.kv(f).watch(WatchRequest {
        range: KeyRange::prefix("w/"),
        start_revision: start,
        ..WatchRequest::default()
    });

    // Leader change 1: the leader crashes.
    c.crash(l).await;
    write(&c, &[f], &mut acked).await;
    c.restart(l).await;
    c.wait_converged(WAIT).await;

    // Leader change 2: the current leader (maybe the watching node) is isolated.
    let l2 = c.wait_leader(&c.all(), WAIT).await;
    c.isolate(l2);
    write(&c, &others(&c, l2), &mut acked).await;
    c.heal();
    c.wait_converged(WAIT).await;
    write(&c, &[f], &mut acked).await;

    let last = acked.last().unwrap().0;
    let mut seen: Vec<(i64, Vec<u8>)> = Vec::new();
    while seen.last().is_none_or(|(r, _)| *r < last) {
        match tokio::time::timeout(WAIT, watch.recv()).await {
            Ok(Some(WatchMessage::Events { revision, events })) => {
                for e in events {
                    assert_eq!(e.kv.mod_revision, revision);
                    assert_eq!(e.kind, EventKind::Put);
                    seen.push((revision, e.kv.key));
                }
            }
            Ok(Some(WatchMessage::Progress { .. })) => {}
            other => panic!("watch ended or stalled at {:?}: {other:?}", seen.last()),
        }
    }
    // Every revision of the store since `start` is a put under w/: the watch must deliver
    // each one, once, in order.
    let revs: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revs,
        (start..=last).collect::<Vec<_>>(),
        "ordered and gap-free"
    );
    let seen: HashMap<i64, Vec<u8>> = seen.into_iter().collect();
    for (rev, key) in &acked {
        assert_eq!(
            seen.get(rev),
            Some(&key.clone().into_bytes()),
            "acknowledged {key} at {rev}"
        );
    }
    c.wait_converged(WAIT).await;
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

const COUNTER: &str = "counter";

#[derive(Default)]
struct Acked {
    incrs: Vec<u64>,
    puts: Vec<(String, String)>,
}

fn sim_seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("CAIRN_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("CAIRN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3usize);
    (0..count).map(|_| rand::random()).collect()
}

/// ~`duration` of random isolate/heal/crash/restart steps under concurrent writers, then
/// every acknowledged write must be on every replica.
async fn run_fault_schedule(seed: u64, duration: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let timing = Timing {
        snapshot_every: 100,
        keep_logs_after_snapshot: 20,
        ..fast_timing()
    };
    let c = Arc::new(Cluster::start(3, timing).await);
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (c, stop) = (c.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            tokio::spawn(async move {
                let mut acked = Acked::default();
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    let i = rng.gen_range(0..c.len());
                    let Some(node) = c.try_node(i) else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let kv = node.kv();
                    let bound = Duration::from_secs(5);
                    let ok = if rng.gen_bool(0.5) {
                        match tokio::time::timeout(bound, kv.incr(COUNTER, 1)).await {
                            Ok(Ok(v)) => {
                                acked.incrs.push(v);
                                true
                            }
                            _ => false,
                        }
                    } else {
                        n += 1;
                        let (key, value) = (format!("w{w}/{n:06}"), format!("{seed}/{w}/{n}"));
                        match tokio::time::timeout(
                            bound,
                            kv.put(PutRequest::new(key.clone(), value.clone())),
                        )
                        .await
                        {
                            Ok(Ok(_)) => {
                                acked.puts.push((key, value));
                                true
                            }
                            _ => false,
                        }
                    };
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                acked
            })
        })
        .collect();

    let end = Instant::now() + duration;
    let (mut crashed, mut isolated): (Option<usize>, Option<usize>) = (None, None);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..700))).await;
        let i = rng.gen_range(0..c.len());
        match rng.gen_range(0..4) {
            0 if isolated.is_none() => {
                println!("  isolate node {}", i + 1);
                c.isolate(i);
                isolated = Some(i);
            }
            1 if isolated.is_some() => {
                println!("  heal");
                c.heal();
                isolated = None;
            }
            2 if crashed.is_none() => {
                println!("  crash node {}", i + 1);
                c.crash(i).await;
                crashed = Some(i);
            }
            3 if crashed.is_some() => {
                let j = crashed.take().unwrap();
                println!("  restart node {}", j + 1);
                c.restart(j).await;
            }
            _ => {}
        }
    }
    stop.cancel();
    let mut acked = Acked::default();
    for w in writers {
        let a = w.await.unwrap();
        acked.incrs.extend(a.incrs);
        acked.puts.extend(a.puts);
    }
    println!(
        "  acknowledged {} incrs and {} puts",
        acked.incrs.len(),
        acked.puts.len()
    );

    c.heal();
    if let Some(j) = crashed {
        c.restart(j).await;
    }
    c.wait_converged(Duration::from_secs(30)).await;
    print!("{}", c.describe());
    c.assert_replicas_equal().await;

    let distinct: BTreeSet<u64> = acked.incrs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        acked.incrs.len(),
        "seed {seed}: two acknowledged incrs returned the same value"
    );
    for i in c.all() {
        let (_, kvs) = c.dump(i).await;
        let data: HashMap<String, String> = kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap(),
                )
            })
            .collect();
        for (k, v) in &acked.puts {
            assert_eq!(
                data.get(k),
                Some(v),
                "seed {seed}: acknowledged put {k} missing on node {}",
                i + 1
            );
        }
        let counter: u64 = data.get(COUNTER).map_or(0, |v| v.parse().unwrap());
        assert!(
            counter >= acked.incrs.len() as u64,
            "seed {seed}: node {} counter {counter} < {} acknowledged incrs",
            i + 1,
            acked.incrs.len()
        );
        assert!(
            distinct.last().is_none_or(|max| counter >= *max),
            "seed {seed}: node {} counter {counter} below an acknowledged value",
            i + 1
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_random_faults_lose_no_acknowledged_write() {
    for seed in sim_seeds() {
        println!("cairn sim seed {seed} (rerun with CAIRN_SIM_SEED={seed})");
        run_fault_schedule(seed, Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_keys_guards_every_key_read_and_ends_at_once_on_a_lost_fence() {
    let c = Cluster::start(1, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let kv = c.kv(l);
    let ctx = Ctx::timeout(WAIT);
    let session = Session::new(&kv, 2).await.unwrap();
    let m = Mutex::new("locks/keys");
    let fence = m.lock(&ctx, &session).await.unwrap();

    // Two keys read, one written from both: a change to the other key between the read
    // and the write makes it re-read.
    let mut calls = 0;
    let updated = kv
        .update_keys(
            &ctx,
            &[b"a".to_vec(), b"b".to_vec()],
            Some(&fence),
            |current| {
                calls += 1;
                if calls == 1 {
                    let other = kv.clone();
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async move {
                            other.put(PutRequest::new("b", "changed")).await.unwrap();
                        })
                    });
                }
                let b = current[1]
                    .as_ref()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .unwrap_or_default();
                let op = RequestOp::Put(PutRequest::new("a", format!("saw {b}")));
                Ok::<_, KvError>(Some((crate::Write::ops(vec![op]), b)))
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(updated.value, "changed");
    assert_eq!(value(&kv, "a").await.as_deref(), Some("saw changed"));

    // Once the lock is released, the fence is stale: a lost lock, not a retry until
    // the deadline.
    m.unlock(&session, &fence).await.unwrap();
    let started = Instant::now();
    let stale = kv
        .update_keys(&ctx, &[b"a".to_vec()], Some(&fence), |_| {
            let op = RequestOp::Put(PutRequest::new("a", "stale"));
            Ok::<_, KvError>(Some((crate::Write::ops(vec![op]), ())))
        })
        .await;
    assert!(matches!(stale, Err(KvError::LockLost { .. })), "{stale:?}");
    assert!(started.elapsed() < WAIT, "ended at once");
    assert_eq!(value(&kv, "a").await.as_deref(), Some("saw changed"));
    session.close().await.unwrap();
    c.shutdown().await;
}

/// Security review H2: Raft messages and proposals from a node outside the membership, and
/// votes with an absurd term, are refused before openraft sees them; members pass.
#[tokio::test]
async fn peer_requests_from_strangers_and_absurd_terms_are_refused() {
    use openraft::raft::VoteRequest;

    use crate::rpc::{PeerRequest, PeerResponse, Refusal};
    use crate::types::Vote;

    let c = Cluster::start(1, Timing::test()).await;
    let n = c.node(0);
    let me = n.id();
    let term = metrics(&n).current_term;
    let stranger = me ^ 1;
    let vote = |t: u64, from| PeerRequest::Vote(VoteRequest::new(Vote::new(t, from), None));
    let refused = |r: PeerResponse| match r {
        PeerResponse::Refused(why) => why,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        refused(n.handler().handle(vote(term + 1, stranger)).await),
        Refusal::NotAMember(stranger)
    );
    let propose = PeerRequest::Propose {
        from: stranger,
        cmd: store::Command::LeaseRevoke { id: 1 },
    };
    assert_eq!(
        refused(n.handler().handle(propose).await),
        Refusal::NotAMember(stranger)
    );
    assert!(matches!(
        refused(n.handler().handle(vote(u64::MAX, me)).await),
        Refusal::AbsurdTerm { .. }
    ));
    // A member's vote request reaches openraft (and is answered, granted or not).
    assert!(matches!(
        n.handler().handle(vote(term, me)).await,
        PeerResponse::Vote(_)
    ));
    assert_eq!(metrics(&n).current_term, term);
    c.shutdown().await;
}

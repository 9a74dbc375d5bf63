//! Store alarms across a cluster (`crate::alarms`): a `NOSPACE` alarm raised through one
//! node is replicated, every node then refuses writes that may grow the store (before
//! proposing, and in the state machine for a write already in flight) while reads,
//! deletes and compaction go on, and a disarm resumes writes everywhere.
#![allow(clippy::unwrap_used)]

use store::{
    AlarmMember, AlarmType, Command, CommandResult, DeleteRangeRequest, KeyRange, PutRequest,
    StoreError,
};

use super::harness::{Cluster, WAIT, eventually, fast_timing};
use crate::error::KvError;

fn nospace(err: Result<impl std::fmt::Debug, KvError>) {
    match err {
        Err(KvError::Store(StoreError::NoSpace)) => {}
        other => panic!("expected the NOSPACE refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_raised_on_one_node_refuses_writes_on_every_node_until_disarmed() {
    let c = Cluster::start(3, fast_timing()).await;
    let leader = c.wait_leader(&c.all(), WAIT).await;
    let follower = (leader + 1) % c.len();
    for i in c.all() {
        c.kv(i)
            .put(PutRequest::new(format!("k{i}"), "before"))
            .await
            .unwrap();
    }
    let member = AlarmMember {
        member_id: c.id(follower),
        alarm: AlarmType::NoSpace,
    };
    let active = c.kv(follower).alarm_activate(member).await.unwrap();
    assert_eq!(active, vec![member]);
    for i in c.all() {
        let node = c.node(i);
        eventually(WAIT, "the alarm to reach every node", || {
            node.mvcc().alarms().contains(&member).then_some(())
        })
        .await;
    }

    for i in c.all() {
        let kv = c.kv(i);
        nospace(kv.put(PutRequest::new("new", "x")).await);
        nospace(kv.lease_grant(30, 0).await);
        nospace(kv.incr("seq", 1).await);
        assert_eq!(
            kv.alarms().await.unwrap(),
            vec![member],
            "node {i} lists it"
        );
        // Reads and deletes go on.
        let got = kv.get(format!("k{i}")).await.unwrap().unwrap();
        assert_eq!(got.value, b"before");
        kv.delete_range(DeleteRangeRequest {
            range: KeyRange::key(format!("k{i}")),
            prev_kv: false,
        })
        .await
        .unwrap();
    }
    // A write that passed the check before the alarm was applied is refused by the state
    // machine itself, on every replica alike.
    let raw = c
        .node(leader)
        .raft()
        .client_write(Command::Put(PutRequest::new("raw", "x")))
        .await
        .unwrap();
    assert_eq!(raw.data, CommandResult::Error(StoreError::NoSpace));
    let compacted = c.kv(leader).compact(c.node(leader).mvcc().revision()).await;
    assert!(compacted.is_ok(), "{compacted:?}");

    // Disarmed through a node other than the one that raised it.
    let other = (follower + 1) % c.len();
    assert_eq!(c.kv(other).alarm_disarm(member).await.unwrap(), vec![]);
    c.wait_converged(WAIT).await;
    for i in c.all() {
        assert_eq!(c.node(i).mvcc().alarms(), vec![], "node {i}");
        c.kv(i)
            .put(PutRequest::new(format!("after{i}"), "x"))
            .await
            .unwrap();
    }
    // The last put is acknowledged once the leader applied it: wait for the others.
    c.wait_converged(WAIT).await;
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_disarms_its_own_alarm_once_a_probe_write_to_its_data_dir_succeeds() {
    let c = Cluster::start(1, fast_timing()).await;
    let member = AlarmMember {
        member_id: c.id(0),
        alarm: AlarmType::NoSpace,
    };
    c.kv(0).alarm_activate(member).await.unwrap();
    nospace(c.kv(0).put(PutRequest::new("k", "v")).await);
    // The data dir gone: the probe write fails and the alarm stays.
    let snapshot_dir = c.data_dir(0).join("snapshot");
    let moved = c.data_dir(0).with_extension("moved");
    std::fs::rename(c.data_dir(0), &moved).unwrap();
    match c.kv(0).alarm_disarm(member).await {
        Err(KvError::AlarmCause(why)) => assert!(why.contains("probe"), "{why}"),
        other => panic!("expected a refusal naming the probe, got {other:?}"),
    }
    std::fs::rename(&moved, c.data_dir(0)).unwrap();
    assert!(snapshot_dir.exists());
    assert_eq!(c.kv(0).alarm_disarm(member).await.unwrap(), vec![]);
    c.kv(0).put(PutRequest::new("k", "v")).await.unwrap();
    c.shutdown().await;
}

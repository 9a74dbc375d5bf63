//! Learners (`--join --learner`): a non-voting member replicates every write and serves
//! reads, serializable ones from its own state even when cut off from the others, but
//! never counts toward quorum; promote and demote move a member between the two roles,
//! and the changes that make no sense are refused.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use openraft::ServerState;
use store::{KeyRange, PutRequest, RangeRequest};

use super::harness::{Cluster, WAIT, eventually, metrics};
use crate::error::KvError;
use crate::timing::Timing;

fn voters(c: &Cluster, i: usize) -> usize {
    metrics(&c.node(i))
        .membership_config
        .membership()
        .voter_ids()
        .count()
}

/// Node `i`'s own copy of `key`, without a barrier.
async fn serializable(c: &Cluster, i: usize, key: &str) -> Option<String> {
    let mut req = RangeRequest::new(KeyRange::key(key));
    req.serializable = true;
    let resp = c.kv(i).range(req).await.unwrap();
    resp.kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

/// Two voters and one learner (index 2).
async fn two_voters_and_a_learner() -> Cluster {
    let mut c = Cluster::start(2, Timing::test()).await;
    let l = c.open_node().await;
    let joined = c.node(l).join_as_learner(c.addr(0), WAIT).await.unwrap();
    assert_eq!(joined.voters.len(), 2, "the learner is no voter");
    eventually(WAIT, "the learner to know it is one", || {
        (metrics(&c.node(l)).state == ServerState::Learner).then_some(())
    })
    .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_replicates_and_serves_serializable_reads_even_when_cut_off() {
    let c = two_voters_and_a_learner().await;
    c.kv(0).put(PutRequest::new("k", "v1")).await.unwrap();
    // A write through the learner is forwarded to the leader like any other.
    c.kv(2)
        .put(PutRequest::new("k2", "via-learner"))
        .await
        .unwrap();
    c.wait_converged(WAIT).await;
    assert_eq!(serializable(&c, 2, "k").await.as_deref(), Some("v1"));
    // A linearizable read on the learner goes through the leader's read index.
    let got = c.kv(2).get("k2").await.unwrap().unwrap();
    assert_eq!(got.value, b"via-learner");

    c.isolate(2);
    assert_eq!(
        serializable(&c, 2, "k").await.as_deref(),
        Some("v1"),
        "served from the learner's own state"
    );
    // The voters go on without it: it was never part of their quorum.
    c.kv(0).put(PutRequest::new("k", "v2")).await.unwrap();
    c.heal();
    c.wait_converged(WAIT).await;
    assert_eq!(serializable(&c, 2, "k").await.as_deref(), Some("v2"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_never_counts_toward_quorum_until_promoted() {
    let c = two_voters_and_a_learner().await;
    let leader = c.wait_leader(&[0, 1], WAIT).await;
    let follower = 1 - leader;
    // Two of three nodes are up, but only one of two voters: no write may commit.
    c.crash(follower).await;
    let put = PutRequest::new("unsure", "x");
    let refused = tokio::time::timeout(Duration::from_secs(3), c.kv(leader).put(put)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a write committed with one voter of two and a learner: {refused:?}"
    );
    c.restart(follower).await;
    let leader = c.wait_leader(&[0, 1], WAIT).await;
    c.kv(leader)
        .put(PutRequest::new("after", "1"))
        .await
        .unwrap();

    // Promoted, the learner is a voter: now one voter of three may be lost.
    let learner_id = c.id(2);
    c.node(follower).promote(learner_id).await.unwrap();
    eventually(WAIT, "three voters", || {
        (voters(&c, leader) == 3).then_some(())
    })
    .await;
    let leader = c.wait_leader(&c.all(), WAIT).await;
    let down = if leader == 0 { 1 } else { 0 };
    c.crash(down).await;
    let up: Vec<usize> = c.up();
    let leader = c.wait_leader(&up, WAIT).await;
    c.kv(leader)
        .put(PutRequest::new("with-two-of-three", "1"))
        .await
        .unwrap();
    c.restart(down).await;
    c.wait_converged(WAIT).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_makes_a_voter_a_learner_and_senseless_changes_are_refused() {
    let c = two_voters_and_a_learner().await;
    let leader = c.wait_leader(&[0, 1], WAIT).await;
    let follower = 1 - leader;
    let learner_id = c.id(2);
    let follower_id = c.id(follower);

    let e = c.node(leader).demote(learner_id).await.unwrap_err();
    assert!(
        matches!(e, KvError::Membership(ref m) if m.contains("learner, not a voter")),
        "{e}"
    );
    let e = c.node(leader).promote(c.id(leader)).await.unwrap_err();
    assert!(
        matches!(e, KvError::Membership(ref m) if m.contains("already a voter")),
        "{e}"
    );
    let e = c.node(leader).promote(424242).await.unwrap_err();
    assert!(matches!(e, KvError::UnknownNode(424242)), "{e}");

    // Through a follower: the request goes to the leader.
    c.node(2).demote(follower_id).await.unwrap();
    eventually(WAIT, "one voter", || {
        (voters(&c, leader) == 1).then_some(())
    })
    .await;
    eventually(WAIT, "the demoted node to be a learner", || {
        (metrics(&c.node(follower)).state == ServerState::Learner).then_some(())
    })
    .await;
    let e = c.node(leader).demote(c.id(leader)).await.unwrap_err();
    assert!(
        matches!(e, KvError::Membership(ref m) if m.contains("last voter")),
        "{e}"
    );
    // The demoted node keeps replicating.
    c.kv(leader)
        .put(PutRequest::new("k", "after-demote"))
        .await
        .unwrap();
    c.wait_converged(WAIT).await;
    assert_eq!(
        serializable(&c, follower, "k").await.as_deref(),
        Some("after-demote")
    );
    c.shutdown().await;
}

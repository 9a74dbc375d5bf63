//! Snapshots sent as files, chunk by chunk: a node joining after the log was purged, a
//! lagging follower, corrupt and truncated chunks refused by the receiver, and a restart
//! after an install. The ignored `measure_*` tests print the peak RSS growth of an install.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use openraft::raft::InstallSnapshotRequest;
use store::{KeyRange, PutRequest, RangeRequest, RequestOp, TxnRequest};

use super::harness::{Cluster, WAIT, metrics};
use crate::network::PeerHandler;
use crate::node::Node;
use crate::rpc::{PeerRequest, PeerResponse, Refusal};
use crate::snapshot_intake::ChunkRefusal;
use crate::timing::{SNAPSHOT_CHUNK, Timing};
use crate::types::{LogId, TypeConfig};

/// Keys of 1 KiB put in transactions of `per_txn`, named `{prefix}/{n:05}`.
async fn fill(node: &Node, prefix: &str, keys: usize) {
    let per_txn = 100;
    for first in (0..keys).step_by(per_txn) {
        let success = (first..(first + per_txn).min(keys))
            .map(|n| RequestOp::Put(PutRequest::new(format!("{prefix}/{n:05}"), value(n))))
            .collect();
        node.kv()
            .txn(TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            })
            .await
            .unwrap();
    }
}

fn value(n: usize) -> Vec<u8> {
    let mut v = vec![(n % 251) as u8; 1024];
    v[..8].copy_from_slice(&(n as u64).to_be_bytes());
    v
}

/// Builds a snapshot of everything the leader applied and purges its log up to it.
async fn snapshot_and_purge(leader: &Node) -> LogId {
    leader
        .snapshot_and_purge(WAIT)
        .await
        .expect("a snapshot and a purge")
}

async fn wait_installed(node: &Node, at_least: u64, what: &str) -> LogId {
    node.raft()
        .wait(Some(WAIT * 3))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= at_least), what)
        .await
        .unwrap()
        .snapshot
        .unwrap()
}

/// A linearizable read of every key under `prefix` on `node`, checked against [`value`].
async fn assert_serves(node: &Node, prefix: &str, keys: usize) {
    let resp = node
        .kv()
        .range(RangeRequest::new(KeyRange::prefix(format!("{prefix}/"))))
        .await
        .unwrap();
    assert_eq!(resp.kvs.len(), keys, "keys under {prefix}/");
    for (n, kv) in resp.kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("{prefix}/{n:05}").into_bytes());
        assert!(kv.value == value(n), "value of {prefix}/{n:05}");
    }
}

fn current_snapshot_len(c: &Cluster, i: usize) -> u64 {
    std::fs::metadata(c.data_dir(i).join("snapshot/current"))
        .unwrap()
        .len()
}

fn quiet_timing() -> Timing {
    // No automatic snapshot in the way: the tests trigger them.
    Timing {
        snapshot_every: 1_000_000,
        keep_logs_after_snapshot: 10,
        ..Timing::test()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_the_purge_gets_the_snapshot_file_and_survives_a_restart() {
    const KEYS: usize = 20_000;
    let mut c = Cluster::start(2, quiet_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let leader = c.node(l);
    fill(&leader, "big", KEYS).await;
    let snap = snapshot_and_purge(&leader).await;
    let sent = current_snapshot_len(&c, l);
    assert!(
        sent > 20 * SNAPSHOT_CHUNK,
        "a snapshot of {sent} bytes takes many chunks"
    );

    let joined = c.add_node(l).await;
    let node = c.node(joined);
    let installed = wait_installed(&node, snap.index, "the new node installs a snapshot").await;
    assert_eq!(installed, snap);
    assert_eq!(
        std::fs::read(c.data_dir(joined).join("snapshot/current")).unwrap(),
        std::fs::read(c.data_dir(l).join("snapshot/current")).unwrap(),
        "the installed snapshot is kept as the node's own, byte for byte"
    );
    assert_serves(&node, "big", KEYS).await;
    c.wait_converged(WAIT).await;
    c.assert_replicas_equal().await;

    // Killed after the install, it restarts from its engine and snapshot and catches up.
    c.crash(joined).await;
    leader
        .kv()
        .put(PutRequest::new("while-down", "1"))
        .await
        .unwrap();
    c.restart(joined).await;
    let node = c.node(joined);
    node.raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.map(|s| s.index) == Some(snap.index),
            "the restarted node knows its snapshot",
        )
        .await
        .unwrap();
    c.wait_converged(WAIT).await;
    assert_serves(&node, "big", KEYS).await;
    assert!(node.kv().get("while-down").await.unwrap().is_some());
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_by_a_snapshot_of_many_chunks() {
    const KEYS: usize = 4_000;
    let c = Cluster::start(3, quiet_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let f = (l + 1) % 3;
    c.isolate(f);
    let leader = c.node(l);
    fill(&leader, "lag", KEYS).await;
    let snap = snapshot_and_purge(&leader).await;
    assert!(current_snapshot_len(&c, l) > 3 * SNAPSHOT_CHUNK);
    // The isolated follower's elections raise its term; after the heal that can hand the
    // leadership to the third node. It must not hold the log either, or the lagging
    // follower would catch up by entries, not by the snapshot this test is about (a
    // flake seen under load).
    let third = c.node(3 - l - f);
    let third_snap = snapshot_and_purge(&third).await;

    c.heal();
    let follower = c.node(f);
    let at_least = snap.index.min(third_snap.index);
    wait_installed(&follower, at_least, "the follower installs a snapshot").await;
    c.wait_converged(WAIT).await;
    c.assert_replicas_equal().await;
    assert_serves(&follower, "lag", KEYS).await;
    c.shutdown().await;
}

/// The chunks of the leader's current snapshot file as its Raft would send them.
fn chunks(
    c: &Cluster,
    leader: &Node,
    l: usize,
    size: usize,
) -> Vec<InstallSnapshotRequest<TypeConfig>> {
    let bytes = std::fs::read(c.data_dir(l).join("snapshot/current")).unwrap();
    let (meta, _) = crate::snapshot_file::parse_header(&bytes).unwrap();
    let vote = metrics(leader).vote;
    bytes
        .chunks(size)
        .enumerate()
        .map(|(k, data)| InstallSnapshotRequest {
            vote,
            meta: meta.clone(),
            offset: (k * size) as u64,
            data: data.to_vec(),
            done: (k + 1) * size >= bytes.len(),
        })
        .collect()
}

async fn send(h: &dyn PeerHandler, req: InstallSnapshotRequest<TypeConfig>) -> PeerResponse {
    h.handle(PeerRequest::Snapshot(req)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_snapshot_is_refused_and_leaves_the_receiver_intact() {
    let c = Cluster::start(3, quiet_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let f = (l + 1) % 3;
    let leader = c.node(l);
    fill(&leader, "v1", 300).await;
    c.wait_converged(WAIT).await;
    snapshot_and_purge(&leader).await;
    // The follower moves on; the snapshot sent below is of an older state.
    fill(&leader, "v2", 10).await;
    c.wait_converged(WAIT).await;
    let follower = c.node(f);
    let before = (c.dump(f).await, metrics(&follower).snapshot);
    let handler = follower.handler();
    let size = 64 << 10;

    // A byte flipped in transit: refused at the last chunk, never installed.
    let mut flipped = chunks(&c, &leader, l, size);
    let n = flipped.len();
    flipped[n / 2].data[100] ^= 0x01;
    for (k, req) in flipped.into_iter().enumerate() {
        let resp = send(handler.as_ref(), req).await;
        if k + 1 < n {
            assert!(
                matches!(resp, PeerResponse::Snapshot(Ok(_))),
                "chunk {k}: {resp:?}"
            );
        } else {
            let PeerResponse::Refused(Refusal::SnapshotChunk(ChunkRefusal::Corrupt {
                why, ..
            })) = &resp
            else {
                panic!("a corrupt snapshot was not refused: {resp:?}");
            };
            assert!(why.contains("checksum mismatch"), "{why}");
            assert!(
                resp_text(&resp).contains("is corrupt"),
                "{}",
                resp_text(&resp)
            );
        }
    }

    // Truncated: the sender stops early and says done.
    let mut short = chunks(&c, &leader, l, size);
    short.truncate(short.len() / 2);
    short.last_mut().unwrap().done = true;
    let mut last = None;
    for req in short {
        last = Some(send(handler.as_ref(), req).await);
    }
    let last = last.unwrap();
    assert!(
        matches!(&last, PeerResponse::Refused(Refusal::SnapshotChunk(ChunkRefusal::Corrupt { why, .. })) if why.contains("truncated") || why.contains("checksum")),
        "{last:?}"
    );

    // A gap and an absurd offset.
    let mut reqs = chunks(&c, &leader, l, size);
    assert!(matches!(
        send(handler.as_ref(), reqs.remove(0)).await,
        PeerResponse::Snapshot(Ok(_))
    ));
    let mut gap = reqs.remove(1);
    let resp = send(handler.as_ref(), gap.clone()).await;
    assert!(
        matches!(
            resp,
            PeerResponse::Refused(Refusal::SnapshotChunk(ChunkRefusal::NotContiguous { .. }))
        ),
        "{resp:?}"
    );
    gap.offset = u64::MAX - 10;
    let resp = send(handler.as_ref(), gap).await;
    assert!(
        matches!(
            resp,
            PeerResponse::Refused(Refusal::SnapshotChunk(
                ChunkRefusal::SnapshotTooLarge { .. }
            ))
        ),
        "{resp:?}"
    );

    assert_eq!(
        (c.dump(f).await, metrics(&follower).snapshot),
        before,
        "the follower is untouched"
    );
    // It still follows the leader.
    leader
        .kv()
        .put(PutRequest::new("after", "1"))
        .await
        .unwrap();
    c.wait_converged(WAIT).await;
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_file_is_refused_by_the_follower_until_the_leader_builds_a_sound_one() {
    const KEYS: usize = 3_000;
    let c = Cluster::start(3, quiet_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let f = (l + 1) % 3;
    c.isolate(f);
    let leader = c.node(l);
    fill(&leader, "bad", KEYS).await;
    snapshot_and_purge(&leader).await;
    // The disk flips a byte in the middle of the leader's snapshot file.
    let path = c.data_dir(l).join("snapshot/current");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let follower = c.node(f);
    let before = (c.dump(f).await, metrics(&follower).snapshot);
    c.heal();
    let deadline = Instant::now() + WAIT;
    while follower.snapshot_chunks_refused().await == 0 {
        assert!(
            Instant::now() < deadline,
            "the corrupt snapshot was never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (c.dump(f).await, metrics(&follower).snapshot),
        before,
        "the follower installed nothing"
    );

    // A new build replaces the file: the follower installs it and catches up.
    fill(&leader, "good", 10).await;
    let snap = snapshot_and_purge(&leader).await;
    wait_installed(
        &follower,
        snap.index,
        "the follower installs the sound snapshot",
    )
    .await;
    c.wait_converged(WAIT).await;
    assert_serves(&follower, "bad", KEYS).await;
    c.assert_replicas_equal().await;
    c.shutdown().await;
}

fn resp_text(resp: &PeerResponse) -> String {
    match resp {
        PeerResponse::Refused(why) => why.to_string(),
        other => format!("{other:?}"),
    }
}

/// A node reading while it joins learns the leader's id (its vote) before the membership
/// that gives the leader's address, which here comes with a many-chunk snapshot. Its
/// read must wait for that, not spin on it: on a one-thread runtime a spin starves the
/// node's own Raft, which must receive the snapshot, and the join never completes (seen:
/// a 4th `cairn serve` node joining a loaded cluster, both runtime workers spinning in
/// the leader lookup, stuck for minutes). A spin blocks this very runtime, timers
/// included, so a watchdog thread aborts the test binary if the join hangs.
#[tokio::test(flavor = "current_thread")]
async fn a_node_reading_while_it_joins_by_snapshot_catches_up_on_a_one_thread_runtime() {
    const KEYS: usize = 5_000;
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(WAIT * 3).is_err() {
            eprintln!("the joining node never caught up: its runtime is spinning");
            std::process::abort();
        }
    });
    let mut c = Cluster::start(2, quiet_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let leader = c.node(l);
    fill(&leader, "big", KEYS).await;
    let snap = snapshot_and_purge(&leader).await;

    let joining = c.open_node().await;
    let node = c.node(joining);
    let kv = node.kv();
    let reader = tokio::spawn(async move {
        loop {
            // Linearizable: through the leader, once this node knows where it is.
            if let Ok(Some(_)) = kv.get("big/00000").await {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    let via = c.addr(l).to_string();
    node.join(&via, WAIT).await.expect("joined");
    wait_installed(&node, snap.index, "the new node installs the snapshot").await;
    reader.await.expect("the joined node answers reads");
    assert_serves(&node, "big", KEYS).await;
    done.send(()).expect("the watchdog waits");
    watchdog.join().expect("the watchdog ends");
}

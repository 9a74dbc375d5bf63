//! The fenced mutex hands a dead holder's lock on at once: the next in line probes the
//! holder's node and, when it refuses connections or was restarted (it answers, but its
//! process holds no such session), revokes the holder's session instead of waiting out
//! its lease. A live holder is never preempted, and a key whose address is
//! no member's (anyone may write one) is never probed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use store::{PutRequest, RequestOp};

use crate::kv::Kv;

use super::harness::{Cluster, WAIT, fast_timing};
use crate::concurrency::{Fence, Mutex, Session};
use crate::error::KvError;
use crate::kv::Ctx;
use tokio::task::JoinHandle;

/// Far longer than [`WAIT`]: a lock that moves within `WAIT` did not wait for the lease.
const LONG_TTL: i64 = 600;

/// A 3-node cluster with the lock held by a session on follower `a` and a session on
/// follower `b` waiting for it (`second` ends with its lock and its session).
struct Contest {
    c: Cluster,
    /// The leader.
    l: usize,
    a: usize,
    b: usize,
    s1: Session,
    f1: Fence,
    second: JoinHandle<(Result<Fence, KvError>, Session)>,
}

impl Contest {
    async fn start() -> Contest {
        let c = Cluster::start(3, fast_timing()).await;
        let l = c.wait_leader(&c.all(), WAIT).await;
        let (a, b) = ((l + 1) % 3, (l + 2) % 3);
        let s1 = Session::new(&c.kv(a), LONG_TTL).await.unwrap();
        let s2 = Session::new(&c.kv(b), LONG_TTL).await.unwrap();
        let ctx = Ctx::timeout(WAIT * 3);
        let f1 = Mutex::new("locks/sched").lock(&ctx, &s1).await.unwrap();
        let second = tokio::spawn(async move {
            let f2 = Mutex::new("locks/sched").lock(&ctx, &s2).await;
            (f2, s2)
        });
        Contest {
            c,
            l,
            a,
            b,
            s1,
            f1,
            second,
        }
    }
}

/// The waiting contender's lock, which must come long before the holder's lease ends.
async fn moved_on(
    second: JoinHandle<(Result<Fence, KvError>, Session)>,
) -> (Result<Fence, KvError>, Session) {
    tokio::time::timeout(WAIT * 2, second)
        .await
        .expect("the lock moved on before the holder's 600 s lease ended")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lock_moves_on_long_before_its_lease_would_end() {
    let Contest {
        c,
        l,
        a,
        b: _,
        s1,
        f1,
        second,
    } = Contest::start().await;

    // The holder's process dies: its node refuses every connection from now on.
    c.crash(a).await;
    let (f2, s2) = moved_on(second).await;
    let f2 = f2.unwrap();
    assert!(f2.token > f1.token);
    // The dead holder's fence is void: a write it had queued is refused.
    let stale = vec![RequestOp::Put(PutRequest::new("guarded", "stale"))];
    match c.kv(l).txn_if_lock_held(&f1, vec![], stale).await {
        Err(KvError::LockLost { token, .. }) => assert_eq!(token, f1.token),
        other => panic!("a write fenced by the dead holder's lock: {other:?}"),
    }
    drop(s1);
    s2.close().await.unwrap();
    c.shutdown().await;
}

/// Issue 14's chaos test: a scheduler holder killed and restarted within a second or
/// two answered the probes again, so its lock waited out the session's TTL (takeover
/// 4.4 s). The restarted process holds no session: the lock moves on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_and_restarted_loses_its_lock_at_once() {
    let Contest {
        c,
        l: _,
        a,
        b,
        s1,
        f1,
        second,
    } = Contest::start().await;
    // The holder's node goes down and comes back at once: it answers again, but the
    // process that kept the session is gone.
    c.crash(a).await;
    c.restart(a).await;
    drop(s1);
    let (f2, s2) = moved_on(second).await;
    assert!(f2.unwrap().token > f1.token);
    assert!(
        !c.kv(a)
            .peer_lost_session(&c.kv(b).n.addr, s2.lease(), WAIT)
            .await,
        "the new holder's node still keeps its session"
    );
    s2.close().await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_keeps_its_lock_while_others_wait() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    let s1 = Session::new(&c.kv(a), LONG_TTL).await.unwrap();
    let s2 = Session::new(&c.kv(b), LONG_TTL).await.unwrap();
    let m = Mutex::new("locks/sched");
    let ctx = Ctx::timeout(WAIT * 3);
    let f1 = m.lock(&ctx, &s1).await.unwrap();
    let mut second = tokio::spawn(async move {
        let f2 = Mutex::new("locks/sched").lock(&ctx, &s2).await;
        (f2, s2)
    });
    // Many probe rounds: the holder's node answers every one.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut second)
            .await
            .is_err(),
        "the second contender took the lock of a live holder"
    );
    m.unlock(&s1, &f1).await.unwrap();
    let (f2, s2) = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    assert!(f2.unwrap().token > f1.token);
    s1.close().await.unwrap();
    s2.close().await.unwrap();
    c.shutdown().await;
}

/// A client writes a contender key by hand, its value an address outside the cluster:
/// were it probed, the probe would carry the peer secret to that address (and, refused,
/// revoke the writer's lease). It is not probed: the lock waits for the key to go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_naming_an_address_outside_the_cluster_is_never_probed() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    let planted = Session::new(&c.kv(a), LONG_TTL).await.unwrap();
    let kv: Kv = c.kv(a);
    let mut put = PutRequest::new(
        format!("locks/sched/{:x}", planted.lease()),
        "sim://outside-the-cluster",
    );
    put.lease = planted.lease();
    kv.put(put).await.unwrap();
    let s2 = Session::new(&c.kv(b), LONG_TTL).await.unwrap();
    let ctx = Ctx::timeout(WAIT * 3);
    let mut second = tokio::spawn(async move {
        let f2 = Mutex::new("locks/sched").lock(&ctx, &s2).await;
        (f2, s2)
    });
    // The stranger's address refuses every connection in the simulated network: probed,
    // it would be preempted within two probe rounds.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut second)
            .await
            .is_err(),
        "the lock moved on after probing an address outside the cluster"
    );
    c.kv(a).lease_revoke(planted.lease()).await.unwrap();
    let (f2, s2) = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    assert!(f2.is_ok());
    s2.close().await.unwrap();
    c.shutdown().await;
}

//! Leases on real processes: a key on a lease disappears within TTL + 2 s after its
//! holder stops, and a leader change never makes a kept-alive lease expire.

use std::time::{Duration, Instant};

use cairn_client::etcd::*;

use crate::support::poll::eventually;
use crate::support::process::Cluster;

async fn grant(c: &EtcdClient, ttl: i64) -> i64 {
    let g: LeaseGrantResponse = c
        .call(
            "/v3/lease/grant",
            &LeaseGrantRequest {
                ttl: I64(ttl),
                id: I64(0),
            },
        )
        .await
        .unwrap();
    g.id.0
}

async fn keepalive(c: &EtcdClient, id: i64) -> bool {
    c.call::<_, StreamItem<LeaseKeepAliveResponse>>(
        "/v3/lease/keepalive",
        &LeaseIdRequest {
            id: I64(id),
            keys: false,
        },
    )
    .await
    .is_ok()
}

async fn exists(c: &EtcdClient, key: &str) -> bool {
    let r = c
        .range(&RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await;
    r.is_ok_and(|r| !r.kvs.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_disappears_within_ttl_plus_two_seconds_after_keepalives_stop() {
    let cluster = Cluster::start(1, "redb");
    let c = cluster.client();
    let id = grant(&c, 3).await;
    c.put(&PutRequest {
        key: "svc/a".into(),
        value: "up".into(),
        lease: I64(id),
        ..Default::default()
    })
    .await
    .unwrap();
    // Kept alive for longer than its TTL, it stays.
    let until = Instant::now() + Duration::from_secs(5);
    let mut last_keepalive = Instant::now();
    while Instant::now() < until {
        assert!(keepalive(&c, id).await);
        last_keepalive = Instant::now();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(exists(&c, "svc/a").await, "a kept-alive lease expired");
    eventually(Duration::from_secs(10), "the leased key is deleted", || {
        let c = c.clone();
        async move { !exists(&c, "svc/a").await }
    })
    .await;
    let after = last_keepalive.elapsed();
    assert!(
        after <= Duration::from_secs(5),
        "deleted {after:?} after the last keepalive (TTL 3 s + 2 s)"
    );
    assert!(
        after >= Duration::from_millis(2500),
        "expired early: {after:?} after the last keepalive of a 3 s lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_does_not_expire_a_kept_alive_lease() {
    let mut cluster = Cluster::start(3, "redb");
    let c = cluster.client();
    let id = grant(&c, 4).await;
    c.put(&PutRequest {
        key: "svc/b".into(),
        value: "up".into(),
        lease: I64(id),
        ..Default::default()
    })
    .await
    .unwrap();
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster.nodes[leader].kill9();
    // Keep the lease alive through the survivors across the election.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        keepalive(&c, id).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        exists(&c, "svc/b").await,
        "the lease expired because of the leader change"
    );
    let ttl: LeaseTimeToLiveResponse = c
        .call(
            "/v3/lease/timetolive",
            &LeaseIdRequest {
                id: I64(id),
                keys: true,
            },
        )
        .await
        .unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (I64(4), 1));
}

//! Lease checkpoints across leader changes: a lease whose holder stopped renewing it
//! expires about when the old leader would have expired it, not a whole TTL after the
//! change; a lease renewed after a checkpoint is not cut short by that checkpoint.
//!
//! These tests wait on real time where the passage of a lease's time is the property under
//! test (the lease must run part of its TTL before the leader dies); everything else waits
//! for a condition with a deadline.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use store::{EventKind, KeyRange, PutRequest, WatchMessage, WatchRequest, WatchStream};

use super::harness::{Cluster, WAIT, eventually, fast_timing};
use crate::kv::Kv;
use crate::lessor::checkpoint_slack;

/// Lease `id`'s checkpointed remaining TTL in node `i`'s replica of the lease table.
fn checkpoint_on(c: &Cluster, i: usize, id: i64) -> Option<i64> {
    c.node(i)
        .mvcc()
        .lease_records()
        .into_iter()
        .find(|r| r.id == id)
        .and_then(|r| r.remaining_ttl)
}

/// Grants a lease of `ttl` seconds through `kv`, attaches the key `key` to it, and watches
/// that key from the next revision. Returns the lease id, the instant just before the
/// grant was proposed, and the watch.
async fn leased_key(kv: &Kv, ttl: i64, key: &str) -> (i64, Instant, WatchStream) {
    let before_grant = Instant::now();
    let (id, granted) = kv.lease_grant(ttl, 0).await.unwrap();
    assert_eq!(granted, ttl);
    let rev = kv
        .put(PutRequest {
            lease: id,
            ..PutRequest::new(key, "v")
        })
        .await
        .unwrap()
        .revision;
    let watch = kv.watch(WatchRequest {
        range: KeyRange::key(key),
        start_revision: rev + 1,
        ..WatchRequest::default()
    });
    (id, before_grant, watch)
}

/// Waits up to `within` for the watched key's deletion; returns when it was seen, or
/// `None` when the key was still there at the end.
async fn deleted_within(watch: &mut WatchStream, within: Duration) -> Option<Instant> {
    match tokio::time::timeout(within, watch.recv()).await {
        Ok(Some(WatchMessage::Events { events, .. })) => {
            assert_eq!(events[0].kind, EventKind::Delete, "{events:?}");
            Some(Instant::now())
        }
        Ok(other) => panic!("the watch ended or failed: {other:?}"),
        Err(_) => None,
    }
}

/// Issue 14 point 7: the holder of a 20 s lease dies at once; 11 s later its leader dies
/// too. Before checkpoints the new leader gave the lease a whole new TTL (20 s + one
/// election timeout from its promotion, ~32 s after the grant); with the remaining TTL
/// checkpointed it expires near its original deadline (20 s), plus the election and the
/// extension. It never expires before that deadline, and `TimeToLive` on the new leader
/// reports what it will really live, not a new TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lease_expires_near_its_deadline_after_a_leader_crash() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let s = (l + 1) % 3;
    let ttl = 20;
    let (id, before_grant, mut watch) = leased_key(&c.kv(s), ttl, "abandoned").await;
    let deadline = before_grant + Duration::from_secs(ttl as u64);

    // The lease runs for 11 s of its 20 (the property under test), then its leader dies.
    let crash_at = before_grant + Duration::from_secs(11);
    assert!(
        deleted_within(
            &mut watch,
            crash_at.saturating_duration_since(Instant::now())
        )
        .await
        .is_none(),
        "the lease expired before its leader died"
    );
    c.crash(l).await;

    // The new leader's TimeToLive is about what is left until the deadline: at most the
    // checkpoint slack, the extension and a second of rounding more.
    let t = c.kv(s).lease_time_to_live(id).await.unwrap();
    let left = deadline.saturating_duration_since(Instant::now());
    let most = left + Duration::from_secs(checkpoint_slack(ttl) as u64 + 1) + c.timing.election_max;
    assert!(
        Duration::from_secs(t.ttl.max(0) as u64) <= most,
        "TimeToLive says {} s left, {left:?} to the deadline: {t:?}",
        t.ttl
    );
    assert_eq!(t.granted_ttl, ttl);

    // A new leader is elected within the election window, then extends every lease by one
    // election timeout; 4 s on top of that is this test's tolerance for a slow machine.
    let (_, election) = c.timing.election_window();
    let latest = deadline + election + c.timing.election_max + Duration::from_secs(4);
    let gone = deleted_within(&mut watch, latest.saturating_duration_since(Instant::now()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the lease outlived its deadline by more than {:?} after the leader change \
                 (a new leader gave it a whole TTL again?)\n{}",
                latest - deadline,
                c.describe()
            )
        });
    assert!(
        gone >= deadline,
        "the lease expired {:?} before its deadline",
        deadline - gone
    );
    c.shutdown().await;
}

/// A lease renewed after a checkpoint was replicated: the keepalive resets the checkpoint
/// before it is acknowledged, so when the leader dies right after, the new leader gives
/// the lease its whole TTL from the renewal instead of cutting it short at the old
/// checkpoint (which would expire it ~8 s after the renewal here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewed_after_a_checkpoint_is_not_cut_short_by_a_leader_crash() {
    let c = Cluster::start(3, fast_timing()).await;
    let l = c.wait_leader(&c.all(), WAIT).await;
    let s = (l + 1) % 3;
    let ttl = 12;
    let (id, _, mut watch) = leased_key(&c.kv(s), ttl, "renewed").await;

    // The lease runs down until a checkpoint of at most half its TTL is replicated.
    let stale = eventually(
        Duration::from_secs(ttl as u64),
        "a checkpoint of at most half the TTL on a follower",
        || checkpoint_on(&c, s, id).filter(|&r| r <= ttl / 2),
    )
    .await;
    let renewed = Instant::now();
    assert_eq!(c.kv(s).lease_keepalive(id).await.unwrap(), ttl);
    assert_eq!(
        checkpoint_on(&c, l, id),
        None,
        "the renewal was acknowledged before its reset of the checkpoint ({stale} s) applied"
    );
    c.crash(l).await;

    // Whoever leads now starts the lease from its whole TTL after the renewal: nothing
    // deletes the key before `renewed + ttl` (no tolerance needed: the new leader's
    // deadline is later still, by the election and the extension).
    let not_before = renewed + Duration::from_secs(ttl as u64);
    let early = deleted_within(
        &mut watch,
        not_before.saturating_duration_since(Instant::now()),
    )
    .await;
    assert!(
        early.is_none(),
        "the renewed lease expired {:?} after its renewal, cut short by the checkpoint of {stale} s\n{}",
        early.map(|t| t - renewed),
        c.describe()
    );

    // And without further keepalives it does expire.
    let (_, election) = c.timing.election_window();
    let latest = not_before + election + c.timing.election_max + Duration::from_secs(4);
    assert!(
        deleted_within(&mut watch, latest.saturating_duration_since(Instant::now()))
            .await
            .is_some(),
        "the renewed lease never expired"
    );
    c.shutdown().await;
}

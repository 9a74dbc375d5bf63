//! Lease deadlines, kept by the leader only (etcd's "primary lessor").
//!
//! Grants and revokes are Raft entries; keepalives are not: they reset a deadline in the
//! leader's memory. On becoming leader every lease gets a fresh deadline of TTL plus one
//! election timeout, so no lease expires early because of a leader change; on losing
//! leadership all deadlines are dropped. The decisions are plain functions of the lease
//! table and the clock; the loop that proposes expiries lives in [`crate::node`].
//!
//! Every deadline is computed by [`deadline`], which saturates: a TTL from an old store
//! (granted before [`store::command::MAX_LEASE_TTL`] was enforced, up to `i64::MAX`) or a
//! negative one never makes `Instant + Duration` panic (security review H3).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many leases are expired by one proposal.
pub const MAX_EXPIRE_BATCH: usize = 1000;

/// `now + ttl seconds + extend`, never panicking: the TTL is clamped to
/// `0..=MAX_LEASE_TTL`, the sum saturates, and a deadline past what `Instant` can hold
/// is pulled back until it fits (it is then centuries away either way).
pub fn deadline(now: Instant, ttl: i64, extend: Duration) -> Instant {
    let secs = ttl.clamp(0, store::command::MAX_LEASE_TTL).unsigned_abs();
    let mut d = Duration::from_secs(secs).saturating_add(extend);
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

#[derive(Default)]
struct Deadlines {
    primary: bool,
    by_lease: HashMap<i64, Instant>,
}

#[derive(Default)]
pub struct Lessor {
    inner: Mutex<Deadlines>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// This node became leader: every lease lives at least `ttl + extend` from now.
    pub fn promote(&self, leases: &[(i64, i64)], now: Instant, extend: Duration) {
        let mut d = self.lock();
        d.primary = true;
        d.by_lease = leases
            .iter()
            .map(|&(id, ttl)| (id, deadline(now, ttl, extend)))
            .collect();
    }

    /// This node is no longer leader.
    pub fn demote(&self) {
        let mut d = self.lock();
        d.primary = false;
        d.by_lease.clear();
    }

    /// Refreshes a lease; `false` when this node is not the primary.
    pub fn keepalive(&self, id: i64, ttl: i64, now: Instant) -> bool {
        let mut d = self.lock();
        if !d.primary {
            return false;
        }
        d.by_lease.insert(id, deadline(now, ttl, Duration::ZERO));
        true
    }

    /// Seconds left on a lease, as the primary sees it.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<i64> {
        let d = self.lock();
        d.by_lease
            .get(&id)
            .map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as i64)
    }

    /// Reconciles with the lease table (new leases get `now + ttl`, revoked ones are
    /// forgotten) and takes out the leases whose deadline passed, at most
    /// [`MAX_EXPIRE_BATCH`]. Taken leases get a fresh deadline, so a lost proposal is
    /// retried after another TTL rather than in a tight loop.
    pub fn take_expired(&self, leases: &[(i64, i64)], now: Instant) -> Vec<i64> {
        let mut d = self.lock();
        if !d.primary {
            return Vec::new();
        }
        let live: HashMap<i64, i64> = leases.iter().copied().collect();
        d.by_lease.retain(|id, _| live.contains_key(id));
        for (&id, &ttl) in &live {
            d.by_lease
                .entry(id)
                .or_insert_with(|| deadline(now, ttl, Duration::ZERO));
        }
        let mut expired: Vec<i64> = d
            .by_lease
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        expired.truncate(MAX_EXPIRE_BATCH);
        for id in &expired {
            let ttl = live.get(id).copied().unwrap_or(1);
            d.by_lease.insert(*id, deadline(now, ttl, Duration::ZERO));
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_expires_nothing_and_refuses_keepalives() {
        let l = Lessor::default();
        let now = Instant::now();
        assert!(!l.keepalive(1, 5, now));
        assert!(
            l.take_expired(&[(1, 1)], now + Duration::from_secs(100))
                .is_empty()
        );
    }

    #[test]
    fn promotion_extends_every_lease_by_the_election_timeout() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&[(1, 5)], now, Duration::from_secs(2));
        assert!(
            l.take_expired(&[(1, 5)], now + Duration::from_millis(6900))
                .is_empty()
        );
        assert_eq!(
            l.take_expired(&[(1, 5)], now + Duration::from_secs(7)),
            vec![1]
        );
    }

    #[test]
    fn keepalive_pushes_the_deadline_and_revoked_leases_are_forgotten() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&[(1, 5), (2, 5)], now, Duration::ZERO);
        assert!(l.keepalive(1, 5, now + Duration::from_secs(4)));
        let expired = l.take_expired(&[(1, 5), (2, 5)], now + Duration::from_secs(5));
        assert_eq!(expired, vec![2]);
        assert!(
            l.take_expired(&[], now + Duration::from_secs(60))
                .is_empty()
        );
        assert_eq!(l.remaining(1, now + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_lease_granted_while_leader_gets_its_ttl_from_first_sight() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&[], now, Duration::ZERO);
        assert!(l.take_expired(&[(7, 3)], now).is_empty());
        assert_eq!(l.remaining(7, now), Some(3));
        assert_eq!(
            l.take_expired(&[(7, 3)], now + Duration::from_secs(3)),
            vec![7]
        );
    }

    /// H3 (security review): a lease with TTL `i64::MAX` (accepted before the cap, so it may
    /// sit in an existing store) made `now + Duration::from_secs(ttl)` panic the lessor
    /// loop, and no lease expired again. Now its deadline saturates and the others expire.
    #[test]
    fn huge_and_negative_ttls_never_panic_and_other_leases_still_expire() {
        let l = Lessor::default();
        let now = Instant::now();
        let leases = [(1, i64::MAX), (2, 1), (3, i64::MIN), (4, -1)];
        l.promote(&leases, now, Duration::MAX);
        l.demote();
        l.promote(&leases, now, Duration::from_secs(1));
        assert!(l.keepalive(1, i64::MAX, now));
        assert!(l.remaining(1, now).is_some_and(|s| s > 1_000_000_000));
        let expired = l.take_expired(&leases, now + Duration::from_secs(2));
        assert_eq!(
            expired,
            vec![2, 3, 4],
            "the huge lease lives on, the others expire"
        );
        assert!(l.take_expired(&[(5, i64::MAX)], now).is_empty());
    }

    #[test]
    fn a_deadline_saturates_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, 5, Duration::from_secs(1)),
            now + Duration::from_secs(6)
        );
        assert_eq!(deadline(now, -7, Duration::ZERO), now);
        let far = deadline(now, i64::MAX, Duration::MAX);
        assert!(far >= now + Duration::from_secs(1_000_000_000));
    }

    #[test]
    fn demotion_drops_every_deadline() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&[(1, 1)], now, Duration::ZERO);
        l.demote();
        assert!(!l.is_primary());
        assert_eq!(l.remaining(1, now), None);
    }
}

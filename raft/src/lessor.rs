//! Lease deadlines, kept by the leader only (etcd's "primary lessor"), and the
//! checkpoints that carry a lease's remaining TTL across a leader change.
//!
//! Grants and revokes are Raft entries; keepalives are not: they reset a deadline in the
//! leader's memory. On losing leadership all deadlines are dropped. The decisions are
//! plain functions of the lease table and the clock; the loop that proposes expiries and
//! checkpoints lives in [`crate::node`], the keepalive that resets a checkpoint in
//! [`crate::kv`].
//!
//! # Checkpoints (etcd's lease checkpointing)
//!
//! A new leader knows of each lease only what the replicated table says. Without
//! checkpoints that is its TTL, so a lease whose holder died 25 s into a 30 s TTL lived
//! ~32 s more after a leader change. With them:
//!
//! - **Checkpointing.** The leader replicates a lease's remaining TTL (rounded up to a
//!   second, a [`store::Command::LeaseCheckpoint`] entry of at most
//!   [`MAX_CHECKPOINT_BATCH`] leases) once what a new leader would start it from (its last
//!   checkpoint, else its TTL) exceeds the remaining TTL by [`checkpoint_slack`]: a quarter
//!   of the TTL, 2 to 5 s. Leases under [`MIN_CHECKPOINTED_TTL`] are never checkpointed (a
//!   leader change overshoots them by little anyway). A lease renewed regularly is
//!   checkpointed about once per slack between renewals. [`checkpoint_due`] decides.
//! - **Promotion.** On becoming leader a lease gets its checkpointed remaining TTL, or its
//!   TTL when it has none, plus one election timeout (etcd's `Promote` does the same). A
//!   checkpoint is never below the remaining TTL its leader measured, so no lease expires
//!   earlier than the old leader would have expired it, and at most the slack, the
//!   election and the extension later.
//! - **Renewal.** A checkpoint must not outlive a renewal: a new leader would cut the
//!   renewed lease short. So a keepalive of a lease that may carry one (one was read at
//!   promotion or proposed since: the `checkpointed` flag) is acknowledged only once a
//!   checkpoint of the lease's whole TTL, which clears it, is applied ([`Renewal`]; etcd's
//!   `Renew` clears `remainingTTL` the same way). Every checkpoint proposal and every such
//!   reset holds [`Lessor::checkpoint_gate`] from its decision until it is applied, and a
//!   keepalive refreshes the deadline and reads the flag in one step under the lessor's
//!   lock; so a checkpoint taken before a renewal either carries the flag the renewal reads
//!   (and is applied before the renewal's reset), or was taken after the renewal and
//!   carries its fresh remaining TTL. A keepalive whose reset fails answers with the error;
//!   the deadline it refreshed stays, so the lease lives longer on this leader, never
//!   shorter.
//!
//! Every deadline is computed by [`deadline`], which saturates: a TTL from an old store
//! (granted before [`store::command::MAX_LEASE_TTL`] was enforced, up to `i64::MAX`) or a
//! negative one never makes `Instant + Duration` panic (security review H3).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use store::LeaseRecord;

/// At most this many leases are expired by one proposal.
pub const MAX_EXPIRE_BATCH: usize = 1000;

/// At most this many leases are checkpointed by one proposal.
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// Leases with a shorter TTL (seconds) are never checkpointed: a leader change
/// overshoots them by at most their TTL, and checkpointing them would cost an entry every
/// couple of seconds per lease.
pub const MIN_CHECKPOINTED_TTL: i64 = 8;

/// How far (seconds) a lease's last checkpoint may run ahead of its remaining TTL before
/// it is checkpointed again: a quarter of its TTL, at least 2 s and at most 5 s. This is
/// how much longer than its deadline a lease can live after a leader change, on top of
/// the election and the election-timeout extension.
pub fn checkpoint_slack(ttl: i64) -> i64 {
    (ttl / 4).clamp(2, 5)
}

/// The remaining TTL to checkpoint for a lease of `ttl` seconds whose last checkpoint is
/// `checkpoint` and which has `remaining` seconds left on the leader, if one is due:
/// when a new leader would otherwise start it at least [`checkpoint_slack`] too late.
/// Nothing for short leases (below [`MIN_CHECKPOINTED_TTL`]) and for expired ones (their
/// expiry is under way).
pub fn checkpoint_due(ttl: i64, checkpoint: Option<i64>, remaining: i64) -> Option<i64> {
    if ttl < MIN_CHECKPOINTED_TTL || remaining <= 0 {
        return None;
    }
    let known = checkpoint.unwrap_or(ttl).min(ttl);
    let remaining = remaining.min(ttl);
    (known - remaining >= checkpoint_slack(ttl)).then_some(remaining)
}

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

/// Whole seconds from `now` to `deadline`, rounded up (0 once it passed).
fn secs_until(deadline: Instant, now: Instant) -> i64 {
    deadline.saturating_duration_since(now).as_secs_f64().ceil() as i64
}

/// What a keepalive did ([`Lessor::keepalive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// This node is not the primary: nothing was renewed.
    NotPrimary,
    /// Renewed; no checkpoint of the lease is replicated or proposed.
    Renewed,
    /// Renewed in memory, but a checkpoint of the lease may be replicated: acknowledge the
    /// keepalive only once a checkpoint of its whole TTL (a reset) is applied, holding
    /// [`Lessor::checkpoint_gate`], then call [`Lessor::checkpoint_reset`].
    ResetCheckpoint,
}

/// The primary's view of one lease.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    deadline: Instant,
    /// A checkpoint of this lease may be in the replicated table (read at promotion, or
    /// proposed since, even if that proposal failed).
    checkpointed: bool,
}

impl Tracked {
    fn fresh(deadline: Instant) -> Self {
        Self {
            deadline,
            checkpointed: false,
        }
    }
}

#[derive(Default)]
struct Deadlines {
    primary: bool,
    by_lease: HashMap<i64, Tracked>,
}

#[derive(Default)]
pub struct Lessor {
    inner: Mutex<Deadlines>,
    /// Held by a checkpoint proposal and by a keepalive's reset from the decision until
    /// the entry is applied, so their entries apply in decision order (see the module doc).
    checkpoint_gate: tokio::sync::Mutex<()>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// Orders checkpoint proposals and checkpoint resets: hold it from
    /// [`Lessor::take_checkpoints`] (or a [`Renewal::ResetCheckpoint`]) until the entry is
    /// applied or given up on.
    pub fn checkpoint_gate(&self) -> &tokio::sync::Mutex<()> {
        &self.checkpoint_gate
    }

    /// This node became leader: every lease lives at least its checkpointed remaining TTL
    /// (its TTL when it has no checkpoint) plus `extend` from now.
    pub fn promote(&self, leases: &[LeaseRecord], now: Instant, extend: Duration) {
        let mut d = self.lock();
        d.primary = true;
        d.by_lease = leases
            .iter()
            .map(|l| {
                let left = l.remaining_ttl.map_or(l.ttl, |r| r.min(l.ttl));
                let tracked = Tracked {
                    deadline: deadline(now, left, extend),
                    checkpointed: l.remaining_ttl.is_some(),
                };
                (l.id, tracked)
            })
            .collect();
    }

    /// This node is no longer leader.
    pub fn demote(&self) {
        let mut d = self.lock();
        d.primary = false;
        d.by_lease.clear();
    }

    /// Refreshes a lease to `ttl` seconds from `now` and says whether a replicated
    /// checkpoint must be reset before the keepalive is acknowledged. The refresh and the
    /// read of the flag are one step, so no checkpoint decision falls between them.
    pub fn keepalive(&self, id: i64, ttl: i64, now: Instant) -> Renewal {
        let mut d = self.lock();
        if !d.primary {
            return Renewal::NotPrimary;
        }
        let t = d.by_lease.entry(id).or_insert_with(|| Tracked::fresh(now));
        t.deadline = deadline(now, ttl, Duration::ZERO);
        if t.checkpointed {
            Renewal::ResetCheckpoint
        } else {
            Renewal::Renewed
        }
    }

    /// A reset of lease `id`'s checkpoint (proposed under the gate) was applied: until
    /// another checkpoint is taken, a keepalive needs no reset.
    pub fn checkpoint_reset(&self, id: i64) {
        if let Some(t) = self.lock().by_lease.get_mut(&id) {
            t.checkpointed = false;
        }
    }

    /// Seconds left on a lease, as the primary sees it.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<i64> {
        let d = self.lock();
        d.by_lease.get(&id).map(|t| secs_until(t.deadline, now))
    }

    /// Reconciles with the lease table (new leases get `now + ttl`, revoked ones are
    /// forgotten) and takes out the leases whose deadline passed, at most
    /// [`MAX_EXPIRE_BATCH`]. Taken leases get a fresh deadline, so a lost proposal is
    /// retried after another TTL rather than in a tight loop.
    pub fn take_expired(&self, leases: &[LeaseRecord], now: Instant) -> Vec<i64> {
        let mut d = self.lock();
        if !d.primary {
            return Vec::new();
        }
        let live: HashMap<i64, i64> = leases.iter().map(|l| (l.id, l.ttl)).collect();
        d.by_lease.retain(|id, _| live.contains_key(id));
        for (&id, &ttl) in &live {
            d.by_lease
                .entry(id)
                .or_insert_with(|| Tracked::fresh(deadline(now, ttl, Duration::ZERO)));
        }
        let mut expired: Vec<i64> = d
            .by_lease
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        expired.truncate(MAX_EXPIRE_BATCH);
        for id in &expired {
            let ttl = live.get(id).copied().unwrap_or(1);
            if let Some(t) = d.by_lease.get_mut(id) {
                t.deadline = deadline(now, ttl, Duration::ZERO);
            }
        }
        expired
    }

    /// The checkpoints due now ([`checkpoint_due`] for every lease of the table this
    /// primary tracks), at most [`MAX_CHECKPOINT_BATCH`] in the table's order, as
    /// `(id, remaining TTL)`; each is flagged as checkpointed in the same step. Call it
    /// holding [`Lessor::checkpoint_gate`] and keep holding it until the proposal is
    /// applied or given up on.
    pub fn take_checkpoints(&self, leases: &[LeaseRecord], now: Instant) -> Vec<(i64, i64)> {
        let mut d = self.lock();
        if !d.primary {
            return Vec::new();
        }
        let mut due = Vec::new();
        for l in leases {
            if due.len() == MAX_CHECKPOINT_BATCH {
                break;
            }
            let Some(t) = d.by_lease.get_mut(&l.id) else {
                continue;
            };
            if let Some(r) = checkpoint_due(l.ttl, l.remaining_ttl, secs_until(t.deadline, now)) {
                t.checkpointed = true;
                due.push((l.id, r));
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lease table as `Mvcc::lease_records` gives it, from (id, TTL) pairs.
    fn table(leases: &[(i64, i64)]) -> Vec<LeaseRecord> {
        leases
            .iter()
            .map(|&(id, ttl)| LeaseRecord {
                id,
                ttl,
                remaining_ttl: None,
            })
            .collect()
    }

    fn checkpointed(id: i64, ttl: i64, remaining: i64) -> LeaseRecord {
        LeaseRecord {
            id,
            ttl,
            remaining_ttl: Some(remaining),
        }
    }

    #[test]
    fn a_follower_expires_nothing_and_refuses_keepalives() {
        let l = Lessor::default();
        let now = Instant::now();
        assert_eq!(l.keepalive(1, 5, now), Renewal::NotPrimary);
        assert!(
            l.take_expired(&table(&[(1, 1)]), now + Duration::from_secs(100))
                .is_empty()
        );
    }

    #[test]
    fn promotion_extends_every_lease_by_the_election_timeout() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&table(&[(1, 5)]), now, Duration::from_secs(2));
        assert!(
            l.take_expired(&table(&[(1, 5)]), now + Duration::from_millis(6900))
                .is_empty()
        );
        assert_eq!(
            l.take_expired(&table(&[(1, 5)]), now + Duration::from_secs(7)),
            vec![1]
        );
    }

    #[test]
    fn keepalive_pushes_the_deadline_and_revoked_leases_are_forgotten() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&table(&[(1, 5), (2, 5)]), now, Duration::ZERO);
        assert_eq!(
            l.keepalive(1, 5, now + Duration::from_secs(4)),
            Renewal::Renewed
        );
        let expired = l.take_expired(&table(&[(1, 5), (2, 5)]), now + Duration::from_secs(5));
        assert_eq!(expired, vec![2]);
        assert!(
            l.take_expired(&table(&[]), now + Duration::from_secs(60))
                .is_empty()
        );
        assert_eq!(l.remaining(1, now + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_lease_granted_while_leader_gets_its_ttl_from_first_sight() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(&table(&[]), now, Duration::ZERO);
        assert!(l.take_expired(&table(&[(7, 3)]), now).is_empty());
        assert_eq!(l.remaining(7, now), Some(3));
        assert_eq!(
            l.take_expired(&table(&[(7, 3)]), now + Duration::from_secs(3)),
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
        l.promote(&table(&leases), now, Duration::MAX);
        l.demote();
        l.promote(&table(&leases), now, Duration::from_secs(1));
        assert_eq!(l.keepalive(1, i64::MAX, now), Renewal::Renewed);
        assert!(l.remaining(1, now).is_some_and(|s| s > 1_000_000_000));
        let expired = l.take_expired(&table(&leases), now + Duration::from_secs(2));
        assert_eq!(
            expired,
            vec![2, 3, 4],
            "the huge lease lives on, the others expire"
        );
        assert!(l.take_expired(&table(&[(5, i64::MAX)]), now).is_empty());
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
        l.promote(&table(&[(1, 1)]), now, Duration::ZERO);
        l.demote();
        assert!(!l.is_primary());
        assert_eq!(l.remaining(1, now), None);
    }

    #[test]
    fn the_checkpoint_slack_is_a_quarter_of_the_ttl_between_2_and_5_s() {
        assert_eq!(checkpoint_slack(8), 2);
        assert_eq!(checkpoint_slack(10), 2);
        assert_eq!(checkpoint_slack(12), 3);
        assert_eq!(checkpoint_slack(16), 4);
        assert_eq!(checkpoint_slack(30), 5);
        assert_eq!(checkpoint_slack(store::command::MAX_LEASE_TTL), 5);
    }

    #[test]
    fn a_checkpoint_is_due_once_a_new_leader_would_start_the_lease_a_slack_too_late() {
        // 30 s lease, no checkpoint: a new leader would give it 30 s.
        assert_eq!(checkpoint_due(30, None, 30), None);
        assert_eq!(checkpoint_due(30, None, 26), None);
        assert_eq!(checkpoint_due(30, None, 25), Some(25));
        // After a checkpoint of 25, the next one is due at 20.
        assert_eq!(checkpoint_due(30, Some(25), 21), None);
        assert_eq!(checkpoint_due(30, Some(25), 20), Some(20));
        // A renewed lease above its checkpoint is left to the keepalive's reset.
        assert_eq!(checkpoint_due(30, Some(5), 30), None);
        // A remaining TTL above the TTL (the promotion's extension) counts as the TTL.
        assert_eq!(checkpoint_due(30, None, 31), None);
        assert_eq!(checkpoint_due(30, Some(20), 21), None);
        // A 10 s lease: slack 2.
        assert_eq!(checkpoint_due(10, None, 9), None);
        assert_eq!(checkpoint_due(10, None, 8), Some(8));
    }

    #[test]
    fn short_and_expired_leases_are_never_checkpointed() {
        assert_eq!(checkpoint_due(MIN_CHECKPOINTED_TTL - 1, None, 1), None);
        assert_eq!(
            checkpoint_due(MIN_CHECKPOINTED_TTL, None, 1),
            Some(1),
            "the shortest checkpointed TTL"
        );
        assert_eq!(checkpoint_due(30, None, 0), None);
        assert_eq!(checkpoint_due(30, Some(3), -1), None);
    }

    #[test]
    fn promotion_starts_a_checkpointed_lease_from_its_remaining_ttl_plus_the_extension() {
        let l = Lessor::default();
        let now = Instant::now();
        let ext = Duration::from_secs(2);
        let leases = [
            checkpointed(1, 30, 6),
            table(&[(2, 30)])[0].clone(),
            // A checkpoint above the TTL (never written, but harmless) counts as the TTL.
            checkpointed(3, 30, 90),
        ];
        l.promote(&leases, now, ext);
        assert_eq!(l.remaining(1, now), Some(8));
        assert_eq!(l.remaining(2, now), Some(32));
        assert_eq!(l.remaining(3, now), Some(32));
        assert!(
            l.take_expired(&leases, now + Duration::from_millis(7900))
                .is_empty()
        );
        assert_eq!(
            l.take_expired(&leases, now + Duration::from_secs(8)),
            vec![1],
            "the checkpointed lease expires at its remaining TTL + the extension"
        );
    }

    #[test]
    fn take_checkpoints_proposes_the_due_ones_and_flags_them_for_a_reset_on_renewal() {
        let l = Lessor::default();
        let now = Instant::now();
        // Lease 1 (30 s) and lease 2 (10 s) tracked from `now`; lease 3 is too short.
        let leases = table(&[(1, 30), (2, 10), (3, 4)]);
        assert!(l.take_checkpoints(&leases, now).is_empty(), "not primary");
        l.promote(&leases, now, Duration::ZERO);
        assert!(l.take_checkpoints(&leases, now).is_empty());
        assert_eq!(
            l.take_checkpoints(&leases, now + Duration::from_millis(2500)),
            vec![(2, 8)]
        );
        let later = now + Duration::from_secs(5);
        assert_eq!(l.take_checkpoints(&leases, later), vec![(1, 25), (2, 5)]);

        // Both are flagged: their renewals must reset the checkpoint first.
        assert_eq!(l.keepalive(1, 30, later), Renewal::ResetCheckpoint);
        assert_eq!(l.keepalive(3, 4, later), Renewal::Renewed);
        l.checkpoint_reset(1);
        assert_eq!(l.keepalive(1, 30, later), Renewal::Renewed);
        assert_eq!(l.keepalive(2, 10, later), Renewal::ResetCheckpoint);

        // With lease 1's checkpoint reset (applied: none in the table) and lease 2's
        // recorded at 5, a renewed lease 1 is not due again until it ran down by 5 s.
        let applied = vec![
            table(&[(1, 30)])[0].clone(),
            checkpointed(2, 10, 5),
            table(&[(3, 4)])[0].clone(),
        ];
        assert!(l.take_checkpoints(&applied, later).is_empty());
        assert_eq!(
            l.take_checkpoints(&applied, later + Duration::from_secs(5)),
            vec![(1, 25)]
        );
    }

    #[test]
    fn a_checkpoint_read_at_promotion_is_reset_by_the_first_renewal() {
        let l = Lessor::default();
        let now = Instant::now();
        l.promote(
            &[checkpointed(1, 30, 6), table(&[(2, 30)])[0].clone()],
            now,
            Duration::ZERO,
        );
        assert_eq!(l.keepalive(1, 30, now), Renewal::ResetCheckpoint);
        assert_eq!(l.keepalive(2, 30, now), Renewal::Renewed);
        assert_eq!(l.remaining(1, now), Some(30), "renewed in memory at once");
    }

    #[test]
    fn a_lease_renewed_before_the_decision_is_checkpointed_from_its_new_deadline() {
        let l = Lessor::default();
        let now = Instant::now();
        let leases = table(&[(1, 30)]);
        l.promote(&leases, now, Duration::ZERO);
        let t = now + Duration::from_secs(20);
        assert_eq!(l.keepalive(1, 30, t), Renewal::Renewed);
        assert!(
            l.take_checkpoints(&leases, t).is_empty(),
            "10 s left before the renewal, 30 s after it: nothing to checkpoint"
        );
    }

    #[test]
    fn checkpoints_are_bounded_per_proposal() {
        let l = Lessor::default();
        let now = Instant::now();
        let n = MAX_CHECKPOINT_BATCH as i64 + 5;
        let leases: Vec<LeaseRecord> = (1..=n).map(|id| table(&[(id, 30)])[0].clone()).collect();
        l.promote(&leases, now, Duration::ZERO);
        let later = now + Duration::from_secs(10);
        let first = l.take_checkpoints(&leases, later);
        assert_eq!(first.len(), MAX_CHECKPOINT_BATCH);
        assert_eq!(first[0], (1, 20));
        // Once applied, the rest follow.
        let applied: Vec<LeaseRecord> = leases
            .iter()
            .map(|r| {
                if r.id <= MAX_CHECKPOINT_BATCH as i64 {
                    checkpointed(r.id, 30, 20)
                } else {
                    r.clone()
                }
            })
            .collect();
        let rest = l.take_checkpoints(&applied, later);
        assert_eq!(rest.len(), 5);
        assert_eq!(rest[0].0, MAX_CHECKPOINT_BATCH as i64 + 1);
    }
}

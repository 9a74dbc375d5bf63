//! Timing profiles: how fast a cluster notices a dead leader, and how long a request may
//! take. `lan` for data-centre links and disks, `edge` for slow disks and flaky links.

use std::time::Duration;

/// Bytes per chunk a leader sends of a snapshot: one `InstallSnapshot` RPC carries one
/// chunk read from the snapshot file, so this is what a transfer holds in memory on either
/// side (and well under the receiver's [`crate::snapshot_intake::MAX_SNAPSHOT_CHUNK`]).
pub const SNAPSHOT_CHUNK: u64 = 1 << 20;

/// Raft and request timings of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub name: &'static str,
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Default deadline of a client request.
    pub request_timeout: Duration,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Applied entries kept in the log after a snapshot (openraft's
    /// `max_in_snapshot_log_to_keep`), so a briefly lagging follower catches up from the log
    /// rather than by snapshot.
    pub keep_logs_after_snapshot: u64,
}

impl Timing {
    /// LAN: heartbeat 100 ms; a follower calls an election 1–2 s after the last heartbeat
    /// (see [`Timing::election_window`]).
    pub fn lan() -> Self {
        Self {
            name: "lan",
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(10),
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 2_000,
        }
    }

    /// Edge: heartbeat 500 ms, elections 5–10 s after the last heartbeat, for SD cards
    /// and lossy links.
    pub fn edge() -> Self {
        Self {
            name: "edge",
            heartbeat: Duration::from_millis(500),
            election_min: Duration::from_millis(2500),
            election_max: Duration::from_millis(5000),
            request_timeout: Duration::from_secs(30),
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 2_000,
        }
    }

    /// Fast timings for in-process tests.
    pub fn test() -> Self {
        Self {
            name: "test",
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(600),
            request_timeout: Duration::from_secs(10),
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 2_000,
        }
    }

    /// A single node that will never have peers (the embedded store of `cairn run`): it
    /// elects itself quickly at start, so a restart is ready in a fraction of a second.
    pub fn solo() -> Self {
        Self {
            name: "solo",
            heartbeat: Duration::from_millis(25),
            election_min: Duration::from_millis(60),
            election_max: Duration::from_millis(120),
            request_timeout: Duration::from_secs(10),
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 2_000,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lan" => Some(Self::lan()),
            "solo" => Some(Self::solo()),
            "edge" => Some(Self::edge()),
            "test" => Some(Self::test()),
            _ => None,
        }
    }

    /// When a follower that lost its leader calls an election: openraft 0.9 first waits
    /// out the old leader's lease (`election_max`) and then a random election timeout in
    /// `[election_min, election_max]`, so the window is
    /// `[election_max + election_min, 2 × election_max]` after the last heartbeat.
    pub fn election_window(&self) -> (Duration, Duration) {
        (self.election_max + self.election_min, self.election_max * 2)
    }

    /// How long a leader still waits for an `AppendEntries` carrying entries after
    /// openraft's own deadline (the heartbeat interval) has passed, before it may send
    /// those entries again (see `network`): three longest election timeouts (3 s under
    /// `lan`).
    pub fn append_patience(&self) -> Duration {
        self.election_max * 3
    }

    /// The smallest lease TTL granted: ceil(1.5 × the earliest election), as etcd does
    /// with its election timeout, so a lease always outlives a leader change.
    pub fn min_lease_ttl(&self) -> i64 {
        let earliest = self.election_window().0.as_millis() as u64;
        ((earliest * 3).div_ceil(2000) as i64).max(1)
    }

    pub(crate) fn raft_config(&self, cluster: &str) -> openraft::Config {
        openraft::Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK,
            max_payload_entries: 512,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            purge_batch_size: 256,
            ..openraft::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_lease_ttl_is_one_and_a_half_earliest_elections_rounded_up() {
        assert_eq!(Timing::lan().min_lease_ttl(), 3);
        assert_eq!(Timing::edge().min_lease_ttl(), 12);
        assert_eq!(Timing::test().min_lease_ttl(), 2);
    }
}

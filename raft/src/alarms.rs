//! Store alarms on a node (etcd's `v3alarm` and quota): raising `NOSPACE` when this node
//! is short of space, refusing growing writes before they are proposed, listing alarms,
//! and disarming one once its cause is gone.
//!
//! The alarm itself is replicated state (`store::alarm`, `Command::Alarm`): raised by any
//! member, it makes every member refuse what may grow the database, in the state machine
//! and here before proposing. A member is short of space ([`shortage`], pure) when the
//! engine's size on disk plus the write is over its quota ([`Node::set_quota_bytes`];
//! 0 = none; etcd's `backendQuota`), when its data dir's file system has less than
//! [`DISK_RESERVE_BYTES`] free after the write, or when the engine already failed a write
//! for lack of space (`crate::space`). It raises its own alarm when a write that may grow
//! the database finds it short, and from its alarm check, every [`CHECK_EVERY`].
//!
//! Disarming checks the cause where it can: this node's own alarm is cleared only when it
//! is no longer short and a probe file of [`PROBE_BYTES`] can be written and synced in
//! its data dir (redb's file does not shrink when keys are deleted: over the quota, raise
//! it and restart). Another member's alarm is cleared, and that member raises it again
//! within [`CHECK_EVERY`] if its cause remains.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use store::{AlarmAction, AlarmMember, AlarmType, Command, CommandResult, StoreError};

use crate::error::KvError;
use crate::kv::Kv;
use crate::node::{Node, NodeInner};

/// etcd's default storage quota (`--quota-backend-bytes`): 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// Free bytes a node keeps on its data dir's file system: below this it raises `NOSPACE`,
/// so the alarm's own entry, deletes and compactions still fit on the disk.
pub const DISK_RESERVE_BYTES: u64 = 32 << 20;

/// Bytes of the file a disarm writes and syncs to show the disk takes writes again.
pub const PROBE_BYTES: usize = 1 << 20;

/// How often a node checks its space.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why a node is short of space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortage {
    /// The engine's size on disk (plus the write) is over the quota.
    Quota { size: u64, quota: u64 },
    /// The file system would keep less than the reserve free.
    Disk { free: u64, reserve: u64 },
    /// The engine failed a write for lack of space.
    Full,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortage::Quota { size, quota } => write!(
                f,
                "{size} bytes on disk, over the quota of {quota} bytes (raise --quota-bytes and restart)"
            ),
            Shortage::Disk { free, reserve } => write!(
                f,
                "{free} bytes free on the data dir's file system, under the reserve of {reserve} bytes (free space)"
            ),
            Shortage::Full => write!(
                f,
                "the engine failed a write for lack of space (free space, then restart the node)"
            ),
        }
    }
}

/// What a node learned about its space, for [`shortage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// The engine's size on disk.
    pub size: u64,
    /// The quota, 0 = none.
    pub quota: u64,
    /// Free bytes of the data dir's file system (`None`: unknown, not checked).
    pub free: Option<u64>,
    /// Whether the engine failed a write for lack of space.
    pub full: bool,
}

/// Whether a write of `cost` bytes leaves the node short of space, and why (the first
/// cause found: a failed write, then the quota as etcd's `backendQuota.Available` decides
/// it, then the disk reserve).
pub fn shortage(space: Space, cost: u64) -> Option<Shortage> {
    if space.full {
        return Some(Shortage::Full);
    }
    if space.quota > 0 && space.size.saturating_add(cost) > space.quota {
        return Some(Shortage::Quota {
            size: space.size,
            quota: space.quota,
        });
    }
    match space.free {
        Some(free) if free < DISK_RESERVE_BYTES.saturating_add(cost) => Some(Shortage::Disk {
            free,
            reserve: DISK_RESERVE_BYTES,
        }),
        _ => None,
    }
}

fn space_of(inner: &NodeInner) -> Space {
    Space {
        size: inner.engine.size_on_disk(),
        quota: inner.quota_bytes.load(Ordering::Relaxed),
        free: crate::space::free_bytes(&inner.data_dir),
        full: inner.disk_full.load(Ordering::SeqCst),
    }
}

impl Node {
    /// Sets this node's storage quota in bytes of the engine's size on disk (0 = none).
    pub fn set_quota_bytes(&self, bytes: u64) {
        self.inner.quota_bytes.store(bytes, Ordering::Relaxed);
    }

    /// This node's storage quota (0 = none).
    pub fn quota_bytes(&self) -> u64 {
        self.inner.quota_bytes.load(Ordering::Relaxed)
    }
}

impl Kv {
    /// The active alarms (linearizable).
    pub async fn alarms(&self) -> Result<Vec<AlarmMember>, KvError> {
        self.read_barrier().await?;
        Ok(self.n.mvcc.alarms())
    }

    /// Raises `member`'s alarm on every member; returns the active alarms.
    pub async fn alarm_activate(&self, member: AlarmMember) -> Result<Vec<AlarmMember>, KvError> {
        self.alarm(AlarmAction::Activate, member).await
    }

    /// Clears `member`'s alarm once its cause is gone (see the module doc): this node's
    /// own `NOSPACE` alarm stays while it is short of space or cannot write a probe file
    /// ([`KvError::AlarmCause`]). Returns the active alarms.
    pub async fn alarm_disarm(&self, member: AlarmMember) -> Result<Vec<AlarmMember>, KvError> {
        if member.member_id == self.n.id && member.alarm == AlarmType::NoSpace {
            if let Some(why) = shortage(space_of(&self.n), 0) {
                return Err(KvError::AlarmCause(format!(
                    "member {:x}: {why}",
                    self.n.id
                )));
            }
            let dir = self.n.data_dir.clone();
            let probe = tokio::task::spawn_blocking(move || write_probe(&dir))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = probe {
                return Err(KvError::AlarmCause(format!(
                    "member {:x}: a {PROBE_BYTES}-byte probe write to its data dir failed: {e}",
                    self.n.id
                )));
            }
        }
        self.alarm(AlarmAction::Deactivate, member).await
    }

    async fn alarm(
        &self,
        action: AlarmAction,
        member: AlarmMember,
    ) -> Result<Vec<AlarmMember>, KvError> {
        match self
            .propose_unchecked(Command::Alarm { action, member })
            .await?
        {
            CommandResult::Alarm { alarms, .. } => Ok(alarms),
            _ => Err(KvError::OutcomeUnknown("unexpected answer to alarm".into())),
        }
    }

    /// Refuses `cmd` before it is proposed when it may grow the database and a `NOSPACE`
    /// alarm is active, or when it leaves this node short of space (raising this node's
    /// alarm first, as etcd's quota server does).
    pub(crate) async fn check_space(&self, cmd: &Command) -> Result<(), KvError> {
        if !store::alarm::may_grow(cmd) {
            return Ok(());
        }
        if store::alarm::blocked_by(&self.n.mvcc.alarms(), cmd) {
            return Err(StoreError::NoSpace.into());
        }
        let cost = store::codec::encode(cmd).len() as u64;
        let space = space_of(&self.n);
        if let Some(why) = shortage(space, cost) {
            tracing::warn!(shortage = %why, "short of space: raising NOSPACE");
            if !space.full
                && let Err(e) = self.alarm_activate(own_nospace(&self.n)).await
            {
                tracing::warn!(error = %e, "raising the NOSPACE alarm failed; retried by the alarm check");
            }
            return Err(StoreError::NoSpace.into());
        }
        Ok(())
    }
}

/// Writes, syncs and removes a probe file of [`PROBE_BYTES`] in `dir`.
fn write_probe(dir: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = dir.join(".space-probe");
    let written = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

fn own_nospace(inner: &NodeInner) -> AlarmMember {
    AlarmMember {
        member_id: inner.id,
        alarm: AlarmType::NoSpace,
    }
}

/// Every [`CHECK_EVERY`], raises this node's `NOSPACE` alarm when it is short of space and
/// the alarm is not active yet (a quota lowered by a restart, a disk filled by another
/// process, a disarm while the cause remained, or a raise that failed when a write found
/// the node short). A node whose engine failed for lack of space does not propose (its
/// Raft has stopped); it refuses writes locally.
pub(crate) async fn alarm_loop(inner: Arc<NodeInner>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let own = own_nospace(&inner);
        let space = space_of(&inner);
        let Some(why) = shortage(space, 0) else {
            continue;
        };
        if space.full || inner.mvcc.alarms().contains(&own) {
            continue;
        }
        tracing::warn!(shortage = %why, "short of space: raising NOSPACE");
        let kv = Kv { n: inner.clone() };
        if let Err(e) = kv.alarm_activate(own).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed; retried at the next check");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Space = Space {
        size: 100,
        quota: 0,
        free: Some(1 << 40),
        full: false,
    };

    #[test]
    fn a_write_over_the_quota_is_short_and_no_quota_never_is() {
        let q = Space {
            quota: 110,
            ..ROOMY
        };
        assert_eq!(shortage(q, 10), None);
        assert_eq!(
            shortage(q, 11),
            Some(Shortage::Quota {
                size: 100,
                quota: 110
            })
        );
        let none = Space {
            size: u64::MAX,
            ..ROOMY
        };
        assert_eq!(shortage(none, 1 << 30), None, "0 = no quota");
    }

    #[test]
    fn a_write_that_eats_into_the_disk_reserve_is_short() {
        let d = Space {
            free: Some(DISK_RESERVE_BYTES + 10),
            ..ROOMY
        };
        assert_eq!(shortage(d, 10), None);
        assert!(matches!(shortage(d, 11), Some(Shortage::Disk { .. })));
        let unknown = Space {
            free: None,
            ..ROOMY
        };
        assert_eq!(
            shortage(unknown, 1 << 30),
            None,
            "an unreadable free space is not checked"
        );
    }

    #[test]
    fn an_engine_that_failed_for_lack_of_space_is_short_whatever_the_numbers() {
        let f = Space {
            full: true,
            ..ROOMY
        };
        assert_eq!(shortage(f, 0), Some(Shortage::Full));
    }
}

//! Store alarms, etcd's `v3alarm`: a member that runs out of space (its storage quota or
//! its disk) raises a `NOSPACE` alarm through a replicated [`Command::Alarm`], so every
//! member refuses the requests that may grow the database until the alarm is disarmed.
//! Reads, deletes, compaction and lease revocation go on, so space can be freed.
//!
//! The rules are pure ([`blocked_by`], [`may_grow`]): the state machine applies them to
//! every command while an alarm is active (as etcd's capped applier does), and the `raft`
//! crate applies them again before proposing, so a refused write never reaches the log.
//! The active alarms are state-machine state (`Mvcc::alarms`), stored under one metadata
//! key that a snapshot carries; a store (or a snapshot) written before alarms existed has
//! none.

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::kv::{RequestOp, TxnRequest};

/// The kind of an alarm (etcd's `AlarmType`; `NONE` is not a kind here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmType {
    /// Out of space: the storage quota is exceeded or the disk is full.
    NoSpace,
}

impl AlarmType {
    /// etcd's name of the kind (`NOSPACE`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmType::NoSpace => "NOSPACE",
        }
    }
}

/// One raised alarm: which member raised which kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// Raise or clear an alarm (etcd's `AlarmRequest` actions that change state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    Activate,
    Deactivate,
}

/// Whether `cmd` may grow the database: etcd's quota cost is above zero (a put, a txn
/// with a put in either branch, a lease grant; here also a counter increment). Deletes,
/// compaction, lease revocation and expiry and alarm changes never count, so space can
/// always be freed and alarms always disarmed. A batch may grow if any command in it does.
pub fn may_grow(cmd: &Command) -> bool {
    match cmd {
        Command::Put(_) | Command::LeaseGrant { .. } | Command::Incr { .. } => true,
        Command::Txn(t) => txn_may_grow(t),
        Command::Batch(cmds) => cmds.iter().any(may_grow),
        Command::DeleteRange(_)
        | Command::Compact { .. }
        | Command::LeaseRevoke { .. }
        | Command::LeaseExpire { .. }
        | Command::LeaseCheckpoint { .. }
        | Command::Alarm { .. } => false,
    }
}

fn txn_may_grow(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| matches!(op, RequestOp::Put(_)))
}

/// Whether the active `alarms` refuse `cmd` (one command, not a batch: each command of a
/// batch is judged on its own): any `NOSPACE` alarm refuses what [`may_grow`].
pub fn blocked_by(alarms: &[AlarmMember], cmd: &Command) -> bool {
    alarms.iter().any(|a| a.alarm == AlarmType::NoSpace) && may_grow(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{DeleteRangeRequest, KeyRange, PutRequest, RangeRequest};

    fn nospace() -> Vec<AlarmMember> {
        vec![AlarmMember {
            member_id: 7,
            alarm: AlarmType::NoSpace,
        }]
    }

    fn put() -> Command {
        Command::Put(PutRequest::new(b"k".to_vec(), b"v".to_vec()))
    }

    fn delete() -> Command {
        Command::DeleteRange(DeleteRangeRequest {
            range: KeyRange::key(b"k".to_vec()),
            prev_kv: false,
        })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Command {
        Command::Txn(TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    }

    #[test]
    fn nospace_refuses_puts_lease_grants_increments_and_txns_that_put() {
        let a = nospace();
        assert!(blocked_by(&a, &put()));
        assert!(blocked_by(&a, &Command::LeaseGrant { id: 0, ttl: 10 }));
        assert!(blocked_by(
            &a,
            &Command::Incr {
                key: b"n".to_vec(),
                delta: 1
            }
        ));
        let p = RequestOp::Put(PutRequest::new(b"k".to_vec(), b"v".to_vec()));
        assert!(blocked_by(&a, &txn(vec![p.clone()], vec![])));
        assert!(
            blocked_by(&a, &txn(vec![], vec![p])),
            "either branch counts"
        );
    }

    #[test]
    fn nospace_lets_deletes_compaction_revocation_and_alarm_changes_through() {
        let a = nospace();
        assert!(!blocked_by(&a, &delete()));
        assert!(!blocked_by(&a, &Command::Compact { revision: 5 }));
        assert!(!blocked_by(&a, &Command::LeaseRevoke { id: 1 }));
        assert!(!blocked_by(&a, &Command::LeaseExpire { ids: vec![1] }));
        assert!(!blocked_by(
            &a,
            &Command::Alarm {
                action: AlarmAction::Deactivate,
                member: a[0],
            }
        ));
        let del = RequestOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::key(b"k".to_vec()),
            prev_kv: false,
        });
        let read = RequestOp::Range(RangeRequest::new(KeyRange::key(b"k".to_vec())));
        assert!(!blocked_by(&a, &txn(vec![del], vec![read])));
    }

    #[test]
    fn without_an_alarm_nothing_is_refused() {
        assert!(!blocked_by(&[], &put()));
        assert!(!blocked_by(&[], &Command::LeaseGrant { id: 0, ttl: 10 }));
    }

    #[test]
    fn a_batch_may_grow_when_any_of_its_commands_may() {
        assert!(may_grow(&Command::Batch(vec![delete(), put()])));
        assert!(!may_grow(&Command::Batch(vec![delete(), delete()])));
    }
}

//! The MVCC key-value state machine: etcd v3's data model over an [`Engine`].
//!
//! Every live key with its revisions, the values of small ones, and the lease table live in
//! memory (rebuilt from the engine on open); larger values are read from the engine when a
//! read needs them (`live.rs`), so memory does not grow with the size of live values. Every
//! version of every key and
//! the events of every revision live in the engine until compacted, for reads at a past
//! revision and for watch catch-up. [`Mvcc::apply`] applies a batch of commands as one
//! atomic engine write that also carries the caller's metadata (the Raft applied log id),
//! then publishes the new revisions to the [`WatchHub`].
//!
//! This file holds the state (loaded on `open`), `apply`, and the lease and metadata reads;
//! the concerns live beside it: `write`
//! (one command's revision, txns, leases), `read` (ranges, current and past), `compact`,
//! and `snapshot` (dump and restore). The on-disk layout of versions and events is the
//! `history` module's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::alarm::{self, AlarmMember};
use crate::codec::{be, decode, encode, from_be};
use crate::command::{Command, CommandResult};
use crate::engine::{Cf, Durability, Engine, Scan, WriteBatch};
use crate::error::StoreError;
use crate::kv::*;
use crate::watch::WatchHub;

mod compact;
mod live;
mod read;
mod snapshot;
mod write;

pub use live::INLINE_VALUE_MAX;
pub use snapshot::StateSnapshot;

use live::Live;

const META_REVISION: &[u8] = b"revision";
const META_COMPACT: &[u8] = b"compact_revision";
const META_NEXT_LEASE: &[u8] = b"next_lease_id";
/// The active alarms (`crate::alarm`), absent while none was ever raised.
const META_ALARMS: &[u8] = b"alarms";
const SCAN_PAGE: usize = 1024;

#[derive(Clone, Debug, Default)]
struct LeaseState {
    ttl: i64,
    /// The last checkpointed remaining TTL (see [`LeaseRecord::remaining_ttl`]).
    remaining_ttl: Option<i64>,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Default)]
struct State {
    current: BTreeMap<Vec<u8>, Live>,
    revision: i64,
    compact_revision: i64,
    next_lease_id: i64,
    leases: BTreeMap<i64, LeaseState>,
    /// Active alarms, replicated (see `crate::alarm`).
    alarms: BTreeSet<AlarmMember>,
}

/// The state machine. Cheap to share behind an `Arc`; reads take a shared lock, `apply`
/// an exclusive one.
pub struct Mvcc {
    engine: Arc<dyn Engine>,
    state: RwLock<State>,
    hub: WatchHub,
}

/// Collects the writes and events of one `apply` call.
struct Batch {
    writes: WriteBatch,
    /// (revision, events) in revision order, for the watch hub.
    revisions: Vec<(i64, Vec<Event>)>,
    /// History versions written by this batch (not yet in the engine), per key.
    pending_history: HashMap<Vec<u8>, Vec<i64>>,
    /// The engine, for values spilled by earlier batches.
    engine: Arc<dyn Engine>,
    /// Keys put by this batch: held whole until the batch is in the engine, then spilled.
    fresh: Vec<Vec<u8>>,
}

impl Mvcc {
    /// Opens the state machine over `engine`, loading the current index and lease table.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self, StoreError> {
        let state = load_state(engine.as_ref())?;
        let hub = WatchHub::new(engine.clone(), state.revision, state.compact_revision);
        Ok(Self {
            engine,
            state: RwLock::new(state),
            hub,
        })
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves the state as the panicking apply left it;
        // the apply path does not panic on data, so recover the guard.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    /// The revision below which history is gone.
    pub fn compact_revision(&self) -> i64 {
        self.read().compact_revision
    }

    /// Number of live keys.
    pub fn key_count(&self) -> usize {
        self.read().current.len()
    }

    /// The active alarms, in (member, kind) order.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.read().alarms.iter().copied().collect()
    }

    /// Bytes of live values held in memory (the small ones; larger ones are read from the
    /// engine when asked for).
    pub fn held_value_bytes(&self) -> usize {
        self.read().current.values().map(Live::held_bytes).sum()
    }

    /// Applies commands in order as one atomic engine write, together with `extra` (the
    /// caller's metadata, such as the Raft applied log id). `None` items are entries with
    /// nothing to apply. Deterministic rejections (unknown lease, …) become
    /// [`CommandResult::Error`]; an `Err` is a storage failure and leaves this replica unusable.
    pub fn apply(
        &self,
        commands: Vec<Option<Command>>,
        extra: WriteBatch,
    ) -> Result<Vec<CommandResult>, StoreError> {
        let mut st = self.write();
        let mut b = Batch {
            writes: WriteBatch::new(),
            revisions: Vec::new(),
            pending_history: HashMap::new(),
            engine: self.engine.clone(),
            fresh: Vec::new(),
        };
        let mut results = Vec::with_capacity(commands.len());
        for cmd in commands {
            let r = match cmd {
                None => CommandResult::None {
                    revision: st.revision,
                },
                Some(Command::Batch(cmds)) => CommandResult::Batch(
                    cmds.into_iter()
                        .map(|cmd| self.apply_or_reject(&mut st, &mut b, cmd))
                        .collect::<Result<_, _>>()?,
                ),
                Some(cmd) => self.apply_or_reject(&mut st, &mut b, cmd)?,
            };
            results.push(r);
        }
        b.writes
            .put(Cf::Meta, META_REVISION, be(st.revision).to_vec());
        b.writes
            .put(Cf::Meta, META_COMPACT, be(st.compact_revision).to_vec());
        b.writes
            .put(Cf::Meta, META_NEXT_LEASE, be(st.next_lease_id).to_vec());
        b.writes.extend(extra);
        self.engine.write(b.writes, Durability::Buffered)?;
        for key in b.fresh {
            if let Some(live) = st.current.get_mut(&key) {
                live.spill();
            }
        }
        self.hub
            .publish(b.revisions, st.revision, st.compact_revision);
        Ok(results)
    }

    /// One command's result, a deterministic rejection as [`CommandResult::Error`]. A
    /// storage failure (reading a spilled value or a past revision) is not a rejection:
    /// another replica would not fail the same way, so it fails the whole apply.
    fn apply_or_reject(
        &self,
        st: &mut State,
        b: &mut Batch,
        cmd: Command,
    ) -> Result<CommandResult, StoreError> {
        if !st.alarms.is_empty() {
            let active: Vec<AlarmMember> = st.alarms.iter().copied().collect();
            if alarm::blocked_by(&active, &cmd) {
                return Ok(CommandResult::Error(StoreError::NoSpace));
            }
        }
        match self.apply_one(st, b, cmd) {
            Ok(result) => Ok(result),
            Err(e @ StoreError::Storage(_)) => Err(e),
            Err(e) => Ok(CommandResult::Error(e)),
        }
    }

    /// Granted TTL and attached keys of a lease.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        let st = self.read();
        st.leases.get(&id).map(|l| LeaseInfo {
            id,
            granted_ttl: l.ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// Every lease as (id, granted TTL).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.read()
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl))
            .collect()
    }

    /// Every lease as stored: id, granted TTL and checkpointed remaining TTL, by id.
    pub fn lease_records(&self) -> Vec<LeaseRecord> {
        self.read()
            .leases
            .iter()
            .map(|(&id, l)| LeaseRecord {
                id,
                ttl: l.ttl,
                remaining_ttl: l.remaining_ttl,
            })
            .collect()
    }

    /// Reads a metadata record another layer stored through `apply`'s `extra` batch.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.engine.get(Cf::Meta, key)?)
    }
}

/// Records an alarm change in `st` and in the batch `b` will write (the whole set, under
/// one metadata key). Alarms do not move the revision.
fn set_alarm(
    st: &mut State,
    b: &mut Batch,
    action: alarm::AlarmAction,
    member: AlarmMember,
) -> CommandResult {
    match action {
        alarm::AlarmAction::Activate => st.alarms.insert(member),
        alarm::AlarmAction::Deactivate => st.alarms.remove(&member),
    };
    let alarms: Vec<AlarmMember> = st.alarms.iter().copied().collect();
    b.writes.put(Cf::Meta, META_ALARMS, encode(&alarms));
    CommandResult::Alarm {
        alarms,
        revision: st.revision,
    }
}

fn load_state(engine: &dyn Engine) -> Result<State, StoreError> {
    let meta = |k: &[u8]| -> Result<Option<i64>, StoreError> {
        engine.get(Cf::Meta, k)?.map(|v| from_be(&v)).transpose()
    };
    let mut st = State {
        revision: meta(META_REVISION)?.unwrap_or(1),
        compact_revision: meta(META_COMPACT)?.unwrap_or(0),
        next_lease_id: meta(META_NEXT_LEASE)?.unwrap_or(1),
        alarms: match engine.get(Cf::Meta, META_ALARMS)? {
            Some(v) => decode::<Vec<AlarmMember>>(&v)?.into_iter().collect(),
            None => BTreeSet::new(),
        },
        ..State::default()
    };
    for_each_pair(engine, Cf::Lease, Vec::new(), None, |_, v| {
        let rec = decode_lease(&v)?;
        let lease = LeaseState {
            ttl: rec.ttl,
            remaining_ttl: rec.remaining_ttl,
            keys: BTreeSet::new(),
        };
        st.leases.insert(rec.id, lease);
        Ok(())
    })?;
    for_each_pair(engine, Cf::Current, Vec::new(), None, |k, v| {
        let kv: KeyValue = decode(&v)?;
        if kv.lease != 0
            && let Some(l) = st.leases.get_mut(&kv.lease)
        {
            l.keys.insert(k.clone());
        }
        st.current.insert(k, Live::stored(kv));
        Ok(())
    })?;
    Ok(st)
}

/// A lease record as written before lease checkpoints (no `remaining_ttl`).
#[derive(serde::Deserialize)]
struct LeaseRecordV1 {
    id: i64,
    ttl: i64,
}

/// Decodes a stored lease, of either format: bincode reads fields in order and fails
/// rather than defaulting a missing trailing field, so a record without `remaining_ttl`
/// (written by an older version, in the engine or in a snapshot) fails the current format
/// and is read as the old one. The reverse cannot happen: a current record always carries
/// the option's tag after `ttl`.
fn decode_lease(bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    decode::<LeaseRecord>(bytes).or_else(|e| match decode::<LeaseRecordV1>(bytes) {
        Ok(LeaseRecordV1 { id, ttl }) => Ok(LeaseRecord {
            id,
            ttl,
            remaining_ttl: None,
        }),
        Err(_) => Err(e),
    })
}

/// Visits every pair of `[start, end)` in `cf` in key order, a page at a time, so a large
/// family is never read into memory at once.
fn for_each_pair(
    engine: &dyn Scan,
    cf: Cf,
    start: Vec<u8>,
    end: Option<&[u8]>,
    mut f: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut from = start;
    loop {
        let page = engine.scan(cf, &from, end, SCAN_PAGE, false)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        from = last.clone();
        from.push(0);
        for (k, v) in page {
            f(k, v)?;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod lease_format_tests {
    use super::*;
    use crate::codec::encode;

    /// A lease stored before checkpoints (id 5, TTL 30: two zigzag varints) still loads,
    /// with no checkpoint; a current record round-trips.
    #[test]
    fn a_lease_record_without_a_remaining_ttl_decodes() {
        let old = [10, 60];
        assert_eq!(
            decode_lease(&old).unwrap(),
            LeaseRecord {
                id: 5,
                ttl: 30,
                remaining_ttl: None
            }
        );
        for remaining_ttl in [None, Some(0), Some(12)] {
            let rec = LeaseRecord {
                id: 5,
                ttl: 30,
                remaining_ttl,
            };
            assert_eq!(decode_lease(&encode(&rec)).unwrap(), rec);
        }
        assert!(
            decode_lease(&[10]).is_err(),
            "a truncated record is corrupt"
        );
    }
}

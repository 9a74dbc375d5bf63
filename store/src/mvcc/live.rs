//! A live key of the current index ([`Live`]) and where its value is: kept in memory when
//! small, or written by the `apply` in progress; otherwise read from the engine's
//! `Current` family when a read needs it ([`materialize`]). So the memory of the current
//! index grows with the number of live keys (key, revisions, lease), not with the size
//! of their values: a busy cluster's live runs, their configs and executor tasks keep
//! their JSON on disk, behind the engine's own bounded cache.
//!
//! The engine's `Current` family always holds the newest version of every live key
//! written by a finished `apply` (`write.rs` puts it in the same batch), and readers hold
//! the state lock that `apply` holds until its batch is in the engine: a spilled value
//! read under the lock is the one the index names. Its mod revision is checked anyway.

use crate::codec::decode;
use crate::engine::{Cf, Engine};
use crate::error::StoreError;
use crate::kv::KeyValue;

/// Values up to this many bytes stay in memory (counters, markers, lease-bound keys);
/// larger ones are read from the engine when asked for.
pub const INLINE_VALUE_MAX: usize = 128;

/// One live key: its `KeyValue`, whose value is empty while `spilled`.
#[derive(Clone, Debug)]
pub(super) struct Live {
    pub(super) kv: KeyValue,
    /// The value's length, whether it is held or spilled.
    pub(super) value_len: usize,
    pub(super) spilled: bool,
}

impl Live {
    /// A key just written: held whole until its batch is in the engine ([`Live::spill`]).
    pub(super) fn fresh(kv: KeyValue) -> Live {
        Live {
            value_len: kv.value.len(),
            kv,
            spilled: false,
        }
    }

    /// A key read from the engine: its value kept only when small.
    pub(super) fn stored(kv: KeyValue) -> Live {
        let mut live = Live::fresh(kv);
        live.spill();
        live
    }

    /// Drops a large value from memory; the engine has it.
    pub(super) fn spill(&mut self) {
        if !self.spilled && self.value_len > INLINE_VALUE_MAX {
            self.kv.value = Vec::new();
            self.spilled = true;
        }
    }

    /// Value bytes held in memory.
    pub(super) fn held_bytes(&self) -> usize {
        if self.spilled { 0 } else { self.value_len }
    }
}

/// The whole `KeyValue` of `live`, its value read from `engine` when spilled; with
/// `value: false` (keys-only reads) the value is left empty and nothing is read.
pub(super) fn materialize(
    engine: &dyn Engine,
    live: &Live,
    value: bool,
) -> Result<KeyValue, StoreError> {
    if !live.spilled || !value {
        return Ok(live.kv.clone());
    }
    from_engine(live, engine.get(Cf::Current, &live.kv.key)?)
}

/// [`materialize`] of many live keys, the spilled values read in one engine call.
pub(super) fn materialize_many(
    engine: &dyn Engine,
    lives: &[&Live],
    value: bool,
) -> Result<Vec<KeyValue>, StoreError> {
    let spilled: Vec<&[u8]> = lives
        .iter()
        .filter(|l| value && l.spilled)
        .map(|l| l.kv.key.as_slice())
        .collect();
    let mut read = engine.get_many(Cf::Current, &spilled)?.into_iter();
    lives
        .iter()
        .map(|live| {
            if value && live.spilled {
                from_engine(live, read.next().flatten())
            } else {
                Ok(live.kv.clone())
            }
        })
        .collect()
}

/// The `KeyValue` of spilled `live` from the engine's copy `bytes`, checked against it.
fn from_engine(live: &Live, bytes: Option<Vec<u8>>) -> Result<KeyValue, StoreError> {
    let bytes = bytes.ok_or_else(|| {
        StoreError::corrupt(format!(
            "live key {:?} has no current version in the engine",
            String::from_utf8_lossy(&live.kv.key)
        ))
    })?;
    let kv: KeyValue = decode(&bytes)?;
    if kv.mod_revision != live.kv.mod_revision {
        return Err(StoreError::corrupt(format!(
            "live key {:?}: the engine holds revision {}, the index {}",
            String::from_utf8_lossy(&live.kv.key),
            kv.mod_revision,
            live.kv.mod_revision
        )));
    }
    Ok(kv)
}

//! The history families' layout: every version of a key in [`Cf::History`] under
//! (escaped key, revision), and the events of every revision in [`Cf::Events`] under the
//! big-endian revision. [`crate::mvcc`] writes and compacts them; the [`crate::WatchHub`]
//! reads events from here to catch watchers up, without depending on the state machine.

use crate::codec::{be, decode, escape, from_be};
use crate::engine::{Cf, Engine};
use crate::error::StoreError;
use crate::kv::{Event, KeyValue};

/// A record of the history family: one version of a key, or its deletion.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Version {
    pub(crate) kv: KeyValue,
    pub(crate) tombstone: bool,
}

/// The history-family key of `key` at `revision`.
pub(crate) fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut k = escape(key);
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&be(revision));
    k
}

/// The history-family prefix of every version of `key`.
pub(crate) fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = escape(key);
    k.extend_from_slice(&[0, 0]);
    k
}

/// Reads the events of revisions `[from, to]` (at most `limit` revisions) from the engine.
pub(crate) fn read_events(
    engine: &dyn Engine,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<(i64, Vec<Event>)>, StoreError> {
    if from > to {
        return Ok(Vec::new());
    }
    let page = engine.scan(Cf::Events, &be(from), Some(&be(to + 1)), limit, false)?;
    page.iter()
        .map(|(k, v)| Ok((from_be(k)?, decode(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_history_keys_sort_by_key_then_revision() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"ab", b"b",
        ];
        let mut encoded = Vec::new();
        for k in &keys {
            for rev in [1i64, 2, 300] {
                encoded.push(history_key(k, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(
            encoded, sorted,
            "encoding must preserve (key, revision) order"
        );
    }

    #[test]
    fn history_keys_of_a_range_fall_between_the_escaped_bounds() {
        let (start, end) = (escape(b"a"), escape(b"a\0b"));
        assert!(history_key(b"a", 5) >= start && history_key(b"a", 5) < end);
        assert!(history_key(b"a\0", 5) < end);
        assert!(history_key(b"a\0b", 5) >= end);
    }
}

//! The index's tables, what their values hold, and the keys in them. Pure apart from the
//! table definitions: every function here maps runs and queries to keys.
//!
//! ```text
//! runs          <run id>                        IndexedRun (JSON): where the run is, and the run
//! listing       <ancestor>\0<sel>\0<run id>     ()  the store's listing index keys (`keys::index_keys`)
//! segments      <segment id>                    IndexedSegment (JSON)
//! segment_runs  (<segment id>, <run id>)        ()  the runs a segment holds in this index
//! partial       <segment id>                    ()  segments being indexed in batches
//! meta          format_version | applied_revision   i64
//! ```

use std::ops::Bound;

use cairn_client::run::{Run, RunEvent};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::datamanager::keys::{self, Selector};

pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
pub(super) const LISTING: TableDefinition<&str, ()> = TableDefinition::new("listing");
pub(super) const SEGMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("segments");
pub(super) const SEGMENT_RUNS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("segment_runs");
/// Segments whose runs are being indexed in batches (`begin_segment`): not yet in
/// `segments`, so a sync indexes them again.
pub(super) const PARTIAL: TableDefinition<&str, ()> = TableDefinition::new("partial");
pub(super) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// The newest [`EVENTS_KEPT`] run events of archived runs, by sequence (JSON `RunEvent`):
/// what the run-event stream replays after a sequence, beside the store's own.
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Run events of archived runs the index keeps (the newest; the store keeps as many of
/// its own by default).
pub const EVENTS_KEPT: u64 = 10_000;

/// The layout above. A file with another version is rebuilt, never migrated.
pub const FORMAT_VERSION: i64 = 2;
pub(super) const VERSION_KEY: &str = "format_version";
pub(super) const APPLIED_KEY: &str = "applied_revision";

/// An archived run: the segment and byte range holding it, and the run itself, so a
/// listing never reads a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedRun {
    pub segment: String,
    /// Where the run's record starts in the segment, in bytes.
    pub offset: u64,
    /// The record's length in bytes.
    pub len: u64,
    pub run: Run,
}

/// What the index keeps of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedSegment {
    /// Runs in the segment.
    pub runs: u32,
    /// The segment's size in bytes.
    pub bytes: u64,
    /// The segment's SHA-256, lowercase hex.
    pub sha256: String,
}

/// One run of a segment being indexed: the run and its record's byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    pub run: Run,
    pub offset: u64,
    pub len: u64,
    /// The run's events (the newest [`EVENTS_KEPT`] of all archived runs are kept).
    pub events: Vec<RunEvent>,
}

/// The listing keys of `run`: exactly the store's listing index keys
/// (`keys::index_keys`, one per group ancestor × {all, phase, result}) without the
/// store's `rs/idx/` prefix, so both indexes hold the same entries for a run.
pub fn listing_keys(run: &Run) -> Vec<String> {
    keys::index_keys(run)
        .into_iter()
        .map(|k| match k.strip_prefix(keys::INDEX) {
            Some(rest) => rest.to_string(),
            None => k,
        })
        .collect()
}

/// The prefix of one listing stream: every run under `group` matching `sel`, by id.
pub fn listing_prefix(group: &str, sel: Selector) -> String {
    let full = keys::index_prefix(group, sel);
    match full.strip_prefix(keys::INDEX) {
        Some(rest) => rest.to_string(),
        None => full,
    }
}

/// The key range of one stream after `cursor` (exclusive) in the listing's direction:
/// ids above it oldest first, ids below it newest first, as the store's listing pages.
pub fn stream_bounds(
    prefix: &str,
    cursor: Option<&str>,
    asc: bool,
) -> (Bound<String>, Bound<String>) {
    // Stream prefixes end with `\0`; every key of the stream sorts below the prefix with
    // its last byte raised to `\x01`.
    let end = Bound::Excluded(format!("{}\u{1}", prefix.trim_end_matches('\0')));
    match (cursor, asc) {
        (Some(c), true) => (Bound::Excluded(format!("{prefix}{c}")), end),
        (Some(c), false) => (
            Bound::Included(prefix.to_string()),
            Bound::Excluded(format!("{prefix}{c}")),
        ),
        (None, _) => (Bound::Included(prefix.to_string()), end),
    }
}

#[cfg(test)]
mod tests {
    use cairn_client::run::{RunPhase, RunResult};

    use super::*;

    fn run(id: &str, group: &str) -> Run {
        Run {
            id: id.into(),
            name: "ci".into(),
            counter: 1,
            group: group.into(),
            annotations: Default::default(),
            phase: RunPhase::Finished,
            result: RunResult::Success,
            stop: false,
            cancel: false,
            tasks: Default::default(),
            enqueue_time: None,
            start_time: None,
            end_time: None,
            archived: true,
        }
    }

    #[test]
    fn listing_keys_are_the_store_index_keys_without_its_prefix() {
        let r = run("0000000000000007", "/project/p/branch/main");
        let store: Vec<String> = keys::index_keys(&r);
        let ours = listing_keys(&r);
        assert_eq!(ours.len(), store.len());
        for (a, b) in ours.iter().zip(&store) {
            assert_eq!(format!("{}{a}", keys::INDEX), *b);
        }
        assert!(ours.contains(&format!(
            "{}0000000000000007",
            listing_prefix("/project/p", Selector::Result(RunResult::Success))
        )));
    }

    fn inside(b: &(Bound<String>, Bound<String>), key: &str) -> bool {
        let lo = match &b.0 {
            Bound::Included(s) => key >= s.as_str(),
            Bound::Excluded(s) => key > s.as_str(),
            Bound::Unbounded => true,
        };
        let hi = match &b.1 {
            Bound::Included(s) => key <= s.as_str(),
            Bound::Excluded(s) => key < s.as_str(),
            Bound::Unbounded => true,
        };
        lo && hi
    }

    #[test]
    fn stream_bounds_hold_the_stream_after_the_cursor_only() {
        let p = listing_prefix("/project/p1", Selector::All);
        let sibling = listing_prefix("/project/p10", Selector::All);
        let all = stream_bounds(&p, None, true);
        assert!(inside(&all, &format!("{p}0001")));
        assert!(!inside(&all, &format!("{sibling}0001")));
        assert!(!inside(
            &all,
            &listing_prefix("/project/p1", Selector::Phase(RunPhase::Queued))
        ));
        let up = stream_bounds(&p, Some("0005"), true);
        assert!(!inside(&up, &format!("{p}0005")));
        assert!(inside(&up, &format!("{p}0006")));
        let down = stream_bounds(&p, Some("0005"), false);
        assert!(!inside(&down, &format!("{p}0005")));
        assert!(inside(&down, &format!("{p}0004")));
        assert!(!inside(&down, &format!("{p}0006")));
    }
}

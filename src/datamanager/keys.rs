//! The run service's key layout in the store, and the index entries a run owns. Pure:
//! every function here maps objects to keys.
//!
//! ```text
//! rs/run/<id>                      Run (JSON), active and archived
//! rs/runconfig/<id>                RunConfig (JSON), immutable
//! rs/active/<id>                   marker: not archived yet (the scheduler's working set)
//! rs/archived/<id>                 marker: archived, still in the store (the segmenter's queue)
//! rs/idx/<ancestor>\0<sel>\0<id>   listing index, one per group ancestor × selector
//! rs/last/<group>                  id of the group's newest run
//! rs/seq/run                       last run sequence number
//! rs/counter/<root group>          last run counter of a root group
//! rs/et/<task id>                  ExecutorTask (JSON)
//! rs/etx/<executor id>/<task id>   ExecutorTask's per-executor marker, rewritten on every change
//! rs/executor/<id>                 Executor (JSON), attached to the executor's lease
//! rs/event/<run id>/<n>            RunEvent (JSON); its sequence is the key's mod revision
//! rs/cg/<name>                     change group (only its mod revision matters)
//! rs/lock/scheduler/               the scheduler mutex
//! rs/token/<id>                    StoredToken (JSON): a `cairn token create` token, hashed
//! rs/xcred/<executor id>           ExecutorCredential (JSON): an executor's own credential, hashed
//! rs/maintenance                   marker (JSON time): maintenance asked for, every node switches
//! rs/nodemode/<node id>            NodeMode (JSON): the mode a node is in, on the node's lease
//! rs/importing                     marker: an import is being applied (maintenance cannot end)
//! rs/segment/<segment id>          SegmentMeta (JSON): a segment of archived runs in object storage
//! rs/once/<sha256 of key>/<n>      CreateRecord (JSON): the n-th run made under an idempotency key
//! ```

use cairn_client::run::{Run, RunPhase, RunResult};

pub const RUN: &str = "rs/run/";
pub const RUN_CONFIG: &str = "rs/runconfig/";
pub const ACTIVE: &str = "rs/active/";
/// Runs archived but still in the store, waiting to move into a segment.
pub const ARCHIVED: &str = "rs/archived/";
pub const INDEX: &str = "rs/idx/";
pub const LAST: &str = "rs/last/";
pub const RUN_SEQ: &str = "rs/seq/run";
pub const COUNTER: &str = "rs/counter/";
pub const EXECUTOR_TASK: &str = "rs/et/";
pub const EXECUTOR_TASK_BY_EXECUTOR: &str = "rs/etx/";
pub const EXECUTOR: &str = "rs/executor/";
pub const EVENT: &str = "rs/event/";
pub const CHANGE_GROUP: &str = "rs/cg/";
pub const SCHEDULER_LOCK: &str = "rs/lock/scheduler/";
pub const TOKEN: &str = "rs/token/";
pub const EXECUTOR_CREDENTIAL: &str = "rs/xcred/";
/// Maintenance is asked for while this key exists.
pub const MAINTENANCE: &str = "rs/maintenance";
pub const NODE_MODE: &str = "rs/nodemode/";
/// Set while an import is being applied; maintenance cannot end meanwhile.
pub const IMPORTING: &str = "rs/importing";
/// Segments of archived runs, by segment id.
pub const SEGMENT: &str = "rs/segment/";
/// Runs made under an idempotency key (`POST /runs` with `Idempotency-Key`).
pub const CREATE_ONCE: &str = "rs/once/";
/// Everything the run service owns.
pub const ALL: &str = "rs/";

pub fn run(id: &str) -> String {
    format!("{RUN}{id}")
}

pub fn run_config(id: &str) -> String {
    format!("{RUN_CONFIG}{id}")
}

pub fn active(id: &str) -> String {
    format!("{ACTIVE}{id}")
}

pub fn archived(id: &str) -> String {
    format!("{ARCHIVED}{id}")
}

pub fn last(group: &str) -> String {
    format!("{LAST}{group}")
}

pub fn counter(root: &str) -> String {
    format!("{COUNTER}{root}")
}

pub fn executor_task(task_id: &str) -> String {
    format!("{EXECUTOR_TASK}{task_id}")
}

pub fn executor_tasks_of(executor_id: &str) -> String {
    format!("{EXECUTOR_TASK_BY_EXECUTOR}{executor_id}/")
}

pub fn executor_task_marker(executor_id: &str, task_id: &str) -> String {
    format!("{EXECUTOR_TASK_BY_EXECUTOR}{executor_id}/{task_id}")
}

pub fn executor(id: &str) -> String {
    format!("{EXECUTOR}{id}")
}

pub fn token(id: &str) -> String {
    format!("{TOKEN}{id}")
}

pub fn executor_credential(executor_id: &str) -> String {
    format!("{EXECUTOR_CREDENTIAL}{executor_id}")
}

pub fn events_of(run_id: &str) -> String {
    format!("{EVENT}{run_id}/")
}

pub fn segment(id: &str) -> String {
    format!("{SEGMENT}{id}")
}

pub fn change_group(name: &str) -> String {
    format!("{CHANGE_GROUP}{name}")
}

/// The last path element of a key under `prefix`.
pub fn id_of<'a>(key: &'a [u8], prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix.as_bytes())
        .and_then(|rest| std::str::from_utf8(rest).ok())
}

/// A run id from a sequence number: fixed width, so byte order is numeric order.
pub fn run_id(seq: u64) -> String {
    format!("{seq:016}")
}

/// A group path in canonical form (a run-service rule, used here for the listing keys).
pub use crate::runservice::reference::normalize_group;

/// `/a/b/c` → `["/", "/a", "/a/b", "/a/b/c"]`.
pub fn ancestors(group: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut cur = String::new();
    for seg in group.split('/').filter(|s| !s.is_empty()) {
        cur.push('/');
        cur.push_str(seg);
        out.push(cur.clone());
    }
    out
}

/// Which runs an index stream holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    All,
    Phase(RunPhase),
    Result(RunResult),
}

impl Selector {
    fn tag(self) -> String {
        match self {
            Selector::All => "*".to_string(),
            Selector::Phase(p) => format!("p:{}", p.as_str()),
            Selector::Result(r) => format!("r:{}", r.as_str()),
        }
    }
}

/// The prefix of one index stream: every run under `group` matching `sel`, by id.
pub fn index_prefix(group: &str, sel: Selector) -> String {
    format!("{INDEX}{group}\0{}\0", sel.tag())
}

/// Every index key a run owns in its current state.
pub fn index_keys(run: &Run) -> Vec<String> {
    let sels = [
        Selector::All,
        Selector::Phase(run.phase),
        Selector::Result(run.result),
    ];
    let mut keys = Vec::new();
    for a in ancestors(&run.group) {
        for sel in sels {
            keys.push(format!("{}{}", index_prefix(&a, sel), run.id));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_normalize_to_one_form() {
        assert_eq!(
            normalize_group("project/p1/").as_deref(),
            Some("/project/p1")
        );
        assert_eq!(normalize_group("//a//b").as_deref(), Some("/a/b"));
        assert_eq!(normalize_group("/").as_deref(), Some("/"));
        assert_eq!(normalize_group("/a/../b"), None);
        assert_eq!(normalize_group("/a\0b"), None);
    }

    #[test]
    fn ancestors_include_root_and_self() {
        assert_eq!(ancestors("/user/u1/branch/main").len(), 5);
        assert_eq!(ancestors("/"), vec!["/".to_string()]);
        assert_eq!(ancestors("/a/b")[2], "/a/b");
    }

    #[test]
    fn run_ids_sort_numerically() {
        assert!(run_id(9) < run_id(10));
        assert!(run_id(99_999) < run_id(100_000));
    }

    #[test]
    fn a_group_prefix_does_not_match_a_longer_sibling_name() {
        // `/project/p1` must not list `/project/p10`: streams are per ancestor, not by
        // string prefix.
        let a = index_prefix("/project/p1", Selector::All);
        let b = index_prefix("/project/p10", Selector::All);
        assert!(!b.starts_with(&a));
    }
}

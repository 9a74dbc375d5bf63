//! The data model and request/response types of the key-value API, shaped after etcd v3
//! (`mvccpb.KeyValue`, `RangeRequest`, `TxnRequest`, …) but in plain Rust types.

use serde::{Deserialize, Serialize};

/// One version of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the last creation of this key.
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// 1 on creation, +1 per change; 0 means deleted.
    pub version: i64,
    /// Attached lease id, 0 for none.
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. For a delete, `kv` holds the key and the revision of the deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// A key or key range with etcd's conventions: an empty `range_end` means the single key
/// `key`; `range_end = [0]` means every key `>= key`; otherwise `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl KeyRange {
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    /// Every key starting with `prefix` (every key when `prefix` is empty).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Self { key, range_end }
    }

    pub fn interval(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    /// Whether this is a single-key request.
    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// The exclusive end as an engine bound, `None` for "no upper bound".
    pub fn end_bound(&self) -> Option<Vec<u8>> {
        if self.range_end.is_empty() {
            let mut k = self.key.clone();
            k.push(0);
            Some(k)
        } else if self.range_end == [0] {
            None
        } else {
            Some(self.range_end.clone())
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return k == self.key.as_slice();
        }
        if k < self.key.as_slice() {
            return false;
        }
        match self.end_bound() {
            None => true,
            Some(end) => k < end.as_slice(),
        }
    }
}

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`):
/// `[0]` ("to the end") when no such key exists.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// Read at this past revision; 0 = current.
    pub revision: i64,
    /// At most this many kvs; 0 = no limit.
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
    /// Serve from local state without a linearizability barrier.
    pub serializable: bool,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
    /// Cairn extension for paging: with a limit, `count` is only `kvs.len()` (+1 when
    /// `more`), so a page costs O(limit) rather than O(matching keys).
    #[serde(default)]
    pub page_only: bool,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        Self {
            range,
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More kvs matched than `limit` allowed.
    pub more: bool,
    /// How many kvs matched in all.
    pub count: i64,
    pub revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// One condition of a transaction, over a key or (with a range end) every key of a range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Self {
            range: KeyRange::key(key),
            op,
            target,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
    pub revision: i64,
}

/// A lease as stored (its keys are derived from the current index on load).
///
/// Records written before lease checkpoints have no `remaining_ttl`; bincode does not
/// apply serde defaults to a missing trailing field, so the store decodes those through
/// its own fallback (`mvcc::decode_lease`). The default serves self-describing formats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// The remaining TTL (seconds) of the last checkpoint the leader replicated
    /// ([`crate::Command::LeaseCheckpoint`]), below `ttl`; `None` when the lease has none
    /// or was renewed since: a new leader then gives it its whole TTL.
    #[serde(default)]
    pub remaining_ttl: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_carries_over_ff() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn key_range_contains_follows_etcd_conventions() {
        assert!(KeyRange::key("a").contains(b"a"));
        assert!(!KeyRange::key("a").contains(b"ab"));
        let p = KeyRange::prefix("a/");
        assert!(p.contains(b"a/x") && !p.contains(b"a0") && !p.contains(b"a"));
        let all = KeyRange::interval("b", vec![0]);
        assert!(all.contains(b"zzz") && !all.contains(b"a"));
    }
}

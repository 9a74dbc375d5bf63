//! The etcd v3 JSON wire types, as served by etcd 3.4's gRPC gateway: keys and values are
//! base64, 64-bit integers are strings (numbers are accepted too), zero values are
//! omitted, and every response carries a header with the revision. Server and clients
//! share these types; this file holds no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes carried as base64 text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64Bytes(pub Vec<u8>);

impl B64Bytes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for B64Bytes {
    fn from(s: &str) -> Self {
        B64Bytes(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for B64Bytes {
    fn from(v: Vec<u8>) -> Self {
        B64Bytes(v)
    }
}

impl Serialize for B64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes())
            .map(B64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64 {s:?}: {e}")))
    }
}

/// An int64 as JSON: written as a string, read from a string or a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct I64(pub i64);

impl I64 {
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl Serialize for I64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            U(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(I64(n)),
            Raw::U(u) => i64::try_from(u)
                .map(I64)
                .map_err(|_| serde::de::Error::custom("integer out of int64 range")),
            Raw::S(s) => {
                let t = s.trim();
                t.parse::<i64>()
                    .or_else(|_| t.parse::<u64>().map(|u| u as i64))
                    .map(I64)
                    .map_err(|_| serde::de::Error::custom(format!("invalid int64 {s:?}")))
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub cluster_id: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub member_id: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub revision: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub raft_term: I64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub key: B64Bytes,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub create_revision: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub mod_revision: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub version: I64,
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub value: B64Bytes,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub lease: I64,
}

/// Enums travel as their proto names; numbers are accepted on input.
macro_rules! proto_enum {
    ($name:ident { $($variant:ident = $n:expr => $s:expr),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub enum $name { #[default] $($variant),* }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),* } }
            pub fn is_default(&self) -> bool { *self == $name::default() }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw { N(i64), S(String) }
                match Raw::deserialize(d)? {
                    $(Raw::N($n) => Ok($name::$variant),)*
                    $(Raw::S(s) if s == $s => Ok($name::$variant),)*
                    Raw::N(n) => Err(serde::de::Error::custom(format!("invalid {} {n}", stringify!($name)))),
                    Raw::S(s) => Err(serde::de::Error::custom(format!("invalid {} {s:?}", stringify!($name)))),
                }
            }
        }
    };
}

proto_enum!(SortOrder { None = 0 => "NONE", Ascend = 1 => "ASCEND", Descend = 2 => "DESCEND" });
proto_enum!(SortTarget { Key = 0 => "KEY", Version = 1 => "VERSION", Create = 2 => "CREATE", Mod = 3 => "MOD", Value = 4 => "VALUE" });
proto_enum!(CompareResult { Equal = 0 => "EQUAL", Greater = 1 => "GREATER", Less = 2 => "LESS", NotEqual = 3 => "NOT_EQUAL" });
proto_enum!(CompareTarget { Version = 0 => "VERSION", Create = 1 => "CREATE", Mod = 2 => "MOD", Value = 3 => "VALUE", Lease = 4 => "LEASE" });
proto_enum!(EventType { Put = 0 => "PUT", Delete = 1 => "DELETE" });
proto_enum!(FilterType { NoPut = 0 => "NOPUT", NoDelete = 1 => "NODELETE" });

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    #[serde(default)]
    pub key: B64Bytes,
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub range_end: B64Bytes,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub limit: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub revision: I64,
    #[serde(default, skip_serializing_if = "SortOrder::is_default")]
    pub sort_order: SortOrder,
    #[serde(default, skip_serializing_if = "SortTarget::is_default")]
    pub sort_target: SortTarget,
    #[serde(default, skip_serializing_if = "is_false")]
    pub serializable: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keys_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub count_only: bool,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub min_mod_revision: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub max_mod_revision: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub min_create_revision: I64,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub max_create_revision: I64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvs: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub count: I64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    #[serde(default)]
    pub key: B64Bytes,
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub value: B64Bytes,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub lease: I64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_value: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRangeRequest {
    #[serde(default)]
    pub key: B64Bytes,
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub range_end: B64Bytes,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub deleted: I64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    #[serde(default, skip_serializing_if = "CompareResult::is_default")]
    pub result: CompareResult,
    #[serde(default, skip_serializing_if = "CompareTarget::is_default")]
    pub target: CompareTarget,
    #[serde(default)]
    pub key: B64Bytes,
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub range_end: B64Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<I64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<I64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<I64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<B64Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<I64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_range: Option<RangeRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_put: Option<PutRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_delete_range: Option<DeleteRangeRequest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseOp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_range: Option<RangeResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_put: Option<PutResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_delete_range: Option<DeleteRangeResponse>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Compare>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success: Vec<RequestOp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, skip_serializing_if = "is_false")]
    pub succeeded: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionRequest {
    #[serde(default)]
    pub revision: I64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub physical: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderOnly {
    #[serde(default)]
    pub header: ResponseHeader,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantRequest {
    #[serde(rename = "TTL", default)]
    pub ttl: I64,
    #[serde(rename = "ID", default, skip_serializing_if = "I64::is_zero")]
    pub id: I64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(rename = "ID", default)]
    pub id: I64,
    #[serde(rename = "TTL", default)]
    pub ttl: I64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseIdRequest {
    #[serde(rename = "ID", default)]
    pub id: I64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keys: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(rename = "ID", default)]
    pub id: I64,
    #[serde(rename = "TTL", default)]
    pub ttl: I64,
}

/// A streamed gateway message: `{"result": …}` or `{"error": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamItem<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLiveResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(rename = "ID", default)]
    pub id: I64,
    #[serde(rename = "TTL", default)]
    pub ttl: I64,
    #[serde(rename = "grantedTTL", default, skip_serializing_if = "I64::is_zero")]
    pub granted_ttl: I64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<B64Bytes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    #[serde(rename = "ID")]
    pub id: I64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLeasesResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchCreateRequest {
    #[serde(default)]
    pub key: B64Bytes,
    #[serde(default, skip_serializing_if = "B64Bytes::is_empty")]
    pub range_end: B64Bytes,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub start_revision: I64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub progress_notify: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterType>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub watch_id: I64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub fragment: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_request: Option<WatchCreateRequest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "EventType::is_default"
    )]
    pub kind: EventType,
    #[serde(default)]
    pub kv: KeyValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub watch_id: I64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub created: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub canceled: bool,
    #[serde(default, skip_serializing_if = "I64::is_zero")]
    pub compact_revision: I64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cancel_reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub version: String,
    #[serde(rename = "dbSize", default)]
    pub db_size: I64,
    #[serde(default)]
    pub leader: I64,
    #[serde(rename = "raftIndex", default)]
    pub raft_index: I64,
    #[serde(rename = "raftTerm", default)]
    pub raft_term: I64,
    #[serde(rename = "raftAppliedIndex", default)]
    pub raft_applied_index: I64,
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    #[serde(rename = "ID")]
    pub id: I64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberListResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRemoveRequest {
    #[serde(rename = "ID")]
    pub id: I64,
}

/// `POST /v3/maintenance/alarm`: etcd's `AlarmRequest`. `action` is `GET` (the default),
/// `ACTIVATE` or `DEACTIVATE`; `alarm` is `NONE` (the default: with `GET`, every kind),
/// `NOSPACE` or `CORRUPT`. Enums are names on the wire, their numbers are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRequest {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "enum_name_alarm_action"
    )]
    pub action: String,
    #[serde(rename = "memberID", default, skip_serializing_if = "I64::is_zero")]
    pub member_id: I64,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "enum_name_alarm_type"
    )]
    pub alarm: String,
}

/// One raised alarm: etcd's `AlarmMember` (`alarm` is `NOSPACE` or `CORRUPT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmMember {
    #[serde(rename = "memberID", default)]
    pub member_id: I64,
    #[serde(default, deserialize_with = "enum_name_alarm_type")]
    pub alarm: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub alarms: Vec<AlarmMember>,
}

/// The names of etcd's `AlarmRequest.AlarmAction`, by number.
pub const ALARM_ACTIONS: [&str; 3] = ["GET", "ACTIVATE", "DEACTIVATE"];
/// The names of etcd's `AlarmType`, by number.
pub const ALARM_TYPES: [&str; 3] = ["NONE", "NOSPACE", "CORRUPT"];

fn enum_name<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(u64),
    }
    match NameOrNumber::deserialize(d)? {
        NameOrNumber::Name(n) => Ok(n),
        NameOrNumber::Number(i) => names
            .get(i as usize)
            .map(|n| n.to_string())
            .ok_or_else(|| serde::de::Error::custom(format!("unknown enum value {i}"))),
    }
}

fn enum_name_alarm_action<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(d, &ALARM_ACTIONS)
}

fn enum_name_alarm_type<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(d, &ALARM_TYPES)
}

/// The gateway's error body: `{"error", "code", "message"}` with a gRPC status code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
}

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_reads_strings_and_numbers_and_writes_strings() {
        let a: I64 = serde_json::from_str("\"42\"").expect("string");
        let b: I64 = serde_json::from_str("42").expect("number");
        assert_eq!((a, b), (I64(42), I64(42)));
        assert_eq!(serde_json::to_string(&I64(7)).expect("ser"), "\"7\"");
        assert!(serde_json::from_str::<I64>("\"x\"").is_err());
    }

    #[test]
    fn bad_base64_is_an_error_naming_the_input() {
        let err = serde_json::from_str::<RangeRequest>(r#"{"key":"%%%"}"#).expect_err("must fail");
        assert!(err.to_string().contains("invalid base64"), "{err}");
    }

    #[test]
    fn zero_values_are_omitted_like_the_etcd_gateway() {
        let kv = KeyValue {
            key: "a".into(),
            ..KeyValue::default()
        };
        assert_eq!(
            serde_json::to_string(&kv).expect("ser"),
            r#"{"key":"YQ=="}"#
        );
        let ev = Event {
            kind: EventType::Delete,
            kv,
            prev_kv: None,
        };
        assert!(
            serde_json::to_string(&ev)
                .expect("ser")
                .contains(r#""type":"DELETE""#)
        );
    }

    #[test]
    fn enums_accept_names_and_numbers() {
        let c: Compare = serde_json::from_str(r#"{"result":"NOT_EQUAL","target":2,"key":"YQ=="}"#)
            .expect("parse");
        assert_eq!(
            (c.result, c.target),
            (CompareResult::NotEqual, CompareTarget::Mod)
        );
    }
}

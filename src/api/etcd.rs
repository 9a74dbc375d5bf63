//! etcd v3's JSON HTTP API over [`raft::Kv`]: `/v3/kv/*`, `/v3/lease/*`, `/v3/watch`,
//! `/v3/maintenance/status`, `/v3/maintenance/alarm`, `/v3/cluster/member/*`. Request and response shapes are
//! [`cairn_client::etcd`]'s; this module converts them to the store's types and maps
//! errors to etcd's error body and gRPC codes with the matching HTTP status.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cairn_client::etcd as wire;
use cairn_client::etcd::{B64Bytes, I64};
use futures::StreamExt;
use raft::{KvError, Node};
use serde::de::DeserializeOwned;
use store::StoreError;

#[derive(Clone)]
pub struct EtcdState {
    pub node: Node,
    /// Caps on concurrent watches.
    pub streams: super::streams::StreamCaps,
}

/// The routes of the client port.
pub fn router(node: Node, streams: super::streams::StreamCaps) -> Router {
    Router::new()
        .route("/v3/kv/range", post(range))
        .route("/v3/kv/put", post(put))
        .route("/v3/kv/deleterange", post(delete_range))
        .route("/v3/kv/txn", post(txn))
        .route("/v3/kv/compaction", post(compaction))
        .route("/v3/lease/grant", post(lease_grant))
        .route("/v3/lease/revoke", post(lease_revoke))
        .route("/v3/kv/lease/revoke", post(lease_revoke))
        .route("/v3/lease/keepalive", post(lease_keepalive))
        .route("/v3/lease/timetolive", post(lease_ttl))
        .route("/v3/kv/lease/timetolive", post(lease_ttl))
        .route("/v3/lease/leases", post(lease_leases))
        .route("/v3/watch", post(watch))
        .route("/v3/maintenance/status", post(status))
        .route("/v3/maintenance/snapshot", post(snapshot))
        .route("/v3/maintenance/alarm", post(alarm))
        .route("/v3/cluster/member/list", post(member_list))
        .route("/v3/cluster/member/remove", post(member_remove))
        .route("/v3/cluster/member/promote", post(member_promote))
        .route("/v3/cluster/member/demote", post(member_demote))
        .with_state(EtcdState { node, streams })
}

// ---- errors ----

/// An etcd-shaped error: gRPC code + message, sent with the matching HTTP status.
#[derive(Debug)]
pub struct EtcdError {
    status: StatusCode,
    code: i32,
    message: String,
}

const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const OUT_OF_RANGE: i32 = 11;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

impl EtcdError {
    pub fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            UNAUTHENTICATED,
            "etcdserver: invalid auth token",
        )
    }

    fn body(&self) -> wire::ErrorBody {
        wire::ErrorBody {
            error: self.message.clone(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for EtcdError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<KvError> for EtcdError {
    fn from(e: KvError) -> Self {
        use StatusCode as S;
        match e {
            KvError::Store(s) => match s {
                StoreError::Compacted { .. } => Self::new(
                    S::BAD_REQUEST,
                    OUT_OF_RANGE,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                StoreError::FutureRevision { .. } => Self::new(
                    S::BAD_REQUEST,
                    OUT_OF_RANGE,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                StoreError::LeaseNotFound(_) => Self::new(
                    S::NOT_FOUND,
                    NOT_FOUND,
                    "etcdserver: requested lease not found",
                ),
                StoreError::LeaseExists(_) => Self::new(
                    S::BAD_REQUEST,
                    FAILED_PRECONDITION,
                    "etcdserver: lease already exists",
                ),
                StoreError::DuplicateKey(_) => Self::new(
                    S::BAD_REQUEST,
                    INVALID_ARGUMENT,
                    "etcdserver: duplicate key given in txn request",
                ),
                StoreError::KeyNotFound => Self::new(
                    S::BAD_REQUEST,
                    INVALID_ARGUMENT,
                    "etcdserver: key not found",
                ),
                StoreError::TooLarge { .. } => Self::new(
                    S::PAYLOAD_TOO_LARGE,
                    INVALID_ARGUMENT,
                    "etcdserver: request is too large",
                ),
                StoreError::LeaseTtlTooLarge { .. } => lease_ttl_too_large(),
                StoreError::LeaseTtlTooSmall { .. }
                | StoreError::InvalidArgument(_)
                | StoreError::NotANumber { .. } => {
                    Self::new(S::BAD_REQUEST, INVALID_ARGUMENT, format!("etcdserver: {s}"))
                }
                StoreError::Storage(m) => Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    INTERNAL,
                    format!("etcdserver: {m}"),
                ),
                // etcd's ErrGRPCNoSpace: code and text as etcd's; the status is /api/v1's
                // 503 (etcd's gateway says 429), a node that cannot take the write now.
                StoreError::NoSpace => Self::new(
                    S::SERVICE_UNAVAILABLE,
                    RESOURCE_EXHAUSTED,
                    "etcdserver: mvcc: database space exceeded",
                ),
            },
            KvError::Unavailable(m) => Self::new(
                S::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!("etcdserver: no leader ({m})"),
            ),
            KvError::OutcomeUnknown(m) | KvError::DeadlineExceeded(m) => Self::new(
                S::GATEWAY_TIMEOUT,
                DEADLINE_EXCEEDED,
                format!("etcdserver: request timed out ({m})"),
            ),
            KvError::Cancelled => Self::new(
                S::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "etcdserver: request cancelled",
            ),
            KvError::NotLeader { .. } => Self::new(
                S::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "etcdserver: not leader",
            ),
            KvError::UnknownNode(id) => Self::new(
                S::NOT_FOUND,
                NOT_FOUND,
                format!("etcdserver: member {id:x} not found"),
            ),
            KvError::Membership(m) => Self::new(
                S::BAD_REQUEST,
                FAILED_PRECONDITION,
                format!("etcdserver: {m}"),
            ),
            KvError::Unauthorized => Self::unauthenticated(),
            KvError::LockLost { .. } => Self::new(S::CONFLICT, FAILED_PRECONDITION, e.to_string()),
            KvError::Stopped(m) => Self::new(
                S::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!("etcdserver: server stopped ({m})"),
            ),
            KvError::AlarmCause(m) => Self::new(
                S::BAD_REQUEST,
                FAILED_PRECONDITION,
                format!("etcdserver: alarm not disarmed: {m}"),
            ),
        }
    }
}

type Reply<T> = Result<Json<T>, EtcdError>;

/// etcd's `ErrGRPCLeaseTTLTooLarge` (OutOfRange), for a TTL above
/// [`store::MAX_LEASE_TTL`].
fn lease_ttl_too_large() -> EtcdError {
    EtcdError::new(
        StatusCode::BAD_REQUEST,
        OUT_OF_RANGE,
        "etcdserver: too large lease TTL",
    )
}

/// Parses a JSON body whatever its content type (as etcd's gateway does); an empty
/// body is `{}`.
fn body<T: DeserializeOwned>(b: Bytes) -> Result<T, EtcdError> {
    let bytes: &[u8] = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &b
    };
    serde_json::from_slice(bytes)
        .map_err(|e| EtcdError::bad_request(format!("invalid request body: {e}")))
}

// ---- conversions ----

fn header(node: &Node) -> wire::ResponseHeader {
    let h = node.kv().header();
    wire::ResponseHeader {
        cluster_id: I64(h.cluster_id as i64),
        member_id: I64(h.member_id as i64),
        revision: I64(h.revision),
        raft_term: I64(h.raft_term as i64),
    }
}

fn header_at(node: &Node, revision: i64) -> wire::ResponseHeader {
    let mut h = header(node);
    h.revision = I64(revision);
    h
}

pub fn kv_out(kv: store::KeyValue) -> wire::KeyValue {
    wire::KeyValue {
        key: B64Bytes(kv.key),
        create_revision: I64(kv.create_revision),
        mod_revision: I64(kv.mod_revision),
        version: I64(kv.version),
        value: B64Bytes(kv.value),
        lease: I64(kv.lease),
    }
}

fn key_range(key: B64Bytes, range_end: B64Bytes) -> Result<store::KeyRange, EtcdError> {
    if key.0.is_empty() && range_end.0.is_empty() {
        return Err(EtcdError::bad_request("etcdserver: key is not provided"));
    }
    if !range_end.0.is_empty() && range_end.0 != [0] && range_end.0 <= key.0 {
        return Err(EtcdError::bad_request(
            "etcdserver: range_end must be greater than key (or \"\\0\" for every key from key on)",
        ));
    }
    Ok(store::KeyRange {
        key: key.0,
        range_end: range_end.0,
    })
}

fn nonneg(name: &str, v: I64) -> Result<i64, EtcdError> {
    if v.0 < 0 {
        return Err(EtcdError::bad_request(format!(
            "etcdserver: {name} must not be negative"
        )));
    }
    Ok(v.0)
}

fn range_in(r: wire::RangeRequest) -> Result<store::RangeRequest, EtcdError> {
    Ok(store::RangeRequest {
        range: key_range(r.key, r.range_end)?,
        revision: nonneg("revision", r.revision)?,
        limit: nonneg("limit", r.limit)?,
        keys_only: r.keys_only,
        count_only: r.count_only,
        serializable: r.serializable,
        sort_order: match r.sort_order {
            wire::SortOrder::None => store::SortOrder::None,
            wire::SortOrder::Ascend => store::SortOrder::Ascend,
            wire::SortOrder::Descend => store::SortOrder::Descend,
        },
        sort_target: match r.sort_target {
            wire::SortTarget::Key => store::SortTarget::Key,
            wire::SortTarget::Version => store::SortTarget::Version,
            wire::SortTarget::Create => store::SortTarget::Create,
            wire::SortTarget::Mod => store::SortTarget::Mod,
            wire::SortTarget::Value => store::SortTarget::Value,
        },
        min_mod_revision: nonneg("min_mod_revision", r.min_mod_revision)?,
        max_mod_revision: nonneg("max_mod_revision", r.max_mod_revision)?,
        min_create_revision: nonneg("min_create_revision", r.min_create_revision)?,
        max_create_revision: nonneg("max_create_revision", r.max_create_revision)?,
        page_only: false,
    })
}

fn range_out(node: &Node, r: store::RangeResponse) -> wire::RangeResponse {
    wire::RangeResponse {
        header: header_at(node, r.revision),
        kvs: r.kvs.into_iter().map(kv_out).collect(),
        more: r.more,
        count: I64(r.count),
    }
}

fn put_in(p: wire::PutRequest) -> Result<store::PutRequest, EtcdError> {
    if p.key.0.is_empty() {
        return Err(EtcdError::bad_request("etcdserver: key is not provided"));
    }
    if p.ignore_value && !p.value.0.is_empty() {
        return Err(EtcdError::bad_request("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease.0 != 0 {
        return Err(EtcdError::bad_request("etcdserver: lease is provided"));
    }
    Ok(store::PutRequest {
        key: p.key.0,
        value: p.value.0,
        lease: p.lease.0,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

fn put_out(node: &Node, r: store::PutResponse) -> wire::PutResponse {
    wire::PutResponse {
        header: header_at(node, r.revision),
        prev_kv: r.prev_kv.map(kv_out),
    }
}

fn delete_in(d: wire::DeleteRangeRequest) -> Result<store::DeleteRangeRequest, EtcdError> {
    Ok(store::DeleteRangeRequest {
        range: key_range(d.key, d.range_end)?,
        prev_kv: d.prev_kv,
    })
}

fn delete_out(node: &Node, r: store::DeleteRangeResponse) -> wire::DeleteRangeResponse {
    wire::DeleteRangeResponse {
        header: header_at(node, r.revision),
        deleted: I64(r.deleted),
        prev_kvs: r.prev_kvs.into_iter().map(kv_out).collect(),
    }
}

fn compare_in(c: wire::Compare) -> Result<store::Compare, EtcdError> {
    let target = match c.target {
        wire::CompareTarget::Version => {
            store::CompareTarget::Version(c.version.unwrap_or_default().0)
        }
        wire::CompareTarget::Create => {
            store::CompareTarget::Create(c.create_revision.unwrap_or_default().0)
        }
        wire::CompareTarget::Mod => store::CompareTarget::Mod(c.mod_revision.unwrap_or_default().0),
        wire::CompareTarget::Value => store::CompareTarget::Value(c.value.unwrap_or_default().0),
        wire::CompareTarget::Lease => store::CompareTarget::Lease(c.lease.unwrap_or_default().0),
    };
    let op = match c.result {
        wire::CompareResult::Equal => store::CompareOp::Equal,
        wire::CompareResult::NotEqual => store::CompareOp::NotEqual,
        wire::CompareResult::Less => store::CompareOp::Less,
        wire::CompareResult::Greater => store::CompareOp::Greater,
    };
    Ok(store::Compare {
        range: key_range(c.key, c.range_end)?,
        op,
        target,
    })
}

fn op_in(o: wire::RequestOp) -> Result<store::RequestOp, EtcdError> {
    match (o.request_range, o.request_put, o.request_delete_range) {
        (Some(r), None, None) => Ok(store::RequestOp::Range(range_in(r)?)),
        (None, Some(p), None) => Ok(store::RequestOp::Put(put_in(p)?)),
        (None, None, Some(d)) => Ok(store::RequestOp::DeleteRange(delete_in(d)?)),
        _ => Err(EtcdError::bad_request(
            "etcdserver: a txn op must hold exactly one of request_range, request_put, request_delete_range",
        )),
    }
}

fn op_out(node: &Node, o: store::ResponseOp) -> wire::ResponseOp {
    match o {
        store::ResponseOp::Range(r) => wire::ResponseOp {
            response_range: Some(range_out(node, r)),
            ..Default::default()
        },
        store::ResponseOp::Put(r) => wire::ResponseOp {
            response_put: Some(put_out(node, r)),
            ..Default::default()
        },
        store::ResponseOp::DeleteRange(r) => wire::ResponseOp {
            response_delete_range: Some(delete_out(node, r)),
            ..Default::default()
        },
    }
}

// ---- KV handlers ----

/// Most bytes of keys and values one `/v3/kv/range` answers (security review M6: unbounded
/// ranges were built whole in memory, 200 MB each); a larger answer is refused before it
/// is copied, and the client pages with `limit` (and `more`). Checked on the current
/// revision; reads at a past revision and ranges inside a txn are not.
pub const MAX_RANGE_RESPONSE_BYTES: usize = 64 << 20;

async fn range(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::RangeResponse> {
    let req = range_in(body(b)?)?;
    let size = s.node.mvcc().range_size(&req);
    if size > MAX_RANGE_RESPONSE_BYTES {
        return Err(EtcdError::new(
            StatusCode::BAD_REQUEST,
            RESOURCE_EXHAUSTED,
            format!(
                "etcdserver: range response too large ({size} bytes of keys and values, at \
                 most {MAX_RANGE_RESPONSE_BYTES}); page with limit"
            ),
        ));
    }
    let resp = s.node.kv().range(req).await?;
    Ok(Json(range_out(&s.node, resp)))
}

async fn put(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::PutResponse> {
    let req = put_in(body(b)?)?;
    let resp = s.node.kv().put(req).await?;
    Ok(Json(put_out(&s.node, resp)))
}

async fn delete_range(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::DeleteRangeResponse> {
    let req = delete_in(body(b)?)?;
    let resp = s.node.kv().delete_range(req).await?;
    Ok(Json(delete_out(&s.node, resp)))
}

async fn txn(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::TxnResponse> {
    let t: wire::TxnRequest = body(b)?;
    let req = store::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_in)
            .collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op_in).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op_in).collect::<Result<_, _>>()?,
    };
    let resp = s.node.kv().txn(req).await?;
    Ok(Json(wire::TxnResponse {
        header: header_at(&s.node, resp.revision),
        succeeded: resp.succeeded,
        responses: resp
            .responses
            .into_iter()
            .map(|o| op_out(&s.node, o))
            .collect(),
    }))
}

async fn compaction(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::HeaderOnly> {
    let c: wire::CompactionRequest = body(b)?;
    let rev = s.node.kv().compact(nonneg("revision", c.revision)?).await?;
    Ok(Json(wire::HeaderOnly {
        header: header_at(&s.node, rev),
    }))
}

// ---- leases ----

async fn lease_grant(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::LeaseGrantResponse> {
    let g: wire::LeaseGrantRequest = body(b)?;
    if g.ttl.0 <= 0 {
        return Err(EtcdError::bad_request(
            "etcdserver: lease TTL must be positive",
        ));
    }
    // Refused here and again by the state machine (security review H3).
    if g.ttl.0 > store::MAX_LEASE_TTL {
        return Err(lease_ttl_too_large());
    }
    let (id, ttl) = s
        .node
        .kv()
        .lease_grant(g.ttl.0, nonneg("ID", g.id)?)
        .await?;
    Ok(Json(wire::LeaseGrantResponse {
        header: header(&s.node),
        id: I64(id),
        ttl: I64(ttl),
        error: String::new(),
    }))
}

async fn lease_revoke(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::HeaderOnly> {
    let r: wire::LeaseIdRequest = body(b)?;
    let rev = s.node.kv().lease_revoke(r.id.0).await?;
    Ok(Json(wire::HeaderOnly {
        header: header_at(&s.node, rev),
    }))
}

async fn lease_keepalive(
    State(s): State<EtcdState>,
    b: Bytes,
) -> Reply<wire::StreamItem<wire::LeaseKeepAliveResponse>> {
    let r: wire::LeaseIdRequest = body(b)?;
    let ttl = s.node.kv().lease_keepalive(r.id.0).await?;
    Ok(Json(wire::StreamItem {
        result: Some(wire::LeaseKeepAliveResponse {
            header: header(&s.node),
            id: r.id,
            ttl: I64(ttl),
        }),
        error: None,
    }))
}

async fn lease_ttl(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::LeaseTimeToLiveResponse> {
    let r: wire::LeaseIdRequest = body(b)?;
    let t = s.node.kv().lease_time_to_live(r.id.0).await?;
    Ok(Json(wire::LeaseTimeToLiveResponse {
        header: header(&s.node),
        id: I64(t.id),
        ttl: I64(t.ttl),
        granted_ttl: I64(t.granted_ttl),
        keys: if r.keys {
            t.keys.into_iter().map(B64Bytes).collect()
        } else {
            Vec::new()
        },
    }))
}

async fn lease_leases(State(s): State<EtcdState>) -> Reply<wire::LeaseLeasesResponse> {
    let ids = s.node.kv().leases().await?;
    Ok(Json(wire::LeaseLeasesResponse {
        header: header(&s.node),
        leases: ids
            .into_iter()
            .map(|id| wire::LeaseStatus { id: I64(id) })
            .collect(),
    }))
}

// ---- watch ----

fn line<T: serde::Serialize>(item: &wire::StreamItem<T>) -> Bytes {
    let mut v = serde_json::to_vec(item).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn watch(
    State(s): State<EtcdState>,
    credential: super::streams::CredentialKey,
    b: Bytes,
) -> Result<Response, EtcdError> {
    let permit = s
        .streams
        .acquire(super::streams::StreamKind::Watch, credential)
        .map_err(|e| {
            EtcdError::new(
                StatusCode::TOO_MANY_REQUESTS,
                RESOURCE_EXHAUSTED,
                e.to_string(),
            )
        })?;
    let w: wire::WatchRequest = body(b)?;
    let Some(c) = w.create_request else {
        return Err(EtcdError::bad_request(
            "etcdserver: only create_request is supported on the HTTP gateway",
        ));
    };
    let req = store::WatchRequest {
        range: key_range(c.key, c.range_end)?,
        start_revision: nonneg("start_revision", c.start_revision)?,
        prev_kv: c.prev_kv,
        progress_notify: c.progress_notify,
        filter_put: c.filters.contains(&wire::FilterType::NoPut),
        filter_delete: c.filters.contains(&wire::FilterType::NoDelete),
    };
    let node = s.node.clone();
    let stream = node.kv().watch(req);
    let watch_id = I64(stream.id() as i64);
    let created = wire::WatchResponse {
        header: header(&node),
        watch_id,
        created: true,
        ..Default::default()
    };
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(line(&wire::StreamItem {
            result: Some(created),
            error: None,
        }))
    });
    let rest = futures::stream::unfold(
        (stream, node, permit),
        move |(mut stream, node, permit)| async move {
            let msg = stream.recv().await?;
            let resp = match msg {
                store::WatchMessage::Events { revision, events } => wire::WatchResponse {
                    header: header_at(&node, revision),
                    watch_id,
                    events: events
                        .into_iter()
                        .map(|e| wire::Event {
                            kind: match e.kind {
                                store::EventKind::Put => wire::EventType::Put,
                                store::EventKind::Delete => wire::EventType::Delete,
                            },
                            kv: kv_out(e.kv),
                            prev_kv: e.prev_kv.map(kv_out),
                        })
                        .collect(),
                    ..Default::default()
                },
                store::WatchMessage::Progress { revision } => wire::WatchResponse {
                    header: header_at(&node, revision),
                    watch_id,
                    ..Default::default()
                },
                store::WatchMessage::Canceled(reason) => wire::WatchResponse {
                    header: header(&node),
                    watch_id,
                    canceled: true,
                    compact_revision: match reason {
                        store::CancelReason::Compacted { compact_revision } => {
                            I64(compact_revision)
                        }
                        _ => I64(0),
                    },
                    cancel_reason: reason.to_string(),
                    ..Default::default()
                },
            };
            Some((
                Ok::<_, Infallible>(line(&wire::StreamItem {
                    result: Some(resp),
                    error: None,
                })),
                (stream, node, permit),
            ))
        },
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(first.chain(rest)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

// ---- maintenance and cluster ----

async fn status(State(s): State<EtcdState>) -> Reply<wire::StatusResponse> {
    let st = s.node.status();
    Ok(Json(wire::StatusResponse {
        header: header(&s.node),
        version: format!("3.4.0-cairn-{}", env!("CARGO_PKG_VERSION")),
        db_size: I64(st.db_size as i64),
        leader: I64(st.leader.unwrap_or(0) as i64),
        raft_index: I64(st.last_log_index.unwrap_or(0) as i64),
        raft_term: I64(st.term as i64),
        raft_applied_index: I64(st.applied.unwrap_or(0) as i64),
        is_learner: st.state == raft::NodeState::Learner,
        // etcd lists the active alarms here, one `memberID:… alarm:…` each.
        errors: s
            .node
            .mvcc()
            .alarms()
            .into_iter()
            .map(|a| format!("memberID:{} alarm:{}", a.member_id, a.alarm.as_str()))
            .collect(),
    }))
}

/// The kind named by an `AlarmRequest`'s `alarm`: `None` for `NONE` (every kind, in a
/// `GET`). Cairn raises `NOSPACE` only; `CORRUPT` lists as none and is refused otherwise.
fn alarm_type_in(name: &str) -> Result<Option<store::AlarmType>, EtcdError> {
    match name {
        "" | "NONE" => Ok(None),
        "NOSPACE" => Ok(Some(store::AlarmType::NoSpace)),
        other => Err(EtcdError::bad_request(format!(
            "etcdserver: unsupported alarm type {other:?} (cairn raises NOSPACE only)"
        ))),
    }
}

fn alarm_out(a: store::AlarmMember) -> wire::AlarmMember {
    wire::AlarmMember {
        member_id: I64(a.member_id as i64),
        alarm: a.alarm.as_str().to_string(),
    }
}

/// etcd's `Maintenance.Alarm`: `GET` lists the active alarms (of one kind, or all),
/// `ACTIVATE` raises one for a member on every member, `DEACTIVATE` clears it once its
/// cause is gone (`raft::alarms`; else a FailedPrecondition error saying why).
async fn alarm(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::AlarmResponse> {
    let r: wire::AlarmRequest = body(b)?;
    let kind = match alarm_type_in(&r.alarm) {
        Err(_) if r.alarm == "CORRUPT" && matches!(r.action.as_str(), "" | "GET") => {
            let _ = s.node.kv().alarms().await?;
            return Ok(Json(wire::AlarmResponse {
                header: header(&s.node),
                alarms: Vec::new(),
            }));
        }
        k => k?,
    };
    let kv = s.node.kv();
    let member = |kind: Option<store::AlarmType>| -> Result<store::AlarmMember, EtcdError> {
        let alarm = kind.ok_or_else(|| {
            EtcdError::bad_request("etcdserver: an alarm type is required (NOSPACE)")
        })?;
        if r.member_id.0 == 0 {
            return Err(EtcdError::bad_request("etcdserver: memberID is required"));
        }
        Ok(store::AlarmMember {
            member_id: r.member_id.0 as u64,
            alarm,
        })
    };
    let alarms = match r.action.as_str() {
        "" | "GET" => kv
            .alarms()
            .await?
            .into_iter()
            .filter(|a| kind.is_none_or(|k| a.alarm == k))
            .collect(),
        "ACTIVATE" => kv.alarm_activate(member(kind)?).await?,
        "DEACTIVATE" => kv.alarm_disarm(member(kind)?).await?,
        other => {
            return Err(EtcdError::bad_request(format!(
                "etcdserver: unknown alarm action {other:?} (GET, ACTIVATE or DEACTIVATE)"
            )));
        }
    };
    Ok(Json(wire::AlarmResponse {
        header: header(&s.node),
        alarms: alarms.into_iter().map(alarm_out).collect(),
    }))
}

/// Streams the backup (`raft::backup::save_stream`): it is never whole in memory.
async fn snapshot(State(s): State<EtcdState>) -> Result<Response, EtcdError> {
    let chunks = raft::backup::save_stream(&s.node).await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn member_list(State(s): State<EtcdState>) -> Reply<wire::MemberListResponse> {
    let st = s.node.status();
    let member = |(id, addr): (u64, String), learner: bool| wire::Member {
        id: I64(id as i64),
        name: format!("{id:x}"),
        peer_urls: vec![addr.clone()],
        client_urls: vec![addr],
        is_learner: learner,
    };
    let mut members: Vec<wire::Member> = st.voters.into_iter().map(|m| member(m, false)).collect();
    members.extend(st.learners.into_iter().map(|m| member(m, true)));
    Ok(Json(wire::MemberListResponse {
        header: header(&s.node),
        members,
    }))
}

async fn member_remove(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::MemberListResponse> {
    let r: wire::MemberRemoveRequest = body(b)?;
    s.node.remove(r.id.0 as u64).await?;
    member_list(State(s)).await
}

/// etcd's MemberPromote: `{"ID": …}`, answered with the new member list.
async fn member_promote(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::MemberListResponse> {
    let r: wire::MemberRemoveRequest = body(b)?;
    s.node.promote(r.id.0 as u64).await?;
    member_list(State(s)).await
}

/// Cairn's MemberDemote (etcd has none): a voter becomes a learner.
async fn member_demote(State(s): State<EtcdState>, b: Bytes) -> Reply<wire::MemberListResponse> {
    let r: wire::MemberRemoveRequest = body(b)?;
    s.node.demote(r.id.0 as u64).await?;
    member_list(State(s)).await
}

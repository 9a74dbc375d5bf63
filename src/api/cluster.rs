//! `GET /cluster`: this node's view of itself and of the cluster (its id, state, term,
//! commit and apply points, the membership, the leader it knows, whether its scheduler
//! is the active one, maintenance, the store's alarms, its version). `cairn cluster
//! status` asks every member and puts the answers side by side.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use cairn_client::api::{ClusterMember, NodeInfo};

use super::error::ApiResult;
use super::v1::ApiState;

#[utoipa::path(
    get,
    path = "/cluster",
    operation_id = "cluster",
    tag = "cluster",
    summary = "This node's view of itself and of the cluster",
    responses((status = 200, description = "The answering node's view", body = NodeInfo)),
    security(("bearer" = ["admin", "user", "read-only"])),
)]
pub async fn cluster(State(st): State<ApiState>) -> ApiResult<Json<NodeInfo>> {
    let s = st.node.status();
    let members = |m: Vec<(u64, String)>| {
        m.into_iter()
            .map(|(id, addr)| ClusterMember { id, addr })
            .collect()
    };
    let alarms = st
        .node
        .mvcc()
        .alarms()
        .iter()
        .map(|a| format!("memberID:{:x} alarm:{}", a.member_id, a.alarm.as_str()))
        .collect();
    Ok(Json(NodeInfo {
        node_id: st.node.id(),
        leader_id: s.leader,
        scheduler_active: st.scheduler_active.load(Ordering::Relaxed),
        revision: st.dm.kv().header().revision,
        version: env!("CARGO_PKG_VERSION").to_string(),
        peer_protocol: raft::rpc::PEER_PROTOCOL,
        cluster_id: s.cluster_id,
        addr: s.addr,
        state: s.state.as_str().to_string(),
        term: s.term,
        committed: s.committed,
        applied: s.applied,
        voters: members(s.voters),
        learners: members(s.learners),
        maintenance: *st.maintenance.borrow(),
        alarms,
        db_size: s.db_size,
    }))
}

//! `GET /cluster`: this node's view of the cluster (its id, the leader it knows, whether
//! its scheduler is the active one, the store revision it has applied).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use cairn_client::api::NodeInfo;

use super::error::ApiResult;
use super::v1::ApiState;

pub async fn cluster(State(st): State<ApiState>) -> ApiResult<Json<NodeInfo>> {
    let s = st.node.status();
    Ok(Json(NodeInfo {
        node_id: st.node.id(),
        leader_id: s.leader,
        scheduler_active: st.scheduler_active.load(Ordering::Relaxed),
        revision: st.dm.kv().header().revision,
    }))
}

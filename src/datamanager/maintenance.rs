//! Maintenance mode in the store: the key `rs/maintenance` asks every node to switch;
//! each node records the mode it is in under `rs/nodemode/<node id>` (on its own lease, so
//! a dead node's entry goes away), which is what `GET /api/v1/maintenance` shows.

use cairn_client::api::{MaintenanceStatus, NodeMode};

/// Re-exported for the node's maintenance switch (`src/mode_switch.rs`).
pub use super::keys::MAINTENANCE;
use super::keys::{IMPORTING, NODE_MODE};
use super::{Datamanager, DmError, absent, delete, encode, put, put_with_lease};

impl Datamanager {
    /// Whether maintenance is asked for.
    pub async fn maintenance_requested(&self) -> Result<bool, DmError> {
        Ok(self
            .kv()
            .get(MAINTENANCE.as_bytes().to_vec())
            .await?
            .is_some())
    }

    /// Turns maintenance on (`Conflict` if it already is) or off (`Conflict` if it is
    /// not, or while an import is being applied).
    pub async fn set_maintenance(&self, on: bool) -> Result<(), DmError> {
        if on {
            let resp = self
                .commit(
                    vec![absent(MAINTENANCE)],
                    vec![put(MAINTENANCE, encode(&chrono::Utc::now()))],
                )
                .await?;
            if !resp.succeeded {
                return Err(DmError::Refused("maintenance mode is already on".into()));
            }
            return Ok(());
        }
        if self
            .kv()
            .get(IMPORTING.as_bytes().to_vec())
            .await?
            .is_some()
        {
            return Err(DmError::Refused(
                "an import was started and did not complete: import again (maintenance ends only after an import completes)".into(),
            ));
        }
        if !self.maintenance_requested().await? {
            return Err(DmError::Refused("maintenance mode is already off".into()));
        }
        self.commit(vec![], vec![delete(MAINTENANCE)]).await?;
        Ok(())
    }

    /// Records this node's mode on `lease`.
    pub async fn put_node_mode(&self, mode: &NodeMode, lease: i64) -> Result<(), DmError> {
        self.commit(
            vec![],
            vec![put_with_lease(
                format!("{NODE_MODE}{}", mode.node_id),
                encode(mode),
                lease,
            )],
        )
        .await?;
        Ok(())
    }

    pub async fn maintenance_status(&self) -> Result<MaintenanceStatus, DmError> {
        let mut nodes: Vec<NodeMode> = self
            .scan_json(NODE_MODE)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        nodes.sort_by_key(|n| n.node_id);
        Ok(MaintenanceStatus {
            requested: self.maintenance_requested().await?,
            nodes,
        })
    }
}

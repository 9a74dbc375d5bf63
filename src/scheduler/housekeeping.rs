//! Slow periodic chores of the active scheduler: change-group compaction, run-event
//! retention, and expiry of old caches and workspace archives.

use super::Shared;
use crate::datamanager::Datamanager;
use crate::datamanager::archives::ArchiveStore;
use crate::datamanager::caches::CacheStore;

impl Shared {
    pub(super) async fn housekeeping(&self, dm: &Datamanager) {
        match dm.compact_change_groups().await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "change groups compacted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "change-group compaction failed"),
        }
        match dm.prune_events(self.config.keep_events).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "old run events pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "run-event pruning failed"),
        }
        let ttl =
            chrono::Duration::from_std(self.config.blob_ttl).unwrap_or(chrono::Duration::days(7));
        let cutoff = chrono::Utc::now() - ttl;
        let caches = CacheStore::new(self.blobs.clone());
        match caches.expire(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired caches deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cache expiry failed"),
        }
        let archives = ArchiveStore::new(self.blobs.clone());
        match archives.expire(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired workspace archives deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "workspace archive expiry failed"),
        }
        // Uploads abandoned by writers that died an hour ago or more.
        let stale = chrono::Utc::now() - chrono::Duration::hours(1);
        if let Err(e) = self.blobs.clean_staging(stale).await {
            tracing::warn!(error = %e, "cleaning abandoned uploads failed");
        }
    }
}

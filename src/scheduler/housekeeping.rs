//! Slow periodic chores of the active scheduler: change-group compaction, run-event
//! retention, expiry of idempotency records of run creations after a day, expiry of old caches, workspace archives and source snapshots, each after
//! its own TTL (a snapshot once also used by no run still to be archived), and the
//! retention pass of archived runs (`retention.rs`).

use std::collections::BTreeSet;

use cairn_client::runconfig::SourceRef;
use chrono::{DateTime, Utc};

use super::SchedulerTask;
use crate::datamanager::Datamanager;
use crate::datamanager::archives::ArchiveStore;
use crate::datamanager::caches::CacheStore;

impl SchedulerTask {
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
        let now = chrono::Utc::now();
        // A TTL too long to subtract keeps everything.
        let cutoff = |ttl: std::time::Duration| {
            chrono::Duration::from_std(ttl)
                .ok()
                .and_then(|ttl| now.checked_sub_signed(ttl))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let caches = CacheStore::new(self.blobs.clone());
        match caches.expire(cutoff(self.config.cache_ttl)).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired caches deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cache expiry failed"),
        }
        let archives = ArchiveStore::new(self.blobs.clone());
        match archives.expire(cutoff(self.config.archive_ttl)).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired workspace archives deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "workspace archive expiry failed"),
        }
        match self
            .expire_sources(dm, cutoff(self.config.source_ttl))
            .await
        {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired source snapshots deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "source snapshot expiry failed"),
        }
        let once_ttl = std::time::Duration::from_secs(cairn_client::api::IDEMPOTENCY_KEY_TTL_SECS);
        match dm.expire_create_records(cutoff(once_ttl)).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "old idempotency records deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "idempotency record expiry failed"),
        }
        self.retention(dm).await;
        // Uploads abandoned by writers that died an hour ago or more.
        let stale = chrono::Utc::now() - chrono::Duration::hours(1);
        if let Err(e) = self.blobs.clean_staging(stale).await {
            tracing::warn!(error = %e, "cleaning abandoned uploads failed");
        }
    }

    /// Deletes source snapshots written before `cutoff` that no run still to be archived
    /// uses; returns how many.
    async fn expire_sources(
        &self,
        dm: &Datamanager,
        cutoff: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        let stored = self.blobs.list(SOURCES_PREFIX).await?;
        if !stored.iter().any(|(_, meta)| meta.last_modified < cutoff) {
            return Ok(0);
        }
        let mut in_use = BTreeSet::new();
        for id in dm.active_run_ids().await? {
            match dm.run_config(&id).await {
                Ok(config) => {
                    if let Some(SourceRef::Snapshot { object }) = config.source {
                        in_use.insert(object);
                    }
                }
                Err(crate::datamanager::DmError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let doomed = expired_sources(
            stored.into_iter().map(|(k, m)| (k, m.last_modified)),
            cutoff,
            &in_use,
        );
        Ok(self.blobs.delete_keys(doomed).await?)
    }
}

/// Where uploaded source snapshots live (`sources/<uuid>.tar`).
const SOURCES_PREFIX: &str = "sources/";

/// The snapshots to delete: written before `cutoff` and not in `in_use`.
fn expired_sources(
    stored: impl IntoIterator<Item = (String, DateTime<Utc>)>,
    cutoff: DateTime<Utc>,
    in_use: &BTreeSet<String>,
) -> Vec<String> {
    stored
        .into_iter()
        .filter(|(key, written)| *written < cutoff && !in_use.contains(key))
        .map(|(key, _)| key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_snapshots_go_unless_a_run_still_to_be_archived_uses_them() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).expect("a time");
        let stored = vec![
            ("sources/old.tar".to_string(), t(10)),
            ("sources/old-in-use.tar".to_string(), t(10)),
            ("sources/new.tar".to_string(), t(100)),
        ];
        let in_use = BTreeSet::from(["sources/old-in-use.tar".to_string()]);
        assert_eq!(
            expired_sources(stored, t(50), &in_use),
            vec!["sources/old.tar".to_string()]
        );
    }
}

//! Run events: every phase or result change of a run, written in the same transaction as
//! the run. An event's sequence is the store revision that wrote it, so consumers resume
//! after a sequence by reading and then watching from the next revision: no gap, no
//! duplicate.

use cairn_client::run::RunEvent;
use store::{KeyRange, RangeRequest, SortOrder, SortTarget, WatchRequest, WatchStream};

use super::keys;
use super::{Datamanager, DmError, decode, delete};

impl Datamanager {
    /// Events with a sequence greater than `after`, oldest first, and the revision they
    /// were read at (watch from the next one to continue).
    pub async fn events_after(&self, after: u64) -> Result<(Vec<RunEvent>, i64), DmError> {
        let mut req = RangeRequest::new(KeyRange::prefix(keys::EVENT.as_bytes().to_vec()));
        req.min_mod_revision = i64::try_from(after).unwrap_or(i64::MAX).saturating_add(1);
        req.sort_order = SortOrder::Ascend;
        req.sort_target = SortTarget::Mod;
        let resp = self.kv().range(req).await?;
        let mut events = Vec::with_capacity(resp.kvs.len());
        for kv in &resp.kvs {
            events.push(event_from(&kv.key, &kv.value, kv.mod_revision)?);
        }
        Ok((events, resp.revision))
    }

    /// New events from revision `from` on.
    pub fn watch_events(&self, from: i64) -> WatchStream {
        self.kv().watch(WatchRequest {
            range: KeyRange::prefix(keys::EVENT.as_bytes().to_vec()),
            start_revision: from,
            prev_kv: false,
            progress_notify: true,
            filter_put: false,
            filter_delete: true,
        })
    }

    /// Deletes all but the newest `keep` events. Returns how many were deleted.
    pub async fn prune_events(&self, keep: usize) -> Result<usize, DmError> {
        let mut kvs = self.scan(keys::EVENT, true).await?;
        if kvs.len() <= keep {
            return Ok(0);
        }
        kvs.sort_by_key(|kv| kv.mod_revision);
        let excess = kvs.len() - keep;
        for chunk in kvs[..excess].chunks(128) {
            let ops = chunk
                .iter()
                .map(|kv| delete(String::from_utf8_lossy(&kv.key).into_owned()))
                .collect();
            self.commit(vec![], ops).await?;
        }
        Ok(excess)
    }
}

/// Decodes a stored event and stamps its sequence.
pub fn event_from(key: &[u8], value: &[u8], mod_revision: i64) -> Result<RunEvent, DmError> {
    let mut ev: RunEvent = decode(&String::from_utf8_lossy(key), value)?;
    ev.sequence = u64::try_from(mod_revision).unwrap_or_default();
    Ok(ev)
}

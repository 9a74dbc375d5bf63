//! [`RecordCache`]: archived runs' records (run, config, events) read from segments,
//! kept by run id within a byte budget, least recently used out first. Records are
//! immutable, so a cached one is never stale; a run deleted by retention may linger
//! until evicted, but it is only reached through the index, which no longer names it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::datamanager::segments::ArchivedRun;

/// The default budget: 32 MiB of records.
pub const DEFAULT_BUDGET: u64 = 32 << 20;

/// A bounded LRU cache of archived records (cheap to clone: clones share it).
#[derive(Clone)]
pub struct RecordCache {
    inner: Arc<Mutex<Lru>>,
}

struct Lru {
    budget: u64,
    used: u64,
    /// Ticks only grow: the smallest is the least recently used.
    tick: u64,
    by_id: HashMap<String, (Arc<ArchivedRun>, u64, u64)>,
    by_tick: BTreeMap<u64, String>,
}

impl RecordCache {
    /// A cache holding at most `budget` bytes of records (each counted at its size in
    /// the segment).
    pub fn new(budget: u64) -> RecordCache {
        RecordCache {
            inner: Arc::new(Mutex::new(Lru {
                budget,
                used: 0,
                tick: 0,
                by_id: HashMap::new(),
                by_tick: BTreeMap::new(),
            })),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<ArchivedRun>> {
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        let (record, old) = {
            let (record, _, at) = lru.by_id.get_mut(id)?;
            let old = std::mem::replace(at, tick);
            (record.clone(), old)
        };
        lru.by_tick.remove(&old);
        lru.by_tick.insert(tick, id.to_string());
        Some(record)
    }

    /// Keeps `record` of `bytes`; a record over the whole budget is not kept.
    pub fn insert(&self, id: &str, record: Arc<ArchivedRun>, bytes: u64) {
        let mut lru = self.lock();
        if bytes > lru.budget {
            return;
        }
        lru.remove(id);
        while lru.used + bytes > lru.budget {
            let Some((_, oldest)) = lru.by_tick.pop_first() else {
                break;
            };
            if let Some((_, size, _)) = lru.by_id.remove(&oldest) {
                lru.used -= size;
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.used += bytes;
        lru.by_tick.insert(tick, id.to_string());
        lru.by_id.insert(id.to_string(), (record, bytes, tick));
    }

    /// Bytes and records held.
    pub fn usage(&self) -> (u64, usize) {
        let lru = self.lock();
        (lru.used, lru.by_id.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock leaves consistent maps (every update is
        // applied whole), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Lru {
    fn remove(&mut self, id: &str) {
        if let Some((_, size, tick)) = self.by_id.remove(id) {
            self.used -= size;
            self.by_tick.remove(&tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runservice::fixture::{config, task};
    use crate::runservice::new_run;

    fn record(id: &str) -> Arc<ArchivedRun> {
        let cfg = config(vec![task("a", &[])]);
        let mut run = new_run(&cfg, 1, chrono::Utc::now());
        run.id = id.to_string();
        Arc::new(ArchivedRun {
            run,
            config: cfg,
            events: Vec::new(),
        })
    }

    #[test]
    fn the_least_recently_used_record_goes_first_and_the_budget_holds() {
        let cache = RecordCache::new(300);
        cache.insert("a", record("a"), 100);
        cache.insert("b", record("b"), 100);
        cache.insert("c", record("c"), 100);
        assert!(cache.get("a").is_some(), "a is now the most recent");
        cache.insert("d", record("d"), 100);
        assert!(cache.get("b").is_none(), "b was the least recently used");
        for kept in ["a", "c", "d"] {
            assert_eq!(cache.get(kept).expect(kept).run.id, kept);
        }
        assert_eq!(cache.usage(), (300, 3));
        cache.insert("big", record("big"), 301);
        assert!(cache.get("big").is_none(), "over the whole budget");
        cache.insert("e", record("e"), 250);
        assert_eq!(cache.usage(), (250, 1), "all three evicted to fit 250");
        assert!(cache.get("e").is_some());
    }

    #[test]
    fn inserting_an_id_again_replaces_it_without_counting_it_twice() {
        let cache = RecordCache::new(1000);
        cache.insert("a", record("a"), 400);
        cache.insert("a", record("a"), 500);
        assert_eq!(cache.usage(), (500, 1));
    }
}

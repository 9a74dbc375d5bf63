//! The in-memory engine: a `BTreeMap` behind a lock. For tests and the simulated network;
//! "durable" means "survives as long as the value lives", which is what a simulated restart
//! over the same `Arc` models.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use super::{BatchOp, Cf, Durability, Engine, EngineError, Pair, Scan, WriteBatch};

#[derive(Default)]
pub struct MemEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> EngineError {
    EngineError::Io("memory engine lock poisoned".into())
}

impl Scan for MemEngine {
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError> {
        let (s, e) = cf.bounds(start, end);
        if s >= e {
            return Ok(Vec::new());
        }
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(scan_map(&map, &s, &e, limit, reverse))
    }
}

impl Engine for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map.get(&cf.full_key(key)).cloned())
    }

    fn write(&self, batch: WriteBatch, _durability: Durability) -> Result<(), EngineError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for op in batch.ops {
            match op {
                BatchOp::Put(cf, k, v) => {
                    map.insert(cf.full_key(&k), v);
                }
                BatchOp::Delete(cf, k) => {
                    map.remove(&cf.full_key(&k));
                }
                BatchOp::DeleteRange(cf, s, e) => {
                    let (s, e) = cf.bounds(&s, e.as_deref());
                    if s < e {
                        let doomed: Vec<Vec<u8>> = map
                            .range::<Vec<u8>, _>((Bound::Included(&s), Bound::Excluded(&e)))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            map.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn name(&self) -> &'static str {
        "mem"
    }

    /// A copy of the map (this engine is for tests).
    fn view(&self) -> Result<Option<Box<dyn Scan>>, EngineError> {
        let map = self.map.read().map_err(|_| poisoned())?.clone();
        Ok(Some(Box::new(MemView { map })))
    }
}

struct MemView {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Scan for MemView {
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError> {
        let (s, e) = cf.bounds(start, end);
        if s >= e {
            return Ok(Vec::new());
        }
        Ok(scan_map(&self.map, &s, &e, limit, reverse))
    }
}

/// Up to `limit` pairs of `[s, e)` (full keys), family prefix stripped.
fn scan_map(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    s: &[u8],
    e: &[u8],
    limit: usize,
    reverse: bool,
) -> Vec<Pair> {
    let range = map.range::<[u8], _>((Bound::Included(s), Bound::Excluded(e)));
    let strip = |(k, v): (&Vec<u8>, &Vec<u8>)| (k[1..].to_vec(), v.clone());
    if reverse {
        range.rev().take(limit).map(strip).collect()
    } else {
        range.take(limit).map(strip).collect()
    }
}

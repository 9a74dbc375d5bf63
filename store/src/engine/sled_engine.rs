//! The sled engine: pure Rust, the default build. One sled tree holds every column
//! family under its prefix byte, so a `sled::Batch` is atomic across families; a
//! `Durability::Sync` write calls `flush()` (sled alone syncs only every 500 ms).

use std::collections::BTreeSet;
use std::path::Path;

use super::{BatchOp, Cf, Durability, Engine, EngineError, Pair, Scan, WriteBatch, take_pairs};

pub struct SledEngine {
    db: sled::Db,
}

fn io(e: sled::Error) -> EngineError {
    match e {
        sled::Error::Corruption { .. } => EngineError::Corrupt(e.into()),
        other => EngineError::Io(other.into()),
    }
}

/// Whether another handle holds sled's lock on `dir`. sled takes an exclusive `flock` on
/// its `db` file when it opens but reports a failure to get it only as text (an
/// `ErrorKind::Other` I/O error), so after a failed open the lock is tried here, and
/// released at once if it was free.
fn lock_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join("sled").join("db")) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

impl SledEngine {
    /// Opens (or creates) the database. sled releases its file lock from a background
    /// thread after the previous handle is dropped, so a reopen in the same process can
    /// find the lock still held for a moment: that case is retried for up to 5 s.
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let opened = sled::Config::new()
                .path(dir.join("sled"))
                .flush_every_ms(None)
                .mode(sled::Mode::HighThroughput)
                .open();
            match opened {
                Ok(db) => return Ok(Self { db }),
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if lock_held(dir) => return Err(EngineError::Locked(e.into())),
                Err(e) => return Err(io(e)),
            }
        }
    }
}

impl Scan for SledEngine {
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError> {
        let (s, e) = cf.bounds(start, end);
        if s >= e || limit == 0 {
            return Ok(Vec::new());
        }
        let iter = self.db.range(s..e);
        take_pairs(iter, limit, reverse, |item| {
            let (k, v) = item.map_err(io)?;
            Ok((k[1..].to_vec(), v.to_vec()))
        })
    }
}

impl Engine for SledEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self
            .db
            .get(cf.full_key(key))
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        let mut b = sled::Batch::default();
        // Keys this batch has put so far: a later DeleteRange must remove them too (ops
        // apply in order, as on the other engines), and sled cannot read a pending batch.
        let mut pending: BTreeSet<Vec<u8>> = BTreeSet::new();
        for op in batch.ops {
            match op {
                BatchOp::Put(cf, k, v) => {
                    let k = cf.full_key(&k);
                    pending.insert(k.clone());
                    b.insert(k, v);
                }
                BatchOp::Delete(cf, k) => {
                    let k = cf.full_key(&k);
                    pending.remove(&k);
                    b.remove(k);
                }
                BatchOp::DeleteRange(cf, s, e) => {
                    // sled has no range tombstone: expand to point deletes. The batch is
                    // applied under one sled transaction, so this stays atomic.
                    let (s, e) = cf.bounds(&s, e.as_deref());
                    if s < e {
                        for item in self.db.range(s.clone()..e.clone()) {
                            let (k, _) = item.map_err(io)?;
                            b.remove(k);
                        }
                        let doomed: Vec<Vec<u8>> = pending.range(s..e).cloned().collect();
                        for k in doomed {
                            pending.remove(&k);
                            b.remove(k);
                        }
                    }
                }
            }
        }
        self.db.apply_batch(b).map_err(io)?;
        if durability == Durability::Sync {
            self.db.flush().map_err(io)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.flush().map(|_| ()).map_err(io)
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        "sled"
    }
}

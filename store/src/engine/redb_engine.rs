//! The redb engine: pure Rust, copy-on-write B-tree, ACID commits with a real fsync
//! (`fdatasync`). The default engine of the pure-Rust build (see the README for why it
//! replaced sled). One table holds every column family under its prefix byte, so one
//! write transaction is atomic across families. `Durability::Buffered` commits with
//! redb's `Durability::None`: visible at once, made durable by the next synced commit, and
//! rolled back as a whole by a crash before it.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{BatchOp, Cf, Durability, Engine, EngineError, Pair, Scan, WriteBatch, take_pairs};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

pub struct RedbEngine {
    db: Database,
    path: std::path::PathBuf,
}

/// Classifies any of redb's errors by its kind (every one of them converts to `redb::Error`).
fn io(e: impl Into<redb::Error>) -> EngineError {
    match e.into() {
        e @ redb::Error::DatabaseAlreadyOpen => EngineError::Locked(e.into()),
        e @ redb::Error::Corrupted(_) => EngineError::Corrupt(e.into()),
        e => EngineError::Io(e.into()),
    }
}

/// The page cache of one redb database.
pub const CACHE_BYTES: usize = 64 << 20;

impl RedbEngine {
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::Io(e.into()))?;
        let path = dir.join("cairn.redb");
        // redb's default page cache is 1 GiB; the current state is in memory in `Mvcc`
        // anyway, so the cache mostly serves history reads and the Raft log. A bounded
        // cache keeps a large store's RSS in check (edge hosts, many runs).
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(io)?;
        // Create the table once, so read transactions always find it.
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(KV).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(Self { db, path })
    }
}

impl Scan for RedbEngine {
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
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(KV).map_err(io)?;
        scan_table(&table, &s, &e, limit, reverse)
    }
}

impl Engine for RedbEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(KV).map_err(io)?;
        let full = cf.full_key(key);
        Ok(table
            .get(full.as_slice())
            .map_err(io)?
            .map(|v| v.value().to_vec()))
    }

    fn get_many(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(KV).map_err(io)?;
        keys.iter()
            .map(|k| {
                let full = cf.full_key(k);
                Ok(table
                    .get(full.as_slice())
                    .map_err(io)?
                    .map(|v| v.value().to_vec()))
            })
            .collect()
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        let level = match durability {
            Durability::Sync => redb::Durability::Immediate,
            Durability::Buffered => redb::Durability::None,
        };
        txn.set_durability(level).map_err(io)?;
        {
            let mut table = txn.open_table(KV).map_err(io)?;
            for op in batch.ops {
                match op {
                    BatchOp::Put(cf, k, v) => {
                        table
                            .insert(cf.full_key(&k).as_slice(), v.as_slice())
                            .map_err(io)?;
                    }
                    BatchOp::Delete(cf, k) => {
                        table.remove(cf.full_key(&k).as_slice()).map_err(io)?;
                    }
                    BatchOp::DeleteRange(cf, s, e) => {
                        let (s, e) = cf.bounds(&s, e.as_deref());
                        if s < e {
                            table
                                .retain_in::<&[u8], _>(s.as_slice()..e.as_slice(), |_, _| false)
                                .map_err(io)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.write(WriteBatch::new(), Durability::Sync)
    }

    fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    fn name(&self) -> &'static str {
        "redb"
    }

    /// A read transaction: redb's copy-on-write pages keep its view while writers commit.
    fn view(&self) -> Result<Option<Box<dyn Scan>>, EngineError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(KV).map_err(io)?;
        Ok(Some(Box::new(RedbView { table })))
    }
}

/// An open read transaction's table (it holds the transaction alive).
struct RedbView {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl Scan for RedbView {
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
        scan_table(&self.table, &s, &e, limit, reverse)
    }
}

/// Up to `limit` pairs of `[s, e)` (full keys), family prefix stripped.
fn scan_table(
    table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    s: &[u8],
    e: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<Pair>, EngineError> {
    let range = table.range::<&[u8]>(s..e).map_err(io)?;
    take_pairs(range, limit, reverse, |item| {
        let (k, v) = item.map_err(io)?;
        Ok((k.value()[1..].to_vec(), v.value().to_vec()))
    })
}

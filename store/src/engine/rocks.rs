//! The RocksDB engine (cargo feature `rocksdb`): the production engine for HA. Column
//! families map to prefix bytes in the default column family; a `WriteBatch` is atomic
//! and a `Durability::Sync` write syncs the WAL before returning.

use std::path::Path;

use rocksdb::{DB, Direction, ErrorKind, IteratorMode, Options, ReadOptions, WriteOptions};

use super::{BatchOp, Cf, Durability, Engine, EngineError, Pair, Scan, WriteBatch};

pub struct RocksEngine {
    db: DB,
}

fn io(e: rocksdb::Error) -> EngineError {
    match e.kind() {
        ErrorKind::Corruption => EngineError::Corrupt(e.into()),
        _ => EngineError::Io(e.into()),
    }
}

impl RocksEngine {
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        let path = dir.join("rocksdb");
        let lock_file = path.join("LOCK");
        match DB::open(&opts, &path) {
            Ok(db) => Ok(Self { db }),
            // RocksDB has no error kind for a held lock: it is an I/O error on the LOCK
            // file (another process's `fcntl` lock, or "lock hold by current process"),
            // whose path the error names.
            Err(e)
                if e.kind() == ErrorKind::IOError
                    && e.as_ref().contains(&*lock_file.to_string_lossy()) =>
            {
                Err(EngineError::Locked(e.into()))
            }
            Err(e) => Err(io(e)),
        }
    }
}

impl Scan for RocksEngine {
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
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(s.clone());
        ro.set_iterate_upper_bound(e.clone());
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::From(&s, Direction::Forward)
        };
        let mut out = Vec::new();
        for item in self.db.iterator_opt(mode, ro) {
            let (k, v) = item.map_err(io)?;
            out.push((k[1..].to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db.get(cf.full_key(key)).map_err(io)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        let mut b = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(cf, k, v) => b.put(cf.full_key(&k), v),
                BatchOp::Delete(cf, k) => b.delete(cf.full_key(&k)),
                BatchOp::DeleteRange(cf, s, e) => {
                    let (s, e) = cf.bounds(&s, e.as_deref());
                    if s < e {
                        b.delete_range(s, e);
                    }
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Sync);
        self.db.write_opt(b, &wo).map_err(io)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.flush_wal(true).map_err(io)
    }

    fn size_on_disk(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }
}

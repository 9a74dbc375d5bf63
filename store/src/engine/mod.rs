//! Local storage engines behind one trait.
//!
//! An engine is an ordered byte key space split into column families ([`Cf`]), with
//! atomic write batches and an explicit durability flag. One engine instance per node
//! holds both the Raft log (written by the `raft` crate through [`Cf::RaftLog`] and
//! [`Cf::RaftMeta`]) and the MVCC state machine, so one write batch can carry the
//! applied index together with the state it describes.
//!
//! Engines know nothing of revisions, Raft or HTTP: they store bytes.

mod mem;
mod redb_engine;
#[cfg(feature = "rocksdb")]
mod rocks;
mod sled_engine;

use std::path::Path;
use std::sync::Arc;

pub use mem::MemEngine;
pub use redb_engine::RedbEngine;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksEngine;
pub use sled_engine::SledEngine;

/// A column family: a disjoint part of the key space. Each is stored under a one-byte
/// prefix, so an engine only needs one ordered key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// Raft log entries keyed by big-endian index (owned by the `raft` crate).
    RaftLog,
    /// Vote, last purged log id, committed log id (owned by the `raft` crate).
    RaftMeta,
    /// State-machine metadata: revision, compaction point, applied log id, membership.
    Meta,
    /// Current value of every live key.
    Current,
    /// Every version of every key, keyed by (escaped key, revision).
    History,
    /// The events of each revision, keyed by big-endian revision.
    Events,
    /// Lease records keyed by big-endian lease id.
    Lease,
}

impl Cf {
    /// Every column family, in prefix order.
    pub const ALL: [Cf; 7] = [
        Cf::RaftLog,
        Cf::RaftMeta,
        Cf::Meta,
        Cf::Current,
        Cf::History,
        Cf::Events,
        Cf::Lease,
    ];

    /// The column families that make up the replicated state machine (what a snapshot holds).
    pub const STATE_MACHINE: [Cf; 5] = [Cf::Meta, Cf::Current, Cf::History, Cf::Events, Cf::Lease];

    /// The one-byte prefix this family is stored under.
    pub fn prefix(self) -> u8 {
        match self {
            Cf::RaftLog => b'L',
            Cf::RaftMeta => b'R',
            Cf::Meta => b'M',
            Cf::Current => b'C',
            Cf::History => b'H',
            Cf::Events => b'E',
            Cf::Lease => b'S',
        }
    }

    /// Parses a prefix byte back into its family.
    pub fn from_prefix(b: u8) -> Option<Cf> {
        Cf::ALL.into_iter().find(|cf| cf.prefix() == b)
    }

    pub(crate) fn full_key(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.prefix());
        k.extend_from_slice(key);
        k
    }

    /// The exclusive end of this family's part of the key space.
    pub(crate) fn end_key(self) -> Vec<u8> {
        vec![self.prefix() + 1]
    }

    /// `[start, end)` of a scan within this family, as raw engine keys.
    pub(crate) fn bounds(self, start: &[u8], end: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
        let s = self.full_key(start);
        let e = match end {
            Some(end) => self.full_key(end),
            None => self.end_key(),
        };
        (s, e)
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Deletes `[start, end)` within the family; `end = None` means to the family's end.
    DeleteRange(Cf, Vec<u8>, Option<Vec<u8>>),
}

/// A set of writes applied atomically: after a crash either all or none are visible.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(cf, key.into(), value.into()));
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(cf, key.into()));
    }

    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: Option<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange(cf, start.into(), end));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }
}

/// Whether a write must be on stable storage before [`Engine::write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: used for the Raft vote and log appends.
    Sync,
    /// May sit in the OS or engine buffers; a later `Sync` write or a crash-replay of the
    /// synced Raft log covers it.
    Buffered,
}

/// A key-value pair read from an engine.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Takes at most `limit` items of an engine's range iterator, from the end when `reverse`,
/// turning each into a pair (keys without the family prefix).
pub(crate) fn take_pairs<I: DoubleEndedIterator>(
    iter: I,
    limit: usize,
    reverse: bool,
    pair: impl FnMut(I::Item) -> Result<Pair, EngineError>,
) -> Result<Vec<Pair>, EngineError> {
    if reverse {
        iter.rev().take(limit).map(pair).collect()
    } else {
        iter.take(limit).map(pair).collect()
    }
}

/// The engine library's own error, kept as the source of an [`EngineError`].
pub type EngineSource = Box<dyn std::error::Error + Send + Sync>;

/// Errors from a storage engine. Any of them is fatal for the write that hit it. Each engine
/// picks the variant from its library's error kinds, and keeps that error as the source.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("storage I/O error: {0}")]
    Io(#[source] EngineSource),
    #[error("storage is corrupt: {0}")]
    Corrupt(#[source] EngineSource),
    /// Another handle, in this process or another one, has the data dir open: opening it
    /// again is refused while that handle holds the engine's lock.
    #[error("storage is locked: {0}")]
    Locked(#[source] EngineSource),
    #[error(
        "unknown engine {0:?} (expected redb, sled, mem or rocksdb; rocksdb needs the `rocksdb` feature)"
    )]
    UnknownEngine(String),
}

/// Ordered reads: what an engine and a point-in-time view of one (see [`Engine::view`])
/// both offer.
pub trait Scan: Send + Sync + 'static {
    /// Reads up to `limit` pairs of `[start, end)` within `cf` (end `None` = to the end of
    /// the family), in key order or, with `reverse`, from the end backwards. Keys are
    /// returned without the family prefix.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError>;
}

/// An ordered, atomic-batch key-value engine.
pub trait Engine: Scan {
    /// Reads one key.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Reads several keys of `cf`, in order, from one point in time where the engine can
    /// (one read transaction instead of one per key).
    fn get_many(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        keys.iter().map(|k| self.get(cf, k)).collect()
    }

    /// Applies a batch atomically.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError>;

    /// Makes every write so far durable (including `Buffered` ones).
    fn sync(&self) -> Result<(), EngineError>;

    /// Approximate bytes on disk (0 for memory).
    fn size_on_disk(&self) -> u64;

    /// A short name: `mem`, `redb`, `sled` or `rocksdb`.
    fn name(&self) -> &'static str;

    /// A point-in-time view of everything written so far, which later writes do not
    /// change, for long reads (snapshot dumps, compactions) that must not hold up writers
    /// or pay for a read transaction per lookup. `None` where the engine has no cheap view
    /// (sled, rocksdb): the caller then reads the engine itself, under its own exclusion.
    fn view(&self) -> Result<Option<Box<dyn Scan>>, EngineError> {
        Ok(None)
    }
}

/// Which engine to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Mem,
    Redb,
    Sled,
    #[cfg(feature = "rocksdb")]
    Rocksdb,
}

impl EngineKind {
    /// The engine of the default build.
    pub const DEFAULT: EngineKind = EngineKind::Redb;

    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "mem" => Ok(EngineKind::Mem),
            "redb" => Ok(EngineKind::Redb),
            "sled" => Ok(EngineKind::Sled),
            #[cfg(feature = "rocksdb")]
            "rocksdb" => Ok(EngineKind::Rocksdb),
            other => Err(EngineError::UnknownEngine(other.to_string())),
        }
    }

    /// Every engine this build has.
    pub fn all() -> Vec<EngineKind> {
        vec![
            EngineKind::Mem,
            EngineKind::Redb,
            EngineKind::Sled,
            #[cfg(feature = "rocksdb")]
            EngineKind::Rocksdb,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Mem => "mem",
            EngineKind::Redb => "redb",
            EngineKind::Sled => "sled",
            #[cfg(feature = "rocksdb")]
            EngineKind::Rocksdb => "rocksdb",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, EngineError> {
        EngineKind::parse(s)
    }
}

/// Opens an engine of `kind` at `dir` (ignored for `mem`).
pub fn open(kind: EngineKind, dir: &Path) -> Result<Arc<dyn Engine>, EngineError> {
    Ok(match kind {
        EngineKind::Mem => Arc::new(MemEngine::new()),
        EngineKind::Redb => Arc::new(RedbEngine::open(dir)?),
        EngineKind::Sled => Arc::new(SledEngine::open(dir)?),
        #[cfg(feature = "rocksdb")]
        EngineKind::Rocksdb => Arc::new(RocksEngine::open(dir)?),
    })
}

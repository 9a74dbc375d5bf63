//! The Raft log and vote over the node's engine ([`Cf::RaftLog`], [`Cf::RaftMeta`]).
//!
//! Every write is synced before it is acknowledged: `save_vote` returns after the vote is
//! on disk, and `append` calls openraft's flush callback only after the synced batch.
//! Writes run one at a time (openraft serializes calls on `&mut self`), on a blocking
//! thread so the runtime keeps serving.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use store::{Cf, Durability, Engine, WriteBatch};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote, decode, encode};

pub(crate) const VOTE: &[u8] = b"vote";
pub(crate) const PURGED: &[u8] = b"last_purged";
pub(crate) const COMMITTED: &[u8] = b"committed";

fn idx(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Logs,
        ErrorVerb::Read,
        std::io::Error::other(e.to_string()),
    )
}

fn write_err(subject: ErrorSubject<u64>, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        subject,
        ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

/// The log store. Cheap to clone: clones share the engine.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<dyn Engine>,
    stats: Arc<crate::stats::RaftStats>,
}

impl LogStore {
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Self {
            engine,
            stats: Arc::default(),
        }
    }

    /// Times its synced writes into `stats`.
    pub fn with_stats(mut self, stats: Arc<crate::stats::RaftStats>) -> Self {
        self.stats = stats;
        self
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.engine.get(Cf::RaftMeta, key).map_err(read_err)? {
            None => Ok(None),
            Some(b) => decode(&b).map(Some).map_err(read_err),
        }
    }

    async fn write(
        &self,
        batch: WriteBatch,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || engine.write(batch, Durability::Sync))
            .await
            .map_err(|e| write_err(subject.clone(), e))?
            .map_err(|e| write_err(subject, e))?;
        self.stats.fsync.observe(started.elapsed());
        Ok(())
    }

    pub(crate) fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let last = self
            .engine
            .scan(Cf::RaftLog, &[], None, 1, true)
            .map_err(read_err)?;
        match last.first() {
            None => Ok(None),
            Some((_, v)) => {
                let e: Entry = decode(v).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e + 1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let end_key = end.map(idx);
        let pairs = self
            .engine
            .scan(
                Cf::RaftLog,
                &idx(start),
                end_key.as_ref().map(|k| &k[..]),
                usize::MAX,
                false,
            )
            .map_err(read_err)?;
        pairs
            .iter()
            .map(|(_, v)| decode(v).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta(PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, VOTE, encode(vote));
        self.write(b, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: losing it only means re-applying less eagerly after a crash.
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, COMMITTED, encode(&committed));
        self.engine
            .write(b, Durability::Buffered)
            .map_err(|e| write_err(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut b = WriteBatch::new();
        for e in entries {
            b.put(Cf::RaftLog, idx(e.log_id.index), encode(&e));
        }
        let res = self.write(b, ErrorSubject::Logs).await;
        callback.log_io_completed(
            res.as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut b = WriteBatch::new();
        b.delete_range(Cf::RaftLog, idx(log_id.index), None);
        self.write(b, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first (same atomic batch) so a crash never leaves a hole.
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, PURGED, encode(&log_id));
        b.delete_range(Cf::RaftLog, idx(0), Some(idx(log_id.index + 1).to_vec()));
        self.write(b, ErrorSubject::Logs).await
    }
}

//! `IndexError`: what can go wrong with the local archive index, told apart by what the
//! caller does about it: delete and rebuild (`Corrupt`, `WrongVersion`), wait or give up
//! (`Locked`), retry later (`Storage`), or fix the caller (`Invalid`, `SegmentConflict`).

/// Any error of the storage library, classified by [`IndexError::from_redb`].
pub type RedbError = redb::Error;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file is not a readable archive index (not a database, damaged pages, tables of
    /// the wrong types, an entry that does not decode): delete it and rebuild.
    #[error("archive index is corrupt: {why}")]
    Corrupt {
        why: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An archive index written by another format version: delete it and rebuild.
    #[error("archive index has format version {found}, this build reads version {expected}")]
    WrongVersion { found: i64, expected: i64 },
    /// Another process has the file open.
    #[error("archive index is open in another process")]
    Locked(#[source] RedbError),
    /// The disk or the storage library failed; the file may be fine.
    #[error("archive index storage failed")]
    Storage(#[source] RedbError),
    /// A request the index cannot answer (a malformed run, group or query).
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// A segment id already indexed with other metadata: segments are immutable, so one
    /// id names one content.
    #[error("segment {segment} is already indexed with different metadata")]
    SegmentConflict { segment: String },
    /// The blocking task running an index call panicked or was cancelled.
    #[error("archive index task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl IndexError {
    /// The file should be deleted and the index rebuilt from object storage.
    pub fn needs_rebuild(&self) -> bool {
        matches!(
            self,
            IndexError::Corrupt { .. } | IndexError::WrongVersion { .. }
        )
    }

    /// Classifies any of redb's errors by its kind.
    pub fn from_redb(e: impl Into<RedbError>) -> IndexError {
        match e.into() {
            e @ (RedbError::DatabaseAlreadyOpen | RedbError::LockProtocolMismatch) => {
                IndexError::Locked(e)
            }
            e @ (RedbError::Corrupted(_)
            | RedbError::UpgradeRequired(_)
            | RedbError::TableTypeMismatch { .. }
            | RedbError::TableIsMultimap(_)
            | RedbError::TypeDefinitionChanged { .. }) => IndexError::corrupt_because(e),
            // redb reports a file that does not hold a database as invalid data.
            RedbError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                IndexError::corrupt_because(RedbError::Io(io))
            }
            e => IndexError::Storage(e),
        }
    }

    fn corrupt_because(e: RedbError) -> IndexError {
        IndexError::Corrupt {
            why: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// An entry that does not decode.
    pub(super) fn undecodable(what: &str, key: &str, e: serde_json::Error) -> IndexError {
        IndexError::Corrupt {
            why: format!("{what} {key:?} does not decode"),
            source: Some(Box::new(e)),
        }
    }

    /// Tables that contradict each other (a listing entry without its run, …).
    pub(super) fn inconsistent(why: String) -> IndexError {
        IndexError::Corrupt { why, source: None }
    }
}

/// `?` on any redb call classifies its error.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> IndexError {
                IndexError::from_redb(e)
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

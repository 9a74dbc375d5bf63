//! The Raft state machine over [`store::Mvcc`].
//!
//! Applying a batch of entries is one engine write holding the new state *and* the applied
//! log id and membership, so the applied pointer never runs ahead of (or behind) the state
//! it describes. A snapshot is fixed by [`Mvcc::snapshot`] while no apply runs (openraft
//! calls `get_snapshot_builder` on the state-machine task) — on redb a read transaction, so
//! fixing it is cheap — then streamed by `build_snapshot`, on a task of its own while
//! applies go on, into the node's current snapshot `<data>/snapshot/current` (a temporary
//! file, synced, renamed). Installing one is [`Mvcc::restore`]: a single synced batch.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use store::{Cf, Command, CommandResult, Mvcc, StateSnapshot, WriteBatch};

use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, decode,
    encode,
};

const APPLIED: &[u8] = b"raft/applied";
const MEMBERSHIP: &[u8] = b"raft/membership";

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Snapshot(None),
        verb,
        std::io::Error::other(e.to_string()),
    )
}

/// The state machine handed to openraft. Clones share the same `Mvcc`.
pub struct StateMachine {
    mvcc: Arc<Mvcc>,
    applied: Option<LogId>,
    membership: StoredMembership,
    snapshot_dir: PathBuf,
    snapshot_seq: u64,
}

impl StateMachine {
    /// Opens over `mvcc`; snapshots go to `snapshot_dir` (created if missing).
    pub fn open(mvcc: Arc<Mvcc>, snapshot_dir: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let (applied, membership) = read_applied(&mvcc)?;
        Ok(Self {
            mvcc,
            applied,
            membership,
            snapshot_dir,
            snapshot_seq: 0,
        })
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.mvcc
    }

    fn current_path(&self) -> PathBuf {
        self.snapshot_dir.join("current")
    }
}

/// Serializes snapshot saves. openraft finishes a build on a task of its own, so a build
/// can finish while the state machine installs a received snapshot into the same dir (and,
/// with an in-process restart, while the next incarnation of the node saves one). Unserialized,
/// both write `current.tmp`: one rename fails (a fatal storage error) or the file interleaves.
static SAVE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Persists `meta` + `data` as the current snapshot of `dir` (see [`save_snapshot_with`]).
fn save_snapshot(
    dir: &std::path::Path,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), StorageError> {
    save_snapshot_with(dir, meta, |out| {
        out.write_all(data)
            .map_err(|e| snap_err(ErrorVerb::Write, e))
    })
}

/// Persists `meta` and what `write_data` writes as the current snapshot of `dir`: a temp
/// file of its own (written without the lock, so a big dump does not hold up an install),
/// fsync, then, under [`SAVE_LOCK`], rename. A snapshot older than the one already saved
/// (a slow build finishing after an install) is not saved: the current snapshot never
/// goes back.
fn save_snapshot_with(
    dir: &std::path::Path,
    meta: &SnapshotMeta,
    write_data: impl FnOnce(&mut dyn std::io::Write) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    use std::io::Write;
    static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("current.tmp.{}.{n}", std::process::id()));
    let io = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
    let written = (|| {
        let m = encode(meta);
        let mut f =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
        f.write_all(&(m.len() as u32).to_be_bytes()).map_err(io)?;
        f.write_all(&m).map_err(io)?;
        write_data(&mut f)?;
        let f = f.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)
    })();
    let installed = written.and_then(|()| {
        let _serial = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(saved) = read_saved_meta(&dir.join("current"))?
            && saved.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        std::fs::rename(&tmp, dir.join("current")).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(true)
    });
    if !matches!(installed, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    installed.map(|_| ())
}

/// The meta of the snapshot saved at `path`, if any (reads only the header).
fn read_saved_meta(path: &std::path::Path) -> Result<Option<SnapshotMeta>, StorageError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
    };
    let mut len = [0u8; 4];
    f.read_exact(&mut len)
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let mut m = vec![0u8; u32::from_be_bytes(len) as usize];
    f.read_exact(&mut m)
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    decode(&m)
        .map(Some)
        .map_err(|e| snap_err(ErrorVerb::Read, e))
}

fn read_applied(mvcc: &Mvcc) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let get = |k: &[u8]| mvcc.meta(k).map_err(|e| sm_err(ErrorVerb::Read, e));
    let applied = match get(APPLIED)? {
        Some(b) => decode(&b).map_err(|e| sm_err(ErrorVerb::Read, e))?,
        None => None,
    };
    let membership = match get(MEMBERSHIP)? {
        Some(b) => decode(&b).map_err(|e| sm_err(ErrorVerb::Read, e))?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// The membership last applied to `mvcc`'s state machine (the default when none was).
pub(crate) fn applied_membership(mvcc: &Mvcc) -> Result<StoredMembership, StorageError> {
    read_applied(mvcc).map(|(_, m)| m)
}

fn pointers(applied: &Option<LogId>, membership: &StoredMembership) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, APPLIED, encode(applied));
    b.put(Cf::Meta, MEMBERSHIP, encode(membership));
    b
}

/// A snapshot fixed when the builder was created; building writes it out and persists it.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    /// The fixed state, or why it could not be taken (then building fails).
    data: Result<StateSnapshot, String>,
    sm_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let meta = self.meta.clone();
        let fixed = std::mem::replace(&mut self.data, Err("snapshot already built".into()))
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let dir = self.sm_dir.clone();
        let meta2 = meta.clone();
        // Streamed to the snapshot file, never whole in memory.
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            save_snapshot_with(&dir, &meta2, |out| {
                fixed
                    .write_to(out)
                    .map_err(|e| snap_err(ErrorVerb::Write, e))
            })
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot saved"
        );
        // openraft 0.9 keeps only the meta of a snapshot it had built (its state-machine
        // worker maps the result to `Response::BuildSnapshot(snap.meta)`); a snapshot is
        // sent to followers from `get_current_snapshot`, which reads the file. So no copy
        // of the data is handed back here.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut commands: Vec<Option<Command>> = Vec::new();
        for e in entries {
            self.applied = Some(*e.get_log_id());
            match e.payload {
                EntryPayload::Blank => commands.push(None),
                EntryPayload::Normal(cmd) => commands.push(Some(cmd)),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    commands.push(None);
                }
            }
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let mvcc = self.mvcc.clone();
        let extra = pointers(&self.applied, &self.membership);
        tokio::task::spawn_blocking(move || mvcc.apply(commands, extra))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_seq),
            None => format!("0-0-{}", self.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        // Fixed here, on the state-machine task, so no apply interleaves; written out later
        // by `build_snapshot` on a task of its own, while applies go on (on engines with a
        // point-in-time view; see `Mvcc::snapshot`). Applies are written unsynced (the
        // synced Raft log can replay them), but once a snapshot exists openraft may purge
        // that log: make the applied state durable first.
        let taken = self
            .mvcc
            .engine()
            .sync()
            .map_err(|e| e.to_string())
            .and_then(|()| self.mvcc.snapshot().map_err(|e| e.to_string()));
        SnapshotBuilder {
            meta,
            data: taken,
            sm_dir: self.snapshot_dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let extra = pointers(&meta.last_log_id, &meta.last_membership);
        let mvcc = self.mvcc.clone();
        let data = tokio::task::spawn_blocking(move || {
            mvcc.restore(&mut data.as_slice(), extra).map(|()| data)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        save_snapshot(&self.snapshot_dir, meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let bytes = match std::fs::read(self.current_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
        };
        if bytes.len() < 4 {
            return Err(snap_err(ErrorVerb::Read, "snapshot file is truncated"));
        }
        let ml = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if bytes.len() < 4 + ml {
            return Err(snap_err(ErrorVerb::Read, "snapshot file is truncated"));
        }
        let meta: SnapshotMeta =
            decode(&bytes[4..4 + ml]).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes[4 + ml..].to_vec())),
        }))
    }
}

//! The Raft state machine over [`store::Mvcc`].
//!
//! Applying a batch of entries is one engine write holding the new state *and* the applied
//! log id and membership, so the applied pointer never runs ahead of (or behind) the state
//! it describes.
//!
//! Snapshots live in files under the node's `<data>/snapshot/` ([`crate::snapshot_file`]
//! is the format), never whole in memory:
//! - **build**: the state is fixed by [`Mvcc::snapshot`] while no apply runs (openraft
//!   calls `get_snapshot_builder` on the state-machine task) — on redb a read transaction,
//!   so fixing it is cheap — then `build_snapshot`, on a task of its own while applies go
//!   on, streams it record by record into a temporary file, syncs it and renames it over
//!   `current` (the previous snapshot goes with the rename);
//! - **send**: `get_current_snapshot` opens `current`; openraft reads it a chunk
//!   ([`crate::timing::SNAPSHOT_CHUNK`]) at a time, one `InstallSnapshot` RPC per chunk;
//! - **receive**: `begin_receiving_snapshot` creates a file in the snapshot dir and
//!   unlinks it at once (so a crash leaves nothing behind); openraft writes each chunk,
//!   once [`crate::snapshot_intake`] admitted it, at its offset;
//! - **install**: `install_snapshot` reads the received file once, streaming: the header
//!   must carry the meta openraft installs, the dump goes record by record into
//!   [`Mvcc::restore`] (one synced engine batch) and, through a tee, into a temporary
//!   file that then becomes `current` as a built one does.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use store::{Cf, Command, CommandResult, Mvcc, StateSnapshot, WriteBatch};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::snapshot_file::{MAX_META_LEN, Tee, read_header, write_header};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, decode,
    encode,
};

/// Bytes buffered when a snapshot file is written or read.
const FILE_BUFFER: usize = 1 << 20;

pub(crate) const APPLIED: &[u8] = b"raft/applied";
pub(crate) const MEMBERSHIP: &[u8] = b"raft/membership";

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
    stats: Arc<crate::stats::RaftStats>,
}

impl StateMachine {
    /// Opens over `mvcc`; snapshots go to `snapshot_dir` (created if missing).
    pub fn open(mvcc: Arc<Mvcc>, snapshot_dir: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        remove_stale_temp_files(&snapshot_dir);
        let (applied, membership) = read_applied(&mvcc)?;
        Ok(Self {
            mvcc,
            applied,
            membership,
            snapshot_dir,
            snapshot_seq: 0,
            stats: Arc::default(),
        })
    }

    /// Times its applies and counts the snapshots it builds into `stats`.
    pub fn with_stats(mut self, stats: Arc<crate::stats::RaftStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.mvcc
    }

    fn current_path(&self) -> PathBuf {
        self.snapshot_dir.join("current")
    }
}

/// The prefix of a snapshot file being written; the process id and a counter follow.
const TEMP_PREFIX: &str = "current.tmp.";
/// The prefix of a file receiving a snapshot (unlinked as soon as it is created).
const RECEIVING_PREFIX: &str = "receiving.";

/// Removes the temporary files a crashed process left in `dir` (files of this process may
/// belong to a build still running for an earlier incarnation of the node in tests).
fn remove_stale_temp_files(dir: &Path) {
    let pid = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = [TEMP_PREFIX, RECEIVING_PREFIX].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| !rest.starts_with(&format!("{pid}.")))
        });
        if stale && let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(file = %name, error = %err, "removing a stale snapshot file");
        }
    }
}

/// Opens the snapshot file at `path` (`None` when there is none) with its meta; the file
/// is left at its start, as openraft sends it from there.
async fn open_snapshot(path: &Path) -> Result<Option<Snapshot>, StorageError> {
    let read = |e: std::io::Error| snap_err(ErrorVerb::Read, e);
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let len = f.read_u32().await.map_err(read)? as usize;
    if len > MAX_META_LEN {
        return Err(snap_err(
            ErrorVerb::Read,
            format!("snapshot meta of {len} bytes in {}", path.display()),
        ));
    }
    let mut m = vec![0u8; len];
    f.read_exact(&mut m).await.map_err(read)?;
    let meta: SnapshotMeta = decode(&m).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    f.seek(SeekFrom::Start(0)).await.map_err(read)?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(f),
    }))
}

/// Serializes snapshot saves. openraft finishes a build on a task of its own, so a build
/// can finish while the state machine installs a received snapshot into the same dir (and,
/// with an in-process restart, while the next incarnation of the node saves one). Unserialized,
/// both write `current.tmp`: one rename fails (a fatal storage error) or the file interleaves.
static SAVE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Persists `meta` and what `write_data` writes as the current snapshot of `dir`: a temp
/// file of its own (written without the lock, so a big dump does not hold up an install),
/// fsync, then, under [`SAVE_LOCK`], rename. A snapshot older than the one already saved
/// (a slow build finishing after an install) is not saved: the current snapshot never
/// goes back.
fn save_snapshot_with(
    dir: &Path,
    meta: &SnapshotMeta,
    write_data: impl FnOnce(&mut dyn std::io::Write) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{TEMP_PREFIX}{}.{n}", std::process::id()));
    let io = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
    let written = (|| {
        let mut f = std::io::BufWriter::with_capacity(
            FILE_BUFFER,
            std::fs::File::create(&tmp).map_err(io)?,
        );
        write_header(&mut f, meta).map_err(io)?;
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
fn read_saved_meta(path: &Path) -> Result<Option<SnapshotMeta>, StorageError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
    };
    read_header(&mut f)
        .map(Some)
        .map_err(|e| snap_err(ErrorVerb::Read, e))
}

/// Installs the snapshot file `received` (any position) as `meta`: its header must be
/// `meta`; its dump is read once, streaming, into `mvcc` (with `extra` in the same batch)
/// and into the new current snapshot file of `dir`.
fn install_file(
    received: std::fs::File,
    meta: &SnapshotMeta,
    mvcc: &Mvcc,
    extra: WriteBatch,
    dir: &Path,
) -> Result<(), StorageError> {
    let mut input = std::io::BufReader::with_capacity(FILE_BUFFER, received);
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let header = read_header(&mut input).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    if header != *meta {
        return Err(snap_err(
            ErrorVerb::Read,
            format!(
                "the received snapshot file holds snapshot {}, not {}",
                header.snapshot_id, meta.snapshot_id
            ),
        ));
    }
    save_snapshot_with(dir, meta, |out| {
        let mut tee = Tee {
            input: &mut input,
            copy: out,
        };
        mvcc.restore(&mut tee, extra)
            .map_err(|e| snap_err(ErrorVerb::Write, e))
    })
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
    stats: Arc<crate::stats::RaftStats>,
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
        // worker maps the result to `Response::BuildSnapshot(snap.meta)`) and sends from
        // `get_current_snapshot`; the file handed back is the saved one, opened, not a copy.
        let current = open_snapshot(&self.sm_dir.join("current"))
            .await?
            .ok_or_else(|| snap_err(ErrorVerb::Read, "the saved snapshot is gone"))?;
        use crate::stats::RaftStats;
        RaftStats::add(&self.stats.snapshots_built, 1);
        if let Ok(m) = current.snapshot.metadata().await {
            self.stats
                .last_snapshot_bytes
                .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Snapshot {
            meta,
            snapshot: current.snapshot,
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
        let started = std::time::Instant::now();
        let results = tokio::task::spawn_blocking(move || mvcc.apply(commands, extra))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.stats.apply.observe(started.elapsed());
        Ok(results)
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
            stats: self.stats.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .snapshot_dir
            .join(format!("{RECEIVING_PREFIX}{}.{n}", std::process::id()));
        let io = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(io)?;
        // Unlinked at once: the open file is all there is, and a crash leaves nothing.
        tokio::fs::remove_file(&path).await.map_err(io)?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = snapshot.into_std().await;
        let extra = pointers(&meta.last_log_id, &meta.last_membership);
        let (mvcc, dir, m) = (self.mvcc.clone(), self.snapshot_dir.clone(), meta.clone());
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || install_file(received, &m, &mvcc, extra, &dir))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        open_snapshot(&self.current_path()).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn opening_removes_the_temp_files_a_crashed_process_left_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let own = std::process::id();
        let files = [
            ("current", true),
            ("current.tmp.1.0", false),
            ("receiving.1.3", false),
            (&*format!("current.tmp.{own}.7"), true),
            (&*format!("receiving.{own}.2"), true),
        ];
        for (name, _) in &files {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let mvcc = Arc::new(Mvcc::open(Arc::new(store::engine::MemEngine::new())).unwrap());
        StateMachine::open(mvcc, dir.path().to_path_buf()).unwrap();
        for (name, kept) in files {
            assert_eq!(dir.path().join(name).exists(), kept, "{name}");
        }
    }
}

//! Backups: `snapshot save` writes a consistent copy of the state machine with a header
//! (format, revision, cluster id) and checksums; `restore` builds a new data dir from one,
//! offline, for a new cluster (the old cluster id and membership are dropped, so the
//! restored node can never rejoin the old cluster by mistake).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use store::{Cf, EngineKind, Mvcc, WriteBatch};

use crate::error::{KvError, NodeError};
use crate::node::Node;
use crate::types::{decode, encode};

const MAGIC: &[u8; 8] = b"CAIRNBK1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format_version: u32,
    pub revision: i64,
    pub cluster_id: u64,
    pub node_id: u64,
}

/// A consistent backup of `node`'s state machine, taken after a linearizable barrier.
pub async fn save(node: &Node) -> Result<Vec<u8>, KvError> {
    node.kv().read_barrier().await?;
    let mvcc = node.mvcc().clone();
    let header = BackupHeader {
        format_version: 1,
        revision: mvcc.revision(),
        cluster_id: node.cluster_id(),
        node_id: node.id(),
    };
    tokio::task::spawn_blocking(move || {
        let mut out = MAGIC.to_vec();
        let h = encode(&header);
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        out.extend_from_slice(&h);
        mvcc.dump(&mut out)?;
        Ok::<_, store::StoreError>(out)
    })
    .await
    .map_err(|e| KvError::Stopped(e.to_string()))?
    .map_err(KvError::Store)
}

/// Bytes per chunk of a streamed backup.
const STREAM_CHUNK: usize = 256 << 10;
/// Chunks a streamed backup may have written ahead of its reader.
const STREAM_DEPTH: usize = 4;

/// A chunk of a streamed backup, or the error that ended it.
pub type BackupChunk = Result<bytes::Bytes, std::io::Error>;

/// Like [`save`], streamed (security review M6: a whole snapshot in memory per request took
/// 450 MB each). After the barrier, a blocking task writes the dump from the engine's
/// point-in-time view in chunks of `STREAM_CHUNK` (256 KiB) through a channel `STREAM_DEPTH`
/// deep, so at most about 1 MiB of it is in memory at once (an engine without views
/// still dumps to memory first, see `Mvcc::snapshot`). The task is owned by the stream:
/// when the reader goes away its next chunk fails and it stops. An error midway ends the
/// stream with it; the reader then holds a truncated backup, which `restore` refuses.
pub async fn save_stream(
    node: &Node,
) -> Result<impl futures::Stream<Item = BackupChunk> + Send + 'static, KvError> {
    node.kv().read_barrier().await?;
    let mvcc = node.mvcc().clone();
    let header = BackupHeader {
        format_version: 1,
        revision: mvcc.revision(),
        cluster_id: node.cluster_id(),
        node_id: node.id(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<BackupChunk>(STREAM_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(STREAM_CHUNK),
        };
        let written = (|| -> Result<(), store::StoreError> {
            let io = |e: std::io::Error| store::StoreError::Storage(e.to_string());
            let h = encode(&header);
            w.write_all(MAGIC).map_err(io)?;
            w.write_all(&(h.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(&h).map_err(io)?;
            mvcc.dump(&mut w)?;
            w.flush().map_err(io)
        })();
        if let Err(e) = written {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// Collects writes into chunks and sends each, blocking while the channel is full.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<BackupChunk>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= STREAM_CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.buf.reserve(STREAM_CHUNK);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the backup's reader went away",
            )
        })
    }
}

/// Reads the header of a backup and checks its magic.
pub fn header(bytes: &[u8]) -> Result<(BackupHeader, &[u8]), NodeError> {
    let bad = |m: &str| NodeError::storage(format!("not a valid Cairn backup: {m}"));
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    let hl = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if bytes.len() < 12 + hl {
        return Err(bad("truncated header"));
    }
    let h: BackupHeader = decode(&bytes[12..12 + hl]).map_err(|e| bad(&e.to_string()))?;
    Ok((h, &bytes[12 + hl..]))
}

/// Restores a backup into a new, empty data dir. Start the result with `--init`: it
/// becomes the first node of a new cluster holding the restored keys and history.
pub fn restore(
    bytes: &[u8],
    data_dir: &Path,
    engine: EngineKind,
) -> Result<BackupHeader, NodeError> {
    let (h, dump) = header(bytes)?;
    std::fs::create_dir_all(data_dir).map_err(NodeError::storage)?;
    let engine = store::engine::open(engine, data_dir)?;
    if !engine.scan(Cf::RaftMeta, &[], None, 1, false)?.is_empty()
        || !engine.scan(Cf::Current, &[], None, 1, false)?.is_empty()
    {
        return Err(NodeError::AlreadyInitialized(
            data_dir.display().to_string(),
        ));
    }
    let mvcc = Mvcc::open(engine.clone())?;
    // Drop the old cluster's Raft pointers: the new cluster starts its log from scratch.
    let mut reset = WriteBatch::new();
    reset.delete(Cf::Meta, b"raft/applied".to_vec());
    reset.delete(Cf::Meta, b"raft/membership".to_vec());
    mvcc.restore(&mut &dump[..], reset)?;
    Ok(h)
}

//! Backups: `snapshot save` writes a consistent copy of the state machine with a header
//! (format, revision, cluster id) and checksums; `restore` builds a new data dir from one,
//! offline, for a new cluster (the old cluster id and membership are dropped, so the
//! restored node can never rejoin the old cluster by mistake).

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

/// Reads the header of a backup and checks its magic.
pub fn header(bytes: &[u8]) -> Result<(BackupHeader, &[u8]), NodeError> {
    let bad = |m: &str| NodeError::Storage(format!("not a valid Cairn backup: {m}"));
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
    std::fs::create_dir_all(data_dir).map_err(|e| NodeError::Storage(e.to_string()))?;
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

//! What installing a large received snapshot costs in memory on the receiving node, on the
//! redb engine: the peak RSS growth (`VmHWM` of `/proc/self/status`, reset through
//! `/proc/self/clear_refs`) while the chunks arrive and the snapshot is installed. Ignored
//! (Linux only, and each must run alone in its process, as the peak is the process's):
//!
//! ```text
//! cargo test -p raft --lib tests::snapshot_memory::measure_install_streamed_from_a_file -- --ignored --exact --nocapture
//! cargo test -p raft --lib tests::snapshot_memory::measure_install_from_a_whole_copy_in_memory -- --ignored --exact --nocapture
//! ```
//!
//! The second replays what the receiver did before snapshots were files: chunks appended
//! to one `Vec`, restored from it, then written out from it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use store::{Command, EngineKind, Mvcc, PutRequest, WriteBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::snapshot_file::read_header;
use crate::state_machine::StateMachine;
use crate::timing::SNAPSHOT_CHUNK;
use crate::types::{SnapshotMeta, TypeConfig};

const KEYS: u64 = 50_000;

fn state_machine(dir: &Path) -> StateMachine {
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let engine = store::engine::open(EngineKind::Redb, &dir.join("db")).unwrap();
    let mvcc = Arc::new(Mvcc::open(engine).unwrap());
    StateMachine::open(mvcc, dir.join("snapshot")).unwrap()
}

/// Builds a snapshot of `KEYS` keys of 1 KiB on a leader state machine, then drops it;
/// returns the snapshot file.
async fn leader_snapshot(dir: &Path) -> PathBuf {
    let mut sm = state_machine(dir);
    let mut index = 0;
    for first in (0..KEYS).step_by(256) {
        let entries: Vec<Entry<TypeConfig>> = (first..(first + 256).min(KEYS))
            .map(|n| {
                index += 1;
                Entry {
                    log_id: log_id(1, 1, index),
                    payload: EntryPayload::Normal(Command::Put(PutRequest::new(
                        format!("key/{n:06}"),
                        vec![(n % 251) as u8; 1024],
                    ))),
                }
            })
            .collect();
        sm.apply(entries).await.unwrap();
    }
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    dir.join("snapshot/current")
}

/// `VmRSS` and `VmHWM` in MiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sends the chunks of `file` to `sink` as the leader's Raft would read them.
async fn each_chunk(file: &Path, mut sink: impl AsyncFnMut(Vec<u8>)) {
    let mut f = tokio::fs::File::open(file).await.unwrap();
    loop {
        let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK as usize);
        while buf.len() < buf.capacity() {
            if f.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
        if buf.is_empty() {
            return;
        }
        sink(buf).await;
    }
}

async fn measure(what: &str, install: impl AsyncFnOnce(&Path, &Path, SnapshotMeta)) {
    let dir = tempfile::tempdir().unwrap();
    let file = leader_snapshot(&dir.path().join("leader")).await;
    let meta = read_header(&mut std::fs::File::open(&file).unwrap()).unwrap();
    let size = std::fs::metadata(&file).unwrap().len() >> 20;
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (base, _) = rss();
    install(&file, &dir.path().join("follower"), meta).await;
    let (after, peak) = rss();
    println!(
        "{what}: snapshot of {KEYS} keys of 1 KiB, {size} MiB: RSS before {base} MiB, \
         peak {peak} MiB (+{} MiB), after {after} MiB",
        peak - base
    );
}

#[tokio::test]
#[ignore = "measurement: run alone, see the module docs"]
async fn measure_install_streamed_from_a_file() {
    measure("streamed from a file", async |file, dir, meta| {
        let mut sm = state_machine(dir);
        let mut received = sm.begin_receiving_snapshot().await.unwrap();
        each_chunk(file, async |chunk| {
            received.write_all(&chunk).await.unwrap()
        })
        .await;
        received.shutdown().await.unwrap();
        sm.install_snapshot(&meta, received).await.unwrap();
    })
    .await;
}

#[tokio::test]
#[ignore = "measurement: run alone, see the module docs"]
async fn measure_install_from_a_whole_copy_in_memory() {
    measure("whole copy in memory", async |file, dir, meta| {
        let sm = state_machine(dir);
        let mut received = Vec::new();
        each_chunk(file, async |chunk| received.extend_from_slice(&chunk)).await;
        let mut input = received.as_slice();
        let header = read_header(&mut input).unwrap();
        assert_eq!(header, meta);
        sm.mvcc().restore(&mut input, WriteBatch::new()).unwrap();
        std::fs::write(dir.join("snapshot/current"), &received).unwrap();
    })
    .await;
}
